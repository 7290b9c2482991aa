//! The states a client publishes, recorded from their watch channels through a whole outage:
//! connect, a measured round trip, a kill -9 of the server (Reconnecting with 1006 and a
//! jittered delay within the backoff ceiling), the restart, close. And one document's states
//! on the way: offline edits pending, syncing, synced with edits awaiting their ACK, saved.
//!
//! The client goes through a proxy that delays every chunk, so a round trip takes at least two
//! delays and an edit's ACK comes back well after the edit: the states between stay long
//! enough for the recorder to see them.

use std::sync::Arc;
use std::time::Duration;

use quire_client::{Access, Client, ConnectionState, DocState, MemoryStore};
use quire_protocol::BackoffPolicy;
use quire_tests::client_util::{append, config_at, until_saved};
use quire_tests::proxy::Proxy;
use quire_tests::recorder::Recorder;
use quire_tests::server_process::ServerProcess;

const DEADLINE: Duration = Duration::from_secs(30);
const DELAY: Duration = Duration::from_millis(40);

fn is_connected_with_rtt(s: &ConnectionState) -> bool {
    matches!(s, ConnectionState::Connected { rtt: Some(_) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_through_an_outage_and_a_close() {
    let mut server = ServerProcess::start(&[
        "--heartbeat-interval-ms",
        "200",
        "--heartbeat-timeout-ms",
        "5000",
    ]);
    let proxy = Proxy::start(server.addr).await;
    proxy.set_delay(DELAY);
    let token = server.token(&["*"], true, "1h");
    let client = Client::start(
        config_at(&server, proxy.url(), Some(token)),
        Arc::new(MemoryStore::default()),
    );
    let connection = Recorder::start(client.state());
    let doc = client.open("states", Access::Write).await.unwrap();
    let doc_states = Recorder::start(doc.state());

    connection
        .until("a measured round trip", DEADLINE, |v| {
            v.iter().any(is_connected_with_rtt)
        })
        .await;
    append(&doc, "<online>");
    until_saved(&client, &doc, DEADLINE).await;

    server.kill9();
    let before_outage = connection.values().len();
    connection
        .until("Reconnecting after the kill", DEADLINE, |v| {
            v[before_outage..]
                .iter()
                .any(|s| matches!(s, ConnectionState::Reconnecting { .. }))
        })
        .await;
    append(&doc, "<offline:1>");
    append(&doc, "<offline:2>");
    doc_states
        .until("two edits pending offline", DEADLINE, |v| {
            v.contains(&DocState::Offline { pending: 2 })
        })
        .await;

    connection
        .until("a failed retry", DEADLINE, |v| {
            v.iter()
                .any(|s| matches!(s, ConnectionState::Reconnecting { attempt: 2.., .. }))
        })
        .await;
    tokio::task::block_in_place(|| server.restart());
    connection
        .until("a round trip after the restart", DEADLINE, |v| {
            // After the last state that is not Connected: a pong still in the proxy's delay
            // line may record a round trip just after the kill, before the outage shows.
            let since = &v[before_outage..];
            since
                .iter()
                .rposition(|s| !matches!(s, ConnectionState::Connected { .. }))
                .is_some_and(|last| since[last + 1..].iter().any(is_connected_with_rtt))
        })
        .await;
    until_saved(&client, &doc, DEADLINE).await;
    // An edit while synced: pending until its ACK has made the round trip.
    append(&doc, "<synced>");
    until_saved(&client, &doc, DEADLINE).await;
    client.close().await;

    let states = connection.finish(DEADLINE).await;
    eprintln!("connection states: {states:#?}");
    check_connection_states(&states, before_outage);
    let docs = doc_states.values();
    eprintln!("document states: {docs:#?}");
    check_document_states(&docs);
}

fn check_connection_states(states: &[ConnectionState], before_outage: usize) {
    use ConnectionState::*;
    assert_eq!(states[0], Connecting { attempt: 0 });
    assert_eq!(states.last(), Some(&Closed));
    assert_eq!(states.iter().filter(|s| **s == Closed).count(), 1);

    // Before the kill: connected, then a ping's round trip measured through the delays.
    let first = &states[..before_outage];
    let connected = first.iter().position(|s| *s == Connected { rtt: None });
    let measured = first.iter().position(is_connected_with_rtt);
    assert!(connected.is_some() && connected < measured, "{first:?}");
    if let Some(Connected { rtt: Some(rtt) }) = measured.map(|i| &first[i]) {
        assert!(
            *rtt >= DELAY * 2,
            "rtt {rtt:?} through two delays of {DELAY:?}"
        );
    }

    // The outage: every ending is 1006, every delay within its attempt's ceiling, attempts
    // counting up.
    // (A pong still in the proxy's delay line may update the rtt once after the kill.)
    let start = before_outage
        + states[before_outage..]
            .iter()
            .position(|s| !matches!(s, Connected { .. }))
            .expect("the outage was recorded");
    let outage: Vec<_> = states[start..]
        .iter()
        .take_while(|s| !matches!(s, Connected { .. }))
        .collect();
    let policy = BackoffPolicy::DEFAULT;
    let mut last_attempt = 0;
    for state in &outage {
        if let Reconnecting {
            retry_in,
            attempt,
            last_code,
            ..
        } = state
        {
            assert_eq!(*last_code, 1006, "{state:?}");
            assert!(
                *attempt > last_attempt,
                "attempts must count up: {outage:?}"
            );
            assert!(*retry_in < policy.ceiling(attempt - 1), "{state:?}");
            assert!(*retry_in <= policy.cap);
            last_attempt = *attempt;
        }
    }
    assert!(last_attempt >= 2, "no failed retry recorded: {outage:?}");
    assert!(
        matches!(
            outage[0],
            Reconnecting { attempt: 1, .. } | Connecting { attempt: 1 }
        ),
        "the first retry is attempt 1: {outage:?}"
    );

    // After the restart: connected again, a round trip measured, then closed on request.
    let after = &states[start + outage.len()..];
    assert_eq!(after[0], Connected { rtt: None });
    assert!(after.iter().any(is_connected_with_rtt), "{after:?}");
    assert!(
        after[..after.len() - 1]
            .iter()
            .all(|s| matches!(s, Connected { .. })),
        "nothing but Connected between the restart and the close: {after:?}"
    );
}

/// A named test on one document state.
type Step = (&'static str, fn(&DocState) -> bool);

fn check_document_states(states: &[DocState]) {
    use DocState::*;
    // Each step in order (states may repeat, and a state replaced at once may be missed).
    let steps: [Step; 7] = [
        ("synced", |s| matches!(s, Synced { .. })),
        ("saved", |s| *s == Synced { pending: 0 }),
        ("offline with two pending", |s| *s == Offline { pending: 2 }),
        ("syncing", |s| matches!(s, Syncing { .. })),
        ("synced", |s| matches!(s, Synced { .. })),
        ("synced, one edit awaiting its ACK", |s| {
            *s == Synced { pending: 1 }
        }),
        ("saved", |s| *s == Synced { pending: 0 }),
    ];
    let mut rest = states;
    for (what, step) in steps {
        let at = rest
            .iter()
            .position(step)
            .unwrap_or_else(|| panic!("no '{what}' in order in {states:?}"));
        rest = &rest[at + 1..];
    }
    assert!(
        !states.iter().any(|s| matches!(s, Failed { .. })),
        "{states:?}"
    );
}

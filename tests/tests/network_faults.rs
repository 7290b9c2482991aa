//! quire-client and the server across a link with packet loss and a partition, made with
//! nftables inside a network namespace this test creates (`tests/src/netns.rs`): the server
//! runs inside it, the clients reach it over a veth pair. The in-test proxy models stalls,
//! resets and cuts; this models what only the kernel can: packets vanishing at random, and a
//! link that goes dark in both directions with no socket told.
//!
//! Needs root, iproute2 and nftables (`scripts/test.sh` installs them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_client::{Access, Client, ConnectionState, DocHandle, MemoryStore};
use quire_tests::client_util::{append, config, occurrences, until_saved, until_text};
use quire_tests::netns::NetNs;
use quire_tests::recorder::Recorder;
use quire_tests::seeded_rng::env_count;
use quire_tests::server_process::ServerProcess;

const DEADLINE: Duration = Duration::from_secs(60);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);
const SHORT_HEARTBEAT: &[&str] = &[
    "--heartbeat-interval-ms",
    "300",
    "--heartbeat-timeout-ms",
    "1500",
];
/// The connection module logs each heartbeat expiry at debug level ("peer silent").
const LOG_HEARTBEAT_EXPIRIES: (&str, &str) = ("RUST_LOG", "info,quire_server::connection=debug");

/// A server inside `ns` and two clients outside it, each with `doc` open and one edit synced.
async fn setup(ns: &NetNs, doc: &str) -> (ServerProcess, [(Client, DocHandle); 2]) {
    let prefix = ns.exec_prefix();
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let server = ServerProcess::start_wrapped_at(
        &prefix,
        &ns.listen_any_port(),
        SHORT_HEARTBEAT,
        &[LOG_HEARTBEAT_EXPIRIES],
    );
    assert_eq!(server.addr.ip().to_string(), ns.inside, "listening inside");
    let token = server.token(&["*"], true, "1h");
    let mut sides = Vec::new();
    for name in ["a", "b"] {
        let client = Client::start(
            config(&server, Some(token.clone())),
            Arc::new(MemoryStore::default()),
        );
        let handle = client.open(doc, Access::Write).await.unwrap();
        append(&handle, &format!("<{name}:start>"));
        sides.push((client, handle));
    }
    let sides: [(Client, DocHandle); 2] = sides.try_into().unwrap();
    converge(&sides, &["<a:start>".into(), "<b:start>".into()]).await;
    (server, sides)
}

/// Both replicas saved and equal, holding each marker exactly once; returns the text.
async fn converge(sides: &[(Client, DocHandle); 2], markers: &[String]) -> String {
    for (client, doc) in sides {
        until_saved(client, doc, DEADLINE).await;
        for marker in markers {
            until_text(doc, &format!("{marker} at every client"), DEADLINE, |t| {
                t.contains(marker.as_str())
            })
            .await;
        }
    }
    let text = sides[0].1.text();
    assert_eq!(text, sides[1].1.text(), "the replicas differ");
    for marker in markers {
        assert_eq!(occurrences(&text, marker), 1, "{marker} in {text:?}");
    }
    text
}

/// The document as the server stored it: `quire-server export` after a kill -9.
fn stored_text(server: &mut ServerProcess, doc: &str) -> String {
    server.kill9();
    let output = server.command(&["export", doc]);
    assert!(output.status.success(), "export failed: {output:?}");
    String::from_utf8(output.stdout).expect("utf-8 export")
}

/// How many times a recorded state sequence went from connected to anything else.
fn disconnections(states: &[ConnectionState]) -> usize {
    states
        .windows(2)
        .filter(|w| {
            matches!(w[0], ConnectionState::Connected { .. })
                && !matches!(w[1], ConnectionState::Connected { .. })
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_over_a_lossy_link_arrive_exactly_once() {
    // A soak: QUIRE_LOSS_PERCENT=40 QUIRE_LOSS_ROUNDS=500.
    let loss_percent = env_count("QUIRE_LOSS_PERCENT", 20) as u32;
    let rounds = env_count("QUIRE_LOSS_ROUNDS", 25);
    let ns = NetNs::create();
    let (mut server, sides) = setup(&ns, "lossy").await;
    let recorders = sides
        .each_ref()
        .map(|(client, _)| Recorder::start(client.state()));

    ns.lose(loss_percent);
    let started = Instant::now();
    let mut markers = vec!["<a:start>".to_owned(), "<b:start>".to_owned()];
    for round in 0..rounds {
        for (name, (_, doc)) in ["a", "b"].iter().zip(&sides) {
            let marker = format!("<{name}:{round}>");
            append(doc, &marker);
            markers.push(marker);
        }
        // Each round waits for its edits to be durable: the link, not the test, sets the pace.
        for (client, doc) in &sides {
            until_saved(client, doc, DEADLINE).await;
        }
    }
    let dropped = ns.dropped();
    let lossy_for = started.elapsed();
    ns.heal();

    let text = converge(&sides, &markers).await;
    let reconnects: Vec<usize> = recorders
        .iter()
        .map(|r| disconnections(&r.values()))
        .collect();
    eprintln!(
        "{loss_percent}% loss: {} edits saved in {lossy_for:?}, {dropped} packets dropped, \
         reconnections per client {reconnects:?}",
        rounds * 2
    );
    assert!(dropped > 0, "the loss rule dropped nothing:\n{ns:?}");
    assert_eq!(stored_text(&mut server, "lossy"), text, "SQLite differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_noticed_by_both_heartbeats_and_edits_converge_after_it_heals() {
    let ns = NetNs::create();
    let (mut server, sides) = setup(&ns, "partitioned").await;
    let recorders = sides
        .each_ref()
        .map(|(client, _)| Recorder::start(client.state()));
    let expiries_before = server.log().matches("peer silent").count();

    ns.partition();
    let cut_at = Instant::now();
    // Edits on both sides while the link is dark: each must reach the other exactly once.
    append(&sides[0].1, "<a:dark>");
    append(&sides[1].1, "<b:dark>");

    // Each client's heartbeat notices (a liveness bound, not a benchmark: allow 3×).
    for recorder in &recorders {
        recorder
            .until(
                "the client to leave Connected",
                HEARTBEAT_TIMEOUT * 3,
                |states| disconnections(states) > 0,
            )
            .await;
    }
    let clients_noticed = cut_at.elapsed();
    // And the server's: one expiry per connection, logged while still partitioned.
    quire_tests::wait::until(
        "the server's heartbeat to expire both connections",
        HEARTBEAT_TIMEOUT * 3,
        || {
            let expiries = server.log().matches("peer silent").count() - expiries_before;
            std::future::ready((expiries >= 2).then_some(()))
        },
    )
    .await;
    let server_noticed = cut_at.elapsed();
    let dropped = ns.dropped();
    ns.heal();
    let healed_at = Instant::now();

    let markers: Vec<String> = ["<a:start>", "<b:start>", "<a:dark>", "<b:dark>"]
        .map(String::from)
        .into();
    let text = converge(&sides, &markers).await;
    eprintln!(
        "partition: clients noticed after {clients_noticed:?}, server after {server_noticed:?} \
         (heartbeat timeout {HEARTBEAT_TIMEOUT:?}); {dropped} packets dropped; converged \
         {:?} after healing",
        healed_at.elapsed()
    );
    // The server counts a close once the connection's task has ended, which waits out the
    // close handshake the partition swallowed; poll for it.
    quire_tests::wait::until(
        "the server to count two 4008 closes and hold only the new connections",
        DEADLINE,
        || async {
            let closed = server.metric("quire_closes_total{code=\"4008\"}").await;
            let open = server.metric("quire_connections").await;
            (closed == 2.0 && open == 2.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        stored_text(&mut server, "partitioned"),
        text,
        "SQLite differs"
    );
}

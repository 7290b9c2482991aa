//! quire-client over a faulty network, made by the in-test TCP proxy: a half-open path that
//! only the heartbeat can notice, TCP resets, and frames cut in the middle in either
//! direction. After each fault the client reconnects through the proxy and converges with a
//! client connected directly, with every edit present exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_client::{Access, Client, ConnectionState, DocHandle, MemoryStore};
use quire_tests::client_util::{
    append, config, config_at, occurrences, until_connected, until_saved, until_text,
};
use quire_tests::proxy::{Direction, Proxy};
use quire_tests::recorder::Recorder;
use quire_tests::server_process::ServerProcess;

const DEADLINE: Duration = Duration::from_secs(30);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);
const SHORT_HEARTBEAT: &[&str] = &[
    "--heartbeat-interval-ms",
    "300",
    "--heartbeat-timeout-ms",
    "1500",
];

/// A client through `proxy` and one connected directly, both with `doc` open and synced.
async fn pair(
    server: &ServerProcess,
    proxy: &Proxy,
    doc: &str,
) -> (Client, DocHandle, Client, DocHandle) {
    let token = server.token(&["*"], true, "1h");
    let proxied = Client::start(
        config_at(server, proxy.url(), Some(token.clone())),
        Arc::new(MemoryStore::default()),
    );
    let direct = Client::start(
        config(server, Some(token)),
        Arc::new(MemoryStore::default()),
    );
    let doc_p = proxied.open(doc, Access::Write).await.unwrap();
    let doc_d = direct.open(doc, Access::Write).await.unwrap();
    append(&doc_p, "<p:start>");
    append(&doc_d, "<d:start>");
    let sides = [(&proxied, &doc_p), (&direct, &doc_d)];
    converge(sides, &["<p:start>", "<d:start>"]).await;
    (proxied, doc_p, direct, doc_d)
}

/// One client and its replica of the document.
type Side<'a> = (&'a Client, &'a DocHandle);

/// Both replicas saved, equal, and holding each marker exactly once.
async fn converge([(client_a, a), (client_b, b)]: [Side<'_>; 2], markers: &[&str]) {
    until_saved(client_a, a, DEADLINE).await;
    until_saved(client_b, b, DEADLINE).await;
    for marker in markers {
        until_text(
            a,
            &format!("{marker} at the proxied client"),
            DEADLINE,
            |t| t.contains(marker),
        )
        .await;
        until_text(
            b,
            &format!("{marker} at the direct client"),
            DEADLINE,
            |t| t.contains(marker),
        )
        .await;
    }
    let text = a.text();
    assert_eq!(text, b.text(), "the replicas differ");
    for marker in markers {
        assert_eq!(occurrences(&text, marker), 1, "{marker} in {text:?}");
    }
}

/// `marker` followed by `len` bytes of filler: one edit large enough to span many TCP chunks.
fn big_edit(marker: &str, len: usize) -> String {
    let mut text = marker.to_owned();
    text.extend(std::iter::repeat_n('.', len));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_found_by_the_heartbeat_and_edits_converge() {
    let server = ServerProcess::start(SHORT_HEARTBEAT);
    let proxy = Proxy::start(server.addr).await;
    let (a, doc_a, b, doc_b) = pair(&server, &proxy, "half-open").await;
    let states = Recorder::start(a.state());

    // The path goes silent: nothing is forwarded, no socket is closed.
    proxy.stall();
    let stalled_at = Instant::now();
    // Edits on both sides while stalled; a's goes into the black hole and must be re-sent.
    append(&doc_a, "<a:stalled>");
    append(&doc_b, "<b:stalled>");

    // A liveness bound, not a benchmark: the watchdog fires after the timeout; allow 3×.
    let left = states
        .until(
            "the client to leave Connected",
            HEARTBEAT_TIMEOUT * 3,
            |v| {
                v.iter()
                    .any(|s| !matches!(s, ConnectionState::Connected { .. }))
            },
        )
        .await;
    let detected = stalled_at.elapsed();
    eprintln!(
        "half-open path noticed after {detected:?} (heartbeat timeout {HEARTBEAT_TIMEOUT:?})"
    );
    let first_change = left
        .iter()
        .find(|s| !matches!(s, ConnectionState::Connected { .. }))
        .unwrap();
    assert!(
        matches!(
            first_change,
            ConnectionState::Reconnecting {
                last_code: 4008,
                ..
            }
        ),
        "expected Reconnecting after a heartbeat timeout (4008), got {first_change:?}"
    );

    // More edits while reconnecting, then the path heals.
    append(&doc_a, "<a:offline>");
    append(&doc_b, "<b:offline>");
    proxy.resume();
    proxy.until_accepted(2, DEADLINE).await;
    until_connected(&a, DEADLINE).await;
    converge(
        [(&a, &doc_a), (&b, &doc_b)],
        &[
            "<p:start>",
            "<d:start>",
            "<a:stalled>",
            "<b:stalled>",
            "<a:offline>",
            "<b:offline>",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_mid_frame_cuts_lose_and_duplicate_nothing() {
    let server = ServerProcess::start(&[]);
    let proxy = Proxy::start(server.addr).await;
    let (a, doc_a, b, doc_b) = pair(&server, &proxy, "cuts").await;
    let mut markers = vec!["<p:start>".to_owned(), "<d:start>".to_owned()];
    let mut connections = proxy.accepted().len();

    // 1. A reset with edits in flight both ways.
    append(&doc_a, "<a:reset>");
    append(&doc_b, "<b:reset>");
    proxy.reset_all();
    markers.extend(["<a:reset>".into(), "<b:reset>".into()]);
    connections += 1;
    proxy.until_accepted(connections, DEADLINE).await;
    until_connected(&a, DEADLINE).await;
    converge([(&a, &doc_a), (&b, &doc_b)], &refs(&markers)).await;

    // 2. A relayed update cut in the middle on its way to the proxied client.
    proxy.cut_next_chunk(Direction::ToClient);
    append(&doc_b, &big_edit("<b:cut>", 256 * 1024));
    markers.push("<b:cut>".into());
    connections += 1;
    proxy.until_accepted(connections, DEADLINE).await;
    assert!(!proxy.cut_pending(Direction::ToClient));
    until_connected(&a, DEADLINE).await;
    converge([(&a, &doc_a), (&b, &doc_b)], &refs(&markers)).await;

    // 3. The proxied client's own update cut in the middle on its way to the server.
    proxy.cut_next_chunk(Direction::ToServer);
    append(&doc_a, &big_edit("<a:cut>", 256 * 1024));
    markers.push("<a:cut>".into());
    connections += 1;
    proxy.until_accepted(connections, DEADLINE).await;
    assert!(!proxy.cut_pending(Direction::ToServer));
    until_connected(&a, DEADLINE).await;
    converge([(&a, &doc_a), (&b, &doc_b)], &refs(&markers)).await;

    // Edits after all that still flow both ways on the last connection.
    append(&doc_a, "<a:after>");
    append(&doc_b, "<b:after>");
    markers.extend(["<a:after>".into(), "<b:after>".into()]);
    converge([(&a, &doc_a), (&b, &doc_b)], &refs(&markers)).await;
    assert_eq!(proxy.accepted().len(), connections, "no further reconnects");
}

fn refs(markers: &[String]) -> Vec<&str> {
    markers.iter().map(String::as_str).collect()
}

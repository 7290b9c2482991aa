//! A 50 MB document reaching a client through a slow link: the transfer lasts several heartbeat
//! timeouts, yet neither end may take it for silence. The client's watchdog counts socket
//! reads, the server's counts the client's frames, and the server sends the document as
//! bounded fragments, so the connection must survive and the client report its progress.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_client::{Access, Client, ConnectionState, DocHandle, DocState, MemoryStore};
use quire_tests::client_util::{
    config, config_at, until_connected, until_saved, until_state, until_text,
};
use quire_tests::proxy::Proxy;
use quire_tests::recorder::Recorder;
use quire_tests::server_process::ServerProcess;
use yrs::{Text, Transact};

const MIB: usize = 1 << 20;
/// The document's size.
const DOC_BYTES: usize = 50 * MIB;
/// One local transaction per chunk: many edits in one transaction are quadratic in yrs.
const CHUNK: usize = 64 * 1024;
/// Bytes per second through the proxy, each way: the 50 MB take over 6 s.
const THROTTLE: u64 = 8 * MIB as u64;
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Generous: debug builds on two shared cores.
const DEADLINE: Duration = Duration::from_secs(300);

/// Chunk `i`: a numbered line padded to `CHUNK` bytes, so that misplaced chunks would show.
fn chunk(i: usize) -> String {
    let mut text = format!("\n{i:08} ");
    let fill = (b'a' + (i % 26) as u8) as char;
    text.extend(std::iter::repeat_n(fill, CHUNK - text.len()));
    text
}

/// Inserts `text` at the start, in one transaction. The document is built back to front:
/// appending at the end makes yrs merge each insert into one ever-growing block, and the
/// client's update observer then re-slices that block on every commit (quadratic: 200 appends
/// of 64 KiB took 2.5 s, against 50 ms inserting at the start; 800 took 50 s).
fn prepend(doc: &DocHandle, text: &str) {
    let content = doc.doc().get_or_insert_text(quire_client::CONTENT);
    let mut txn = doc.doc().transact_mut();
    content.insert(&mut txn, 0, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_document_crosses_a_throttled_link_without_a_reconnect() {
    let server = ServerProcess::start(&[
        "--heartbeat-interval-ms",
        "300",
        "--heartbeat-timeout-ms",
        "1500",
    ]);
    let token = server.token(&["*"], true, "1h");

    // A direct client writes the document and waits until the server has stored it.
    let writer = Client::start(
        config(&server, Some(token.clone())),
        Arc::new(MemoryStore::default()),
    );
    let doc_w = writer.open("big", Access::Write).await.unwrap();
    until_connected(&writer, Duration::from_secs(30)).await;
    let started = Instant::now();
    for i in (0..DOC_BYTES / CHUNK).rev() {
        prepend(&doc_w, &chunk(i));
        if i % 16 == 0 {
            // Let the driver send what is queued while the loop goes on.
            tokio::task::yield_now().await;
        }
    }
    until_saved(&writer, &doc_w, DEADLINE).await;
    let expected = doc_w.text();
    assert_eq!(expected.len(), DOC_BYTES);
    eprintln!(
        "wrote and saved {} bytes in {:?}",
        expected.len(),
        started.elapsed()
    );

    // A second client fetches it through a throttled proxy.
    let proxy = Proxy::start(server.addr).await;
    proxy.set_throttle(Some(THROTTLE));
    let reader = Client::start(
        config_at(&server, proxy.url(), Some(token)),
        Arc::new(MemoryStore::default()),
    );
    let connection = Recorder::start(reader.state());
    let started = Instant::now();
    let doc_r = reader.open("big", Access::Write).await.unwrap();
    let progress = Recorder::start(doc_r.state());
    until_state(&mut doc_r.state(), "the document synced", DEADLINE, |s| {
        matches!(s, DocState::Synced { .. })
    })
    .await;
    let took = started.elapsed();
    let text = doc_r.text();
    eprintln!(
        "synced {} bytes through {} B/s in {took:?}; heartbeat timeout {HEARTBEAT_TIMEOUT:?}",
        text.len(),
        THROTTLE
    );

    // The scenario means something only if the transfer outlasted the heartbeat timeout.
    assert!(
        took > HEARTBEAT_TIMEOUT * 3,
        "the transfer took only {took:?}"
    );
    assert_eq!(text.len(), expected.len());
    assert!(
        text == expected,
        "the synced text differs from the written one"
    );

    // The same connection still carries edits after the transfer.
    prepend(&doc_w, "<after>");
    until_text(&doc_r, "an edit after the transfer", DEADLINE, |t| {
        t.starts_with("<after>")
    })
    .await;

    let states = connection.values();
    let drops = states
        .iter()
        .filter(|s| {
            !matches!(
                s,
                ConnectionState::Connecting { .. } | ConnectionState::Connected { .. }
            )
        })
        .count();
    assert_eq!(
        drops, 0,
        "the connection dropped during the transfer: {states:?}"
    );
    assert_eq!(proxy.accepted().len(), 1, "the client reconnected");

    let seen = progress.values();
    let max_received = seen
        .iter()
        .filter_map(|s| match s {
            DocState::Syncing { received } => Some(*received),
            _ => None,
        })
        .max();
    eprintln!(
        "progress reports: {}, largest received: {max_received:?}",
        seen.iter()
            .filter(|s| matches!(s, DocState::Syncing { received: 1.. }))
            .count()
    );
    assert!(
        max_received.is_some_and(|r| r > 0),
        "no Syncing progress was reported: {seen:?}"
    );
}

//! Durability: what the server acknowledged survives a restart and a crash (kill -9), and the
//! database file stays sound.

use quire_protocol::ChannelId;
use quire_tests::db_probe;
use quire_tests::doc_peer::Peer;
use quire_tests::insert_stream::{StreamPlan, StreamReport, Writer};
use quire_tests::server_process::ServerProcess;
use quire_tests::wait;

const CH: ChannelId = ChannelId(1);

/// The document's text as a fresh client sees it.
async fn fresh_text(server: &ServerProcess, token: &str, doc: &str) -> String {
    let mut peer = Peer::connect(server, Some(token)).await;
    peer.open_synced(CH, doc).await;
    peer.text(CH)
}

#[tokio::test]
async fn a_graceful_restart_keeps_every_document() {
    // A low compaction threshold makes some documents a snapshot plus a log.
    let mut server = ServerProcess::start(&["--compact-after-updates", "8"]);
    let token = server.token(&["*"], true, "1h");
    let docs: Vec<String> = (0..6).map(|i| format!("restart/{i}")).collect();
    let mut alice = Peer::connect(&server, Some(&token)).await;
    let mut bob = Peer::connect(&server, Some(&token)).await;
    for (i, doc) in docs.iter().enumerate() {
        let channel = ChannelId(i as u32 + 1);
        alice.open_synced(channel, doc).await;
        bob.open_synced(channel, doc).await;
        // Document i gets 3·i edits from each, so the logs have different lengths.
        for n in 0..3 * i {
            alice.insert(channel, 0, &format!("a{n} ")).await;
            bob.append(channel, &format!(" b{n}")).await;
        }
    }
    for peer in [&mut alice, &mut bob] {
        peer.pump_until("every write acked", |p| {
            p.docs.values().all(|d| d.acked == d.writes)
        })
        .await;
    }
    // Both replicas converge on what the server holds.
    bob.pump_until("bob has alice's edits", |p| {
        (1..6).all(|i| p.text(ChannelId(i + 1)).matches('a').count() == 3 * i as usize)
    })
    .await;
    let before: Vec<String> = (0..6).map(|i| bob.text(ChannelId(i + 1))).collect();

    let (status, took) = server.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    eprintln!("SIGTERM with 2 clients on 6 documents: exited in {took:?}");
    server.restart();

    for (doc, text) in docs.iter().zip(&before) {
        assert_eq!(&fresh_text(&server, &token, doc).await, text, "{doc}");
    }
    assert_eq!(db_probe::integrity_check(&server.db_path()).await, "ok");
}

/// Clients per document and documents in the crash test.
const WRITERS_PER_DOC: usize = 2;
const DOCS: usize = 2;
/// Kill once this many inserts have been acknowledged in all.
const KILL_AFTER_ACKS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_insert() {
    // Frequent compaction puts snapshot rewrites in flight alongside the appends.
    let mut server = ServerProcess::start(&["--compact-after-updates", "100"]);
    let token = server.token(&["*"], true, "1h");
    let mut writers = Vec::new();
    for w in 0..WRITERS_PER_DOC * DOCS {
        let doc = format!("crash/{}", w % DOCS);
        let plan = StreamPlan {
            channel: CH,
            prefix: format!("w{w}"),
            limit: None,
            window: 64,
        };
        writers.push(Writer::start(&server, &token, doc, plan).await);
    }

    // The moment: enough acknowledged, while every writer keeps up to 64 writes in flight.
    wait::until("enough acknowledged inserts", wait::DEADLINE, || {
        let acked: u64 = writers.iter().map(Writer::acked).sum();
        std::future::ready((acked >= KILL_AFTER_ACKS).then_some(()))
    })
    .await;
    server.kill9();

    let mut reports: Vec<(String, StreamReport)> = Vec::new();
    for writer in writers {
        let (doc, report) = writer.finish().await;
        assert_eq!(report.close, Some(1006), "a killed server sends no Close");
        reports.push((doc, report));
    }

    server.restart();
    assert_eq!(db_probe::integrity_check(&server.db_path()).await, "ok");
    let (mut acked, mut lost, mut unacked, mut unacked_kept) = (0, 0, 0, 0);
    for d in 0..DOCS {
        let doc = format!("crash/{d}");
        let text = fresh_text(&server, &token, &doc).await;
        for (_, report) in reports.iter().filter(|(name, _)| *name == doc) {
            for marker in report.acked_markers() {
                acked += 1;
                if !text.contains(marker) {
                    lost += 1;
                    eprintln!("LOST acknowledged insert {marker} in {doc}");
                }
            }
            for marker in report.unacked_markers() {
                unacked += 1;
                unacked_kept += usize::from(text.contains(marker));
            }
        }
    }
    eprintln!(
        "kill -9 with {} writers: {acked} acknowledged inserts, {lost} lost; \
         {unacked} in flight at the kill, {unacked_kept} of them stored anyway",
        WRITERS_PER_DOC * DOCS
    );
    // Each writer's first acknowledged write is its step 2, not an insert.
    let highest_acks: u64 = reports.iter().map(|(_, r)| r.acked).sum();
    assert!(highest_acks >= KILL_AFTER_ACKS && acked as u64 == highest_acks - reports.len() as u64);
    assert_eq!(lost, 0, "acknowledged inserts lost after kill -9");
}

#[tokio::test]
async fn repeated_crashes_keep_what_each_run_acknowledged() {
    let mut server = ServerProcess::start(&["--compact-after-updates", "5"]);
    let token = server.token(&["*"], true, "1h");
    let mut expected = String::new();
    for run in 0..3 {
        let mut peer = Peer::connect(&server, Some(&token)).await;
        peer.open_synced(CH, "crash/again").await;
        assert_eq!(
            peer.text(CH),
            expected,
            "run {run} starts from what was acked"
        );
        for n in 0..7 {
            peer.append(CH, &format!("[{run}.{n}]")).await;
        }
        peer.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
            .await;
        expected = peer.text(CH);
        server.kill9();
        server.restart();
    }
    assert_eq!(fresh_text(&server, &token, "crash/again").await, expected);
    assert_eq!(db_probe::integrity_check(&server.db_path()).await, "ok");
}

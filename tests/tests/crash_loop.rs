//! Crash loop: the server is killed with SIGKILL at seeded random moments, several times over,
//! while writers stream inserts without waiting for each ACK; after every restart the database
//! passes `PRAGMA integrity_check` and every insert acknowledged in any round so far is present.
//!
//! The seed is printed; replay with `QUIRE_SEED=<seed>` (the kill points are counted in
//! acknowledged inserts, so a seed replays the same plan). `QUIRE_CRASH_ROUNDS=<n>` runs more
//! rounds (default 5).

use quire_protocol::ChannelId;
use quire_tests::db_probe;
use quire_tests::doc_peer::Peer;
use quire_tests::insert_stream::{StreamPlan, StreamReport, Writer};
use quire_tests::seeded_rng::{env_count, SeededRng};
use quire_tests::server_process::ServerProcess;
use quire_tests::wait;

const CH: ChannelId = ChannelId(1);
const DOCS: usize = 2;
const WRITERS_PER_DOC: usize = 2;
const DEFAULT_ROUNDS: usize = 5;
/// Each round kills after a random number of acknowledged inserts in `0..MAX_KILL_AFTER`
/// (0: right after the writers connect, before much is in flight).
const MAX_KILL_AFTER: u64 = 1500;

fn doc_name(d: usize) -> String {
    format!("crashloop/{d}")
}

/// The document's text as a fresh client sees it.
async fn fresh_text(server: &ServerProcess, token: &str, doc: &str) -> String {
    let mut peer = Peer::connect(server, Some(token)).await;
    peer.open_synced(CH, doc).await;
    peer.text(CH)
}

/// Counts of one check over everything acknowledged so far.
#[derive(Debug, Default)]
struct Audit {
    acked: usize,
    lost: usize,
    unacked: usize,
    unacked_kept: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kill_9_under_streaming_writes_loses_no_acknowledged_insert() {
    let mut rng = SeededRng::from_env("crash_loop");
    let rounds = env_count("QUIRE_CRASH_ROUNDS", DEFAULT_ROUNDS);
    // Frequent compaction puts snapshot rewrites in flight alongside the appends.
    let mut server = ServerProcess::start(&["--compact-after-updates", "50"]);
    let token = server.token(&["crashloop/*"], true, "1h");
    // Every round's reports, by document: checked again after every later crash.
    let mut reports: Vec<(String, StreamReport)> = Vec::new();

    for round in 0..rounds {
        let kill_after = rng.below(MAX_KILL_AFTER);
        let mut writers = Vec::new();
        for w in 0..WRITERS_PER_DOC * DOCS {
            let doc = doc_name(w % DOCS);
            let plan = StreamPlan {
                channel: CH,
                prefix: format!("r{round}w{w}"),
                limit: None,
                window: 1 + rng.below(64),
            };
            writers.push(Writer::start(&server, &token, doc, plan).await);
        }
        wait::until("the kill point", wait::DEADLINE, || {
            let acked: u64 = writers.iter().map(Writer::acked).sum();
            std::future::ready((acked >= kill_after).then_some(()))
        })
        .await;
        server.kill9();
        for writer in writers {
            let (doc, report) = writer.finish().await;
            assert_eq!(report.close, Some(1006), "a killed server sends no Close");
            reports.push((doc, report));
        }

        server.restart();
        assert_eq!(
            db_probe::integrity_check(&server.db_path()).await,
            "ok",
            "integrity after crash {round}"
        );
        let mut audit = Audit::default();
        for d in 0..DOCS {
            let doc = doc_name(d);
            let text = fresh_text(&server, &token, &doc).await;
            for (_, report) in reports.iter().filter(|(name, _)| *name == doc) {
                for marker in report.acked_markers() {
                    audit.acked += 1;
                    if !text.contains(marker) {
                        audit.lost += 1;
                        eprintln!("LOST acknowledged insert {marker} in {doc}");
                    }
                }
                for marker in report.unacked_markers() {
                    audit.unacked += 1;
                    audit.unacked_kept += usize::from(text.contains(marker));
                }
            }
        }
        eprintln!(
            "crash {}/{rounds} after {kill_after}+ acks: {} acknowledged so far, {} lost; \
             {} never acknowledged, {} of them stored anyway",
            round + 1,
            audit.acked,
            audit.lost,
            audit.unacked,
            audit.unacked_kept
        );
        assert_eq!(
            audit.lost, 0,
            "acknowledged inserts lost after crash {round}"
        );
    }
}

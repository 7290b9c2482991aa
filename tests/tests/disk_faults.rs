//! Disk faults: the real server runs under `fiu-run -x` (Debian's fiu-utils), which preloads
//! libfiu's POSIX wrappers into the unmodified binary; `fiu-ctrl` then injects faults while
//! writers stream inserts, and lifts them again:
//! - fsync or pwrite failing with EIO, or pwrite with ENOSPC (a full disk). Checked: no ACK
//!   while commits fail; the failure reaches clients (CLOSE 4500 on their channels), `/metrics`
//!   and the log; writes are acknowledged again once the disk is healthy.
//! - short writes (pwrite writing only part of its buffer), which SQLite must complete.
//! - pread failing with EIO while a document is loaded: the OPEN is refused with 4500 and the
//!   document is served whole once reads work again.
//!
//! After every fault the server is killed and restarted without fiu: every acknowledged insert
//! is there and `PRAGMA integrity_check` is ok.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use quire_protocol::ChannelId;
use quire_tests::db_probe;
use quire_tests::doc_peer::Peer;
use quire_tests::server_process::ServerProcess;
use quire_tests::wait;

const CH: ChannelId = ChannelId(1);
const WRITERS: usize = 4;
const DOCS: usize = 2;
const WINDOW: u64 = 16;
/// Acknowledged writes before the fault, and again after it is lifted.
const HEALTHY_ACKS: u64 = 300;
/// Failed commits, after every writer has seen its 4500, during which no ACK may arrive.
const FAILED_COMMITS: u64 = 20;
/// CLOSE code for a failed commit (PROTOCOL.md).
const STORAGE_FAILURE: u16 = 4500;

/// One opening of a writer's channel: what it sent, how far the server acknowledged it, and
/// how the server closed it (None: still open when the writer stopped).
#[derive(Debug, Default)]
struct Segment {
    sent: Vec<(u64, String)>,
    acked: u64,
    close: Option<u16>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    /// Writes acknowledged, over every opening of every writer.
    acked: AtomicU64,
    /// The same, per writer.
    per_writer: [AtomicU64; WRITERS],
    /// Writers whose channel the server has closed with 4500 at least once.
    writers_closed: AtomicU64,
}

/// Streams marked inserts (up to `WINDOW` unacknowledged) on `doc`; when the server closes the
/// channel it records the opening and opens the channel again, as quire-client does. On `stop`
/// it waits for the outstanding ACKs (or a close) and returns every opening.
async fn writer(mut peer: Peer, doc: String, w: usize, shared: Arc<Shared>) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut sent = Vec::new();
    let mut acked_before = 0;
    let mut counted_close = false;
    loop {
        let d = &peer.docs[&CH];
        let stopping = shared.stop.load(Ordering::Relaxed);
        if d.closed.is_some() || (stopping && d.acked == d.writes) {
            let segment = Segment {
                sent: std::mem::take(&mut sent),
                acked: d.acked,
                close: d.closed,
            };
            acked_before += segment.acked;
            if segment.close == Some(STORAGE_FAILURE) && !counted_close {
                counted_close = true;
                shared.writers_closed.fetch_add(1, Ordering::Relaxed);
            }
            segments.push(segment);
            if stopping {
                return segments;
            }
            peer.open_synced(CH, &doc).await;
            continue;
        }
        let alive = if !stopping && d.writes - d.acked < WINDOW {
            let n: usize = segments.iter().map(|s| s.sent.len()).sum::<usize>() + sent.len();
            let marker = format!("<w{w}:{n}>");
            let seq = peer.append(CH, &marker).await;
            sent.push((seq, marker));
            peer.pump_ready().await
        } else {
            peer.pump().await
        };
        assert!(alive, "writer {w}: connection closed ({:?})", peer.closed);
        let now = acked_before + peer.docs[&CH].acked;
        let before = shared.per_writer[w].swap(now, Ordering::Relaxed);
        if now > before {
            shared.acked.fetch_add(now - before, Ordering::Relaxed);
        }
    }
}

type WriterTask = (String, tokio::task::JoinHandle<Vec<Segment>>);

/// Starts the writers, `WRITERS` of them spread over `DOCS` documents.
async fn start_writers(
    server: &ServerProcess,
    token: &str,
    shared: &Arc<Shared>,
) -> Vec<WriterTask> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let doc = format!("disk/{}", w % DOCS);
        let mut peer = Peer::connect(server, Some(token)).await;
        peer.open_synced(CH, &doc).await;
        let shared = shared.clone();
        let task_doc = doc.clone();
        tasks.push((
            doc,
            tokio::spawn(async move { writer(peer, task_doc, w, shared).await }),
        ));
    }
    tasks
}

/// Stops the writers and returns each one's openings, by document.
async fn stop_writers(shared: &Shared, tasks: Vec<WriterTask>) -> Vec<(String, Vec<Segment>)> {
    shared.stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for (doc, task) in tasks {
        reports.push((doc, task.await.expect("writer task")));
    }
    reports
}

/// The server under `fiu-run -x -f <prefix>`, with `extra` flags; the directory holding the
/// control files lives as long as the returned guard.
fn start_under_fiu(extra: &[&str]) -> (ServerProcess, tempfile::TempDir, PathBuf) {
    let fiu = tempfile::tempdir().expect("fiu control directory");
    let prefix = fiu.path().join("ctrl");
    let prefix_arg = prefix.to_str().expect("utf-8 path");
    let server = ServerProcess::start_wrapped(&["fiu-run", "-x", "-f", prefix_arg], extra, &[]);
    (server, fiu, prefix)
}

/// A wait condition: at least `target` writes acknowledged, over all writers.
fn acked_at_least(
    shared: &Arc<Shared>,
    target: u64,
) -> impl FnMut() -> std::future::Ready<Option<()>> {
    let shared = shared.clone();
    move || std::future::ready((shared.acked.load(Ordering::Relaxed) >= target).then_some(()))
}

/// Sends one remote-control command to a process started under `fiu-run -x -f <prefix>`.
fn fiu_ctrl(prefix: &Path, pid: u32, command: &str) {
    let output = Command::new("fiu-ctrl")
        .arg("-f")
        .arg(prefix)
        .args(["-c", command, &pid.to_string()])
        .output()
        .expect("running fiu-ctrl (apt-get install fiu-utils)");
    assert!(
        output.status.success(),
        "fiu-ctrl -c '{command}': {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The document's text as a fresh client sees it.
async fn fresh_text(server: &ServerProcess, token: &str, doc: &str) -> String {
    let mut peer = Peer::connect(server, Some(token)).await;
    peer.open_synced(CH, doc).await;
    peer.text(CH)
}

/// `errno`: what the failing call reports (5 EIO, 28 ENOSPC).
async fn fault_while_streaming(name: &str, failure_point: &str, errno: u32) {
    let (mut server, _fiu, prefix) = start_under_fiu(&[]);
    let token = server.token(&["*"], true, "1h");
    let shared = Arc::new(Shared::default());
    let tasks = start_writers(&server, &token, &shared).await;
    wait::until(
        "acknowledged writes before the fault",
        wait::DEADLINE,
        acked_at_least(&shared, HEALTHY_ACKS),
    )
    .await;

    // The fault: every call at the failure point fails with `errno`.
    let enable = format!("enable name={failure_point},failinfo={errno}");
    fiu_ctrl(&prefix, server.pid(), &enable);
    wait::until("every writer closed with 4500", wait::DEADLINE, || {
        std::future::ready(
            (shared.writers_closed.load(Ordering::Relaxed) == WRITERS as u64).then_some(()),
        )
    })
    .await;
    // Every ACK of a commit before the fault came ahead of its connection's 4500; from here on
    // nothing may be acknowledged while commits keep failing (the writers keep reopening).
    let acked_during = shared.acked.load(Ordering::Relaxed);
    let errors = server.metric("quire_storage_errors_total").await;
    assert!(errors > 0.0, "quire_storage_errors_total = {errors}");
    let mut errors_now = errors;
    while errors_now < errors + FAILED_COMMITS as f64 {
        errors_now = wait::until("more failed commits", wait::DEADLINE, || async {
            let now = server.metric("quire_storage_errors_total").await;
            (now > errors_now).then_some(now)
        })
        .await;
    }
    assert_eq!(
        shared.acked.load(Ordering::Relaxed),
        acked_during,
        "writes acknowledged while every commit failed"
    );
    let log = server.log();
    let error_lines = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("storage commit failed"))
        .count();
    assert!(error_lines > 0, "no storage error in the log:\n{log}");

    // Healthy again: the same process acknowledges new writes.
    fiu_ctrl(
        &prefix,
        server.pid(),
        &format!("disable name={failure_point}"),
    );
    wait::until(
        "acknowledged writes after the fault",
        wait::DEADLINE,
        acked_at_least(&shared, acked_during + HEALTHY_ACKS),
    )
    .await;
    let acked_after = shared.acked.load(Ordering::Relaxed) - acked_during;
    let errors_total = server.metric("quire_storage_errors_total").await;
    let reports = stop_writers(&shared, tasks).await;

    let tally = restart_and_verify(&mut server, &token, &reports).await;
    eprintln!(
        "{name} ({failure_point}, errno {errno}): {tally}; {errors_total} failed commits \
         ({error_lines} error lines); {acked_after} acknowledged after the fault was lifted, \
         without a restart"
    );
    assert_eq!(tally.lost, 0, "acknowledged inserts lost");
}

/// What a run's writers sent, checked against the database after a restart.
#[derive(Debug, Default)]
struct Tally {
    acked: usize,
    lost: usize,
    unacked: usize,
    unacked_kept: usize,
    closes: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acknowledged inserts, {} lost; {} channel closes with 4500; {} never \
             acknowledged ({} stored anyway)",
            self.acked, self.lost, self.closes, self.unacked, self.unacked_kept
        )
    }
}

/// Kills the server, restarts it without fiu, checks the file's integrity and counts, per
/// writer opening, the acknowledged inserts that are missing.
async fn restart_and_verify(
    server: &mut ServerProcess,
    token: &str,
    reports: &[(String, Vec<Segment>)],
) -> Tally {
    server.kill9();
    server.set_wrapper(&[]);
    server.restart();
    assert_eq!(db_probe::integrity_check(&server.db_path()).await, "ok");
    let mut tally = Tally::default();
    for d in 0..DOCS {
        let doc = format!("disk/{d}");
        let text = fresh_text(server, token, &doc).await;
        for segments in reports.iter().filter(|(n, _)| *n == doc).map(|(_, s)| s) {
            for segment in segments {
                if let Some(code) = segment.close {
                    assert_eq!(code, STORAGE_FAILURE, "unexpected channel close");
                    tally.closes += 1;
                }
                for (seq, marker) in &segment.sent {
                    if *seq <= segment.acked {
                        tally.acked += 1;
                        if !text.contains(marker.as_str()) {
                            tally.lost += 1;
                            eprintln!("LOST acknowledged insert {marker} in {doc}");
                        }
                    } else {
                        tally.unacked += 1;
                        tally.unacked_kept += usize::from(text.contains(marker.as_str()));
                    }
                }
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_fsync_acknowledges_nothing_and_recovers() {
    fault_while_streaming("fsync fault", "posix/io/sync/fsync", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_write_acknowledges_nothing_and_recovers() {
    fault_while_streaming("write fault", "posix/io/rw/pwrite", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_acknowledges_nothing_and_recovers() {
    fault_while_streaming("disk full", "posix/io/rw/pwrite", 28).await;
}

/// Short writes: with probability 1/2 a pwrite writes only part of what it was given (libfiu's
/// `reduce`), which SQLite must complete with further writes. Writes keep being acknowledged
/// (a write reduced to nothing may fail a commit: then 4500, never a false ACK), and after a
/// kill -9 every acknowledged insert is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_writes_lose_nothing_acknowledged() {
    let (mut server, _fiu, prefix) = start_under_fiu(&[]);
    let token = server.token(&["*"], true, "1h");
    let shared = Arc::new(Shared::default());
    let tasks = start_writers(&server, &token, &shared).await;
    wait::until(
        "acknowledged writes before the fault",
        wait::DEADLINE,
        acked_at_least(&shared, HEALTHY_ACKS),
    )
    .await;

    let point = "posix/io/rw/pwrite/reduce";
    fiu_ctrl(
        &prefix,
        server.pid(),
        &format!("enable_random name={point},probability=0.5"),
    );
    let before = shared.acked.load(Ordering::Relaxed);
    wait::until(
        "acknowledged writes during short writes",
        wait::DEADLINE,
        acked_at_least(&shared, before + HEALTHY_ACKS),
    )
    .await;
    fiu_ctrl(&prefix, server.pid(), &format!("disable name={point}"));
    let during = shared.acked.load(Ordering::Relaxed) - before;
    let errors = server.metric("quire_storage_errors_total").await;
    let reports = stop_writers(&shared, tasks).await;

    let tally = restart_and_verify(&mut server, &token, &reports).await;
    eprintln!("short writes ({point}, probability 0.5): {tally}; {during} acknowledged while writes were short; {errors} failed commits");
    assert_eq!(tally.lost, 0, "acknowledged inserts lost");
}

/// A read fault while a document is loaded from disk: the OPEN is refused with 4500 (and the
/// failure logged), nothing half-loaded is kept in memory or served, and once the disk reads
/// again the same process serves the whole document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_fault_while_loading_refuses_the_open_and_keeps_the_document() {
    let (mut server, _fiu, prefix) = start_under_fiu(&["--idle-unload-ms", "50"]);
    let token = server.token(&["*"], true, "1h");
    let doc = "load/big";

    // Larger than SQLite's page cache (2 MB a connection), so loading it must read the file.
    let text: String = (0..8 * 1024 * 1024 / 16)
        .map(|i| format!("<{i:013}>,"))
        .collect();
    let mut writer = Peer::connect(&server, Some(&token)).await;
    writer.open_synced(CH, doc).await;
    writer.insert(CH, 0, &text).await;
    writer
        .pump_until("the big insert acknowledged", |p| {
            p.docs[&CH].acked == p.docs[&CH].writes
        })
        .await;
    drop(writer);
    wait::until("the document unloaded", wait::DEADLINE, || async {
        (server.metric("quire_documents_loaded").await == 0.0).then_some(())
    })
    .await;

    let point = "posix/io/rw/pread";
    fiu_ctrl(
        &prefix,
        server.pid(),
        &format!("enable name={point},failinfo=5"),
    );
    let mut reader = Peer::connect(&server, Some(&token)).await;
    let refused = reader.open(CH, doc, quire_protocol::Access::Write).await;
    fiu_ctrl(&prefix, server.pid(), &format!("disable name={point}"));
    assert_eq!(refused, Err(STORAGE_FAILURE), "OPEN while reads fail");
    assert!(
        server.log().contains("loading document failed"),
        "no load failure in the log"
    );
    // The room that failed to load is dropped like any idle one, not kept half-filled.
    wait::until("the failed room dropped", wait::DEADLINE, || async {
        (server.metric("quire_documents_loaded").await == 0.0).then_some(())
    })
    .await;

    // The disk reads again: the same process serves the whole document.
    reader.open_synced(ChannelId(2), doc).await;
    assert!(
        reader.text(ChannelId(2)) == text,
        "the document after the fault differs"
    );
    server.kill9();
    server.set_wrapper(&[]);
    server.restart();
    assert_eq!(db_probe::integrity_check(&server.db_path()).await, "ok");
    assert!(
        fresh_text(&server, &token, doc).await == text,
        "the document after a restart differs"
    );
    eprintln!("read fault while loading an {} byte document: OPEN refused with 4500, served whole after the fault was lifted and after a restart", text.len());
}

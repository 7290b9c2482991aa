//! Lifecycle: graceful shutdown, slow consumers, the heartbeat, idle documents.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_protocol::{Access, ChannelId, Frame, Message};
use quire_tests::db_probe;
use quire_tests::doc_peer::Peer;
use quire_tests::http_probe::{self, upgrade_head};
use quire_tests::insert_stream::{StreamPlan, Writer};
use quire_tests::raw_client::{Incoming, RawClient};
use quire_tests::server_process::ServerProcess;
use quire_tests::wait;

const CH: ChannelId = ChannelId(1);
/// The server's default `--shutdown-timeout-secs`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_acknowledges_every_received_write_then_closes_1001() {
    // 40 clients, each on its own connection, streaming writes with up to 64 in flight until
    // their connection ends: at SIGTERM every one has writes in flight.
    const WRITERS: usize = 40;
    const IN_FLIGHT: u64 = 64;
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let doc = format!("shutdown/{w}");
        let plan = StreamPlan {
            channel: CH,
            prefix: format!("w{w}"),
            limit: None,
            window: IN_FLIGHT,
        };
        writers.push(Writer::start(&server, &token, doc, plan).await);
    }
    wait::until("20 ACKs for each writer", wait::DEADLINE, || {
        let all = writers.iter().all(|w| w.acked() >= 20);
        std::future::ready(all.then_some(()))
    })
    .await;
    let started = Instant::now();
    server.sigterm();
    let status = server.wait_exit(SHUTDOWN_TIMEOUT).await;
    let took = started.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    let mut reports = Vec::new();
    for writer in writers {
        reports.push(writer.finish().await);
    }
    let codes: Vec<Option<u16>> = reports.iter().map(|(_, report)| report.close).collect();
    let went_away = codes.iter().filter(|code| **code == Some(1001)).count();
    assert_eq!(
        went_away, WRITERS,
        "clients that read 1001 after SIGTERM; close codes seen: {codes:?}"
    );
    server.restart();
    let (mut acked, mut lost, mut stored_unacked, mut sent) = (0, 0, 0, 0);
    for (doc, report) in &reports {
        let mut peer = Peer::connect(&server, Some(&token)).await;
        peer.open_synced(CH, doc).await;
        let text = peer.text(CH);
        sent += report.sent.len();
        for marker in report.acked_markers() {
            acked += 1;
            lost += usize::from(!text.contains(marker));
        }
        // A write the server stored is one it received; it must have acknowledged it
        // before saying goodbye.
        for marker in report.unacked_markers() {
            stored_unacked += usize::from(text.contains(marker));
        }
    }
    eprintln!(
        "SIGTERM during {WRITERS} streams: exited in {took:?}; {went_away} of {WRITERS} read 1001; \
         {sent} inserts sent, {acked} acknowledged before 1001, {lost} of those lost, \
         {stored_unacked} stored without an ACK"
    );
    assert_eq!(lost, 0, "acknowledged writes lost over a graceful restart");
    assert_eq!(
        stored_unacked, 0,
        "received writes not acknowledged before 1001"
    );
    assert_eq!(db_probe::integrity_check(&server.db_path()).await, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_during_the_shutdown_drain_get_503() {
    let mut server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let auth = format!("Bearer {token}");
    let head = upgrade_head("GET", "/ws", &[], &[("Authorization", auth.as_str())]);
    // A client that never answers the server's Close keeps the drain open for the close
    // handshake's bounded linger, long enough to be seen.
    let silent = RawClient::connect_hello(&server, Some(&token)).await;
    let before = http_probe::request(server.addr, server.tls(), &head).await;
    assert_eq!(before.status, 101, "before SIGTERM: {before:?}");

    server.sigterm();
    // Upgrades are accepted until the server has handled the signal; from then on, until it
    // exits, the listener stays open and answers 503.
    let during = wait::until(
        "an upgrade answered by the draining server",
        wait::DEADLINE,
        || async {
            let response = http_probe::request(server.addr, server.tls(), &head).await;
            (response.status != 101).then_some(response)
        },
    )
    .await;
    assert_eq!(during.status, 503, "during the drain: {during:?}");
    assert!(
        during.body.contains("shutting down"),
        "the refusal says why: {during:?}"
    );
    let status = server.wait_exit(SHUTDOWN_TIMEOUT).await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    drop(silent);
}

/// Size of each update the writer pushes at the slow consumer, and how many it sends before
/// waiting for their ACKs.
const BIG: usize = 64 * 1024;
const BURST: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_are_closed_with_4009_and_nobody_else_notices() {
    const SLOW: usize = 20;
    // Room for a burst of BURST updates (and then some) for a reader that keeps up.
    let server = ServerProcess::start(&["--queue-depth", "16", "--max-queued-bytes", "1048576"]);
    let token = server.token(&["*"], true, "1h");
    let doc = "busy/doc";
    // Each opens the document, then stops reading its socket until the server gave up on it.
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut peer = Peer::connect(&server, Some(&token)).await;
        peer.open_synced(CH, doc).await;
        slow.push(peer);
    }

    let expected_len = Arc::new(AtomicU64::new(u64::MAX));
    let mut reader = Peer::connect(&server, Some(&token)).await;
    reader.open_synced(CH, doc).await;
    let reader_task = {
        let expected_len = expected_len.clone();
        tokio::spawn(async move {
            reader
                .pump_until("everything the writer wrote", |p| {
                    u64::from(p.text_len(CH)) == expected_len.load(Ordering::Relaxed)
                })
                .await;
            reader
        })
    };

    let mut writer = Peer::connect(&server, Some(&token)).await;
    writer.open_synced(CH, doc).await;
    let chunk = "x".repeat(BIG);
    let mut updates = 0;
    while server.metric("quire_slow_consumers_total").await < SLOW as f64 {
        assert!(
            updates < 2000,
            "fewer than {SLOW} slow consumers found after {updates} updates of {BIG} bytes"
        );
        for _ in 0..BURST {
            writer.insert(CH, 0, &chunk).await;
            updates += 1;
        }
        writer
            .pump_until("the writer's ACKs", |p| {
                p.docs[&CH].acked == p.docs[&CH].writes
            })
            .await;
    }
    // What each slow client finds when it reads again, within the server's deadline for
    // delivering the Close: whatever fit in its socket, then the Close frame.
    let reads = slow
        .into_iter()
        .map(|mut peer| tokio::spawn(async move { peer.client.expect_close().await }));
    let mut codes = Vec::new();
    for read in reads.collect::<Vec<_>>() {
        codes.push(read.await.expect("slow client task"));
    }
    let got_4009 = codes.iter().filter(|code| **code == 4009).count();
    assert_eq!(
        got_4009, SLOW,
        "close codes the slow clients read: {codes:?}"
    );

    // The writer carries on after the slow consumers are gone. The reader learns the final
    // length before the last update can reach it.
    let end = "<end>";
    expected_len.store(
        u64::from(writer.text_len(CH)) + end.len() as u64,
        Ordering::Relaxed,
    );
    writer.insert(CH, 0, end).await;
    writer
        .pump_until("the last ACK", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
    let reader = reader_task.await.expect("reader task");
    assert!(reader.closed.is_none() && reader.docs[&CH].closed.is_none());
    assert!(
        reader.text(CH) == writer.text(CH),
        "the reader has every update"
    );
    eprintln!(
        "slow consumers: {got_4009} of {SLOW} read 4009, after {updates} updates of {BIG} bytes"
    );
}

#[tokio::test]
async fn a_silent_client_is_closed_with_4008_and_a_live_one_is_not() {
    let server = ServerProcess::start(&[
        "--heartbeat-interval-ms",
        "200",
        "--heartbeat-timeout-ms",
        "1000",
    ]);
    let token = server.token(&["*"], true, "1h");

    // A live client answers every ping, meanwhile: 10 pings span twice the timeout.
    let mut live = RawClient::connect_hello(&server, Some(&token)).await;
    let live = tokio::spawn(async move {
        for _ in 0..10 {
            match live.recv_raw().await {
                Incoming::Frame(Frame {
                    message: Message::Ping(nonce),
                    ..
                }) => live.send(ChannelId::CONTROL, Message::Pong(nonce)).await,
                other => panic!("live client got {other:?}"),
            }
        }
    });

    let mut silent = RawClient::connect(&server, Some(&token)).await.unwrap();
    let started = Instant::now();
    silent.hello().await;
    let mut pings = 0;
    let code = loop {
        match silent.recv_raw().await {
            Incoming::Frame(Frame {
                message: Message::Ping(_),
                ..
            }) => pings += 1,
            Incoming::Frame(other) => panic!("unexpected {other:?}"),
            Incoming::Closed(code, _) => break code,
        }
    };
    let took = started.elapsed();
    assert_eq!(code, 4008, "silent client");
    assert!(
        took >= Duration::from_millis(1000),
        "closed before the timeout: {took:?}"
    );
    assert!(pings >= 2, "the server pings every 200 ms; saw {pings}");
    eprintln!("silent client: 4008 after {took:?} (timeout 1 s), {pings} pings unanswered");
    live.await.expect("the live client stays connected");

    // A client that never sends HELLO is closed with 4010.
    let mut mute = RawClient::connect(&server, Some(&token)).await.unwrap();
    assert_eq!(mute.expect_close().await, 4010);
}

#[tokio::test]
async fn an_idle_document_is_unloaded_and_reloads_intact() {
    let server = ServerProcess::start(&["--idle-unload-ms", "300"]);
    let token = server.token(&["*"], true, "1h");
    let loaded = "quire_documents_loaded";

    let mut peer = Peer::connect(&server, Some(&token)).await;
    peer.open_synced(CH, "idle/doc").await;
    peer.append(CH, "kept across an unload").await;
    peer.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
    assert_eq!(server.metric(loaded).await, 1.0);
    peer.client.close().await;

    wait::until("the idle document to unload", wait::DEADLINE, || async {
        (server.metric(loaded).await == 0.0).then_some(())
    })
    .await;

    let mut again = Peer::connect(&server, Some(&token)).await;
    assert_eq!(
        again.open(CH, "idle/doc", Access::Write).await,
        Ok(Access::Write)
    );
    again.pump_until("sync", |p| p.docs[&CH].synced).await;
    assert_eq!(again.text(CH), "kept across an unload");
    assert_eq!(server.metric(loaded).await, 1.0);
}

/// `(soft, hard)` "Max open files" of process `pid`, from /proc.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (fields[0].to_owned(), fields[1].to_owned())
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn serve_raises_the_soft_open_file_limit_to_the_hard_one_and_logs_it() {
    // Started with a low soft limit, as many systems' defaults are.
    let wrapper = ["sh", "-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""];
    let server = ServerProcess::start_wrapped(&wrapper, &[], &[]);
    let (soft, hard) = open_file_limits(server.pid());
    assert_eq!(soft, hard, "the soft limit is raised to the hard one");
    let log = strip_ansi(&server.log());
    let line = log
        .lines()
        .find(|l| l.contains("open-file limit"))
        .unwrap_or_else(|| panic!("the figures are logged: {log}"));
    assert!(line.contains("soft_before=256"), "{line}");
    assert!(line.contains(&format!("soft={soft}")), "{line}");
    assert!(line.contains(&format!("hard={hard}")), "{line}");
}

//! 200 clients of a server that goes away and comes back do not return all at once: the
//! reconnect delays are jittered (full jitter after a lost connection, a random delay below
//! 2 s after a 1001 "going away"), so the restarted server sees their connection attempts
//! spread out. The spread is read from the server's own accept timestamps.

use std::sync::Arc;
use std::time::Duration;

use quire_client::{Access, Client, ConnectionState, DocHandle, MemoryStore};
use quire_tests::client_util::{config, until_connected};
use quire_tests::server_log::{accept_times, spread, ACCEPT_TRACE_ENV};
use quire_tests::server_process::ServerProcess;
use quire_tests::wait;

const CLIENTS: usize = 200;
const DEADLINE: Duration = Duration::from_secs(60);
/// The window in which a thundering herd would show.
const WINDOW: Duration = Duration::from_millis(50);

/// One scenario at a time: 400 clients and two servers at once on two cores would measure
/// the machine, not the jitter.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGKILL: connections just end (1006, retry with backoff).
    Kill,
    /// SIGTERM: a graceful shutdown closes every connection with 1001 (retry soon).
    Term,
}

async fn restart_spreads_reconnects(stop: Stop) {
    let _serial = SERIAL.lock().await;
    let mut server =
        ServerProcess::start_with_env(&["--max-connections-per-ip", "1000"], ACCEPT_TRACE_ENV);
    let token = server.token(&["*"], true, "1h");
    let mut clients = Vec::with_capacity(CLIENTS);
    let mut docs: Vec<DocHandle> = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let client = Client::start(
            config(&server, Some(token.clone())),
            Arc::new(MemoryStore::default()),
        );
        docs.push(
            client
                .open(&format!("doc-{i}"), Access::Write)
                .await
                .unwrap(),
        );
        clients.push(client);
    }
    for client in &clients {
        until_connected(client, DEADLINE).await;
    }

    match stop {
        Stop::Kill => server.kill9(),
        Stop::Term => {
            server.sigterm();
            let status = server.wait_exit(DEADLINE).await;
            assert!(status.success(), "graceful shutdown failed: {status}");
        }
    }
    wait::until("every client to notice the outage", DEADLINE, || {
        let all = clients
            .iter()
            .all(|c| !matches!(*c.state().borrow(), ConnectionState::Connected { .. }));
        std::future::ready(all.then_some(()))
    })
    .await;
    if let Stop::Kill = stop {
        // A real outage: every client has already failed a reconnect and is backing off.
        wait::until("every client to fail a reconnect", DEADLINE, || {
            let all = clients.iter().all(|c| attempt(&c.state().borrow()) >= 2);
            std::future::ready(all.then_some(()))
        })
        .await;
    }
    if let Stop::Term = stop {
        // Each was told "going away" and waits below 2 s, not a backoff ceiling.
        let reasons: Vec<u16> = clients
            .iter()
            .filter_map(|c| match *c.state().borrow() {
                ConnectionState::Reconnecting { last_code, .. } => Some(last_code),
                _ => None,
            })
            .collect();
        assert!(reasons.contains(&1001), "no client saw 1001: {reasons:?}");
    }

    let old_log = server.log().len();
    tokio::task::block_in_place(|| server.restart());
    for client in &clients {
        until_connected(client, DEADLINE).await;
    }

    let log = server.log();
    let times = accept_times(&log[old_log..]);
    let spread = spread(&times, WINDOW, Duration::from_millis(100));
    eprintln!(
        "{stop:?}: {} connection attempts over {:?}, at most {} in any {WINDOW:?}\n{}",
        spread.attempts, spread.span, spread.busiest_window, spread.histogram
    );
    assert!(spread.attempts >= CLIENTS, "{} attempts", spread.attempts);
    assert!(
        spread.busiest_window <= CLIENTS / 4,
        "{} of {} attempts within {WINDOW:?}: a thundering herd",
        spread.busiest_window,
        spread.attempts
    );
    assert!(
        spread.span >= Duration::from_millis(400),
        "the attempts span only {:?}",
        spread.span
    );
    for client in &clients {
        client.close().await;
    }
}

/// The number of the attempt under way or awaited (1 is the first retry).
fn attempt(state: &ConnectionState) -> u32 {
    match state {
        ConnectionState::Connecting { attempt } | ConnectionState::Reconnecting { attempt, .. } => {
            *attempt
        }
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_kill9_are_spread_by_jitter() {
    restart_spreads_reconnects(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_graceful_restart_are_spread_by_jitter() {
    restart_spreads_reconnects(Stop::Term).await;
}

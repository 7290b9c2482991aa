//! Serving: starts the persister, the rooms and the shared [`Server`], serves a listener until
//! a shutdown future resolves, then shuts down gracefully: answer new upgrades with 503 while
//! every connection makes its writes durable, sends their ACKs and closes with 1001; then stop
//! listening and commit whatever is left.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::auth::Secret;
use crate::config::ServeConfig;
use crate::http;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::persist::{CompactionPolicy, Persister};
use crate::rooms::Rooms;
use crate::server::Server;
use crate::store::Store;

/// How often rooms drop the presence other servers relayed and nobody renewed.
const AWARENESS_EXPIRY_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves `listener` (and `/metrics` on `metrics_listener`, if given) until `shutdown`
/// resolves, then shuts down gracefully.
pub async fn run<S: Store>(
    config: ServeConfig,
    secret: Option<Secret>,
    store: Arc<S>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let metrics = Arc::new(Metrics::default());
    let memory = MemoryBudget::new(config.memory_budget);
    let (fanout, remote_updates) = match &config.redis_url {
        Some(url) => match crate::fanout::start(url, metrics.clone()) {
            Ok((publisher, updates)) => (Some(publisher), Some(updates)),
            Err(err) => {
                tracing::error!(error = %err, "--redis-url is not usable; updates between servers are found by checking the database");
                (None, None)
            }
        },
        None => (None, None),
    };
    let (persister, persister_task) = Persister::start(
        store.clone(),
        metrics.clone(),
        CompactionPolicy {
            after_updates: config.compact_after_updates,
        },
        config.queue_depth.max(1024),
        config.commit_window,
        fanout.clone(),
    );
    let store_is_shared = store.shared();
    let purger = tokio::spawn(crate::trash::purge_loop(
        store.clone(),
        config.history.trash_retention,
    ));
    let rooms = Arc::new(
        Rooms::new(
            store,
            persister.clone(),
            config.idle_unload,
            metrics.clone(),
            memory.clone(),
        )
        .with_history(config.history)
        .with_fanout(fanout)
        .with_digest_check(config.digest_check),
    );
    let enforcer = tokio::spawn(memory.clone().enforce(rooms.clone()));
    // Other servers may store updates of the documents loaded here (a shared database).
    let follower = store_is_shared
        .then(|| tokio::spawn(rooms.clone().follow_shared_store(config.shared_poll)));
    let fanout_follower =
        remote_updates.map(|updates| tokio::spawn(rooms.clone().follow_fanout(updates)));
    // Presence from other servers that their clients stopped renewing (their server died).
    let awareness_expiry = fanout_follower.is_some().then(|| {
        tokio::spawn(
            rooms
                .clone()
                .expire_remote_awareness(AWARENESS_EXPIRY_CHECK, config.remote_awareness_timeout),
        )
    });
    let shutdown_timeout = config.shutdown_timeout;
    let (server, shutdown_tx) = Server::new(config, secret, rooms, persister, metrics, memory);

    let metrics_task = metrics_listener.map(|listener| {
        tokio::spawn(http::metrics_loop(
            server.metrics.clone(),
            server.memory.clone(),
            listener,
        ))
    });
    // The listener stays open through the drain, so that a client reconnecting meanwhile is
    // told 503 (PROTOCOL §5.3) rather than refused at the TCP level.
    let (drained, stop_accepting) = oneshot::channel::<()>();
    let accepting = tokio::spawn(http::accept_loop(
        server.clone(),
        listener,
        tls,
        async move {
            let _ = stop_accepting.await;
        },
    ));
    shutdown.await;
    tracing::info!("shutting down: flushing pending writes and closing connections with 1001");
    let _ = shutdown_tx.send(true);
    // Each connection flushes its own writes, waits for their acks to go out, then closes
    // with 1001. Wait for all of them, within the bound.
    let all_closed = tokio::time::timeout(shutdown_timeout, server.all_closed()).await;
    if all_closed.is_err() {
        tracing::warn!(
            open = server.open_connections(),
            "shutdown timeout: closing remaining connections"
        );
    }
    let _ = drained.send(());
    let _ = accepting.await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    enforcer.abort();
    purger.abort();
    for task in [follower, fanout_follower, awareness_expiry]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    // Whatever is still queued (a connection past the timeout) is committed before exiting.
    server.persister.flush().await;
    drop(persister_task);
}

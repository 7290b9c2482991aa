//! The server as a value: configuration, storage, rooms, persister and metrics wired together,
//! and `run`, which serves a listener until a shutdown future resolves, then shuts down
//! gracefully: answer new upgrades with 503 while every connection makes its writes durable,
//! sends their ACKs and closes with 1001; then stop listening.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};

use crate::auth::Secret;
use crate::config::ServeConfig;
use crate::failed_login::FailedLogins;
use crate::http;
use crate::metrics::Metrics;
use crate::persist::{CompactionPolicy, Persister};
use crate::rooms::Rooms;
use crate::store::Store;

/// Everything a connection needs, shared.
#[derive(Debug)]
pub struct Server<S> {
    pub config: ServeConfig,
    /// `None` in `--no-auth` mode.
    pub secret: Option<Secret>,
    pub rooms: Arc<Rooms<S>>,
    pub persister: Persister,
    pub metrics: Arc<Metrics>,
    /// The log-line budget for refused logins.
    pub(crate) failed_logins: FailedLogins,
    pub(crate) next_conn_id: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// Accepted TCP connections per address, upgraded or not.
    tcp_per_ip: Mutex<HashMap<IpAddr, u32>>,
    live: AtomicUsize,
    all_closed: Notify,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Counts one connection from an address for as long as it lives.
#[derive(Debug)]
pub struct ConnectionSlot<S: Store> {
    server: Arc<Server<S>>,
    ip: IpAddr,
}

impl<S: Store> Drop for ConnectionSlot<S> {
    fn drop(&mut self) {
        let mut per_ip = self.server.per_ip.lock();
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        drop(per_ip);
        if self.server.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.server.all_closed.notify_waiters();
        }
    }
}

/// Counts one accepted TCP connection from an address for as long as it lives, from accept
/// through TLS, HTTP and, once upgraded, the WebSocket.
#[derive(Debug)]
pub struct TcpSlot<S: Store> {
    server: Arc<Server<S>>,
    ip: IpAddr,
}

impl<S: Store> Drop for TcpSlot<S> {
    fn drop(&mut self) {
        let mut tcp_per_ip = self.server.tcp_per_ip.lock();
        if let Some(count) = tcp_per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                tcp_per_ip.remove(&self.ip);
            }
        }
    }
}

impl<S: Store> Server<S> {
    /// Takes a TCP slot for `ip` at accept, or `None` when the address holds
    /// `max_tcp_connections_per_ip` connections already.
    pub fn tcp_slot(self: &Arc<Self>, ip: IpAddr) -> Option<TcpSlot<S>> {
        let mut tcp_per_ip = self.tcp_per_ip.lock();
        let count = tcp_per_ip.entry(ip).or_default();
        if *count >= self.config.max_tcp_connections_per_ip {
            return None;
        }
        *count += 1;
        Some(TcpSlot {
            server: self.clone(),
            ip,
        })
    }

    /// Takes a connection slot for `ip`, or `None` when the address is at its limit.
    pub fn connection_slot(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot<S>> {
        let mut per_ip = self.per_ip.lock();
        let count = per_ip.entry(ip).or_default();
        if *count >= self.config.max_connections_per_ip {
            return None;
        }
        *count += 1;
        self.live.fetch_add(1, Ordering::AcqRel);
        Some(ConnectionSlot {
            server: self.clone(),
            ip,
        })
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

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
    let (persister, persister_task) = Persister::start(
        store.clone(),
        metrics.clone(),
        CompactionPolicy {
            after_updates: config.compact_after_updates,
        },
        config.queue_depth.max(1024),
        config.commit_window,
    );
    let rooms = Arc::new(Rooms::new(
        store,
        persister.clone(),
        config.idle_unload,
        metrics.clone(),
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_timeout = config.shutdown_timeout;
    let server = Arc::new(Server {
        config,
        secret,
        rooms,
        persister,
        metrics,
        failed_logins: FailedLogins::default(),
        next_conn_id: AtomicU64::new(1),
        per_ip: Mutex::new(HashMap::new()),
        tcp_per_ip: Mutex::new(HashMap::new()),
        live: AtomicUsize::new(0),
        all_closed: Notify::new(),
        shutdown: shutdown_rx,
    });

    let metrics_task = metrics_listener
        .map(|listener| tokio::spawn(http::metrics_loop(server.metrics.clone(), listener)));
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
    let all_closed = tokio::time::timeout(shutdown_timeout, async {
        loop {
            let notified = server.all_closed.notified();
            if server.live.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
    })
    .await;
    if all_closed.is_err() {
        tracing::warn!(
            open = server.live.load(Ordering::Acquire),
            "shutdown timeout: closing remaining connections"
        );
    }
    let _ = drained.send(());
    let _ = accepting.await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    // Whatever is still queued (a connection past the timeout) is committed before exiting.
    server.persister.flush().await;
    drop(persister_task);
}

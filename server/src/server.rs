//! The server as a value: configuration, storage, rooms, persister and metrics, shared by
//! every connection, with the per-address connection counts and the shutdown switch.
//! [`crate::serve`] starts one and serves it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::auth::Secret;
use crate::config::ServeConfig;
use crate::failed_login::FailedLogins;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::persist::Persister;
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
    /// What clients make the server hold, against one limit.
    pub memory: Arc<MemoryBudget>,
    /// The log-line budget for refused logins.
    pub(crate) failed_logins: FailedLogins,
    pub(crate) next_conn_id: AtomicU64,
    per_ip: PerAddress,
    /// Accepted TCP connections per address, upgraded or not.
    tcp_per_ip: PerAddress,
    live: AtomicUsize,
    all_closed: Notify,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Connections counted per address, each against a limit.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, u32>>);

impl PerAddress {
    /// Counts one more for `ip`, unless it already has `limit`.
    fn take(&self, ip: IpAddr, limit: u32) -> bool {
        let mut counts = self.0.lock();
        let count = counts.entry(ip).or_default();
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }

    /// Counts one fewer for `ip`; an address at zero is forgotten.
    fn give_back(&self, ip: IpAddr) {
        let mut counts = self.0.lock();
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// Counts one connection from an address for as long as it lives.
#[derive(Debug)]
pub struct ConnectionSlot<S: Store> {
    server: Arc<Server<S>>,
    ip: IpAddr,
}

impl<S: Store> Drop for ConnectionSlot<S> {
    fn drop(&mut self) {
        self.server.per_ip.give_back(self.ip);
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
        self.server.tcp_per_ip.give_back(self.ip);
    }
}

impl<S: Store> Server<S> {
    /// Takes a TCP slot for `ip` at accept, or `None` when the address holds
    /// `max_tcp_connections_per_ip` connections already.
    /// A trusted proxy carries many clients: it has no limit of its own (its clients' are
    /// counted at the upgrade).
    pub fn tcp_slot(self: &Arc<Self>, ip: IpAddr) -> Option<TcpSlot<S>> {
        let proxy = self.config.trusted_proxies.iter().any(|n| n.contains(ip));
        let limit = if proxy {
            u32::MAX
        } else {
            self.config.max_tcp_connections_per_ip
        };
        if !self.tcp_per_ip.take(ip, limit) {
            return None;
        }
        Some(TcpSlot {
            server: self.clone(),
            ip,
        })
    }

    /// Takes a connection slot for `ip`, or `None` when the address is at its limit.
    pub fn connection_slot(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot<S>> {
        if !self.per_ip.take(ip, self.config.max_connections_per_ip) {
            return None;
        }
        self.live.fetch_add(1, Ordering::AcqRel);
        Some(ConnectionSlot {
            server: self.clone(),
            ip,
        })
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The shared state of a server that has not started serving, and the switch that tells
    /// its connections to shut down.
    pub fn new(
        config: ServeConfig,
        secret: Option<Secret>,
        rooms: Arc<Rooms<S>>,
        persister: Persister,
        metrics: Arc<Metrics>,
        memory: Arc<MemoryBudget>,
    ) -> (Arc<Self>, watch::Sender<bool>) {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let server = Arc::new(Server {
            config,
            secret,
            rooms,
            persister,
            metrics,
            memory,
            failed_logins: FailedLogins::default(),
            next_conn_id: AtomicU64::new(1),
            per_ip: PerAddress::default(),
            tcp_per_ip: PerAddress::default(),
            live: AtomicUsize::new(0),
            all_closed: Notify::new(),
            shutdown: shutdown_rx,
        });
        (server, shutdown_tx)
    }

    /// WebSocket connections still open.
    pub fn open_connections(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Resolves once no WebSocket connection is open (awaits their slots' release).
    pub async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

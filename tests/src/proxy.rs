//! A TCP proxy for network faults, in the style of zed's in-memory connection with a kill
//! switch: it listens on 127.0.0.1:0, forwards every accepted connection to an upstream
//! address, and is steered while it runs through a [`ProxyHandle`]:
//!
//! - **delay**: every chunk is held back this long (a delay line: latency, not a rate cap);
//! - **stall**: bytes stop moving in both directions but no socket is closed, like a
//!   half-open TCP path (the peers see silence, never a FIN or RST);
//! - **reset**: every open connection is dropped with RST on both sides (SO_LINGER 0);
//! - **cut**: the next chunk in one direction is forwarded only in part, then the connection
//!   is closed (a frame cut in the middle);
//! - **throttle**: each direction of each connection is paced to N bytes per second.
//!
//! It records when it accepted each connection. The proxy's timers only shape traffic; tests
//! wait on [`ProxyHandle::until_accepted`] rather than sleeping.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Largest chunk read at once.
const CHUNK: usize = 16 * 1024;
/// Chunks read but not yet written, per direction (the delay line's depth).
const IN_FLIGHT: usize = 64;

/// Which way bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the upstream server.
    ToServer,
    /// From the upstream server to the client.
    ToClient,
}

/// The running proxy; dropping it stops accepting (open connections end with their peers).
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    handle: ProxyHandle,
    accept_task: tokio::task::JoinHandle<()>,
}

/// Steers a running proxy. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProxyHandle(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    delay: Mutex<Duration>,
    /// Bytes per second per direction; `None` is unlimited.
    throttle: Mutex<Option<u64>>,
    /// New connections start stalled.
    stall_new: AtomicBool,
    cut_to_server: AtomicBool,
    cut_to_client: AtomicBool,
    /// Accept times, in order.
    accepted: watch::Sender<Vec<Instant>>,
    /// The connections still open.
    conns: Mutex<Vec<ConnControl>>,
}

/// The switches of one connection.
#[derive(Debug, Clone)]
struct ConnControl {
    /// The connection's number in accept order.
    id: usize,
    stalled: watch::Sender<bool>,
    reset: watch::Sender<bool>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let handle = ProxyHandle(Arc::new(Shared {
            upstream,
            delay: Mutex::new(Duration::ZERO),
            throttle: Mutex::new(None),
            stall_new: AtomicBool::new(false),
            cut_to_server: AtomicBool::new(false),
            cut_to_client: AtomicBool::new(false),
            accepted: watch::channel(Vec::new()).0,
            conns: Mutex::new(Vec::new()),
        }));
        let shared = handle.0.clone();
        let accept_task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut id = 0;
                shared.accepted.send_modify(|a| {
                    id = a.len();
                    a.push(Instant::now());
                });
                let control = ConnControl {
                    id,
                    stalled: watch::channel(shared.stall_new.load(Ordering::SeqCst)).0,
                    reset: watch::channel(false).0,
                };
                shared.conns.locked().push(control.clone());
                tokio::spawn(serve(shared.clone(), client, control));
            }
        });
        Self {
            addr,
            handle,
            accept_task,
        }
    }

    /// `wss://127.0.0.1:PORT/ws` through the proxy (certificate pinning ignores the name).
    pub fn url(&self) -> String {
        format!("wss://{}/ws", self.addr)
    }

    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }
}

impl std::ops::Deref for Proxy {
    type Target = ProxyHandle;
    fn deref(&self) -> &ProxyHandle {
        &self.handle
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl ProxyHandle {
    /// Holds every chunk back `delay` before forwarding it (both directions).
    pub fn set_delay(&self, delay: Duration) {
        *self.0.delay.locked() = delay;
    }

    /// Paces each direction of each connection to `bytes_per_sec`; `None` lifts the limit.
    pub fn set_throttle(&self, bytes_per_sec: Option<u64>) {
        *self.0.throttle.locked() = bytes_per_sec.map(|b| b.max(1));
    }

    /// Stops forwarding on every open connection and on new ones, keeping all sockets open.
    pub fn stall(&self) {
        self.0.stall_new.store(true, Ordering::SeqCst);
        self.stall_existing();
    }

    /// Stops forwarding on the connections open now; new connections pass.
    pub fn stall_existing(&self) {
        for conn in self.0.conns.locked().iter() {
            conn.stalled.send_replace(true);
        }
    }

    /// Lifts every stall.
    pub fn resume(&self) {
        self.0.stall_new.store(false, Ordering::SeqCst);
        for conn in self.0.conns.locked().iter() {
            conn.stalled.send_replace(false);
        }
    }

    /// Drops every open connection with a TCP reset on both sides.
    pub fn reset_all(&self) {
        for conn in self.0.conns.locked().drain(..) {
            conn.reset.send_replace(true);
        }
    }

    /// The next chunk travelling `direction`, on any connection, is forwarded only in part
    /// (its first half) and then that connection is closed.
    pub fn cut_next_chunk(&self, direction: Direction) {
        self.cut_flag(direction).store(true, Ordering::SeqCst);
    }

    /// True while a cut is armed and has not happened yet.
    pub fn cut_pending(&self, direction: Direction) -> bool {
        self.cut_flag(direction).load(Ordering::SeqCst)
    }

    /// When each connection was accepted, in order.
    pub fn accepted(&self) -> Vec<Instant> {
        self.0.accepted.borrow().clone()
    }

    /// Waits until at least `count` connections have been accepted.
    pub async fn until_accepted(&self, count: usize, deadline: Duration) {
        let mut rx = self.0.accepted.subscribe();
        let waited = tokio::time::timeout(deadline, rx.wait_for(|a| a.len() >= count)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "timed out after {deadline:?} waiting for {count} accepted connections; have {}",
            self.accepted().len()
        );
    }

    fn cut_flag(&self, direction: Direction) -> &AtomicBool {
        self.0.cut_flag(direction)
    }
}

/// How one connection (or one direction of it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The source sent FIN and everything was forwarded.
    Eof,
    /// A read or write failed: pass the failure on as a reset.
    Failed,
    /// A cut happened: close both sides.
    Cut,
    /// Asked to reset.
    Reset,
}

async fn serve(shared: Arc<Shared>, client: TcpStream, control: ConnControl) {
    forward(&shared, client, &control).await;
    shared.conns.locked().retain(|c| c.id != control.id);
}

async fn forward(shared: &Shared, client: TcpStream, control: &ConnControl) {
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        // Upstream down: the client sees its connection refused as a reset.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let end = {
        let up = pump(
            shared,
            control,
            Direction::ToServer,
            &mut client_read,
            &mut server_write,
        );
        let down = pump(
            shared,
            control,
            Direction::ToClient,
            &mut server_read,
            &mut client_write,
        );
        tokio::pin!(up, down);
        let mut reset = control.reset.subscribe();
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                end = &mut up, if !up_done => match end {
                    End::Eof => up_done = true,
                    other => break other,
                },
                end = &mut down, if !down_done => match end {
                    End::Eof => down_done = true,
                    other => break other,
                },
                _ = reset.wait_for(|r| *r) => break End::Reset,
            }
            if up_done && down_done {
                break End::Eof;
            }
        }
    };
    if matches!(end, End::Reset | End::Failed) {
        // SO_LINGER 0 turns the close into an RST; `forget` skips the FIN a write half
        // sends when dropped.
        let _ = client_write.as_ref().set_zero_linger();
        let _ = server_write.as_ref().set_zero_linger();
        client_write.forget();
        server_write.forget();
    }
}

/// Forwards one direction until EOF, a failure or a cut: a reader feeding a delay line and a
/// writer that honours stall, delay, cut and throttle.
async fn pump(
    shared: &Shared,
    control: &ConnControl,
    direction: Direction,
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
) -> End {
    let (line_tx, mut line) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let read = async {
        let mut stalled = control.stalled.subscribe();
        loop {
            let _ = stalled.wait_for(|s| !*s).await;
            let mut buf = vec![0; CHUNK];
            let n = match from.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => return End::Failed,
            };
            buf.truncate(n);
            let eof = n == 0;
            if line_tx.send((Instant::now(), buf)).await.is_err() || eof {
                // The writer ends the direction once the line is drained.
                return std::future::pending().await;
            }
        }
    };
    let write = async {
        let mut stalled = control.stalled.subscribe();
        let mut next_slot = Instant::now();
        while let Some((read_at, mut chunk)) = line.recv().await {
            let _ = stalled.wait_for(|s| !*s).await;
            let delay = *shared.delay.locked();
            tokio::time::sleep_until(read_at + delay).await;
            let _ = stalled.wait_for(|s| !*s).await;
            if chunk.is_empty() {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            let cut = shared.cut_flag(direction).swap(false, Ordering::SeqCst);
            if cut {
                chunk.truncate(chunk.len().div_ceil(2));
            }
            let throttle = *shared.throttle.locked();
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let piece = match throttle {
                    // Pieces of about 20 ms each keep the pace smooth.
                    Some(rate) => &rest[..rest.len().min((rate / 50).max(1) as usize)],
                    None => rest,
                };
                if let Some(rate) = throttle {
                    next_slot = next_slot.max(Instant::now());
                    tokio::time::sleep_until(next_slot).await;
                    next_slot += Duration::from_secs_f64(piece.len() as f64 / rate as f64);
                }
                if to.write_all(piece).await.is_err() {
                    return End::Failed;
                }
                rest = &rest[piece.len()..];
            }
            if cut {
                return End::Cut;
            }
        }
        End::Failed
    };
    tokio::select! {
        end = read => end,
        end = write => end,
    }
}

impl Shared {
    fn cut_flag(&self, direction: Direction) -> &AtomicBool {
        match direction {
            Direction::ToServer => &self.cut_to_server,
            Direction::ToClient => &self.cut_to_client,
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test must not hide behind another panic).
trait Locked<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

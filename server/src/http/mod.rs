//! The HTTP side: the accept loop (TCP_NODELAY, optional TLS), `/healthz`, `/metrics`, the
//! loaded documents' digests on `/digests`, and the WebSocket upgrade on `/ws`, checked in
//! full before answering 101 so that every refused upgrade gets the status the spec names
//! rather than a dropped socket.

pub mod digests;
pub mod echo;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use quire_protocol::handshake::{self, check_upgrade, Refusal};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::auth::{unix_now, Claims};
use crate::connection;
use crate::forwarded::client_ip;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::server::{Server, TcpSlot};
use crate::store::Store;

/// Unsent bytes the kernel may hold per socket (`TCP_NOTSENT_LOWAT`). Bytes in flight are
/// not limited, so throughput is not either; only the queue that nothing can overtake is.
const NOTSENT_LOWAT: u32 = 128 * 1024;
/// Time allowed for a TLS handshake before the socket is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request's head to arrive; a connection that sends none in time is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;

/// Pending connections the kernel queues for `accept` (capped by `net.core.somaxconn`). The
/// default of 128 overflowed when a thousand clients reconnected at once, after a restart or
/// a network blip: the kernel dropped their SYNs and each waited a second to retry
/// (docs/BENCHMARKS.md, S10).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std and tokio do: a restarted server can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Sockets accepted and not yet handed to their connection's task: past this many, the
/// accepting thread waits and the kernel's backlog holds the rest.
const ACCEPTED_QUEUE: usize = 1024;

/// A socket just accepted, with its place in its address's count.
struct Accepted<S: Store> {
    stream: TcpStream,
    peer: SocketAddr,
    tcp_slot: Arc<TcpSlot<S>>,
}

/// Accepts connections until `shutdown` resolves, and serves each on a task of its own.
///
/// Accepting runs on a thread of its own, not on a runtime worker: `accept` blocks for an RCU
/// grace period (10–13 ms here) each time the kernel grows the process's file table (at 256,
/// 512, 1,024… open files, as connections arrive), and on a worker that stalls every
/// connection scheduled there (docs/BENCHMARKS.md, S5). The accepted sockets go to a task on
/// the runtime, which starts each connection's task: most of its memory then comes from the
/// workers' heaps rather than from an arena of the accepting thread's own (S5: 10.74 KiB per
/// idle connection, 10.85 with the tasks started by the accepting thread, 10.55 before).
pub async fn accept_loop<S: Store>(
    server: Arc<Server<S>>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (to_serve, accepted) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    let serving = tokio::spawn(serve_accepted(server.clone(), tls, accepted));
    let runtime = tokio::runtime::Handle::current();
    let accepting = tokio::task::spawn_blocking(move || {
        runtime.block_on(accept_until(server, listener, shutdown, to_serve))
    });
    let _ = accepting.await;
    // The accepting side is gone, and with it the queue's sender: the serving task ends once
    // it has started a task for every socket accepted.
    let _ = serving.await;
}

async fn accept_until<S: Store>(
    server: Arc<Server<S>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    to_serve: tokio::sync::mpsc::Sender<Accepted<S>>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(tcp_slot) = server.tcp_slot(peer.ip()) else {
            // Past the address's limit: closed before TLS or HTTP cost anything.
            tracing::debug!(%peer, "too many TCP connections from this address: closed");
            continue;
        };
        tracing::trace!(%peer, "accepted");
        let _ = stream.set_nodelay(true);
        // Keep at most this much unsent in the kernel: the rest waits in the connection's
        // schedule, where an ACK or a small edit can still go ahead of a large transfer.
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT);
        let accepted = Accepted {
            stream,
            peer,
            tcp_slot: Arc::new(tcp_slot),
        };
        if to_serve.send(accepted).await.is_err() {
            return;
        }
    }
}

/// Starts a task for each accepted socket: TLS if configured, then HTTP.
async fn serve_accepted<S: Store>(
    server: Arc<Server<S>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut accepted: tokio::sync::mpsc::Receiver<Accepted<S>>,
) {
    while let Some(Accepted {
        stream,
        peer,
        tcp_slot,
    }) = accepted.recv().await
    {
        let server = server.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => serve_http(server, stream, peer, tcp_slot).await,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve_http::<S, TcpStream>(server, stream, peer, tcp_slot).await,
            }
        });
    }
}

/// Serves HTTP on one accepted connection. `tcp_slot` counts it against its address until
/// the last holder lets go: this task, or the WebSocket it was upgraded to.
async fn serve_http<S, IO>(
    server: Arc<Server<S>>,
    stream: IO,
    peer: SocketAddr,
    tcp_slot: Arc<TcpSlot<S>>,
) where
    S: Store,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (server, tcp_slot) = (server.clone(), tcp_slot.clone());
        async move { Ok::<_, Infallible>(route(server, req, peer, tcp_slot).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "HTTP connection ended with an error");
    }
}

async fn route<S: Store>(
    server: Arc<Server<S>>,
    req: Request<Incoming>,
    peer: SocketAddr,
    tcp_slot: Arc<TcpSlot<S>>,
) -> Response<Body> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => healthz(&server.metrics),
        ("GET", "/metrics") if server.config.metrics_listen.is_none() => {
            metrics_response(&server.metrics, &server.memory)
        }
        ("GET", digests::PATH) => digests::answer(&server, &req, peer).await,
        (_, handshake::WS_PATH) => upgrade(server, req, peer, tcp_slot),
        (_, echo::PATH) if server.config.echo_endpoint => echo::upgrade(req, &server.config.limits),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `/healthz`: 200 while the server serves. With Redis configured and unreachable it still
/// serves (writes stay durable and acknowledged; updates between servers come from checking
/// the database), and the body says so.
fn healthz(metrics: &Metrics) -> Response<Body> {
    if metrics.redis_down() {
        return text(
            StatusCode::OK,
            "ok, degraded: redis unreachable; updates between servers come from checking the database\n",
        );
    }
    text(StatusCode::OK, "ok\n")
}

/// `/metrics`: the Prometheus text format.
fn metrics_response(metrics: &Metrics, memory: &MemoryBudget) -> Response<Body> {
    let mut body = metrics.render();
    memory.render(&mut body);
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Serves `/metrics` and `/healthz` over plain HTTP on the separate `--metrics-listen`
/// address, until the task is dropped. Nothing else is served there: no upgrades.
pub async fn metrics_loop(metrics: Arc<Metrics>, memory: Arc<MemoryBudget>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (metrics, memory) = (metrics.clone(), memory.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = match (req.method().as_str(), req.uri().path()) {
                    ("GET", "/healthz") => healthz(&metrics),
                    ("GET", "/metrics") => metrics_response(&metrics, &memory),
                    _ => text(StatusCode::NOT_FOUND, "not found\n"),
                };
                std::future::ready(Ok::<_, Infallible>(response))
            });
            let result = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "metrics connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn refuse(refusal: &Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = text(status, format!("{}\n", refusal.reason));
    if let Some((name, value)) = refusal.header {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Header lines as (name, value) pairs; values that are not visible ASCII are skipped.
pub(crate) fn header_pairs(req: &Request<Incoming>) -> Vec<(&str, &str)> {
    req.headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect()
}

/// The request line's HTTP version as written there (`HTTP/1.1`), for `check_upgrade`.
pub(crate) fn http_version(req: &Request<Incoming>) -> &'static str {
    match req.version() {
        hyper::Version::HTTP_09 => "HTTP/0.9",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_11 => "HTTP/1.1",
        hyper::Version::HTTP_2 => "HTTP/2.0",
        hyper::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The 101 response completing a WebSocket handshake.
pub(crate) fn switching_protocols(key: &str, protocol: Option<&'static str>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    headers.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        hyper::header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is ASCII"),
    );
    if let Some(protocol) = protocol {
        headers.insert(
            hyper::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    response
}

/// The WebSocket configuration: one WebSocket message is one mux frame, so both limits are
/// the frame limit; anything larger fails with a capacity error and closes with 1009.
/// The read buffer is allocated up front for every connection; tungstenite's 128 KiB default
/// made an idle connection cost ~145 KiB (docs/BENCHMARKS.md, S5). Large frames still arrive
/// whole: the buffer grows as needed while reading one.
pub(crate) fn websocket_config(max_frame_size: u32) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame_size as usize))
        .max_frame_size(Some(max_frame_size as usize))
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(WRITE_BUFFER_SIZE)
}

/// Bytes the WebSocket layer gathers before writing to the socket (its default is 128 KiB).
/// The connection's writer already batches frames and flushes each batch; what this layer
/// holds for a client that stopped reading is memory outside the queue's bounds.
const WRITE_BUFFER_SIZE: usize = 16 * 1024;

/// Per-connection WebSocket read buffer, allocated for every connection, idle or not, and the
/// most one read asks of the socket. Edits and acks are tens of bytes; a larger frame reserves
/// its whole length when its header arrives. 2 KiB (was 8) saves 6 KiB per connection with
/// the same F0 time (docs/BENCHMARKS.md).
const READ_BUFFER_SIZE: usize = 2 * 1024;

fn upgrade<S: Store>(
    server: Arc<Server<S>>,
    req: Request<Incoming>,
    peer: SocketAddr,
    tcp_slot: Arc<TcpSlot<S>>,
) -> Response<Body> {
    let refused = |refusal: &Refusal| {
        server
            .metrics
            .refused_upgrades
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, status = refusal.status, reason = refusal.reason, "upgrade refused");
        refuse(refusal)
    };
    let checked = check_upgrade(
        req.method().as_str(),
        http_version(&req),
        req.uri().query(),
        &header_pairs(&req),
    );
    let upgrade = match checked {
        Ok(upgrade) => upgrade,
        Err(refusal) => return refused(&refusal),
    };
    if server.is_shutting_down() {
        return refused(&handshake::SHUTTING_DOWN);
    }
    if server.memory.is_over() {
        // A new connection would grow a process already past its memory budget.
        server.memory.count_refusal();
        return refused(&handshake::OVERLOADED);
    }
    // Behind a trusted proxy, the client is who the proxy says it is: its limits and its log
    // lines are the client's, not the proxy's.
    let client = client_ip(
        peer.ip(),
        &header_pairs(&req),
        &server.config.trusted_proxies,
    );
    let peer = SocketAddr::new(client, peer.port());
    let claims = match authenticate(&server, upgrade.token.as_deref(), peer) {
        Ok(claims) => claims,
        Err(refusal) => return refused(refusal),
    };
    let Some(slot) = server.connection_slot(client) else {
        return refused(&handshake::TOO_MANY_CONNECTIONS);
    };
    let config = websocket_config(server.config.limits.max_frame_size);
    let response = switching_protocols(&upgrade.key, Some(handshake::SUBPROTOCOL));
    tokio::spawn(async move {
        // The TCP connection counts against its address for as long as its WebSocket lives.
        let _tcp_slot = tcp_slot;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                connection::serve(server, ws, peer, claims, slot).await;
            }
            Err(err) => tracing::debug!(%peer, error = %err, "upgrade failed"),
        }
    });
    response
}

/// Checks the token; a refusal is logged at `warn` with the peer and the kind of failure
/// (never the token), within the budget of [`crate::failed_login`].
fn authenticate<S: Store>(
    server: &Server<S>,
    token: Option<&str>,
    peer: SocketAddr,
) -> Result<Claims, &'static Refusal> {
    let Some(secret) = &server.secret else {
        return Ok(Claims::local_user());
    };
    let checked = match token {
        None => Err((&handshake::UNAUTHORIZED, "missing")),
        Some(token) => match secret.verify(token, unix_now()) {
            Err(err) => Err((&handshake::UNAUTHORIZED, err.kind())),
            Ok(claims) if claims.docs.is_empty() => Err((&handshake::FORBIDDEN, "no_grants")),
            Ok(claims) => Ok(claims),
        },
    };
    checked.map_err(|(refusal, reason)| {
        if let Some(suppressed) = server.failed_logins.record(std::time::Instant::now()) {
            tracing::warn!(%peer, reason, status = refusal.status, suppressed, "login refused");
        }
        refusal
    })
}

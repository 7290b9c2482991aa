//! Opening the socket: TCP (with TCP_NODELAY), TLS, and the WebSocket upgrade with Quire's
//! subprotocol and bearer token. The stream is wrapped so that every byte read is noticed:
//! the heartbeat watchdog counts a large frame still arriving as life, not silence.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use quire_protocol::handshake;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::config::ClientConfig;
use crate::tls::{client_config, SeenCertificate};

/// Unsent bytes the kernel may hold per socket (`TCP_NOTSENT_LOWAT`); bytes in flight are not
/// limited, so neither is throughput.
const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Time allowed for TCP, TLS and the upgrade together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Any byte stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Socket = WebSocketStream<Activity<Box<dyn Io>>>;

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The server answered the upgrade with this HTTP status.
    Status(u16),
    /// The server's certificate was not accepted.
    Untrusted {
        fingerprint: Option<String>,
        reason: String,
    },
    /// The URL or the configuration is unusable.
    BadUrl(String),
    /// Anything transient: refused, reset, timed out, DNS.
    Network(String),
}

/// When the last byte arrived, shared with the watchdog.
#[derive(Debug, Clone)]
pub struct LastRead {
    epoch: Instant,
    micros: Arc<AtomicU64>,
}

impl LastRead {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            micros: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        self.micros
            .store(self.epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> Instant {
        self.epoch + Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

/// A stream that records when it last read something.
pub struct Activity<S> {
    inner: S,
    last_read: LastRead,
}

impl<S> std::fmt::Debug for Activity<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("last_read", &self.last_read)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last_read.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects to the configured server; returns the socket and its read-activity clock.
pub async fn connect(
    config: &ClientConfig,
    token: Option<&str>,
) -> Result<(Socket, LastRead), ConnectError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(config, token))
        .await
        .map_err(|_| ConnectError::Network("connection attempt timed out".into()))?
}

async fn connect_inner(
    config: &ClientConfig,
    token: Option<&str>,
) -> Result<(Socket, LastRead), ConnectError> {
    let uri: Uri = config
        .url
        .parse()
        .map_err(|e| ConnectError::BadUrl(format!("{}: {e}", config.url)))?;
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => {
            return Err(ConnectError::BadUrl(format!(
                "{}: the URL must start with wss:// or ws://",
                config.url
            )))
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| ConnectError::BadUrl(format!("{}: no host", config.url)))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let host_for_tcp = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tcp = TcpStream::connect((host_for_tcp.as_str(), port))
        .await
        .map_err(|e| ConnectError::Network(format!("{host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    // Keep at most this much unsent in the kernel, so that an edit or a PONG written after a
    // large upload's frames waits for little more than the frame being written.
    let _ = socket2::SockRef::from(&tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT);
    let last_read = LastRead::new();
    let stream: Box<dyn Io> = if secure {
        let seen: SeenCertificate = Default::default();
        let tls = client_config(&config.trust, seen.clone())
            .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
        let name = ServerName::try_from(host_for_tcp.clone())
            .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
        match tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
        {
            Ok(stream) => Box::new(stream),
            Err(err) => {
                let untrusted = err
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
                return Err(if untrusted {
                    ConnectError::Untrusted {
                        fingerprint: seen.lock().clone(),
                        reason: err.to_string(),
                    }
                } else {
                    ConnectError::Network(format!("TLS: {err}"))
                });
            }
        }
    } else {
        Box::new(tcp)
    };
    let stream = Activity {
        inner: stream,
        last_read: last_read.clone(),
    };

    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        handshake::SUBPROTOCOL.parse().expect("ASCII"),
    );
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ConnectError::BadUrl("token has invalid characters".into()))?;
        headers.insert("Authorization", value);
    }
    // Frames are bounded by the server's announced limit; the WebSocket layer must not cut
    // them shorter than the largest limit a server may announce.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    match tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config)).await {
        Ok((socket, _response)) => Ok((socket, last_read)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(ConnectError::Status(response.status().as_u16()))
        }
        Err(err) => Err(ConnectError::Network(err.to_string())),
    }
}

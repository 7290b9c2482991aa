//! A protocol-level client: real TLS and WebSocket (tokio-tungstenite), mux frames encoded by
//! `quire-protocol`, nothing hidden. Tests use it to send exactly the bytes they mean,
//! including malformed ones, and to see exactly what the server answers.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use quire_protocol::{handshake, Access, ChannelId, DocId, Frame, Hello, Limits, Message, Welcome};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use crate::server_process::ServerProcess;

/// How long a test waits for the next message before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(20);

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Frame(Frame),
    /// The server closed the connection: WebSocket close code and reason (1006 without a frame).
    Closed(u16, String),
}

#[derive(Debug)]
pub struct RawClient {
    ws: WebSocketStream<TlsStream<TcpStream>>,
    pub limits: Limits,
    pub welcome: Option<Welcome>,
}

impl RawClient {
    /// Connects with an optional bearer token; does not send HELLO.
    pub async fn connect(
        server: &ServerProcess,
        token: Option<&str>,
    ) -> Result<Self, tungstenite::Error> {
        Self::connect_to(server.addr, server.tls(), token).await
    }

    pub async fn connect_to(
        addr: std::net::SocketAddr,
        tls: Arc<ClientConfig>,
        token: Option<&str>,
    ) -> Result<Self, tungstenite::Error> {
        Self::connect_from(addr, None, tls, token).await
    }

    /// Like [`RawClient::connect_to`], from the local address `source` (another 127.0.0.x,
    /// so many connections stay under the server's per-address limit).
    pub async fn connect_from(
        addr: std::net::SocketAddr,
        source: Option<std::net::IpAddr>,
        tls: Arc<ClientConfig>,
        token: Option<&str>,
    ) -> Result<Self, tungstenite::Error> {
        Self::connect_with(addr, source, tls, token, &[]).await
    }

    /// Like [`RawClient::connect`], claiming to come through a proxy for `forwarded_for`
    /// (an `X-Forwarded-For` header).
    pub async fn connect_forwarded(
        server: &ServerProcess,
        token: Option<&str>,
        forwarded_for: &str,
    ) -> Result<Self, tungstenite::Error> {
        let header = [("X-Forwarded-For", forwarded_for)];
        Self::connect_with(server.addr, None, server.tls(), token, &header).await
    }

    async fn connect_with(
        addr: std::net::SocketAddr,
        source: Option<std::net::IpAddr>,
        tls: Arc<ClientConfig>,
        token: Option<&str>,
        extra_headers: &[(&'static str, &str)],
    ) -> Result<Self, tungstenite::Error> {
        let mut request = format!("wss://localhost:{}{}", addr.port(), handshake::WS_PATH)
            .into_client_request()?;
        let headers = request.headers_mut();
        for (name, value) in extra_headers {
            headers.insert(*name, value.parse().expect("a header value"));
        }
        headers.insert(
            "Sec-WebSocket-Protocol",
            handshake::SUBPROTOCOL.parse().unwrap(),
        );
        if let Some(token) = token {
            headers.insert("Authorization", format!("Bearer {token}").parse().unwrap());
        }
        let tcp = connect_tcp(addr, source).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        let config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, tls, Some(config)).await?;
        Ok(Self {
            ws,
            limits: Limits::default(),
            welcome: None,
        })
    }

    /// Connects and completes HELLO / WELCOME.
    pub async fn connect_hello(server: &ServerProcess, token: Option<&str>) -> Self {
        let mut client = Self::connect(server, token).await.expect("connecting");
        client.hello().await;
        client
    }

    pub async fn hello(&mut self) -> Welcome {
        let hello = Hello {
            revision: quire_protocol::PROTOCOL_REVISION,
            client: "quire-tests".into(),
        };
        self.send(ChannelId::CONTROL, Message::Hello(hello)).await;
        match self.recv().await {
            Incoming::Frame(Frame {
                message: Message::Welcome(welcome),
                ..
            }) => {
                self.limits = welcome.limits;
                self.welcome = Some(welcome.clone());
                welcome
            }
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    pub async fn send(&mut self, channel: ChannelId, message: Message) {
        let mut frames = Vec::new();
        quire_protocol::encode_fragmented(channel, &message, self.limits.max_frame_size, |f| {
            frames.push(f)
        });
        for frame in frames {
            self.send_raw(WsMessage::Binary(frame.into())).await;
        }
    }

    /// Sends a WebSocket message as is; a failure (the server already closed) is ignored, the
    /// test learns the outcome from [`RawClient::recv`].
    pub async fn send_raw(&mut self, message: WsMessage) {
        let _ = self.ws.send(message).await;
    }

    /// The next frame or the close; answers PINGs on the way.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            match self.recv_raw().await {
                Incoming::Frame(Frame {
                    message: Message::Ping(nonce),
                    ..
                }) => self.send(ChannelId::CONTROL, Message::Pong(nonce)).await,
                other => return other,
            }
        }
    }

    /// The next frame or the close, PINGs included and left unanswered (a silent client).
    pub async fn recv_raw(&mut self) -> Incoming {
        loop {
            let next = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for the server");
            let message = match next {
                None | Some(Err(_)) => return Incoming::Closed(1006, String::new()),
                Some(Ok(message)) => message,
            };
            match message {
                WsMessage::Binary(bytes) => {
                    let frame =
                        Frame::decode(&bytes, &Limits::default()).expect("server frames decode");
                    return Incoming::Frame(frame);
                }
                WsMessage::Close(frame) => {
                    return match frame {
                        Some(frame) => {
                            Incoming::Closed(frame.code.into(), frame.reason.to_string())
                        }
                        None => Incoming::Closed(1005, String::new()),
                    }
                }
                _ => continue,
            }
        }
    }

    /// Sends one mux frame built by hand: `channel | kind | body`, exactly these bytes.
    pub async fn send_frame(&mut self, channel: ChannelId, kind: u8, body: &[u8]) {
        self.send_bytes(raw_frame(channel, kind, body)).await;
    }

    /// Sends `bytes` as one binary WebSocket message.
    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.send_raw(WsMessage::Binary(bytes.into())).await;
    }

    /// Reads until the server sends CLOSE on `channel`; returns its code. Fails if the
    /// connection closes first.
    pub async fn expect_channel_close(&mut self, channel: ChannelId) -> u16 {
        loop {
            match self.recv().await {
                Incoming::Frame(Frame {
                    channel: c,
                    message: Message::Close { code, .. },
                }) if c == channel => return code,
                Incoming::Closed(code, reason) => {
                    panic!("connection closed ({code} {reason}) waiting for CLOSE on {channel}")
                }
                Incoming::Frame(_) => continue,
            }
        }
    }

    /// Reads until the connection closes; returns the close code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            if let Incoming::Closed(code, _) = self.recv().await {
                return code;
            }
        }
    }

    /// Sends OPEN and waits for OPENED (returns the access granted) or a refusing CLOSE (its code).
    pub async fn open(
        &mut self,
        channel: ChannelId,
        doc: &str,
        access: Access,
    ) -> Result<Access, u16> {
        let doc = DocId::parse(doc, self.limits.max_doc_id_len).expect("valid doc id");
        self.send(channel, Message::Open { access, doc }).await;
        loop {
            match self.recv().await {
                Incoming::Frame(Frame {
                    channel: c,
                    message: Message::Opened { access },
                }) if c == channel => return Ok(access),
                Incoming::Frame(Frame {
                    channel: c,
                    message: Message::Close { code, .. },
                }) if c == channel => return Err(code),
                Incoming::Closed(code, reason) => {
                    panic!("connection closed ({code} {reason}) while opening")
                }
                _ => continue,
            }
        }
    }

    /// Closes the WebSocket with 1000.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A TCP connection to `addr`, from `source` (port chosen by the kernel) when given.
pub async fn connect_tcp(
    addr: std::net::SocketAddr,
    source: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// The bytes of a mux frame: `channel` as a varint, `kind`, then `body` verbatim.
pub fn raw_frame(channel: ChannelId, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    quire_protocol::frame::write_frame_header(&mut out, channel, kind);
    out.extend_from_slice(body);
    out
}

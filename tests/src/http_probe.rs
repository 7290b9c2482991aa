//! Raw HTTP/1.1 over TLS, for `/healthz`, `/metrics` and deliberately malformed handshakes;
//! plain HTTP for the separate metrics listener.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (request line and headers, without the final blank line) and reads the
/// response: until the headers of a 101, the end of a `Content-Length` body, or the close.
pub async fn request(addr: SocketAddr, tls: Arc<ClientConfig>, head: &str) -> Response {
    request_from(addr, None, tls, head).await
}

/// Like [`request`], from the local address `source` when given.
pub async fn request_from(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    tls: Arc<ClientConfig>,
    head: &str,
) -> Response {
    let tcp = crate::raw_client::connect_tcp(addr, source)
        .await
        .expect("connecting");
    let connector = tokio_rustls::TlsConnector::from(tls);
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS");
    let request = if head.contains("\r\nConnection:") {
        format!("{head}\r\n\r\n")
    } else {
        format!("{head}\r\nConnection: close\r\n\r\n")
    };
    stream
        .write_all(request.as_bytes())
        .await
        .expect("writing the request");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while !is_complete(&bytes) {
        let read = tokio::time::timeout(crate::raw_client::RECV_TIMEOUT, stream.read(&mut buf))
            .await
            .expect("timed out reading the HTTP response");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    parse(&String::from_utf8_lossy(&bytes))
}

/// `GET path` over plain HTTP (no TLS), reading until the server closes.
pub async fn get_plain(addr: SocketAddr, path: &str) -> Response {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("writing the request");
    let mut bytes = Vec::new();
    tokio::time::timeout(
        crate::raw_client::RECV_TIMEOUT,
        stream.read_to_end(&mut bytes),
    )
    .await
    .expect("timed out reading the HTTP response")
    .expect("reading the HTTP response");
    parse(&String::from_utf8_lossy(&bytes))
}

/// Whether `bytes` hold a whole response (a kept-alive connection does not end it).
fn is_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    if head.starts_with("HTTP/1.1 101") {
        return true;
    }
    let response = parse(&text);
    match response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(len) => body.len() >= len,
        None => false,
    }
}

/// `GET path` with the usual headers.
pub async fn get(addr: SocketAddr, tls: Arc<ClientConfig>, path: &str) -> Response {
    request(
        addr,
        tls,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost"),
    )
    .await
}

/// A valid key for hand-made upgrade requests (RFC 6455's example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The head of a WebSocket upgrade request for `path`, well formed except as told: headers
/// named in `omit` are left out, and `extra` lines are added (after the usual ones).
pub fn upgrade_head(method: &str, path: &str, omit: &[&str], extra: &[(&str, &str)]) -> String {
    let usual = [
        ("Host", "localhost"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", KEY),
        (
            "Sec-WebSocket-Protocol",
            quire_protocol::handshake::SUBPROTOCOL,
        ),
    ];
    let mut head = format!("{method} {path} HTTP/1.1");
    for (name, value) in usual.iter().filter(|(n, _)| !omit.contains(n)) {
        head.push_str(&format!("\r\n{name}: {value}"));
    }
    for (name, value) in extra {
        head.push_str(&format!("\r\n{name}: {value}"));
    }
    head
}

fn parse(text: &str) -> Response {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Reads a metric's value from Prometheus text (`name` may include labels).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

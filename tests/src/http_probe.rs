//! Raw HTTP/1.1 over TLS, for `/healthz`, `/metrics` and deliberately malformed handshakes.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
/// response until the server closes or the headers of a 101 arrive.
pub async fn request(addr: SocketAddr, tls: Arc<ClientConfig>, head: &str) -> Response {
    let tcp = TcpStream::connect(addr).await.expect("connecting");
    let connector = tokio_rustls::TlsConnector::from(tls);
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS");
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    let request = if head.contains("\r\nConnection:") {
        format!("{head}\r\n\r\n")
    } else {
        request
    };
    stream
        .write_all(request.as_bytes())
        .await
        .expect("writing the request");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&bytes);
        if text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n") {
            break;
        }
    }
    parse(&String::from_utf8_lossy(&bytes))
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

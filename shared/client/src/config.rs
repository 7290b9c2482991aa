//! How a client reaches its server and whom it trusts.

use std::path::PathBuf;

use quire_protocol::BackoffPolicy;

/// Which server certificates to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The public web PKI (Mozilla's roots).
    WebPki,
    /// Certificates issued by the CA (or self-signed certificate) in this PEM file.
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint (hex, colons optional): the way to
    /// trust a `--dev` server, which prints its fingerprint at start.
    Pinned(String),
}

/// Everything needed to run a client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `wss://host:port/ws`, or `ws://…` for a server behind a TLS-terminating proxy on the
    /// same machine. Empty for local-only use: no connection is ever made.
    pub url: String,
    pub trust: Trust,
    /// The bearer token; `None` for a `--no-auth` server. Replace it with
    /// [`crate::Client::set_token`] after an auth failure.
    pub token: Option<String>,
    /// Shown in the server's logs.
    pub client_name: String,
    pub backoff: BackoffPolicy,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>, trust: Trust, token: Option<String>) -> Self {
        Self {
            url: url.into(),
            trust,
            token,
            client_name: format!("quire-client/{}", env!("CARGO_PKG_VERSION")),
            backoff: BackoffPolicy::DEFAULT,
        }
    }
}

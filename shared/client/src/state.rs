//! The states a client reports: one for the connection, one per document. Both are published
//! on `tokio::sync::watch` channels, so a UI always reads the latest.

use std::time::Duration;

/// The connection as a user would want it described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening the socket, TLS and the hello exchange; `attempt` 0 is the first try.
    Connecting { attempt: u32 },
    /// Connected; `rtt` is the last measured round trip, once one was measured.
    Connected { rtt: Option<Duration> },
    /// Waiting `retry_in` before attempt `attempt`, after an ending with `last_code` / `reason`.
    Reconnecting {
        retry_in: Duration,
        attempt: u32,
        last_code: u16,
        reason: String,
    },
    /// The server rejected the token (HTTP 401/403 or close 4001/4003): no retry until
    /// [`crate::Client::set_token`] supplies another.
    AuthFailed { reason: String },
    /// The server's certificate is not trusted; `fingerprint` is what it presented, so the user
    /// can choose to pin it. No retry until the trust changes.
    Untrusted {
        fingerprint: Option<String>,
        reason: String,
    },
    /// The server refused the request for good (bad URL path, unsupported version): no retry.
    Refused { reason: String },
    /// No server configured: documents live in the local store only.
    LocalOnly,
    /// Closed on request.
    Closed,
}

/// One document's sync state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocState {
    /// Not connected: edits are kept locally; `pending` of them are not on the server yet.
    Offline { pending: usize },
    /// Opened and exchanging state; `received` bytes of the server's answer so far.
    Syncing { received: usize },
    /// In sync, with `pending` local edits sent but not yet durable on the server.
    /// `pending == 0` is "saved on server".
    Synced { pending: usize },
    /// The server refused or closed the document with this channel code.
    Failed { code: u16, reason: String },
}

impl DocState {
    /// True when every local edit is durable on the server.
    pub fn is_saved(&self) -> bool {
        matches!(self, DocState::Synced { pending: 0 })
    }
}

//! The shapes sent to the webview (ui/src/state/types.ts is the other half).

use quire_client::{ConnectionState, DocState};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ConnectionDto {
    Connecting {
        attempt: u32,
    },
    Connected {
        rtt_ms: Option<u64>,
    },
    Reconnecting {
        retry_in_ms: u64,
        attempt: u32,
        last_code: u16,
        reason: String,
    },
    AuthFailed {
        reason: String,
    },
    Untrusted {
        fingerprint: Option<String>,
        reason: String,
    },
    Refused {
        reason: String,
    },
    LocalOnly,
    Closed,
}

impl From<&ConnectionState> for ConnectionDto {
    fn from(state: &ConnectionState) -> Self {
        match state.clone() {
            ConnectionState::Connecting { attempt } => Self::Connecting { attempt },
            ConnectionState::Connected { rtt } => Self::Connected {
                rtt_ms: rtt.map(|d| d.as_millis() as u64),
            },
            ConnectionState::Reconnecting {
                retry_in,
                attempt,
                last_code,
                reason,
            } => Self::Reconnecting {
                retry_in_ms: retry_in.as_millis() as u64,
                attempt,
                last_code,
                reason,
            },
            ConnectionState::AuthFailed { reason } => Self::AuthFailed { reason },
            ConnectionState::Untrusted {
                fingerprint,
                reason,
            } => Self::Untrusted {
                fingerprint,
                reason,
            },
            ConnectionState::Refused { reason } => Self::Refused { reason },
            ConnectionState::LocalOnly => Self::LocalOnly,
            ConnectionState::Closed => Self::Closed,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum DocStateDto {
    Offline { pending: usize },
    Syncing { received: usize },
    Synced { pending: usize },
    Failed { code: u16, reason: String },
}

impl From<&DocState> for DocStateDto {
    fn from(state: &DocState) -> Self {
        match state.clone() {
            DocState::Offline { pending } => Self::Offline { pending },
            DocState::Syncing { received } => Self::Syncing { received },
            DocState::Synced { pending } => Self::Synced { pending },
            DocState::Failed { code, reason } => Self::Failed { code, reason },
        }
    }
}

/// An event about one document.
#[derive(Debug, Clone, Serialize)]
pub struct DocEvent<T: Serialize> {
    pub doc: String,
    pub value: T,
}

/// One version of a document, as the history panel lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionDto {
    pub id: u64,
    pub created_ms: u64,
    /// `auto`, `named` or `beforeRestore`.
    pub kind: &'static str,
    pub name: String,
    pub authors: Vec<String>,
    pub size: u64,
}

impl From<&quire_client::VersionInfo> for VersionDto {
    fn from(info: &quire_client::VersionInfo) -> Self {
        Self {
            id: info.id,
            created_ms: info.created_ms,
            kind: match info.kind {
                quire_client::VersionKind::Auto => "auto",
                quire_client::VersionKind::Named => "named",
                quire_client::VersionKind::BeforeRestore => "beforeRestore",
            },
            name: info.name.clone(),
            authors: info.authors.clone(),
            size: info.size,
        }
    }
}

/// A document in the trash.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrashDto {
    pub doc: String,
    pub trashed_ms: u64,
    pub purge_ms: u64,
}

/// A Markdown file read for import: its name without the extension, and its text.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportedFile {
    pub name: String,
    pub text: String,
}

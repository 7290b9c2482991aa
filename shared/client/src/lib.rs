//! `quire-client`: one resilient WebSocket connection to a Quire server for many documents.
//! No UI framework in here: the desktop app, the tests and the load tool all use it.
//!
//! # Layout
//! - [`client`]: the public `Client` — open documents, watch the connection, close.
//! - [`document`]: `DocHandle` — the local yrs replica, its sync state, its awareness.
//! - [`history`]: versions (on `DocHandle`) and the trash (on `Client`), asked of the server.
//! - [`digest`]: the replica's state digest, and its comparison with the server's.
//! - `driver`: the task that owns the connection, a thin driver around the protocol crate's
//!   sans-IO `ClientSession` (which decides reconnects, heartbeat, channels): the loop and the
//!   commands (`driver/mod.rs`), the session's events applied to documents (`driver/events.rs`),
//!   the local store's use (`driver/store.rs`), the current socket (`driver/link.rs`).
//! - [`transport`]: TCP + TLS + WebSocket upgrade, with read activity for the watchdog.
//! - [`tls`]: trust modes (web PKI, CA file, pinned fingerprint).
//! - [`store`]: the local store trait, SQLite (default) and in-memory implementations.
//! - [`state`]: the connection and document states a UI shows.
//! - [`config`], [`error`].

pub mod client;
pub mod config;
pub mod digest;
pub mod document;
mod driver;
pub mod error;
pub mod history;
pub mod state;
pub mod store;
pub mod tls;
pub mod transport;

pub use client::Client;
pub use config::{ClientConfig, Trust};
pub use digest::Comparison;
pub use document::{DocHandle, CONTENT};
pub use error::ClientError;
pub use quire_protocol::request::{TrashEntry, VersionInfo, VersionKind};
pub use quire_protocol::{Access, StateDigest};
pub use state::{ConnectionState, DocState};
pub use store::{LocalStore, MemoryStore, SqliteLocalStore};

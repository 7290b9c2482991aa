//! The client's local store, behind a small trait: every update of every open document, with
//! local edits marked pending until the server acknowledges them as durable. A client that
//! restarts offline reloads its documents, pending edits included, and sends them on the next
//! sync.

mod memory;
mod sqlite;

use std::future::Future;

pub use memory::MemoryStore;
pub use sqlite::SqliteLocalStore;

#[derive(Debug, thiserror::Error)]
pub enum LocalStoreError {
    #[error("local database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("local database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// What the store holds for one document.
#[derive(Debug, Default, Clone)]
pub struct LocalDoc {
    /// Updates to apply in order.
    pub updates: Vec<Vec<u8>>,
    /// IDs of the pending (unacknowledged) local updates, ascending.
    pub pending: Vec<i64>,
}

/// One update to append.
#[derive(Debug, Clone)]
pub struct LocalAppend<'a> {
    pub doc: &'a str,
    pub data: &'a [u8],
    /// A local edit awaiting the server's durable ACK.
    pub pending: bool,
}

pub trait LocalStore: Send + Sync + 'static {
    fn load(&self, doc: &str) -> impl Future<Output = Result<LocalDoc, LocalStoreError>> + Send;

    /// Appends updates in one durable transaction; returns their IDs in order.
    fn append(
        &self,
        batch: &[LocalAppend<'_>],
    ) -> impl Future<Output = Result<Vec<i64>, LocalStoreError>> + Send;

    /// Marks the document's pending updates with ID ≤ `through` as acknowledged.
    fn acknowledge(
        &self,
        doc: &str,
        through: i64,
    ) -> impl Future<Output = Result<(), LocalStoreError>> + Send;

    /// Replaces a document's log with `merged` when nothing in it is pending.
    fn compact(
        &self,
        doc: &str,
        merged: &[u8],
    ) -> impl Future<Output = Result<bool, LocalStoreError>> + Send;
}

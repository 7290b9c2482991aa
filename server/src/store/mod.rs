//! Document storage behind a trait, so the rooms never see which database holds the bytes.
//! SQLite is the embedded default; PostgreSQL (`--database-url postgres://…`) is the shared
//! one that several servers can use at once. [`AnyStore`] is whichever of the two was chosen.
//!
//! - `sqlite.rs`, `sqlite_history.rs`: the embedded engine (migrations in `migrations/`);
//! - `postgres.rs`, `postgres_history.rs`: the shared engine (`migrations-postgres/`);
//! - `version_rows.rs`: rows of the versions table, read the same by both engines;
//! - `any.rs`: the choice between them, from a database URL.

mod any;
mod postgres;
mod postgres_history;
mod sqlite;
mod sqlite_history;
mod version_rows;

use std::future::Future;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use quire_protocol::request::{VersionInfo, VersionKind};

use crate::versions::HistoryPolicy;

pub use any::AnyStore;
pub use postgres::PgStore;
pub use sqlite::{SqliteStore, DB_FILE};

/// A storage failure. Its text goes to logs only; clients see channel code 4500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("setting owner-only permissions: {0}")]
    Permissions(std::io::Error),
    #[error("stored document {doc} is corrupt: {detail}")]
    Corrupt { doc: String, detail: String },
}

/// Why stored content could not be turned back into a document (loading, compacting,
/// exporting): the bytes fail validation, or yrs refuses them.
#[derive(Debug, thiserror::Error)]
pub enum CorruptContent {
    #[error("stored update {index} does not decode: {source}")]
    Undecodable {
        index: usize,
        source: quire_protocol::PayloadError,
    },
    #[error("stored update {index} does not apply: {source}")]
    Refused {
        index: usize,
        source: yrs::error::UpdateError,
    },
}

/// What is stored for one document: an optional snapshot and the log after it, oldest first,
/// and its marks (read in the same transaction: a load needs them, and one read is one round
/// trip to the database per opened document, docs/BENCHMARKS.md S7).
#[derive(Debug, Default)]
pub struct StoredDoc {
    pub snapshot: Option<Vec<u8>>,
    pub updates: Vec<Vec<u8>>,
    pub marks: DocMarks,
    /// The number of the document's last stored update (0 for none): a replica built from
    /// this holds everything stored through it.
    pub head: i64,
}

impl StoredDoc {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.updates.is_empty()
    }
}

/// A version to save.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    pub created_ms: u64,
    pub kind: VersionKind,
    pub name: &'a str,
    pub authors: &'a [String],
    /// The document's whole state, one Yjs v1 update.
    pub state: &'a [u8],
}

/// A document's place in the trash and in its history (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DocMarks {
    /// When it was moved to the trash, if it is there.
    pub trashed_ms: Option<u64>,
    /// When its newest version was saved, if it has one.
    pub newest_version_ms: Option<u64>,
}

/// A named version was refused: the named versions alone would pass the document's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaFull;

/// One update to append, for `doc`.
#[derive(Debug, Clone)]
pub struct Append<'a> {
    pub doc: &'a str,
    pub data: &'a [u8],
}

/// Figures about a document's log, for deciding when to compact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSize {
    pub updates: u64,
    pub bytes: u64,
}

/// Storage for documents. Every method is atomic: it happens completely or not at all.
pub trait Store: Send + Sync + 'static {
    /// Loads a document with its marks (whether it is in the trash, when its newest version
    /// was saved); an unknown document is empty.
    fn load(&self, doc: &str) -> impl Future<Output = Result<StoredDoc, StoreError>> + Send;

    /// What was stored of a document after update `after`: the log after it, and the
    /// snapshot too if it covers updates after `after` (their own rows are gone). Applying it
    /// to a replica that holds everything through `after` brings that replica to `head`.
    fn load_after(
        &self,
        doc: &str,
        after: i64,
    ) -> impl Future<Output = Result<StoredDoc, StoreError>> + Send;

    /// The number of each document's last stored update, for those of `docs` that have one.
    fn heads(
        &self,
        docs: &[&str],
    ) -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;

    /// Appends many updates, of any documents, in one durable commit (group commit). Returns
    /// the number each update got in its document's log, in batch order; numbers only grow.
    fn append_batch(
        &self,
        batch: &[Append<'_>],
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// The size of a document's log since its snapshot.
    fn log_size(&self, doc: &str) -> impl Future<Output = Result<LogSize, StoreError>> + Send;

    /// Stores `state` as a document's snapshot and drops its log through update `through`,
    /// atomically, unless the snapshot already covers `through`. `state` must hold at least
    /// everything stored through `through` (a server's in-memory document does, once it read
    /// `through` from what [`Store::append_batch`] numbered its own updates: each update is
    /// applied before it is committed).
    fn compact_to(
        &self,
        doc: &str,
        through: i64,
        state: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether other servers may write this store too. Then no server's memory holds all that
    /// is stored of a document, and compaction must merge what is stored
    /// ([`Store::compact`]) rather than write a server's own state ([`Store::compact_to`]).
    fn shared(&self) -> bool {
        false
    }

    /// Replaces a document's snapshot and log with one snapshot built by `merge` from what is
    /// stored, atomically. Updates appended meanwhile are kept.
    fn compact(
        &self,
        doc: &str,
        merge: fn(&StoredDoc) -> Result<Vec<u8>, CorruptContent>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every stored document ID, sorted.
    fn list(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Writes a consistent copy of the whole store to `path`, safe while serving.
    fn backup(&self, path: &Path) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Saves a version of `doc` and thins its versions to the policy's quota, atomically. A
    /// named version that does not fit beside the other named ones is refused.
    fn save_version(
        &self,
        doc: &str,
        version: NewVersion<'_>,
        policy: &HistoryPolicy,
    ) -> impl Future<Output = Result<Result<VersionInfo, QuotaFull>, StoreError>> + Send;

    /// A document's versions, newest first, without their content.
    fn list_versions(
        &self,
        doc: &str,
    ) -> impl Future<Output = Result<Vec<VersionInfo>, StoreError>> + Send;

    /// One version with its content, if `doc` has it.
    fn load_version(
        &self,
        doc: &str,
        id: u64,
    ) -> impl Future<Output = Result<Option<(VersionInfo, Vec<u8>)>, StoreError>> + Send;

    /// Deletes one version; false if `doc` has no such version.
    fn delete_version(
        &self,
        doc: &str,
        id: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Moves `doc` to the trash at `at_ms`; false if it already is there.
    fn trash(&self, doc: &str, at_ms: u64)
        -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Brings `doc` back from the trash; false if it was not there.
    fn untrash(&self, doc: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every trashed document with when it was trashed, most recent first.
    fn list_trash(&self) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send;

    /// Deletes for good the documents trashed at or before `before_ms` (only `only`, when
    /// given), with everything stored of them; returns their IDs.
    fn purge(
        &self,
        only: Option<&str>,
        before_ms: u64,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

/// Runs a compaction's `merge` of `stored` on the document work pool, below the connections'
/// threads ([`crate::work`]): merging a large document takes long. A panic or refusal of the
/// merge is a corrupt document.
async fn merge_on_work_pool(
    doc: &str,
    stored: StoredDoc,
    merge: fn(&StoredDoc) -> Result<Vec<u8>, CorruptContent>,
) -> Result<Vec<u8>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        doc: doc.to_owned(),
        detail,
    };
    crate::work::run(move || std::panic::catch_unwind(|| merge(&stored)))
        .await
        .map_err(|_| corrupt("merge panicked".to_owned()))?
        .map_err(|err| corrupt(err.to_string()))
}

/// Seconds since the Unix epoch, for the documents' `created_at` and `updated_at`.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

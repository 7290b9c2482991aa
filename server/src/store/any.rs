//! The store a server or a command uses: SQLite in the data directory unless a PostgreSQL URL
//! is given. One type for both, so that everything above the store is built once.

use std::path::Path;

use quire_protocol::request::VersionInfo;

use super::{
    Append, CorruptContent, LogSize, NewVersion, PgStore, QuotaFull, SqliteStore, Store,
    StoreError, StoredDoc,
};
use crate::config::DatabaseUrl;
use crate::versions::HistoryPolicy;

#[derive(Debug, Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

macro_rules! each {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call,
            AnyStore::Postgres($store) => $call,
        }
    };
}

impl AnyStore {
    /// PostgreSQL at `url` if given, else SQLite in `data_dir`.
    pub async fn open(url: Option<&DatabaseUrl>, data_dir: &Path) -> Result<Self, StoreError> {
        Ok(match url {
            Some(url) => Self::Postgres(PgStore::open(url.as_str()).await?),
            None => Self::Sqlite(SqliteStore::open(data_dir).await?),
        })
    }

    /// "sqlite" or "postgres".
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        each!(self, store => store.close().await)
    }
}

impl Store for AnyStore {
    async fn load(&self, doc: &str) -> Result<StoredDoc, StoreError> {
        each!(self, store => store.load(doc).await)
    }

    async fn load_after(&self, doc: &str, after: i64) -> Result<StoredDoc, StoreError> {
        each!(self, store => store.load_after(doc, after).await)
    }

    async fn heads(&self, docs: &[&str]) -> Result<Vec<(String, i64)>, StoreError> {
        each!(self, store => store.heads(docs).await)
    }

    async fn append_batch(&self, batch: &[Append<'_>]) -> Result<Vec<i64>, StoreError> {
        each!(self, store => store.append_batch(batch).await)
    }

    async fn log_size(&self, doc: &str) -> Result<LogSize, StoreError> {
        each!(self, store => store.log_size(doc).await)
    }

    async fn compact_to(&self, doc: &str, through: i64, state: &[u8]) -> Result<(), StoreError> {
        each!(self, store => store.compact_to(doc, through, state).await)
    }

    fn shared(&self) -> bool {
        each!(self, store => store.shared())
    }

    async fn compact(
        &self,
        doc: &str,
        merge: fn(&StoredDoc) -> Result<Vec<u8>, CorruptContent>,
    ) -> Result<(), StoreError> {
        each!(self, store => store.compact(doc, merge).await)
    }

    async fn list(&self) -> Result<Vec<String>, StoreError> {
        each!(self, store => store.list().await)
    }

    async fn backup(&self, path: &Path) -> Result<(), StoreError> {
        each!(self, store => store.backup(path).await)
    }

    async fn save_version(
        &self,
        doc: &str,
        version: NewVersion<'_>,
        policy: &HistoryPolicy,
    ) -> Result<Result<VersionInfo, QuotaFull>, StoreError> {
        each!(self, store => store.save_version(doc, version, policy).await)
    }

    async fn list_versions(&self, doc: &str) -> Result<Vec<VersionInfo>, StoreError> {
        each!(self, store => store.list_versions(doc).await)
    }

    async fn load_version(
        &self,
        doc: &str,
        id: u64,
    ) -> Result<Option<(VersionInfo, Vec<u8>)>, StoreError> {
        each!(self, store => store.load_version(doc, id).await)
    }

    async fn delete_version(&self, doc: &str, id: u64) -> Result<bool, StoreError> {
        each!(self, store => store.delete_version(doc, id).await)
    }

    async fn trash(&self, doc: &str, at_ms: u64) -> Result<bool, StoreError> {
        each!(self, store => store.trash(doc, at_ms).await)
    }

    async fn untrash(&self, doc: &str) -> Result<bool, StoreError> {
        each!(self, store => store.untrash(doc).await)
    }

    async fn list_trash(&self) -> Result<Vec<(String, u64)>, StoreError> {
        each!(self, store => store.list_trash().await)
    }

    async fn purge(&self, only: Option<&str>, before_ms: u64) -> Result<Vec<String>, StoreError> {
        each!(self, store => store.purge(only, before_ms).await)
    }
}

//! The PostgreSQL store (sqlx), for deployments that keep their documents in a shared
//! database (`--database-url postgres://…`). Same tables and same guarantees as the SQLite
//! store: a group commit is one transaction, acknowledged only once PostgreSQL has committed
//! it (its own WAL and `synchronous_commit`, which the operator keeps on).
//!
//! Several servers may write the same database at once. Each document's updates are numbered
//! by an upsert of its row in `documents`, which holds that row's lock until the commit: the
//! numbers are gapless and follow commit order whichever server commits, and a commit that
//! fails gives back the numbers it took. Documents are locked in one order (by ID), so two
//! commits touching the same documents cannot deadlock. Compaction writes under a
//! per-document advisory lock, and only if no other compaction got further first.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};

use quire_protocol::request::VersionInfo;

use super::postgres_history as history;
use super::{
    Append, CorruptContent, DocMarks, LogSize, NewVersion, QuotaFull, SqliteStore, Store,
    StoreError, StoredDoc,
};
use crate::versions::HistoryPolicy;

/// Connections per server: the persister's one writer at a time, loads, compactions and the
/// history requests beside it.
const MAX_CONNECTIONS: u32 = 8;

/// The advisory-lock class of compactions (the two-key form: its keys never meet sqlx's
/// migration lock or an operator's one-key locks). The second key is the document ID's hash;
/// two documents sharing a hash only wait for each other.
const COMPACTION_LOCK_CLASS: i32 = 0x5175;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and runs pending migrations (under sqlx's migration lock, so that
    /// servers starting together migrate once).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations-postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One group commit: reserves each document's next numbers (and locks its row until the
/// commit), then stores every update in one statement.
async fn append_on(conn: &mut PgConnection, batch: &[Append<'_>]) -> Result<Vec<i64>, StoreError> {
    let now = super::unix_now();
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for append in batch {
        *counts.entry(append.doc).or_insert(0) += 1;
    }
    // Sorted: every commit locks the rows it touches in the same order.
    let mut docs: Vec<&str> = counts.keys().copied().collect();
    docs.sort_unstable();
    let added: Vec<i64> = docs.iter().map(|doc| counts[doc]).collect();
    let mut tx = conn.begin().await?;
    let rows = sqlx::query(
        "INSERT INTO documents (id, created_at, updated_at, last_seq)
         SELECT id, $2, $2, added FROM UNNEST($1::TEXT[], $3::BIGINT[]) AS t(id, added)
          ORDER BY id COLLATE \"C\"
         ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at,
             last_seq = documents.last_seq + excluded.last_seq
         RETURNING id, last_seq",
    )
    .bind(&docs)
    .bind(now)
    .bind(&added)
    .fetch_all(&mut *tx)
    .await?;
    let mut next_seq: HashMap<&str, i64> = HashMap::with_capacity(docs.len());
    for row in rows {
        let id: String = row.try_get(0)?;
        let last_seq: i64 = row.try_get(1)?;
        let (&doc, &count) =
            counts
                .get_key_value(id.as_str())
                .ok_or_else(|| StoreError::Corrupt {
                    doc: id.clone(),
                    detail: "the documents upsert returned a document it was not given".into(),
                })?;
        next_seq.insert(doc, last_seq - count + 1);
    }
    let mut seqs = Vec::with_capacity(batch.len());
    let mut row_docs = Vec::with_capacity(batch.len());
    let mut row_data = Vec::with_capacity(batch.len());
    for append in batch {
        let next = next_seq
            .get_mut(append.doc)
            .ok_or_else(|| StoreError::Corrupt {
                doc: append.doc.to_owned(),
                detail: "the documents upsert did not return this document".into(),
            })?;
        seqs.push(*next);
        row_docs.push(append.doc);
        row_data.push(append.data);
        *next += 1;
    }
    sqlx::query(
        "INSERT INTO updates (doc_id, seq, data)
         SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BYTEA[])",
    )
    .bind(&row_docs)
    .bind(&seqs)
    .bind(&row_data)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(seqs)
}

/// A document as stored, read by one statement (one snapshot of the database, so a
/// compaction committing meanwhile cannot pair an old snapshot with a log it deleted), and the
/// number of the log's last update. The head (marks and snapshot) is the row numbered 0.
/// With `after` above 0, only what was stored after update `after` ([`Store::load_after`]).
async fn read_stored(
    conn: &mut PgConnection,
    doc: &str,
    after: i64,
) -> Result<(StoredDoc, Option<i64>), StoreError> {
    let rows = sqlx::query(
        "SELECT 0::BIGINT, snapshots.data, documents.trashed_at,
                (SELECT MAX(created_at) FROM versions WHERE doc_id = $1), documents.last_seq
           FROM (SELECT 1) AS one
           LEFT JOIN documents ON documents.id = $1
           LEFT JOIN snapshots ON snapshots.doc_id = $1 AND snapshots.through_id > $2
         UNION ALL
         SELECT seq, data, NULL, NULL, NULL FROM updates
          WHERE doc_id = $1
            AND seq > GREATEST($2, COALESCE((SELECT through_id FROM snapshots WHERE doc_id = $1), 0))
         ORDER BY 1",
    )
    .bind(doc)
    .bind(after)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = rows.into_iter();
    let head = rows.next().ok_or_else(|| StoreError::Corrupt {
        doc: doc.to_owned(),
        detail: "the load returned no head row".into(),
    })?;
    let marks = DocMarks {
        trashed_ms: head.try_get::<Option<i64>, _>(2)?.map(|ms| ms as u64),
        newest_version_ms: head.try_get::<Option<i64>, _>(3)?.map(|ms| ms as u64),
    };
    let mut last_seq = None;
    let mut updates = Vec::with_capacity(rows.len());
    for row in rows {
        last_seq = Some(row.try_get::<i64, _>(0)?);
        updates.push(row.try_get::<Vec<u8>, _>(1)?);
    }
    let stored = StoredDoc {
        snapshot: head.try_get::<Option<Vec<u8>>, _>(1)?,
        updates,
        marks,
        head: head.try_get::<Option<i64>, _>(4)?.unwrap_or(0),
    };
    Ok((stored, last_seq))
}

/// Replaces the snapshot of `doc` with `state` (which holds the log through `through`) and
/// deletes that log, under the document's compaction lock, unless another compaction already
/// got as far. Updates appended meanwhile have larger numbers and stay.
async fn write_compaction(
    conn: &mut PgConnection,
    doc: &str,
    through: i64,
    state: &[u8],
) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(COMPACTION_LOCK_CLASS)
        .bind(doc)
        .execute(&mut *tx)
        .await?;
    let covered: i64 = sqlx::query_scalar(
        "SELECT COALESCE((SELECT through_id FROM snapshots WHERE doc_id = $1), 0)",
    )
    .bind(doc)
    .fetch_one(&mut *tx)
    .await?;
    if covered >= through {
        tracing::debug!(
            doc,
            through,
            covered,
            "already compacted this far; snapshot kept"
        );
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO snapshots (doc_id, data, through_id) VALUES ($1, $2, $3)
         ON CONFLICT (doc_id) DO UPDATE SET data = excluded.data, through_id = excluded.through_id",
    )
    .bind(doc)
    .bind(state)
    .bind(through)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM updates WHERE doc_id = $1 AND seq <= $2")
        .bind(doc)
        .bind(through)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Copies every table into the SQLite store `into`, reading from one snapshot of the
/// database (a repeatable-read transaction) while writers carry on.
async fn copy_into(pool: &PgPool, into: &SqliteStore) -> Result<(), StoreError> {
    let mut source = pool.acquire().await?;
    let mut read = source.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *read)
        .await?;
    let mut target = into.writer().acquire().await?;
    let mut write = target.begin().await?;
    {
        let mut rows = sqlx::query(
            "SELECT id, created_at, updated_at, last_seq, trashed_at FROM documents ORDER BY id",
        )
        .fetch(&mut *read);
        while let Some(row) = rows.try_next().await? {
            sqlx::query(
                "INSERT INTO documents (id, created_at, updated_at, last_seq, trashed_at)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(row.try_get::<String, _>(0)?)
            .bind(row.try_get::<i64, _>(1)?)
            .bind(row.try_get::<i64, _>(2)?)
            .bind(row.try_get::<i64, _>(3)?)
            .bind(row.try_get::<Option<i64>, _>(4)?)
            .execute(&mut *write)
            .await?;
        }
    }
    {
        let mut rows =
            sqlx::query("SELECT doc_id, data, through_id FROM snapshots").fetch(&mut *read);
        while let Some(row) = rows.try_next().await? {
            sqlx::query("INSERT INTO snapshots (doc_id, data, through_id) VALUES (?, ?, ?)")
                .bind(row.try_get::<String, _>(0)?)
                .bind(row.try_get::<Vec<u8>, _>(1)?)
                .bind(row.try_get::<i64, _>(2)?)
                .execute(&mut *write)
                .await?;
        }
    }
    {
        let mut rows = sqlx::query("SELECT doc_id, seq, data FROM updates ORDER BY doc_id, seq")
            .fetch(&mut *read);
        while let Some(row) = rows.try_next().await? {
            sqlx::query("INSERT INTO updates (doc_id, seq, data) VALUES (?, ?, ?)")
                .bind(row.try_get::<String, _>(0)?)
                .bind(row.try_get::<i64, _>(1)?)
                .bind(row.try_get::<Vec<u8>, _>(2)?)
                .execute(&mut *write)
                .await?;
        }
    }
    {
        let mut rows = sqlx::query(
            "SELECT id, doc_id, created_at, kind, name, authors, size, state FROM versions
              ORDER BY id",
        )
        .fetch(&mut *read);
        while let Some(row) = rows.try_next().await? {
            sqlx::query(
                "INSERT INTO versions (id, doc_id, created_at, kind, name, authors, size, state)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(row.try_get::<i64, _>(0)?)
            .bind(row.try_get::<String, _>(1)?)
            .bind(row.try_get::<i64, _>(2)?)
            .bind(row.try_get::<i64, _>(3)?)
            .bind(row.try_get::<String, _>(4)?)
            .bind(row.try_get::<String, _>(5)?)
            .bind(row.try_get::<i64, _>(6)?)
            .bind(row.try_get::<Vec<u8>, _>(7)?)
            .execute(&mut *write)
            .await?;
        }
    }
    write.commit().await?;
    read.commit().await?;
    Ok(())
}

impl Store for PgStore {
    async fn load(&self, doc: &str) -> Result<StoredDoc, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(read_stored(&mut conn, doc, 0).await?.0)
    }

    async fn load_after(&self, doc: &str, after: i64) -> Result<StoredDoc, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(read_stored(&mut conn, doc, after).await?.0)
    }

    async fn heads(&self, docs: &[&str]) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT id, last_seq FROM documents WHERE id = ANY($1)")
            .bind(docs)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    async fn append_batch(&self, batch: &[Append<'_>]) -> Result<Vec<i64>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await?;
        append_on(&mut conn, batch).await
    }

    async fn log_size(&self, doc: &str) -> Result<LogSize, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(OCTET_LENGTH(data)), 0)::BIGINT FROM updates
              WHERE doc_id = $1
                AND seq > COALESCE((SELECT through_id FROM snapshots WHERE doc_id = $1), 0)",
        )
        .bind(doc)
        .fetch_one(&self.pool)
        .await?;
        Ok(LogSize {
            updates: row.try_get::<i64, _>(0)? as u64,
            bytes: row.try_get::<i64, _>(1)? as u64,
        })
    }

    /// Other servers may write the same database.
    fn shared(&self) -> bool {
        true
    }

    async fn compact(
        &self,
        doc: &str,
        merge: fn(&StoredDoc) -> Result<Vec<u8>, CorruptContent>,
    ) -> Result<(), StoreError> {
        // Read and merge outside any transaction: merging a large document takes long, and
        // the log keeps growing meanwhile (the write keeps what arrived).
        let mut conn = self.pool.acquire().await?;
        let (stored, last_seq) = read_stored(&mut conn, doc, 0).await?;
        drop(conn);
        let Some(last_seq) = last_seq else {
            return Ok(());
        };
        let merged = super::merge_on_work_pool(doc, stored, merge).await?;
        self.compact_to(doc, last_seq, &merged).await
    }

    async fn compact_to(&self, doc: &str, through: i64, state: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        write_compaction(&mut conn, doc, through, state).await
    }

    async fn list(&self) -> Result<Vec<String>, StoreError> {
        // Byte order, as SQLite sorts, whatever the database's collation.
        Ok(
            sqlx::query_scalar("SELECT id FROM documents ORDER BY id COLLATE \"C\"")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The copy is a SQLite database file, the embedded store's own format: `serve` and every
    /// command read it with `--data-dir` (as `quire.db`), or it is imported back.
    async fn backup(&self, path: &Path) -> Result<(), StoreError> {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let staging = parent.join(format!(".{name}.{}.partial", std::process::id()));
        crate::private::create_dir(&staging).map_err(StoreError::Permissions)?;
        let result = async {
            let copy = SqliteStore::open(&staging).await?;
            // Written out with VACUUM INTO, not by moving the staging file: what the copy
            // committed may still be in its write-ahead log, which the move would leave behind
            // (a backup once came out without a document that way).
            let written = match copy_into(&self.pool, &copy).await {
                Ok(()) => copy.backup(path).await,
                Err(err) => Err(err),
            };
            copy.close().await;
            written
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        result
    }

    async fn save_version(
        &self,
        doc: &str,
        version: NewVersion<'_>,
        policy: &HistoryPolicy,
    ) -> Result<Result<VersionInfo, QuotaFull>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        history::save_version(&mut conn, doc, version, policy).await
    }

    async fn list_versions(&self, doc: &str) -> Result<Vec<VersionInfo>, StoreError> {
        history::list_versions(&self.pool, doc).await
    }

    async fn load_version(
        &self,
        doc: &str,
        id: u64,
    ) -> Result<Option<(VersionInfo, Vec<u8>)>, StoreError> {
        history::load_version(&self.pool, doc, id).await
    }

    async fn delete_version(&self, doc: &str, id: u64) -> Result<bool, StoreError> {
        history::delete_version(&mut *self.pool.acquire().await?, doc, id).await
    }

    async fn trash(&self, doc: &str, at_ms: u64) -> Result<bool, StoreError> {
        history::trash(&mut *self.pool.acquire().await?, doc, at_ms).await
    }

    async fn untrash(&self, doc: &str) -> Result<bool, StoreError> {
        history::untrash(&mut *self.pool.acquire().await?, doc).await
    }

    async fn list_trash(&self) -> Result<Vec<(String, u64)>, StoreError> {
        history::list_trash(&self.pool).await
    }

    async fn purge(&self, only: Option<&str>, before_ms: u64) -> Result<Vec<String>, StoreError> {
        history::purge(&mut *self.pool.acquire().await?, only, before_ms).await
    }
}

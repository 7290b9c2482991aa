//! The embedded SQLite store (sqlx). WAL journal with `synchronous=FULL`: every commit is
//! fsynced before it returns, so an acknowledged update survives power loss, not only a crash.

use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, Sqlite, SqliteConnection, SqlitePool};

use super::{Append, LogSize, Store, StoreError, StoredDoc};

/// The database file inside the data directory.
pub const DB_FILE: &str = "quire.db";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir` and runs pending migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let row = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<String, _>(0)?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One group commit on `conn`.
async fn append_on(conn: &mut SqliteConnection, batch: &[Append<'_>]) -> Result<(), StoreError> {
    let now = unix_now();
    let mut tx = conn.begin().await?;
    let mut last_doc: Option<&str> = None;
    for append in batch {
        if last_doc != Some(append.doc) {
            sqlx::query(
                "INSERT INTO documents (id, created_at, updated_at) VALUES (?, ?, ?)
                 ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at",
            )
            .bind(append.doc)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            last_doc = Some(append.doc);
        }
        sqlx::query("INSERT INTO updates (doc_id, data) VALUES (?, ?)")
            .bind(append.doc)
            .bind(append.data)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Compacts `doc` on `conn`, see [`Store::compact`].
async fn compact_on(
    conn: &mut SqliteConnection,
    doc: &str,
    merge: fn(&StoredDoc) -> Result<Vec<u8>, String>,
) -> Result<(), StoreError> {
    // One write transaction: read what is stored, merge, replace. SQLite serializes writers,
    // so no append can slip between the read and the delete.
    let mut tx = conn.begin().await?;
    sqlx::query("UPDATE documents SET updated_at = updated_at WHERE id = ?")
        .bind(doc)
        .execute(&mut *tx)
        .await?;
    let snapshot = sqlx::query("SELECT data FROM snapshots WHERE doc_id = ?")
        .bind(doc)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| row.try_get::<Vec<u8>, _>(0))
        .transpose()?;
    let rows = sqlx::query(
        "SELECT id, data FROM updates WHERE doc_id = ?
           AND id > COALESCE((SELECT through_id FROM snapshots WHERE doc_id = ?), 0) ORDER BY id",
    )
    .bind(doc)
    .bind(doc)
    .fetch_all(&mut *tx)
    .await?;
    let Some(last_id) = rows
        .last()
        .map(|row| row.try_get::<i64, _>(0))
        .transpose()?
    else {
        return Ok(());
    };
    let updates = rows
        .iter()
        .map(|row| row.try_get::<Vec<u8>, _>(1))
        .collect::<Result<Vec<_>, _>>()?;
    let stored = StoredDoc { snapshot, updates };
    let merged = merge(&stored).map_err(|detail| StoreError::Corrupt {
        doc: doc.to_owned(),
        detail,
    })?;
    sqlx::query(
        "INSERT INTO snapshots (doc_id, data, through_id) VALUES (?, ?, ?)
         ON CONFLICT(doc_id) DO UPDATE SET data = excluded.data, through_id = excluded.through_id",
    )
    .bind(doc)
    .bind(&merged)
    .bind(last_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM updates WHERE doc_id = ? AND id <= ?")
        .bind(doc)
        .bind(last_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// After a failed write transaction (e.g. fsync or write failing with EIO), SQLite can keep
/// holding the database's write lock on that connection, and every later commit on the other
/// connections fails with "database is locked". Closing the connection releases its locks;
/// the pool opens a fresh one when needed.
async fn discard_if_failed<T>(conn: PoolConnection<Sqlite>, result: &Result<T, StoreError>) {
    if result.is_err() {
        if let Err(err) = conn.detach().close().await {
            tracing::warn!(error = %err, "closing a failed storage connection");
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store for SqliteStore {
    async fn load(&self, doc: &str) -> Result<StoredDoc, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let snapshot = sqlx::query("SELECT data, through_id FROM snapshots WHERE doc_id = ?")
            .bind(doc)
            .fetch_optional(&mut *conn)
            .await?;
        let (snapshot, after) = match snapshot {
            Some(row) => (
                Some(row.try_get::<Vec<u8>, _>(0)?),
                row.try_get::<i64, _>(1)?,
            ),
            None => (None, 0),
        };
        let updates =
            sqlx::query("SELECT data FROM updates WHERE doc_id = ? AND id > ? ORDER BY id")
                .bind(doc)
                .bind(after)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|row| row.try_get::<Vec<u8>, _>(0))
                .collect::<Result<Vec<_>, _>>()?;
        Ok(StoredDoc { snapshot, updates })
    }

    async fn append_batch(&self, batch: &[Append<'_>]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        let result = append_on(&mut conn, batch).await;
        discard_if_failed(conn, &result).await;
        result
    }

    async fn log_size(&self, doc: &str) -> Result<LogSize, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM updates WHERE doc_id = ?
               AND id > COALESCE((SELECT through_id FROM snapshots WHERE doc_id = ?), 0)",
        )
        .bind(doc)
        .bind(doc)
        .fetch_one(&self.pool)
        .await?;
        Ok(LogSize {
            updates: row.try_get::<i64, _>(0)? as u64,
            bytes: row.try_get::<i64, _>(1)? as u64,
        })
    }

    async fn compact(
        &self,
        doc: &str,
        merge: fn(&StoredDoc) -> Result<Vec<u8>, String>,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = compact_on(&mut conn, doc, merge).await;
        discard_if_failed(conn, &result).await;
        result
    }

    async fn list(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM documents ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| row.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    async fn backup(&self, path: &Path) -> Result<(), StoreError> {
        // VACUUM INTO writes a consistent copy from one read transaction; writers carry on.
        sqlx::query("VACUUM INTO ?")
            .bind(path.to_string_lossy().as_ref())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(stored: &StoredDoc) -> Result<Vec<u8>, String> {
        let mut out = stored.snapshot.clone().unwrap_or_default();
        for update in &stored.updates {
            out.extend_from_slice(update);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn append_load_compact_backup() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert!(store.load("a").await.unwrap().is_empty());
        store
            .append_batch(&[
                Append {
                    doc: "a",
                    data: b"1",
                },
                Append {
                    doc: "b",
                    data: b"x",
                },
                Append {
                    doc: "a",
                    data: b"2",
                },
            ])
            .await
            .unwrap();
        let a = store.load("a").await.unwrap();
        assert_eq!(a.updates, vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(
            store.log_size("a").await.unwrap(),
            LogSize {
                updates: 2,
                bytes: 2
            }
        );

        store.compact("a", concat).await.unwrap();
        store
            .append_batch(&[Append {
                doc: "a",
                data: b"3",
            }])
            .await
            .unwrap();
        let a = store.load("a").await.unwrap();
        assert_eq!(a.snapshot.as_deref(), Some(&b"12"[..]));
        assert_eq!(a.updates, vec![b"3".to_vec()]);
        assert_eq!(store.log_size("a").await.unwrap().updates, 1);
        assert_eq!(
            store.list().await.unwrap(),
            vec!["a".to_owned(), "b".to_owned()]
        );

        let copy = dir.path().join("copy.db");
        store.backup(&copy).await.unwrap();
        let copy_dir = tempfile::tempdir().unwrap();
        std::fs::copy(&copy, copy_dir.path().join(DB_FILE)).unwrap();
        let restored = SqliteStore::open(copy_dir.path()).await.unwrap();
        assert_eq!(
            restored.load("a").await.unwrap().updates,
            vec![b"3".to_vec()]
        );
        assert_eq!(restored.integrity_check().await.unwrap(), "ok");
    }
}

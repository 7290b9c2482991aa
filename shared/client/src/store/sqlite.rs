//! The default local store: SQLite through sqlx, `synchronous=FULL` so an edit the app showed
//! survives a crash of the app or the machine.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{LocalAppend, LocalDoc, LocalStore, LocalStoreError};

#[derive(Debug, Clone)]
pub struct SqliteLocalStore {
    pool: SqlitePool,
}

impl SqliteLocalStore {
    /// Opens (creating) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, LocalStoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl LocalStore for SqliteLocalStore {
    async fn load(&self, doc: &str) -> Result<LocalDoc, LocalStoreError> {
        let rows = sqlx::query("SELECT id, data, pending FROM log WHERE doc_id = ? ORDER BY id")
            .bind(doc)
            .fetch_all(&self.pool)
            .await?;
        let mut local = LocalDoc::default();
        for row in rows {
            if row.try_get::<i64, _>(2)? != 0 {
                local.pending.push(row.try_get(0)?);
            }
            local.updates.push(row.try_get(1)?);
        }
        Ok(local)
    }

    async fn append(&self, batch: &[LocalAppend<'_>]) -> Result<Vec<i64>, LocalStoreError> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(batch.len());
        for append in batch {
            let id = sqlx::query("INSERT INTO log (doc_id, data, pending) VALUES (?, ?, ?)")
                .bind(append.doc)
                .bind(append.data)
                .bind(i64::from(append.pending))
                .execute(&mut *tx)
                .await?
                .last_insert_rowid();
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn acknowledge(&self, doc: &str, through: i64) -> Result<(), LocalStoreError> {
        sqlx::query("UPDATE log SET pending = 0 WHERE doc_id = ? AND id <= ? AND pending = 1")
            .bind(doc)
            .bind(through)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn compact(&self, doc: &str, merged: &[u8]) -> Result<bool, LocalStoreError> {
        let mut tx = self.pool.begin().await?;
        let pending: i64 = sqlx::query("SELECT COUNT(*) FROM log WHERE doc_id = ? AND pending = 1")
            .bind(doc)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if pending > 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM log WHERE doc_id = ?")
            .bind(doc)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO log (doc_id, data, pending) VALUES (?, ?, 0)")
            .bind(doc)
            .bind(merged)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_survives_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.db");
        let store = SqliteLocalStore::open(&path).await.unwrap();
        let ids = store
            .append(&[
                LocalAppend {
                    doc: "d",
                    data: b"remote",
                    pending: false,
                },
                LocalAppend {
                    doc: "d",
                    data: b"mine",
                    pending: true,
                },
                LocalAppend {
                    doc: "d",
                    data: b"mine2",
                    pending: true,
                },
            ])
            .await
            .unwrap();
        store.close().await;

        let store = SqliteLocalStore::open(&path).await.unwrap();
        let doc = store.load("d").await.unwrap();
        assert_eq!(doc.updates.len(), 3);
        assert_eq!(doc.pending, vec![ids[1], ids[2]]);
        assert!(
            !store.compact("d", b"merged").await.unwrap(),
            "pending rows block compaction"
        );
        store.acknowledge("d", ids[1]).await.unwrap();
        assert_eq!(store.load("d").await.unwrap().pending, vec![ids[2]]);
        store.acknowledge("d", ids[2]).await.unwrap();
        assert!(store.compact("d", b"merged").await.unwrap());
        assert_eq!(
            store.load("d").await.unwrap().updates,
            vec![b"merged".to_vec()]
        );
    }
}

//! The embedded SQLite store (sqlx). WAL journal with `synchronous=FULL`: every commit is
//! fsynced before it returns, so an acknowledged update survives power loss, not only a crash.
//!
//! Writes (group commits and compactions) go through one dedicated connection, reads through a
//! small pool. SQLite admits one writer at a time anyway; a single writer connection keeps its
//! page cache valid from commit to commit (a pooled connection finds the database changed by
//! another one and rereads every page it touches) and never waits on another writer's lock.
//! Compaction merges outside the write transaction, so commits wait only for its short write.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use quire_protocol::request::VersionInfo;

use super::sqlite_history as history;
use super::{
    Append, CorruptContent, DocMarks, LogSize, NewVersion, QuotaFull, Store, StoreError, StoredDoc,
};
use crate::versions::HistoryPolicy;

/// The database file inside the data directory.
pub const DB_FILE: &str = "quire.db";

/// The journal file is cut back to this size when it restarts after a checkpoint, so a burst
/// does not leave a large file behind.
const JOURNAL_SIZE_LIMIT: &str = "67108864";

/// Pages the writer keeps cached (negative: KiB): the tail of the log and its index.
const WRITER_CACHE_KIB: &str = "-16384";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads and backups.
    pool: SqlitePool,
    /// The one connection that writes.
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir` and runs pending migrations.
    /// The database file and its `-wal` and `-shm` companions are owner-only (`0600`): the
    /// file is created so before SQLite opens it, and SQLite gives the companions it creates
    /// the database file's mode ([`crate::private`]).
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        crate::private::create_or_narrow(&path).map_err(StoreError::Permissions)?;
        for suffix in ["-wal", "-shm"] {
            let mut companion = path.clone().into_os_string();
            companion.push(suffix);
            crate::private::narrow(Path::new(&companion)).map_err(StoreError::Permissions)?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.pragma("cache_size", WRITER_CACHE_KIB))
            .await?;
        Ok(Self { pool, writer })
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let row = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<String, _>(0)?)
    }

    /// The writing connection, for filling a new store (a backup of another engine).
    pub(super) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Rows per multi-row INSERT, largest first. A commit's rows go out in as few statements as
/// these sizes allow; the fixed sizes keep each statement's text, and so its prepared form in
/// sqlx's cache, reused from commit to commit instead of parsed anew for every batch length.
const ROWS_PER_STATEMENT: [usize; 4] = [256, 32, 4, 1];

/// Splits `n` rows into statement sizes from [`ROWS_PER_STATEMENT`], greedily.
fn statement_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let size = ROWS_PER_STATEMENT.into_iter().find(|&size| size <= n)?;
        n -= size;
        Some(size)
    })
}

/// One group commit on `conn`. A multi-row upsert of the documents touched reserves each
/// one's next log numbers (`last_seq`, returned), then multi-row inserts store the updates,
/// numbered in batch order so each document's log keeps its order. Each statement is a round
/// trip to sqlx's SQLite thread; one per row made those round trips most of a commit's cost.
async fn append_on(
    conn: &mut SqliteConnection,
    batch: &[Append<'_>],
) -> Result<Vec<i64>, StoreError> {
    let now = super::unix_now();
    // Documents in order of first appearance, with how many updates each brings.
    let mut counts: HashMap<&str, i64> = HashMap::new();
    let mut docs: Vec<&str> = Vec::new();
    for append in batch {
        let count = counts.entry(append.doc).or_insert(0);
        if *count == 0 {
            docs.push(append.doc);
        }
        *count += 1;
    }
    let mut tx = conn.begin().await?;
    let mut next_seq: HashMap<&str, i64> = HashMap::with_capacity(docs.len());
    let mut rest = &docs[..];
    for size in statement_sizes(docs.len()) {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        let mut upsert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO documents (id, created_at, updated_at, last_seq) ",
        );
        upsert.push_values(chunk, |mut row, doc| {
            row.push_bind(*doc)
                .push_bind(now)
                .push_bind(now)
                .push_bind(counts[doc]);
        });
        upsert.push(
            " ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at,
                 last_seq = documents.last_seq + excluded.last_seq
             RETURNING id, last_seq",
        );
        for row in upsert.build().fetch_all(&mut *tx).await? {
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
    }
    // Sorted by document (stably, so each keeps its order): rows go into the table's B-tree
    // in key order.
    let mut rows: Vec<(&str, i64, &[u8])> = Vec::with_capacity(batch.len());
    for append in batch {
        let next = next_seq
            .get_mut(append.doc)
            .ok_or_else(|| StoreError::Corrupt {
                doc: append.doc.to_owned(),
                detail: "the documents upsert did not return this document".into(),
            })?;
        rows.push((append.doc, *next, append.data));
        *next += 1;
    }
    let seqs = rows.iter().map(|&(_, seq, _)| seq).collect();
    rows.sort_by_key(|&(doc, _, _)| doc);
    let mut rest = &rows[..];
    for size in statement_sizes(rows.len()) {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        let mut insert = QueryBuilder::<Sqlite>::new("INSERT INTO updates (doc_id, seq, data) ");
        insert.push_values(chunk, |mut row, &(doc, seq, data)| {
            row.push_bind(doc).push_bind(seq).push_bind(data);
        });
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(seqs)
}

/// What a compaction merges: the snapshot and the log after it, through `last_seq`.
struct CompactionInput {
    last_seq: i64,
    stored: StoredDoc,
}

/// A document as stored, read by one statement (so in one read transaction, no write lock
/// held), so that a compaction committing in between cannot pair an old snapshot with a log
/// it already deleted: the snapshot, the log after it, and the number of the log's last update
/// (`None` when the log is empty). One statement is one round trip to sqlx's SQLite thread;
/// the four of a transaction (begin, two reads, commit) each woke that thread and the
/// runtime's, most of the cost of opening a small document (docs/BENCHMARKS.md, S7).
///
/// The head (marks and snapshot) is the row numbered 0; the log's numbers start at 1. No
/// ORDER BY: SQLite would copy the snapshot into a sorter for it. The log comes in the order
/// of its primary key, which is checked here, and sorted if it ever is not.
///
/// With `after` above 0, only what was stored after update `after` ([`Store::load_after`]).
async fn read_stored(
    conn: &mut SqliteConnection,
    doc: &str,
    after: i64,
) -> Result<(StoredDoc, Option<i64>), StoreError> {
    let rows = sqlx::query(
        "SELECT 0, snapshots.data, documents.trashed_at,
                (SELECT MAX(created_at) FROM versions WHERE doc_id = ?1), documents.last_seq
           FROM (SELECT 1)
           LEFT JOIN documents ON documents.id = ?1
           LEFT JOIN snapshots ON snapshots.doc_id = ?1 AND snapshots.through_id > ?2
         UNION ALL
         SELECT seq, data, NULL, NULL, NULL FROM updates
          WHERE doc_id = ?1
            AND seq > MAX(?2, COALESCE((SELECT through_id FROM snapshots WHERE doc_id = ?1), 0))",
    )
    .bind(doc)
    .bind(after)
    .fetch_all(&mut *conn)
    .await?;
    let mut head = None;
    let mut log = Vec::with_capacity(rows.len().saturating_sub(1));
    for row in &rows {
        match row.try_get::<i64, _>(0)? {
            0 => head = Some(row),
            seq => log.push((seq, row)),
        }
    }
    let head = head.ok_or_else(|| StoreError::Corrupt {
        doc: doc.to_owned(),
        detail: "the load returned no head row".into(),
    })?;
    if !log.is_sorted_by_key(|&(seq, _)| seq) {
        log.sort_by_key(|&(seq, _)| seq);
    }
    let marks = DocMarks {
        trashed_ms: head.try_get::<Option<i64>, _>(2)?.map(|ms| ms as u64),
        newest_version_ms: head.try_get::<Option<i64>, _>(3)?.map(|ms| ms as u64),
    };
    let stored = StoredDoc {
        snapshot: head.try_get::<Option<Vec<u8>>, _>(1)?,
        updates: log
            .iter()
            .map(|(_, row)| row.try_get::<Vec<u8>, _>(1))
            .collect::<Result<Vec<_>, _>>()?,
        marks,
        head: head.try_get::<Option<i64>, _>(4)?.unwrap_or(0),
    };
    Ok((stored, log.last().map(|&(seq, _)| seq)))
}

/// Reads what [`Store::compact`] merges. `None` when the log after the snapshot is empty.
async fn read_for_compaction(
    conn: &mut SqliteConnection,
    doc: &str,
) -> Result<Option<CompactionInput>, StoreError> {
    let (stored, last_seq) = read_stored(conn, doc, 0).await?;
    Ok(last_seq.map(|last_seq| CompactionInput { last_seq, stored }))
}

/// Replaces the snapshot of `doc` with `state` (which holds the log through `through`) and
/// deletes that log, unless the snapshot already covers `through` (another compaction got
/// there first). Updates appended meanwhile have larger numbers (`documents.last_seq` only
/// grows) and stay.
async fn write_compaction(
    conn: &mut SqliteConnection,
    doc: &str,
    through: i64,
    state: &[u8],
) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    let covered: i64 = sqlx::query_scalar(
        "SELECT COALESCE((SELECT through_id FROM snapshots WHERE doc_id = ?), 0)",
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
        "INSERT INTO snapshots (doc_id, data, through_id) VALUES (?, ?, ?)
         ON CONFLICT(doc_id) DO UPDATE SET data = excluded.data, through_id = excluded.through_id",
    )
    .bind(doc)
    .bind(state)
    .bind(through)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM updates WHERE doc_id = ? AND seq <= ?")
        .bind(doc)
        .bind(through)
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

impl Store for SqliteStore {
    async fn load(&self, doc: &str) -> Result<StoredDoc, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = read_stored(&mut conn, doc, 0).await;
        discard_if_failed(conn, &result).await;
        Ok(result?.0)
    }

    async fn load_after(&self, doc: &str, after: i64) -> Result<StoredDoc, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = read_stored(&mut conn, doc, after).await;
        discard_if_failed(conn, &result).await;
        Ok(result?.0)
    }

    async fn heads(&self, docs: &[&str]) -> Result<Vec<(String, i64)>, StoreError> {
        let mut heads = Vec::with_capacity(docs.len());
        for doc in docs {
            let head: Option<i64> =
                sqlx::query_scalar("SELECT last_seq FROM documents WHERE id = ?")
                    .bind(doc)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(head) = head {
                heads.push(((*doc).to_owned(), head));
            }
        }
        Ok(heads)
    }

    async fn append_batch(&self, batch: &[Append<'_>]) -> Result<Vec<i64>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.writer.acquire().await?;
        let result = append_on(&mut conn, batch).await;
        discard_if_failed(conn, &result).await;
        result
    }

    async fn log_size(&self, doc: &str) -> Result<LogSize, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM updates WHERE doc_id = ?
               AND seq > COALESCE((SELECT through_id FROM snapshots WHERE doc_id = ?), 0)",
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
        merge: fn(&StoredDoc) -> Result<Vec<u8>, CorruptContent>,
    ) -> Result<(), StoreError> {
        // Read and merge without the write lock: merging a large document takes long, and
        // every commit (and every ACK behind it) would wait for it.
        let mut conn = self.pool.acquire().await?;
        let input = read_for_compaction(&mut conn, doc).await;
        discard_if_failed(conn, &input).await;
        let Some(input) = input? else {
            return Ok(());
        };
        let merged = super::merge_on_work_pool(doc, input.stored, merge).await?;
        self.compact_to(doc, input.last_seq, &merged).await
    }

    async fn compact_to(&self, doc: &str, through: i64, state: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        let result = write_compaction(&mut conn, doc, through, state).await;
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
        // Made empty and owner-only first (VACUUM INTO accepts an empty file), so the copy
        // never exists with the umask's mode.
        crate::private::create_file(path).map_err(StoreError::Permissions)?;
        // VACUUM INTO writes a consistent copy from one read transaction; writers carry on.
        sqlx::query("VACUUM INTO ?")
            .bind(path.to_string_lossy().as_ref())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_version(
        &self,
        doc: &str,
        version: NewVersion<'_>,
        policy: &HistoryPolicy,
    ) -> Result<Result<VersionInfo, QuotaFull>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let result = history::save_version(&mut conn, doc, version, policy).await;
        discard_if_failed(conn, &result).await;
        result
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
        let mut conn = self.writer.acquire().await?;
        let result = history::delete_version(&mut conn, doc, id).await;
        discard_if_failed(conn, &result).await;
        result
    }

    async fn trash(&self, doc: &str, at_ms: u64) -> Result<bool, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let result = history::trash(&mut conn, doc, at_ms).await;
        discard_if_failed(conn, &result).await;
        result
    }

    async fn untrash(&self, doc: &str) -> Result<bool, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let result = history::untrash(&mut conn, doc).await;
        discard_if_failed(conn, &result).await;
        result
    }

    async fn list_trash(&self) -> Result<Vec<(String, u64)>, StoreError> {
        history::list_trash(&self.pool).await
    }

    async fn purge(&self, only: Option<&str>, before_ms: u64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let result = history::purge(&mut conn, only, before_ms).await;
        discard_if_failed(conn, &result).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(stored: &StoredDoc) -> Result<Vec<u8>, CorruptContent> {
        let mut out = stored.snapshot.clone().unwrap_or_default();
        for update in &stored.updates {
            out.extend_from_slice(update);
        }
        Ok(out)
    }

    #[test]
    fn statement_sizes_cover_every_row_with_few_statements() {
        for n in 0..1000 {
            let sizes: Vec<usize> = statement_sizes(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|size| ROWS_PER_STATEMENT.contains(size)));
        }
        assert_eq!(statement_sizes(300).collect::<Vec<_>>(), [256, 32, 4, 4, 4]);
    }

    /// A commit larger than one statement keeps every document's log in batch order.
    #[tokio::test]
    async fn large_commit_keeps_log_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let data: Vec<Vec<u8>> = (0..301u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let docs = ["a", "b", "c"];
        let batch: Vec<Append<'_>> = data
            .iter()
            .enumerate()
            .map(|(i, data)| Append {
                doc: docs[i % 3],
                data,
            })
            .collect();
        store.append_batch(&batch).await.unwrap();
        for (d, doc) in docs.iter().enumerate() {
            let expected: Vec<Vec<u8>> = data.iter().skip(d).step_by(3).cloned().collect();
            assert_eq!(store.load(doc).await.unwrap().updates, expected, "{doc}");
        }
        assert_eq!(store.list().await.unwrap(), docs.map(str::to_owned));
    }

    /// A database of the first layout (a rowid log) moves to the per-document log: every
    /// document loads as before, and new updates are numbered after both the log and the
    /// snapshot, also for a document whose log was compacted away entirely.
    #[tokio::test]
    async fn migration_to_per_document_log_keeps_every_update() {
        let dir = tempfile::tempdir().unwrap();
        let first = tempfile::tempdir().unwrap();
        let init = "20261127000001_init.sql";
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(init),
            first.path().join(init),
        )
        .unwrap();
        let options = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(dir.path().join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::migrate::Migrator::new(first.path())
            .await
            .unwrap()
            .run(&mut conn)
            .await
            .unwrap();
        for sql in [
            "INSERT INTO documents (id, created_at, updated_at) VALUES ('a', 0, 0), ('b', 0, 0)",
            // a: a snapshot through id 2, then ids 4 and 6 (ids 3 and 5 are b's).
            "INSERT INTO updates (id, doc_id, data) VALUES (3, 'b', x'62'), (4, 'a', x'34'),
                 (5, 'b', x'63'), (6, 'a', x'36')",
            "INSERT INTO snapshots (doc_id, data, through_id) VALUES ('a', x'3132', 2)",
            // b: compacted through id 9, its log deleted since.
            "INSERT INTO snapshots (doc_id, data, through_id) VALUES ('b', x'626364', 9)",
            "DELETE FROM updates WHERE doc_id = 'b'",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();

        let store = SqliteStore::open(dir.path()).await.unwrap();
        let a = store.load("a").await.unwrap();
        assert_eq!(a.snapshot.as_deref(), Some(&b"12"[..]));
        assert_eq!(a.updates, vec![b"4".to_vec(), b"6".to_vec()]);
        store
            .append_batch(&[
                Append {
                    doc: "b",
                    data: b"e",
                },
                Append {
                    doc: "a",
                    data: b"7",
                },
            ])
            .await
            .unwrap();
        let b = store.load("b").await.unwrap();
        assert_eq!(b.snapshot.as_deref(), Some(&b"bcd"[..]));
        assert_eq!(
            b.updates,
            vec![b"e".to_vec()],
            "numbered after the snapshot"
        );
        assert_eq!(
            store.load("a").await.unwrap().updates,
            vec![b"4".to_vec(), b"6".to_vec(), b"7".to_vec()]
        );
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
    }

    /// Updates appended while a compaction merges stay in the log; a second compaction that
    /// read the same log before the first one wrote drops its merge.
    #[tokio::test]
    async fn compaction_keeps_what_arrives_while_it_merges() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let append = |data: &'static [u8]| {
            let store = store.clone();
            async move {
                store
                    .append_batch(&[Append { doc: "a", data }])
                    .await
                    .unwrap()
            }
        };
        append(b"1").await;
        append(b"2").await;
        let mut reader = store.pool.acquire().await.unwrap();
        let input = read_for_compaction(&mut reader, "a")
            .await
            .unwrap()
            .unwrap();
        let stale = read_for_compaction(&mut reader, "a")
            .await
            .unwrap()
            .unwrap();
        append(b"3").await;
        let merged = concat(&input.stored).unwrap();
        let mut writer = store.writer.acquire().await.unwrap();
        write_compaction(&mut writer, "a", input.last_seq, &merged)
            .await
            .unwrap();
        write_compaction(&mut writer, "a", stale.last_seq, b"stale")
            .await
            .unwrap();
        drop(writer);
        let a = store.load("a").await.unwrap();
        assert_eq!(a.snapshot.as_deref(), Some(&b"12"[..]));
        assert_eq!(a.updates, vec![b"3".to_vec()]);
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

//! Versions and the trash in the PostgreSQL store: the queries behind the history half of
//! [`super::Store`], the twin of `sqlite_history.rs`. Each function is one transaction.

use quire_protocol::request::{VersionInfo, VersionKind};
use sqlx::{Connection, PgConnection, PgPool, Row};

use super::version_rows::{kept, version_info, INFO_COLUMNS, KEPT_COLUMNS};
use super::{NewVersion, QuotaFull, StoreError};
use crate::versions::{thin, HistoryPolicy};

/// Saves a version and thins the document's versions to the quota, in one transaction.
pub(super) async fn save_version(
    conn: &mut PgConnection,
    doc: &str,
    version: NewVersion<'_>,
    policy: &HistoryPolicy,
) -> Result<Result<VersionInfo, QuotaFull>, StoreError> {
    let mut tx = conn.begin().await?;
    let size = version.state.len() as u64;
    if version.kind == VersionKind::Named {
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(size), 0)::BIGINT FROM versions WHERE doc_id = $1 AND kind = 1",
        )
        .bind(doc)
        .fetch_one(&mut *tx)
        .await?;
        let (count, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if !policy.named_fits(count as u32, bytes as u64, size) {
            return Ok(Err(QuotaFull));
        }
    }
    // A document gets its row with its first write; a version of one never written (or an
    // empty one named by a user) makes the row.
    sqlx::query(
        "INSERT INTO documents (id, created_at, updated_at, last_seq) VALUES ($1, $2, $3, 0)
         ON CONFLICT(id) DO NOTHING",
    )
    .bind(doc)
    .bind((version.created_ms / 1000) as i64)
    .bind((version.created_ms / 1000) as i64)
    .execute(&mut *tx)
    .await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO versions (doc_id, created_at, kind, name, authors, size, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(doc)
    .bind(version.created_ms as i64)
    .bind(version.kind as i64)
    .bind(version.name)
    .bind(version.authors.join("\n"))
    .bind(size as i64)
    .bind(version.state)
    .fetch_one(&mut *tx)
    .await?;
    let kept = sqlx::query(&format!(
        "SELECT {KEPT_COLUMNS} FROM versions WHERE doc_id = $1"
    ))
    .bind(doc)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(kept)
    .collect::<Result<Vec<_>, StoreError>>()?;
    for gone in thin(&kept, policy, version.created_ms) {
        sqlx::query("DELETE FROM versions WHERE id = $1")
            .bind(gone as i64)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Ok(VersionInfo {
        id: id as u64,
        created_ms: version.created_ms,
        kind: version.kind,
        name: version.name.to_owned(),
        authors: version.authors.to_vec(),
        size,
    }))
}

pub(super) async fn list_versions(
    pool: &PgPool,
    doc: &str,
) -> Result<Vec<VersionInfo>, StoreError> {
    sqlx::query(&format!(
        "SELECT {INFO_COLUMNS} FROM versions WHERE doc_id = $1 ORDER BY created_at DESC, id DESC"
    ))
    .bind(doc)
    .fetch_all(pool)
    .await?
    .iter()
    .map(version_info)
    .collect()
}

/// Whether `doc` is in the trash and when its newest version was saved, in one query.
pub(super) async fn load_version(
    pool: &PgPool,
    doc: &str,
    id: u64,
) -> Result<Option<(VersionInfo, Vec<u8>)>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {INFO_COLUMNS}, state FROM versions WHERE doc_id = $1 AND id = $2"
    ))
    .bind(doc)
    .bind(id as i64)
    .fetch_optional(pool)
    .await?;
    row.map(|row| Ok((version_info(&row)?, row.try_get::<Vec<u8>, _>(6)?)))
        .transpose()
}

pub(super) async fn delete_version(
    conn: &mut PgConnection,
    doc: &str,
    id: u64,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM versions WHERE doc_id = $1 AND id = $2")
        .bind(doc)
        .bind(id as i64)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Moves a document to the trash at `at_ms`; false if it already is there.
pub(super) async fn trash(
    conn: &mut PgConnection,
    doc: &str,
    at_ms: u64,
) -> Result<bool, StoreError> {
    let secs = (at_ms / 1000) as i64;
    let done = sqlx::query(
        "INSERT INTO documents (id, created_at, updated_at, last_seq, trashed_at)
         VALUES ($1, $2, $3, 0, $4)
         ON CONFLICT(id) DO UPDATE SET trashed_at = excluded.trashed_at
         WHERE documents.trashed_at IS NULL",
    )
    .bind(doc)
    .bind(secs)
    .bind(secs)
    .bind(at_ms as i64)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Brings a document back from the trash; false if it was not there.
pub(super) async fn untrash(conn: &mut PgConnection, doc: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE documents SET trashed_at = NULL WHERE id = $1 AND trashed_at IS NOT NULL",
    )
    .bind(doc)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn list_trash(pool: &PgPool) -> Result<Vec<(String, u64)>, StoreError> {
    sqlx::query(
        "SELECT id, trashed_at FROM documents WHERE trashed_at IS NOT NULL
         ORDER BY trashed_at DESC, id COLLATE \"C\"",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| Ok((row.try_get(0)?, row.try_get::<i64, _>(1)? as u64)))
    .collect()
}

/// Deletes trashed documents trashed at or before `before_ms` (all of `only` when given),
/// with their log, snapshot and versions. Returns the IDs deleted.
pub(super) async fn purge(
    conn: &mut PgConnection,
    only: Option<&str>,
    before_ms: u64,
) -> Result<Vec<String>, StoreError> {
    // BIGINT is signed: "no bound" is the largest of them.
    let before_ms = before_ms.min(i64::MAX as u64) as i64;
    let mut tx = conn.begin().await?;
    let ids: Vec<String> = match only {
        Some(doc) => sqlx::query_scalar(
            "DELETE FROM documents WHERE id = $1 AND trashed_at IS NOT NULL AND trashed_at <= $2
             RETURNING id",
        )
        .bind(doc)
        .bind(before_ms)
        .fetch_all(&mut *tx)
        .await?,
        None => sqlx::query_scalar(
            "DELETE FROM documents WHERE trashed_at IS NOT NULL AND trashed_at <= $1 RETURNING id",
        )
        .bind(before_ms)
        .fetch_all(&mut *tx)
        .await?,
    };
    tx.commit().await?;
    Ok(ids)
}

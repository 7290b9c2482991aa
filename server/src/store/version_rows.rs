//! Rows of the `versions` table as both engines read them (same columns, same types): the
//! part of `sqlite_history.rs` and `postgres_history.rs` that does not depend on the engine.

use quire_protocol::request::{VersionInfo, VersionKind};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::StoreError;
use crate::versions::Kept;

/// The columns [`version_info`] reads, in its order.
pub(super) const INFO_COLUMNS: &str = "id, created_at, kind, name, authors, size";
/// The columns [`kept`] reads, in its order.
pub(super) const KEPT_COLUMNS: &str = "id, created_at, kind, size";

fn kind(byte: i64) -> VersionKind {
    VersionKind::from_byte(byte as u8).unwrap_or(VersionKind::Auto)
}

/// A version's description from a row of [`INFO_COLUMNS`].
pub(super) fn version_info<R>(row: &R) -> Result<VersionInfo, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let authors: String = row.try_get(4)?;
    Ok(VersionInfo {
        id: row.try_get::<i64, _>(0)? as u64,
        created_ms: row.try_get::<i64, _>(1)? as u64,
        kind: kind(row.try_get(2)?),
        name: row.try_get(3)?,
        authors: authors
            .lines()
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        size: row.try_get::<i64, _>(5)? as u64,
    })
}

/// What thinning needs of a version, from a row of [`KEPT_COLUMNS`].
pub(super) fn kept<R>(row: &R) -> Result<Kept, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Kept {
        id: row.try_get::<i64, _>(0)? as u64,
        created_ms: row.try_get::<i64, _>(1)? as u64,
        kind: kind(row.try_get(2)?),
        size: row.try_get::<i64, _>(3)? as u64,
    })
}

//! Looks inside a server's SQLite database from the outside, as an operator would: integrity
//! and the raw update log. Opens its own connection; safe while the server runs (WAL).

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};

async fn connect(db: &Path) -> SqliteConnection {
    let options = SqliteConnectOptions::from_str("sqlite://")
        .expect("sqlite options")
        .filename(db);
    SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|err| panic!("opening {}: {err}", db.display()))
}

/// `PRAGMA integrity_check` on the database file: "ok" when sound.
pub async fn integrity_check(db: &Path) -> String {
    let mut conn = connect(db).await;
    let rows = sqlx::query("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .expect("integrity_check");
    rows.iter()
        .map(|row| row.get::<String, _>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every stored blob of `doc` (the snapshot, if any, then the update log), oldest first.
pub async fn stored_blobs(db: &Path, doc: &str) -> Vec<Vec<u8>> {
    let mut conn = connect(db).await;
    let mut blobs: Vec<Vec<u8>> = sqlx::query("SELECT data FROM snapshots WHERE doc_id = ?")
        .bind(doc)
        .fetch_all(&mut conn)
        .await
        .expect("reading snapshots")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let updates = sqlx::query("SELECT data FROM updates WHERE doc_id = ? ORDER BY seq")
        .bind(doc)
        .fetch_all(&mut conn)
        .await
        .expect("reading updates");
    blobs.extend(updates.iter().map(|row| row.get::<Vec<u8>, _>(0)));
    blobs
}

/// How many rows `table` holds for `doc` (a table with a `doc_id` column).
pub async fn rows_of(db: &Path, table: &str, doc: &str) -> i64 {
    let mut conn = connect(db).await;
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE doc_id = ?"))
        .bind(doc)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|err| panic!("counting {table}: {err}"))
}

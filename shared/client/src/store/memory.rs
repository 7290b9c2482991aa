//! A store that keeps nothing across restarts: for short-lived clients (tests, load tools).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::{LocalAppend, LocalDoc, LocalStore, LocalStoreError};

/// (store ID, update, pending)
type Row = (i64, Vec<u8>, bool);

#[derive(Debug, Default)]
pub struct MemoryStore {
    /// The last ID given out, and each document's rows.
    inner: Mutex<(i64, HashMap<String, Vec<Row>>)>,
}

impl LocalStore for MemoryStore {
    async fn load(&self, doc: &str) -> Result<LocalDoc, LocalStoreError> {
        let inner = self.inner.lock();
        let rows = inner.1.get(doc).cloned().unwrap_or_default();
        Ok(LocalDoc {
            pending: rows.iter().filter(|r| r.2).map(|r| r.0).collect(),
            updates: rows.into_iter().map(|r| r.1).collect(),
        })
    }

    async fn append(&self, batch: &[LocalAppend<'_>]) -> Result<Vec<i64>, LocalStoreError> {
        let mut inner = self.inner.lock();
        let mut ids = Vec::with_capacity(batch.len());
        for append in batch {
            inner.0 += 1;
            let id = inner.0;
            inner.1.entry(append.doc.to_owned()).or_default().push((
                id,
                append.data.to_vec(),
                append.pending,
            ));
            ids.push(id);
        }
        Ok(ids)
    }

    async fn acknowledge(&self, doc: &str, through: i64) -> Result<(), LocalStoreError> {
        if let Some(rows) = self.inner.lock().1.get_mut(doc) {
            rows.iter_mut()
                .filter(|r| r.0 <= through)
                .for_each(|r| r.2 = false);
        }
        Ok(())
    }

    async fn compact(&self, doc: &str, merged: &[u8]) -> Result<bool, LocalStoreError> {
        let mut inner = self.inner.lock();
        inner.0 += 1;
        let id = inner.0;
        let Some(rows) = inner.1.get_mut(doc) else {
            return Ok(false);
        };
        if rows.iter().any(|r| r.2) {
            return Ok(false);
        }
        *rows = vec![(id, merged.to_vec(), false)];
        Ok(true)
    }
}

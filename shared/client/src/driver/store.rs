//! The driver's use of the local store: loading a document into a replica, keeping local
//! edits as pending until the server acknowledges them, keeping the server's updates, and
//! compacting the local log now and then.

use std::collections::VecDeque;

use quire_protocol::DocId;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use super::{DocEntry, Driver};
use crate::document::{DocHandle, DocShared, REMOTE_ORIGIN};
use crate::error::ClientError;
use crate::state::DocState;
use crate::store::{LocalAppend, LocalStore};

/// Compact a document's local log after this many appends, when nothing is pending.
const LOCAL_COMPACT_EVERY: usize = 500;

impl<S: LocalStore> Driver<S> {
    /// Opens a document locally: loads what the store holds into a fresh replica.
    pub(super) async fn load(&mut self, doc: DocId) -> Result<DocHandle, ClientError> {
        if let Some(entry) = self.docs.get(&doc) {
            return Ok(DocHandle {
                shared: entry.shared.clone(),
                commands: self.command_tx.clone(),
            });
        }
        let stored = self.store.load(doc.as_str()).await?;
        let ydoc = Doc::new();
        for bytes in &stored.updates {
            let update = quire_protocol::ysync::decode_update(bytes)
                .map_err(|e| ClientError::Corrupt(e.to_string()))?;
            ydoc.transact_mut_with(REMOTE_ORIGIN)
                .apply_update(update)
                .map_err(|e| ClientError::Corrupt(e.to_string()))?;
        }
        let pending: VecDeque<i64> = stored.pending.into_iter().collect();
        let shared = DocShared::new(
            doc.clone(),
            ydoc,
            DocState::Offline {
                pending: pending.len(),
            },
        );
        shared.observe_local_edits(self.command_tx.clone())?;
        self.docs.insert(
            doc,
            DocEntry {
                shared: shared.clone(),
                pending,
                appended: 0,
            },
        );
        Ok(DocHandle {
            shared,
            commands: self.command_tx.clone(),
        })
    }

    /// Stores a local edit as pending. Returns its store ID.
    pub(super) async fn store_local(&mut self, doc: &DocId, data: &[u8]) -> Option<i64> {
        if !self.docs.contains_key(doc) {
            return None;
        }
        let append = LocalAppend {
            doc: doc.as_str(),
            data,
            pending: true,
        };
        let id = match self.store.append(&[append]).await {
            Ok(ids) => ids.first().copied(),
            Err(err) => {
                // The edit is still in memory and will reach the server; only the crash
                // protection is lost for it.
                tracing::error!(error = %err, "local store append failed");
                None
            }
        };
        let entry = self.docs.get_mut(doc)?;
        if let Some(id) = id {
            entry.pending.push_back(id);
            entry.appended += 1;
        }
        id
    }

    /// Stores an update received from the server (not pending).
    pub(super) async fn store_remote(&mut self, doc: &DocId, update: &[u8]) {
        if let Err(err) = self
            .store
            .append(&[LocalAppend {
                doc: doc.as_str(),
                data: update,
                pending: false,
            }])
            .await
        {
            tracing::error!(error = %err, "local store append failed");
        }
        if let Some(entry) = self.docs.get_mut(doc) {
            entry.appended += 1;
        }
        self.maybe_compact(doc).await;
    }

    /// Marks local edits up to `through` durable on the server.
    pub(super) async fn acknowledge(&mut self, doc: &DocId, through: i64) {
        let Some(entry) = self.docs.get_mut(doc) else {
            return;
        };
        while entry.pending.front().is_some_and(|id| *id <= through) {
            entry.pending.pop_front();
        }
        if let Err(err) = self.store.acknowledge(doc.as_str(), through).await {
            tracing::error!(error = %err, "local store acknowledge failed");
        }
    }

    async fn maybe_compact(&mut self, doc: &DocId) {
        let Some(entry) = self.docs.get_mut(doc) else {
            return;
        };
        if entry.appended < LOCAL_COMPACT_EVERY || !entry.pending.is_empty() {
            return;
        }
        entry.appended = 0;
        let merged = entry
            .shared
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        if let Err(err) = self.store.compact(doc.as_str(), &merged).await {
            tracing::warn!(error = %err, "local compaction failed");
        }
    }
}

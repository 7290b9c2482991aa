//! What a room's document was built from: what storage held when it was loaded (or its state
//! when the history was last folded) and every update accepted since, raw. yrs can fail part
//! way through applying an update (an error or a panic after some of it is integrated) and has
//! no rollback; the room then rebuilds its document from this history, so that memory holds
//! exactly what storage holds and a refused update leaves nothing behind.

use std::panic::{catch_unwind, AssertUnwindSafe};

use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::store::StoredDoc;

/// Fold the accepted updates into one state once there are this many, or this many bytes and
/// at least as many as the base holds. A fold encodes the whole document and holds that
/// encoding next to the old base for a moment: in fixed steps, a document growing by appends
/// would pay that again and again (O(n²) in all); in steps that double, it pays it about twice.
const FOLD_AFTER_UPDATES: usize = 1024;
const FOLD_AFTER_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct History {
    /// The stored snapshot and log at load, or the document's whole state at the last fold.
    base: Vec<Vec<u8>>,
    /// Bytes of `base`, kept: the room asks for the history's size after every update.
    base_bytes: usize,
    /// Updates accepted since, in the order they were applied.
    since: Vec<Vec<u8>>,
    since_bytes: usize,
}

impl History {
    /// The history of a document just loaded from `stored` (kept as stored: no encoding).
    pub fn from_stored(stored: StoredDoc) -> Self {
        let base: Vec<Vec<u8>> = stored.snapshot.into_iter().chain(stored.updates).collect();
        Self {
            base_bytes: base.iter().map(Vec::len).sum(),
            base,
            since: Vec::new(),
            since_bytes: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.base_bytes + self.since_bytes
    }

    /// Starts over from `doc`'s current state.
    fn fold(&mut self, doc: &Doc) {
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        self.base_bytes = state.len();
        self.base = vec![state];
        self.since.clear();
        self.since_bytes = 0;
    }

    /// Records an accepted update; folds the history into `doc`'s state when it grows long
    /// (an O(document) encoding: every thousand updates, or as the document doubles).
    pub fn accepted(&mut self, raw_update: &[u8], doc: &Doc) {
        self.since.push(raw_update.to_vec());
        self.since_bytes += raw_update.len();
        if self.since.len() >= FOLD_AFTER_UPDATES
            || self.since_bytes >= FOLD_AFTER_BYTES.max(self.base_bytes)
        {
            self.fold(doc);
        }
    }

    /// A new document holding exactly the history: the base, then each accepted update in its
    /// own transaction, as when they were first applied.
    pub fn rebuild(&self) -> Doc {
        let doc = Doc::new();
        for bytes in self.base.iter().chain(self.since.iter()) {
            let Ok(update) = Update::decode_v1(bytes) else {
                continue; // it decoded when accepted; unreachable in practice
            };
            let mut txn = doc.transact_mut();
            // Each of these applied cleanly before, so it does again: the same updates in the
            // same order give the same result.
            let _ = catch_unwind(AssertUnwindSafe(|| txn.apply_update(update)));
        }
        doc
    }
}

//! What a room's document was built from: what storage held when it was loaded (or its state
//! when the history was last folded) and every update accepted since, raw. yrs can fail part
//! way through applying an update (an error or a panic after some of it is integrated) and has
//! no rollback; the room then rebuilds its document from this history, so that memory holds
//! exactly what storage holds and a refused update leaves nothing behind.

use std::panic::{catch_unwind, AssertUnwindSafe};

use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::store::StoredDoc;

/// A fold encodes the whole document (work in proportion to its blocks, whatever their bytes)
/// and holds that encoding next to the old base for a moment. It happens once the updates since
/// the last fold cost as much as the base, and at least [`FOLD_AFTER_COST`]: a document growing
/// by large updates folds in steps that double (it pays its encoding about twice in all), and a
/// run of small edits folds every 14,000 or so (72 bytes each with their overhead). Folding
/// every 1,024 updates encoded the B4 trace's document 254 times, an eighth of the server's
/// time on that trace (docs/BENCHMARKS.md, F0); the megabyte this allows instead is small
/// beside the document's own memory, and a rebuild replays it in some tens of milliseconds.
const FOLD_AFTER_COST: usize = 1024 * 1024;
/// What an update kept in `since` costs beyond its bytes: its `Vec` (24 bytes) and the
/// allocator's header and rounding, about as much again.
const ENTRY_COST: usize = 48;

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

    /// Bytes held, with what each update kept since the last fold costs beyond its bytes.
    pub fn bytes(&self) -> usize {
        self.base_bytes + self.since_cost()
    }

    fn since_cost(&self) -> usize {
        self.since_bytes + self.since.len() * ENTRY_COST
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

    /// Records an accepted update; folds the history into `doc`'s state once the updates since
    /// the last fold cost as much as the base (an O(document) encoding, paid for by as many
    /// bytes of updates).
    pub fn accepted(&mut self, raw_update: &[u8], doc: &Doc) {
        self.since.push(raw_update.to_vec());
        self.since_bytes += raw_update.len();
        if self.since_cost() >= FOLD_AFTER_COST.max(self.base_bytes) {
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

#[cfg(test)]
mod tests {
    use yrs::{GetString, Text};

    use super::*;

    /// Types `count` characters one edit at a time, each recorded as the room records it.
    fn type_into(history: &mut History, doc: &Doc, count: usize) {
        let text = doc.get_or_insert_text("content");
        for i in 0..count {
            let before = doc.transact().state_vector();
            text.insert(&mut doc.transact_mut(), i as u32, "x");
            let update = doc.transact().encode_state_as_update_v1(&before);
            history.accepted(&update, doc);
        }
    }

    #[test]
    fn small_edits_fold_once_they_cost_a_megabyte_and_rebuild_to_the_same_text() {
        let doc = Doc::new();
        let mut history = History::default();
        type_into(&mut history, &doc, 30_000);
        // Folded at least once (30,000 edits cost well over a megabyte), and what is kept
        // since stays under the bound.
        assert!(history.since.len() < 30_000);
        assert!(history.since_cost() < FOLD_AFTER_COST.max(history.base_bytes));
        assert!(history.bytes() < 2 * FOLD_AFTER_COST + history.base_bytes);
        let rebuilt = history.rebuild();
        let text = |doc: &Doc| {
            doc.get_or_insert_text("content")
                .get_string(&doc.transact())
        };
        assert_eq!(text(&rebuilt), text(&doc));
    }

    #[test]
    fn a_document_growing_by_large_updates_folds_as_it_doubles() {
        let doc = Doc::new();
        let mut history = History::default();
        let text = doc.get_or_insert_text("content");
        let chunk = "y".repeat(256 * 1024);
        let mut folds = 0;
        for _ in 0..64 {
            let before = doc.transact().state_vector();
            let end = text.len(&doc.transact());
            text.insert(&mut doc.transact_mut(), end, &chunk);
            let update = doc.transact().encode_state_as_update_v1(&before);
            let kept = history.since.len();
            history.accepted(&update, &doc);
            if history.since.len() <= kept {
                folds += 1;
            }
        }
        // 16 MiB in 64 steps: folds at 1, 2, 4, 8 MiB and so on, not at every megabyte.
        assert!((3..=6).contains(&folds), "{folds} folds");
    }
}

//! The registry's table of loaded rooms, found by each room's own document ID. A map keyed
//! by `DocId` would hold every ID twice, as its key and in its room: 24 more bytes per slot
//! and a heap copy of the name per loaded document (docs/BENCHMARKS.md, S7).

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use quire_protocol::DocId;

use crate::room_task::RoomHandle;

/// A loaded room, and how many channels hold it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub handle: RoomHandle,
    pub refs: usize,
}

impl Entry {
    fn doc(&self) -> &str {
        self.handle.room().id.as_str()
    }
}

#[derive(Debug, Default)]
pub(crate) struct RoomTable {
    entries: HashTable<Entry>,
    hasher: RandomState,
}

impl RoomTable {
    pub(crate) fn get(&self, doc: &DocId) -> Option<&Entry> {
        self.entries
            .find(self.hash(doc.as_str()), |entry| entry.doc() == doc.as_str())
    }

    pub(crate) fn get_mut(&mut self, doc: &DocId) -> Option<&mut Entry> {
        let hash = self.hash(doc.as_str());
        self.entries
            .find_mut(hash, |entry| entry.doc() == doc.as_str())
    }

    /// The entry of `doc`, made by `make` if there is none. `make` must return an entry for
    /// a room of `doc`.
    pub(crate) fn get_or_insert_with(
        &mut self,
        doc: &DocId,
        make: impl FnOnce() -> Entry,
    ) -> &mut Entry {
        let hash = self.hash(doc.as_str());
        let hasher = &self.hasher;
        let entry = self
            .entries
            .entry(
                hash,
                |entry| entry.doc() == doc.as_str(),
                |entry| hasher.hash_one(entry.doc()),
            )
            .or_insert_with(make)
            .into_mut();
        debug_assert_eq!(entry.doc(), doc.as_str());
        entry
    }

    pub(crate) fn remove(&mut self, doc: &DocId) -> Option<Entry> {
        let hash = self.hash(doc.as_str());
        let found = self
            .entries
            .find_entry(hash, |entry| entry.doc() == doc.as_str());
        found.ok().map(|entry| entry.remove().0)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    fn hash(&self, doc: &str) -> u64 {
        self.hasher.hash_one(doc)
    }
}

//! The registry of rooms in memory. The first channel to open a document creates its room and
//! starts the room's task, which loads it from storage before any other work; every channel
//! holding the room counts as a reference, under the registry's lock. The room's task unloads
//! it once it has been unused for the idle delay and everything it received is durable
//! ([`crate::room_task`]); reopening an unloaded document loads it afresh.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quire_protocol::DocId;
use tokio::sync::{mpsc, Semaphore};

use crate::fanout::{Publisher, Remote};
use crate::memory::{MemoryBudget, Unloader};
use crate::metrics::Metrics;
use crate::persist::Persister;
use crate::room::Room;
use crate::room_task::{self, Registry, RoomHandle, RoomJob};
use crate::store::Store;
use crate::versions::HistoryPolicy;

#[derive(Debug)]
struct Entry {
    handle: RoomHandle,
    /// Channels holding the room.
    refs: usize,
}

#[derive(Debug)]
pub struct Rooms<S> {
    map: Mutex<HashMap<DocId, Entry>>,
    store: Arc<S>,
    persister: Persister,
    idle_unload: Duration,
    metrics: Arc<Metrics>,
    memory: Arc<MemoryBudget>,
    history: HistoryPolicy,
    /// Redis, to tell other servers of a shared database about presence.
    fanout: Option<Publisher>,
    /// Loads in progress at once (see [`LOADS_AT_ONCE`]).
    loads: Semaphore,
}

/// Documents loaded at once. Each room loads on its own task, so a client opening 1,000
/// documents starts 1,000 loads; past the store's few read connections they would only wait
/// there, each holding its query's state meanwhile (docs/BENCHMARKS.md, S7). Waiting for a
/// slot costs almost nothing.
const LOADS_AT_ONCE: usize = 8;

/// While Redis brings other servers' updates, the database is checked this many times less
/// often: the check then only catches what pub/sub lost.
const REDIS_CHECK_FACTOR: u32 = 8;

impl<S: Store> Rooms<S> {
    pub fn new(
        store: Arc<S>,
        persister: Persister,
        idle_unload: Duration,
        metrics: Arc<Metrics>,
        memory: Arc<MemoryBudget>,
    ) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            store,
            persister,
            idle_unload,
            metrics,
            memory,
            history: HistoryPolicy::default(),
            fanout: None,
            loads: Semaphore::new(LOADS_AT_ONCE),
        }
    }

    /// Publishes presence to the other servers through `fanout`.
    pub fn with_fanout(mut self, fanout: Option<Publisher>) -> Self {
        self.fanout = fanout;
        self
    }

    /// Sets the version policy (the default until called).
    pub fn with_history(mut self, history: HistoryPolicy) -> Self {
        self.history = history;
        self
    }

    /// Queues `job` on the document's room if it is loaded (or loading); false if it is not.
    pub(crate) fn submit_if_loaded(&self, doc: &DocId, job: RoomJob) -> bool {
        self.map
            .lock()
            .get(doc)
            .is_some_and(|entry| entry.handle.submit(job))
    }

    /// Takes a reference on the document's room, creating it (and starting its load) on first
    /// use. Never waits: the load happens in the room's task, ahead of the jobs queued on it.
    /// `None` if the document is not loaded and the memory budget is exceeded: loading it
    /// would grow the process (the channel is refused with 4503).
    pub fn acquire(self: &Arc<Self>, doc: &DocId) -> Option<RoomHandle> {
        let mut map = self.map.lock();
        if !map.contains_key(doc) && self.memory.is_over() {
            self.memory.count_refusal();
            return None;
        }
        let entry = map.entry(doc.clone()).or_insert_with(|| {
            self.metrics
                .documents_loaded
                .fetch_add(1, Ordering::Relaxed);
            let room = Arc::new(Room::with_budget(doc.clone(), &self.memory));
            Entry {
                handle: room_task::start(self.clone(), room),
                refs: 0,
            }
        });
        entry.refs += 1;
        Some(entry.handle.clone())
    }

    /// Drops a reference taken by [`Rooms::acquire`].
    pub fn release(&self, handle: &RoomHandle) {
        let mut map = self.map.lock();
        if let Some(entry) = map.get_mut(&handle.room().id) {
            if Arc::ptr_eq(entry.handle.room(), handle.room()) {
                entry.refs = entry.refs.saturating_sub(1);
            }
        }
    }
}

impl<S: Store> Rooms<S> {
    /// Follows what other servers store in a shared database: every `every` (every
    /// [`REDIS_CHECK_FACTOR`] times that while Redis brings their updates), compares each loaded
    /// document's last stored number with what its room holds, and has the rooms that are
    /// behind read and relay the rest ([`RoomJob::CatchUp`]). One query per check, whatever
    /// the number of loaded documents. Runs until the server stops.
    pub async fn follow_shared_store(self: Arc<Self>, every: Duration) {
        let mut skipped = 0;
        loop {
            tokio::time::sleep(every).await;
            // Decided at each tick: when Redis goes down, the fast rate starts at once.
            skipped += 1;
            if self.metrics.redis_up() && skipped < REDIS_CHECK_FACTOR {
                continue;
            }
            skipped = 0;
            let loaded: Vec<RoomHandle> = self
                .map
                .lock()
                .values()
                .map(|entry| entry.handle.clone())
                .collect();
            if loaded.is_empty() {
                continue;
            }
            let ids: Vec<&str> = loaded.iter().map(|h| h.room().id.as_str()).collect();
            let heads = match self.store.heads(&ids).await {
                Ok(heads) => heads,
                Err(err) => {
                    tracing::warn!(error = %err, "checking other servers' updates failed");
                    continue;
                }
            };
            let heads: HashMap<String, i64> = heads.into_iter().collect();
            for handle in &loaded {
                let room = handle.room();
                if heads.get(room.id.as_str()).copied().unwrap_or(0) > room.seen_through() {
                    handle.submit(RoomJob::CatchUp);
                }
            }
        }
    }
}

impl<S: Store> Rooms<S> {
    /// Hands what other servers publish through Redis to the rooms, if loaded here; the
    /// rest is dropped (whoever loads a document reads it from the database, and presence of
    /// documents nobody here has open matters to nobody here). Runs until the stream ends.
    pub async fn follow_fanout(self: Arc<Self>, mut updates: mpsc::Receiver<Remote>) {
        while let Some(remote) = updates.recv().await {
            let (doc, job) = match remote {
                Remote::Update(update) => (
                    update.doc,
                    RoomJob::Remote {
                        seq: update.seq,
                        update: update.update,
                    },
                ),
                Remote::Awareness { doc, payload } => (doc, RoomJob::RemoteAwareness(payload)),
            };
            if let Ok(doc) = DocId::parse(&doc, u32::MAX) {
                self.submit_if_loaded(&doc, job);
            }
        }
    }

    /// Drops, in every loaded room, the presence other servers relayed and nobody renewed
    /// within `timeout`: every `every`, until the server stops.
    pub async fn expire_remote_awareness(self: Arc<Self>, every: Duration, timeout: Duration) {
        loop {
            tokio::time::sleep(every).await;
            for entry in self.map.lock().values() {
                entry.handle.submit(RoomJob::ExpireAwareness(timeout));
            }
        }
    }
}

impl<S: Store> Unloader for Rooms<S> {
    fn unload_unused(&self) {
        for entry in self.map.lock().values() {
            if entry.refs == 0 {
                entry.handle.submit(RoomJob::UnloadIfUnused);
            }
        }
    }
}

impl<S: Store> Registry for Rooms<S> {
    type Store = S;

    fn load_slots(&self) -> &Semaphore {
        &self.loads
    }

    /// Removes `room` if no channel holds it; true if it was removed (or already gone).
    fn unload_if_unused(&self, room: &Arc<Room>) -> bool {
        let mut map = self.map.lock();
        match map.get(&room.id) {
            Some(entry) if Arc::ptr_eq(entry.handle.room(), room) => {
                if entry.refs > 0 {
                    return false;
                }
                map.remove(&room.id);
                self.metrics
                    .documents_loaded
                    .fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(doc = %room.id, "unloaded idle document");
                true
            }
            _ => true,
        }
    }

    /// Removes `room` whatever holds it (its load failed): the next opener starts afresh.
    fn forget(&self, room: &Arc<Room>) {
        let mut map = self.map.lock();
        if map
            .get(&room.id)
            .is_some_and(|entry| Arc::ptr_eq(entry.handle.room(), room))
        {
            map.remove(&room.id);
            self.metrics
                .documents_loaded
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn store(&self) -> &Arc<S> {
        &self.store
    }

    fn persister(&self) -> &Persister {
        &self.persister
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn idle_unload(&self) -> Duration {
        self.idle_unload
    }

    fn history(&self) -> &HistoryPolicy {
        &self.history
    }

    fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    fn fanout(&self) -> Option<&Publisher> {
        self.fanout.as_ref()
    }
}

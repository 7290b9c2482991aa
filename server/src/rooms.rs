//! The registry of rooms in memory. The first channel to open a document creates its room and
//! starts the room's task, which loads it from storage before any other work; every channel
//! holding the room counts as a reference, under the registry's lock. The room's task unloads
//! it once it has been unused for the idle delay and everything it received is durable
//! ([`crate::room_task`]); reopening an unloaded document loads it afresh.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quire_protocol::DocId;
use tokio::sync::{mpsc, oneshot};

use crate::divergence::HeldDigest;
use crate::fanout::{Publisher, Remote};
use crate::memory::{MemoryBudget, Unloader};
use crate::metrics::Metrics;
use crate::persist::Persister;
use crate::room::Room;
use crate::room_table::{Entry, RoomTable};
use crate::room_task::{self, Registry, RoomHandle, RoomJob, Worker};
use crate::store::Store;
use crate::turns::Turns;
use crate::versions::HistoryPolicy;

#[derive(Debug)]
pub struct Rooms<S> {
    map: Mutex<RoomTable>,
    store: Arc<S>,
    persister: Persister,
    idle_unload: Duration,
    metrics: Arc<Metrics>,
    memory: Arc<MemoryBudget>,
    history: HistoryPolicy,
    /// Redis, to tell other servers of a shared database about presence.
    fanout: Option<Publisher>,
    /// Loads in progress at once (see [`LOADS_AT_ONCE`]), and the rooms waiting to load.
    loads: Turns<RoomHandle>,
    /// On a shared store: how often at most a quiet document is compared with the store.
    digest_check: Option<Duration>,
    /// Starts the rooms' tasks; made with the first room (it needs the registry's `Arc`).
    worker: OnceLock<Worker>,
}

/// Documents loaded at once. Each room loads on its own task, so a client opening 1,000
/// documents starts 1,000 loads; past the store's few read connections they would only wait
/// there, each holding its query's state meanwhile (docs/BENCHMARKS.md, S7). Waiting for a
/// turn costs almost nothing: the room waits in a queue, with no task.
const LOADS_AT_ONCE: usize = 8;

/// A document whose stored head has not moved for this long, and whose room holds everything
/// through it, is quiet: its room can be compared with the store.
const QUIET: Duration = Duration::from_secs(1);

/// Where a loaded document stands for the digest comparison.
#[derive(Debug)]
struct Quiet {
    /// The stored head, and since when it has not moved.
    head: i64,
    since: Instant,
    /// The head last compared, and when.
    compared: Option<(i64, Instant)>,
}

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
            map: Mutex::new(RoomTable::default()),
            store,
            persister,
            idle_unload,
            metrics,
            memory,
            history: HistoryPolicy::default(),
            fanout: None,
            loads: Turns::new(LOADS_AT_ONCE),
            digest_check: None,
            worker: OnceLock::new(),
        }
    }

    /// Compares each quiet document with the shared store at most once per `every`
    /// ([`Rooms::follow_shared_store`]); never when `None`.
    pub fn with_digest_check(mut self, every: Option<Duration>) -> Self {
        self.digest_check = every;
        self
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
        if map.get(doc).is_none() && self.memory.is_over() {
            self.memory.count_refusal();
            return None;
        }
        let entry = map.get_or_insert_with(doc, || {
            self.metrics
                .documents_loaded
                .fetch_add(1, Ordering::Relaxed);
            if let Some(fanout) = &self.fanout {
                fanout.follow(doc.as_str());
            }
            let room = Arc::new(Room::with_budget(doc.clone(), &self.memory));
            Entry {
                handle: room_task::start(self.worker.get_or_init(|| room_task::worker(self)), room),
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
    /// the number of loaded documents. Documents that are quiet are compared with the store
    /// now and then ([`Rooms::with_digest_check`]). Runs until the server stops.
    pub async fn follow_shared_store(self: Arc<Self>, every: Duration) {
        let mut skipped = 0;
        let mut quiet: HashMap<DocId, Quiet> = HashMap::new();
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
            let now = Instant::now();
            for handle in &loaded {
                let room = handle.room();
                let head = heads.get(room.id.as_str()).copied().unwrap_or(0);
                if head > room.seen_through() {
                    handle.submit(RoomJob::CatchUp);
                } else if let Some(interval) = self.digest_check {
                    // A comparison rebuilds the document beside the room: not while memory is
                    // short.
                    if !self.memory.is_over()
                        && quiet_enough(&mut quiet, &room.id, head, now, interval)
                    {
                        handle.submit(RoomJob::CompareWithStore { head });
                    }
                }
            }
            quiet.retain(|doc, _| loaded.iter().any(|handle| handle.room().id == *doc));
        }
    }

    /// The digests of the loaded documents that `wants`, each once everything its room
    /// applied before is stored (`/digests`).
    pub async fn digests(&self, wants: impl Fn(&DocId) -> bool) -> Vec<(DocId, HeldDigest)> {
        let asked: Vec<_> = {
            let map = self.map.lock();
            map.values()
                .filter(|entry| wants(&entry.handle.room().id))
                .filter_map(|entry| {
                    let (tx, rx) = oneshot::channel();
                    entry
                        .handle
                        .submit(RoomJob::Digest(tx))
                        .then(|| (entry.handle.room().id.clone(), rx))
                })
                .collect()
        };
        let mut digests = Vec::with_capacity(asked.len());
        for (doc, answer) in asked {
            // A room whose load failed drops the job: it holds nothing to compare.
            if let Ok(held) = answer.await {
                digests.push((doc, held));
            }
        }
        digests
    }
}

/// Whether the document at stored `head` has been quiet long enough, and not compared
/// within `interval`, to be compared now; notes the comparison if so.
fn quiet_enough(
    quiet: &mut HashMap<DocId, Quiet>,
    doc: &DocId,
    head: i64,
    now: Instant,
    interval: Duration,
) -> bool {
    let entry = quiet.entry(doc.clone()).or_insert(Quiet {
        head,
        since: now,
        compared: None,
    });
    if entry.head != head {
        entry.head = head;
        entry.since = now;
        return false;
    }
    let due = match entry.compared {
        Some((compared, at)) => compared != head && now.duration_since(at) >= interval,
        None => true,
    };
    // Nothing stored: nothing to compare.
    if head == 0 || !due || now.duration_since(entry.since) < QUIET {
        return false;
    }
    entry.compared = Some((head, now));
    true
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
                Remote::Subscribed(doc) => (doc, RoomJob::CatchUp),
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

    fn loads(&self) -> &Turns<RoomHandle> {
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
                if let Some(fanout) = &self.fanout {
                    fanout.unfollow(room.id.as_str());
                }
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
            if let Some(fanout) = &self.fanout {
                fanout.unfollow(room.id.as_str());
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_compared_once_quiet_and_again_only_after_its_head_moves() {
        let doc = DocId::parse("d", 16).unwrap();
        let interval = Duration::from_secs(60);
        let mut quiet = HashMap::new();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        // First seen at head 5: not quiet yet; a second later it is.
        assert!(!quiet_enough(&mut quiet, &doc, 5, at(0), interval));
        assert!(quiet_enough(&mut quiet, &doc, 5, at(1), interval));
        // Compared at 5: not again at 5, however long it stays there.
        assert!(!quiet_enough(&mut quiet, &doc, 5, at(500), interval));
        // The head moves: compared again once quiet for a second.
        assert!(!quiet_enough(&mut quiet, &doc, 6, at(501), interval));
        assert!(quiet_enough(&mut quiet, &doc, 6, at(502), interval));
        // It moves again soon after: quiet, but within the interval of the last comparison.
        assert!(!quiet_enough(&mut quiet, &doc, 7, at(510), interval));
        assert!(!quiet_enough(&mut quiet, &doc, 7, at(511), interval));
        assert!(!quiet_enough(&mut quiet, &doc, 7, at(561), interval));
        assert!(quiet_enough(&mut quiet, &doc, 7, at(562), interval));
        // Nothing stored: nothing to compare.
        let empty = DocId::parse("e", 16).unwrap();
        assert!(!quiet_enough(&mut quiet, &empty, 0, at(0), interval));
        assert!(!quiet_enough(&mut quiet, &empty, 0, at(10), interval));
    }
}

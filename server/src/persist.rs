//! The persister: one task that makes writes durable with group commit. Connections hand it
//! jobs in arrival order; once a job arrives it waits the commit window for more, takes
//! everything waiting, stores it in one SQLite transaction (one fsync for many updates of
//! many documents), and only after the commit acknowledges
//! each channel's writes with ACK. A failed commit acknowledges nothing and closes the
//! affected channels with 4500. It also triggers background compaction.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_protocol::{ChannelCode, ChannelId, ConnId};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::fanout::Publisher;
use crate::metrics::Metrics;
use crate::outbox::{ConnEvent, ConnHandle};
use crate::room::{merge_stored, Room};
use crate::store::{Append, Store};

/// Most jobs in one commit.
const MAX_BATCH: usize = 4096;
/// A batch this large commits at once, without waiting out the commit window.
const FULL_ENOUGH: usize = 64;

/// Where an acknowledgement goes.
#[derive(Debug)]
pub struct AckTarget {
    pub conn: ConnHandle,
    pub channel: ChannelId,
    /// The channel's opening on its connection (see `ConnHandle::send_ack`).
    pub generation: u64,
    pub seq: u64,
}

#[derive(Debug)]
pub enum Job {
    /// A write: `data` to store (None when it brought nothing new), and whom to acknowledge
    /// (nobody for the server's own edits: a restore).
    Write {
        room: Arc<Room>,
        data: Option<Vec<u8>>,
        ack: Option<AckTarget>,
        received: Instant,
    },
    /// Resolves once every job queued before it is committed (or failed).
    Barrier(oneshot::Sender<()>),
}

/// When to compact a document's log into a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct CompactionPolicy {
    pub after_updates: u64,
}

#[derive(Debug, Clone)]
pub struct Persister {
    tx: mpsc::Sender<Job>,
}

impl Persister {
    /// Starts the writer task. It ends when every `Persister` clone is dropped and the queue
    /// is drained.
    pub fn start<S: Store>(
        store: Arc<S>,
        metrics: Arc<Metrics>,
        policy: CompactionPolicy,
        depth: usize,
        commit_window: Duration,
        fanout: Option<Publisher>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(depth);
        let task = tokio::spawn(run(store, metrics, policy, commit_window, fanout, rx));
        (Self { tx }, task)
    }

    /// Reserves a place in the queue for one write; waits when the writer is behind
    /// (backpressure on the sender). `None` once the persister is gone.
    ///
    /// The place is reserved before the write is applied and filled while the room is still
    /// locked ([`crate::room::Room::try_apply`]), so each room's writes are queued, and committed,
    /// in the order they were applied. Otherwise a client could build on another's update,
    /// have its own acknowledged, and lose it after a crash to the missing dependency.
    pub async fn reserve(&self) -> Option<Slot> {
        self.tx.clone().reserve_owned().await.ok().map(Slot)
    }

    /// [`Persister::reserve`] without waiting: `None` when the queue is full (or the
    /// persister is gone).
    pub fn try_reserve(&self) -> Option<Slot> {
        self.tx.clone().try_reserve_owned().ok().map(Slot)
    }

    /// Waits until everything queued so far is committed or failed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A place in the persister's queue, see [`Persister::reserve`].
#[derive(Debug)]
pub struct Slot(mpsc::OwnedPermit<Job>);

impl Slot {
    /// Queues a write in the reserved place, without waiting.
    pub fn submit(self, job: Job) {
        self.0.send(job);
    }
}

async fn run<S: Store>(
    store: Arc<S>,
    metrics: Arc<Metrics>,
    policy: CompactionPolicy,
    commit_window: Duration,
    fanout: Option<Publisher>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut batch = Vec::with_capacity(64);
    let compactions = Arc::new(Semaphore::new(1));
    while let Some(first) = rx.recv().await {
        // Writes a millisecond apart would each pay for a commit and its fsync (most of the
        // CPU an update costs at moderate load); waiting a little lets them share one. Under
        // heavy load the writes queued during the last commit already fill a batch: then
        // waiting would only add latency.
        let deadline = tokio::time::Instant::now() + commit_window;
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) if commit_window.is_zero() || batch.len() >= FULL_ENOUGH => break,
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        commit_batch(
            &store,
            &metrics,
            policy,
            &compactions,
            fanout.as_ref(),
            &mut batch,
        )
        .await;
    }
}

async fn commit_batch<S: Store>(
    store: &Arc<S>,
    metrics: &Metrics,
    policy: CompactionPolicy,
    compactions: &Arc<Semaphore>,
    fanout: Option<&Publisher>,
    batch: &mut Vec<Job>,
) {
    // Rooms whose earlier commit failed store their full state once instead of a delta.
    let mut snapshots: HashMap<usize, Vec<u8>> = HashMap::new();
    for job in batch.iter() {
        if let Job::Write { room, .. } = job {
            if room.needs_snapshot.load(Ordering::Acquire) {
                snapshots
                    .entry(Arc::as_ptr(room) as usize)
                    .or_insert_with(|| room.encode_state());
            }
        }
    }
    let mut appends = Vec::new();
    // The room each append came from, to record what its updates were numbered.
    let mut owners: Vec<&Room> = Vec::new();
    let mut snapshot_done: Vec<usize> = Vec::new();
    for job in batch.iter() {
        let Job::Write { room, data, .. } = job else {
            continue;
        };
        let key = Arc::as_ptr(room) as usize;
        if let Some(full) = snapshots.get(&key) {
            if !snapshot_done.contains(&key) {
                snapshot_done.push(key);
                appends.push(Append {
                    doc: room.id.as_str(),
                    data: full,
                });
                owners.push(room);
            }
        } else if let Some(data) = data {
            appends.push(Append {
                doc: room.id.as_str(),
                data,
            });
            owners.push(room);
        }
    }
    let started = Instant::now();
    let result = store.append_batch(&appends).await;
    metrics.commit_duration.observe(started.elapsed());
    let stored = appends.len() as u64;
    if let Ok(seqs) = &result {
        for ((append, room), &seq) in appends.iter().zip(&owners).zip(seqs) {
            room.stored_through.fetch_max(seq, Ordering::AcqRel);
            room.note_stored(seq);
            // The other servers sharing the store learn of it (after the commit).
            if let Some(fanout) = fanout {
                fanout.publish(append.doc, seq, append.data);
            }
        }
    }
    drop(appends);
    drop(owners);
    let now = Instant::now();
    match &result {
        Ok(_) => {
            metrics.commits.fetch_add(1, Ordering::Relaxed);
            metrics
                .updates_persisted
                .fetch_add(stored, Ordering::Relaxed);
        }
        Err(err) => {
            metrics.storage_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %err, jobs = batch.len(), "storage commit failed; writes not acknowledged");
        }
    }
    // Cumulative acks: one per (connection, channel, opening), the highest sequence number.
    let mut acks: HashMap<(ConnId, ChannelId, u64), (ConnHandle, u64)> = HashMap::new();
    let mut failed: HashMap<(ConnId, ChannelId, u64), ConnHandle> = HashMap::new();
    let mut touched: Vec<Arc<Room>> = Vec::new();
    // Barriers resolve only once the acks are queued, so that a connection flushing before
    // its close sends them ahead of the Close frame.
    let mut barriers = Vec::new();
    for job in batch.drain(..) {
        match job {
            Job::Write {
                room,
                data,
                ack,
                received,
            } => {
                let key = ack
                    .as_ref()
                    .map(|ack| (ack.conn.id(), ack.channel, ack.generation));
                if result.is_ok() {
                    if let (Some(key), Some(ack)) = (key, ack) {
                        metrics.durable_ack.observe(now - received);
                        let entry = acks.entry(key).or_insert((ack.conn, 0));
                        entry.1 = entry.1.max(ack.seq);
                    }
                    if data.is_some() {
                        room.log_updates.fetch_add(1, Ordering::Relaxed);
                    }
                    if snapshots.contains_key(&(Arc::as_ptr(&room) as usize)) {
                        room.needs_snapshot.store(false, Ordering::Release);
                    }
                } else {
                    room.needs_snapshot.store(true, Ordering::Release);
                    if let (Some(key), Some(ack)) = (key, ack) {
                        failed.insert(key, ack.conn);
                    }
                }
                if !touched.iter().any(|r| Arc::ptr_eq(r, &room)) {
                    touched.push(room);
                }
            }
            Job::Barrier(done) => barriers.push(done),
        }
    }
    for ((_, channel, generation), (conn, seq)) in acks {
        conn.send_ack(channel, generation, seq);
    }
    for ((_, channel, generation), conn) in failed {
        conn.event(ConnEvent::CloseChannel {
            channel,
            generation,
            code: ChannelCode::StorageFailure,
        });
    }
    for done in barriers {
        let _ = done.send(());
    }
    for room in touched {
        maybe_compact(store, policy, compactions, room);
    }
}

/// Compacts a room's log in the background once it is long enough. The snapshot is the
/// room's document as it is in memory, and it replaces the log through the last number this
/// room's own updates got: each was applied before it was committed, and whatever was stored
/// before was loaded into the room, so the state holds all of it. (Another instance of the
/// room, loaded after this one was unloaded, only stores larger numbers.) Encoding what
/// memory holds costs a fraction of merging the stored log into a fresh document, which on a
/// busy server took a quarter of its core and delayed the commits behind it.
///
/// On a store other servers write too ([`Store::shared`]), the room may lack their updates,
/// so the compaction merges what is stored instead.
///
/// One compaction runs at a time: documents edited at the same pace reach the threshold
/// together, and a hundred compactions queued on the one writer connection hold the commits
/// behind them (and every ACK) back.
fn maybe_compact<S: Store>(
    store: &Arc<S>,
    policy: CompactionPolicy,
    compactions: &Arc<Semaphore>,
    room: Arc<Room>,
) {
    if room.log_updates.load(Ordering::Relaxed) < policy.after_updates {
        return;
    }
    if room.compacting.swap(true, Ordering::AcqRel) {
        return;
    }
    let store = store.clone();
    let compactions = compactions.clone();
    tokio::spawn(async move {
        let _turn = compactions.acquire_owned().await;
        let before = room.log_updates.load(Ordering::Relaxed);
        let result = async {
            if store.shared() {
                return store.compact(room.id.as_str(), merge_stored).await;
            }
            let through = room.stored_through.load(Ordering::Acquire);
            let encoding = room.clone();
            // A panic while encoding falls back to merging what is stored.
            let state = crate::work::run(move || {
                catch_unwind(AssertUnwindSafe(|| encoding.compaction_state()))
                    .ok()
                    .flatten()
            });
            match state.await {
                Some(state) => store.compact_to(room.id.as_str(), through, &state).await,
                None => store.compact(room.id.as_str(), merge_stored).await,
            }
        }
        .await;
        match result {
            Ok(()) => {
                room.log_updates.fetch_sub(before, Ordering::Relaxed);
                tracing::debug!(doc = %room.id, updates = before, "compacted");
            }
            Err(err) => tracing::warn!(doc = %room.id, error = %err, "compaction failed; log kept"),
        }
        room.compacting.store(false, Ordering::Release);
    });
}

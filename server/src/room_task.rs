//! A room's own task: every piece of work on one document (loading it, opening channels on it,
//! decoding, validating and applying updates, answering step 1, relaying awareness), in the
//! order the connections asked for it. Connections only queue jobs here and never wait for
//! them, so one document's work never holds up another document, or another channel of the
//! same connection. Work whose cost grows with the message or the document (a large update, a
//! step 2 of a large document, a load, a rebuild) runs on the document work pool
//! ([`crate::work`]), off the threads that serve sockets and below their priority.
//!
//! The task also owns the room's lifetime: once no channel has had it open for the idle
//! delay, it waits until everything it was given is durable and unloads the room.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_protocol::ysync::{decode_awareness, decode_sync_with_references, is_write, SyncPayload};
use quire_protocol::{Access, ChannelCode, ChannelId, Message};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::divergence::{compare_quiet_room, HeldDigest};
use crate::fanout::Publisher;
use crate::lane::{Lane, Pushed};
use crate::memory::{Charge, MemoryBudget};
use crate::metrics::Metrics;
use crate::outbox::{ConnEvent, ConnHandle};
use crate::persist::{AckTarget, Job, Persister};
use crate::room::{Room, SubKey};
use crate::room_versions::{VersionClock, VersionRequest};
use crate::store::{Store, StoredDoc};
use crate::turns::Turns;
use crate::versions::HistoryPolicy;

/// Messages up to this size are handled on the room's task itself: decoding and applying a
/// small update takes microseconds, less than handing it to another thread.
const INLINE_MESSAGE_BYTES: usize = 64 * 1024;
/// Documents whose stored or accepted bytes pass this answer step 1 on the work pool: the
/// answer may be the whole document.
const INLINE_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The channel a job is for: where to answer, and which opening of it.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub key: SubKey,
    pub conn: ConnHandle,
    pub generation: u64,
    /// The display name of the token's holder: an author of the versions its writes are in.
    pub author: Arc<str>,
}

impl Subscription {
    fn channel(&self) -> ChannelId {
        self.key.channel
    }

    fn close(&self, code: ChannelCode) {
        self.conn.event(ConnEvent::CloseChannel {
            channel: self.channel(),
            generation: self.generation,
            code,
        });
    }
}

/// What a message waiting for its document's work holds, both given back when the job is
/// dropped: a share of its connection's allowance for queued work (past it, the connection's
/// reader waits) and the message's bytes, charged to the server's memory budget.
#[derive(Debug)]
pub(crate) struct QueuedWork {
    _allowance: OwnedSemaphorePermit,
    _charge: Charge,
}

impl QueuedWork {
    pub(crate) fn new(allowance: OwnedSemaphorePermit, charge: Charge) -> Self {
        Self {
            _allowance: allowance,
            _charge: charge,
        }
    }
}

#[derive(Debug)]
pub(crate) enum RoomJob {
    /// Subscribe the channel and send it OPENED, step 1 and the awareness states.
    Open { sub: Subscription, access: Access },
    /// A whole SYNC message; `seq` numbers it among the channel's writes (§6.5). `budget` is
    /// the connection's allowance for queued work and the message's memory charge, returned
    /// when the job is done.
    Sync {
        sub: Subscription,
        seq: u64,
        payload: Vec<u8>,
        received: Instant,
        budget: QueuedWork,
    },
    /// A whole AWARENESS message.
    Awareness {
        sub: Subscription,
        payload: Vec<u8>,
        budget: QueuedWork,
    },
    /// The channel is released: unsubscribe it.
    Leave { key: SubKey },
    /// The client closed the channel: unsubscribe it, and tell its connection once every
    /// write received on it before is durable and acknowledged.
    CloseAfterWrites { sub: Subscription },
    /// Resolves once every write queued here before it is durable and acknowledged.
    Flush(oneshot::Sender<()>),
    /// The memory budget is reached: unload the room now if nobody has it open.
    UnloadIfUnused,
    /// A request about the document's versions.
    Request(VersionRequest),
    /// The document went to the trash: close every channel on it (4410), refuse opens, and
    /// leave the registry.
    Trashed,
    /// Other servers stored updates of the document (a shared database): read and apply them,
    /// and relay them to every subscriber.
    CatchUp,
    /// Another server relayed this awareness update (a shared database): relay it here.
    RemoteAwareness(Vec<u8>),
    /// Drop the presence other servers relayed that was not renewed within this long.
    ExpireAwareness(Duration),
    /// Another server stored update `seq` of the document and published it: applied and
    /// relayed if it follows what the room holds, read from the database with whatever it
    /// skipped if it does not, ignored if the room holds it already.
    Remote { seq: i64, update: Vec<u8> },
    /// The room's digest once everything applied here before is stored, with the number
    /// through which it holds everything stored (`/digests`, `quire-server verify`).
    Digest(oneshot::Sender<HeldDigest>),
    /// The document looked quiet at stored number `head` (a shared store): compare the room
    /// with the store ([`crate::divergence::compare_quiet_room`]).
    CompareWithStore { head: i64 },
    /// The room differed from the store: merge what the store holds, and store again what
    /// the store lost ([`crate::divergence::repair`]).
    Repair(StoredDoc),
}

/// A reference to a served room: the document, and the queue of its task. One pointer: the
/// registry, every channel on the room and its task each hold one (docs/BENCHMARKS.md, S7).
#[derive(Debug, Clone)]
pub struct RoomHandle(Arc<Served>);

/// A served room, shared by its handles.
#[derive(Debug)]
pub struct Served {
    room: Arc<Room>,
    /// The task's queue; closed once the room is unloaded (or its load failed).
    jobs: Lane<RoomJob, Memo>,
    worker: Worker,
}

impl std::ops::Deref for RoomHandle {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.0
    }
}

/// Starts a task to drain a room's queue. One per registry, shared by its rooms
/// ([`worker`]).
#[derive(Clone)]
pub(crate) struct Worker(Arc<dyn Fn(RoomHandle) + Send + Sync>);

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Worker")
    }
}

impl RoomHandle {
    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }

    /// Queues a job, starting the room's task if none is at work; false if the room is
    /// gone (unloaded, or its document failed to load).
    pub(crate) fn submit(&self, job: RoomJob) -> bool {
        match self.jobs.push_to_worker(job) {
            Pushed::Queued => true,
            Pushed::StartWorker => {
                (self.worker.0)(self.clone());
                true
            }
            Pushed::Refused => false,
        }
    }
}

/// What a room's task remembers while none is at work.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    size: usize,
    clock: VersionClock,
    trashed: bool,
}

/// What a room's task needs from the registry of open rooms that started it: storage, the
/// persister, metrics, and a say in the room's removal. Implemented by
/// [`crate::rooms::Rooms`]; a trait, so that this module does not depend on the registry.
pub(crate) trait Registry: Send + Sync + 'static {
    type Store: Store;
    fn store(&self) -> &Arc<Self::Store>;
    fn persister(&self) -> &Persister;
    fn metrics(&self) -> &Metrics;
    /// How long a room nobody has open stays loaded.
    fn idle_unload(&self) -> Duration;
    /// The server's memory budget: writes are refused (4503) while it is exceeded.
    fn memory(&self) -> &MemoryBudget;
    /// Automatic versions and their quota.
    fn history(&self) -> &HistoryPolicy;
    /// The room could not be loaded, or its document went to the trash: forget it, so that
    /// the next opener loads it afresh.
    fn forget(&self, room: &Arc<Room>);
    /// Removes the room if no channel holds it; whether it is gone.
    fn unload_if_unused(&self, room: &Arc<Room>) -> bool;
    /// A load waits for one of these turns before it starts.
    fn loads(&self) -> &Turns<RoomHandle>;
    /// Redis, when the store is shared with other servers: presence goes to them too.
    fn fanout(&self) -> Option<&Publisher>;
}

/// A new room, whose task starts with the first job (the first of which loads the document);
/// the registry that made `worker` unloads it when idle.
///
/// A room's task runs while its queue holds jobs, and while nobody has the room open (to
/// unload it after the idle delay). A room that is open and has nothing to do has no task:
/// it stops, leaving its [`Memo`] in the queue, and the next job starts another (a thousand
/// open documents nobody writes to would otherwise hold a thousand waiting tasks, ~0.9 KiB
/// each; docs/BENCHMARKS.md, S7).
pub(crate) fn start(worker: &Worker, room: Arc<Room>) -> RoomHandle {
    RoomHandle(Arc::new(Served {
        room,
        jobs: Lane::with_worker(),
        worker: worker.clone(),
    }))
}

/// What starts the tasks of `rooms`' rooms, on the current runtime: made once per registry.
pub(crate) fn worker<R: Registry>(rooms: &Arc<R>) -> Worker {
    // Weak: the registry holds its rooms' handles; it is alive whenever they have jobs.
    let registry = Arc::downgrade(rooms);
    let runtime = tokio::runtime::Handle::current();
    Worker(Arc::new(move |handle: RoomHandle| {
        let Some(rooms) = registry.upgrade() else {
            return;
        };
        match handle.jobs.take_memo() {
            Some(memo) => drop(runtime.spawn(serve(rooms, handle, memo))),
            // The first job: the document is loaded first, in its turn.
            None => {
                if let Some(handle) = rooms.loads().take(handle) {
                    runtime.spawn(load_and_serve(rooms, handle));
                }
            }
        }
    }))
}

/// The room's first task, in its load turn: loads the document, passes the turn on, then
/// serves. Nothing is boxed here: at most [`Registry::loads`]' few turns of these run at
/// once, the rooms waiting for one have no task.
async fn load_and_serve<R: Registry>(rooms: Arc<R>, handle: RoomHandle) {
    let loaded = {
        let _turn = LoadTurn(rooms.clone());
        load_room(&rooms, &handle).await
    };
    if let Some(memo) = loaded {
        serve(rooms, handle, memo).await;
    }
}

/// A load turn, passed to the next room waiting for one when dropped (also if the load
/// panicked).
struct LoadTurn<R: Registry>(Arc<R>);

impl<R: Registry> Drop for LoadTurn<R> {
    fn drop(&mut self) {
        let Some(next) = self.0.loads().done() else {
            return;
        };
        // Dropped outside a runtime only when the runtime itself is going away.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(load_and_serve(self.0.clone(), next));
        }
    }
}

/// Handles the room's jobs until there are none (or the room is unloaded).
async fn serve<R: Registry>(rooms: Arc<R>, handle: RoomHandle, memo: Memo) {
    // Each job, the idle wait and the unload run boxed, and a job is never held across a
    // wait: a room's task may spend a long time waiting for the next job, and its future is
    // as large as the largest state it can be in (832 bytes before the last three, 512 after;
    // docs/BENCHMARKS.md, S7).
    let served = handle.0.clone();
    let queue = &served.jobs;
    let mut task = Task {
        rooms,
        handle,
        size: memo.size,
        clock: memo.clock,
        trashed: memo.trashed,
    };
    // Since when no channel has had the room open. Jobs that come meanwhile (other servers'
    // updates and presence, their expiry every second, digests) do not restart the wait:
    // they would keep a document nobody here uses loaded for ever.
    let mut unused_since: Option<Instant> = None;
    loop {
        let job = if task.handle.room.subscriber_count() == 0 {
            let since = *unused_since.get_or_insert_with(Instant::now);
            let left = task.rooms.idle_unload().saturating_sub(since.elapsed());
            match Box::pin(tokio::time::timeout(left, queue.pop())).await {
                Ok(job) => job,
                Err(_) => {
                    if Box::pin(task.try_unload()).await {
                        // Nobody holds the room any more, so nothing should be queued; what
                        // is, is still handled.
                        for job in queue.close() {
                            Box::pin(task.handle(job)).await;
                        }
                        return;
                    }
                    // Kept (a failed commit, or opened meanwhile): wait a whole delay again.
                    unused_since = None;
                    continue;
                }
            }
        } else {
            unused_since = None;
            match queue.pop_or_park(|| task.memo()) {
                Some(job) => job,
                None => return, // the next job starts another task
            }
        };
        if matches!(job, RoomJob::UnloadIfUnused) {
            // Not kept across the wait below: the task's future would hold room for a job.
            drop(job);
            if task.handle.room.subscriber_count() == 0 && Box::pin(task.try_unload()).await {
                for job in queue.close() {
                    Box::pin(task.handle(job)).await;
                }
                return;
            }
            continue;
        }
        match task.handle_now(job) {
            None => {}
            Some(Later::Job(job)) => Box::pin(task.handle(job)).await,
            Some(Later::Rebuild) => Box::pin(task.rebuild()).await,
        }
    }
}

/// Loads the room's document. If that fails, the room is forgotten and whoever queued here is
/// refused.
async fn load_room<R: Registry>(rooms: &Arc<R>, handle: &RoomHandle) -> Option<Memo> {
    let (room, queue) = (&handle.room, &handle.jobs);
    match load(rooms.as_ref(), room).await {
        Ok((size, newest_version_ms)) => Some(Memo {
            size,
            clock: VersionClock::new(newest_version_ms),
            trashed: false,
        }),
        Err(err) => {
            let code = match err {
                LoadError::Trashed => {
                    tracing::debug!(doc = %room.id, "open of a trashed document refused");
                    ChannelCode::Trashed
                }
                err => {
                    tracing::error!(doc = %room.id, error = %err, "loading document failed");
                    ChannelCode::StorageFailure
                }
            };
            // The next opener loads afresh; whoever already queued here is refused, and
            // whoever still holds this room finds its queue closed.
            rooms.forget(room);
            for job in queue.close() {
                match job {
                    RoomJob::Open { sub, .. } => sub.conn.event(ConnEvent::OpenFailed {
                        channel: sub.channel(),
                        generation: sub.generation,
                        code,
                    }),
                    RoomJob::Flush(done) => drop(done.send(())),
                    _ => {}
                }
            }
            None
        }
    }
}

/// Loads the stored document into the room (a large one on the document work pool); returns
/// its stored size and when its newest version was saved. A trashed document is not loaded.
async fn load<R: Registry>(rooms: &R, room: &Arc<Room>) -> Result<(usize, Option<u64>), LoadError> {
    let stored = rooms.store().load(room.id.as_str()).await?;
    let marks = stored.marks;
    if marks.trashed_ms.is_some() {
        return Err(LoadError::Trashed);
    }
    let size = stored_size(&stored);
    let loading = room.clone();
    // A new or small document loads in microseconds: here, without a thread hop.
    let work = move || catch_unwind(AssertUnwindSafe(|| loading.load_stored(stored)));
    run_sized(work, size > INLINE_DOCUMENT_BYTES)
        .await
        .map_err(|_| LoadError::Panicked)?
        .map_err(LoadError::Corrupt)?;
    Ok((size, marks.newest_version_ms))
}

fn stored_size(stored: &StoredDoc) -> usize {
    stored.snapshot.as_ref().map_or(0, Vec::len)
        + stored.updates.iter().map(Vec::len).sum::<usize>()
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("stored document is corrupt: {0}")]
    Corrupt(#[from] crate::store::CorruptContent),
    #[error("loading panicked")]
    Panicked,
    #[error("the document is in the trash")]
    Trashed,
}

/// What [`Task::handle_now`] could not do without waiting.
enum Later {
    /// The job, for [`Task::handle`].
    Job(RoomJob),
    /// A refused update left the document to be rebuilt, on the work pool.
    Rebuild,
}

/// A SYNC message's way through [`Task::handle_now`].
enum Prepared {
    /// Refused: the memory budget is exceeded.
    Refused,
    /// To be applied now, with its place in the persister's queue if it is a write.
    Now(Option<crate::persist::Slot>),
    /// It needs a wait: through [`Task::handle`].
    Later,
}

struct Task<R> {
    rooms: Arc<R>,
    /// The room, and its queue for work that comes back to it (a repair).
    handle: RoomHandle,
    /// Bytes stored plus bytes accepted since: whether step 1 answers are worth a thread.
    size: usize,
    /// When the newest version was saved, and who wrote since.
    clock: VersionClock,
    /// The document went to the trash while loaded: opens still queued here are refused.
    trashed: bool,
}

impl<R: Registry> Task<R> {
    /// What the next task needs of this one's state, taken as this one stops.
    fn memo(&mut self) -> Memo {
        Memo {
            size: self.size,
            clock: std::mem::take(&mut self.clock),
            trashed: self.trashed,
        }
    }

    /// Handles `job` at once when it needs no wait, which is nearly every job: an open, a
    /// leave, or a small SYNC or AWARENESS message that needs no thread hop, no automatic
    /// version saved first and no wait for the persister's queue. The rest is handed back,
    /// for [`Task::handle`], whose future is boxed: an allocation and a poll per job, a few
    /// percent of the server's time when a client streams small writes (docs/BENCHMARKS.md,
    /// F0). Returns what is left to do, if anything.
    fn handle_now(&mut self, job: RoomJob) -> Option<Later> {
        match job {
            RoomJob::Open { sub, access } => self.open(sub, access),
            RoomJob::Leave { key } => self.leave(key),
            RoomJob::Sync {
                sub,
                seq,
                payload,
                received,
                budget,
            } => {
                let slot = match self.prepare_now(&sub, &payload, received) {
                    Prepared::Now(slot) => slot,
                    Prepared::Refused => return None,
                    Prepared::Later => {
                        return Some(Later::Job(RoomJob::Sync {
                            sub,
                            seq,
                            payload,
                            received,
                            budget,
                        }))
                    }
                };
                let len = payload.len();
                let outcome = apply_sync(&self.handle.room, &sub, seq, payload, received, slot);
                drop(budget);
                if self.count_applied(outcome, len) {
                    return Some(Later::Rebuild);
                }
            }
            RoomJob::Awareness {
                sub,
                payload,
                budget,
            } if payload.len() <= INLINE_MESSAGE_BYTES => {
                let relayed = relay_awareness(&self.handle.room, &sub, payload);
                self.publish_awareness(relayed);
                drop(budget);
            }
            job => return Some(Later::Job(job)),
        }
        None
    }

    /// Whether a SYNC message can be handled now, and its place in the persister's queue if
    /// it is a write; see [`Task::sync`], which does the same with waits.
    fn prepare_now(&mut self, sub: &Subscription, payload: &[u8], received: Instant) -> Prepared {
        if payload.len() > INLINE_MESSAGE_BYTES {
            return Prepared::Later;
        }
        if !is_write(payload) {
            return match self.size > INLINE_DOCUMENT_BYTES {
                true => Prepared::Later,
                false => Prepared::Now(None),
            };
        }
        if self.refused_for_memory(sub, payload) {
            return Prepared::Refused;
        }
        let edit = !carries_nothing(payload);
        if edit && !self.clock.surely_not_due(received) {
            return Prepared::Later;
        }
        let Some(slot) = self.rooms.persister().try_reserve() else {
            return Prepared::Later;
        };
        if edit {
            self.clock.note_author(&sub.author);
        }
        Prepared::Now(Some(slot))
    }

    /// Refuses a write that would grow the process past its memory budget: nothing of it is
    /// kept or acknowledged, and the client re-opens later and sends it again (§6.5). An
    /// empty update (a step 2 from a client that has nothing new) is taken: refusing it would
    /// keep that client from ever finishing its sync. Whether it was refused.
    fn refused_for_memory(&self, sub: &Subscription, payload: &[u8]) -> bool {
        if !self.rooms.memory().is_over() || carries_nothing(payload) {
            return false;
        }
        self.rooms.memory().count_refusal();
        sub.close(ChannelCode::Overloaded);
        true
    }

    /// Keeps count of an applied SYNC message of `len` bytes; whether it was refused and left
    /// the document to be rebuilt.
    fn count_applied(&mut self, outcome: Option<Applied>, len: usize) -> bool {
        match outcome {
            Some(Applied::Changed) => {
                self.size += len;
                self.rooms
                    .metrics()
                    .updates_applied
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(Applied::Refused) => self.handle.room.needs_rebuild(),
            Some(Applied::Unchanged) | None => false,
        }
    }

    /// Rebuilds the document after a refused update, on the work pool.
    async fn rebuild(&self) {
        let room = self.handle.room.clone();
        run_sized(move || room.rebuild(), true).await;
        self.rooms
            .metrics()
            .document_rebuilds
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Other servers of a shared database relay what changed presence here.
    fn publish_awareness(&self, relayed: Option<Vec<u8>>) {
        if let (Some(payload), Some(fanout)) = (relayed, self.rooms.fanout()) {
            fanout.publish_awareness(self.handle.room.id.as_str(), &payload);
        }
    }

    async fn handle(&mut self, job: RoomJob) {
        match job {
            RoomJob::Open { sub, access } => self.open(sub, access),
            RoomJob::Sync {
                sub,
                seq,
                payload,
                received,
                budget,
            } => {
                self.sync(sub, seq, payload, received).await;
                drop(budget);
            }
            RoomJob::Awareness {
                sub,
                payload,
                budget,
            } => {
                let heavy = payload.len() > INLINE_MESSAGE_BYTES;
                let room = self.handle.room.clone();
                let relayed = run_sized(move || relay_awareness(&room, &sub, payload), heavy).await;
                self.publish_awareness(relayed);
                drop(budget);
            }
            RoomJob::Leave { key } => self.leave(key),
            RoomJob::CloseAfterWrites { sub } => {
                self.leave(sub.key);
                let persister = self.rooms.persister().clone();
                tokio::spawn(async move {
                    persister.flush().await;
                    sub.conn.event(ConnEvent::Drained {
                        channel: sub.channel(),
                        generation: sub.generation,
                    });
                });
            }
            RoomJob::UnloadIfUnused => {}
            RoomJob::Request(request) => {
                let rooms = &self.rooms;
                let (store, persister, policy) =
                    (rooms.store(), rooms.persister(), rooms.history());
                crate::room_versions::handle(
                    store,
                    persister,
                    policy,
                    &self.handle.room,
                    &mut self.clock,
                    request,
                )
                .await;
            }
            RoomJob::Trashed => {
                self.trashed = true;
                // Out of the registry at once: the next opener loads afresh and finds the
                // document trashed, restored or purged, whichever it is by then. This task
                // ends once its channels are closed, like any idle room's.
                self.rooms.forget(&self.handle.room);
                for (key, conn, generation) in self.handle.room.subscribers() {
                    conn.event(ConnEvent::CloseChannel {
                        channel: key.channel,
                        generation,
                        code: ChannelCode::Trashed,
                    });
                }
            }
            RoomJob::CatchUp => self.catch_up().await,
            RoomJob::RemoteAwareness(payload) => match decode_awareness(&payload) {
                Ok(update) => self.handle.room.relay_remote_awareness(&update, &payload),
                Err(err) => {
                    tracing::debug!(doc = %self.handle.room.id, error = %err, "awareness from another server refused")
                }
            },
            RoomJob::ExpireAwareness(timeout) => self.handle.room.expire_remote_awareness(timeout),
            RoomJob::Remote { seq, update } => self.remote(seq, update).await,
            RoomJob::Digest(done) => {
                let _ = done.send(self.digest().await);
            }
            RoomJob::CompareWithStore { head } => {
                let held = self.digest().await;
                if held.head == head {
                    let (rooms, room) = (self.rooms.clone(), self.handle.room.clone());
                    let handle = self.handle.clone();
                    // The read and the rebuild run beside the room: it goes on serving.
                    tokio::spawn(async move {
                        let store = &**rooms.store();
                        if let Some(stored) =
                            compare_quiet_room(store, rooms.metrics(), &room, held).await
                        {
                            handle.submit(RoomJob::Repair(stored));
                        }
                    });
                }
            }
            RoomJob::Repair(stored) => {
                let room = self.handle.room.clone();
                let lost = crate::work::run(move || crate::divergence::repair(&room, stored)).await;
                // Stored like a client's write, and published to the other servers; nobody
                // waits for its ACK.
                if let Some(lost) = lost {
                    if let Some(slot) = self.rooms.persister().reserve().await {
                        slot.submit(Job::Write {
                            room: self.handle.room.clone(),
                            data: Some(lost),
                            ack: None,
                            received: Instant::now(),
                        });
                    }
                }
            }
            RoomJob::Flush(done) => {
                let persister = self.rooms.persister().clone();
                tokio::spawn(async move {
                    persister.flush().await;
                    let _ = done.send(());
                });
            }
        }
    }

    fn open(&self, sub: Subscription, access: Access) {
        if self.trashed {
            sub.conn.event(ConnEvent::OpenFailed {
                channel: sub.channel(),
                generation: sub.generation,
                code: ChannelCode::Trashed,
            });
            return;
        }
        let (step1, awareness) =
            self.handle
                .room
                .subscribe(sub.key, sub.conn.clone(), sub.generation, access);
        let (conn, channel, generation) = (&sub.conn, sub.channel(), sub.generation);
        conn.send(channel, generation, Message::Opened { access });
        if let Some(step1) = step1 {
            conn.send(channel, generation, Message::Sync(step1));
        }
        if let Some(awareness) = awareness {
            conn.send(channel, generation, Message::Awareness(awareness));
        }
        tracing::debug!(%channel, doc = %self.handle.room.id, ?access, "channel opened");
    }

    async fn sync(&mut self, sub: Subscription, seq: u64, payload: Vec<u8>, received: Instant) {
        let write = is_write(&payload);
        if write && self.refused_for_memory(&sub, &payload) {
            return;
        }
        if write && !carries_nothing(&payload) {
            crate::room_versions::before_write(
                self.rooms.store(),
                self.rooms.history(),
                &self.handle.room,
                &mut self.clock,
                &sub.author,
                received,
                self.size > INLINE_DOCUMENT_BYTES,
            )
            .await;
        }
        let heavy =
            payload.len() > INLINE_MESSAGE_BYTES || (!write && self.size > INLINE_DOCUMENT_BYTES);
        // The place in the persister's queue is taken before the update is applied, so the
        // room's writes are committed in the order they were applied (see Persister::reserve).
        let slot = if write {
            match self.rooms.persister().reserve().await {
                Some(slot) => Some(slot),
                None => return, // the persister is gone: the server is stopping
            }
        } else {
            None
        };
        let len = payload.len();
        let room = self.handle.room.clone();
        let work = move || apply_sync(&room, &sub, seq, payload, received, slot);
        let outcome = run_sized(work, heavy).await;
        if self.count_applied(outcome, len) {
            self.rebuild().await;
        }
    }

    async fn remote(&mut self, seq: i64, update: Vec<u8>) {
        let held = self.handle.room.seen_through();
        if seq <= held {
            return;
        }
        if seq > held + 1 {
            self.rooms
                .metrics()
                .remote_gap_reads
                .fetch_add(1, Ordering::Relaxed);
            return self.catch_up().await;
        }
        let stored = StoredDoc {
            updates: vec![update],
            head: seq,
            ..StoredDoc::default()
        };
        let heavy = stored_size(&stored) > INLINE_MESSAGE_BYTES;
        let room = self.handle.room.clone();
        self.size += run_sized(move || room.apply_remote(stored), heavy).await;
    }

    /// Unsubscribes `key`; the other servers hear of its presence's removal.
    fn leave(&self, key: SubKey) {
        if let (Some(removal), Some(fanout)) =
            (self.handle.room.unsubscribe(key), self.rooms.fanout())
        {
            fanout.publish_awareness(self.handle.room.id.as_str(), &removal);
        }
    }

    /// Applies what other servers stored since the room last held everything stored.
    async fn catch_up(&mut self) {
        let after = self.handle.room.seen_through();
        let stored = match self
            .rooms
            .store()
            .load_after(self.handle.room.id.as_str(), after)
            .await
        {
            Ok(stored) if stored.head > after => stored,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(doc = %self.handle.room.id, error = %err, "reading other servers' updates failed; retried at the next check");
                return;
            }
        };
        let heavy = stored_size(&stored) > INLINE_MESSAGE_BYTES;
        let room = self.handle.room.clone();
        let added = run_sized(move || room.apply_remote(stored), heavy).await;
        if added > 0 {
            self.size += added;
            self.rooms
                .metrics()
                .remote_catch_ups
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The room's digest once everything applied here is stored. Jobs queued meanwhile wait,
    /// so nothing is applied between the flush and the digest.
    async fn digest(&self) -> HeldDigest {
        self.rooms.persister().flush().await;
        let room = self.handle.room.clone();
        let (digest, head) = crate::work::run(move || room.digest()).await;
        HeldDigest { head, digest }
    }

    /// Unloads the room if nobody has it open and everything it was given is durable.
    async fn try_unload(&self) -> bool {
        self.rooms.persister().flush().await;
        if self.handle.room.needs_snapshot.load(Ordering::Acquire) {
            return false; // a failed commit: keep the state until a write stores it
        }
        self.rooms.unload_if_unused(&self.handle.room)
    }
}

#[derive(Debug)]
enum Applied {
    Changed,
    Unchanged,
    /// The update was refused; the channel is being closed.
    Refused,
}

/// Decodes one SYNC message and acts on it: answers step 1, or applies a write and hands it
/// to the persister. A bad message closes the channel.
fn apply_sync(
    room: &Arc<Room>,
    sub: &Subscription,
    seq: u64,
    payload: Vec<u8>,
    received: Instant,
    slot: Option<crate::persist::Slot>,
) -> Option<Applied> {
    let channel = sub.channel();
    let (decoded, references) = match decode_sync_with_references(&payload) {
        Ok(decoded) => decoded,
        Err(err) => {
            tracing::debug!(%channel, error = %err, "undecodable sync message");
            sub.close(ChannelCode::InvalidUpdate);
            return None;
        }
    };
    let update = match decoded {
        SyncPayload::Step1(state_vector) => {
            let step2 = room.answer_step1(&state_vector);
            sub.conn.send(channel, sub.generation, Message::Sync(step2));
            return None;
        }
        SyncPayload::Step2(update) | SyncPayload::Update(update) => update,
    };
    let slot = slot?;
    let raw = quire_protocol::ysync::update_bytes(&payload);
    let ack = AckTarget {
        conn: sub.conn.clone(),
        channel,
        generation: sub.generation,
        seq,
    };
    let persist = |changed: bool| {
        slot.submit(Job::Write {
            room: room.clone(),
            data: changed.then(|| raw.to_vec()),
            ack: Some(ack),
            received,
        })
    };
    match room.try_apply(sub.key, (update, &references), raw, &payload, persist) {
        Ok(true) => Some(Applied::Changed),
        Ok(false) => Some(Applied::Unchanged),
        Err(err) => {
            tracing::warn!(%channel, doc = %room.id, error = %err, "update not applied");
            sub.close(ChannelCode::InvalidUpdate);
            Some(Applied::Refused)
        }
    }
}

/// Applies an AWARENESS message and relays it; returns the payload when it changed
/// something, for the other servers of a shared database. A refused one closes the channel.
fn relay_awareness(room: &Room, sub: &Subscription, payload: Vec<u8>) -> Option<Vec<u8>> {
    let refused = match decode_awareness(&payload) {
        Ok(update) => match room.relay_awareness(sub.key, &update, &payload) {
            Ok(changed) => return changed.then_some(payload),
            Err(refused) => refused.to_string(),
        },
        Err(err) => err.to_string(),
    };
    tracing::debug!(channel = %sub.channel(), error = %refused, "awareness update refused");
    sub.close(ChannelCode::InvalidUpdate);
    None
}

/// Whether a SYNC write holds the empty v1 update: no structs, no deletions.
fn carries_nothing(payload: &[u8]) -> bool {
    quire_protocol::ysync::update_bytes(payload) == quire_protocol::ysync::EMPTY_UPDATE
}

/// Runs `work` here, or on the document work pool when it is `heavy`.
async fn run_sized<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static, heavy: bool) -> T {
    if heavy {
        crate::work::run(work).await
    } else {
        work()
    }
}

//! A room: one open document in memory (a yrs Doc plus awareness) shared by every channel, on
//! any connection, that has it open. An update is applied once here and relayed to every
//! other subscriber, encoded once and shared; making it durable is the persister's job.
//! Only the room's own task ([`crate::room_task`]) calls into a served room, so no
//! connection ever waits on its lock.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use quire_protocol::frame::kind;
use quire_protocol::ysync::{
    encode_step1, encode_step2, encode_update, References, EMPTY_UPDATE, SYNC_UPDATE,
};
use quire_protocol::{Access, DocId, StateDigest};
use yrs::sync::awareness::AwarenessUpdate;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::awareness::{AwarenessRefused, RoomAwareness};
use crate::history::History;
use crate::memory::{Charge, MemoryBudget, Use};
use crate::outbox::ConnHandle;
use crate::store::{CorruptContent, StoredDoc};
use crate::subscribers::{Subscriber, Subscribers};

pub use crate::subscription::SubKey;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the CRDT library panicked applying the update")]
    Panicked,
    #[error("the CRDT library refused the update: {0}")]
    Refused(String),
    #[error("the update's structs of client {client} start at clock {start}, past the {held} the document holds")]
    Gap { client: u64, start: u32, held: u32 },
    #[error("the update refers to structs the document does not hold")]
    MissingDependencies,
    #[error("the update refers to clocks below {end} of client {client}, which neither the document nor the update holds")]
    MissingReference { client: u64, end: u64 },
}

struct State {
    doc: Doc,
    /// What `doc` was built from, to undo an update yrs applied only in part.
    history: History,
    awareness: RoomAwareness,
    subscribers: Subscribers,
    /// An update failed part way: `doc` may hold part of it until [`Room::rebuild`].
    needs_rebuild: bool,
    /// The document's memory, estimated from its history (see [`DOCUMENT_MEMORY_FACTOR`]).
    document_charge: Charge,
    awareness_charge: Charge,
}

/// A loaded document is charged this many times the bytes of its history: the history itself,
/// the CRDT state built from it, which for text takes about as much again, and the state's
/// encoding while the history is folded into it (docs/RELIABILITY.md, the memory budget).
const DOCUMENT_MEMORY_FACTOR: u64 = 3;

impl State {
    fn charge_document(&mut self) {
        let bytes = self.history.bytes() as u64 * DOCUMENT_MEMORY_FACTOR;
        self.document_charge.set(bytes);
    }

    fn charge_awareness(&mut self) {
        self.awareness_charge.set(self.awareness.bytes() as u64);
    }
}

pub struct Room {
    pub id: DocId,
    state: Mutex<State>,
    /// Relayed bodies are charged to it while subscribers' queues hold them.
    memory: Arc<MemoryBudget>,
    /// A commit of this room's updates failed: the next write stores the full state instead of
    /// a delta, so that storage never holds an update whose dependencies were lost.
    pub(crate) needs_snapshot: AtomicBool,
    /// Updates stored since the last compaction, to decide when to compact.
    pub(crate) log_updates: AtomicU64,
    /// The largest number the store gave an update of this room (see `persist::maybe_compact`).
    pub(crate) stored_through: AtomicI64,
    pub(crate) compacting: AtomicBool,
    /// The number through which the room holds every stored update of its document, its own
    /// and those other servers stored ([`Room::note_stored`], [`Room::apply_remote`]).
    seen_through: AtomicI64,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Room {
    /// A room outside any server's memory budget (tests and benchmarks).
    pub fn new(id: DocId) -> Self {
        Self::with_budget(id, &MemoryBudget::unlimited())
    }

    /// A room whose document, awareness and relays are charged to `memory`.
    pub fn with_budget(id: DocId, memory: &Arc<MemoryBudget>) -> Self {
        Self {
            id,
            state: Mutex::new(State {
                doc: Doc::new(),
                history: History::default(),
                awareness: RoomAwareness::default(),
                subscribers: Subscribers::default(),
                needs_rebuild: false,
                document_charge: memory.charge(Use::Documents, 0),
                awareness_charge: memory.charge(Use::Awareness, 0),
            }),
            memory: memory.clone(),
            needs_snapshot: AtomicBool::new(false),
            log_updates: AtomicU64::new(0),
            stored_through: AtomicI64::new(0),
            compacting: AtomicBool::new(false),
            seen_through: AtomicI64::new(0),
        }
    }

    /// Fills the room from storage: the snapshot, then each logged update in its own
    /// transaction (one big transaction is quadratic in yrs).
    /// The stored bytes are kept as the room's history (moved, not copied).
    pub fn load_stored(&self, stored: StoredDoc) -> Result<(), CorruptContent> {
        let mut state = self.state.lock();
        let state = &mut *state;
        apply_stored(&state.doc, &stored)?;
        self.log_updates
            .store(stored.updates.len() as u64, Ordering::Relaxed);
        self.seen_through.store(stored.head, Ordering::Release);
        state.history = History::from_stored(stored);
        state.charge_document();
        Ok(())
    }

    /// Adds a subscriber. Returns the payloads to send it first: the server's sync step 1
    /// (for writers; readers need not send their state) and the current awareness.
    pub fn subscribe(
        &self,
        key: SubKey,
        conn: ConnHandle,
        generation: u64,
        access: Access,
    ) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let mut state = self.state.lock();
        state.subscribers.insert(
            key,
            Subscriber {
                conn,
                generation,
                access,
            },
        );
        let step1 = access
            .can_write()
            .then(|| encode_step1(&state.doc.transact().state_vector()));
        (step1, state.awareness.snapshot())
    }

    /// Removes a subscriber and announces its awareness states as gone; returns that
    /// announcement, if any (for the other servers of a shared database).
    pub fn unsubscribe(&self, key: SubKey) -> Option<Vec<u8>> {
        let mut state = self.state.lock();
        state.subscribers.remove(key);
        let removal = state.awareness.remove_owned_by(key)?;
        state.charge_awareness();
        let relay = self.memory.output_bytes(removal.clone());
        broadcast(&state.subscribers, key, kind::AWARENESS, relay);
        Some(removal)
    }

    /// Every subscriber, as (key, connection, opening): to close them all (the document went
    /// to the trash).
    pub fn subscribers(&self) -> Vec<(SubKey, ConnHandle, u64)> {
        self.state
            .lock()
            .subscribers
            .iter()
            .map(|(key, sub)| (key, sub.conn.clone(), sub.generation))
            .collect()
    }

    /// How many channels have the room open.
    pub fn subscriber_count(&self) -> usize {
        self.state.lock().subscribers.len()
    }

    /// Sync step 2 answering a peer's step 1: everything the peer lacks.
    pub fn answer_step1(&self, remote: &StateVector) -> Vec<u8> {
        encode_step2(self.encode_beyond(remote))
    }

    /// Applies an update from `from` and relays it to the other subscribers. `payload` is the
    /// SYNC payload it came in (relayed as-is when it already is an update message).
    /// `persist` is called once the update is applied, with whether it brought anything new
    /// (only new updates need storing), while the room is still locked: storage then sees the
    /// room's updates in the order they were applied. Returns that same flag. A refused update
    /// leaves nothing behind: the document is rebuilt before this returns.
    pub fn apply(
        &self,
        from: SubKey,
        update: (Update, &References),
        raw_update: &[u8],
        payload: &[u8],
        persist: impl FnOnce(bool),
    ) -> Result<bool, ApplyError> {
        let result = self.try_apply(from, update, raw_update, payload, persist);
        if self.needs_rebuild() {
            self.rebuild();
        }
        result
    }

    /// [`Room::apply`] without the rebuild: after an error, [`Room::needs_rebuild`] says
    /// whether the caller must call [`Room::rebuild`] (an O(document) step it may want to run
    /// elsewhere) before the room is used again.
    /// An update that refers to what neither the document nor itself holds is refused before
    /// it touches the document ([`check_references`]), so that refusal costs no rebuild.
    pub fn try_apply(
        &self,
        from: SubKey,
        (update, references): (Update, &References),
        raw_update: &[u8],
        payload: &[u8],
        persist: impl FnOnce(bool),
    ) -> Result<bool, ApplyError> {
        if raw_update == EMPTY_UPDATE {
            // A step 2 from a client with nothing new. Applying it would change nothing, and
            // would take yrs's write lock, whose first release allocates the lock's wait lists:
            // 144 bytes kept by every document that is opened and never edited
            // (docs/BENCHMARKS.md, S7).
            persist(false);
            return Ok(false);
        }
        let mut state = self.state.lock();
        let state = &mut *state;
        let applied = {
            let mut txn = state.doc.transact_mut();
            // Built once for both checks: it walks every client the document knows.
            let held = txn.state_vector();
            check_continues(&held, &update)?;
            check_references(&held, references)?;
            // A document loaded from storage written before the dependency rule may already
            // hold parts waiting for dependencies; only updates that add some are refused.
            let was_waiting = txn.has_missing_updates();
            match catch_unwind(AssertUnwindSafe(|| txn.apply_update(update))) {
                // A correct peer's update only refers to what the receiver holds (see
                // PROTOCOL §6.4, §6.8). yrs would keep the rest pending and, once structs of the
                // same clocks with other content arrive, merge both into a state it cannot
                // load again (found by the server's fuzz target).
                Ok(Ok(())) if txn.has_missing_updates() && !was_waiting => {
                    Err(ApplyError::MissingDependencies)
                }
                Ok(Ok(())) => Ok(txn.before_state() != txn.after_state()
                    || !txn.delete_set().is_empty()
                    || txn.has_missing_updates()),
                Ok(Err(err)) => Err(ApplyError::Refused(err.to_string())),
                Err(_) => Err(ApplyError::Panicked),
            }
        };
        let changed = match applied {
            Ok(changed) => changed,
            Err(err) => {
                // yrs may have integrated part of the update before failing: the document must
                // start again from what was accepted, so nothing of a refused update stays in
                // memory (found by the server's fuzz target: memory and storage drifted apart).
                state.needs_rebuild = true;
                return Err(err);
            }
        };
        persist(changed);
        if !changed {
            return Ok(false);
        }
        state.history.accepted(raw_update, &state.doc);
        state.charge_document();
        let relay = self.memory.output_bytes(if is_update_message(payload) {
            payload.to_vec()
        } else {
            encode_update(raw_update.to_vec())
        });
        broadcast(&state.subscribers, from, kind::SYNC, relay);
        Ok(true)
    }

    /// Whether a refused update left the document to be rebuilt.
    pub fn needs_rebuild(&self) -> bool {
        self.state.lock().needs_rebuild
    }

    /// Rebuilds the document from its history (what was accepted), dropping whatever a
    /// refused update left in it.
    pub fn rebuild(&self) {
        let mut state = self.state.lock();
        state.doc = state.history.rebuild();
        state.needs_rebuild = false;
    }

    /// Applies an awareness update from `from` and relays the raw payload to the others;
    /// whether it changed anything. A refused update (PROTOCOL §6.6) changes and relays
    /// nothing.
    pub fn relay_awareness(
        &self,
        from: SubKey,
        update: &AwarenessUpdate,
        payload: &[u8],
    ) -> Result<bool, AwarenessRefused> {
        let mut state = self.state.lock();
        let Some(access) = state.subscribers.get(from).map(|s| s.access) else {
            return Ok(false); // the channel left meanwhile
        };
        if !state.awareness.apply(from, access, update)? {
            return Ok(false);
        }
        state.charge_awareness();
        let relay = self.memory.output_bytes(payload.to_vec());
        broadcast(&state.subscribers, from, kind::AWARENESS, relay);
        Ok(true)
    }

    /// Applies an awareness update another server relayed and relays it to every subscriber
    /// here (see [`crate::awareness::RoomAwareness::apply_remote`]).
    pub fn relay_remote_awareness(&self, update: &AwarenessUpdate, payload: &[u8]) {
        let mut state = self.state.lock();
        if state.awareness.apply_remote(update, Instant::now()) {
            state.charge_awareness();
            let relay = self.memory.output_bytes(payload.to_vec());
            broadcast(&state.subscribers, SubKey::SERVER, kind::AWARENESS, relay);
        }
    }

    /// Drops the states other servers relayed that were not renewed within `timeout`, and
    /// tells every subscriber here.
    pub fn expire_remote_awareness(&self, timeout: Duration) {
        let mut state = self.state.lock();
        if let Some(removal) = state.awareness.expire_remote(Instant::now(), timeout) {
            state.charge_awareness();
            let relay = self.memory.output_bytes(removal);
            broadcast(&state.subscribers, SubKey::SERVER, kind::AWARENESS, relay);
        }
    }

    /// The number through which the room holds every stored update of its document.
    pub fn seen_through(&self) -> i64 {
        self.seen_through.load(Ordering::Acquire)
    }

    /// The store numbered `seq` one of this room's own updates (applied before it was
    /// stored). If it follows the last number the room holds everything through, the room now
    /// holds everything through it; if another server stored updates in between, the room
    /// waits for [`Room::apply_remote`] to bring them.
    pub(crate) fn note_stored(&self, seq: i64) {
        let _ =
            self.seen_through
                .compare_exchange(seq - 1, seq, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Applies what other servers stored after [`Room::seen_through`] (from
    /// [`crate::store::Store::load_after`]) and relays every update that brings something new
    /// to all subscribers; the room then holds everything through `stored.head`. Updates the
    /// room already holds (its own, read back) change nothing and are not relayed. Returns
    /// the bytes of the updates that changed the document.
    pub fn apply_remote(&self, stored: StoredDoc) -> usize {
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut added = 0;
        for bytes in stored.snapshot.iter().chain(stored.updates.iter()) {
            let Ok(update) = quire_protocol::ysync::decode_update(bytes) else {
                tracing::warn!(doc = %self.id, "a stored update from another server does not decode; skipped");
                continue;
            };
            let changed = {
                let mut txn = state.doc.transact_mut();
                match catch_unwind(AssertUnwindSafe(|| txn.apply_update(update))) {
                    Ok(Ok(())) => {
                        txn.before_state() != txn.after_state() || !txn.delete_set().is_empty()
                    }
                    Ok(Err(_)) | Err(_) => {
                        tracing::warn!(doc = %self.id, "a stored update from another server does not apply; skipped");
                        false
                    }
                }
            };
            if changed {
                added += bytes.len();
                state.history.accepted(bytes, &state.doc);
                let relay = self.memory.output_bytes(encode_update(bytes.clone()));
                broadcast(&state.subscribers, SubKey::SERVER, kind::SYNC, relay);
            }
        }
        state.charge_document();
        self.seen_through.fetch_max(stored.head, Ordering::AcqRel);
        added
    }

    /// The digest of the document as the room holds it (PROTOCOL §6.10), with the number
    /// through which it holds every stored update, read together. Costs one pass over the
    /// document's blocks.
    pub fn digest(&self) -> (StateDigest, i64) {
        let state = self.state.lock();
        let digest = StateDigest::of(&state.doc.transact());
        (digest, self.seen_through())
    }

    /// What the room holds beyond the state vector `held`, as one v1 update (the room's whole
    /// delete set rides along): a step 2, the whole state, or what a store lost.
    pub fn encode_beyond(&self, held: &StateVector) -> Vec<u8> {
        self.state
            .lock()
            .doc
            .transact()
            .encode_state_as_update_v1(held)
    }

    /// The whole document as one v1 update (for snapshots and export).
    pub fn encode_state(&self) -> Vec<u8> {
        self.encode_beyond(&StateVector::default())
    }

    /// The document's state for a compaction snapshot, or `None` while parts of it wait for
    /// missing dependencies (only documents stored before the dependency rule): encoding
    /// merges those parts into structs that may not load again (PROTOCOL §6.8), so such a
    /// document is compacted from what storage holds instead.
    pub fn compaction_state(&self) -> Option<Vec<u8>> {
        let state = self.state.lock();
        let txn = state.doc.transact();
        if txn.has_missing_updates() {
            return None;
        }
        Some(txn.encode_state_as_update_v1(&StateVector::default()))
    }
}

/// Refuses an update whose structs for some client start past the clocks the document holds
/// of that client. A correct peer never sends one: its own edits follow each other, and what
/// it relays is computed from the receiver's state vector. yrs would integrate such a struct
/// across the gap or keep it pending, and with a conflicting struct for the same clocks later
/// it frees a block it still uses (heap use-after-free, found by the server's fuzz target).
fn check_continues(held: &StateVector, update: &Update) -> Result<(), ApplyError> {
    // The decoded update already knows where each client's first struct starts.
    for (client, start) in update.state_vector_lower().iter() {
        let have = held.get(client);
        if *start > have {
            return Err(ApplyError::Gap {
                client: client.get(),
                start: *start,
                held: have,
            });
        }
    }
    Ok(())
}

/// Refuses an update that refers to clocks (as an origin, a parent or a deleted range) that
/// neither the document nor the update holds. yrs would apply the rest and keep such parts
/// waiting, which PROTOCOL §6.8 refuses; finding it before applying spares the document a
/// rebuild from its history, which costs the whole document's size on every refusal.
fn check_references(held: &StateVector, references: &References) -> Result<(), ApplyError> {
    match references.first_missing(|client| held.get(&yrs::block::ClientID::new(client))) {
        Some((client, end)) => Err(ApplyError::MissingReference { client, end }),
        None => Ok(()),
    }
}

fn is_update_message(payload: &[u8]) -> bool {
    payload.first() == Some(&(SYNC_UPDATE as u8))
}

/// Queues `body` for every subscriber but `from`: one allocation, shared by all their queues.
fn broadcast(subscribers: &Subscribers, from: SubKey, body_kind: u8, body: Bytes) {
    for (key, subscriber) in subscribers.iter() {
        if key != from {
            subscriber
                .conn
                .send_body(key.channel, subscriber.generation, body_kind, body.clone());
        }
    }
}

/// Applies stored content to `doc`, one transaction per update.
pub fn apply_stored(doc: &Doc, stored: &StoredDoc) -> Result<(), CorruptContent> {
    for (index, bytes) in stored
        .snapshot
        .iter()
        .chain(stored.updates.iter())
        .enumerate()
    {
        // Stored bytes pass the same validation as network bytes: a damaged file must not
        // make yrs reserve memory or panic either.
        let update = quire_protocol::ysync::decode_update(bytes)
            .map_err(|source| CorruptContent::Undecodable { index, source })?;
        doc.transact_mut()
            .apply_update(update)
            .map_err(|source| CorruptContent::Refused { index, source })?;
    }
    Ok(())
}

/// Merges stored content into one update (compaction).
pub fn merge_stored(stored: &StoredDoc) -> Result<Vec<u8>, CorruptContent> {
    let doc = Doc::new();
    apply_stored(&doc, stored)?;
    let merged = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use quire_protocol::ysync::{decode_sync_with_references, SyncPayload};
    use yrs::{GetString, Text};

    use super::*;

    /// Applies the SYNC payload `payload` as `SubKey::SERVER`; whether it changed the
    /// document, and what `persist` was told.
    fn apply(room: &Room, payload: &[u8]) -> (bool, Option<bool>) {
        let (decoded, references) = decode_sync_with_references(payload).unwrap();
        let (SyncPayload::Step2(update) | SyncPayload::Update(update)) = decoded else {
            panic!("not an update");
        };
        let raw = quire_protocol::ysync::update_bytes(payload);
        let mut persisted = None;
        let changed = room
            .apply(
                SubKey::SERVER,
                (update, &references),
                raw,
                payload,
                |changed| persisted = Some(changed),
            )
            .unwrap();
        (changed, persisted)
    }

    fn text_update(text: &str) -> Vec<u8> {
        let doc = Doc::with_client_id(7);
        let content = doc.get_or_insert_text(crate::restore::CONTENT);
        let mut txn = doc.transact_mut();
        content.insert(&mut txn, 0, text);
        txn.encode_update_v1()
    }

    #[test]
    fn an_empty_step_2_is_acknowledged_as_unchanged_and_leaves_the_document_as_it_was() {
        let room = Room::new(DocId::parse("d", 16).unwrap());
        let empty = encode_step2(EMPTY_UPDATE.to_vec());
        assert_eq!(apply(&room, &empty), (false, Some(false)), "new document");
        assert_eq!(room.encode_state(), EMPTY_UPDATE);

        assert_eq!(
            apply(&room, &encode_update(text_update("kept"))),
            (true, Some(true))
        );
        let before = room.encode_state();
        assert_eq!(apply(&room, &empty), (false, Some(false)), "after an edit");
        assert_eq!(room.encode_state(), before);
        let doc = Doc::new();
        apply_stored(
            &doc,
            &StoredDoc {
                snapshot: Some(before),
                ..StoredDoc::default()
            },
        )
        .unwrap();
        let text = doc.get_or_insert_text(crate::restore::CONTENT);
        assert_eq!(text.get_string(&doc.transact()), "kept");
    }
}

//! Requests on a document's versions (PROTOCOL §6.9), answered by the document's room task so
//! that they are ordered with its writes: a version holds exactly the writes applied before
//! it, and a restore is applied between two writes like any other edit.
//!
//! Also the automatic versions: the first write after the policy's interval saves the
//! document as it was before that write, with the names of those who edited it since the
//! version before.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quire_protocol::request::{Reply, ReplyBody, Request, RequestOp, VersionInfo, VersionKind};
use quire_protocol::ysync::{decode_sync_with_references, encode_update, SyncPayload};
use quire_protocol::{Access, ChannelCode, ChannelId, Message};

use crate::outbox::ConnHandle;
use crate::persist::{Job, Persister};
use crate::room::{Room, SubKey};
use crate::store::{NewVersion, QuotaFull, Store, StoreError};
use crate::versions::HistoryPolicy;

/// Where a reply goes: the channel the request came on, in the opening it came in.
#[derive(Debug, Clone)]
pub(crate) struct ReplyTo {
    pub conn: ConnHandle,
    pub channel: ChannelId,
    pub generation: u64,
}

/// A request on a document channel, with who asked.
#[derive(Debug)]
pub(crate) struct VersionRequest {
    pub reply_to: ReplyTo,
    /// The access the channel was opened with.
    pub access: Access,
    /// The asker's display name, recorded as an author of what it creates.
    pub author: Arc<str>,
    pub request: Request,
    /// The connection's allowance for requests in flight, returned with the reply.
    pub _permit: tokio::sync::OwnedSemaphorePermit,
}

/// What the room task remembers about its document's versions.
#[derive(Debug, Default)]
pub(crate) struct VersionClock {
    /// When the newest version was saved; `None` before the first.
    pub newest_ms: Option<u64>,
    /// Who wrote since then.
    pub authors: BTreeSet<String>,
    /// Before this moment no automatic version is due: a write received earlier needs no
    /// reading of the wall clock (a small but per-write cost, docs/BENCHMARKS.md, F0).
    /// `None` when not known; cleared whenever `newest_ms` changes.
    not_due_before: Option<Instant>,
}

impl VersionClock {
    pub(crate) fn new(newest_ms: Option<u64>) -> Self {
        Self {
            newest_ms,
            ..Self::default()
        }
    }

    /// Whether a write received at `received` is known, without reading the clock, to come
    /// before the next automatic version is due.
    pub(crate) fn surely_not_due(&self, received: Instant) -> bool {
        self.not_due_before.is_some_and(|due| received < due)
    }

    /// Counts `author` among those who wrote since the newest version.
    pub(crate) fn note_author(&mut self, author: &str) {
        if !self.authors.contains(author) {
            self.authors.insert(author.to_owned());
        }
    }

    /// No automatic version is due at `now_ms` (read at `now`): the writes until one is
    /// need not read the clock. Without automatic versions, it is read again once an hour
    /// all the same.
    fn not_due(&mut self, policy: &HistoryPolicy, now_ms: u64, now: Instant) {
        let due_in = match self.newest_ms {
            Some(newest) if !policy.auto_interval.is_zero() => Duration::from_millis(
                (policy.auto_interval.as_millis() as u64)
                    .saturating_sub(now_ms.saturating_sub(newest)),
            ),
            _ => Duration::from_secs(3600),
        };
        self.not_due_before = Some(now + due_in);
    }

    /// A version was saved at `now_ms`: those who wrote before are in it.
    fn saved(&mut self, now_ms: u64) {
        self.newest_ms = Some(now_ms);
        self.authors.clear();
        self.not_due_before = None;
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Before a write by `author` is applied: saves the document as it is now if an automatic
/// version is due. The state is encoded here, before the write (on the document work pool
/// when the document is `large`); storing it happens in the background. `received` is when
/// the write came in.
pub(crate) async fn before_write<S: Store>(
    store: &Arc<S>,
    policy: &HistoryPolicy,
    room: &Arc<Room>,
    clock: &mut VersionClock,
    author: &str,
    received: Instant,
    large: bool,
) {
    if clock.surely_not_due(received) {
        return clock.note_author(author);
    }
    let now = now_ms();
    if policy.auto_due(clock.newest_ms, now) {
        let state = encode(room, large).await;
        // A document that holds nothing yet has no past worth keeping.
        if state != quire_protocol::ysync::EMPTY_UPDATE {
            let authors: Vec<String> = std::mem::take(&mut clock.authors).into_iter().collect();
            clock.saved(now);
            let (store, policy, doc) = (store.clone(), *policy, room.id.clone());
            tokio::spawn(async move {
                let version = NewVersion {
                    created_ms: now,
                    kind: VersionKind::Auto,
                    name: "",
                    authors: &authors,
                    state: &state,
                };
                if let Err(err) = store.save_version(doc.as_str(), version, &policy).await {
                    tracing::warn!(%doc, error = %err, "saving an automatic version failed");
                }
            });
        } else {
            clock.newest_ms.get_or_insert(now);
        }
    } else {
        clock.not_due(policy, now, Instant::now());
    }
    clock.note_author(author);
}

/// Answers one request. Reads run in the background; a named version and a restore run
/// here, between the room's writes.
pub(crate) async fn handle<S: Store>(
    store: &Arc<S>,
    persister: &Persister,
    policy: &HistoryPolicy,
    room: &Arc<Room>,
    clock: &mut VersionClock,
    asked: VersionRequest,
) {
    let VersionRequest {
        reply_to: sub,
        access,
        author,
        request,
        _permit: permit,
    } = asked;
    let id = request.id;
    if request.op.needs_write() && !access.can_write() {
        let code = ChannelCode::ReadOnly;
        return reply(&sub, Reply::refused(id, code.as_u16(), code.description()));
    }
    let doc = room.id.clone();
    match request.op {
        RequestOp::ListVersions => {
            let store = store.clone();
            tokio::spawn(async move {
                let answer = match store.list_versions(doc.as_str()).await {
                    Ok(versions) => Reply::ok(id, ReplyBody::Versions(versions)),
                    Err(err) => storage_failed(id, &err),
                };
                reply(&sub, answer);
                drop(permit);
            });
        }
        RequestOp::FetchVersion { version } => {
            let store = store.clone();
            tokio::spawn(async move {
                let answer = match store.load_version(doc.as_str(), version).await {
                    Ok(Some((info, state))) => Reply::ok(id, ReplyBody::Content { info, state }),
                    Ok(None) => no_such_version(id),
                    Err(err) => storage_failed(id, &err),
                };
                reply(&sub, answer);
                drop(permit);
            });
        }
        RequestOp::DeleteVersion { version } => {
            let answer = match store.delete_version(doc.as_str(), version).await {
                Ok(true) => Reply::ok(id, ReplyBody::Done),
                Ok(false) => no_such_version(id),
                Err(err) => storage_failed(id, &err),
            };
            reply(&sub, answer);
        }
        RequestOp::CreateVersion { name } => {
            // Named versions are rare: encoded off the room's thread whatever the size.
            let state = encode(room, true).await;
            let answer = match save(
                store,
                policy,
                room.id.as_str(),
                clock,
                Asked {
                    kind: VersionKind::Named,
                    name: &name,
                    author: &author,
                    state: &state,
                },
            )
            .await
            {
                Ok(Ok(info)) => Reply::ok(id, ReplyBody::Version(info)),
                Ok(Err(QuotaFull)) => Reply::refused(
                    id,
                    QUOTA_FULL,
                    "the document's named versions fill its quota: delete one first",
                ),
                Err(err) => storage_failed(id, &err),
            };
            reply(&sub, answer);
        }
        RequestOp::RestoreVersion { version } => {
            let answer =
                match restore(store, persister, policy, room, clock, &author, version).await {
                    Ok(undo) => Reply::ok(id, ReplyBody::Version(undo)),
                    Err(refusal) => refusal.into_reply(id),
                };
            reply(&sub, answer);
        }
        RequestOp::Digest => {
            // In order with the writes: the digest covers every write the channel sent before
            // asking, and the reply follows every update relayed to it before (§6.10).
            let room = room.clone();
            let (digest, _) = crate::work::run(move || room.digest()).await;
            reply(&sub, Reply::ok(id, ReplyBody::Digest(digest)));
        }
        RequestOp::Trash { .. }
        | RequestOp::Untrash { .. }
        | RequestOp::ListTrash
        | RequestOp::Purge { .. } => {
            // The connection answers these on channel 0 and never forwards them.
            let code = ChannelCode::BadRequest;
            reply(
                &sub,
                Reply::refused(id, code.as_u16(), "ask this on channel 0"),
            );
        }
    }
}

/// Reply status: a named version does not fit the document's quota.
pub(crate) const QUOTA_FULL: u16 = 4413;

/// A version a user asks for (named, or the one before a restore): what it is and who made it.
struct Asked<'a> {
    kind: VersionKind,
    name: &'a str,
    author: &'a str,
    /// The document's whole state, encoded once by the caller.
    state: &'a [u8],
}

async fn save<S: Store>(
    store: &Arc<S>,
    policy: &HistoryPolicy,
    doc: &str,
    clock: &mut VersionClock,
    asked: Asked<'_>,
) -> Result<Result<VersionInfo, QuotaFull>, StoreError> {
    let Asked {
        kind,
        name,
        author,
        state,
    } = asked;
    let now = now_ms();
    let mut authors: BTreeSet<String> = clock.authors.clone();
    authors.insert(author.to_owned());
    let authors: Vec<String> = authors.into_iter().collect();
    let version = NewVersion {
        created_ms: now,
        kind,
        name,
        authors: &authors,
        state,
    };
    let saved = store.save_version(doc, version, policy).await?;
    if saved.is_ok() {
        // What was edited up to now is in this version; the next automatic one is an
        // interval away.
        clock.saved(now);
    }
    Ok(saved)
}

/// Why a restore was not done.
enum Refusal {
    NoSuchVersion,
    Storage(StoreError),
    Corrupt(String),
}

impl Refusal {
    fn into_reply(self, id: u32) -> Reply {
        match self {
            Refusal::NoSuchVersion => no_such_version(id),
            Refusal::Storage(err) => storage_failed(id, &err),
            Refusal::Corrupt(detail) => {
                tracing::error!(detail, "restore failed: stored content does not load");
                let code = ChannelCode::StorageFailure;
                Reply::refused(id, code.as_u16(), code.description())
            }
        }
    }
}

/// Restores a version: saves the current state as a version first (so the restore can be
/// undone), then applies the edit that makes the text equal to the version's, relays it to
/// every subscriber (the asker included) and stores it. Answers once it is durable.
async fn restore<S: Store>(
    store: &Arc<S>,
    persister: &Persister,
    policy: &HistoryPolicy,
    room: &Arc<Room>,
    clock: &mut VersionClock,
    author: &str,
    version: u64,
) -> Result<VersionInfo, Refusal> {
    let (info, target) = store
        .load_version(room.id.as_str(), version)
        .await
        .map_err(Refusal::Storage)?
        .ok_or(Refusal::NoSuchVersion)?;
    // Encoded once, for the version that undoes the restore and for the diff: nothing else
    // touches the room while its task is here.
    let current = encode(room, true).await;
    let undo = match save(
        store,
        policy,
        room.id.as_str(),
        clock,
        Asked {
            kind: VersionKind::BeforeRestore,
            name: "",
            author,
            state: &current,
        },
    )
    .await
    .map_err(Refusal::Storage)?
    {
        Ok(undo) => undo,
        Err(QuotaFull) => unreachable!("only named versions are refused"),
    };
    let Some(slot) = persister.reserve().await else {
        return Err(Refusal::Storage(StoreError::Corrupt {
            doc: room.id.to_string(),
            detail: "the server is stopping".into(),
        }));
    };
    let work = move || -> Result<Option<Vec<u8>>, String> {
        let text = crate::restore::text_of(&target).map_err(|e| e.to_string())?;
        crate::restore::forward_edit(&current, &text, crate::restore::fresh_client_id())
            .map_err(|e| e.to_string())
    };
    let edit = crate::work::run(work).await.map_err(Refusal::Corrupt)?;
    if let Some(edit) = edit {
        let payload = encode_update(edit);
        let (decoded, references) =
            decode_sync_with_references(&payload).map_err(|e| Refusal::Corrupt(e.to_string()))?;
        let SyncPayload::Update(update) = decoded else {
            return Err(Refusal::Corrupt("a restore edit is an update".into()));
        };
        let raw = quire_protocol::ysync::update_bytes(&payload).to_vec();
        let persist = |changed: bool| {
            slot.submit(Job::Write {
                room: room.clone(),
                data: changed.then(|| raw.clone()),
                ack: None,
                received: Instant::now(),
            })
        };
        // Nobody's key: the edit is relayed to every subscriber, the asker included.
        room.try_apply(
            SubKey::SERVER,
            (update, &references),
            &raw,
            &payload,
            persist,
        )
        .map_err(|e| Refusal::Corrupt(e.to_string()))?;
        persister.flush().await;
        if room
            .needs_snapshot
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(Refusal::Storage(StoreError::Corrupt {
                doc: room.id.to_string(),
                detail: "the restore's commit failed".into(),
            }));
        }
    }
    tracing::info!(doc = %room.id, version = info.id, undo = undo.id, "version restored");
    Ok(undo)
}

/// The room's whole state, encoded here or, for a `large` document, on the work pool.
async fn encode(room: &Arc<Room>, large: bool) -> Vec<u8> {
    if large {
        let room = room.clone();
        crate::work::run(move || room.encode_state()).await
    } else {
        room.encode_state()
    }
}

fn reply(to: &ReplyTo, reply: Reply) {
    to.conn
        .send(to.channel, to.generation, Message::Reply(reply.encode()));
}

fn no_such_version(id: u32) -> Reply {
    Reply::refused(id, ChannelCode::UnknownChannel.as_u16(), "no such version")
}

fn storage_failed(id: u32, err: &StoreError) -> Reply {
    tracing::error!(error = %err, "version request failed in storage");
    let code = ChannelCode::StorageFailure;
    Reply::refused(id, code.as_u16(), code.description())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_before_the_next_version_is_due_need_no_clock_and_a_saved_version_resets_it() {
        let policy = HistoryPolicy {
            auto_interval: Duration::from_secs(10),
            ..HistoryPolicy::default()
        };
        let t0 = Instant::now();
        let mut clock = VersionClock::new(Some(1_000));
        assert!(
            !clock.surely_not_due(t0),
            "unknown until the clock was read once"
        );
        clock.not_due(&policy, 4_000, t0);
        assert!(clock.surely_not_due(t0 + Duration::from_millis(6_999)));
        assert!(
            !clock.surely_not_due(t0 + Duration::from_secs(7)),
            "due 10 s after 1,000"
        );
        clock.note_author("ada");
        clock.saved(5_000);
        assert!(
            clock.authors.is_empty(),
            "the authors are in the saved version"
        );
        assert!(
            !clock.surely_not_due(t0),
            "read again after a version is saved"
        );

        let off = HistoryPolicy {
            auto_interval: Duration::ZERO,
            ..HistoryPolicy::default()
        };
        clock.not_due(&off, 6_000, t0);
        assert!(clock.surely_not_due(t0 + Duration::from_secs(3_599)));
    }
}

//! Divergence detection: what a server holds of a document against what the store holds, by
//! state digest (PROTOCOL §6.10, docs/SCALING.md).
//!
//! A digest is only comparable with another taken through the same stored update, so every
//! digest here travels with its head: the number of the last stored update it covers.
//! - [`HeldDigest`]: a digest and its head.
//! - [`stored_digest`]: the digest of what the store holds, for the command line's `verify`
//!   and for [`compare_quiet_room`].
//! - [`compare_quiet_room`]: on a shared store, once a loaded document has gone quiet, the
//!   room is compared with the store, the check and any mismatch counted; on a mismatch the
//!   room's task merges in what the store holds and stores again what the store lost
//!   ([`repair`]).

use std::sync::atomic::Ordering;

use quire_protocol::yrs::{Doc, ReadTxn, Transact};
use quire_protocol::StateDigest;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::room::{apply_stored, Room};
use crate::store::{CorruptContent, Store, StoreError, StoredDoc};

/// A document's digest and the number of the last stored update it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldDigest {
    pub head: i64,
    pub digest: StateDigest,
}

/// One line of a server's `/digests` answer (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestLine {
    pub doc: String,
    pub head: i64,
    /// [`StateDigest::to_hex`].
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptContent),
}

/// The digest of stored content (on the document work pool: it builds the whole document).
pub async fn digest_of_stored(
    stored: StoredDoc,
) -> Result<(HeldDigest, StoredDoc), CorruptContent> {
    crate::work::run(move || {
        let doc = Doc::new();
        apply_stored(&doc, &stored)?;
        let digest = StateDigest::of(&doc.transact());
        Ok((
            HeldDigest {
                head: stored.head,
                digest,
            },
            stored,
        ))
    })
    .await
}

/// What the store holds of `doc`: its digest and head.
pub async fn stored_digest<S: Store>(store: &S, doc: &str) -> Result<HeldDigest, DigestError> {
    let stored = store.load(doc).await?;
    Ok(digest_of_stored(stored).await?.0)
}

/// Bounds the comparisons running at once on this server: each reads and rebuilds a whole
/// document beside the rooms' work (after a restart every loaded document is due at once).
static COMPARISONS_AT_ONCE: Semaphore = Semaphore::const_new(2);

/// Compares `room`, which held `held` once everything it applied was stored, with the store
/// at the same head. Skipped if the store has moved on (the next quiet spell compares again).
/// A mismatch is counted and logged as an error, and what the store holds is returned: the
/// room's task merges it ([`repair`]), so a server that missed an update gets it.
pub async fn compare_quiet_room<S: Store>(
    store: &S,
    metrics: &Metrics,
    room: &Room,
    held: HeldDigest,
) -> Option<StoredDoc> {
    let _turn = COMPARISONS_AT_ONCE
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let stored = match store.load(room.id.as_str()).await {
        Ok(stored) if stored.head == held.head => stored,
        Ok(_) => return None,
        Err(err) => {
            tracing::warn!(doc = %room.id, error = %err, "reading the document to compare digests failed");
            return None;
        }
    };
    let (in_store, stored) = match digest_of_stored(stored).await {
        Ok(compared) => compared,
        Err(err) => {
            tracing::error!(doc = %room.id, error = %err, "the stored document does not load");
            return None;
        }
    };
    metrics.digest_checks.fetch_add(1, Ordering::Relaxed);
    if in_store.digest == held.digest {
        return None;
    }
    metrics.digest_mismatches.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        doc = %room.id,
        head = held.head,
        held = %held.digest,
        stored = %in_store.digest,
        "this server's copy of the document differs from the store's; merging what the store holds"
    );
    Some(stored)
}

/// Merges what the store holds into `room` and relays what it lacked (run by the room's task,
/// in order with its other work). If the room then still differs, it holds content the store
/// lost: returned, as one update, for the room's task to store again.
pub fn repair(room: &Room, stored: StoredDoc) -> Option<Vec<u8>> {
    let head = stored.head;
    let doc = Doc::new();
    if let Err(err) = apply_stored(&doc, &stored) {
        tracing::error!(doc = %room.id, error = %err, "the stored document does not load");
        return None;
    }
    let (store_digest, store_holds) = {
        let txn = doc.transact();
        (StateDigest::of(&txn), txn.state_vector())
    };
    let added = room.apply_remote(stored);
    let (after, _) = room.digest();
    if after == store_digest {
        tracing::warn!(doc = %room.id, head, merged_bytes = added, "repaired: the copy here now holds what the store holds");
        return None;
    }
    let lost = room.encode_beyond(&store_holds);
    tracing::error!(
        doc = %room.id,
        head,
        merged_bytes = added,
        lost_bytes = lost.len(),
        "the copy here holds content the store lacks; storing it again"
    );
    Some(lost)
}

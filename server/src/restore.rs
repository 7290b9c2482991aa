//! The forward edit of a restore (PROTOCOL §6.9): a new update that, applied to a document,
//! makes its text equal to a version's. Nothing is rewritten: the restore is an edit like any
//! other, by a client ID of its own, so it merges with concurrent typing and can be undone.
//!
//! The edit touches only what differs (a character diff, bounded in time), so text that the
//! version and the current document share keeps its identity, and with it the cursors and
//! the concurrent edits anchored in it.

use std::time::{Duration, Instant};

use quire_protocol::yrs::{
    updates::decoder::Decode, ClientID, Doc, GetString, OffsetKind, Options, ReadTxn, Text,
    Transact, Update,
};
use similar::{Algorithm, DiffOp, TextDiff};

/// The shared text every Quire editor binds to (PROTOCOL §6.4).
pub const CONTENT: &str = "content";

/// The longest a diff may search for a small edit before it settles for a coarser one.
const DIFF_DEADLINE: Duration = Duration::from_millis(200);

/// Why a restore edit could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("a stored state does not decode: {0}")]
    Undecodable(String),
    #[error("a stored state does not apply: {0}")]
    Refused(String),
}

/// A fresh Yjs client ID for a restore's edit, below 2^53 as every client ID must be.
pub fn fresh_client_id() -> u64 {
    rand::random::<u64>() & ((1 << 53) - 1)
}

/// The text of the root `content` of a document state (one v1 update).
pub fn text_of(state: &[u8]) -> Result<String, RestoreError> {
    let doc = doc_from(state, 1)?;
    let text = doc.get_or_insert_text(CONTENT);
    let txn = doc.transact();
    Ok(text.get_string(&txn))
}

/// The update that turns the document `current` (a whole state) into one whose text equals
/// `target`'s, made by `client_id`. `None` when the texts are already equal.
pub fn forward_edit(
    current: &[u8],
    target_text: &str,
    client_id: u64,
) -> Result<Option<Vec<u8>>, RestoreError> {
    let doc = doc_from(current, client_id)?;
    let text = doc.get_or_insert_text(CONTENT);
    let mut txn = doc.transact_mut();
    let before = txn.state_vector();
    let old = text.get_string(&txn);
    if old == target_text {
        return Ok(None);
    }
    let diff = TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .deadline(Instant::now() + DIFF_DEADLINE)
        .diff_chars(old.as_str(), target_text);
    // Byte offsets (the document counts in UTF-8 bytes) of each character boundary, in the
    // old text and the new one.
    let old_at = char_offsets(&old);
    let new_at = char_offsets(target_text);
    // From the end backwards, so that the old text's offsets stay valid for what is left.
    for op in diff.ops().iter().rev() {
        match *op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete {
                old_index, old_len, ..
            } => {
                let (from, to) = (old_at[old_index], old_at[old_index + old_len]);
                text.remove_range(&mut txn, from as u32, (to - from) as u32);
            }
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => {
                let piece = &target_text[new_at[new_index]..new_at[new_index + new_len]];
                text.insert(&mut txn, old_at[old_index] as u32, piece);
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                let (from, to) = (old_at[old_index], old_at[old_index + old_len]);
                text.remove_range(&mut txn, from as u32, (to - from) as u32);
                let piece = &target_text[new_at[new_index]..new_at[new_index + new_len]];
                text.insert(&mut txn, from as u32, piece);
            }
        }
    }
    debug_assert_eq!(text.get_string(&txn), target_text);
    Ok(Some(txn.encode_state_as_update_v1(&before)))
}

fn doc_from(state: &[u8], client_id: u64) -> Result<Doc, RestoreError> {
    let doc = Doc::with_options(Options {
        offset_kind: OffsetKind::Bytes,
        ..Options::with_client_id(ClientID::new(client_id))
    });
    let update = Update::decode_v1(state).map_err(|e| RestoreError::Undecodable(e.to_string()))?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| RestoreError::Refused(e.to_string()))?;
    Ok(doc)
}

/// `offsets[i]` is the byte offset of character `i`; the last entry is the text's length.
fn char_offsets(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(at, _)| at)
        .chain(std::iter::once(text.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(client_id: u64, content: &str) -> Vec<u8> {
        let doc = Doc::with_client_id(client_id);
        let text = doc.get_or_insert_text(CONTENT);
        text.insert(&mut doc.transact_mut(), 0, content);
        let state = doc
            .transact()
            .encode_state_as_update_v1(&Default::default());
        state
    }

    fn apply(state: &[u8], update: &[u8]) -> String {
        let doc = doc_from(state, 99).unwrap();
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
        let text = doc.get_or_insert_text(CONTENT);
        let txn = doc.transact();
        text.get_string(&txn)
    }

    #[test]
    fn the_edit_makes_the_text_equal_to_the_version() {
        let current = state_with(1, "# Plan\n\nShip on Friday — ünïcödé ✓\nEnd");
        for target in [
            "# Plan\n\nShip on Monday — ünïcödé ✓\nEnd",
            "",
            "completely different 日本語",
            "# Plan\n\nShip on Friday — ünïcödé ✓\nEnd and more",
        ] {
            let edit = forward_edit(&current, target, 7).unwrap().unwrap();
            assert_eq!(apply(&current, &edit), target);
        }
        assert!(forward_edit(&current, &text_of(&current).unwrap(), 7)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_restore_merges_with_concurrent_typing() {
        let base = state_with(1, "alpha beta gamma");
        let restore = forward_edit(&base, "alpha BETA gamma", 7).unwrap().unwrap();
        // Someone types at the end meanwhile.
        let typist = doc_from(&base, 2).unwrap();
        let text = typist.get_or_insert_text(CONTENT);
        let typing = {
            let mut txn = typist.transact_mut();
            let before = txn.state_vector();
            text.insert(&mut txn, 16, " delta");
            txn.encode_state_as_update_v1(&before)
        };
        // Both orders give the same text, with both changes.
        let one = doc_from(&base, 3).unwrap();
        let two = doc_from(&base, 4).unwrap();
        for (doc, first, second) in [(&one, &restore, &typing), (&two, &typing, &restore)] {
            let mut txn = doc.transact_mut();
            txn.apply_update(Update::decode_v1(first).unwrap()).unwrap();
            txn.apply_update(Update::decode_v1(second).unwrap())
                .unwrap();
        }
        let read = |doc: &Doc| {
            let text = doc.get_or_insert_text(CONTENT);
            let txn = doc.transact();
            text.get_string(&txn)
        };
        assert_eq!(read(&one), read(&two));
        assert_eq!(read(&one), "alpha BETA gamma delta");
    }
}

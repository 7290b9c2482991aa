//! A document's state digest (§6.10): a SHA-256 of what a replica holds, the same on every
//! replica that holds the same edits, whatever order they arrived in and however they were
//! stored (one update per edit, a compaction snapshot, a merge of both).
//!
//! It is computed from the two sets that define a Yjs document's content: the state vector
//! (which clocks of which clients it has integrated) and the delete set (which of those were
//! deleted, garbage-collected content included). A v1 encoding of the document would not do:
//! it depends on how blocks happen to be split and merged, which differs between replicas that
//! hold the same content. Both sets are written in a canonical order (clients ascending,
//! ranges ascending and merged) before hashing, so any implementation, Yjs included, can
//! compute the same bytes.

use std::fmt;
use std::ops::Range;

use sha2::{Digest as _, Sha256};
use yrs::ReadTxn;

use crate::varint::write_varint;

/// The bytes of a digest.
pub const DIGEST_LEN: usize = 32;

/// A document's state digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateDigest(pub [u8; DIGEST_LEN]);

impl StateDigest {
    /// The digest of what `txn`'s document holds. Costs one pass over the document's blocks.
    pub fn of(txn: &impl ReadTxn) -> Self {
        let snapshot = txn.snapshot();
        let mut clocks: Vec<(u64, u64)> = snapshot
            .state_map
            .iter()
            .map(|(client, clock)| (client.get(), u64::from(*clock)))
            .filter(|(_, clock)| *clock > 0)
            .collect();
        let deletes = snapshot.delete_set.iter().map(|(client, ranges)| {
            (
                client.get(),
                ranges.iter().cloned().collect::<Vec<Range<u32>>>(),
            )
        });
        clocks.sort_unstable();
        Self::hash(&canonical_bytes(&clocks, deletes))
    }

    /// The digest of canonical bytes ([`canonical_bytes`]).
    pub fn hash(canonical: &[u8]) -> Self {
        Self(Sha256::digest(canonical).into())
    }

    /// Lower-case hexadecimal, as logs, metrics and the command line show it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Reads [`StateDigest::to_hex`]'s form back.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != DIGEST_LEN * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0; DIGEST_LEN];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Debug for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateDigest({})", self.to_hex())
    }
}

impl fmt::Display for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The bytes that are hashed (§6.10): the state vector's entries with a clock above 0, then
/// the delete set's clients with at least one range, each list ascending by client ID; every
/// client's ranges ascending, overlapping or adjacent ones merged, empty ones left out.
///
/// ```text
/// clients varint | (client varint | clock varint) × clients
/// deleters varint | (client varint | ranges varint | (start varint | len varint) × ranges) × deleters
/// ```
///
/// `clocks` must be sorted by client; `deletes` may come in any order.
pub fn canonical_bytes(
    clocks: &[(u64, u64)],
    deletes: impl IntoIterator<Item = (u64, Vec<Range<u32>>)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + clocks.len() * 12);
    write_varint(&mut out, clocks.len() as u64);
    for (client, clock) in clocks {
        write_varint(&mut out, *client);
        write_varint(&mut out, *clock);
    }
    let mut deleters: Vec<(u64, Vec<Range<u32>>)> = deletes
        .into_iter()
        .map(|(client, ranges)| (client, merged(ranges)))
        .filter(|(_, ranges)| !ranges.is_empty())
        .collect();
    deleters.sort_unstable_by_key(|(client, _)| *client);
    write_varint(&mut out, deleters.len() as u64);
    for (client, ranges) in deleters {
        write_varint(&mut out, client);
        write_varint(&mut out, ranges.len() as u64);
        for range in ranges {
            write_varint(&mut out, range.start.into());
            write_varint(&mut out, (range.end - range.start).into());
        }
    }
    out
}

/// Sorts ranges and merges those that overlap or touch; drops empty ones.
fn merged(mut ranges: Vec<Range<u32>>) -> Vec<Range<u32>> {
    ranges.retain(|range| range.start < range.end);
    ranges.sort_unstable_by_key(|range| range.start);
    let mut out: Vec<Range<u32>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => out.push(range),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{
        Doc, GetString, Options, StateVector, Text, TextRef, Transact, TransactionMut, Update,
    };

    fn doc(client: u64) -> Doc {
        Doc::with_options(Options {
            client_id: yrs::block::ClientID::new(client),
            ..Options::default()
        })
    }

    fn digest(doc: &Doc) -> StateDigest {
        StateDigest::of(&doc.transact())
    }

    fn apply(doc: &Doc, update: &[u8]) {
        let update = Update::decode_v1(update).expect("decodes");
        doc.transact_mut().apply_update(update).expect("applies");
    }

    /// The update `change` makes to `doc`'s `content` text.
    fn edit(doc: &Doc, change: impl FnOnce(&TextRef, &mut TransactionMut)) -> Vec<u8> {
        let before = doc.transact().state_vector();
        // Taken before the transaction: getting a root type needs one of its own.
        let text = doc.get_or_insert_text("content");
        change(&text, &mut doc.transact_mut());
        doc.transact().encode_diff_v1(&before)
    }

    /// Edits by two clients, with deletions; the last two are concurrent.
    fn history() -> Vec<Vec<u8>> {
        let (a, b) = (doc(1), doc(2));
        let first = edit(&a, |text, txn| text.insert(txn, 0, "hello world"));
        apply(&b, &first);
        let second = edit(&b, |text, txn| text.insert(txn, 5, ", dear"));
        apply(&a, &second);
        let third = edit(&a, |text, txn| text.remove_range(txn, 0, 3));
        let fourth = edit(&b, |text, txn| {
            text.remove_range(txn, 2, 4);
            text.push(txn, "!");
        });
        vec![first, second, third, fourth]
    }

    #[test]
    fn same_content_same_digest_whatever_the_order_or_encoding() {
        let updates = history();
        let in_order = doc(10);
        for update in &updates {
            apply(&in_order, update);
        }
        // The concurrent updates arrive in the other order on another replica.
        let swapped = doc(11);
        for index in [0, 1, 3, 2] {
            apply(&swapped, &updates[index]);
        }
        // A replica loaded from one merged snapshot (as after a compaction).
        let merged = doc(12);
        let snapshot = swapped
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        apply(&merged, &snapshot);
        let text = |d: &Doc| d.get_or_insert_text("content").get_string(&d.transact());
        assert_eq!(text(&in_order), text(&swapped));
        assert_eq!(text(&in_order), text(&merged));
        assert_eq!(digest(&in_order), digest(&swapped));
        assert_eq!(digest(&in_order), digest(&merged));
    }

    #[test]
    fn any_missing_edit_or_deletion_changes_the_digest() {
        let updates = history();
        let full = doc(10);
        for update in &updates {
            apply(&full, update);
        }
        let mut seen = vec![digest(&full)];
        for skipped in 1..updates.len() {
            let partial = doc(10);
            for (index, update) in updates.iter().enumerate() {
                if index < skipped {
                    apply(&partial, update);
                }
            }
            seen.push(digest(&partial));
        }
        seen.push(digest(&doc(10)));
        let distinct: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), seen.len(), "{seen:?}");
    }

    #[test]
    fn canonical_bytes_sort_and_merge() {
        let sorted = canonical_bytes(
            &[(1, 5), (7, 2)],
            vec![
                (7, vec![0..1, 1..2]),
                (1, vec![3..4, 0..2, 1..3]),
                (9, vec![]),
            ],
        );
        let expected = canonical_bytes(
            &[(1, 5), (7, 2)],
            [(1, vec![0..2, 2..4]), (7, vec![0..1, 1..2])],
        );
        assert_eq!(sorted, expected);
        assert_eq!(expected, [2, 1, 5, 7, 2, 2, 1, 1, 0, 4, 7, 1, 0, 2]);
    }

    #[test]
    fn hex_round_trips() {
        let digest = digest(&doc(3));
        assert_eq!(StateDigest::from_hex(&digest.to_hex()), Some(digest));
        assert_eq!(StateDigest::from_hex("zz"), None);
        let signed = format!("+f{}", &digest.to_hex()[2..]);
        assert_eq!(StateDigest::from_hex(&signed), None);
    }

    #[test]
    fn an_empty_document_hashes_two_zero_counts() {
        assert_eq!(digest(&doc(3)), StateDigest::hash(&[0, 0]));
    }
}

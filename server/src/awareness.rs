//! A room's awareness (presence): the latest state of each awareness client ID, with the
//! subscriber that sent it, so that a subscriber that leaves can be announced as gone.
//! Follows y-protocols' rules: a higher clock wins; at equal clock a removal wins.
//!
//! Presence is bounded (PROTOCOL §6.6), since every newcomer is sent all of it: each state is
//! JSON of at most [`MAX_STATE_BYTES`]; a channel holds at most [`MAX_STATES_PER_WRITER`]
//! present states ([`MAX_STATES_PER_READER`] on a read-only channel, which may also not remove
//! states another channel set); a document holds at most [`MAX_STATES_PER_DOC`] present states
//! and [`MAX_DOC_BYTES`] of JSON. An update that would break a rule is refused whole.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use quire_protocol::varint::{write_string, write_varint};
use quire_protocol::Access;
use yrs::sync::awareness::AwarenessUpdate;

use crate::subscription::SubKey;

/// Largest JSON of one awareness state, in bytes.
pub const MAX_STATE_BYTES: usize = 16 * 1024;
/// Present states one writable channel may hold (its own, and a few it relays).
pub const MAX_STATES_PER_WRITER: usize = 4;
/// Present states one read-only channel may hold: its own presence only.
pub const MAX_STATES_PER_READER: usize = 1;
/// Present states in one document.
pub const MAX_STATES_PER_DOC: usize = 1_000;
/// JSON bytes of the present states in one document: what a newcomer is sent at most.
pub const MAX_DOC_BYTES: usize = 1024 * 1024;

/// Why an awareness update was refused (the channel gets 4422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwarenessRefused {
    #[error("the state of client {0} is not JSON")]
    NotJson(u64),
    #[error("the state of client {0} is larger than {MAX_STATE_BYTES} bytes")]
    StateTooLarge(u64),
    #[error("a read-only channel may not remove the state of client {0}, set by another")]
    NotOwn(u64),
    #[error("the channel would hold more than {0} awareness states")]
    TooManyForChannel(usize),
    #[error("the document would hold more than {MAX_STATES_PER_DOC} awareness states or {MAX_DOC_BYTES} bytes of them")]
    DocumentFull,
}

#[derive(Debug)]
struct Entry {
    clock: u32,
    json: String,
    owner: SubKey,
    /// For a state another server relayed (owner [`SubKey::SERVER`]): when it was last set
    /// or renewed, to drop it once its client stops renewing it.
    renewed: Option<Instant>,
}

impl Entry {
    fn present(&self) -> bool {
        self.json != NULL
    }
}

#[derive(Debug, Default)]
pub struct RoomAwareness {
    entries: HashMap<u64, Entry>,
}

const NULL: &str = "null";

impl RoomAwareness {
    /// Applies an update from `owner`, a channel with `access`; returns whether anything
    /// changed. A refused update changes nothing.
    pub fn apply(
        &mut self,
        owner: SubKey,
        access: Access,
        update: &AwarenessUpdate,
    ) -> Result<bool, AwarenessRefused> {
        self.check(owner, access, update)?;
        let mut changed = false;
        for (client, entry) in &update.clients {
            let client = client.get();
            if self.is_newer(client, entry.clock, &entry.json) {
                self.set(client, entry, owner, None);
                changed = true;
            }
        }
        Ok(changed)
    }

    fn set(
        &mut self,
        client: u64,
        state: &yrs::sync::awareness::AwarenessUpdateEntry,
        owner: SubKey,
        renewed: Option<Instant>,
    ) {
        let entry = Entry {
            clock: state.clock,
            json: state.json.to_string(),
            owner,
            renewed,
        };
        self.entries.insert(client, entry);
    }

    fn is_newer(&self, client: u64, clock: u32, json: &str) -> bool {
        match self.entries.get(&client) {
            None => true,
            Some(current) => {
                clock > current.clock
                    || (clock == current.clock && json == NULL && current.present())
            }
        }
    }

    /// Whether applying `update` keeps every rule of the module doc.
    fn check(
        &self,
        owner: SubKey,
        access: Access,
        update: &AwarenessUpdate,
    ) -> Result<(), AwarenessRefused> {
        // What the update changes: client → its new JSON (entries it would not change are
        // left out, as `apply` skips them).
        let mut changes: HashMap<u64, &str> = HashMap::new();
        for (client, entry) in &update.clients {
            let client = client.get();
            let json: &str = &entry.json;
            if json != NULL {
                if json.len() > MAX_STATE_BYTES {
                    return Err(AwarenessRefused::StateTooLarge(client));
                }
                if serde_json::from_str::<serde::de::IgnoredAny>(json).is_err() {
                    return Err(AwarenessRefused::NotJson(client));
                }
            }
            if !self.is_newer(client, entry.clock, json) {
                continue;
            }
            // A reader may take over a state with a newer clock (its own, after a reconnect
            // that the old connection has not noticed yet), but not remove another's.
            let other_owner = self.entries.get(&client).is_some_and(|e| e.owner != owner);
            if !access.can_write() && other_owner && json == NULL {
                return Err(AwarenessRefused::NotOwn(client));
            }
            changes.insert(client, json);
        }
        if changes.is_empty() {
            return Ok(());
        }
        // The present states after the update: the channel's and the document's.
        let (mut mine, mut states, mut bytes) = (0usize, 0usize, 0usize);
        for (client, entry) in &self.entries {
            let (json, owned) = match changes.get(client) {
                Some(json) => (*json, true),
                None => (entry.json.as_str(), entry.owner == owner),
            };
            if json != NULL {
                states += 1;
                bytes += json.len();
                mine += usize::from(owned);
            }
        }
        for (client, json) in &changes {
            if !self.entries.contains_key(client) && *json != NULL {
                states += 1;
                bytes += json.len();
                mine += 1;
            }
        }
        let cap = if access.can_write() {
            MAX_STATES_PER_WRITER
        } else {
            MAX_STATES_PER_READER
        };
        if mine > cap {
            return Err(AwarenessRefused::TooManyForChannel(cap));
        }
        if states > MAX_STATES_PER_DOC || bytes > MAX_DOC_BYTES {
            return Err(AwarenessRefused::DocumentFull);
        }
        Ok(())
    }

    /// Bytes the states take, roughly: their JSON and a fixed cost per entry.
    pub fn bytes(&self) -> usize {
        const PER_ENTRY: usize = 64;
        self.entries
            .values()
            .map(|e| e.json.len() + PER_ENTRY)
            .sum()
    }

    /// An awareness update holding every present (non-null) state, for a new subscriber.
    pub fn snapshot(&self) -> Option<Vec<u8>> {
        let present: Vec<_> = self.entries.iter().filter(|(_, e)| e.present()).collect();
        if present.is_empty() {
            return None;
        }
        Some(encode(
            present
                .iter()
                .map(|(id, e)| (**id, e.clock, e.json.as_str())),
        ))
    }

    /// Applies an update another server relayed (a shared database): its server checked it
    /// against the rules above for its channel; here it only takes the newer states, owned by
    /// [`SubKey::SERVER`] and stamped `now`. Whether anything changed.
    pub fn apply_remote(&mut self, update: &AwarenessUpdate, now: Instant) -> bool {
        let mut changed = false;
        for (client, entry) in &update.clients {
            let client = client.get();
            if self.is_newer(client, entry.clock, &entry.json) {
                self.set(client, entry, SubKey::SERVER, Some(now));
                changed = true;
            } else if let Some(current) = self.entries.get_mut(&client) {
                if current.clock == entry.clock && current.renewed.is_some() {
                    current.renewed = Some(now);
                }
            }
        }
        changed
    }

    /// Removes the states other servers relayed that were not renewed within `timeout` of
    /// `now` (their client's server is gone: PROTOCOL §6.6's clients renew every 15 s);
    /// returns the removal update to broadcast.
    pub fn expire_remote(&mut self, now: Instant, timeout: Duration) -> Option<Vec<u8>> {
        let mut removed = Vec::new();
        self.entries.retain(|id, entry| match entry.renewed {
            Some(renewed) if now.duration_since(renewed) > timeout => {
                if entry.present() {
                    removed.push((*id, entry.clock + 1));
                }
                false
            }
            _ => true,
        });
        if removed.is_empty() {
            return None;
        }
        Some(encode(
            removed.into_iter().map(|(id, clock)| (id, clock, NULL)),
        ))
    }

    /// Marks every state `owner` sent as removed; returns the removal update to broadcast.
    pub fn remove_owned_by(&mut self, owner: SubKey) -> Option<Vec<u8>> {
        let mut removed = Vec::new();
        self.entries.retain(|id, entry| {
            if entry.owner == owner {
                if entry.present() {
                    removed.push((*id, entry.clock + 1));
                }
                false
            } else {
                true
            }
        });
        if removed.is_empty() {
            return None;
        }
        Some(encode(
            removed.into_iter().map(|(id, clock)| (id, clock, NULL)),
        ))
    }
}

/// y-protocols awareness encoding: count, then (client ID, clock, JSON) per client.
fn encode<'a>(entries: impl ExactSizeIterator<Item = (u64, u32, &'a str)>) -> Vec<u8> {
    let mut out = Vec::new();
    write_varint(&mut out, entries.len() as u64);
    for (client, clock, json) in entries {
        write_varint(&mut out, client);
        write_varint(&mut out, clock.into());
        write_string(&mut out, json);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_protocol::ysync::decode_awareness;
    use quire_protocol::{ChannelId, ConnId};

    fn key(conn: u64) -> SubKey {
        SubKey {
            conn: ConnId(conn),
            channel: ChannelId(1),
        }
    }

    /// Presence another server relayed stays while renewed, and goes (announced as a
    /// removal) once not renewed within the timeout; local presence never expires.
    #[test]
    fn remote_states_expire_unless_renewed() {
        let state = |client, clock, json| {
            decode_awareness(&encode([(client, clock, json)].into_iter())).unwrap()
        };
        let mut awareness = RoomAwareness::default();
        let start = Instant::now();
        let timeout = Duration::from_secs(30);
        assert!(awareness.apply_remote(&state(5, 1, "{}"), start));
        assert!(awareness
            .apply(key(1), Access::Write, &state(6, 1, "{}"))
            .unwrap());
        let later = start + Duration::from_secs(20);
        assert!(
            awareness.apply_remote(&state(5, 2, "{}"), later),
            "a renewal"
        );
        assert_eq!(
            awareness.expire_remote(start + Duration::from_secs(40), timeout),
            None
        );
        let removal = awareness
            .expire_remote(later + Duration::from_secs(31), timeout)
            .expect("a removal");
        assert_eq!(removal, encode([(5, 3, NULL)].into_iter()));
        assert_eq!(
            awareness.snapshot(),
            Some(encode([(6, 1, "{}")].into_iter())),
            "the local state stays"
        );
    }

    #[test]
    fn newer_clocks_win_and_leavers_are_removed() {
        let mut room = RoomAwareness::default();
        let a = decode_awareness(&encode([(7, 1, r#"{"n":1}"#)].into_iter())).unwrap();
        assert_eq!(room.apply(key(1), Access::Write, &a), Ok(true));
        assert_eq!(
            room.apply(key(1), Access::Write, &a),
            Ok(false),
            "same clock again changes nothing"
        );
        let snapshot = decode_awareness(&room.snapshot().unwrap()).unwrap();
        assert_eq!(snapshot.clients.len(), 1);

        assert_eq!(room.remove_owned_by(key(2)), None);
        let removal = decode_awareness(&room.remove_owned_by(key(1)).unwrap()).unwrap();
        let (_, entry) = removal.clients.iter().next().unwrap();
        assert_eq!((entry.clock, &*entry.json), (2, "null"));
        assert_eq!(room.snapshot(), None);
    }

    fn update(entries: &[(u64, u32, &str)]) -> AwarenessUpdate {
        decode_awareness(&encode(entries.iter().copied())).unwrap()
    }

    #[test]
    fn states_must_be_json_and_small() {
        let mut room = RoomAwareness::default();
        let not_json = update(&[(1, 1, "{cursor")]);
        assert_eq!(
            room.apply(key(1), Access::Write, &not_json),
            Err(AwarenessRefused::NotJson(1))
        );
        let big = format!("\"{}\"", "x".repeat(MAX_STATE_BYTES));
        assert_eq!(
            room.apply(key(1), Access::Write, &update(&[(1, 1, &big)])),
            Err(AwarenessRefused::StateTooLarge(1))
        );
        assert_eq!(room.snapshot(), None, "nothing of a refused update is kept");
    }

    #[test]
    fn a_read_only_channel_publishes_its_own_presence_only() {
        let mut room = RoomAwareness::default();
        let mine = update(&[(1, 1, "{}")]);
        assert_eq!(room.apply(key(1), Access::Read, &mine), Ok(true));
        let second = update(&[(2, 1, "{}")]);
        assert_eq!(
            room.apply(key(1), Access::Read, &second),
            Err(AwarenessRefused::TooManyForChannel(MAX_STATES_PER_READER))
        );
        // Its own state may change; another's may not be removed.
        assert_eq!(
            room.apply(key(1), Access::Read, &update(&[(1, 2, "{\"a\":1}")])),
            Ok(true)
        );
        assert_eq!(
            room.apply(key(2), Access::Write, &update(&[(9, 1, "{}")])),
            Ok(true)
        );
        assert_eq!(
            room.apply(key(1), Access::Read, &update(&[(9, 5, "null")])),
            Err(AwarenessRefused::NotOwn(9))
        );
        // A reader may take a state over with a newer clock (its own, reconnected).
        assert_eq!(
            room.apply(key(4), Access::Read, &update(&[(9, 2, "{}")])),
            Ok(true)
        );
        // A writer may relay removals of others' states (y-protocols' timeouts).
        assert_eq!(
            room.apply(key(3), Access::Write, &update(&[(9, 3, "null")])),
            Ok(true)
        );
    }

    #[test]
    fn a_document_holds_a_bounded_number_of_states() {
        let mut room = RoomAwareness::default();
        for n in 0..MAX_STATES_PER_DOC as u64 {
            assert_eq!(
                room.apply(key(n), Access::Write, &update(&[(n, 1, "{}")])),
                Ok(true)
            );
        }
        let one_more = MAX_STATES_PER_DOC as u64;
        assert_eq!(
            room.apply(
                key(one_more),
                Access::Write,
                &update(&[(one_more, 1, "{}")])
            ),
            Err(AwarenessRefused::DocumentFull)
        );
        // Leaving frees room for others.
        assert!(room.remove_owned_by(key(0)).is_some());
        assert_eq!(
            room.apply(
                key(one_more),
                Access::Write,
                &update(&[(one_more, 1, "{}")])
            ),
            Ok(true)
        );
    }
}

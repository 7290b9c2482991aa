//! A room's awareness (presence): the latest state of each awareness client ID, with the
//! subscriber that sent it, so that a subscriber that leaves can be announced as gone.
//! Follows y-protocols' rules: a higher clock wins; at equal clock a removal wins.

use std::collections::HashMap;

use quire_protocol::varint::{write_string, write_varint};
use yrs::sync::awareness::AwarenessUpdate;

use crate::room::SubKey;

#[derive(Debug)]
struct Entry {
    clock: u32,
    json: String,
    owner: SubKey,
}

#[derive(Debug, Default)]
pub struct RoomAwareness {
    entries: HashMap<u64, Entry>,
}

const NULL: &str = "null";

impl RoomAwareness {
    /// Applies an update from `owner`; returns whether anything changed.
    pub fn apply(&mut self, owner: SubKey, update: &AwarenessUpdate) -> bool {
        let mut changed = false;
        for (client, entry) in &update.clients {
            let client = client.get();
            let newer = match self.entries.get(&client) {
                None => true,
                Some(current) => {
                    entry.clock > current.clock
                        || (entry.clock == current.clock
                            && &*entry.json == NULL
                            && current.json != NULL)
                }
            };
            if newer {
                self.entries.insert(
                    client,
                    Entry {
                        clock: entry.clock,
                        json: entry.json.to_string(),
                        owner,
                    },
                );
                changed = true;
            }
        }
        changed
    }

    /// An awareness update holding every present (non-null) state, for a new subscriber.
    pub fn snapshot(&self) -> Option<Vec<u8>> {
        let present: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.json != NULL)
            .collect();
        if present.is_empty() {
            return None;
        }
        Some(encode(
            present
                .iter()
                .map(|(id, e)| (**id, e.clock, e.json.as_str())),
        ))
    }

    /// Marks every state `owner` sent as removed; returns the removal update to broadcast.
    pub fn remove_owned_by(&mut self, owner: SubKey) -> Option<Vec<u8>> {
        let mut removed = Vec::new();
        self.entries.retain(|id, entry| {
            if entry.owner == owner {
                if entry.json != NULL {
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

    #[test]
    fn newer_clocks_win_and_leavers_are_removed() {
        let mut room = RoomAwareness::default();
        let a = decode_awareness(&encode([(7, 1, r#"{"n":1}"#)].into_iter())).unwrap();
        assert!(room.apply(key(1), &a));
        assert!(!room.apply(key(1), &a), "same clock again changes nothing");
        let snapshot = decode_awareness(&room.snapshot().unwrap()).unwrap();
        assert_eq!(snapshot.clients.len(), 1);

        assert_eq!(room.remove_owned_by(key(2)), None);
        let removal = decode_awareness(&room.remove_owned_by(key(1)).unwrap()).unwrap();
        let (_, entry) = removal.clients.iter().next().unwrap();
        assert_eq!((entry.clock, &*entry.json), (2, "null"));
        assert_eq!(room.snapshot(), None);
    }
}

//! A map from channel to per-channel state, for the tables a connection keeps (its session's
//! channels, its outbox's generations).
//!
//! A sorted list, not a hash map. A connection holds one channel or a thousand (the limit is
//! [`crate::Limits::max_channels`], 1,024 by default), and the two ends differ in memory:
//! - one channel: one slot, against a hash table's smallest (four slots and their control
//!   bytes);
//! - a thousand: a list of 1,024 slots, against a table of 2,048 (a hash table is at most
//!   seven-eighths full).
//!
//! A lookup is a binary search over at most the channel limit; clients number their channels
//! upwards, so an insert is usually a push at the end (docs/BENCHMARKS.md, S7).

use crate::ChannelId;

/// Slots a list keeps however few channels are left in it.
const KEPT_SLOTS: usize = 8;

/// Per-channel values, kept in channel order.
#[derive(Debug, Clone)]
pub struct ChannelMap<V> {
    entries: Vec<(ChannelId, V)>,
}

impl<V> Default for ChannelMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> ChannelMap<V> {
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, channel: ChannelId) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&channel, |&(id, _)| id)
    }

    pub fn get(&self, channel: ChannelId) -> Option<&V> {
        let at = self.find(channel).ok()?;
        Some(&self.entries[at].1)
    }

    pub fn get_mut(&mut self, channel: ChannelId) -> Option<&mut V> {
        let at = self.find(channel).ok()?;
        Some(&mut self.entries[at].1)
    }

    pub fn contains_key(&self, channel: ChannelId) -> bool {
        self.find(channel).is_ok()
    }

    /// Sets `channel`'s value; the one it replaces, if any.
    pub fn insert(&mut self, channel: ChannelId, value: V) -> Option<V> {
        match self.find(channel) {
            Ok(at) => Some(std::mem::replace(&mut self.entries[at].1, value)),
            Err(at) => {
                if self.entries.capacity() == 0 {
                    // Most connections hold one channel: no room for three more.
                    self.entries.reserve_exact(1);
                }
                self.entries.insert(at, (channel, value));
                None
            }
        }
    }

    /// Takes `channel`'s value out. A long list gives memory back once it is a quarter full,
    /// so a connection that opened a thousand channels and closed them does not keep their
    /// room; a short one keeps it, so opening and closing one channel allocates nothing.
    pub fn remove(&mut self, channel: ChannelId) -> Option<V> {
        let at = self.find(channel).ok()?;
        let (_, value) = self.entries.remove(at);
        if self.entries.capacity() > KEPT_SLOTS && self.entries.len() * 4 <= self.entries.capacity()
        {
            self.entries.shrink_to(self.entries.len() * 2);
        }
        Some(value)
    }

    /// Every channel and its value, in channel order.
    pub fn iter(&self) -> impl Iterator<Item = (ChannelId, &V)> {
        self.entries
            .iter()
            .map(|(channel, value)| (*channel, value))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, value)| value)
    }

    /// Empties the map, handing out every entry in channel order.
    pub fn drain(&mut self) -> impl Iterator<Item = (ChannelId, V)> {
        std::mem::take(&mut self.entries).into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(n: u32) -> ChannelId {
        ChannelId(n)
    }

    #[test]
    fn behaves_as_a_map_in_any_order_of_inserts_and_removes() {
        let mut map = ChannelMap::new();
        let mut model = std::collections::BTreeMap::new();
        // A fixed pseudo-random walk over 64 channels: inserts, replacements and removals.
        let mut x: u32 = 12345;
        for _ in 0..5_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let channel = ch((x >> 8) % 64);
            if (x >> 20) % 3 == 0 {
                assert_eq!(map.remove(channel), model.remove(&channel));
            } else {
                assert_eq!(map.insert(channel, x), model.insert(channel, x));
            }
            assert_eq!(map.len(), model.len());
            assert_eq!(map.get(channel), model.get(&channel));
            assert_eq!(map.contains_key(channel), model.contains_key(&channel));
        }
        let listed: Vec<_> = map.iter().map(|(c, v)| (c, *v)).collect();
        let expected: Vec<_> = model.iter().map(|(c, v)| (*c, *v)).collect();
        assert_eq!(listed, expected, "kept in channel order");
        if let Some((&first, _)) = model.iter().next() {
            *map.get_mut(first).unwrap() = 7;
            assert_eq!(map.get(first), Some(&7));
        }
        assert_eq!(map.drain().count(), model.len());
        assert!(map.is_empty());
    }

    #[test]
    fn one_channel_takes_one_slot_and_closed_channels_give_their_room_back() {
        let mut map = ChannelMap::new();
        map.insert(ch(1), 0u64);
        assert_eq!(map.entries.capacity(), 1);
        for n in 2..=1000 {
            map.insert(ch(n), 0);
        }
        assert!(map.entries.capacity() >= 1000);
        for n in 2..=1000 {
            map.remove(ch(n));
        }
        assert_eq!(map.len(), 1);
        assert!(
            map.entries.capacity() <= KEPT_SLOTS,
            "capacity {} after closing 999 of 1,000 channels",
            map.entries.capacity()
        );
    }
}

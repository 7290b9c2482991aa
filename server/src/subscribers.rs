//! A room's subscribers: the channels that have its document open. Kept as a list, not a
//! hash map: most rooms have one or two, and a hash map's smallest table holds four (180
//! bytes per room against 40; docs/BENCHMARKS.md, S7). Finding one walks the list; every
//! update and presence change the room relays walks it too, so a room with many subscribers
//! spends no more on the search than on the relay.

use quire_protocol::Access;

use crate::outbox::ConnHandle;
use crate::subscription::SubKey;

#[derive(Debug)]
pub(crate) struct Subscriber {
    pub conn: ConnHandle,
    /// The channel's opening on its connection: relays for an earlier opening of the same
    /// channel ID are dropped by the connection.
    pub generation: u64,
    /// What the channel may do (read-only channels publish only their own presence).
    pub access: Access,
}

#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    list: Vec<(SubKey, Subscriber)>,
}

impl Subscribers {
    /// Adds `key`, or replaces what it was.
    pub(crate) fn insert(&mut self, key: SubKey, subscriber: Subscriber) {
        if let Some(slot) = self.list.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = subscriber;
            return;
        }
        if self.list.capacity() == 0 {
            // Room for exactly the first: most rooms never have a second.
            self.list.reserve_exact(1);
        }
        self.list.push((key, subscriber));
    }

    pub(crate) fn remove(&mut self, key: SubKey) -> Option<Subscriber> {
        let index = self.list.iter().position(|(k, _)| *k == key)?;
        let (_, subscriber) = self.list.swap_remove(index);
        if self.list.is_empty() {
            // The room is unused: give the memory back while it waits to be unloaded.
            self.list = Vec::new();
        }
        Some(subscriber)
    }

    pub(crate) fn get(&self, key: SubKey) -> Option<&Subscriber> {
        self.list.iter().find(|(k, _)| *k == key).map(|(_, s)| s)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (SubKey, &Subscriber)> {
        self.list.iter().map(|(key, subscriber)| (*key, subscriber))
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

#[cfg(test)]
mod tests {
    use quire_protocol::{ChannelId, ConnId};

    use super::*;

    fn key(channel: u32) -> SubKey {
        SubKey {
            conn: ConnId(1),
            channel: ChannelId(channel),
        }
    }

    fn subscriber(generation: u64) -> Subscriber {
        Subscriber {
            conn: ConnHandle::queue_only(ConnId(1), 8).0,
            generation,
            access: Access::Write,
        }
    }

    #[test]
    fn a_key_is_held_once_and_removal_gives_the_memory_back() {
        let mut subs = Subscribers::default();
        subs.insert(key(1), subscriber(1));
        assert_eq!(subs.list.capacity(), 1, "room for exactly the first");
        subs.insert(key(2), subscriber(2));
        subs.insert(key(1), subscriber(3));
        assert_eq!(
            subs.len(),
            2,
            "a key inserted again replaces its subscriber"
        );
        assert_eq!(subs.get(key(1)).map(|s| s.generation), Some(3));
        assert_eq!(subs.remove(key(1)).map(|s| s.generation), Some(3));
        assert!(subs.remove(key(1)).is_none());
        assert_eq!(
            subs.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            vec![key(2)]
        );
        subs.remove(key(2));
        assert_eq!(subs.list.capacity(), 0, "an empty list holds no memory");
    }
}

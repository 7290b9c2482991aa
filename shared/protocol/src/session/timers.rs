//! One table of deadlines per session. Each end keeps every timer it runs here under a key of
//! its own (heartbeat, token expiry, reconnect, a channel's re-open…), so "when must the
//! driver wake me next" is one lookup and simulated time can step from deadline to deadline.

use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Timers<K: Ord> {
    deadlines: BTreeMap<K, Instant>,
}

impl<K: Ord + Clone> Timers<K> {
    pub fn new() -> Self {
        Self {
            deadlines: BTreeMap::new(),
        }
    }

    /// Sets (or moves) the deadline of `key`.
    pub fn set(&mut self, key: K, at: Instant) {
        self.deadlines.insert(key, at);
    }

    pub fn cancel(&mut self, key: &K) {
        self.deadlines.remove(key);
    }

    pub fn get(&self, key: &K) -> Option<Instant> {
        self.deadlines.get(key).copied()
    }

    /// The earliest deadline of all.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Removes and returns the keys whose deadline is at or before `now`, earliest first.
    pub fn expired(&mut self, now: Instant) -> Vec<K> {
        let mut due: Vec<(Instant, K)> = self
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, at)| (*at, key.clone()))
            .collect();
        due.sort_by_key(|(at, _)| *at);
        for (_, key) in &due {
            self.deadlines.remove(key);
        }
        due.into_iter().map(|(_, key)| key).collect()
    }
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expired_pops_due_keys_earliest_first() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.set("b", t0 + Duration::from_secs(2));
        timers.set("a", t0 + Duration::from_secs(1));
        timers.set("c", t0 + Duration::from_secs(5));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.expired(t0 + Duration::from_secs(3)), ["a", "b"]);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(5)));
        timers.set("c", t0 + Duration::from_secs(9));
        timers.cancel(&"c");
        assert_eq!(timers.next(), None);
    }
}

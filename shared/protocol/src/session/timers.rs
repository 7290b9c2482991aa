//! One table of deadlines per session. Each end keeps every timer it runs here under a key of
//! its own (heartbeat, token expiry, reconnect, a channel's re-open…), so "when must the
//! driver wake me next" is one lookup and simulated time can step from deadline to deadline.
//!
//! A plain list: a server connection runs one to three timers, and one per connection is
//! what idle connections cost (docs/BENCHMARKS.md, S5), where a tree's node would take
//! several times the bytes.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Timers<K> {
    deadlines: Vec<(K, Instant)>,
}

impl<K: PartialEq + Clone> Timers<K> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A table with room for `n` timers before it grows.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            deadlines: Vec::with_capacity(n),
        }
    }

    /// Sets (or moves) the deadline of `key`.
    pub fn set(&mut self, key: K, at: Instant) {
        match self.deadlines.iter_mut().find(|(k, _)| *k == key) {
            Some((_, deadline)) => *deadline = at,
            None => self.deadlines.push((key, at)),
        }
    }

    pub fn cancel(&mut self, key: &K) {
        self.deadlines.retain(|(k, _)| k != key);
    }

    /// The earliest deadline of all.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().map(|(_, at)| *at).min()
    }

    /// Removes and returns the keys whose deadline is at or before `now`, earliest first.
    pub fn expired(&mut self, now: Instant) -> Vec<K> {
        let mut due: Vec<(Instant, K)> = Vec::new();
        self.deadlines.retain(|(key, at)| {
            let expired = *at <= now;
            if expired {
                due.push((*at, key.clone()));
            }
            !expired
        });
        due.sort_by_key(|(at, _)| *at);
        due.into_iter().map(|(_, key)| key).collect()
    }
}

impl<K: PartialEq + Clone> Default for Timers<K> {
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

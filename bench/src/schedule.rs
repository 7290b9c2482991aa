//! Open-loop rate scheduling, pure: edit `k` of a sender is due at `start + phase + k / rate`,
//! whether or not earlier edits went out on time, so a slow server cannot slow the offered
//! load down (no coordinated omission). A late sender catches up by sending at once.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Offset of the first edit from the run's start.
    phase: Duration,
    interval: Duration,
}

impl Schedule {
    /// `rate` edits per second; `slot` of `slots` spreads senders evenly over one interval.
    /// `None` when `rate` is zero (an idle sender).
    pub(crate) fn new(rate: f64, slot: u64, slots: u64) -> Option<Self> {
        if rate <= 0.0 {
            return None;
        }
        let interval = Duration::from_secs_f64(1.0 / rate);
        let phase = interval.mul_f64(slot as f64 / slots.max(1) as f64);
        Some(Self { phase, interval })
    }

    /// When edit `k` (from 0) is due, measured from the run's start.
    pub(crate) fn due(&self, k: u64) -> Duration {
        self.phase + self.interval.mul_f64(k as f64)
    }

    /// How many edits are due by `elapsed` since the run's start.
    pub(crate) fn due_by(&self, elapsed: Duration) -> u64 {
        if elapsed < self.phase {
            return 0;
        }
        ((elapsed - self.phase).as_secs_f64() / self.interval.as_secs_f64()).floor() as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_evenly_spaced() {
        let s = Schedule::new(5.0, 0, 1).unwrap();
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(5), Duration::from_secs(1));
        assert_eq!(s.due_by(Duration::from_millis(999)), 5);
        assert_eq!(s.due_by(Duration::from_secs(10)), 51);
    }

    #[test]
    fn slots_spread_the_phase() {
        let s = Schedule::new(10.0, 1, 2).unwrap();
        assert_eq!(s.due(0), Duration::from_millis(50));
        assert_eq!(s.due_by(Duration::from_millis(49)), 0);
        assert_eq!(s.due_by(Duration::from_millis(50)), 1);
    }

    #[test]
    fn zero_rate_is_idle() {
        assert!(Schedule::new(0.0, 0, 1).is_none());
    }
}

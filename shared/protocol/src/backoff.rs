//! The reconnect schedule: exponential backoff with full jitter and a cap, as a pure function
//! of the attempt number and a random value, so it can be tested exhaustively.

use std::time::Duration;

use crate::close_code::Reaction;

/// The reconnect policy of docs/PROTOCOL.md §8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Ceiling of the first retry's delay.
    pub base: Duration,
    /// Each further attempt multiplies the ceiling by this.
    pub factor: u32,
    /// The ceiling never exceeds this.
    pub cap: Duration,
    /// Ceiling for [`Reaction::RetrySoon`] (planned restarts): short, but still jittered so
    /// that every client of a restarted server does not return in the same millisecond.
    pub soon: Duration,
    /// A connection that stayed up this long resets the attempt counter to 0.
    pub stable_after: Duration,
}

impl BackoffPolicy {
    pub const DEFAULT: BackoffPolicy = BackoffPolicy {
        base: Duration::from_millis(500),
        factor: 2,
        cap: Duration::from_secs(30),
        soon: Duration::from_secs(2),
        stable_after: Duration::from_secs(10),
    };

    /// The largest delay attempt `attempt` (0 for the first retry) may wait:
    /// `min(cap, base * factor^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = u64::from(self.factor.max(1));
        let multiplier = factor.checked_pow(attempt).unwrap_or(u64::MAX);
        let base_ms = self.base.as_millis() as u64;
        let ms = base_ms
            .saturating_mul(multiplier)
            .min(self.cap.as_millis() as u64);
        Duration::from_millis(ms)
    }

    /// Full jitter: a delay uniformly spread over `[0, ceiling(attempt))`, chosen by `random`
    /// (any 64-bit value from a uniform source).
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        spread(self.ceiling(attempt), random)
    }

    /// The delay before reconnecting after an ending with `reaction`, or `None` when the
    /// client must not reconnect on its own.
    pub fn delay_for(&self, reaction: Reaction, attempt: u32, random: u64) -> Option<Duration> {
        match reaction {
            Reaction::Stop | Reaction::WaitForNewCredentials | Reaction::DoNotReopen => None,
            Reaction::RetrySoon => {
                Some(spread(self.soon.min(self.ceiling(attempt.max(2))), random))
            }
            Reaction::RetryWithBackoff | Reaction::ReportBugThenRetry => {
                Some(self.delay(attempt, random))
            }
        }
    }

    /// The attempt number to use after a connection that lasted `uptime` ended.
    pub fn next_attempt(&self, previous: u32, uptime: Option<Duration>) -> u32 {
        match uptime {
            Some(up) if up >= self.stable_after => 0,
            _ => previous.saturating_add(1),
        }
    }
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Maps `random` uniformly onto `[0, ceiling)` at microsecond resolution.
fn spread(ceiling: Duration, random: u64) -> Duration {
    let micros = ceiling.as_micros() as u64;
    if micros == 0 {
        return Duration::ZERO;
    }
    // Multiply-shift keeps the mapping uniform without division bias worth mentioning.
    let scaled = ((u128::from(random) * u128::from(micros)) >> 64) as u64;
    Duration::from_micros(scaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BackoffPolicy = BackoffPolicy::DEFAULT;

    #[test]
    fn ceiling_doubles_then_caps() {
        let ms: Vec<u128> = (0..9).map(|a| P.ceiling(a).as_millis()).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(P.ceiling(u32::MAX), P.cap);
    }

    #[test]
    fn delay_spans_zero_to_ceiling() {
        for attempt in 0..12 {
            let ceiling = P.ceiling(attempt);
            assert_eq!(P.delay(attempt, 0), Duration::ZERO);
            let top = P.delay(attempt, u64::MAX);
            assert!(top < ceiling && ceiling - top <= Duration::from_millis(1));
            let middle = P.delay(attempt, u64::MAX / 2);
            let half = ceiling / 2;
            assert!(middle.abs_diff(half) <= Duration::from_millis(1));
        }
    }

    #[test]
    fn reactions_choose_whether_and_how_soon() {
        assert_eq!(P.delay_for(Reaction::Stop, 0, 1), None);
        assert_eq!(P.delay_for(Reaction::WaitForNewCredentials, 3, 1), None);
        let soon = P.delay_for(Reaction::RetrySoon, 9, u64::MAX).unwrap();
        assert!(soon < P.soon);
        let backoff = P
            .delay_for(Reaction::RetryWithBackoff, 9, u64::MAX)
            .unwrap();
        assert!(backoff > soon);
    }

    #[test]
    fn every_reaction_has_its_delay() {
        for attempt in [0, 1, 5, 40] {
            for reaction in [
                Reaction::Stop,
                Reaction::WaitForNewCredentials,
                Reaction::DoNotReopen,
            ] {
                assert_eq!(P.delay_for(reaction, attempt, u64::MAX), None);
            }
            for reaction in [Reaction::RetryWithBackoff, Reaction::ReportBugThenRetry] {
                for random in [0, u64::MAX / 3, u64::MAX] {
                    let delay = P.delay_for(reaction, attempt, random);
                    assert_eq!(delay, Some(P.delay(attempt, random)));
                }
            }
            // RetrySoon: spread over [0, 2 s) whatever the attempt, so that the clients of a
            // restarted server neither wait long nor return together.
            let soon = |random| P.delay_for(Reaction::RetrySoon, attempt, random).unwrap();
            assert_eq!(soon(0), Duration::ZERO);
            assert!(soon(u64::MAX) < P.soon && P.soon - soon(u64::MAX) <= Duration::from_millis(1));
            assert!(soon(u64::MAX / 2).abs_diff(P.soon / 2) <= Duration::from_millis(1));
        }
    }

    #[test]
    fn stable_connections_reset_the_counter() {
        assert_eq!(P.next_attempt(5, Some(Duration::from_secs(11))), 0);
        assert_eq!(P.next_attempt(5, Some(Duration::from_secs(1))), 6);
        assert_eq!(P.next_attempt(5, None), 6);
    }
}

//! How many channel errors a connection may cause before it is closed with 1008 (PROTOCOL
//! §6.8): 100 in all, and refused updates (4422) at a rate. A correct client never sends an
//! update that is refused, while each refusal costs the server a decode and a check against
//! the document, so a client that keeps sending them is cut off after a short burst.

use std::time::{Duration, Instant};

use crate::ChannelCode;

/// Channel errors (44xx) a connection may cause in all.
pub const MAX_CHANNEL_ERRORS: u32 = 100;
/// Refused updates a connection may cause in a burst...
const REFUSAL_BURST: f64 = 10.0;
/// ...and how fast that allowance comes back: one per this interval (10 a minute).
const REFUSAL_REFILL: Duration = Duration::from_secs(6);

#[derive(Debug)]
pub struct ErrorBudget {
    errors: u32,
    /// Refusals the connection may still cause now (a token bucket).
    refusals_left: f64,
    refilled_at: Instant,
}

impl ErrorBudget {
    pub fn new(now: Instant) -> Self {
        Self {
            errors: 0,
            refusals_left: REFUSAL_BURST,
            refilled_at: now,
        }
    }

    /// Counts a channel CLOSE the server sent; returns whether the connection has now caused
    /// too many errors and must be closed with 1008.
    pub fn spend(&mut self, code: ChannelCode, now: Instant) -> bool {
        // 4410 is not the client's error: someone trashed the document.
        if !(4400..4500).contains(&code.as_u16()) || code == ChannelCode::Trashed {
            return false;
        }
        self.errors += 1;
        let mut exhausted = self.errors > MAX_CHANNEL_ERRORS;
        if code == ChannelCode::InvalidUpdate {
            let regained = now
                .saturating_duration_since(self.refilled_at)
                .as_secs_f64()
                / REFUSAL_REFILL.as_secs_f64();
            self.refusals_left = (self.refusals_left + regained).min(REFUSAL_BURST) - 1.0;
            self.refilled_at = now;
            exhausted |= self.refusals_left < 0.0;
        }
        exhausted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hundred_errors_are_allowed_and_the_next_closes() {
        let now = Instant::now();
        let mut budget = ErrorBudget::new(now);
        for _ in 0..MAX_CHANNEL_ERRORS {
            assert!(!budget.spend(ChannelCode::Forbidden, now));
        }
        assert!(budget.spend(ChannelCode::Forbidden, now));
    }

    #[test]
    fn closes_and_non_error_codes_cost_nothing() {
        let now = Instant::now();
        let mut budget = ErrorBudget::new(now);
        for _ in 0..1000 {
            assert!(!budget.spend(ChannelCode::Normal, now));
            assert!(!budget.spend(ChannelCode::GoingAway, now));
        }
    }

    #[test]
    fn refused_updates_close_after_a_burst_of_ten_and_come_back_at_ten_a_minute() {
        let start = Instant::now();
        let mut budget = ErrorBudget::new(start);
        for _ in 0..10 {
            assert!(!budget.spend(ChannelCode::InvalidUpdate, start));
        }
        assert!(
            budget.spend(ChannelCode::InvalidUpdate, start),
            "the 11th at once"
        );

        let mut budget = ErrorBudget::new(start);
        // One every 6 s, forever, stays within the rate (until the 100 in all).
        for i in 0..MAX_CHANNEL_ERRORS {
            let at = start + REFUSAL_REFILL * i;
            assert!(!budget.spend(ChannelCode::InvalidUpdate, at), "refusal {i}");
        }
    }
}

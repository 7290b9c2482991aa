//! Rate-limited logging of refused logins (401 and 403 upgrades). Each is worth a `warn!`
//! line with the peer's address and the kind of failure, never the token; but a client
//! hammering the server with bad tokens must not flood the log. So at most
//! [`LINES_PER_WINDOW`] lines are written per [`WINDOW`], server-wide (a fixed window, so
//! memory stays constant however many addresses try), and the next line written after some
//! were held back says how many (`suppressed`).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The window the line budget applies to.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Lines written per window; further refusals in the window are only counted.
pub const LINES_PER_WINDOW: u32 = 10;

/// The shared budget of log lines for refused logins.
#[derive(Debug, Default)]
pub struct FailedLogins {
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl FailedLogins {
    /// Counts one refused login at `now`. `Some(n)` when it is to be logged, with `n` the
    /// refusals held back since the last line written; `None` when it is held back.
    pub fn record(&self, now: Instant) -> Option<u64> {
        let mut window = self.window.lock();
        let expired = window
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= WINDOW);
        if expired {
            window.started = Some(now);
            window.written = 0;
        }
        if window.written < LINES_PER_WINDOW {
            window.written += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_limited_per_window_and_the_held_back_counted() {
        let logins = FailedLogins::default();
        let start = Instant::now();
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(logins.record(start), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(logins.record(start + WINDOW / 2), None);
        }
        // A new window: the first line carries the count of those held back, once.
        assert_eq!(logins.record(start + WINDOW), Some(5));
        assert_eq!(logins.record(start + WINDOW), Some(0));
    }
}

//! Waiting for conditions without sleeping blindly: poll with a deadline.

use std::future::Future;
use std::time::Duration;

/// Default deadline for a condition that should hold quickly on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every few milliseconds until it returns `Some`, or fails after `deadline`.
pub async fn until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

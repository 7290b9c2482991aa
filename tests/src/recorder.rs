//! Recording what a `watch` channel publishes: a task awaits each change and appends the value
//! it sees, so a test can check a whole state sequence afterwards. A watch channel keeps only
//! the latest value, so values replaced faster than the task runs are not seen; tests assert
//! on states that last (waiting for them), not on every transient one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// Every value seen on one watch channel, the current one first.
#[derive(Debug)]
pub struct Recorder<T> {
    seen: Arc<Mutex<Vec<T>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone + Send + Sync + 'static> Recorder<T> {
    /// Starts recording from `rx`'s current value on.
    pub fn start(mut rx: watch::Receiver<T>) -> Self {
        let seen = Arc::new(Mutex::new(vec![rx.borrow_and_update().clone()]));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            // `changed` still reports the last value after the sender is gone.
            while rx.changed().await.is_ok() {
                let value = rx.borrow_and_update().clone();
                log.lock().unwrap_or_else(|p| p.into_inner()).push(value);
            }
        });
        Self { seen, task }
    }

    /// The values recorded so far.
    pub fn values(&self) -> Vec<T> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Polls until the recorded values satisfy `done`, or fails after `deadline`.
    pub async fn until(
        &self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[T]) -> bool,
    ) -> Vec<T> {
        crate::wait::until(what, deadline, || {
            let values = self.values();
            let ok = done(&values);
            std::future::ready(ok.then_some(values))
        })
        .await
    }

    /// Waits until the channel's sender is gone and every value is recorded.
    pub async fn finish(mut self, deadline: Duration) -> Vec<T> {
        let finished = tokio::time::timeout(deadline, &mut self.task).await;
        assert!(
            finished.is_ok(),
            "the watched sender was not dropped within {deadline:?}"
        );
        self.values()
    }
}

impl<T> Drop for Recorder<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

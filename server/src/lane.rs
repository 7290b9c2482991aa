//! A small queue for a connection's rare messages: its control frames (WELCOME, PING, PONG)
//! and the events for its reader. A tokio channel allocates a block of 32 slots up front, about
//! 1 KiB per channel and connection, mostly never used; a lane allocates only while something
//! waits in it (docs/BENCHMARKS.md, S5).

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug)]
pub(super) struct Lane<T> {
    items: Mutex<VecDeque<T>>,
    ready: Notify,
    capacity: usize,
}

impl<T> Lane<T> {
    /// A lane holding at most `capacity` items.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity,
        }
    }

    /// Queues `item`; false (and the item dropped) when the lane is full.
    pub(super) fn push(&self, item: T) -> bool {
        let mut items = self.items.lock();
        if items.len() >= self.capacity {
            return false;
        }
        items.push_back(item);
        drop(items);
        self.ready.notify_one();
        true
    }

    pub(super) fn try_pop(&self) -> Option<T> {
        self.items.lock().pop_front()
    }

    /// The next item, waiting for one. Cancel-safe: an item stays queued until returned.
    pub(super) async fn pop(&self) -> T {
        loop {
            // An item pushed after this check stores a permit in `ready` (notify_one), so the
            // wait below returns at once.
            if let Some(item) = self.try_pop() {
                return item;
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn keeps_order_and_refuses_past_capacity() {
        let lane = Lane::new(2);
        assert!(lane.push(1));
        assert!(lane.push(2));
        assert!(!lane.push(3));
        assert_eq!(lane.try_pop(), Some(1));
        assert!(lane.push(4));
        assert_eq!(lane.try_pop(), Some(2));
        assert_eq!(lane.try_pop(), Some(4));
        assert_eq!(lane.try_pop(), None);
    }

    #[tokio::test]
    async fn pop_wakes_for_an_item_pushed_while_it_waits() {
        let lane = Arc::new(Lane::new(8));
        let waiter = tokio::spawn({
            let lane = lane.clone();
            async move { lane.pop().await }
        });
        tokio::task::yield_now().await;
        assert!(lane.push(7));
        let got = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("pop woke")
            .unwrap();
        assert_eq!(got, 7);
    }

    #[tokio::test]
    async fn a_cancelled_pop_loses_nothing() {
        let lane = Lane::new(8);
        tokio::select! {
            biased;
            _ = std::future::ready(()) => {}
            _ = lane.pop() => unreachable!("nothing was queued"),
        }
        assert!(lane.push("kept"));
        assert_eq!(lane.pop().await, "kept");
    }
}

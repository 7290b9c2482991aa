//! A small queue for messages that are rare or come in bursts: a connection's reader events,
//! and each open document's jobs. A tokio channel allocates a block of 32 slots up front, about
//! 1–3 KiB per channel, mostly never used; a lane allocates only while something waits in it
//! (docs/BENCHMARKS.md, S5 and S7). A lane can be closed: pushes fail from then on.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

#[derive(Debug)]
pub(crate) struct Lane<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    capacity: usize,
}

impl<T> Lane<T> {
    /// A lane holding at most `capacity` items.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            capacity,
        }
    }

    /// Queues `item`; false (and the item dropped) when the lane is full or closed.
    pub(crate) fn push(&self, item: T) -> bool {
        let mut state = self.state.lock();
        if state.closed || state.items.len() >= self.capacity {
            return false;
        }
        state.items.push_back(item);
        drop(state);
        self.ready.notify_one();
        true
    }

    pub(crate) fn try_pop(&self) -> Option<T> {
        let mut state = self.state.lock();
        let item = state.items.pop_front();
        if state.items.is_empty() && state.items.capacity() > 0 {
            // A burst is over: give its memory back rather than keep it per lane.
            state.items = VecDeque::new();
        }
        item
    }

    /// The next item, waiting for one. Cancel-safe: an item stays queued until returned.
    pub(crate) async fn pop(&self) -> T {
        loop {
            // An item pushed after this check stores a permit in `ready` (notify_one), so the
            // wait below returns at once.
            if let Some(item) = self.try_pop() {
                return item;
            }
            self.ready.notified().await;
        }
    }

    /// Closes the lane: later pushes fail. Returns what was still queued, atomically with the
    /// close, so that nothing pushed before it is lost unseen.
    pub(crate) fn close(&self) -> VecDeque<T> {
        let mut state = self.state.lock();
        state.closed = true;
        std::mem::take(&mut state.items)
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

    #[test]
    fn a_closed_lane_hands_back_its_items_and_refuses_more() {
        let lane = Lane::new(8);
        assert!(lane.push(1));
        assert_eq!(lane.close().into_iter().collect::<Vec<_>>(), vec![1]);
        assert!(!lane.push(2));
        assert_eq!(lane.try_pop(), None);
    }
}

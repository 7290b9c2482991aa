//! A small queue for messages that are rare or come in bursts: a connection's reader events,
//! and each open document's jobs. A tokio channel allocates a block of 32 slots up front, about
//! 1–3 KiB per channel, mostly never used; a lane allocates only while something waits in it
//! (docs/BENCHMARKS.md, S5 and S7). A lane has no bound of its own: it takes every item
//! pushed until it is closed, and fails every push from then on.
//!
//! A lane made with [`Lane::with_worker`] has no task waiting on it for good: the push that
//! finds it idle says so ([`Pushed::StartWorker`]), and the worker it starts stops once the
//! lane is empty ([`Lane::pop_or_park`]), leaving what it must remember (`M`) in the lane for
//! the next one. A thousand open documents nobody writes to then hold no task each
//! (docs/BENCHMARKS.md, S7).

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug)]
struct State<T, M> {
    items: VecDeque<T>,
    closed: bool,
    /// Whether a task is draining the lane (always, for a lane made with [`Lane::new`]).
    working: bool,
    /// What the last worker left for the next one.
    memo: Option<M>,
}

#[derive(Debug)]
pub(crate) struct Lane<T, M = ()> {
    state: Mutex<State<T, M>>,
    ready: Notify,
}

/// What became of a push to a lane with a worker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for the worker at work.
    Queued,
    /// Queued, and no worker is at work: the caller starts one.
    StartWorker,
    /// The lane is closed: the item is dropped.
    Refused,
}

impl<T, M> Lane<T, M> {
    /// A lane drained by a task that waits on it for good.
    pub(crate) fn new() -> Self {
        Self::make(true)
    }

    /// A lane drained by a worker started by the push that finds none at work.
    pub(crate) fn with_worker() -> Self {
        Self::make(false)
    }

    fn make(working: bool) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
                working,
                memo: None,
            }),
            ready: Notify::new(),
        }
    }

    /// Queues `item`; false (and the item dropped) when the lane is closed.
    pub(crate) fn push(&self, item: T) -> bool {
        self.push_to_worker(item) != Pushed::Refused
    }

    /// Queues `item`, and says whether a worker must be started to drain the lane.
    pub(crate) fn push_to_worker(&self, item: T) -> Pushed {
        let mut state = self.state.lock();
        if state.closed {
            return Pushed::Refused;
        }
        if state.items.capacity() == 0 {
            // Most lanes hold one item at a time: room for exactly one, not the four a
            // growing VecDeque starts with (a thousand documents being opened at once each
            // queue an OPEN; docs/BENCHMARKS.md, S7).
            state.items.reserve_exact(1);
        }
        state.items.push_back(item);
        if !state.working {
            state.working = true;
            return Pushed::StartWorker;
        }
        drop(state);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// What the last worker left ([`Lane::pop_or_park`]); `None` for the first.
    pub(crate) fn take_memo(&self) -> Option<M> {
        self.state.lock().memo.take()
    }

    /// The next item; or, when there is none, the worker stops: `memo()` is kept for the
    /// next worker, and the next push starts it. Atomic with pushes: an item is never left
    /// queued with no worker.
    pub(crate) fn pop_or_park(&self, memo: impl FnOnce() -> M) -> Option<T> {
        let mut state = self.state.lock();
        if let Some(item) = Self::take_front(&mut state) {
            return Some(item);
        }
        state.memo = Some(memo());
        state.working = false;
        None
    }

    pub(crate) fn try_pop(&self) -> Option<T> {
        Self::take_front(&mut self.state.lock())
    }

    fn take_front(state: &mut State<T, M>) -> Option<T> {
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
    fn keeps_order() {
        let lane: Lane<i32> = Lane::new();
        assert!(lane.push(1));
        assert!(lane.push(2));
        assert_eq!(lane.try_pop(), Some(1));
        assert!(lane.push(3));
        assert_eq!(lane.try_pop(), Some(2));
        assert_eq!(lane.try_pop(), Some(3));
        assert_eq!(lane.try_pop(), None);
    }

    #[tokio::test]
    async fn pop_wakes_for_an_item_pushed_while_it_waits() {
        let lane: Arc<Lane<i32>> = Arc::new(Lane::new());
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
        let lane: Lane<&str> = Lane::new();
        tokio::select! {
            biased;
            _ = std::future::ready(()) => {}
            _ = lane.pop() => unreachable!("nothing was queued"),
        }
        assert!(lane.push("kept"));
        assert_eq!(lane.pop().await, "kept");
    }

    #[test]
    fn a_worker_is_started_by_the_push_that_finds_none_and_stops_when_empty() {
        let lane: Lane<u32, &str> = Lane::with_worker();
        assert_eq!(lane.push_to_worker(1), Pushed::StartWorker);
        assert_eq!(lane.push_to_worker(2), Pushed::Queued);
        assert_eq!(lane.take_memo(), None, "the first worker starts afresh");
        assert_eq!(lane.pop_or_park(|| unreachable!()), Some(1));
        assert_eq!(lane.pop_or_park(|| unreachable!()), Some(2));
        assert_eq!(lane.pop_or_park(|| "remembered"), None);
        assert_eq!(lane.push_to_worker(3), Pushed::StartWorker);
        assert_eq!(lane.take_memo(), Some("remembered"));
        assert_eq!(lane.pop_or_park(|| unreachable!()), Some(3));
        lane.close();
        assert_eq!(lane.push_to_worker(4), Pushed::Refused);
    }

    #[test]
    fn a_closed_lane_hands_back_its_items_and_refuses_more() {
        let lane: Lane<i32> = Lane::new();
        assert!(lane.push(1));
        assert_eq!(lane.close().into_iter().collect::<Vec<_>>(), vec![1]);
        assert!(!lane.push(2));
        assert_eq!(lane.try_pop(), None);
    }
}

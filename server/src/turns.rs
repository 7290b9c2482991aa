//! Turns for a limited resource: at most `n` holders at once, the rest waiting in order of
//! arrival, with no task of their own while they wait. Used for loads of documents: a client
//! opening a thousand documents at once leaves a thousand rooms waiting for one of a few load
//! turns, and a waiting task each would cost ~0.4 KiB (docs/BENCHMARKS.md, S7).

use std::collections::VecDeque;

use parking_lot::Mutex;

#[derive(Debug)]
struct State<T> {
    free: usize,
    waiting: VecDeque<T>,
}

#[derive(Debug)]
pub(crate) struct Turns<T> {
    state: Mutex<State<T>>,
}

impl<T> Turns<T> {
    /// `n` turns at once.
    pub(crate) fn new(n: usize) -> Self {
        Self {
            state: Mutex::new(State {
                free: n,
                waiting: VecDeque::new(),
            }),
        }
    }

    /// `waiter` takes a turn now and is handed back, or waits for one ([`Turns::done`]).
    pub(crate) fn take(&self, waiter: T) -> Option<T> {
        let mut state = self.state.lock();
        if state.free > 0 {
            state.free -= 1;
            Some(waiter)
        } else {
            state.waiting.push_back(waiter);
            None
        }
    }

    /// A turn is over: it passes to the first waiter, handed back to be started.
    pub(crate) fn done(&self) -> Option<T> {
        let mut state = self.state.lock();
        let next = state.waiting.pop_front();
        if next.is_none() {
            state.free += 1;
        }
        if state.waiting.is_empty() && state.waiting.capacity() > 0 {
            state.waiting = VecDeque::new();
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_at_once_and_the_rest_in_order() {
        let turns = Turns::new(2);
        assert_eq!(turns.take(1), Some(1));
        assert_eq!(turns.take(2), Some(2));
        assert_eq!(turns.take(3), None);
        assert_eq!(turns.take(4), None);
        assert_eq!(
            turns.done(),
            Some(3),
            "a finished turn passes to the first waiter"
        );
        assert_eq!(turns.done(), Some(4));
        assert_eq!(turns.done(), None);
        assert_eq!(turns.done(), None);
        assert_eq!(turns.take(5), Some(5), "both turns are free again");
        assert_eq!(turns.take(6), Some(6));
        assert_eq!(turns.take(7), None);
    }
}

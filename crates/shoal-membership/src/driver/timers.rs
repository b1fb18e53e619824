//! The driver's timer queue: the core's timers, ordered by deadline.

use crate::output::Timer;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// Timers waiting to fire, earliest first; equal deadlines fire in the order set.
#[derive(Default)]
pub(super) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    timers: HashMap<u64, Timer>,
    next: u64,
}

impl TimerQueue {
    pub(super) fn push(&mut self, after: Duration, timer: Timer) {
        self.next += 1;
        self.heap.push(Reverse((Instant::now() + after, self.next)));
        self.timers.insert(self.next, timer);
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Every timer due at `now`, in deadline order.
    pub(super) fn pop_due(&mut self, now: Instant) -> Vec<Timer> {
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if let Some(timer) = self.timers.remove(&id) {
                due.push(timer);
            }
        }
        due
    }
}

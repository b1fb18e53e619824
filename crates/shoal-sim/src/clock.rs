//! Virtual time, readable through [`shoal_core::Clock`] by components that hold a clock.

use shoal_core::{Clock, Instant};
use std::sync::atomic::{AtomicU64, Ordering};

/// The simulation's clock. The simulator moves it; everyone else only reads it.
///
/// The wall clock reads `wall_start_ms` plus the virtual milliseconds elapsed, so hybrid
/// logical clocks inside a simulation see realistic epoch times.
#[derive(Debug)]
pub struct SimClock {
    nanos: AtomicU64,
    wall_start_ms: u64,
}

impl SimClock {
    /// A clock at virtual zero whose wall clock starts at `wall_start_ms`.
    pub fn new(wall_start_ms: u64) -> Self {
        Self {
            nanos: AtomicU64::new(0),
            wall_start_ms,
        }
    }

    pub(crate) fn set(&self, now: Instant) {
        self.nanos.store(now.as_nanos(), Ordering::Relaxed);
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    fn wall_ms(&self) -> u64 {
        self.wall_start_ms
            .saturating_add(self.nanos.load(Ordering::Relaxed) / 1_000_000)
    }
}

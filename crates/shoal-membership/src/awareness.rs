//! Lifeguard's local health multiplier (LHA-Probe).
//!
//! A node that misses acks and nacks it should have received is more likely slow itself
//! than surrounded by dead peers. Its awareness score rises on such evidence and falls on
//! every successful probe; probe interval and timeout are stretched by `score + 1`, so a
//! struggling node probes less and waits longer instead of accusing healthy members.

use std::time::Duration;

/// The local health score, in `[0, max − 1]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Awareness {
    max: u32,
    score: u32,
}

impl Awareness {
    /// A healthy node whose multiplier may reach `max` (1 disables the mechanism).
    pub(crate) fn new(max: u32) -> Self {
        Self { max, score: 0 }
    }

    /// Raises (positive) or lowers (negative) the score, clamped.
    pub(crate) fn apply(&mut self, delta: i64) {
        let ceiling = i64::from(self.max.saturating_sub(1));
        self.score = (i64::from(self.score) + delta).clamp(0, ceiling) as u32;
    }

    /// The score: 0 is healthy.
    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    /// `d` stretched by the current multiplier.
    pub(crate) fn scale(&self, d: Duration) -> Duration {
        d.saturating_mul(self.score + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_clamped_and_scales_timeouts() {
        let mut a = Awareness::new(8);
        a.apply(-1);
        assert_eq!(a.score(), 0);
        a.apply(3);
        assert_eq!(a.scale(Duration::from_millis(500)), Duration::from_secs(2));
        a.apply(100);
        assert_eq!(a.score(), 7);
        let mut off = Awareness::new(1);
        off.apply(5);
        assert_eq!(off.score(), 0);
    }
}

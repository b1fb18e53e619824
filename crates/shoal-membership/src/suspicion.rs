//! Lifeguard's dynamic suspicion timeout (LHA-Suspicion).
//!
//! A suspicion starts with a long timeout (`max`) and shrinks towards `min` as independent
//! members confirm it: after `c` of the `k` expected confirmations the timeout is
//! `max − (max − min) × ln(c + 1) / ln(k + 1)`, never below `min`. A member suspected by one
//! struggling node thus has time to refute, while a member many nodes cannot reach is
//! declared dead as fast as plain SWIM would.

use shoal_core::{Instant, NodeId};
use std::collections::HashSet;
use std::time::Duration;

/// The minimum suspicion timeout for a cluster of `n` members:
/// `mult × max(1, log10(n)) × probe_interval`, as memberlist computes it.
pub(crate) fn min_suspicion_timeout(mult: u32, n: usize, probe_interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    // Rounded to the millisecond, like memberlist.
    let ms = (f64::from(mult) * scale * probe_interval.as_secs_f64() * 1000.0).round();
    Duration::from_millis(ms as u64)
}

/// One member's open suspicion, as this node tracks it.
#[derive(Clone, Debug)]
pub(crate) struct Suspicion {
    /// The suspected incarnation.
    pub(crate) incarnation: u64,
    start: Instant,
    min: Duration,
    max: Duration,
    /// Confirmations that bring the timeout down to `min`.
    k: u32,
    confirmations: u32,
    /// Everyone who suspected it, the first suspecter included (never counted twice).
    confirmers: HashSet<NodeId>,
    /// When set, the deadline passed once already and a last-chance probe went out; the
    /// member is declared dead at this time unless it refutes first.
    pub(crate) last_chance_until: Option<Instant>,
}

impl Suspicion {
    /// A suspicion raised by `from` at `start`, expecting up to `k` more confirmations.
    pub(crate) fn new(
        from: NodeId,
        incarnation: u64,
        start: Instant,
        k: u32,
        min: Duration,
        max: Duration,
    ) -> Self {
        let mut confirmers = HashSet::new();
        confirmers.insert(from);
        Self {
            incarnation,
            start,
            min,
            max: max.max(min),
            k,
            confirmations: 0,
            confirmers,
            last_chance_until: None,
        }
    }

    /// Records a suspicion by `from`. Returns whether it was a new, independent confirmation
    /// (only those are worth re-gossiping).
    pub(crate) fn confirm(&mut self, from: NodeId) -> bool {
        if self.confirmations >= self.k || !self.confirmers.insert(from) {
            return false;
        }
        self.confirmations += 1;
        true
    }

    /// Whether all `k` expected independent confirmations arrived: strong evidence. A
    /// suspicion that expires without them gets a last-chance probe first.
    pub(crate) fn fully_confirmed(&self) -> bool {
        self.k > 0 && self.confirmations >= self.k
    }

    /// The current timeout, given the confirmations so far.
    pub(crate) fn timeout(&self) -> Duration {
        if self.k == 0 {
            return self.min;
        }
        let fraction = (f64::from(self.confirmations) + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
        let span = self.max.saturating_sub(self.min).as_secs_f64();
        let timeout = self.max.as_secs_f64() - fraction * span;
        Duration::from_secs_f64(timeout.max(self.min.as_secs_f64()))
    }

    /// When the member is declared dead unless it refutes.
    pub(crate) fn deadline(&self) -> Instant {
        if let Some(until) = self.last_chance_until {
            return until;
        }
        self.start.checked_add(self.timeout()).unwrap_or(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn min_timeout_scales_with_log_n() {
        assert_eq!(min_suspicion_timeout(4, 1, S(1)), S(4));
        assert_eq!(min_suspicion_timeout(4, 10, S(1)), S(4));
        assert_eq!(min_suspicion_timeout(4, 1000, S(1)), S(12));
        assert_eq!(min_suspicion_timeout(4, 100, S(2)), S(16));
    }

    #[test]
    fn confirmations_shrink_the_timeout_from_max_to_min() {
        let start = Instant::from_nanos(0);
        let mut s = Suspicion::new(NodeId::new(1), 3, start, 2, S(12), S(72));
        assert_eq!(s.timeout(), S(72));
        assert!(
            !s.confirm(NodeId::new(1)),
            "the first suspecter is not a confirmation"
        );
        assert!(s.confirm(NodeId::new(2)));
        assert!(!s.confirm(NodeId::new(2)), "the same confirmer counts once");
        let one = s.timeout();
        assert!(one < S(72) && one > S(12), "{one:?}");
        // 72 − 60 × ln 2 / ln 3 ≈ 34.14 s
        assert!((one.as_secs_f64() - 34.14).abs() < 0.01);
        assert!(s.confirm(NodeId::new(3)));
        assert_eq!(s.timeout(), S(12));
        assert!(!s.confirm(NodeId::new(4)), "no more than k confirmations");
        assert_eq!(s.deadline(), Instant::from_nanos(12_000_000_000));
    }

    #[test]
    fn without_expected_confirmations_the_timeout_is_the_minimum() {
        let s = Suspicion::new(NodeId::new(1), 0, Instant::from_nanos(0), 0, S(5), S(30));
        assert_eq!(s.timeout(), S(5));
    }
}

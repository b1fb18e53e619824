//! The split/merge policy: a pure function from range sizes and load to decisions.
//!
//! - **Split for size** when a range holds more than [`SplitMergePolicy::split_bytes`]
//!   (64 MiB), at the key that halves its bytes (the size median, which storage reports).
//! - **Split for load** when a range serves more than [`SplitMergePolicy::split_qps`], at the
//!   key that halves its requests (the load median).
//! - **Merge** two neighbours (same replica set, so no data has to move first) when their
//!   combined size is below [`SplitMergePolicy::merge_bytes`] (20 MiB) and their combined
//!   load below [`SplitMergePolicy::merge_max_qps`].
//!
//! Hysteresis: the merge threshold sits far below the split threshold, and a merged range's
//! size and load are required to be below it, so a merge never produces a range that the
//! next round splits again, nor does a fresh split half qualify for a merge (64 / 2 > 20).
//! A cooldown keeps a range that just split or merged out of further decisions until its
//! statistics reflect its new shape, and caps on concurrent splits and merges (counting
//! those already running) prevent storms. Every threshold is a public field.

use crate::table::RangeTable;
use shoal_core::{Instant, RangeDescriptor, RangeId};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// What the policy knows of one range.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeStats {
    /// Live bytes in the range.
    pub size_bytes: u64,
    /// The key that halves the range's bytes, if the range has at least two keys.
    pub size_median_key: Option<Vec<u8>>,
    /// Requests per second, recently.
    pub qps: f64,
    /// The key that halves the range's requests, if known.
    pub load_median_key: Option<Vec<u8>>,
    /// When the range last split or merged, if ever.
    pub last_change: Option<Instant>,
}

/// Why a split was proposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitReason {
    /// The range is over the size threshold.
    Size,
    /// The range is over the load threshold.
    Load,
}

/// One proposed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Split `range` at `at`, strictly inside it.
    Split {
        /// The range to split.
        range: RangeId,
        /// The split key.
        at: Vec<u8>,
        /// Why.
        reason: SplitReason,
    },
    /// Merge `right` into its left neighbour `left`.
    Merge {
        /// The left range, which survives.
        left: RangeId,
        /// The right range, absorbed.
        right: RangeId,
    },
}

/// Thresholds and limits of the split/merge policy.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitMergePolicy {
    /// Split a range above this many bytes. Default 64 MiB.
    pub split_bytes: u64,
    /// Merge neighbours whose combined size is below this many bytes. Default 20 MiB.
    pub merge_bytes: u64,
    /// Split a range serving more than this many requests per second. Default 2,500.
    pub split_qps: f64,
    /// Merge only neighbours whose combined load is below this. Default 1,250 (half of
    /// `split_qps`, for hysteresis).
    pub merge_max_qps: f64,
    /// A range that split or merged less than this long ago takes part in no decision.
    /// Default 60 s.
    pub cooldown: Duration,
    /// The most splits running at once, counting those already in flight. Default 4.
    pub max_concurrent_splits: usize,
    /// The most merges running at once, counting those already in flight. Default 2.
    pub max_concurrent_merges: usize,
}

impl Default for SplitMergePolicy {
    fn default() -> Self {
        Self {
            split_bytes: 64 << 20,
            merge_bytes: 20 << 20,
            split_qps: 2_500.0,
            merge_max_qps: 1_250.0,
            cooldown: Duration::from_secs(60),
            max_concurrent_splits: 4,
            max_concurrent_merges: 2,
        }
    }
}

/// What is already under way when the policy runs.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    /// Splits running now.
    pub splits: usize,
    /// Merges running now.
    pub merges: usize,
    /// Ranges taking part in a running change (or a replica move): left alone.
    pub busy: HashSet<RangeId>,
}

impl SplitMergePolicy {
    /// Whether `id` may take part in a decision at `now`.
    fn eligible<'s>(
        &self,
        id: RangeId,
        stats: &'s HashMap<RangeId, RangeStats>,
        in_flight: &InFlight,
        taken: &HashSet<RangeId>,
        now: Instant,
    ) -> Option<&'s RangeStats> {
        if in_flight.busy.contains(&id) || taken.contains(&id) {
            return None;
        }
        let s = stats.get(&id)?;
        let cooling = s
            .last_change
            .is_some_and(|t| now.saturating_duration_since(t) < self.cooldown);
        (!cooling).then_some(s)
    }

    /// The decisions for this round: splits first (largest overshoot first), then merges
    /// (smallest pairs first), each range in at most one decision, within the caps. Ranges
    /// without statistics are left alone.
    pub fn decide(
        &self,
        table: &RangeTable,
        stats: &HashMap<RangeId, RangeStats>,
        in_flight: &InFlight,
        now: Instant,
    ) -> Vec<Decision> {
        let mut taken = HashSet::new();
        let mut decisions = Vec::new();

        let mut splits: Vec<(f64, &RangeDescriptor, Vec<u8>, SplitReason)> = Vec::new();
        for d in table.descriptors() {
            let Some(s) = self.eligible(d.id, stats, in_flight, &taken, now) else {
                continue;
            };
            let inside = |k: &Vec<u8>| d.contains_key(k) && k.as_slice() != d.range.start();
            let by_size = (s.size_bytes > self.split_bytes)
                .then(|| s.size_median_key.clone().filter(inside))
                .flatten()
                .map(|k| {
                    (
                        s.size_bytes as f64 / self.split_bytes as f64,
                        k,
                        SplitReason::Size,
                    )
                });
            let by_load = (s.qps > self.split_qps)
                .then(|| s.load_median_key.clone().filter(inside))
                .flatten()
                .map(|k| (s.qps / self.split_qps, k, SplitReason::Load));
            if let Some((over, key, reason)) = by_size.or(by_load) {
                splits.push((over, d, key, reason));
            }
        }
        splits.sort_by(|a, b| b.0.total_cmp(&a.0));
        let split_room = self.max_concurrent_splits.saturating_sub(in_flight.splits);
        for (_, d, at, reason) in splits.into_iter().take(split_room) {
            taken.insert(d.id);
            decisions.push(Decision::Split {
                range: d.id,
                at,
                reason,
            });
        }

        let mut merges: Vec<(u64, RangeId, RangeId)> = Vec::new();
        for left in table.descriptors() {
            let Some(right) = table.right_neighbour(left.id) else {
                continue;
            };
            let (Some(l), Some(r)) = (
                self.eligible(left.id, stats, in_flight, &taken, now),
                self.eligible(right.id, stats, in_flight, &taken, now),
            ) else {
                continue;
            };
            let size = l.size_bytes.saturating_add(r.size_bytes);
            let cold = l.qps + r.qps < self.merge_max_qps;
            if size < self.merge_bytes && cold && left.same_replicas(right) {
                merges.push((size, left.id, right.id));
            }
        }
        merges.sort();
        let mut merge_room = self.max_concurrent_merges.saturating_sub(in_flight.merges);
        for (_, left, right) in merges {
            if merge_room == 0 {
                break;
            }
            if taken.contains(&left) || taken.contains(&right) {
                continue;
            }
            taken.insert(left);
            taken.insert(right);
            decisions.push(Decision::Merge { left, right });
            merge_room -= 1;
        }
        decisions
    }
}

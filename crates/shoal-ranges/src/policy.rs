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
//! Hysteresis: each merge threshold is at most half its split threshold
//! (`merge_bytes <= split_bytes / 2`, `merge_max_qps <= split_qps / 2`), and a merged range's
//! size and load are required to be below them, so a merge never produces a range that the
//! next round splits again (its size and load are below half the split thresholds), nor
//! does a half of an even split qualify for a merge (each half of a range over a split
//! threshold is then over half of it, so over the merge threshold, whatever its neighbour;
//! 64 / 2 > 20 for the defaults). This holds for any thresholds
//! [`SplitMergePolicy::validate`] accepts, and [`SplitMergePolicy::decide`] refuses to run
//! with others. An uneven split (a load split on skewed keys, a median that lands off
//! centre) can leave a half small enough to merge: the cooldown is what keeps that from
//! undoing the split at once. It keeps a range that just split or merged out of further
//! decisions until its statistics reflect its new shape, and caps on concurrent splits and merges (counting those already running) prevent
//! storms. Every threshold is a public field.

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

/// Why [`SplitMergePolicy::validate`] refused a policy.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `split_bytes` is 0: every range holding a byte would split.
    #[error("split_bytes must be above 0")]
    ZeroSplitBytes,
    /// `split_qps` is not a positive number (zero, negative or NaN): every range, or none,
    /// would split for load.
    #[error("split_qps must be a positive number, not {0}")]
    BadSplitQps(f64),
    /// `merge_max_qps` is negative or NaN.
    #[error("merge_max_qps must be a number at least 0, not {0}")]
    BadMergeQps(f64),
    /// `merge_bytes` is over half of `split_bytes`: a merge result could be split again, or
    /// a fresh split half merged back.
    #[error(
        "merge_bytes ({merge_bytes}) is over half of split_bytes ({split_bytes}): merges and \
         splits could undo each other"
    )]
    MergeBytesOverHalfSplit {
        /// The merge threshold.
        merge_bytes: u64,
        /// The split threshold.
        split_bytes: u64,
    },
    /// `merge_max_qps` is over half of `split_qps`: a merge result could be split again for
    /// load, or a fresh load split half merged back.
    #[error(
        "merge_max_qps ({merge_max_qps}) is over half of split_qps ({split_qps}): merges and \
         splits could undo each other"
    )]
    MergeQpsOverHalfSplit {
        /// The merge load threshold.
        merge_max_qps: f64,
        /// The split load threshold.
        split_qps: f64,
    },
}

/// Thresholds and limits of the split/merge policy. The fields are public; a policy is used
/// only once [`SplitMergePolicy::validate`] accepts it (the defaults pass).
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
    /// Checks that the thresholds keep the hysteresis the module docs describe: the split
    /// thresholds are positive, and each merge threshold is at most half its split
    /// threshold, so that neither a merge result nor a half of an even split qualifies for
    /// the opposite change (uneven splits are held by the cooldown). Caps of 0 (no splits, or no merges) and a cooldown of 0 are allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.split_bytes == 0 {
            return Err(ConfigError::ZeroSplitBytes);
        }
        if self.split_qps.is_nan() || self.split_qps <= 0.0 {
            return Err(ConfigError::BadSplitQps(self.split_qps));
        }
        if self.merge_max_qps.is_nan() || self.merge_max_qps < 0.0 {
            return Err(ConfigError::BadMergeQps(self.merge_max_qps));
        }
        // A half of an even split of a range over `split_bytes` holds more than
        // `split_bytes / 2` (rounded down), so with `merge_bytes` at most that it is never
        // below the merge threshold;
        // and a merge result, below `merge_bytes`, is never over `split_bytes`.
        if self.merge_bytes > self.split_bytes / 2 {
            return Err(ConfigError::MergeBytesOverHalfSplit {
                merge_bytes: self.merge_bytes,
                split_bytes: self.split_bytes,
            });
        }
        if self.merge_max_qps > self.split_qps / 2.0 {
            return Err(ConfigError::MergeQpsOverHalfSplit {
                merge_max_qps: self.merge_max_qps,
                split_qps: self.split_qps,
            });
        }
        Ok(())
    }

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
    /// without statistics are left alone. Refused, deciding nothing, when
    /// [`SplitMergePolicy::validate`] refuses the policy: without hysteresis, merges and
    /// splits could undo each other round after round.
    pub fn decide(
        &self,
        table: &RangeTable,
        stats: &HashMap<RangeId, RangeStats>,
        in_flight: &InFlight,
        now: Instant,
    ) -> Result<Vec<Decision>, ConfigError> {
        self.validate()?;
        let mut taken = HashSet::new();
        let mut decisions =
            self.choose_splits(table.descriptors(), stats, in_flight, &mut taken, now);
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
        Ok(decisions)
    }

    /// The split half of [`SplitMergePolicy::decide`] for some ranges only (the ones a node
    /// leads, say, which need not cover the key space): splits of the ranges in
    /// `descriptors` that are over a threshold, largest overshoot first, within the cap.
    pub fn decide_splits<'d>(
        &self,
        descriptors: impl IntoIterator<Item = &'d RangeDescriptor>,
        stats: &HashMap<RangeId, RangeStats>,
        in_flight: &InFlight,
        now: Instant,
    ) -> Result<Vec<Decision>, ConfigError> {
        self.validate()?;
        Ok(self.choose_splits(descriptors, stats, in_flight, &mut HashSet::new(), now))
    }

    fn choose_splits<'d>(
        &self,
        descriptors: impl IntoIterator<Item = &'d RangeDescriptor>,
        stats: &HashMap<RangeId, RangeStats>,
        in_flight: &InFlight,
        taken: &mut HashSet<RangeId>,
        now: Instant,
    ) -> Vec<Decision> {
        let mut splits: Vec<(f64, &RangeDescriptor, Vec<u8>, SplitReason)> = Vec::new();
        for d in descriptors {
            let Some(s) = self.eligible(d.id, stats, in_flight, taken, now) else {
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
        let mut decisions = Vec::new();
        for (_, d, at, reason) in splits.into_iter().take(split_room) {
            taken.insert(d.id);
            decisions.push(Decision::Split {
                range: d.id,
                at,
                reason,
            });
        }
        decisions
    }
}

//! Structural changes to hosted ranges: split, merge, removal. Each is one synced batch of
//! range records; none copies or moves a value (keys are stored bare, see
//! [`crate::layout`]).

use crate::config::Durability;
use crate::engine::Engine;
use crate::error::{Result, StorageError};
use crate::layout::{RangeRecord, VERSION_LEN};
use crate::range_info::{RangeStats, RangeStatus};
use crate::registry::Slot;
use shoal_core::{KeyRange, RangeId};

/// How to split a range (see [`Engine::split`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSpec {
    /// The first key of the new right-hand range; strictly inside the range.
    pub at: Vec<u8>,
    /// The right-hand range's id, not yet hosted here.
    pub new_range: RangeId,
    /// The log index of the split in the left (original) range: its new applied index.
    pub index: u64,
    /// The right-hand range's initial applied index (its own log starts after it).
    pub new_range_applied: u64,
    /// The left (original) range's new tag ([`crate::RangeInfo::tag`]); `None` keeps it.
    pub left_tag: Option<Vec<u8>>,
    /// The right-hand range's tag; `None` copies the original's.
    pub right_tag: Option<Vec<u8>>,
}

/// How the halves of a split get their stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitStats {
    /// The right half's keys are read once to count them (the left's are the difference):
    /// exact, at the cost of reading half the range.
    #[default]
    Counted,
    /// Nothing is read: each half is estimated at half the whole
    /// ([`crate::RangeStats::estimated`]) until [`Engine::recount_stats`]. The split costs
    /// the same whatever the range's size.
    Estimated,
}

/// How a split is carried out (see [`Engine::split_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMode {
    /// How the halves get their stats.
    pub stats: SplitStats,
    /// How durable the split is when it returns. [`Durability::Sync`] (the default) syncs
    /// the journal first and commits the two records synced. A weaker one leaves them with
    /// the journal's other batches: a crash may undo the split (the range comes back whole,
    /// as before it), so a caller that builds on the new range durably (a Raft log for it)
    /// must first call [`Engine::persist`] with [`Durability::Sync`].
    pub durability: Durability,
}

impl Default for SplitMode {
    fn default() -> Self {
        Self {
            stats: SplitStats::Counted,
            durability: Durability::Sync,
        }
    }
}

impl Engine {
    /// Splits range `range` at `spec.at`: the range keeps the keys below, the new range
    /// `spec.new_range` takes the rest. No key or value is written; the right half's stats
    /// are counted by reading its keys once (the left's are the difference), and the split
    /// is synced before it returns ([`SplitMode::default`]).
    ///
    /// The counting reads a point-in-time view with no lock held, so neither this range's
    /// readers nor any other range wait for it; the registry and the range are locked only
    /// to commit the two records. If a write landed on the range meanwhile (a Raft store
    /// applies a range's entries one at a time, so it does not), the count is taken again,
    /// and after three tries it is taken under the locks.
    pub fn split(&self, range: RangeId, spec: &SplitSpec) -> Result<()> {
        self.split_with(range, spec, SplitMode::default())
    }

    /// [`Engine::split`] carried out as `mode` says: with [`SplitStats::Estimated`] and a
    /// buffered durability it reads nothing and syncs nothing, so it costs the same for a
    /// range of any size (a Raft store applies it inside a round that every range on the
    /// node waits for).
    pub fn split_with(&self, range: RangeId, spec: &SplitSpec, mode: SplitMode) -> Result<()> {
        self.check_key(&spec.at)?;
        for tag in [&spec.left_tag, &spec.right_tag].into_iter().flatten() {
            self.check_value(tag)?;
        }
        if mode.stats == SplitStats::Estimated {
            self.commit_split(range, spec, SplitCount::Estimated, mode.durability)?;
            return Ok(());
        }
        if mode.durability != Durability::Sync {
            for _ in 0..SPLIT_ATTEMPTS {
                let view = self.view(range)?;
                let counted = view.record();
                let (_, right_span) = split_span(&counted.span, &spec.at)?;
                let right_stats = count(view.iter_span(&right_span))?;
                let at = SplitCount::At(counted, right_stats);
                if self.commit_split(range, spec, at, mode.durability)? {
                    return Ok(());
                }
            }
            return self
                .commit_split(range, spec, SplitCount::UnderLocks, mode.durability)
                .map(|_| ());
        }
        self.split_synced(range, spec)
    }

    /// Recounts a range's stats by reading its keys once from a point-in-time view, with no
    /// lock held while it reads, and makes them exact: the applies since the view moved the
    /// stats by the same amounts either way, so the difference between the count and the
    /// stats the view saw is added to the current ones. Changes nothing (and returns the
    /// stats as they are) if the range split, merged or took a snapshot meanwhile, or its
    /// stats are not estimated. Returns the range's stats.
    pub fn recount_stats(&self, range: RangeId) -> Result<RangeStats> {
        self.recount_stats_paced(range, usize::MAX, &mut || {})
    }

    /// [`Engine::recount_stats`], calling `pace` after every `step` keys it reads: a caller
    /// that sleeps there spreads a long count out, leaving the processor to the work that
    /// cannot wait (a count of a large range otherwise takes a core for as long as it runs).
    pub fn recount_stats_paced(
        &self,
        range: RangeId,
        step: usize,
        pace: &mut dyn FnMut(),
    ) -> Result<RangeStats> {
        let view = self.view(range)?;
        let seen = view.record();
        if !seen.stats.estimated {
            return Ok(seen.stats);
        }
        let counted = count_paced(view.iter_span(&seen.span), step, pace)?;
        let registry = self.read_registry();
        let slot = registry.get(range)?;
        let mut state = slot.lock();
        let record = state.serving()?;
        if record.span != seen.span || !record.stats.estimated {
            return Ok(record.stats);
        }
        let mut next = record.clone();
        let moved_keys = i128::from(record.stats.live_keys) - i128::from(seen.stats.live_keys);
        let moved_bytes = i128::from(record.stats.live_bytes) - i128::from(seen.stats.live_bytes);
        let exact = |counted: u64, moved: i128| {
            u64::try_from((i128::from(counted) + moved).max(0)).unwrap_or(u64::MAX)
        };
        next.stats = RangeStats {
            live_keys: exact(counted.live_keys, moved_keys),
            live_bytes: exact(counted.live_bytes, moved_bytes),
            estimated: false,
        };
        self.commit_records_with(&[&next], &[], self.config.durability)?;
        let stats = next.stats;
        state.record = next;
        Ok(stats)
    }

    /// The counted split, synced.
    fn split_synced(&self, range: RangeId, spec: &SplitSpec) -> Result<()> {
        for tag in [&spec.left_tag, &spec.right_tag].into_iter().flatten() {
            self.check_value(tag)?;
        }
        for _ in 0..SPLIT_ATTEMPTS {
            let view = self.view(range)?;
            let counted = view.record();
            let (_, right_span) = split_span(&counted.span, &spec.at)?;
            let right_stats = count(view.iter_span(&right_span))?;
            // The commit below is a synced write, which also syncs whatever earlier buffered
            // writes the journal holds: sync those first, outside the locks.
            self.persist(Durability::Sync)?;
            let at = SplitCount::At(counted, right_stats);
            if self.commit_split(range, spec, at, Durability::Sync)? {
                return Ok(());
            }
        }
        self.commit_split(range, spec, SplitCount::UnderLocks, Durability::Sync)
            .map(|_| ())
    }

    /// Commits a split under the registry and range locks, its records with `durability`.
    /// With [`SplitCount::At`], the right half's stats as counted at a given record, the
    /// split commits only if the range is still at that record (returns `false` otherwise,
    /// changing nothing).
    fn commit_split(
        &self,
        range: RangeId,
        spec: &SplitSpec,
        counted: SplitCount<'_>,
        durability: Durability,
    ) -> Result<bool> {
        let mut registry = self.write_registry();
        let slot = registry.get(range)?;
        let mut state = slot.lock();
        let record = state.serving()?;
        index_not_above(record.applied_index, spec.index, range)?;
        if registry.get(spec.new_range).is_ok() {
            return Err(StorageError::RangeExists(spec.new_range));
        }
        let (left_span, right_span) = split_span(&record.span, &spec.at)?;
        let right_stats = match counted {
            SplitCount::At(at, stats) if at == record => stats,
            SplitCount::At(..) => return Ok(false),
            SplitCount::UnderLocks => count(self.span_iter(&right_span))?,
            SplitCount::Estimated => record.stats.half_estimate(),
        };
        let mut left = record.clone();
        left.span = left_span.clone();
        left.applied_index = spec.index;
        left.stats.sub(right_stats);
        if let Some(tag) = &spec.left_tag {
            left.tag = tag.clone();
        }
        let mut right = record.clone();
        right.id = spec.new_range;
        right.span = right_span.clone();
        right.applied_index = spec.new_range_applied;
        right.stats = right_stats;
        if let Some(tag) = &spec.right_tag {
            right.tag = tag.clone();
        }
        self.commit_records_with(&[&left, &right], &[], durability)?;
        let old_span = std::mem::replace(&mut state.record, left).span;
        drop(state);
        registry.respan(range, &old_span, left_span);
        registry.insert(Slot::new(right), right_span, spec.new_range);
        Ok(true)
    }

    /// Merges range `right` into its left neighbour `left` as `left`'s log entry `index`:
    /// `left` takes `right`'s span, keys and stats, and `right` is no longer hosted. No key
    /// or value moves.
    pub fn merge(&self, left: RangeId, right: RangeId, index: u64) -> Result<()> {
        let mut registry = self.write_registry();
        let (left_slot, right_slot) = (registry.get(left)?, registry.get(right)?);
        if left == right {
            return Err(StorageError::InvalidSplitMerge(format!(
                "cannot merge {left} into itself"
            )));
        }
        let mut left_state = left_slot.lock();
        let mut right_state = right_slot.lock();
        let (l, r) = (left_state.serving()?, right_state.serving()?);
        index_not_above(l.applied_index, index, left)?;
        let span = l
            .span
            .merge(&r.span)
            .map_err(|e| StorageError::InvalidSplitMerge(e.to_string()))?;
        let mut merged = l.clone();
        merged.span = span.clone();
        merged.applied_index = index;
        merged.stats.add(r.stats);
        merged.next_version = l.next_version.max(r.next_version);
        let right_span = r.span.clone();
        self.commit_records(&[&merged], &[right])?;
        let old_span = std::mem::replace(&mut left_state.record, merged).span;
        right_state.gone = true;
        drop((left_state, right_state));
        registry.remove(right, &right_span);
        registry.respan(left, &old_span, span);
        Ok(())
    }

    /// Stops hosting range `range` and deletes its keys. The range stops serving at once
    /// (one synced record write); its keys are then deleted a batch at a time, reading keys
    /// but no values, and only then is its span free for another range. A crash part-way
    /// is finished at the next open.
    pub fn remove_range(&self, range: RangeId) -> Result<()> {
        let record = {
            let registry = self.write_registry();
            let slot = registry.get(range)?;
            let mut state = slot.lock();
            if state.gone || state.record.status == RangeStatus::Clearing {
                return Err(StorageError::RangeNotFound(range));
            }
            if state.record.status == RangeStatus::Swapping {
                return Err(StorageError::RangeNotReady(range));
            }
            let mut clearing = state.record.clone();
            clearing.status = RangeStatus::Clearing;
            self.commit_records(&[&clearing], &[])?;
            state.record = clearing.clone();
            clearing
        };
        self.clear_and_forget(&record)
    }

    /// The key at the size median of range `range` (see [`crate::RangeView::split_key`]).
    pub fn split_key(&self, range: RangeId) -> Result<Option<Vec<u8>>> {
        self.view(range)?.split_key()
    }

    /// Whether `span` is free for a new range (no hosted range overlaps it).
    pub fn is_free(&self, span: &KeyRange) -> bool {
        self.read_registry()
            .check_free(RangeId::new(u64::MAX), span, None)
            .is_ok()
    }
}

/// How many times a split counts its right half from a view before it counts under the
/// locks (see [`Engine::split`]).
const SPLIT_ATTEMPTS: usize = 3;

/// Where a split's right-half stats come from.
enum SplitCount<'a> {
    /// Counted from a view of the range at this record.
    At(&'a RangeRecord, RangeStats),
    /// To be counted under the locks.
    UnderLocks,
    /// Estimated at half the whole, nothing read.
    Estimated,
}

/// `span` cut at `at`, which must be strictly inside it.
fn split_span(span: &KeyRange, at: &[u8]) -> Result<(KeyRange, KeyRange)> {
    span.split_at(at)
        .map_err(|e| StorageError::InvalidSplitMerge(e.to_string()))
}

/// The live keys and bytes of the entries `iter` yields.
fn count(iter: fjall::Iter) -> Result<RangeStats> {
    count_paced(iter, usize::MAX, &mut || {})
}

/// Counts the entries `iter` reads, calling `pace` after every `step` of them.
fn count_paced(iter: fjall::Iter, step: usize, pace: &mut dyn FnMut()) -> Result<RangeStats> {
    let mut stats = RangeStats::default();
    for (i, guard) in iter.enumerate() {
        let (key, stored) = guard.into_inner()?;
        stats.add(RangeStats::of_entry(
            key.len(),
            stored.len().saturating_sub(VERSION_LEN),
        ));
        if (i + 1) % step == 0 {
            pace();
        }
    }
    Ok(stats)
}

/// Refuses an index that is not above `applied`.
fn index_not_above(applied: u64, index: u64, range: RangeId) -> Result<()> {
    if index <= applied {
        return Err(StorageError::StaleApply {
            range,
            index,
            applied,
        });
    }
    Ok(())
}

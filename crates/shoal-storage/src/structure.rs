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

impl Engine {
    /// Splits range `range` at `spec.at`: the range keeps the keys below, the new range
    /// `spec.new_range` takes the rest. No key or value is written; the right half's stats
    /// are counted by reading its keys once (the left's are the difference).
    ///
    /// The counting reads a point-in-time view with no lock held, so neither this range's
    /// readers nor any other range wait for it; the registry and the range are locked only
    /// to commit the two records. If a write landed on the range meanwhile (a Raft store
    /// applies a range's entries one at a time, so it does not), the count is taken again,
    /// and after three tries it is taken under the locks.
    pub fn split(&self, range: RangeId, spec: &SplitSpec) -> Result<()> {
        self.check_key(&spec.at)?;
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
            if self.commit_split(range, spec, Some((counted, right_stats)))? {
                return Ok(());
            }
        }
        self.commit_split(range, spec, None).map(|_| ())
    }

    /// Commits a split under the registry and range locks. With `counted`, the right half's
    /// stats as counted at a given record, the split commits only if the range is still at
    /// that record (returns `false` otherwise, changing nothing); without, it counts under
    /// the locks.
    fn commit_split(
        &self,
        range: RangeId,
        spec: &SplitSpec,
        counted: Option<(&RangeRecord, RangeStats)>,
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
            Some((at, stats)) if at == record => stats,
            Some(_) => return Ok(false),
            None => count(self.span_iter(&right_span))?,
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
        self.commit_records(&[&left, &right], &[])?;
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

/// `span` cut at `at`, which must be strictly inside it.
fn split_span(span: &KeyRange, at: &[u8]) -> Result<(KeyRange, KeyRange)> {
    span.split_at(at)
        .map_err(|e| StorageError::InvalidSplitMerge(e.to_string()))
}

/// The live keys and bytes of the entries `iter` yields.
fn count(iter: fjall::Iter) -> Result<RangeStats> {
    let mut stats = RangeStats::default();
    for guard in iter {
        let (key, stored) = guard.into_inner()?;
        stats.add(RangeStats::of_entry(
            key.len(),
            stored.len().saturating_sub(VERSION_LEN),
        ));
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

//! The hosted ranges in memory: each range's record behind its own lock (applies to
//! different ranges do not wait on each other), indexed by id and by start key.

use crate::error::{Result, StorageError};
use crate::layout::RangeRecord;
use crate::range_info::RangeInfo;
use shoal_core::{KeyRange, RangeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One hosted range. Holding its lock for writing serialises everything that
/// reads-then-writes the range's record (applies, splits, merges), so the record committed
/// last is always the one in memory; gets hold it for reading, so they do not wait on each
/// other, only on a change to the range.
pub(crate) struct Slot {
    state: RwLock<SlotState>,
}

/// A slot's contents.
pub(crate) struct SlotState {
    pub record: RangeRecord,
    /// The range was merged away or removed after this slot was looked up.
    pub gone: bool,
}

impl Slot {
    pub(crate) fn new(record: RangeRecord) -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::new(SlotState {
                record,
                gone: false,
            }),
        })
    }

    /// Locks the slot for a change. A panic while it was held cannot leave a half-updated
    /// record (the record is replaced only after its batch committed), so a poisoned lock is
    /// taken over.
    pub(crate) fn lock(&self) -> RwLockWriteGuard<'_, SlotState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the slot for a read that must not overlap a change.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, SlotState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl SlotState {
    /// The record, if the range is still here and serving.
    pub(crate) fn serving(&self) -> Result<&RangeRecord> {
        let id = self.record.id;
        if self.gone || self.record.status == crate::RangeStatus::Clearing {
            return Err(StorageError::RangeNotFound(id));
        }
        if self.record.status != crate::RangeStatus::Active {
            return Err(StorageError::RangeNotReady(id));
        }
        Ok(&self.record)
    }

    /// What callers may see of the record.
    pub(crate) fn info(&self) -> RangeInfo {
        let r = &self.record;
        RangeInfo {
            id: r.id,
            span: r.span.clone(),
            status: r.status,
            applied_index: r.applied_index,
            stats: r.stats,
            tag: r.tag.clone(),
        }
    }
}

/// Every hosted range.
#[derive(Default)]
pub(crate) struct Registry {
    by_id: HashMap<RangeId, Arc<Slot>>,
    /// Start key → range, for overlap checks. Spans never overlap.
    by_start: BTreeMap<Vec<u8>, (RangeId, KeyRange)>,
}

impl Registry {
    pub(crate) fn get(&self, id: RangeId) -> Result<Arc<Slot>> {
        self.by_id
            .get(&id)
            .cloned()
            .ok_or(StorageError::RangeNotFound(id))
    }

    /// Every slot, in key order.
    pub(crate) fn slots(&self) -> Vec<Arc<Slot>> {
        self.by_start
            .values()
            .filter_map(|(id, _)| self.by_id.get(id).cloned())
            .collect()
    }

    /// Refuses a new range `id` over `span` if the id is taken or the span overlaps one.
    pub(crate) fn check_new(&self, id: RangeId, span: &KeyRange) -> Result<()> {
        if self.by_id.contains_key(&id) {
            return Err(StorageError::RangeExists(id));
        }
        self.check_free(id, span, None)
    }

    /// Refuses `span` if it overlaps any range but `except`.
    pub(crate) fn check_free(
        &self,
        id: RangeId,
        span: &KeyRange,
        except: Option<RangeId>,
    ) -> Result<()> {
        // The only candidates: the last range starting at or before `span`'s start, and
        // those starting inside `span`.
        let before = self
            .by_start
            .range::<[u8], _>((
                std::ops::Bound::Unbounded,
                std::ops::Bound::Included(span.start()),
            ))
            .next_back();
        let inside = self
            .by_start
            .range::<[u8], _>((
                std::ops::Bound::Excluded(span.start()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(start, _)| span.end().is_above(start));
        for (_, (other, other_span)) in before.into_iter().chain(inside) {
            if Some(*other) != except && other_span.overlaps(span) {
                return Err(StorageError::RangeOverlap {
                    range: id,
                    existing: *other,
                });
            }
        }
        Ok(())
    }

    /// Adds (or replaces) a range's entry; its span must already have been checked.
    pub(crate) fn insert(&mut self, slot: Arc<Slot>, span: KeyRange, id: RangeId) {
        self.by_start.insert(span.start().to_vec(), (id, span));
        self.by_id.insert(id, slot);
    }

    /// Records a new span for a hosted range.
    pub(crate) fn respan(&mut self, id: RangeId, old: &KeyRange, new: KeyRange) {
        self.by_start.remove(old.start());
        self.by_start.insert(new.start().to_vec(), (id, new));
    }

    /// Forgets a range.
    pub(crate) fn remove(&mut self, id: RangeId, span: &KeyRange) {
        self.by_id.remove(&id);
        self.by_start.remove(span.start());
    }
}

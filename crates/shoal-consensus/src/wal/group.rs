//! One group's view of the WAL in memory: its hard state, snapshot and log bounds, where
//! each entry it holds was written (the index), and the newest entries themselves (a cache
//! bounded in bytes, so that replication and apply rarely read the disk).
//!
//! The index costs 32 bytes per entry and holds only entries the group has not compacted
//! away, so it is bounded by the snapshot policy (`snapshot_after_entries`), not by the
//! size of the WAL.

use crate::entry::{Entry, LogIndex, Term};
use crate::snapshot::SnapshotMeta;
use crate::store::{HardState, LogStoreError};
use std::collections::VecDeque;

/// Where an entry is on disk: the record that holds it and its position among the record's
/// entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    /// Segment id.
    pub segment: u64,
    /// Offset of the record's header in the segment.
    pub offset: u64,
    /// The record's framed length.
    pub len: u32,
    /// The entry's position in the record.
    pub nth: u32,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    term: Term,
    at: Location,
}

/// A group's state, rebuilt from the WAL at open and kept up to date by every write.
#[derive(Debug)]
pub(crate) struct GroupLog {
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    /// Index and term just before the first entry held.
    base: (LogIndex, Term),
    /// False while recovery has entries whose predecessors were in a deleted segment and no
    /// later record has told the term before them yet.
    pub base_known: bool,
    slots: VecDeque<Slot>,
    /// The newest entries, ending at the last one.
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    /// Which life of the group this is: [`crate::Wal::store`] numbers a group it creates, so
    /// store handles taken before a removal cannot write to the group added again after it.
    /// Groups recovered at open are 0.
    pub incarnation: u64,
}

impl Default for GroupLog {
    fn default() -> Self {
        GroupLog {
            hard_state: HardState::default(),
            snapshot: SnapshotMeta::default(),
            base: (0, 0),
            base_known: true,
            slots: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            incarnation: 0,
        }
    }
}

impl GroupLog {
    /// An empty group, in its `incarnation`.
    pub fn new(incarnation: u64) -> Self {
        GroupLog {
            incarnation,
            ..GroupLog::default()
        }
    }

    pub fn first_index(&self) -> LogIndex {
        self.base.0 + 1
    }

    pub fn last_index(&self) -> LogIndex {
        self.base.0 + self.slots.len() as u64
    }

    pub fn base(&self) -> (LogIndex, Term) {
        self.base
    }

    /// The segment holding the first entry still held, if any.
    pub fn first_segment(&self) -> Option<u64> {
        self.slots.front().map(|s| s.at.segment)
    }

    fn position(&self, index: LogIndex) -> Result<usize, LogStoreError> {
        crate::store::position(self.base.0, self.slots.len(), index)
    }

    pub fn term(&self, index: LogIndex) -> Result<Term, LogStoreError> {
        if index == self.base.0 {
            return Ok(self.base.1);
        }
        Ok(self.slots[self.position(index)?].term)
    }

    pub fn location(&self, index: LogIndex) -> Result<Location, LogStoreError> {
        Ok(self.slots[self.position(index)?].at)
    }

    /// The entry at `index` if it is cached.
    pub fn cached(&self, index: LogIndex) -> Option<&Entry> {
        let front = self.cache.front()?.index;
        index
            .checked_sub(front)
            .and_then(|i| self.cache.get(i as usize))
    }

    /// Whether an append at `first` continues the log (it may replace a suffix).
    pub fn can_append_at(&self, first: LogIndex) -> bool {
        first > self.base.0 && first <= self.last_index() + 1
    }

    /// Records appended entries, written at `at` (one location per entry). An append past
    /// the end (only during recovery, after a deleted segment) restarts the log there with
    /// the base term unknown until a later record tells it.
    pub fn append(
        &mut self,
        entries: &[Entry],
        at: impl Iterator<Item = Location>,
        cache_limit: u64,
    ) {
        let Some(first) = entries.first() else {
            return;
        };
        if first.index > self.last_index() + 1 || first.index <= self.base.0 {
            self.slots.clear();
            self.clear_cache();
            self.base = (first.index - 1, 0);
            self.base_known = false;
        }
        self.truncate(first.index);
        for (entry, at) in entries.iter().zip(at) {
            self.slots.push_back(Slot {
                term: entry.term,
                at,
            });
        }
        if self
            .cache
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            self.clear_cache();
        }
        for entry in entries {
            self.cache_bytes += entry.size();
            self.cache.push_back(entry.clone());
        }
        while self.cache_bytes > cache_limit {
            let Some(e) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= e.size();
        }
    }

    /// Drops every entry at or after `from`.
    pub fn truncate(&mut self, from: LogIndex) {
        let keep = from.saturating_sub(self.base.0 + 1);
        self.slots
            .truncate(keep.min(self.slots.len() as u64) as usize);
        while self.cache.back().is_some_and(|e| e.index >= from) {
            let e = self.cache.pop_back().expect("checked");
            self.cache_bytes -= e.size();
        }
    }

    /// Drops the entries through `through`, whose term is `term`; past the last entry, the
    /// log becomes empty and starts after it.
    pub fn compact(&mut self, through: LogIndex, term: Term) {
        if through < self.base.0 || (through == self.base.0 && self.base_known) {
            return;
        }
        let drop = (through - self.base.0).min(self.slots.len() as u64);
        self.slots.drain(..drop as usize);
        while self.cache.front().is_some_and(|e| e.index <= through) {
            let e = self.cache.pop_front().expect("checked");
            self.cache_bytes -= e.size();
        }
        if self.slots.is_empty() {
            self.clear_cache();
        }
        self.base = (through, term);
        self.base_known = true;
    }

    /// Replaces the log by a snapshot.
    pub fn install(&mut self, meta: SnapshotMeta) {
        self.slots.clear();
        self.clear_cache();
        self.base = (meta.index, meta.term);
        self.base_known = true;
        self.snapshot = meta;
    }

    /// Records a snapshot unless a newer one is recorded.
    pub fn record_snapshot(&mut self, meta: &SnapshotMeta) {
        if meta.index > self.snapshot.index {
            self.snapshot = meta.clone();
        }
    }

    fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_bytes = 0;
    }
}

//! The log store: where a group's log, hard state and snapshot metadata are kept.
//!
//! The core only *reads* a store. Writes are the driver's: it takes what a
//! [`crate::Ready`] asks to persist, writes it (possibly in one fsync with other groups'),
//! and then tells the core with [`crate::Raft::on_persisted`]. Until then the core treats the
//! writes as not done: a follower does not acknowledge the entries and a leader does not
//! count itself towards their commit.

use crate::entry::{Entry, LogIndex, Term};
use crate::snapshot::SnapshotMeta;
use serde::{Deserialize, Serialize};
use shoal_core::{GroupId, NodeId};
use std::collections::VecDeque;

/// What must survive a restart besides the log (§5.1, §5.2): the current term, the vote
/// cast in it, and the commit index (an optimisation: commit is recomputable, but keeping it
/// lets a restarted node apply at once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term seen.
    pub term: Term,
    /// Who this node voted for in `term`.
    pub vote: Option<NodeId>,
    /// The highest index known committed.
    pub commit: LogIndex,
}

/// Why a log store could not answer or write.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The index is before the log's first entry (dropped by compaction).
    #[error("index {0} is compacted")]
    Compacted(LogIndex),
    /// The index is past the log's last entry.
    #[error("index {0} is past the end of the log")]
    Unavailable(LogIndex),
    /// Stored bytes failed a check.
    #[error("corrupt log store: {0}")]
    Corrupt(String),
    /// An append that does not continue the log (a gap), or a compaction past its end.
    #[error("invalid write: {0}")]
    InvalidWrite(String),
    /// The disk failed.
    #[error("log store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The group was removed from its shared log ([`crate::Wal::remove_group`]) after this
    /// store handle was taken: a write through it would bring the group back half-made.
    #[error("group {0} was removed from the WAL; this store handle is stale")]
    GroupRemoved(GroupId),
}

/// A group's durable log.
///
/// The log holds entries `first_index()..=last_index()`; the term of `first_index() - 1` is
/// also known (it is the snapshot's or compaction point's), so appends right after it can
/// be checked.
pub trait LogStore {
    /// The persisted hard state.
    fn hard_state(&self) -> HardState;
    /// The latest snapshot's metadata (index 0: none yet).
    fn snapshot_meta(&self) -> SnapshotMeta;
    /// The first entry held.
    fn first_index(&self) -> LogIndex;
    /// The last entry held (`first_index() - 1` when empty).
    fn last_index(&self) -> LogIndex;
    /// The term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`.
    fn term(&self, index: LogIndex) -> Result<Term, LogStoreError>;
    /// Entries in `lo..hi`, stopping before the total [`Entry::size`] would pass `max_bytes`
    /// (but always at least one entry when `lo < hi`).
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogStoreError>;

    /// Appends `entries` (consecutive), first dropping any held entry at or after
    /// `entries[0].index`. The first index must be at most `last_index() + 1`.
    fn append(&mut self, entries: &[Entry]) -> Result<(), LogStoreError>;
    /// Drops every entry at or after `from`.
    fn truncate(&mut self, from: LogIndex) -> Result<(), LogStoreError>;
    /// Records the hard state.
    fn set_hard_state(&mut self, state: HardState) -> Result<(), LogStoreError>;
    /// Records a snapshot the state machine took and drops the entries through `through`
    /// (at most `snapshot.index`; entries after `through` stay for followers that lag a
    /// little), keeping the term of `through`.
    fn compact(&mut self, snapshot: &SnapshotMeta, through: LogIndex) -> Result<(), LogStoreError>;
    /// Replaces the whole log by a snapshot: the log becomes empty and starts after
    /// `meta.index`.
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), LogStoreError>;
    /// Makes every write so far durable. The in-memory store has nothing to do.
    fn sync(&mut self) -> Result<(), LogStoreError>;
}

/// A log store in memory: for tests, the simulator and benchmarks, and for groups whose
/// durability comes from elsewhere.
#[derive(Debug, Default)]
pub struct MemLogStore {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Index and term just before `entries[0]`.
    base: (LogIndex, Term),
    entries: VecDeque<Entry>,
}

impl MemLogStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, index: LogIndex) -> Result<usize, LogStoreError> {
        position(self.base.0, self.entries.len(), index)
    }
}

/// Where entry `index` sits in a log holding `len` entries after `base`: compacted before
/// it, unavailable past it.
pub(crate) fn position(
    base: LogIndex,
    len: usize,
    index: LogIndex,
) -> Result<usize, LogStoreError> {
    if index <= base {
        return Err(LogStoreError::Compacted(index));
    }
    if index > base + len as u64 {
        return Err(LogStoreError::Unavailable(index));
    }
    Ok((index - base - 1) as usize)
}

impl LogStore for MemLogStore {
    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.clone()
    }

    fn first_index(&self) -> LogIndex {
        self.base.0 + 1
    }

    fn last_index(&self) -> LogIndex {
        self.base.0 + self.entries.len() as u64
    }

    fn term(&self, index: LogIndex) -> Result<Term, LogStoreError> {
        if index == self.base.0 {
            return Ok(self.base.1);
        }
        Ok(self.entries[self.position(index)?].term)
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogStoreError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let start = self.position(lo)?;
        let end = self.position(hi - 1)? + 1;
        Ok(take_within(self.entries.range(start..end), max_bytes))
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), LogStoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.base.0 || first.index > self.last_index() + 1 {
            return Err(LogStoreError::InvalidWrite(format!(
                "append at {} to a log of {}..={}",
                first.index,
                self.first_index(),
                self.last_index()
            )));
        }
        self.entries
            .truncate((first.index - self.base.0 - 1) as usize);
        self.entries.extend(entries.iter().cloned());
        Ok(())
    }

    fn truncate(&mut self, from: LogIndex) -> Result<(), LogStoreError> {
        let keep = from.saturating_sub(self.base.0 + 1);
        self.entries.truncate(keep as usize);
        Ok(())
    }

    fn set_hard_state(&mut self, state: HardState) -> Result<(), LogStoreError> {
        self.hard_state = state;
        Ok(())
    }

    fn compact(&mut self, snapshot: &SnapshotMeta, through: LogIndex) -> Result<(), LogStoreError> {
        if snapshot.index > self.snapshot.index {
            self.snapshot = snapshot.clone();
        }
        if through <= self.base.0 {
            return Ok(());
        }
        if through > self.last_index() {
            return Err(LogStoreError::InvalidWrite(format!(
                "compact through {through} past the last index {}",
                self.last_index()
            )));
        }
        let term = self.term(through)?;
        self.entries.drain(..(through - self.base.0) as usize);
        self.base = (through, term);
        Ok(())
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), LogStoreError> {
        self.entries.clear();
        self.base = (meta.index, meta.term);
        self.snapshot = meta;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogStoreError> {
        Ok(())
    }
}

/// The leading entries of `entries` whose sizes fit in `max_bytes`, at least one.
pub(crate) fn take_within<'a>(
    entries: impl Iterator<Item = &'a Entry>,
    max_bytes: u64,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut total = 0u64;
    for entry in entries {
        total += entry.size();
        if !out.is_empty() && total > max_bytes {
            break;
        }
        out.push(entry.clone());
    }
    out
}

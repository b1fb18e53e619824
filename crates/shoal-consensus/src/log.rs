//! The core's view of the log: what the store holds, plus entries and a snapshot not yet
//! known to be persisted, and the commit, persist and apply positions.

use crate::entry::{Entry, LogIndex, Term};
use crate::snapshot::SnapshotMeta;
use crate::store::{LogStore, LogStoreError};
use std::collections::VecDeque;

/// A log entry that contradicts a committed one: only a broken or malicious leader sends it.
#[derive(Debug)]
pub(crate) struct CommittedConflict;

pub(crate) struct RaftLog<S> {
    pub(crate) store: S,
    /// Entries from `offset` on that are not known to be persisted. Reads below `offset` go
    /// to the store (which may still hold stale entries at or after `offset` until the
    /// driver writes the replacement).
    unstable: VecDeque<Entry>,
    offset: LogIndex,
    /// A received snapshot not yet known to be persisted.
    pending_snapshot: Option<SnapshotMeta>,
    snapshot_handed: bool,
    /// The last index handed to the driver to persist.
    handed: LogIndex,
    /// The last index known persisted (and still part of this log).
    pub(crate) persisted: LogIndex,
    pub(crate) committed: LogIndex,
    pub(crate) applied: LogIndex,
}

impl<S: LogStore> RaftLog<S> {
    pub(crate) fn new(store: S, applied: LogIndex) -> Self {
        let last = store.last_index();
        let snapshot_index = store.snapshot_meta().index;
        let committed = store
            .hard_state()
            .commit
            .clamp(snapshot_index, last.max(snapshot_index));
        Self {
            unstable: VecDeque::new(),
            offset: last + 1,
            pending_snapshot: None,
            snapshot_handed: false,
            handed: last,
            persisted: last,
            committed,
            applied: applied.clamp(snapshot_index, committed),
            store,
        }
    }

    /// The last index handed to the driver to persist.
    pub(crate) fn handed(&self) -> LogIndex {
        self.handed
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        match &self.pending_snapshot {
            Some(s) => s.index + 1,
            None => self.store.first_index(),
        }
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.offset - 1 + self.unstable.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or(0)
    }

    pub(crate) fn term(&self, index: LogIndex) -> Result<Term, LogStoreError> {
        if index >= self.offset {
            return self
                .unstable
                .get((index - self.offset) as usize)
                .map(|e| e.term)
                .ok_or(LogStoreError::Unavailable(index));
        }
        if let Some(snap) = &self.pending_snapshot {
            return match index.cmp(&snap.index) {
                std::cmp::Ordering::Equal => Ok(snap.term),
                std::cmp::Ordering::Less => Err(LogStoreError::Compacted(index)),
                // Unreachable: offset is just past the snapshot.
                std::cmp::Ordering::Greater => Err(LogStoreError::Unavailable(index)),
            };
        }
        self.store.term(index)
    }

    pub(crate) fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Whether a log ending at (`index`, `term`) is at least as up to date as this one
    /// (§5.4.1).
    pub(crate) fn is_up_to_date(&self, index: LogIndex, term: Term) -> bool {
        let last_term = self.last_term();
        term > last_term || (term == last_term && index >= self.last_index())
    }

    /// Entries in `lo..hi`, within `max_bytes` (at least one).
    pub(crate) fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogStoreError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(LogStoreError::Compacted(lo));
        }
        if hi > self.last_index() + 1 {
            return Err(LogStoreError::Unavailable(hi - 1));
        }
        let mut out = Vec::new();
        let mut used = 0;
        if lo < self.offset {
            let stored_hi = hi.min(self.offset);
            out = self.store.entries(lo, stored_hi, max_bytes)?;
            used = out.iter().map(Entry::size).sum();
            if out.last().map_or(lo, |e| e.index + 1) < stored_hi {
                return Ok(out); // the byte budget ran out inside the store
            }
        }
        if hi > self.offset {
            let start = (lo.max(self.offset) - self.offset) as usize;
            let end = (hi - self.offset) as usize;
            for e in self.unstable.range(start..end) {
                if !out.is_empty() && used + e.size() > max_bytes {
                    break;
                }
                used += e.size();
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Appends entries the leader created. They continue the log.
    pub(crate) fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.unstable.push_back(entry);
    }

    /// The follower side of an append (§5.3): `None` if the log does not hold an entry at
    /// `prev_index` with `prev_term`; otherwise the index of the last entry the append
    /// covers, after dropping any conflicting suffix. Entries already committed are skipped
    /// (they match by the Log Matching property).
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
    ) -> Result<Option<LogIndex>, CommittedConflict> {
        if prev_index > self.committed && !self.matches(prev_index, prev_term) {
            return Ok(None);
        }
        let last_new = prev_index + entries.len() as u64;
        let conflict = entries
            .iter()
            .find(|e| e.index > self.committed && !self.matches(e.index, e.term));
        if let Some(first) = conflict {
            if first.index <= self.committed {
                return Err(CommittedConflict);
            }
            let skip = (first.index - prev_index - 1) as usize;
            self.truncate_and_append(&entries[skip..]);
        }
        Ok(Some(last_new))
    }

    fn truncate_and_append(&mut self, entries: &[Entry]) {
        let from = entries[0].index;
        if from >= self.offset {
            self.unstable.truncate((from - self.offset) as usize);
        } else {
            self.unstable.clear();
            self.offset = from;
        }
        self.handed = self.handed.min(from - 1);
        self.persisted = self.persisted.min(from - 1);
        self.unstable.extend(entries.iter().cloned());
    }

    /// Replaces the log with a received snapshot. Its index is at most
    /// [`crate::MAX_INDEX`] (larger ones are dropped in [`crate::Raft::step`]), which leaves
    /// the `+ 1` arithmetic here and in later appends room to spare.
    pub(crate) fn restore(&mut self, snapshot: SnapshotMeta) {
        let index = snapshot.index;
        self.unstable.clear();
        self.offset = index + 1;
        self.committed = index;
        self.applied = index;
        self.handed = index;
        self.persisted = self.persisted.min(index);
        self.pending_snapshot = Some(snapshot);
        self.snapshot_handed = false;
    }

    /// What the driver should persist next: a snapshot to install, entries to append.
    pub(crate) fn take_unpersisted(&mut self) -> (Option<SnapshotMeta>, Vec<Entry>) {
        let snapshot = match &self.pending_snapshot {
            Some(s) if !self.snapshot_handed => {
                self.snapshot_handed = true;
                Some(s.clone())
            }
            _ => None,
        };
        let from = self.handed.max(self.offset - 1) + 1;
        let entries: Vec<Entry> = if from <= self.last_index() {
            self.unstable
                .range((from - self.offset) as usize..)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.handed = self.last_index();
        (snapshot, entries)
    }

    /// The received snapshot waiting to be persisted, if any.
    pub(crate) fn pending_snapshot(&self) -> Option<&SnapshotMeta> {
        self.pending_snapshot.as_ref()
    }

    /// The driver persisted the snapshot at `index`.
    pub(crate) fn snapshot_persisted(&mut self, index: LogIndex) {
        if self
            .pending_snapshot
            .as_ref()
            .is_some_and(|s| s.index == index && self.snapshot_handed)
        {
            self.pending_snapshot = None;
            self.persisted = self.persisted.max(index);
        }
    }

    /// The driver persisted entries through (`index`, `term`). Ignored when the log has
    /// since replaced that entry.
    pub(crate) fn entries_persisted(&mut self, index: LogIndex, term: Term) -> bool {
        if index <= self.persisted || index > self.handed || !self.matches(index, term) {
            return false;
        }
        if self.pending_snapshot.is_some() {
            // The entries sit on top of a snapshot that is not persisted yet.
            return false;
        }
        self.persisted = index;
        while self.offset <= index && !self.unstable.is_empty() {
            self.unstable.pop_front();
            self.offset += 1;
        }
        true
    }

    /// Committed, persisted entries not yet handed out for applying, within `max_bytes`.
    pub(crate) fn take_committed(&mut self, max_bytes: u64) -> Vec<Entry> {
        let hi = self.committed.min(self.persisted);
        if hi <= self.applied || self.pending_snapshot.is_some() {
            return Vec::new();
        }
        match self.entries(self.applied + 1, hi + 1, max_bytes) {
            Ok(entries) => {
                if let Some(last) = entries.last() {
                    self.applied = last.index;
                }
                entries
            }
            Err(error) => {
                tracing::error!(%error, applied = self.applied, "committed entries unreadable");
                Vec::new()
            }
        }
    }

    /// Entries between the snapshot point and the end, for rebuilding state at start.
    pub(crate) fn stored_entries(&self) -> Result<Vec<Entry>, LogStoreError> {
        self.entries(self.first_index(), self.last_index() + 1, u64::MAX)
    }

    /// Whether committed entries wait to be handed out for applying.
    pub(crate) fn has_unapplied_committed(&self) -> bool {
        self.committed.min(self.persisted) > self.applied && self.pending_snapshot.is_none()
    }
}

//! What the core hands its driver after a batch of inputs, and what it expects back.

use crate::entry::{Entry, LogIndex, Term};
use crate::error::ReadError;
use crate::message::Message;
use crate::snapshot::{Snapshot, SnapshotMeta};
use crate::store::{HardState, LogStore, StoreError};
use shoal_core::NodeId;

/// The work a driver does for a group, in this order:
///
/// 1. send [`Ready::messages`] (a leader's appends may go out before its own disk write);
/// 2. persist: install [`Ready::snapshot`] (store and state machine), append
///    [`Ready::entries`], record [`Ready::hard_state`], apply [`Ready::compact`], then
///    sync (one sync may cover many groups and many readies, in order);
/// 3. call [`crate::Raft::on_persisted`] with [`Ready::persisted`], and only then send
///    [`Ready::persisted_messages`] (votes and acknowledgements promise what is on disk);
/// 4. apply [`Ready::committed`] to the state machine, in order;
/// 5. answer reads: each [`ReadState`] may be served once the state machine has applied
///    through its index.
///
/// Readies must be persisted in the order they were taken.
#[derive(Debug, Default)]
#[must_use = "a ready holds messages to send and entries to persist"]
pub struct Ready {
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// A snapshot received from the leader, to install in place of the whole log and state.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to the log store (dropping any stored entry at or after the first).
    pub entries: Vec<Entry>,
    /// The hard state to record, when it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot the state machine took: record it and compact the log through the index.
    pub compact: Option<(SnapshotMeta, LogIndex)>,
    /// Messages to send only after this ready is persisted.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in index order.
    pub committed: Vec<Entry>,
    /// Reads confirmed linearizable: serve each once applied through its index.
    pub read_states: Vec<ReadState>,
    /// Reads that cannot be served here (retry with the leader or later).
    pub failed_reads: Vec<(u64, ReadError)>,
    /// The leader as this node now sees it, when that changed.
    pub leader: Option<LeaderInfo>,
    /// The core wants a state-machine snapshot (its log grew, or a follower needs one):
    /// call [`crate::Raft::snapshot_taken`] with one taken after applying this ready.
    pub snapshot_wanted: bool,
    /// What to pass to [`crate::Raft::on_persisted`] once this ready is on disk.
    pub persisted: PersistedToken,
}

impl Ready {
    /// Step 2's writes into `store`, in order: the received snapshot's metadata, the entries,
    /// the hard state, the compaction. Does not sync: the driver syncs once for every ready
    /// and group it wrote (group commit). The state machine's side of a received snapshot
    /// (restoring from [`Ready::snapshot`]'s bytes) is the driver's.
    pub fn write_to(&self, store: &mut impl LogStore) -> Result<(), StoreError> {
        if let Some(snapshot) = &self.snapshot {
            store.install_snapshot(snapshot.meta.clone())?;
        }
        store.append(&self.entries)?;
        if let Some(hs) = self.hard_state {
            store.set_hard_state(hs)?;
        }
        if let Some((meta, through)) = &self.compact {
            store.compact(meta, *through)?;
        }
        Ok(())
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.compact.is_none()
            && self.persisted_messages.is_empty()
            && self.committed.is_empty()
            && self.read_states.is_empty()
            && self.failed_reads.is_empty()
            && self.leader.is_none()
            && !self.snapshot_wanted
    }

    /// Whether the driver must write anything before the persisted messages may go.
    pub fn needs_persist(&self) -> bool {
        self.snapshot.is_some()
            || !self.entries.is_empty()
            || self.hard_state.is_some()
            || self.compact.is_some()
    }
}

/// Identifies what a ready asked to persist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistedToken {
    /// The last entry appended: (index, term).
    pub last_entry: Option<(LogIndex, Term)>,
    /// The snapshot installed: its index.
    pub snapshot: Option<LogIndex>,
}

/// A linearizable read, confirmed: serve it once the state machine has applied through
/// `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's token.
    pub ctx: u64,
    /// The commit index at the time of the request.
    pub index: LogIndex,
}

/// Who leads, and in which term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader, if known.
    pub id: Option<NodeId>,
    /// The term.
    pub term: Term,
}

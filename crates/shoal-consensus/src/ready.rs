//! What the core hands its driver after a batch of inputs, and what it expects back.

use crate::entry::{Entry, LogIndex, Term};
use crate::error::ReadError;
use crate::message::Message;
use crate::snapshot::SnapshotMeta;
use crate::store::{HardState, LogStore, LogStoreError};
use shoal_core::NodeId;

/// The work a driver does for a group, in this order:
///
/// 1. send [`Ready::messages`] (a leader's appends may go out before its own disk write);
/// 2. persist: install [`Ready::snapshot`] (the state machine first, then the store), append
///    [`Ready::entries`], record [`Ready::hard_state`], apply [`Ready::compact`], then
///    sync (one sync may cover many groups and many readies, in order);
/// 3. call [`crate::Raft::on_persisted`] with [`Ready::persisted`], and only then send
///    [`Ready::persisted_messages`] (votes and acknowledgements promise what is on disk);
/// 4. apply [`Ready::committed`] to the state machine, in order;
/// 5. answer reads: each [`ReadState`] may be served once the state machine has applied
///    through its index;
/// 6. when [`Ready::snapshot_wanted`], persist the state machine and report with
///    [`crate::Raft::snapshot_taken`]; stream a snapshot to each of [`Ready::send_snapshots`]
///    and report with [`crate::Raft::report_snapshot`].
///
/// [`crate::host::RaftHost`] is this loop, for every group of a node.
///
/// Readies must be persisted in the order they were taken.
#[derive(Debug, Default)]
#[must_use = "a ready holds messages to send and entries to persist"]
pub struct Ready {
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// A snapshot received from the leader and accepted, to install in place of the whole
    /// log and state: its data (received by the driver, see [`crate::snapshot`]) goes into the
    /// state machine before the store records it, and before anything acknowledges it.
    pub snapshot: Option<SnapshotMeta>,
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
    /// The log grew: make the state machine's state durable (after applying this ready) and
    /// report the index it is durable through with [`crate::Raft::snapshot_taken`], so the
    /// log behind it can go.
    pub snapshot_wanted: bool,
    /// Followers that need entries the log no longer holds: stream each a snapshot of the
    /// state machine (see [`crate::snapshot`]) and report how it went with
    /// [`crate::Raft::report_snapshot`].
    pub send_snapshots: Vec<NodeId>,
    /// What to pass to [`crate::Raft::on_persisted`] once this ready is on disk.
    pub persisted: PersistedToken,
}

impl Ready {
    /// Step 2's writes into `store`, in order: the received snapshot's metadata, the entries,
    /// the hard state, the compaction. Does not sync: the driver syncs once for every ready
    /// and group it wrote (group commit). The state machine's side of a received snapshot
    /// (installing its data) is the driver's, and comes first.
    pub fn write_to(&self, store: &mut impl LogStore) -> Result<(), LogStoreError> {
        if let Some(snapshot) = &self.snapshot {
            store.install_snapshot(snapshot.clone())?;
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
            && self.send_snapshots.is_empty()
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

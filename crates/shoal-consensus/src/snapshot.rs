//! Snapshots: what lets a group drop the log behind its state machine, and what a lagging
//! follower receives instead of entries the log no longer holds.
//!
//! The core deals in [`SnapshotMeta`] only. A snapshot's data never passes through it (nor
//! through the Raft messages it sends): the state machine keeps its own state durable
//! ([`StateMachine::persist`]) so the log can be compacted behind it, and a leader's driver
//! streams a follower the state machine's contents ([`StateMachine::snapshot`], a
//! [`SnapshotSource`]) on a channel of its own, the way etcd's and TiKV's raftstores do. The
//! follower's driver writes the stream into a [`SnapshotSink`], kept aside until the core
//! accepts the snapshot ([`crate::MessageBody::Snapshot`], stepped by the receiver's driver
//! once the data is whole); the state machine then installs it
//! ([`StateMachine::install_snapshot`]) before anything acknowledges it. A snapshot of a
//! large state machine thus costs a chunk or two of memory at either end, not a copy of the
//! whole. [`crate::host::RaftHost`] does all of this for a node's groups.

use crate::entry::{Entry, LogIndex, Term};
use crate::membership::Membership;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes (0: no snapshot).
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The membership in force at `index`.
    pub membership: Membership,
}

/// Why a state machine could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    /// A received snapshot chunk was refused (damaged, out of order, of another snapshot):
    /// the transfer fails and nothing of it remains; the leader sends another.
    #[error("bad snapshot: {0}")]
    BadSnapshot(String),
    /// The state machine failed (a disk error, say): its group cannot go on.
    #[error("state machine failed: {0}")]
    Failed(String),
}

/// A state machine's contents at one applied index, read out a chunk at a time (lazily: a
/// source over a durable store holds a point-in-time view, not a copy).
pub trait SnapshotSource: Send {
    /// The applied index the contents are at.
    fn index(&self) -> LogIndex;
    /// The next chunk, or `None` after the last. Every snapshot has at least one chunk.
    fn next_chunk(&mut self) -> Result<Option<Bytes>, MachineError>;
}

/// A snapshot being received: chunks in order, kept aside (the state machine goes on as it
/// was) until [`SnapshotSink::finish`] checks the whole and hands it over for
/// [`StateMachine::install_snapshot`]. Dropping a sink unfinished discards what it holds.
pub trait SnapshotSink: Send {
    /// A whole snapshot, checked and kept aside.
    type Staged: Send;
    /// Takes the next chunk. A refused chunk fails the whole transfer.
    fn write(&mut self, chunk: &[u8]) -> Result<(), MachineError>;
    /// Checks that the snapshot is whole and keeps it aside for installing.
    fn finish(self) -> Result<Self::Staged, MachineError>;
}

/// A state machine Raft replicates into: the application side of a group.
///
/// The core never calls it (it is sans-IO); drivers do, through [`crate::host::RaftHost`]:
/// [`StateMachine::apply`] every committed entry in index order; before anything
/// acknowledges a received snapshot, [`StateMachine::install_snapshot`]; when the core asks to
/// compact its log ([`crate::Ready::snapshot_wanted`]), [`StateMachine::persist`], then
/// [`crate::Raft::snapshot_taken`] with the index it returned; when a follower needs a
/// snapshot, [`StateMachine::snapshot`].
pub trait StateMachine {
    /// A snapshot being read out.
    type Source: SnapshotSource + 'static;
    /// A snapshot being received.
    type Sink: SnapshotSink<Staged = Self::Staged> + 'static;
    /// A received snapshot waiting to be installed.
    type Staged: Send + 'static;
    /// What applying an entry answers its proposer, handed over as it is (nothing is
    /// encoded to cross from the state machine to the caller). `Default` is the answer to a
    /// proposal settled before it is applied ([`crate::Wait::Persisted`]).
    type Response: Default + Send + 'static;

    /// Applies one committed entry (every kind: commands, no-ops and membership entries, so
    /// the applied index can be tracked) and returns the answer for whoever proposed it
    /// (the default when there is nothing to say). Must be deterministic. An entry at or
    /// below [`StateMachine::applied_index`] is already reflected (a snapshot installed
    /// before a crash can be ahead of the log) and must be skipped. An error stops the group.
    fn apply(&mut self, entry: &Entry) -> Result<Self::Response, MachineError>;
    /// The index of the last entry applied.
    fn applied_index(&self) -> LogIndex;
    /// Makes everything applied durable and returns the index it is durable through: the log
    /// may be compacted up to it. A state machine kept only in memory must keep a copy that
    /// survives the crashes its log does.
    fn persist(&mut self) -> Result<LogIndex, MachineError>;
    /// The contents at [`StateMachine::applied_index`], to stream to a follower.
    fn snapshot(&mut self) -> Result<Self::Source, MachineError>;
    /// Starts receiving a snapshot described by `meta`.
    fn receive_snapshot(&mut self, meta: &SnapshotMeta) -> Result<Self::Sink, MachineError>;
    /// Replaces the whole state by a received snapshot's, at `meta.index`: atomically, and
    /// durably before it returns (the snapshot is acknowledged right after).
    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        staged: Self::Staged,
    ) -> Result<(), MachineError>;
    /// Drops a received snapshot the core did not accept (the log already covered it, or a
    /// newer one came).
    fn discard_snapshot(&mut self, staged: Self::Staged);
}

//! Raft for Shoal: a sans-IO consensus core, and the log stores under it.
//!
//! One [`Raft`] is one replica of one group. It is a state machine: inputs go in through
//! methods that take `now` ([`Raft::step`], [`Raft::tick`], [`Raft::propose`], [`Raft::read`],
//! …) and everything it wants done comes out of [`Raft::ready`]: messages to send, entries and
//! hard state to persist, committed entries to apply, confirmed reads. The driver does the
//! I/O and reports back with [`Raft::on_persisted`]; the core never reads a clock or touches
//! a disk or socket, so the same code runs in `shoal-sim` under a seed and in production.
//!
//! What it does, and where it comes from:
//! - **Elections** with randomized timeouts, pre-vote, check-quorum and leader stickiness
//!   (etcd/raft's design).
//! - **Replication** pipelined with flow control (in-flight messages and bytes, uncommitted
//!   bytes), conflict backtracking by term hints, a no-op per term, and commitment counting
//!   only current-term entries (§5.4.2).
//! - **Reads**: ReadIndex, lease reads with a documented clock-drift bound, and follower
//!   reads through the leader's read index ([`ReadMode`]).
//! - **Membership** by joint consensus: learners (promotable or read-only), [`ConfChange`]s
//!   AddNode, RemoveNode, PromoteLearner, BatchPromote, BatchRemove; promotions of learners that
//!   have not caught up are refused; leadership transfer; a removed leader steps down.
//! - **Snapshots** that never pass through the core: a [`StateMachine`] keeps its state
//!   durable so the log can be compacted behind it (triggered by log length), and a follower
//!   behind the compaction point is streamed the state machine's contents beside Raft traffic
//!   ([`SnapshotSource`] to [`SnapshotSink`], a chunk at a time), installed before anything
//!   acknowledges it (see [`snapshot`]).
//! - **Persistence** that may be asynchronous: a [`LogStore`] trait, [`MemLogStore`], and
//!   [`Wal`], a durable write-ahead log shared by many groups (CRC32C per record, group
//!   commit, torn-tail truncation on recovery, segment deletion after compaction).
//! - **Many groups per node**: [`MultiRaft`] routes by group id, ticks every group at once
//!   and gathers every ready for one sync; [`RaftHost`] is the one ready loop over them and
//!   their state machines (used by every driver, the simulator, the tests and the
//!   benchmarks); [`driver::RaftDriver`] (feature `tokio`, on by default) runs it over
//!   shoal-transport, with each round on the blocking pool.
//! - **Bad input**: misaddressed messages, messages from non-members, and terms or indexes
//!   beyond [`MAX_TERM`] and [`MAX_INDEX`] are dropped and counted in [`RaftStats`]; a
//!   [`Membership`] that breaks its invariants does not decode.
//! - **Testing**: the `sim` module (feature `sim`) runs replicas in `shoal-sim` with safety
//!   checks after every step and client histories for `shoal_sim::linearizability`.
//!
//! # Example: three replicas in one process
//!
//! ```
//! use shoal_consensus::{Membership, MemLogStore, Raft, RaftConfig, LogStore};
//! use shoal_core::{Instant, NodeId, GroupId};
//! use std::time::Duration;
//!
//! let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
//! let mut nodes: Vec<Raft<MemLogStore>> = ids
//!     .iter()
//!     .map(|&id| {
//!         let mut store = MemLogStore::new();
//!         Raft::bootstrap(&mut store, Membership::new(ids.clone())).unwrap();
//!         Raft::new(id, GroupId::new(1), RaftConfig::default(), store, 0, id.get(), Instant::ZERO)
//!             .unwrap()
//!     })
//!     .collect();
//!
//! // The driver loop: tick, persist, deliver, apply. Messages are delivered at once here.
//! let mut now = Instant::ZERO;
//! let mut applied = vec![Vec::new(); 3];
//! let mut proposed = false;
//! for _ in 0..400 {
//!     now += Duration::from_millis(10);
//!     let mut inbox = Vec::new();
//!     for (i, node) in nodes.iter_mut().enumerate() {
//!         node.tick(now);
//!         let ready = node.ready();
//!         inbox.extend(ready.messages);
//!         if let Some(hs) = ready.hard_state {
//!             node.store_mut().set_hard_state(hs).unwrap();
//!         }
//!         node.store_mut().append(&ready.entries).unwrap();
//!         node.on_persisted(ready.persisted);
//!         inbox.extend(ready.persisted_messages);
//!         applied[i].extend(ready.committed);
//!     }
//!     for message in inbox {
//!         let to = ids.iter().position(|&id| id == message.to).unwrap();
//!         nodes[to].step(now, message);
//!     }
//!     if !proposed {
//!         if let Some(leader) = nodes.iter_mut().find(|n| n.is_leader()) {
//!             leader.propose("hello".into()).unwrap();
//!             proposed = true;
//!         }
//!     }
//! }
//! // Every replica applied the same entries, ending with the command.
//! assert!(applied.iter().all(|a| a == &applied[0]));
//! assert!(applied[0].iter().any(|e| e.payload == shoal_consensus::EntryPayload::Command("hello".into())));
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod counting;
#[cfg(feature = "tokio")]
pub mod driver;
pub mod entry;
pub mod error;
pub mod host;
mod log;
pub mod membership;
pub mod message;
pub mod multi;
pub mod progress;
mod raft;
pub mod ready;
#[cfg(feature = "sim")]
pub mod sim;
pub mod snapshot;
pub mod store;
pub mod wal;

pub use config::{ConfigError, RaftConfig};
pub use entry::{Entry, EntryPayload, LogIndex, Term, MAX_INDEX, MAX_TERM};
pub use error::{ProposeError, ReadError, StartError, TransferError};
pub use host::{HostError, HostEvent, HostStats, RaftHost, Wait};
pub use membership::{
    ConfChange, ConfChangeError, LearnerKind, Membership, MembershipError, VoteResult,
    MAX_MEMBERSHIP_ENTRIES,
};
pub use message::{AppendResult, Message, MessageBody};
pub use multi::{batch_by_node, AddGroupError, MultiRaft, MultiRaftStats};
pub use progress::{ReplicaState, ReplicaStatus};
pub use raft::{Raft, RaftStats, ReadMode, Role, Status};
pub use ready::{LeaderInfo, PersistedToken, ReadState, Ready};
pub use snapshot::{MachineError, SnapshotMeta, SnapshotSink, SnapshotSource, StateMachine};
pub use store::{HardState, LogStore, LogStoreError, MemLogStore};
pub use wal::{Recovery, TornTail, Wal, WalConfig, WalDiskUsage, WalStats, WalStore};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

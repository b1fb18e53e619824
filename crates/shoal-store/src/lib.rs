//! Shoal's multi-raft range store: every range a node hosts is a Raft group over the node's
//! one shoal-storage engine, served over shoal-transport. It carries out what shoal-ranges
//! decides (descriptors, their gossip merge, the split policy) and sits under the gateway
//! and the node.
//!
//! - **Groups.** Each hosted range is one Raft group; all of a node's groups share its one
//!   WAL (group commit), one tick and one connection per peer (shoal-consensus's
//!   [`shoal_consensus::driver::RaftDriver`], whose rounds run on the blocking pool). Each
//!   group's state machine ([`RangeMachine`]) is that range inside the engine: every entry
//!   commits with the range's applied index, so a restart replays the log from there.
//! - **Commands** ([`Command`]) are the store's own serde types. A deterministic rejection
//!   (a key outside the range, a value over the limit) is applied as an empty batch, so the
//!   applied index advances on every replica alike and the proposer gets a clear error.
//! - **Snapshots** are the engine's streams: read lazily on the leader, staged beside the
//!   range on the follower and installed atomically before anything acknowledges them.
//! - **Splits** are proposed in the range's own group ([`Store::split`]); every replica
//!   applies one by splitting its engine range (no data moves) and starting the right half's
//!   group with the same members, its log beginning after [`RANGE_INIT_INDEX`] so a replica
//!   that missed the split is sent a snapshot instead of a log it cannot replay.
//! - **One listener per node** carries node RPC ([`KvRpc`], [`LookupRpc`], [`SplitRpc`]),
//!   Raft messages and snapshot chunks.
//! - **The meta range** (range 0, keys from `0xff` on; user keys are below `0xff`) records
//!   every range's descriptor guarded by generation, allocates range ids for splits and
//!   registers nodes ([`MetaOp`], [`MetaRpc`]); leaders record their ranges as they change,
//!   and a node whose gossip has not covered a key asks it ([`Store::lookup`]).
//! - **Descriptors spread by gossip**: each leader announces its ranges over membership
//!   broadcasts (shoal-ranges' [`shoal_ranges::DescriptorSet`] merge), so every node, hosting the
//!   range or not, answers lookups ([`LookupRpc`]) for every key.
//! - **Replica comparison** ([`Store::compare_replica`]): shoal-merkle check sessions over the
//!   node transport, read-only, between two replicas at one applied index.
//! - **Status** ([`Store::report`], [`StatusRpc`]): per range its replicas, roles, leader,
//!   term, commit and applied index, each follower's lag in entries and time, size and
//!   keys; per node its ranges, leaderships, WAL and engine figures.
//! - **Reads** are linearizable by default (ReadIndex, or the leader's lease with
//!   [`StoreConfig::read_mode`]); stale reads are served by any replica. **Writes** take
//!   [`Acks`] like a producer's.

#![warn(missing_docs)]

mod api;
mod command;
mod compare;
mod config;
mod events;
mod gossip;
mod groups;
mod handover;
mod hosting;
mod identity;
mod machine;
mod meta;
mod meta_client;
mod node;
mod read_barriers;
mod seeds;
mod service;
mod shared;
#[cfg(feature = "sim")]
pub mod sim;
mod status;
mod topology;

pub use api::{
    Acks, ChangeReplicasRequest, ChangeReplicasRpc, Consistency, KvEntry, KvOp, KvRequest,
    KvResponse, KvRpc, LookupRequest, LookupRpc, MetaRequest, MetaResponse, MetaRpc, SplitRequest,
    SplitResponse, SplitRpc, Versioned, MAX_SCAN_LIMIT,
};
pub use command::{Applied, Command, Condition, Rejection, WriteOp, WriteOutcome};
pub use compare::{
    CompareRequest, CompareResponse, CompareRpc, Comparison, DigestRpc, RangeDigest,
};
pub use config::StoreConfig;
pub use gossip::RangesRpc;
pub use handover::HandOver;
pub use machine::{RangeMachine, RangeSink, RangeSnapshot, RANGE_INIT_INDEX, RANGE_INIT_TERM};
pub use meta::{
    is_system_key, meta_keys, user_keys, MetaAnswer, MetaOp, NodeRecord, MAX_ALLOCATE, MAX_RECORD,
    MAX_ZONE_BYTES, META_RANGE, SYSTEM_KEY_PREFIX,
};
pub use node::{Store, StoreError, FIRST_RANGE, GATEWAY_META};
pub use status::{NodeStatus, RangeReport, StatusRpc};
pub use topology::{Topology, TopologyConfig};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

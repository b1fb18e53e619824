//! The node RPC service: what routers (the gateway, tests, other nodes) send a store, and
//! what it answers.
//!
//! Errors are shoal-core [`shoal_core::Error`]s whose [`shoal_core::ErrorCode`] says what a
//! router does next: `NotLeader { hint }` (go to the hinted leader), `RangeKeyMismatch {
//! descriptors }` (replace the cached descriptors and route again), `RangeNotFound` (the node
//! holds no replica), `Unavailable` (no leader or no quorum now; back off), `TooLarge`,
//! `InvalidRequest`, and `OutcomeUnknown` for a write whose fate cannot be known (never
//! reported as a failure).

use super::command::{Condition, WriteOp, WriteOutcome};
use super::meta::{MetaAnswer, MetaOp, NodeRecord};
use serde::{Deserialize, Serialize};
use shoal_core::{Generation, NodeId, RangeDescriptor, RangeId};
use shoal_transport::Rpc;

/// Key-value operations on one range.
pub struct KvRpc;

impl Rpc for KvRpc {
    const NAME: &'static str = "shoal.store.kv";
    type Request = KvRequest;
    type Response = KvResponse;
}

/// The descriptors of the ranges a node hosts that hold or follow a key, for routers.
pub struct LookupRpc;

impl Rpc for LookupRpc {
    const NAME: &'static str = "shoal.store.lookup";
    type Request = LookupRequest;
    type Response = Vec<RangeDescriptor>;
}

/// Split a range (at a given key, or at its size median).
pub struct SplitRpc;

impl Rpc for SplitRpc {
    const NAME: &'static str = "shoal.store.split";
    type Request = SplitRequest;
    type Response = SplitResponse;
}

/// Changes a range's replicas through its leader (others answer `NotLeader` with a hint):
/// add a learner (created on its node on demand, brought up by a snapshot), promote a
/// caught-up learner, remove a replica. Answered once the change is committed and applied
/// on the leader, with the range's descriptor after it (`None` when the leader removed
/// itself, and no longer hosts the range).
pub struct ChangeReplicasRpc;

impl Rpc for ChangeReplicasRpc {
    const NAME: &'static str = "shoal.store.change_replicas";
    type Request = ChangeReplicasRequest;
    type Response = Option<RangeDescriptor>;
}

/// A replica change of one range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeReplicasRequest {
    /// The range.
    pub range: RangeId,
    /// The change.
    pub change: shoal_consensus::ConfChange,
}

/// The meta range: record descriptors, allocate range ids, register nodes, and read the
/// recorded descriptors and nodes. Served by the meta range's leader (others answer
/// `NotLeader` with a hint); reads are linearizable.
pub struct MetaRpc;

impl Rpc for MetaRpc {
    const NAME: &'static str = "shoal.store.meta";
    type Request = MetaRequest;
    type Response = MetaResponse;
}

/// A request to the meta range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaRequest {
    /// Apply a change.
    Apply(MetaOp),
    /// The recorded descriptor that holds `key`.
    Lookup {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Every recorded descriptor.
    Descriptors,
    /// Every registered node.
    Nodes,
    /// Every node's store binding.
    Bindings,
}

/// The meta range's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// A change applied.
    Applied(MetaAnswer),
    /// A lookup's descriptor (`None`: no recorded range holds the key).
    Descriptor(Option<RangeDescriptor>),
    /// The recorded descriptors, in canonical order.
    Descriptors(Vec<RangeDescriptor>),
    /// The registered nodes, in id order.
    Nodes(Vec<NodeRecord>),
    /// Every node's store id, in node id order.
    Bindings(Vec<(NodeId, u64)>),
}

/// What a router asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRequest {
    /// The range the router believes holds the keys.
    pub range: RangeId,
    /// The generation of the router's descriptor: an older one than the node's is answered
    /// `RangeKeyMismatch` with the node's, so the router learns the range changed.
    pub generation: Generation,
    /// What to do.
    pub op: KvOp,
}

/// An operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// The value and version of a key.
    Get {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// How fresh the answer must be.
        consistency: Consistency,
    },
    /// Keys in `[start, end)` (clipped to the range), in order or reversed, at most `limit`.
    Scan {
        /// The first key (inclusive).
        #[serde(with = "serde_bytes")]
        start: Vec<u8>,
        /// The end (exclusive); `None`: to the end of the key space.
        #[serde(with = "serde_bytes")]
        end: Option<Vec<u8>>,
        /// The most entries to return (at most [`MAX_SCAN_LIMIT`]).
        limit: u32,
        /// Largest keys first.
        reverse: bool,
        /// How fresh the answer must be.
        consistency: Consistency,
    },
    /// Writes, applied together.
    Write {
        /// The writes.
        ops: Vec<WriteOp>,
        /// When to answer.
        acks: Acks,
    },
}

impl KvOp {
    /// A put.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> KvOp {
        KvOp::Write {
            ops: vec![WriteOp::Put {
                key: key.into(),
                value: value.into(),
            }],
            acks: Acks::Majority,
        }
    }

    /// A delete.
    pub fn delete(key: impl Into<Vec<u8>>) -> KvOp {
        KvOp::Write {
            ops: vec![WriteOp::Delete { key: key.into() }],
            acks: Acks::Majority,
        }
    }

    /// A compare-and-set.
    pub fn cas(key: impl Into<Vec<u8>>, expect: Condition, new: Option<Vec<u8>>) -> KvOp {
        KvOp::Write {
            ops: vec![WriteOp::CompareAndSet {
                key: key.into(),
                expect,
                new,
            }],
            acks: Acks::Majority,
        }
    }

    /// A linearizable get.
    pub fn get(key: impl Into<Vec<u8>>) -> KvOp {
        KvOp::Get {
            key: key.into(),
            consistency: Consistency::Linearizable,
        }
    }
}

/// The most entries one scan returns.
pub const MAX_SCAN_LIMIT: u32 = 10_000;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (ReadIndex, or the leader's
    /// lease where the store is configured for it).
    #[default]
    Linearizable,
    /// Whatever the replica asked has applied: possibly behind the leader, never ahead of
    /// what was committed, and monotonic on one replica.
    Stale,
}

/// When a write is answered, like a producer's `acks`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acks {
    /// Committed (durable on a majority) and applied on the leader: survives any minority
    /// of failures. The answer carries each write's outcome.
    #[default]
    Majority,
    /// Durable on the leader's log only: lost if the leader fails for good (or is deposed)
    /// before a majority holds it. Compare-and-set outcomes are not known at that point; the
    /// answer is [`KvResponse::Accepted`].
    Leader,
    /// Appended by the leader, not yet on any disk: lost by any leader crash or change. The
    /// answer is [`KvResponse::Accepted`].
    None,
}

/// A value and its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The version, unique per key for ever (compare-and-set by version relies on it).
    pub version: u64,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// One entry of a scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The version.
    pub version: u64,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// What the node answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// A get's answer (`None`: no value).
    Value(Option<Versioned>),
    /// A scan's entries, and where to go on from: a key to continue at (in this range,
    /// when the limit was reached, or the next range's first key), or `None` when
    /// `[start, end)` is done.
    Entries {
        /// The entries.
        entries: Vec<KvEntry>,
        /// The continuation.
        #[serde(with = "serde_bytes")]
        resume: Option<Vec<u8>>,
    },
    /// The writes' outcomes (`acks = majority`).
    Written(Vec<WriteOutcome>),
    /// Accepted with weaker acks (see [`Acks`]).
    Accepted,
}

/// A lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
}

/// A split request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRequest {
    /// The range to split.
    pub range: RangeId,
    /// Where: a key strictly inside the range, or `None` for its size median.
    #[serde(with = "serde_bytes")]
    pub at: Option<Vec<u8>>,
}

/// A split done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitResponse {
    /// The range, now the left half.
    pub left: RangeDescriptor,
    /// The new right half.
    pub right: RangeDescriptor,
}

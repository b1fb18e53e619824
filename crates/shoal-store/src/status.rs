//! What a store reports about itself and its ranges (for `shoal cluster status`, the
//! gateway's range pages and tests).

use super::node::Inner;
use serde::{Deserialize, Serialize};
use shoal_consensus::{ReplicaStatus, Role};
use shoal_core::{NodeId, RangeDescriptor, RangeId};
use shoal_transport::Rpc;
use std::net::SocketAddr;

/// A store's status: its ranges, or one of them.
pub struct StatusRpc;

impl Rpc for StatusRpc {
    const NAME: &'static str = "shoal.store.status";
    /// One range, or `None` for every range the node hosts.
    type Request = Option<RangeId>;
    type Response = NodeStatus;
}

/// One replica of a range, as its node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeReport {
    /// The range as applied here.
    pub descriptor: RangeDescriptor,
    /// This replica's role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// The leader it follows (itself when leading).
    pub leader: Option<NodeId>,
    /// The commit index.
    pub commit: u64,
    /// The index the state machine (the engine range) has applied.
    pub applied: u64,
    /// The last log index.
    pub last_index: u64,
    /// The latest snapshot point (the log starts after it, or a little before).
    pub snapshot_index: u64,
    /// On the leader: each follower's match index, lag in entries and in time, state.
    pub followers: Vec<ReplicaStatus>,
    /// Live keys.
    pub keys: u64,
    /// Live bytes (keys and values).
    pub bytes: u64,
}

/// A node's status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The ranges asked for (every hosted one, or the one named).
    pub ranges: Vec<RangeReport>,
    /// How many ranges this node hosts.
    pub hosted: usize,
    /// How many of them it leads.
    pub leaderships: usize,
    /// WAL records written since the node started.
    pub wal_records: u64,
    /// WAL bytes written since the node started.
    pub wal_written_bytes: u64,
    /// WAL bytes on disk now (every segment).
    pub wal_bytes: u64,
    /// WAL segment files on disk now.
    pub wal_segments: usize,
    /// WAL `fdatasync` calls.
    pub wal_syncs: u64,
    /// Bytes the engine's directory takes on disk.
    pub engine_disk_bytes: u64,
    /// Replica comparisons that found a difference (there should be none).
    pub replica_mismatches: u64,
    /// This node's store id (see `identity` in the data directory).
    pub store_id: u64,
    /// Whether the meta range has bound this store to the node since it opened.
    pub store_bound: bool,
    /// Why the cluster refuses this store (its node id is bound to another store: the
    /// node's data is gone), if it does.
    pub refused: Option<String>,
}

/// The status of `range`, or of every hosted range.
pub(crate) async fn report(inner: &Inner, range: Option<RangeId>) -> NodeStatus {
    let descriptors = inner.groups.descriptors();
    let leaderships = descriptors.iter().filter(|d| inner.leads(d.id)).count();
    let mut ranges = Vec::new();
    for descriptor in descriptors
        .iter()
        .filter(|d| range.is_none_or(|r| r == d.id))
    {
        let Ok(raft) = inner.groups.driver().status(descriptor.id.into()).await else {
            continue;
        };
        let engine = inner.groups.engine().range(descriptor.id).ok();
        ranges.push(RangeReport {
            descriptor: descriptor.clone(),
            role: raft.role,
            term: raft.term,
            leader: raft.leader,
            commit: raft.commit,
            applied: engine.as_ref().map_or(0, |e| e.applied_index),
            last_index: raft.last_index,
            snapshot_index: raft.snapshot_index,
            followers: raft.replicas,
            keys: engine.as_ref().map_or(0, |e| e.stats.live_keys),
            bytes: engine.as_ref().map_or(0, |e| e.stats.live_bytes),
        });
    }
    let wal = inner.groups.wal_stats();
    let disk = inner.groups.wal_disk_usage();
    NodeStatus {
        node: inner.id,
        addr: inner.topology.addr(),
        ranges,
        hosted: descriptors.len(),
        leaderships,
        wal_records: wal.records,
        wal_written_bytes: wal.bytes,
        wal_bytes: disk.bytes,
        wal_segments: disk.segments,
        wal_syncs: wal.syncs,
        engine_disk_bytes: inner.groups.engine().disk_space().unwrap_or(0),
        replica_mismatches: inner.comparisons.mismatches(),
        store_id: inner.identity.store(),
        store_bound: inner.identity.is_bound(),
        refused: match inner.identity.admission() {
            super::identity::Admission::Refused(why) => Some(why),
            _ => None,
        },
    }
}

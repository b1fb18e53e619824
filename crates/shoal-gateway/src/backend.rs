//! What the gateway needs of the cluster, and its two implementations: a data node's own
//! store, and a standalone gateway's topology.
//!
//! The gateway routes every request itself ([`crate::KvRouter`]); it asks its backend only
//! where things are (ranges, leaders, peers, members), for the client that reaches other
//! nodes, and, in a data node, for the store that serves the ranges this node leads with no
//! socket in between.

use async_trait::async_trait;
use shoal_core::{NodeId, RangeDescriptor, RangeId};
use shoal_membership::{Member, MemberEvent};
use shoal_store::{Store, StoreError, Topology};
use shoal_transport::{FaultFilter, RpcClient, StatsSnapshot};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The cluster as a gateway reaches it.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The member this gateway runs as.
    fn id(&self) -> NodeId;

    /// The client that reaches the other nodes (node RPC).
    fn client(&self) -> Arc<RpcClient>;

    /// Where `node` listens for node RPC, if known.
    fn peer_addr(&self, node: NodeId) -> Option<SocketAddr>;

    /// The ranges that may hold `key`, newest first or not: the router takes the highest
    /// generation (empty if none is known).
    async fn lookup(&self, key: &[u8]) -> Result<Vec<RangeDescriptor>, StoreError>;

    /// Every range, each once at its newest generation: the meta range's record (a
    /// linearizable read) joined with the newer descriptors this member heard, so a
    /// split's right half shows before the meta range records it.
    async fn ranges(&self) -> Result<Vec<RangeDescriptor>, StoreError>;

    /// The leader of `range` as this member knows it, if it does (advisory: the router
    /// confirms it by asking).
    fn leader(&self, range: RangeId) -> Option<NodeId>;

    /// The members as this member's membership sees them (itself included).
    async fn members(&self) -> Result<Vec<Member>, StoreError>;

    /// Membership's events from now on (the router evicts failed nodes from its cache).
    fn subscribe_members(&self) -> broadcast::Receiver<MemberEvent>;

    /// The fault-injection filter on this member's traffic (for fault tests only).
    fn fault_filter(&self) -> &FaultFilter;

    /// This member's transport counters.
    fn transport_stats(&self) -> StatsSnapshot;

    /// The store in this process, when the gateway runs inside a data node: requests for
    /// ranges this node leads are served by it directly, and its figures are this node's
    /// status and metrics. `None` for a standalone gateway.
    fn local(&self) -> Option<&Store>;
}

#[async_trait]
impl Backend for Store {
    fn id(&self) -> NodeId {
        Store::id(self)
    }

    fn client(&self) -> Arc<RpcClient> {
        Store::client(self)
    }

    fn peer_addr(&self, node: NodeId) -> Option<SocketAddr> {
        Store::peer_addr(self, node)
    }

    async fn lookup(&self, key: &[u8]) -> Result<Vec<RangeDescriptor>, StoreError> {
        Store::lookup(self, key).await
    }

    async fn ranges(&self) -> Result<Vec<RangeDescriptor>, StoreError> {
        Store::ranges(self).await
    }

    fn leader(&self, range: RangeId) -> Option<NodeId> {
        Store::leader(self, range).or_else(|| self.topology().leader_hint(range))
    }

    async fn members(&self) -> Result<Vec<Member>, StoreError> {
        Store::members(self).await
    }

    fn subscribe_members(&self) -> broadcast::Receiver<MemberEvent> {
        Store::subscribe_members(self)
    }

    fn fault_filter(&self) -> &FaultFilter {
        Store::fault_filter(self)
    }

    fn transport_stats(&self) -> StatsSnapshot {
        Store::transport_stats(self)
    }

    fn local(&self) -> Option<&Store> {
        Some(self)
    }
}

#[async_trait]
impl Backend for Topology {
    fn id(&self) -> NodeId {
        Topology::id(self)
    }

    fn client(&self) -> Arc<RpcClient> {
        Topology::client(self)
    }

    fn peer_addr(&self, node: NodeId) -> Option<SocketAddr> {
        Topology::peer_addr(self, node)
    }

    async fn lookup(&self, key: &[u8]) -> Result<Vec<RangeDescriptor>, StoreError> {
        Topology::lookup(self, key).await
    }

    async fn ranges(&self) -> Result<Vec<RangeDescriptor>, StoreError> {
        Topology::ranges(self).await
    }

    fn leader(&self, range: RangeId) -> Option<NodeId> {
        self.leader_hint(range)
    }

    async fn members(&self) -> Result<Vec<Member>, StoreError> {
        Topology::members(self).await
    }

    fn subscribe_members(&self) -> broadcast::Receiver<MemberEvent> {
        Topology::subscribe_members(self)
    }

    fn fault_filter(&self) -> &FaultFilter {
        Topology::fault_filter(self)
    }

    fn transport_stats(&self) -> StatsSnapshot {
        Topology::transport_stats(self)
    }

    fn local(&self) -> Option<&Store> {
        None
    }
}

//! The store of one node: its engine, its WAL, its Raft groups (one per hosted range) and
//! the RPC listener that serves them.

use super::command::{Applied, Command, Rejection};
use super::compare::{compare, Comparison, Comparisons};
use super::config::StoreConfig;
use super::events::{self, RangeEvent};
use super::groups::RangeGroups;
use super::handover::HandOver;
use super::hosting;
use super::identity::Identity;
use super::meta::{NodeRecord, MAX_ZONE_BYTES, META_RANGE};
use super::meta_client::{self, MetaPath};
use super::read_barriers::ReadBarriers;
use super::service;
use super::topology::Topology;
use shoal_consensus::driver::{DriverError, LeaderChange, RaftDriver, RaftInbox, UnknownGroup};
use shoal_consensus::{Status, Wait, Wal};
use shoal_core::{codec, Clock, ErrorCode, LeaderHint, NodeId, RangeDescriptor, RangeId};
use shoal_membership::MemberEvent;
use shoal_ranges::policy::{Decision, InFlight, RangeStats as PolicyStats};
use shoal_storage::{Engine, StorageError};
use shoal_transport::{
    FaultFilter, RegisterError, RpcClient, RpcServer, RpcTransportExt, TransportError,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The membership metadata of a member that hosts no ranges (a standalone gateway's
/// [`Topology`]); data nodes publish none.
pub const GATEWAY_META: &[u8] = b"role=gateway";

/// The user range the first nodes bootstrap: every key below `0xff` (the meta range holds
/// the rest).
pub const FIRST_RANGE: RangeId = RangeId::new(1);

/// Why a store could not open, bootstrap or act.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed or refused.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The WAL failed.
    #[error("raft log: {0}")]
    Log(#[from] shoal_consensus::LogStoreError),
    /// The listener could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The RPC services could not be registered.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The transport's configuration was refused.
    #[error(transparent)]
    TransportConfig(#[from] shoal_transport::ConfigError),
    /// A Raft group could not start or be hosted.
    #[error("raft: {0}")]
    Raft(String),
    /// The data directory holds something this store cannot use.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Membership could not start or join.
    #[error("membership: {0}")]
    Membership(String),
    /// The configuration is refused.
    #[error("configuration: {0}")]
    Config(String),
    /// The store already holds ranges: bootstrapping again would fork the cluster.
    #[error("the store is already bootstrapped")]
    AlreadyBootstrapped,
    /// This store's data directory is new and the cluster it is asked to found exists
    /// already with this node id bound to another store: the node lost its data, and
    /// bootstrapping would give it replicas whose logs vouch for nothing the cluster wrote.
    #[error(
        "the cluster exists already and this node id belongs to another store: its data is gone"
    )]
    ClusterExists,
    /// A request failed with a code a router acts on.
    #[error(transparent)]
    Request(#[from] shoal_core::Error),
}

/// What the store's RPC handlers reach.
pub(crate) struct Inner {
    /// This node (its topology's id, kept here because every part logs it).
    pub(crate) id: NodeId,
    pub(crate) config: StoreConfig,
    /// Membership, peers' addresses, seeds and every descriptor heard of.
    pub(crate) topology: Topology,
    /// This store's id, its cluster's, and whether the meta range admitted it.
    pub(crate) identity: Identity,
    /// Every hosted range's group, with the engine, WAL and driver they run on.
    pub(crate) groups: RangeGroups,
    /// Replica comparisons: sessions answered and started, builds, mismatches.
    pub(crate) comparisons: Comparisons,
    /// Linearizable reads' barriers, batched per range.
    pub(crate) read_barriers: ReadBarriers,
    server: Mutex<Option<RpcServer>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A node's range store: a handle, cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`, starts its listener on
    /// `config.listen` (node RPC, Raft traffic and snapshots on one port) and resumes every
    /// range the engine hosts from its applied index, replaying the WAL. A snapshot left
    /// staged by a crash is discarded: nothing acknowledged it, and the leader sends another.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        if let Some(zone) = config.zone.as_ref().filter(|z| z.len() > MAX_ZONE_BYTES) {
            return Err(StoreError::Config(format!(
                "a zone name of {} bytes is over the limit of {MAX_ZONE_BYTES}",
                zone.len()
            )));
        }
        let id = config.node;
        let engine_dir = config.data_dir.join("engine");
        let wal_dir = config.data_dir.join("wal");
        let engine_config = config.engine.clone();
        let wal_config = config.wal.clone();
        let data_dir = config.data_dir.clone();
        let (engine, wal, identity) = tokio::task::spawn_blocking(move || {
            let engine = Engine::open(engine_dir, engine_config)?;
            let (wal, _) = Wal::open(wal_dir, wal_config)?;
            let had_data = !engine.ranges().is_empty() || !wal.groups().is_empty();
            let identity = Identity::load_or_create(&data_dir, id, had_data)?;
            Ok::<_, StoreError>((engine, wal, identity))
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("opening panicked: {e}")))??;
        let engine = Arc::new(engine);

        let mut inbox = RaftInbox::new(&config.driver);
        let (events, range_events) = events::channel();
        // A data node's membership metadata names its store (gateways publish GATEWAY_META).
        let mut starting = Topology::start(&config.topology(), identity.member_meta()).await?;
        let admitting = starting.topology.clone();
        inbox.admit(Arc::new(move |node| admitting.inner.admits(node)));
        if let Err(e) = inbox.register(&mut starting.router) {
            starting.abandon().await;
            return Err(e.into());
        }
        let topology = starting.topology.clone();
        let driver = RaftDriver::start(
            id,
            topology.client(),
            topology.inner.peers.clone(),
            inbox,
            config.driver.clone(),
        );
        let groups = RangeGroups::new(&config, engine, wal, driver, events);
        let inner = Arc::new(Inner {
            id,
            config,
            topology,
            identity,
            groups,
            comparisons: Comparisons::default(),
            read_barriers: ReadBarriers::default(),
            server: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        if let Err(e) = service::register(&mut starting.router, inner.clone()) {
            Store { inner }.stop().await;
            return Err(e.into());
        }
        let server = match starting.serve() {
            Ok(server) => server,
            Err(e) => {
                Store { inner }.stop().await;
                return Err(e);
            }
        };
        *inner.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        let store = Store { inner };
        if let Err(e) = store.inner.groups.resume().await {
            // Leave nothing running (the listener would hold the port).
            store.stop().await;
            return Err(e);
        }
        store.inner.topology.spawn_upkeep();
        let tasks = [
            tokio::spawn(handle_range_events(store.inner.clone(), range_events)),
            tokio::spawn(split_large_ranges(store.inner.clone())),
            tokio::spawn(host_on_demand(
                store.inner.clone(),
                store.inner.groups.driver().subscribe_unknown_groups(),
            )),
            tokio::spawn(super::gossip::announce(store.inner.clone())),
            tokio::spawn(meta_client::upkeep(store.inner.clone())),
            tokio::spawn(sync_engine(store.inner.clone())),
            tokio::spawn(compact_logs(store.inner.clone())),
            tokio::spawn(collect_removed_replicas(store.inner.clone())),
            tokio::spawn(wake_ranges_of_down_members(
                store.inner.clone(),
                store.inner.topology.subscribe_members(),
            )),
        ];
        store
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
        Ok(store)
    }

    /// Creates the cluster on this node: the meta range (range 0, the system keys from
    /// `0xff` on) and the first user range (range 1, every key below `0xff`), both
    /// replicated by `voters` (this node among them), the meta range holding both
    /// descriptors. Every founding node calls it with the same voters; the first of them
    /// campaigns at once. Refused if the store already holds ranges. Returns the two
    /// descriptors, meta first.
    ///
    /// A store whose data directory was empty when it opened first asks the cluster's meta
    /// range (through the peers it knows, within a few seconds) which store its node id is
    /// bound to: bound to another one, the node lost its data and does not bootstrap
    /// ([`StoreError::ClusterExists`]). A founding node that never ran before finds no
    /// binding (or no meta range yet) and bootstraps as its peers did. A store refused
    /// anyway (the meta range was out of reach) finds its Raft traffic refused by the other
    /// nodes once they see which store speaks for it.
    pub async fn bootstrap(&self, voters: &[NodeId]) -> Result<[RangeDescriptor; 2], StoreError> {
        let mut founded = self.bootstrap_split(voters, Vec::new()).await?.into_iter();
        match (founded.next(), founded.next()) {
            (Some(meta), Some(first)) => Ok([meta, first]),
            _ => Err(StoreError::Corrupt("a bootstrap founded no range".into())),
        }
    }

    /// [`Store::bootstrap`] with the user key space already cut at `splits` (non-empty,
    /// strictly ascending user keys): ranges 1, 2, … one per span, in key order, as if
    /// split before any data (a table's known key prefixes, say, or a test of many
    /// ranges). Every founding node passes the same keys. Returns the meta range's
    /// descriptor, then each user range's.
    pub async fn bootstrap_split(
        &self,
        voters: &[NodeId],
        splits: Vec<Vec<u8>>,
    ) -> Result<Vec<RangeDescriptor>, StoreError> {
        if !self.inner.groups.descriptors().is_empty() {
            return Err(StoreError::AlreadyBootstrapped);
        }
        if self.inner.identity.fresh() && self.inner.bound_elsewhere().await {
            return Err(StoreError::ClusterExists);
        }
        self.inner.groups.bootstrap(voters, splits).await
    }

    /// This node.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address the store listens on (node RPC, Raft and snapshots).
    pub fn addr(&self) -> SocketAddr {
        self.inner.topology.addr()
    }

    /// This node's view of the cluster: membership, peers' addresses, the descriptors
    /// gossip brought.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// Joins the cluster through `seeds` (see [`Topology::join`]).
    pub async fn join(&self, seeds: Vec<SocketAddr>) -> Result<usize, StoreError> {
        self.inner.topology.join(seeds).await
    }

    /// The cluster's members as this node sees them (itself included).
    pub async fn members(&self) -> Result<Vec<shoal_membership::Member>, StoreError> {
        self.inner.topology.members().await
    }

    /// Membership's events from now on: members joining, suspected, failed, leaving.
    pub fn subscribe_members(&self) -> broadcast::Receiver<MemberEvent> {
        self.inner.topology.subscribe_members()
    }

    /// Records where a peer listens, for peers not (yet) known through membership.
    pub fn set_peer(&self, node: NodeId, addr: SocketAddr) {
        self.inner.topology.set_peer(node, addr)
    }

    /// Where `node` listens, as this store knows it (see [`Topology::peer_addr`]).
    pub fn peer_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.inner.topology.peer_addr(node)
    }

    /// The node's engine (for replica comparisons and tests).
    pub fn engine(&self) -> &Arc<Engine> {
        self.inner.groups.engine()
    }

    /// The client this store calls peers with (routers in the same process may share it).
    pub fn client(&self) -> Arc<RpcClient> {
        self.inner.topology.client()
    }

    /// The fault-injection filter shared by the store's listener, client and gossip socket
    /// (see [`Topology::fault_filter`]).
    pub fn fault_filter(&self) -> &FaultFilter {
        self.inner.topology.fault_filter()
    }

    /// The transport counters of the listener, the client and the gossip socket together
    /// (messages and bytes, and what the fault filter dropped or delayed).
    pub fn transport_stats(&self) -> shoal_transport::StatsSnapshot {
        self.inner.topology.transport_stats()
    }

    /// How many times the node's WAL has synced (one sync covers every group's writes of a
    /// round).
    pub fn wal_syncs(&self) -> u64 {
        self.inner.groups.wal_stats().syncs
    }

    /// The descriptors of every range this node hosts, as applied here.
    pub fn descriptors(&self) -> Vec<RangeDescriptor> {
        self.inner.groups.descriptors()
    }

    /// The ranges that hold `key`, as a router needs them: the hosted range and the newest
    /// descriptor gossip brought, else the meta range's record (empty if none holds it).
    pub async fn lookup(&self, key: &[u8]) -> Result<Vec<RangeDescriptor>, StoreError> {
        Ok(self.inner.lookup(key, self.inner.request_limit()).await?)
    }

    /// Serves a key-value request for a range hosted here, in this process: what a
    /// [`super::KvRpc`] to this node does, with no socket and no encoding (a router in the
    /// same process sends its requests for ranges this node leads here). `timeout` is capped
    /// at [`StoreConfig::request_timeout`].
    pub async fn serve(
        &self,
        request: super::KvRequest,
        timeout: Duration,
    ) -> Result<super::KvResponse, shoal_core::Error> {
        let timeout = timeout.min(self.inner.request_limit());
        service::handle_kv(&self.inner, request, timeout).await
    }

    /// Every descriptor the meta range records (a linearizable read of it).
    pub async fn meta_descriptors(&self) -> Result<Vec<RangeDescriptor>, StoreError> {
        Ok(meta_client::descriptors(self.inner.meta_path()).await?)
    }

    /// Every range, each once at its newest generation: the meta range's record joined
    /// with what this node heard ([`Topology::ranges_from`]).
    pub async fn ranges(&self) -> Result<Vec<RangeDescriptor>, StoreError> {
        let recorded = self.meta_descriptors().await?;
        Ok(self.inner.topology.ranges_from(recorded))
    }

    /// Every node registered in the meta range (a linearizable read of it).
    pub async fn registered_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        Ok(meta_client::nodes(self.inner.meta_path()).await?)
    }

    /// Raft messages this node has taken in since it opened (every range's, heartbeats
    /// included).
    pub fn raft_messages_received(&self) -> u64 {
        self.inner
            .groups
            .driver()
            .inbox_stats()
            .received
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many of the ranges this node hosts are quiesced (idle: no ticks, no heartbeats;
    /// see [`shoal_consensus::RaftConfig::quiesce`]).
    pub async fn quiet_ranges(&self) -> Result<usize, DriverError> {
        self.inner.groups.driver().quiet_groups().await
    }

    /// A hosted range's Raft status.
    pub async fn status(&self, range: RangeId) -> Result<Status, DriverError> {
        self.inner.groups.driver().status(range.into()).await
    }

    /// The leader of a hosted range, as this node last saw it.
    pub fn leader(&self, range: RangeId) -> Option<NodeId> {
        self.inner.leader_of(range)
    }

    /// Every change of leader of the ranges this node hosts.
    pub fn subscribe_leaders(&self) -> broadcast::Receiver<LeaderChange> {
        self.inner.groups.driver().subscribe_leaders()
    }

    /// Splits `range`, which this node must lead, at `at` (strictly inside it) or at its
    /// size median. Resolves once the split is committed and applied here; the right half's
    /// group starts on every replica as it applies the split.
    pub async fn split(
        &self,
        range: RangeId,
        at: Option<Vec<u8>>,
    ) -> Result<(RangeDescriptor, RangeDescriptor), StoreError> {
        self.inner.split(range, at).await
    }

    /// Changes the replicas of `range`, which this node must lead (see
    /// [`shoal_consensus::ConfChange`]): add a learner (it is created on its node on demand
    /// and brought up by a snapshot), promote it once caught up, remove one. Resolves once
    /// the change is committed and applied here; the range's descriptor follows (a new
    /// generation, gossiped).
    pub async fn change_replicas(
        &self,
        range: RangeId,
        change: shoal_consensus::ConfChange,
    ) -> Result<(), StoreError> {
        Ok(self.inner.change_replicas(range, change).await?)
    }

    /// This node's status, with every hosted range's (or only `range`'s).
    pub async fn report(&self, range: Option<RangeId>) -> super::status::NodeStatus {
        super::status::report(&self.inner, range).await
    }

    /// Compares this node's replica of `range` with `peer`'s at one applied index, with a
    /// Merkle check over the node transport (see [`Comparison`]). A difference is logged
    /// as an error and counted in [`Store::replica_mismatches`].
    pub async fn compare_replica(
        &self,
        range: RangeId,
        peer: NodeId,
    ) -> Result<Comparison, StoreError> {
        let session = self.inner.comparisons.next_session();
        compare(&self.inner, range, peer, session).await
    }

    /// This node's replica of `range` digested at its applied index: a Merkle root over
    /// every key's version and value (see [`super::RangeDigest`]; [`super::DigestRpc`] asks
    /// another node).
    pub async fn replica_digest(
        &self,
        range: RangeId,
    ) -> Result<super::RangeDigest, shoal_core::Error> {
        super::compare::digest(&self.inner, range).await
    }

    /// Comparisons so far that found two replicas differing at one applied index (there
    /// should be none).
    pub fn replica_mismatches(&self) -> u64 {
        self.inner.comparisons.mismatches()
    }

    /// Hands each range this node leads to a caught-up follower and waits, at most
    /// `timeout`, until they lead (see [`HandOver`]). Proposals and reads to a range
    /// meanwhile are refused with a hint to the new leader. The node stays a replica; a node
    /// about to stop calls this so that its ranges do not wait out an election timeout (the
    /// follower still wins a quick election of its own, at the next term).
    pub async fn hand_over_leaderships(&self, timeout: Duration) -> HandOver {
        super::handover::hand_over(&self.inner, timeout).await
    }

    /// Stops serving and stops every group, after handing its leaderships over
    /// ([`StoreConfig::handover_timeout`]) and telling the cluster it leaves; what was
    /// acknowledged is durable.
    pub async fn shutdown(&self) {
        let timeout = self.inner.config.handover_timeout;
        if !timeout.is_zero() {
            let handed = self.hand_over_leaderships(timeout).await;
            tracing::info!(
                node = %self.inner.id,
                led = handed.led,
                moved = handed.moved,
                "leaderships handed over"
            );
        }
        self.inner.topology.inner.members.leave().await;
        self.stop().await;
        if let Err(e) = self.inner.groups.sync_engine().await {
            tracing::warn!(node = %self.inner.id, error = %e, "could not sync the engine at shutdown");
        }
    }

    /// Stops at once, as a crash would in-process: no final sync of the engine (its
    /// batches are in the operating system's buffers, which survive a killed process), no
    /// hand-over of leaderships. For tests of what a crash keeps.
    pub async fn crash(&self) {
        self.stop().await;
    }

    async fn stop(&self) {
        let topology = &self.inner.topology.inner;
        topology.stop_serving().await;
        let server = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(server) = server {
            server.shutdown().await;
        }
        self.inner.groups.shutdown().await;
        for task in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
        topology.stop().await;
    }
}

impl Inner {
    /// Proposes a replica change of `range` (which this node must lead) and waits until it
    /// is applied here (see [`Store::change_replicas`]).
    pub(crate) async fn change_replicas(
        &self,
        range: RangeId,
        change: shoal_consensus::ConfChange,
    ) -> Result<(), shoal_core::Error> {
        self.groups
            .driver()
            .propose_conf_change(range.into(), change)
            .await
            .map_err(|e| service::write_error(self, e))
    }

    /// Whether `node` is one of the cluster's nodes as this one knows them (see
    /// [`super::topology::TopologyInner::is_member`]).
    pub(crate) fn is_member(&self, node: NodeId) -> bool {
        self.topology.inner.is_member(node)
    }

    /// The leader of a hosted range as this node sees it.
    pub(crate) fn leader_of(&self, range: RangeId) -> Option<NodeId> {
        self.groups.leader_of(range)
    }

    /// Whether this node leads a hosted range.
    pub(crate) fn leads(&self, range: RangeId) -> bool {
        self.groups.leads(range)
    }

    /// Whether the meta range, asked within [`BIND_CHECK_TIMEOUT`], binds this node id to
    /// another store. It is asked only if a peer (each asked within 2 s) hosts a replica of
    /// it that knows a leader: founding nodes started one after another find none, or
    /// none bound to their id, at once. Out of reach, it says no.
    async fn bound_elsewhere(&self) -> bool {
        // Membership's members (known as soon as a join returns) and every address learned.
        let mut peers: Vec<SocketAddr> = self
            .topology
            .members()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.id != self.id)
            .map(|m| m.addr)
            .collect();
        peers.extend(
            self.topology
                .inner
                .peers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(&node, _)| node != self.id)
                .map(|(_, &addr)| addr),
        );
        peers.sort_unstable();
        peers.dedup();
        let client = self.topology.client();
        let mut led = false;
        for addr in peers {
            let status = client
                .call::<super::status::StatusRpc>(addr, &Some(META_RANGE), Duration::from_secs(2))
                .await;
            if status.is_ok_and(|s| s.ranges.iter().any(|r| r.leader.is_some())) {
                led = true;
                break;
            }
        }
        if !led {
            return false;
        }
        let asked =
            tokio::time::timeout(BIND_CHECK_TIMEOUT, meta_client::bindings(self.meta_path())).await;
        match asked {
            Ok(Ok(bindings)) => bindings
                .iter()
                .any(|&(node, store)| node == self.id && store != self.identity.store()),
            _ => false,
        }
    }

    /// The longest a request may take: [`StoreConfig::request_timeout`], or
    /// [`DEFAULT_DEADLINE`] when that is zero.
    pub(crate) fn request_limit(&self) -> Duration {
        self.topology.inner.request_limit()
    }

    /// A hint naming `node` (if any) with its address as this node knows it.
    pub(crate) fn leader_hint(&self, node: Option<NodeId>) -> Option<LeaderHint> {
        self.topology.inner.leader_hint(node)
    }

    /// The meta range, reached from this node: answered here when this node leads it.
    pub(crate) fn meta_path(&self) -> MetaPath<'_> {
        MetaPath {
            topology: &self.topology.inner,
            local: Some(self),
        }
    }

    /// The ranges that hold `key` (see [`Store::lookup`]), asking the meta range within
    /// `timeout` if need be.
    pub(crate) async fn lookup(
        &self,
        key: &[u8],
        timeout: Duration,
    ) -> Result<Vec<RangeDescriptor>, shoal_core::Error> {
        let found = self.descriptors_for(key);
        if !found.is_empty() {
            return Ok(found);
        }
        let recorded = meta_client::lookup(self.meta_path(), key, timeout).await?;
        if let Some(d) = &recorded {
            self.topology.inner.learn(d, 0);
        }
        Ok(recorded.into_iter().collect())
    }

    /// Refuses a split key that is empty, over the key limit, or not strictly inside the
    /// hosted range `range`.
    fn check_split_key(&self, range: RangeId, at: &[u8]) -> Result<(), shoal_core::Error> {
        let invalid = |why: &str| shoal_core::Error::new(ErrorCode::InvalidRequest, why);
        let max_key = self.config.engine.max_key_len;
        if at.len() > max_key {
            return Err(shoal_core::Error::new(
                ErrorCode::TooLarge,
                format!(
                    "a split key of {} bytes over the limit of {max_key}",
                    at.len()
                ),
            ));
        }
        let descriptor = self
            .groups
            .descriptor(range)
            .ok_or_else(|| invalid("the range is not hosted here"))?;
        if at.is_empty() || !descriptor.contains_key(at) || at == descriptor.range.start() {
            return Err(invalid("a split key must lie strictly inside the range"));
        }
        Ok(())
    }

    pub(crate) async fn split(
        &self,
        range: RangeId,
        at: Option<Vec<u8>>,
    ) -> Result<(RangeDescriptor, RangeDescriptor), StoreError> {
        let request = |code: ErrorCode, message: &str| {
            StoreError::Request(shoal_core::Error::new(code, message))
        };
        if self.groups.descriptor(range).is_none() {
            return Err(request(
                ErrorCode::RangeNotFound { range },
                "not hosted here",
            ));
        }
        if range == META_RANGE {
            return Err(request(
                ErrorCode::InvalidRequest,
                "the meta range does not split",
            ));
        }
        let at = match at {
            // Refused here, before an id is allocated or anything proposed (the machine
            // would refuse it too, on every replica).
            Some(at) => {
                self.check_split_key(range, &at)
                    .map_err(StoreError::Request)?;
                at
            }
            None => {
                let engine = self.groups.engine().clone();
                tokio::task::spawn_blocking(move || engine.split_key(range))
                    .await
                    .map_err(|e| StoreError::Corrupt(e.to_string()))??
                    .ok_or_else(|| {
                        request(ErrorCode::InvalidRequest, "the range is too small to split")
                    })?
            }
        };
        let right = meta_client::allocate_range_id(self.meta_path())
            .await
            .map_err(StoreError::Request)?;
        let data = codec::encode(&Command::Split { at, right })
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let applied = self
            .groups
            .driver()
            .propose_within(
                range.into(),
                data.into(),
                Wait::Applied,
                self.config.request_timeout,
            )
            .await
            .map_err(|e| StoreError::Request(service::write_error(self, e)))?;
        match applied {
            Applied::Split { left, right } => Ok((*left, *right)),
            Applied::Rejected(Rejection::InvalidSplit(why)) => {
                Err(request(ErrorCode::InvalidRequest, &why))
            }
            other => Err(StoreError::Corrupt(format!("a split answered {other:?}"))),
        }
    }
}

/// Acts on what the range machines report, in order: starts the group of every split's
/// right half as this node applies the split.
async fn handle_range_events(
    inner: Arc<Inner>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<RangeEvent>,
) {
    while let Some(event) = events.recv().await {
        match event {
            RangeEvent::Split(split) => {
                if let Err(e) = inner.groups.start_split_half(split).await {
                    tracing::error!(node = %inner.id, error = %e, "could not start a split's right half");
                }
            }
        }
    }
}

/// Syncs the engine's buffered writes every [`StoreConfig::engine_sync_interval`], off the
/// runtime threads.
async fn sync_engine(inner: Arc<Inner>) {
    let every = inner.config.engine_sync_interval;
    if every.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = inner.groups.sync_engine().await {
            tracing::warn!(node = %inner.id, error = %e, "could not sync the engine");
        }
    }
}

/// How often the groups are told again of every member that is not alive (beside the
/// membership events, which a lagging subscriber may miss).
const DOWN_MEMBERS_INTERVAL: Duration = Duration::from_secs(5);

/// Tells the groups of every member membership suspects, declares dead or saw leave
/// ([`RaftDriver::peer_down`]), so quiet ranges led there wake and elect another leader
/// ([`shoal_consensus::RaftConfig::quiesce`]): at once on the event, and again every
/// [`DOWN_MEMBERS_INTERVAL`] for every member not alive then.
async fn wake_ranges_of_down_members(
    inner: Arc<Inner>,
    mut events: broadcast::Receiver<MemberEvent>,
) {
    use shoal_membership::{MemberEventKind, MemberState};
    let mut ticker = tokio::time::interval(DOWN_MEMBERS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let down: Vec<NodeId> = tokio::select! {
            event = events.recv() => match event {
                Ok(event) if matches!(
                    event.kind,
                    MemberEventKind::Suspect | MemberEventKind::Dead | MemberEventKind::Left
                ) => vec![event.id],
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick() => match inner.topology.members().await {
                Ok(members) => members
                    .into_iter()
                    .filter(|m| m.id != inner.id && m.state != MemberState::Alive)
                    .map(|m| m.id)
                    .collect(),
                Err(_) => continue,
            },
        };
        for node in down {
            if inner.groups.driver().peer_down(node).await.is_err() {
                return;
            }
        }
    }
}

/// How often hosted replicas are checked for having been removed from their ranges.
const REPLICA_GC_INTERVAL: Duration = Duration::from_secs(2);

/// Destroys the replicas this node hosts that their ranges no longer name (see
/// [`RangeGroups::destroy`]): removed by a change this replica applied, or (while this node
/// was down or cut off) by one it never saw, which a newer descriptor of the range, heard by
/// gossip, shows. Checked every [`REPLICA_GC_INTERVAL`].
async fn collect_removed_replicas(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(REPLICA_GC_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let removed: Vec<(RangeId, shoal_core::Generation)> = {
            let known = inner.topology.inner.known_ranges();
            // One pass over what gossip knows, then one lookup per hosted replica.
            let mut heard: std::collections::HashMap<RangeId, &RangeDescriptor> =
                std::collections::HashMap::new();
            for d in known.descriptors() {
                let kept = heard.entry(d.id).or_insert(d);
                if d.generation > kept.generation {
                    *kept = d;
                }
            }
            inner
                .groups
                .descriptors()
                .into_iter()
                .filter_map(|hosted| {
                    let newest = heard
                        .get(&hosted.id)
                        .copied()
                        .filter(|d| d.generation > hosted.generation)
                        .unwrap_or(&hosted);
                    newest
                        .role_of(inner.id)
                        .is_none()
                        .then_some((hosted.id, newest.generation))
                })
                .collect()
        };
        for (range, generation) in removed {
            match inner.groups.destroy(range, generation).await {
                Ok(()) => {
                    tracing::info!(node = %inner.id, %range, %generation, "destroyed a replica its range no longer names")
                }
                Err(e) => {
                    tracing::warn!(node = %inner.id, %range, error = %e, "could not destroy a removed replica")
                }
            }
        }
    }
}

/// Every [`StoreConfig::log_compaction_interval`], asks the groups whose entries keep old
/// WAL segments on disk to compact their logs (see [`RangeGroups::compact_logs`]).
async fn compact_logs(inner: Arc<Inner>) {
    let every = inner.config.log_compaction_interval;
    if every.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match inner.groups.compact_logs().await {
            Ok(0) => {}
            Ok(asked) => {
                tracing::debug!(node = %inner.id, asked, "asked groups to compact their logs")
            }
            Err(e) => tracing::warn!(node = %inner.id, error = %e, "could not compact logs"),
        }
    }
}

/// Splits the ranges this node leads that the policy says are too large, at their size
/// median, checking every [`StoreConfig::split_check_interval`].
async fn split_large_ranges(inner: Arc<Inner>) {
    let policy = inner.config.split_policy.clone();
    if let Err(e) = policy.validate() {
        tracing::error!(node = %inner.id, error = %e, "the split policy is refused; ranges will not split by size");
        return;
    }
    let mut last_change: HashMap<RangeId, shoal_core::Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(inner.config.split_check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = inner.groups.driver().clock().now();
        let led: Vec<RangeDescriptor> = inner
            .groups
            .led_descriptors()
            .into_iter()
            .filter(|d| d.id != META_RANGE)
            .collect();
        let mut stats = HashMap::new();
        for d in &led {
            let Ok(info) = inner.groups.engine().range(d.id) else {
                continue;
            };
            let size_bytes = info.stats.live_bytes;
            let size_median_key = if size_bytes > policy.split_bytes {
                let engine = inner.groups.engine().clone();
                let range = d.id;
                tokio::task::spawn_blocking(move || engine.split_key(range))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            } else {
                None
            };
            stats.insert(
                d.id,
                PolicyStats {
                    size_bytes,
                    size_median_key,
                    qps: 0.0,
                    load_median_key: None,
                    last_change: last_change.get(&d.id).copied(),
                },
            );
        }
        let Ok(decisions) = policy.decide_splits(&led, &stats, &InFlight::default(), now) else {
            continue;
        };
        for decision in decisions {
            let Decision::Split { range, at, .. } = decision else {
                continue;
            };
            match inner.split(range, Some(at)).await {
                Ok((left, right)) => {
                    tracing::info!(node = %inner.id, %range, right = %right.id, "split a range over the size threshold");
                    last_change.insert(left.id, now);
                    last_change.insert(right.id, now);
                }
                Err(e) => {
                    tracing::debug!(node = %inner.id, %range, error = %e, "a size split did not happen")
                }
            }
        }
    }
}

/// Starts a replica, waiting for its snapshot, of each group messages arrive for that this
/// node does not host but that gossip says it is a member of (a replica being added; or the
/// right half of a split the rest applied first, once this node's parent range has applied
/// it or is gone). A group whose descriptor is unknown, or does not name this node, or whose
/// span overlaps a range hosted here, is left alone: its messages are dropped.
async fn host_on_demand(inner: Arc<Inner>, mut unknown: broadcast::Receiver<UnknownGroup>) {
    loop {
        let group: RangeId = match unknown.recv().await {
            Ok(u) => u.group.into(),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if inner.groups.descriptor(group).is_some() {
            continue;
        }
        // A store the meta range has not bound (new on this start), or refused (its node
        // id belongs to another store), takes no replica it is sent.
        if !inner.identity.may_host() {
            tracing::debug!(node = %inner.id, %group, admission = ?inner.identity.admission(), "not hosting: the store is not admitted");
            continue;
        }
        let known = inner
            .topology
            .inner
            .known_ranges()
            .descriptors()
            .find(|d| d.id == group)
            .cloned();
        let Some(descriptor) = known else {
            continue;
        };
        if !hosting::wants_replica(&descriptor, inner.id, inner.groups.engine())
            || !inner.groups.may_recreate(&descriptor)
        {
            continue;
        }
        tracing::info!(node = %inner.id, %group, "hosting a new replica; it waits for a snapshot");
        if let Err(e) = inner.groups.host_uninitialized(group).await {
            tracing::warn!(node = %inner.id, %group, error = %e, "could not host a new replica");
        }
    }
}

/// How long a new store asks the meta range for its binding before bootstrapping.
const BIND_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a request may take when its caller gave no deadline.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

//! A node's view of the cluster: its membership, where its peers listen, the seeds it joined
//! through, and every range descriptor it has heard of (see [`Topology`]).
//!
//! A data node's [`super::Store`] holds one beside its ranges; a standalone gateway opens
//! one alone ([`Topology::open`]): membership, descriptor gossip and the node RPC client,
//! with no engine, no WAL, no Raft and no files.

use super::api::{LookupRpc, MetaResponse, MetaRpc};
use super::gossip::RangesRpc;
use super::meta::META_RANGE;
use super::meta_client::MetaPath;
use super::node::{StoreError, DEFAULT_DEADLINE, GATEWAY_META};
use super::seeds::Seeds;
use shoal_consensus::driver::Peers;
use shoal_core::{LeaderHint, NodeId, RangeDescriptor};
use shoal_membership::driver::{MembershipInbox, MembershipNode, NodeOptions};
use shoal_membership::{MemberEvent, MemberEventKind, MembershipConfig};
use shoal_ranges::DescriptorSet;
use shoal_transport::{
    FaultFilter, Router, RpcClient, RpcServer, TransportConfig, TransportError, TransportStats,
    UdpTransport,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// How many listener ports a node tries, with port 0, for one whose UDP twin is free too.
const PORT_ATTEMPTS: u32 = 16;

/// Options for [`Topology::open`]: a member of the cluster that hosts no ranges. A data
/// node's are derived from its [`super::StoreConfig`] ([`super::StoreConfig::topology`]).
#[derive(Clone, Debug)]
pub struct TopologyConfig {
    /// This member's id, unique in the cluster.
    pub node: NodeId,
    /// The address it listens on: membership's reliable channel and node RPC over TCP,
    /// gossip over UDP on the same port number (port 0: any free port).
    pub listen: SocketAddr,
    /// The address peers reach it at, if not the bound one.
    pub advertise: Option<SocketAddr>,
    /// The transport's settings.
    pub transport: TransportConfig,
    /// Membership (SWIM) settings.
    pub membership: MembershipConfig,
    /// How long leaving waits for the leave notice to go out. Default 5 s.
    pub leave_timeout: Duration,
    /// How soon it joins again through seeds no live member is known at (see
    /// [`super::StoreConfig::rejoin_interval`]). Default 2 s; zero turns it off.
    pub rejoin_interval: Duration,
    /// How long a request to the meta range may take. Default 10 s.
    pub request_timeout: Duration,
    /// The longest key a descriptor's bounds may hold (the engine's limit on data nodes);
    /// gossip bringing longer ones is refused. Default 4 KiB.
    pub max_key_len: usize,
}

impl TopologyConfig {
    /// A preset for a member on one machine (tests, examples): any free loopback port, the
    /// transport's and membership's local presets, a 300 ms leave notice; as
    /// [`super::StoreConfig::local`] has them.
    pub fn local(node: NodeId) -> Self {
        let mut config = TopologyConfig::new(node, SocketAddr::from(([127, 0, 0, 1], 0)));
        config.transport = TransportConfig::local();
        config.membership = MembershipConfig::local();
        config.leave_timeout = Duration::from_millis(300);
        config
    }

    /// Defaults for member `node`, listening on `listen`.
    pub fn new(node: NodeId, listen: SocketAddr) -> Self {
        TopologyConfig {
            node,
            listen,
            advertise: None,
            transport: TransportConfig::default(),
            membership: MembershipConfig::default(),
            leave_timeout: Duration::from_secs(5),
            rejoin_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_key_len: shoal_storage::EngineConfig::default().max_key_len,
        }
    }
}

/// A node's view of the cluster (see the module docs). A handle, cheap to clone.
#[derive(Clone)]
pub struct Topology {
    pub(crate) inner: Arc<TopologyInner>,
}

/// What a [`Topology`] handle shares.
pub(crate) struct TopologyInner {
    pub(crate) id: NodeId,
    /// The address peers reach this node at.
    pub(crate) addr: SocketAddr,
    pub(crate) client: Arc<RpcClient>,
    /// This node's membership: who is in the cluster and where, over gossip.
    pub(crate) members: MembershipNode,
    /// Where each node listens: from membership, leader hints and [`Topology::set_peer`].
    pub(crate) peers: Peers,
    /// The seeds this node joined through, joined again while none is known alive.
    pub(crate) seeds: Seeds,
    /// Every range's descriptor this node has heard of (its own and gossip's).
    known: Mutex<DescriptorSet>,
    /// Stores: which store each node's membership metadata says speaks for it, and which
    /// store the meta range binds it to (see `identity.rs`).
    stores: std::sync::RwLock<Stores>,
    pub(crate) max_key_len: usize,
    pub(crate) rejoin_interval: Duration,
    pub(crate) request_timeout: Duration,
    /// A standalone topology's own listener; a data node's store owns its listener.
    server: Mutex<Option<RpcServer>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Which store speaks for each node, and which the meta range binds it to.
#[derive(Debug, Default)]
struct Stores {
    speaking: std::collections::HashMap<NodeId, u64>,
    bound: std::collections::HashMap<NodeId, u64>,
}

/// A topology whose listening socket is bound but not yet served: its owner registers its
/// handlers on `router` and then serves it ([`Starting::serve`]).
pub(crate) struct Starting {
    pub(crate) topology: Topology,
    pub(crate) router: Router,
    listener: TcpListener,
    transport: TransportConfig,
}

impl Starting {
    /// Serves the router, with every handler registered, on the bound listener.
    pub(crate) fn serve(self) -> Result<RpcServer, StoreError> {
        let client = &self.topology.inner.client;
        Ok(RpcServer::serve(
            self.listener,
            self.topology.inner.id,
            self.router,
            self.transport,
            client.stats().clone(),
            client.fault_filter().clone(),
        )?)
    }

    /// Undoes a start that will not be served (a handler could not be registered): leaves
    /// membership's tasks and the client's connections stopped, the listener closed.
    pub(crate) async fn abandon(self) {
        self.topology.inner.stop_serving().await;
        self.topology.inner.stop().await;
    }
}

impl Topology {
    /// Opens a member that hosts no ranges (its membership metadata is
    /// [`GATEWAY_META`]): it listens, learns every range by gossip and the meta range, and
    /// answers peers' descriptor pulls and lookups. It creates no files. Join the cluster
    /// with [`Topology::join`].
    pub async fn open(config: TopologyConfig) -> Result<Topology, StoreError> {
        let mut starting = Topology::start(&config, GATEWAY_META.to_vec()).await?;
        let topology = starting.topology.clone();
        if let Err(e) = topology.register_standalone(&mut starting.router) {
            starting.abandon().await;
            return Err(e);
        }
        let server = match starting.serve() {
            Ok(server) => server,
            Err(e) => {
                topology.inner.stop_serving().await;
                topology.inner.stop().await;
                return Err(e);
            }
        };
        *topology
            .inner
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(server);
        topology.spawn_upkeep();
        Ok(topology)
    }

    /// Binds the listener and its UDP twin, starts membership (publishing `meta`) and
    /// registers membership's inbox and the topology's own handler on a router, which the
    /// caller completes with handlers of its own and then serves.
    pub(crate) async fn start(
        config: &TopologyConfig,
        meta: Vec<u8>,
    ) -> Result<Starting, StoreError> {
        let id = config.node;
        let members_inbox = MembershipInbox::new();
        let mut router = Router::new();
        members_inbox.register(&mut router)?;
        // One fault filter (disabled unless rules are added) and one set of counters for the
        // listener, the client and the gossip socket, so a rule cuts all traffic with a peer.
        let stats = Arc::new(TransportStats::default());
        let fault = FaultFilter::with_stats(stats.clone());
        let (listener, udp) = bind(config, stats.clone(), fault.clone()).await?;
        let bound = listener.local_addr().map_err(TransportError::from)?;
        let addr = config.advertise.unwrap_or(bound);
        let client = Arc::new(RpcClient::with_parts(
            id,
            Some(addr),
            config.transport.clone(),
            stats,
            fault,
        )?);
        let mut options = NodeOptions::new(id, bound, config.membership.clone());
        options.advertise = Some(addr);
        options.transport = config.transport.clone();
        options.leave_timeout = config.leave_timeout;
        options.meta = meta;
        let members = MembershipNode::start_shared(options, members_inbox, client.clone(), udp)
            .map_err(|e| StoreError::Membership(e.to_string()))?;
        let peers = Peers::default();
        peers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, addr);
        let topology = Topology {
            inner: Arc::new(TopologyInner {
                id,
                addr,
                client,
                members,
                peers,
                seeds: Seeds::default(),
                known: Mutex::new(DescriptorSet::new()),
                stores: std::sync::RwLock::new(Stores::default()),
                max_key_len: config.max_key_len,
                rejoin_interval: config.rejoin_interval,
                request_timeout: config.request_timeout,
                server: Mutex::new(None),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        if let Err(e) = topology.register(&mut router) {
            topology.inner.stop_serving().await;
            topology.inner.stop().await;
            return Err(e);
        }
        Ok(Starting {
            topology,
            router,
            listener,
            transport: config.transport.clone(),
        })
    }

    /// The topology's own handler: its descriptor set, for peers' pulls.
    fn register(&self, router: &mut Router) -> Result<(), StoreError> {
        let pulled = self.clone();
        router.register::<RangesRpc, _, _>(move |_ctx, ()| {
            let topology = pulled.clone();
            async move { super::gossip::answer_pull(&topology.inner) }
        })?;
        Ok(())
    }

    /// What a member that hosts no ranges answers besides pulls: lookups (from gossip, else
    /// the meta range), and a refusal of meta requests (a node that knows nothing of the
    /// meta range yet asks every peer in turn, and goes on to the next on this answer). A
    /// data node's store registers its own.
    fn register_standalone(&self, router: &mut Router) -> Result<(), StoreError> {
        let looked = self.clone();
        router.register::<LookupRpc, _, _>(move |ctx, request| {
            let topology = looked.clone();
            async move {
                let timeout = super::service::deadline(topology.inner.request_limit(), &ctx);
                topology.inner.lookup(&request.key, timeout).await
            }
        })?;
        router.register::<MetaRpc, _, _>(move |_ctx, _request| async move {
            Err::<MetaResponse, _>(shoal_core::Error::new(
                shoal_core::ErrorCode::RangeNotFound { range: META_RANGE },
                "a gateway member hosts no replica of the meta range",
            ))
        })?;
        Ok(())
    }

    /// Starts the tasks that keep the view current: peer addresses from membership,
    /// rejoining lost seeds, pulling and hearing descriptor gossip. They end with
    /// [`Topology::shutdown`] (or the owning store's).
    pub(crate) fn spawn_upkeep(&self) {
        let inner = &self.inner;
        let tasks = [
            tokio::spawn(learn_peers(inner.clone(), inner.members.subscribe())),
            tokio::spawn(super::seeds::rejoin(inner.clone())),
            tokio::spawn(super::gossip::pull_now_and_then(inner.clone())),
            tokio::spawn(super::gossip::listen(
                inner.clone(),
                inner.members.subscribe_messages(),
            )),
        ];
        inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
    }

    /// This node.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address peers reach this node at.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Joins the cluster through `seeds` (any members' addresses): from then on membership
    /// keeps every node's address known to every other. Returns how many seeds answered.
    /// The seeds are remembered: while no live member is known at one of them, the node
    /// joins through it again (see [`TopologyConfig::rejoin_interval`]).
    pub async fn join(&self, seeds: Vec<SocketAddr>) -> Result<usize, StoreError> {
        let inner = &self.inner;
        inner.seeds.remember(&seeds, inner.addr);
        let _joining = inner.seeds.joining.lock().await;
        let answered = inner
            .members
            .join(seeds.clone())
            .await
            .map_err(|e| StoreError::Membership(e.to_string()))?;
        // Learn the ranges at once rather than at the next pull.
        if let Some(&seed) = seeds.first() {
            super::gossip::pull(inner, seed).await;
        }
        Ok(answered)
    }

    /// The cluster's members as this node sees them (itself included).
    pub async fn members(&self) -> Result<Vec<shoal_membership::Member>, StoreError> {
        self.inner
            .members
            .members()
            .await
            .map_err(|e| StoreError::Membership(e.to_string()))
    }

    /// Membership's events from now on: members joining, suspected, failed, leaving.
    pub fn subscribe_members(&self) -> broadcast::Receiver<MemberEvent> {
        self.inner.members.subscribe()
    }

    /// Records where a peer listens, for peers not (yet) known through membership.
    pub fn set_peer(&self, node: NodeId, addr: SocketAddr) {
        self.inner
            .peers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, addr);
    }

    /// Where `node` listens, as this node knows it (through membership, leader hints, or
    /// [`Topology::set_peer`]).
    pub fn peer_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.inner
            .peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .copied()
    }

    /// The client this node calls peers with (routers in the same process may share it).
    pub fn client(&self) -> Arc<RpcClient> {
        self.inner.client.clone()
    }

    /// The fault-injection filter shared by the listener, the client and the gossip socket:
    /// a rule for a peer's address cuts (or delays) all traffic with it alike. Disabled,
    /// and free, until a rule is added; for fault-injection tests only.
    pub fn fault_filter(&self) -> &FaultFilter {
        self.inner.client.fault_filter()
    }

    /// The transport counters of the listener, the client and the gossip socket together
    /// (messages and bytes, and what the fault filter dropped or delayed).
    pub fn transport_stats(&self) -> shoal_transport::StatsSnapshot {
        self.inner.client.stats().snapshot()
    }

    /// The ranges that may hold `key`, as a router needs them: the newest descriptor gossip
    /// brought, else the meta range's record (empty if none holds it).
    pub async fn lookup(&self, key: &[u8]) -> Result<Vec<RangeDescriptor>, StoreError> {
        let limit = self.inner.request_limit();
        Ok(self.inner.lookup(key, limit).await?)
    }

    /// Every descriptor the meta range records (a linearizable read of it).
    pub async fn meta_descriptors(&self) -> Result<Vec<RangeDescriptor>, StoreError> {
        Ok(super::meta_client::descriptors(self.inner.meta_path()).await?)
    }

    /// Every range, each once: [`Topology::ranges_from`] the meta range's record.
    pub async fn ranges(&self) -> Result<Vec<RangeDescriptor>, StoreError> {
        let recorded = self.meta_descriptors().await?;
        Ok(self.ranges_from(recorded))
    }

    /// Every range, each once, from `recorded` (the meta range's descriptors) joined with
    /// what this node heard (gossip, its own ranges) by the descriptor semilattice, each
    /// range at its newest generation, by id. Right after a split the meta range still
    /// records the parent's older generation for the right half's keys and not the right
    /// half; the join shows the right half as soon as this node has heard of it, and never
    /// lists a range twice.
    pub fn ranges_from(&self, recorded: Vec<RangeDescriptor>) -> Vec<RangeDescriptor> {
        let mut joined =
            match DescriptorSet::from_descriptors(recorded.clone(), self.inner.max_key_len) {
                Ok(set) => set,
                Err(_) => DescriptorSet::new(),
            };
        joined.merge(&self.inner.known_ranges());
        let mut newest: std::collections::BTreeMap<shoal_core::RangeId, RangeDescriptor> =
            std::collections::BTreeMap::new();
        for d in joined.descriptors().chain(recorded.iter()) {
            match newest.get(&d.id) {
                Some(kept) if kept.generation >= d.generation => {}
                _ => {
                    newest.insert(d.id, d.clone());
                }
            }
        }
        newest.into_values().collect()
    }

    /// The leader of `range` as gossip last told it (advisory: a router confirms it by
    /// asking).
    pub fn leader_hint(&self, range: shoal_core::RangeId) -> Option<NodeId> {
        self.inner
            .known_ranges()
            .descriptors()
            .find(|d| d.id == range)
            .and_then(|d| d.leader_hint)
    }

    /// Leaves the cluster (telling the others) and stops serving: for a topology opened
    /// alone ([`Topology::open`]). A data node's store stops its topology itself
    /// ([`super::Store::shutdown`]); calling this on a store's topology cuts the store off
    /// the cluster.
    pub async fn shutdown(&self) {
        self.inner.members.leave().await;
        self.inner.stop_serving().await;
        self.inner.stop().await;
    }
}

impl TopologyInner {
    /// The descriptors known from gossip and from this node's own ranges.
    pub(crate) fn known_ranges(&self) -> MutexGuard<'_, DescriptorSet> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Merges one descriptor this node knows first-hand (a leader hint only with `term`).
    pub(crate) fn learn(&self, descriptor: &RangeDescriptor, term: u64) {
        let mut d = descriptor.clone();
        if term == 0 {
            d.leader_hint = None;
        }
        if let Ok(set) = DescriptorSet::from_descriptors_with_terms([(d, term)], self.max_key_len) {
            self.known_ranges().merge(&set);
        }
    }

    /// The meta range, reached from this topology alone.
    pub(crate) fn meta_path(&self) -> MetaPath<'_> {
        MetaPath {
            topology: self,
            local: None,
        }
    }

    /// The ranges gossip says hold `key`, else the meta range's record (see
    /// [`Topology::lookup`]), asking within `timeout`.
    async fn lookup(
        &self,
        key: &[u8],
        timeout: Duration,
    ) -> Result<Vec<RangeDescriptor>, shoal_core::Error> {
        if let Some(known) = self.known_ranges().winner(key) {
            return Ok(vec![known.clone()]);
        }
        let recorded = super::meta_client::lookup(self.meta_path(), key, timeout).await?;
        if let Some(d) = &recorded {
            self.learn(d, 0);
        }
        Ok(recorded.into_iter().collect())
    }

    /// The longest a request may take: the configured timeout, or [`DEFAULT_DEADLINE`] when
    /// that is zero.
    pub(crate) fn request_limit(&self) -> Duration {
        if self.request_timeout.is_zero() {
            DEFAULT_DEADLINE
        } else {
            self.request_timeout
        }
    }

    /// Whether traffic from `node` is taken: not when the store its membership metadata
    /// names differs from the one the meta range binds it to (it came back without its
    /// data, so its votes and acknowledgements would vouch for a log it no longer has).
    /// A node whose store or binding is not known yet is taken.
    pub(crate) fn admits(&self, node: NodeId) -> bool {
        let stores = self.stores.read().unwrap_or_else(|p| p.into_inner());
        match (stores.speaking.get(&node), stores.bound.get(&node)) {
            (Some(speaking), Some(bound)) => speaking == bound,
            _ => true,
        }
    }

    /// The meta range's store bindings, read now.
    pub(crate) fn set_bindings(&self, bindings: Vec<(NodeId, u64)>) {
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        stores.bound = bindings.into_iter().collect();
    }

    /// Records the store `node`'s membership metadata names, if it names one.
    fn heard_speaker(&self, node: NodeId, meta: &[u8]) {
        if let Some(store) = super::identity::store_in_meta(meta) {
            self.stores
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .speaking
                .insert(node, store);
        }
    }

    /// Whether `node` is one of the cluster's nodes as this one knows them (through
    /// membership or [`Topology::set_peer`]): what may change the meta range. The transport
    /// does not authenticate the id a connection claims (see shoal-transport's
    /// `RequestContext::source`), so this keeps out routers and mistakes, not forgers.
    pub(crate) fn is_member(&self, node: NodeId) -> bool {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&node)
    }

    /// A hint naming `node` (if any) with its address as this node knows it.
    pub(crate) fn leader_hint(&self, node: Option<NodeId>) -> Option<LeaderHint> {
        leader_hint(&self.peers, node)
    }

    /// Stops membership and the topology's own listener (a data node's store stops its
    /// own listener between this and [`TopologyInner::stop`]).
    pub(crate) async fn stop_serving(&self) {
        self.members.shutdown().await;
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            server.shutdown().await;
        }
    }

    /// Ends the upkeep tasks and closes the client's connections.
    pub(crate) async fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
        self.client.shutdown().await;
    }
}

/// Binds the TCP listener and the UDP socket on the same port number. With port 0 the system
/// picks a free TCP port whose UDP twin may be in use: then another TCP port is picked, a
/// few times.
async fn bind(
    config: &TopologyConfig,
    stats: Arc<TransportStats>,
    fault: FaultFilter,
) -> Result<(TcpListener, UdpTransport), StoreError> {
    config.transport.validate()?;
    let mut attempts = 0;
    loop {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(TransportError::from)?;
        let bound = listener.local_addr().map_err(TransportError::from)?;
        match UdpTransport::bind_with(
            bound,
            config.node,
            &config.transport,
            stats.clone(),
            fault.clone(),
        )
        .await
        {
            Ok(udp) => return Ok((listener, udp)),
            Err(TransportError::Io(e))
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && config.listen.port() == 0
                    && attempts < PORT_ATTEMPTS =>
            {
                attempts += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Keeps the peer addresses Raft and node RPC use up to date with membership: a member that
/// joins or comes back is reachable at the address it gossips. Starts from the members
/// known when it subscribed (membership runs, and answers joins, before this task does).
async fn learn_peers(inner: Arc<TopologyInner>, mut events: broadcast::Receiver<MemberEvent>) {
    if let Ok(members) = inner.members.members().await {
        let mut known = inner.peers.write().unwrap_or_else(|p| p.into_inner());
        for member in members.iter().filter(|m| m.id != inner.id) {
            known.entry(member.id).or_insert(member.addr);
            inner.heard_speaker(member.id, &member.meta);
        }
    }
    loop {
        match events.recv().await {
            Ok(event) => {
                if matches!(
                    event.kind,
                    MemberEventKind::Joined
                        | MemberEventKind::AliveAgain
                        | MemberEventKind::Reclaimed
                        | MemberEventKind::Updated
                ) {
                    inner
                        .peers
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(event.id, event.addr);
                    inner.heard_speaker(event.id, &event.meta);
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "missed membership events; addresses may lag");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A hint naming `node` (if any) with its address as `peers` know it.
pub(crate) fn leader_hint(peers: &Peers, node: Option<NodeId>) -> Option<LeaderHint> {
    let node = node?;
    let addr = peers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&node)
        .copied();
    Some(LeaderHint { node, addr })
}

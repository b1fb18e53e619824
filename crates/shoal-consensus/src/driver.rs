//! A tokio driver for every Raft group of one node, over shoal-transport.
//!
//! One task owns a [`MultiRaft`] whose groups keep their logs in one [`crate::Wal`]. Each round it takes every group's ready,
//! sends what may go at once, writes all of it to the WAL and syncs **once** (on the
//! blocking pool, so the runtime never waits on the disk), reports each group persisted,
//! sends what had to wait for the disk, applies committed entries to the groups' state
//! machines, and answers proposals and reads. All groups share one tick.
//!
//! Between nodes, a round's messages go as [`RaftBatch`] RPCs per peer, each at most
//! [`DriverConfig::max_rpc_bytes`] (a round's appends to one follower may total
//! `max_inflight_bytes`, 32 MiB by default, more than the transport's frames take, so they are
//! split). Each peer has a bounded queue and one sender task; when the queue is full, messages
//! are dropped (Raft retransmits). Inbound batches are checked against the source the
//! transport reports (the node its connection's handshake announced; not authenticated until
//! the transport has mutual TLS): a message claiming another sender is dropped and counted.
//!
//! A log-store error fails only the group it happened in: that group stops (it is no longer
//! ticked or stepped, and its proposals, reads and status answer
//! [`DriverError::GroupFailed`]) while the node's other groups go on.
//!
//! ```no_run
//! # async fn example(endpoint: shoal_transport::MemoryEndpoint) {
//! use shoal_consensus::driver::{DriverConfig, Peers, RaftDriver, RaftInbox};
//! use shoal_transport::Router;
//! use std::sync::Arc;
//!
//! let config = DriverConfig::default();
//! let inbox = RaftInbox::new(&config);
//! let mut router = Router::new();
//! inbox.register(&mut router).unwrap(); // before the server or endpoint is built with it
//! let peers = Peers::default(); // node id -> address, kept up to date by membership
//! let driver = RaftDriver::start(
//!     shoal_core::NodeId::new(1), Arc::new(endpoint), peers, inbox, config,
//! );
//! // Then host groups with `driver.add_group(raft, state_machine)`, each `Raft` over a
//! // `WalStore` of the node's one `Wal`.
//! # }
//! ```

use crate::entry::{LogIndex, Term};
use crate::error::{ProposeError, ReadError};
use crate::message::Message;
use crate::multi::{batch_by_node, AddGroupError, MultiRaft};
use crate::raft::{Raft, ReadMode, Status};
use crate::ready::Ready;
use crate::snapshot::StateMachine;
use crate::store::LogStore;
use crate::store::StoreError;
use crate::wal::WalStore;
use bytes::Bytes;
use shoal_core::{Clock, NodeId, RangeId, SystemClock};
use shoal_transport::{RegisterError, Router, Rpc, RpcTransport, RpcTransportExt};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The RPC that carries Raft messages between nodes: a batch for any groups.
pub struct RaftBatch;

impl Rpc for RaftBatch {
    const NAME: &'static str = "shoal.raft.batch";
    type Request = Vec<Message>;
    type Response = ();
}

/// Where peers are: node id to RPC address. Shared with whatever tracks membership.
pub type Peers = Arc<RwLock<HashMap<NodeId, SocketAddr>>>;

/// How the driver runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// How often every group is ticked. Default 10 ms (well under
    /// [`crate::RaftConfig::heartbeat_interval`]'s default of 100 ms).
    pub tick: Duration,
    /// How long a batch RPC to a peer may take. Default 2 s.
    pub send_timeout: Duration,
    /// Batches queued per peer before new ones are dropped. Default 256.
    pub peer_queue: usize,
    /// Inbound batches queued before new ones are dropped. Default 1024.
    pub inbox: usize,
    /// Commands (proposals, reads, …) queued before callers wait. Default 4096.
    pub commands: usize,
    /// The most bytes of Raft messages in one [`RaftBatch`] RPC, as
    /// [`crate::MessageBody::approx_size`] counts them: a round's messages to a peer are split
    /// into RPCs of at most this, and queued ones are merged up to it. It must stay below the
    /// transport's frame limit (shoal-transport's `max_frame_bytes`, 16 MiB by default) with
    /// room for the envelope and the estimate's slack: the driver lowers it to three
    /// quarters of the transport's [`RpcTransport::max_frame_bytes`] when that is smaller. A
    /// group whose messages could be larger ([`crate::RaftConfig::max_message_bytes`]) is
    /// refused by [`RaftDriver::add_group`]. Default 12 MiB.
    pub max_rpc_bytes: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            tick: Duration::from_millis(10),
            send_timeout: Duration::from_secs(2),
            peer_queue: 256,
            inbox: 1024,
            commands: 4096,
            max_rpc_bytes: 12 << 20,
        }
    }
}

/// Why a driver request failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The group refused the proposal (not the leader, too large, overloaded, …).
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// The read could not be served.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The node does not host the group.
    #[error("group {0} is not hosted here")]
    UnknownGroup(RangeId),
    /// The group could not be added.
    #[error(transparent)]
    AddGroup(#[from] AddGroupError),
    /// Another entry took the proposal's place in the log: it did not and will not take
    /// effect.
    #[error("the proposal was replaced in the log by a new leader and did not take effect")]
    Dropped,
    /// The outcome cannot be known here any more (a snapshot replaced the log meanwhile, or
    /// the group failed after the proposal's entry may have reached followers): the proposal
    /// may or may not have taken effect. Retry only what is safe to apply twice.
    #[error("the proposal's outcome is unknown (the log was replaced or the group failed)")]
    Indeterminate,
    /// A log store error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The group's log store failed, so the group stopped; the node's other groups go on
    /// (until they write, if the failure was the shared WAL's: after an I/O error the WAL
    /// refuses every write, so each group fails at its next write until the WAL is reopened).
    /// Proposals waiting when it failed are answered [`DriverError::Indeterminate`], since a
    /// leader sends entries before persisting them and followers may commit them; later
    /// requests get this error. Add the group again with [`RaftDriver::add_group`] over a
    /// working store to bring it back.
    #[error("group {group} stopped after its log store failed: {error}")]
    GroupFailed {
        /// The group.
        group: RangeId,
        /// The store's error.
        error: String,
    },
    /// The group's configuration allows messages larger than one RPC may carry.
    #[error(
        "the group's messages may take {largest} B, over the driver's max_rpc_bytes of {max} B"
    )]
    MessagesTooLarge {
        /// [`crate::RaftConfig::max_message_bytes`] of the group.
        largest: u64,
        /// [`DriverConfig::max_rpc_bytes`].
        max: u64,
    },
    /// The driver has stopped.
    #[error("the Raft driver has stopped")]
    Stopped,
}

/// Messages that arrived and the handler that receives them; register it on the node's
/// [`Router`] before building the server or endpoint, then hand it to
/// [`RaftDriver::start`].
pub struct RaftInbox {
    tx: mpsc::Sender<Vec<Message>>,
    rx: mpsc::Receiver<Vec<Message>>,
    stats: Arc<InboxStats>,
}

/// Inbound traffic the driver dropped.
#[derive(Debug, Default)]
pub struct InboxStats {
    /// Batches dropped because the inbox was full.
    pub full: AtomicU64,
    /// Messages whose `from` was not the sender the transport reported for the batch.
    pub spoofed: AtomicU64,
}

impl RaftInbox {
    /// An empty inbox sized by `config.inbox`.
    pub fn new(config: &DriverConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.inbox.max(1));
        RaftInbox {
            tx,
            rx,
            stats: Arc::default(),
        }
    }

    /// Registers the [`RaftBatch`] handler.
    pub fn register(&self, router: &mut Router) -> Result<(), RegisterError> {
        let tx = self.tx.clone();
        let stats = self.stats.clone();
        router.register::<RaftBatch, _, _>(move |ctx, mut batch| {
            let tx = tx.clone();
            let stats = stats.clone();
            async move {
                let before = batch.len();
                batch.retain(|m| m.from == ctx.source);
                let spoofed = (before - batch.len()) as u64;
                if spoofed > 0 {
                    stats.spoofed.fetch_add(spoofed, Ordering::Relaxed);
                    tracing::warn!(source = %ctx.source, spoofed, "dropped Raft messages claiming another sender");
                }
                if !batch.is_empty() && tx.try_send(batch).is_err() {
                    stats.full.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        })?;
        Ok(())
    }
}

enum Command {
    AddGroup {
        raft: Box<Raft<WalStore>>,
        state_machine: Box<dyn StateMachine + Send>,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    Propose {
        group: RangeId,
        data: Bytes,
        reply: oneshot::Sender<Result<Bytes, DriverError>>,
    },
    Read {
        group: RangeId,
        mode: ReadMode,
        reply: oneshot::Sender<Result<LogIndex, DriverError>>,
    },
    Status {
        group: RangeId,
        reply: oneshot::Sender<Result<Status, DriverError>>,
    },
    Shutdown,
}

/// A handle on the task running a node's groups. Cheap to clone.
#[derive(Clone)]
pub struct RaftDriver {
    commands: mpsc::Sender<Command>,
    clock: SystemClock,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    inbox_stats: Arc<InboxStats>,
}

impl RaftDriver {
    /// Starts the driver task for node `id` on the current tokio runtime.
    pub fn start(
        id: NodeId,
        transport: Arc<dyn RpcTransport>,
        peers: Peers,
        inbox: RaftInbox,
        config: DriverConfig,
    ) -> RaftDriver {
        // Never more per RPC than the transport sends: a quarter of its frame is left for the
        // envelope and the size estimate's slack.
        let frame_cap = u64::try_from(transport.max_frame_bytes() / 4 * 3).unwrap_or(u64::MAX);
        let config = DriverConfig {
            max_rpc_bytes: config.max_rpc_bytes.min(frame_cap),
            ..config
        };
        let (commands, command_rx) = mpsc::channel(config.commands.max(1));
        let inbox_stats = inbox.stats.clone();
        let clock = SystemClock::new();
        let state = Node {
            multi: MultiRaft::new(id),
            machines: HashMap::new(),
            proposals: HashMap::new(),
            failed: HashMap::new(),
            reads: HashMap::new(),
            waiting_reads: Vec::new(),
            next_read: 0,
            outbound: Outbound {
                transport,
                peers,
                queues: HashMap::new(),
                config: config.clone(),
            },
            clock,
        };
        let task = tokio::spawn(state.run(command_rx, inbox.rx, config.tick));
        RaftDriver {
            commands,
            clock,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
            inbox_stats,
        }
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// The clock the driver reads: create replicas with `Raft::new(…, driver.clock().now())`
    /// so their timers agree with the driver's.
    pub fn clock(&self) -> SystemClock {
        self.clock
    }

    /// Hosts a group: its replica (over a store of this node's WAL) and its state machine,
    /// which must be at the replica's applied index. Refused when the replica's messages could
    /// be larger than [`DriverConfig::max_rpc_bytes`]. A group that failed may be added again.
    pub async fn add_group(
        &self,
        raft: Raft<WalStore>,
        state_machine: Box<dyn StateMachine + Send>,
    ) -> Result<(), DriverError> {
        self.request(|reply| Command::AddGroup {
            raft: Box::new(raft),
            state_machine,
            reply,
        })
        .await?
    }

    /// Proposes a command to a group this node leads; resolves with the state machine's
    /// answer once it is committed and applied here.
    pub async fn propose(&self, group: RangeId, data: Bytes) -> Result<Bytes, DriverError> {
        self.request(|reply| Command::Propose { group, data, reply })
            .await?
    }

    /// A linearizable read barrier: resolves once this node's state machine for `group`
    /// reflects every write committed before the call, with the index it reached; read the
    /// state machine after it resolves. [`ReadMode::Safe`] confirms leadership with a
    /// heartbeat round; [`ReadMode::Lease`] skips it while the leader's lease holds (see
    /// [`ReadMode`] for the clock-drift bound it relies on). On a follower, both go through
    /// the leader.
    pub async fn read_index(
        &self,
        group: RangeId,
        mode: ReadMode,
    ) -> Result<LogIndex, DriverError> {
        self.request(|reply| Command::Read { group, mode, reply })
            .await?
    }

    /// A group's status. Fails with [`DriverError::UnknownGroup`] for a group not hosted
    /// here, [`DriverError::GroupFailed`] for one stopped by a store error, and
    /// [`DriverError::Stopped`] once the driver has stopped.
    pub async fn status(&self, group: RangeId) -> Result<Status, DriverError> {
        self.request(|reply| Command::Status { group, reply })
            .await?
    }

    /// Inbound traffic dropped so far.
    pub fn inbox_stats(&self) -> &InboxStats {
        &self.inbox_stats
    }

    /// Stops the task after the round in progress; what was persisted stays persisted.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

type ProposalReply = oneshot::Sender<Result<Bytes, DriverError>>;
type ReadReply = oneshot::Sender<Result<LogIndex, DriverError>>;

struct Node {
    multi: MultiRaft<WalStore>,
    machines: HashMap<RangeId, Box<dyn StateMachine + Send>>,
    /// Proposals waiting to be applied, per group by index.
    proposals: HashMap<RangeId, BTreeMap<LogIndex, (Term, ProposalReply)>>,
    /// Groups stopped by a log-store error, with the error.
    failed: HashMap<RangeId, String>,
    /// Reads asked, by context.
    reads: HashMap<u64, (RangeId, ReadReply)>,
    /// Reads confirmed, waiting for their group to apply through the index: (group, index,
    /// context).
    waiting_reads: Vec<(RangeId, LogIndex, u64)>,
    next_read: u64,
    outbound: Outbound,
    clock: SystemClock,
}

impl Node {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbox: mpsc::Receiver<Vec<Message>>,
        tick: Duration,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.command(command),
                },
                batch = inbox.recv() => {
                    let now = self.clock.now();
                    for m in batch.into_iter().flatten() {
                        self.multi.step(now, m);
                    }
                }
                _ = ticker.tick() => self.multi.tick(self.clock.now()),
            }
            // Take whatever else is already queued, boundedly, so one round covers it.
            for _ in 0..1024 {
                match commands.try_recv() {
                    Ok(Command::Shutdown) => return,
                    Ok(command) => self.command(command),
                    Err(_) => break,
                }
            }
            let now = self.clock.now();
            for _ in 0..1024 {
                match inbox.try_recv() {
                    Ok(batch) => batch.into_iter().for_each(|m| self.multi.step(now, m)),
                    Err(_) => break,
                }
            }
            self.round().await;
        }
        for (_, pending) in self.proposals.drain() {
            for (_, (_, reply)) in pending {
                let _ = reply.send(Err(DriverError::Stopped));
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::AddGroup {
                raft,
                state_machine,
                reply,
            } => {
                let group = raft.group();
                let (largest, max) = (
                    raft.config().max_message_bytes(),
                    self.outbound.config.max_rpc_bytes,
                );
                let result = if largest > max {
                    Err(DriverError::MessagesTooLarge { largest, max })
                } else {
                    self.multi.add_group(*raft).map_err(DriverError::from)
                };
                if result.is_ok() {
                    self.machines.insert(group, state_machine);
                    self.failed.remove(&group);
                }
                let _ = reply.send(result);
            }
            Command::Propose { group, data, reply } => {
                let Some(raft) = self.multi.group_mut(group) else {
                    let _ = reply.send(Err(self.missing(group)));
                    return;
                };
                match raft.propose(data) {
                    Ok((index, term)) => {
                        self.proposals
                            .entry(group)
                            .or_default()
                            .insert(index, (term, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Read { group, mode, reply } => {
                let Some(raft) = self.multi.group_mut(group) else {
                    let _ = reply.send(Err(self.missing(group)));
                    return;
                };
                self.next_read += 1;
                raft.read(self.next_read, mode);
                self.reads.insert(self.next_read, (group, reply));
            }
            Command::Status { group, reply } => {
                let status = self.multi.group(group).map(Raft::status);
                let _ = reply.send(status.ok_or_else(|| self.missing(group)));
            }
            Command::Shutdown => {}
        }
    }

    /// Why a group is not hosted: it failed, or it was never added.
    fn missing(&self, group: RangeId) -> DriverError {
        match self.failed.get(&group) {
            Some(error) => DriverError::GroupFailed {
                group,
                error: error.clone(),
            },
            None => DriverError::UnknownGroup(group),
        }
    }

    /// Stops a group whose log store failed and leaves the node's other groups running: its
    /// replica is dropped (so it is no longer ticked, stepped or persisted, and messages for
    /// it are dropped as for any group not hosted here), its waiting proposals are answered
    /// [`DriverError::Indeterminate`] (their entries may already be on followers, which can
    /// commit them), its waiting reads fail, and requests for it answer
    /// [`DriverError::GroupFailed`] until it is added again.
    fn fail_group(&mut self, group: RangeId, error: String) {
        tracing::error!(node = %self.multi.id(), %group, %error, "a log store failed; the group stops");
        self.multi.remove_group(group);
        self.machines.remove(&group);
        let failed = || DriverError::GroupFailed {
            group,
            error: error.clone(),
        };
        for (_, (_, reply)) in self.proposals.remove(&group).into_iter().flatten() {
            let _ = reply.send(Err(DriverError::Indeterminate));
        }
        let reads: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, (g, _))| *g == group)
            .map(|(&ctx, _)| ctx)
            .collect();
        for ctx in reads {
            if let Some((_, reply)) = self.reads.remove(&ctx) {
                let _ = reply.send(Err(failed()));
            }
        }
        self.waiting_reads.retain(|&(g, _, _)| g != group);
        self.failed.insert(group, error);
    }

    /// One round over every group's ready, with one WAL sync. A group whose writes or sync
    /// fail is failed on its own ([`Node::fail_group`]); the others carry on.
    async fn round(&mut self) {
        let mut readies = self.multi.ready();
        if readies.is_empty() {
            return;
        }
        self.outbound.send(
            readies
                .iter_mut()
                .flat_map(|(_, r)| std::mem::take(&mut r.messages)),
        );
        if readies.iter().any(|(_, r)| r.needs_persist()) {
            let groups: Vec<RangeId> = readies.iter().map(|&(group, _)| group).collect();
            // Handles on the groups' stores (every clone writes the same WAL), so the writes
            // and the sync run off the runtime while the replicas wait for `on_persisted`.
            let mut stores: Vec<WalStore> = readies
                .iter()
                .map(|(group, _)| {
                    self.multi
                        .group(*group)
                        .expect("a ready comes from a group hosted here, and none left since")
                        .store()
                        .clone()
                })
                .collect();
            let written = tokio::task::spawn_blocking(move || {
                let mut results: Vec<Result<(), StoreError>> = readies
                    .iter()
                    .zip(&mut stores)
                    .map(|((_, ready), store)| ready.write_to(store))
                    .collect();
                // The first sync covers every group of its WAL and the rest find nothing to
                // do; after a failed one the WAL refuses every further sync, so each group
                // whose writes it held fails too, as it must.
                for (((_, ready), store), result) in
                    readies.iter().zip(&mut stores).zip(&mut results)
                {
                    if result.is_ok() && ready.needs_persist() {
                        *result = store.sync();
                    }
                }
                (readies, results)
            })
            .await;
            let results = match written {
                Ok((back, results)) => {
                    readies = back;
                    results
                }
                Err(e) => {
                    // The writer panicked with the readies: whether they reached the disk is
                    // unknown, so none of these groups can go on.
                    for group in groups {
                        self.fail_group(group, format!("the log store writer panicked: {e}"));
                    }
                    return;
                }
            };
            let failures: Vec<(RangeId, String)> = readies
                .iter()
                .zip(results)
                .filter_map(|((group, _), result)| result.err().map(|e| (*group, e.to_string())))
                .collect();
            for (group, error) in failures {
                self.fail_group(group, error);
            }
        }
        for (group, mut ready) in readies {
            if self.failed.contains_key(&group) {
                // Not persisted: its acknowledgements must not go out, nor its entries apply.
                continue;
            }
            self.multi.on_persisted(group, ready.persisted);
            self.outbound
                .send(std::mem::take(&mut ready.persisted_messages));
            self.apply(group, ready);
        }
        self.serve_reads();
    }

    /// Applies a persisted ready's snapshot and committed entries and answers what they
    /// settle.
    fn apply(&mut self, group: RangeId, ready: Ready) {
        let Some(machine) = self.machines.get_mut(&group) else {
            return;
        };
        let pending = self.proposals.entry(group).or_default();
        if let Some(snapshot) = &ready.snapshot {
            machine.restore(snapshot);
            let covered: Vec<LogIndex> = pending
                .range(..=snapshot.meta.index)
                .map(|(&i, _)| i)
                .collect();
            for index in covered {
                if let Some((_, reply)) = pending.remove(&index) {
                    let _ = reply.send(Err(DriverError::Indeterminate));
                }
            }
        }
        for entry in &ready.committed {
            let answer = machine.apply(entry);
            if let Some((term, reply)) = pending.remove(&entry.index) {
                let result = if term == entry.term {
                    Ok(answer)
                } else {
                    Err(DriverError::Dropped)
                };
                let _ = reply.send(result);
            }
        }
        self.waiting_reads
            .extend(ready.read_states.iter().map(|r| (group, r.index, r.ctx)));
        for (ctx, error) in ready.failed_reads {
            if let Some((_, reply)) = self.reads.remove(&ctx) {
                let _ = reply.send(Err(error.into()));
            }
        }
        if ready.snapshot_wanted {
            let data = machine.snapshot();
            if let Some(raft) = self.multi.group_mut(group) {
                raft.snapshot_taken(data);
            }
        }
    }

    fn serve_reads(&mut self) {
        let machines = &self.machines;
        let reads = &mut self.reads;
        self.waiting_reads.retain(|&(group, index, ctx)| {
            let applied = machines.get(&group).map_or(0, |m| m.applied_index());
            if applied < index {
                return true;
            }
            if let Some((_, reply)) = reads.remove(&ctx) {
                let _ = reply.send(Ok(applied));
            }
            false
        });
    }
}

/// Per-peer send queues, each drained by one task.
struct Outbound {
    transport: Arc<dyn RpcTransport>,
    peers: Peers,
    queues: HashMap<NodeId, mpsc::Sender<Vec<Message>>>,
    config: DriverConfig,
}

impl Outbound {
    fn send(&mut self, messages: impl IntoIterator<Item = Message>) {
        let max_bytes = self.config.max_rpc_bytes;
        for (to, batch) in batch_by_node(messages) {
            let queue = self.queues.entry(to).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.config.peer_queue.max(1));
                tokio::spawn(peer_sender(
                    to,
                    rx,
                    self.transport.clone(),
                    self.peers.clone(),
                    self.config.send_timeout,
                    max_bytes,
                ));
                tx
            });
            for rpc in split_batch(batch, max_bytes) {
                if queue.try_send(rpc).is_err() {
                    tracing::debug!(peer = %to, "the peer's send queue is full; dropped Raft messages");
                }
            }
        }
    }
}

/// The approximate encoded size of `messages` (see [`crate::MessageBody::approx_size`]).
fn batch_bytes(messages: &[Message]) -> u64 {
    messages.iter().map(|m| m.body.approx_size()).sum()
}

/// Splits one peer's messages, in order, into batches of at most `max_bytes` each: one
/// round's appends to a follower may add up to more than a transport frame holds, and an RPC
/// over it is refused whole, every time it is retried. A single message over `max_bytes`
/// cannot be sent at all; it is dropped with an error (`RaftDriver::add_group` refuses
/// groups whose configuration allows one, so only a snapshot chunk of a group of thousands
/// of members, or a bug, gets here).
fn split_batch(messages: Vec<Message>, max_bytes: u64) -> Vec<Vec<Message>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    for m in messages {
        let size = m.body.approx_size();
        if size > max_bytes {
            tracing::error!(group = %m.group, peer = %m.to, kind = m.body.name(), size, max_bytes, "a Raft message is larger than one RPC may be; dropped");
            continue;
        }
        if !batch.is_empty() && bytes + size > max_bytes {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(m);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// Sends queued batches to one peer, one RPC at a time, merging what queued meanwhile while
/// the RPC stays within `max_bytes` (each queued batch already does, see [`split_batch`]).
async fn peer_sender(
    to: NodeId,
    mut rx: mpsc::Receiver<Vec<Message>>,
    transport: Arc<dyn RpcTransport>,
    peers: Peers,
    timeout: Duration,
    max_bytes: u64,
) {
    // A queued batch taken while merging that did not fit: it starts the next RPC.
    let mut next: Option<Vec<Message>> = None;
    loop {
        let mut batch = match next.take() {
            Some(batch) => batch,
            None => match rx.recv().await {
                Some(batch) => batch,
                None => return,
            },
        };
        let mut bytes = batch_bytes(&batch);
        while let Ok(more) = rx.try_recv() {
            let more_bytes = batch_bytes(&more);
            if bytes + more_bytes > max_bytes {
                next = Some(more);
                break;
            }
            bytes += more_bytes;
            batch.extend(more);
        }
        let addr = peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&to)
            .copied();
        let Some(addr) = addr else {
            tracing::debug!(peer = %to, "no address for the peer; dropped Raft messages");
            continue;
        };
        if let Err(e) = transport.call::<RaftBatch>(addr, &batch, timeout).await {
            tracing::debug!(peer = %to, error = %e, "sending Raft messages failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, EntryPayload};
    use crate::message::MessageBody;

    /// An append to n2 carrying one command of `len` bytes.
    fn append(len: usize) -> Message {
        Message {
            group: RangeId::new(1),
            from: NodeId::new(1),
            to: NodeId::new(2),
            term: 1,
            config_index: 1,
            body: MessageBody::Append {
                prev_index: 1,
                prev_term: 1,
                entries: vec![Entry {
                    index: 2,
                    term: 1,
                    payload: EntryPayload::Command(vec![0; len].into()),
                }],
                commit: 1,
                sent_at: 0,
            },
        }
    }

    #[test]
    fn a_large_round_is_split_in_order_and_no_batch_passes_the_limit() {
        const MIB: usize = 1 << 20;
        // 32 MiB of 1 MiB appends, as a follower may be sent in one round.
        let messages: Vec<Message> = (0..32).map(|_| append(MIB)).collect();
        let max = 12 << 20;
        let batches = split_batch(messages.clone(), max);
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| batch_bytes(b) <= max));
        assert_eq!(batches.concat(), messages, "nothing lost or reordered");
        // Small rounds stay one batch; a message over the limit on its own is dropped.
        assert_eq!(split_batch(vec![append(10), append(10)], max).len(), 1);
        let split = split_batch(vec![append(10), append(13 << 20), append(10)], max);
        assert_eq!(split, vec![vec![append(10), append(10)]]);
        assert!(split_batch(Vec::new(), max).is_empty());
    }

    #[test]
    fn the_default_rpc_limit_carries_the_default_groups_largest_message() {
        let config = DriverConfig::default();
        assert!(crate::RaftConfig::default().max_message_bytes() <= config.max_rpc_bytes);
        // With a quarter of the transport's default 16 MiB frame to spare.
        assert!(config.max_rpc_bytes <= 12 << 20);
    }
}

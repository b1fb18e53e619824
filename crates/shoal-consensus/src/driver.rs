//! A tokio driver for every Raft group of one node, over shoal-transport.
//!
//! One task owns a [`MultiRaft`] whose groups keep their logs in one [`crate::Wal`]. Each round it takes every group's ready,
//! sends what may go at once, writes all of it to the WAL and syncs **once** (on the
//! blocking pool, so the runtime never waits on the disk), reports each group persisted,
//! sends what had to wait for the disk, applies committed entries to the groups' state
//! machines, and answers proposals and reads. All groups share one tick.
//!
//! Between nodes, a round's messages go as one [`RaftBatch`] RPC per peer. Each peer has a
//! bounded queue and one sender task; when the queue is full, messages are dropped (Raft
//! retransmits). Inbound batches are checked against the transport's authenticated source:
//! a message claiming another sender is dropped and counted.
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
    /// How often every group is ticked. Default 10 ms (well under the default 150 ms
    /// heartbeat).
    pub tick: Duration,
    /// How long a batch RPC to a peer may take. Default 2 s.
    pub send_timeout: Duration,
    /// Batches queued per peer before new ones are dropped. Default 256.
    pub peer_queue: usize,
    /// Inbound batches queued before new ones are dropped. Default 1024.
    pub inbox: usize,
    /// Commands (proposals, reads, …) queued before callers wait. Default 4096.
    pub commands: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            tick: Duration::from_millis(10),
            send_timeout: Duration::from_secs(2),
            peer_queue: 256,
            inbox: 1024,
            commands: 4096,
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
    /// The outcome cannot be known here any more (a snapshot replaced the log meanwhile):
    /// the proposal may or may not have taken effect.
    #[error("the proposal's outcome is unknown (the log was replaced by a snapshot)")]
    Indeterminate,
    /// The WAL failed; the node stopped.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// Messages whose `from` was not the authenticated sender.
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
        reply: oneshot::Sender<Option<Status>>,
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
        let (commands, command_rx) = mpsc::channel(config.commands.max(1));
        let inbox_stats = inbox.stats.clone();
        let clock = SystemClock::new();
        let state = Node {
            multi: MultiRaft::new(id),
            machines: HashMap::new(),
            proposals: HashMap::new(),
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
    /// which must be at the replica's applied index.
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

    /// A group's status.
    pub async fn status(&self, group: RangeId) -> Option<Status> {
        self.request(|reply| Command::Status { group, reply })
            .await
            .ok()
            .flatten()
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
            if let Err(e) = self.round().await {
                tracing::error!(node = %self.multi.id(), error = %e, "the WAL failed; the Raft driver stops");
                break;
            }
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
                let result = self.multi.add_group(*raft).map_err(DriverError::from);
                if result.is_ok() {
                    self.machines.insert(group, state_machine);
                }
                let _ = reply.send(result);
            }
            Command::Propose { group, data, reply } => {
                let Some(raft) = self.multi.group_mut(group) else {
                    let _ = reply.send(Err(DriverError::UnknownGroup(group)));
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
                    let _ = reply.send(Err(DriverError::UnknownGroup(group)));
                    return;
                };
                self.next_read += 1;
                raft.read(self.next_read, mode);
                self.reads.insert(self.next_read, (group, reply));
            }
            Command::Status { group, reply } => {
                let _ = reply.send(self.multi.group(group).map(Raft::status));
            }
            Command::Shutdown => {}
        }
    }

    /// One round over every group's ready, with one WAL sync.
    async fn round(&mut self) -> Result<(), StoreError> {
        let mut readies = self.multi.ready();
        if readies.is_empty() {
            return Ok(());
        }
        self.outbound.send(
            readies
                .iter_mut()
                .flat_map(|(_, r)| std::mem::take(&mut r.messages)),
        );
        if readies.iter().any(|(_, r)| r.needs_persist()) {
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
            readies = tokio::task::spawn_blocking(move || {
                for ((_, ready), store) in readies.iter().zip(&mut stores) {
                    ready.write_to(store)?;
                }
                // The first sync covers every group of its WAL; the rest find nothing to do.
                for store in &mut stores {
                    store.sync()?;
                }
                Ok::<_, StoreError>(readies)
            })
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))??;
        }
        for (group, mut ready) in readies {
            self.multi.on_persisted(group, ready.persisted);
            self.outbound
                .send(std::mem::take(&mut ready.persisted_messages));
            self.apply(group, ready);
        }
        self.serve_reads();
        Ok(())
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
        for (to, batch) in batch_by_node(messages) {
            let queue = self.queues.entry(to).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.config.peer_queue.max(1));
                tokio::spawn(peer_sender(
                    to,
                    rx,
                    self.transport.clone(),
                    self.peers.clone(),
                    self.config.send_timeout,
                ));
                tx
            });
            if queue.try_send(batch).is_err() {
                tracing::debug!(peer = %to, "the peer's send queue is full; dropped Raft messages");
            }
        }
    }
}

/// Queued batches are merged into one RPC up to about this many bytes (the transport's
/// frames are capped at 16 MiB by default; a single round's batch may be larger and is sent
/// as it is).
const MERGED_BATCH_BYTES: u64 = 4 << 20;

/// Sends queued batches to one peer, one RPC at a time, merging what queued meanwhile.
async fn peer_sender(
    to: NodeId,
    mut rx: mpsc::Receiver<Vec<Message>>,
    transport: Arc<dyn RpcTransport>,
    peers: Peers,
    timeout: Duration,
) {
    while let Some(mut batch) = rx.recv().await {
        // Merge what queued meanwhile, staying well under the transport's frame limit.
        let mut bytes: u64 = batch.iter().map(|m| m.body.approx_size()).sum();
        while bytes < MERGED_BATCH_BYTES {
            let Ok(more) = rx.try_recv() else { break };
            bytes += more.iter().map(|m| m.body.approx_size()).sum::<u64>();
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

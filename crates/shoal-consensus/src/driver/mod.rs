//! A tokio driver for every Raft group of one node, over shoal-transport.
//!
//! One task owns the node's [`RaftHost`], whose groups keep their logs in one [`crate::Wal`].
//! Commands (proposals, reads, membership changes, …) and inbound messages are handed to the
//! host on that task; each round of the host (persisting every group's ready with one WAL
//! sync, applying committed entries to the state machines, serving reads) runs on the
//! blocking pool, so neither fjall commits nor disk syncs ever hold a runtime thread. All
//! groups share one tick.
//!
//! Between nodes, a round's messages go as [`RaftBatch`] RPCs per peer, each at most
//! [`DriverConfig::max_rpc_bytes`] (a round's appends to one follower may total
//! `max_inflight_bytes`, 32 MiB by default, more than the transport's frames take, so they are
//! split). Each peer has a bounded queue and one sender task; when the queue is full, messages
//! are dropped (Raft retransmits). Inbound batches are checked against the source the
//! transport reports (the node its connection's handshake announced; not authenticated until
//! the transport has mutual TLS): a message claiming another sender is dropped and counted.
//!
//! Snapshots go beside Raft traffic (see [`crate::snapshot`]): a leader streams the state
//! machine's [`crate::SnapshotSource`] to the follower as [`SnapshotChunk`] RPCs, one chunk in
//! flight at a time, so a transfer holds a chunk or two in memory at either end; the follower
//! writes each chunk into its state machine's sink on the blocking pool and, once the data is
//! whole, hands it to its host with the snapshot's Raft message.
//!
//! A message for a group not hosted here is kept a moment (bounded) and stepped if the group
//! is added soon after: the right half of a split starts on each replica as it applies the
//! split, and its first election should not wait a whole timeout for the slowest replica.
//!
//! A log-store or state-machine error fails only the group it happened in: that group stops
//! (it is no longer ticked or stepped, and its proposals, reads and status answer
//! [`HostError::GroupFailed`]) while the node's other groups go on.
//!
//! ```no_run
//! # async fn example<M: shoal_consensus::StateMachine + Send + 'static>() {
//! use shoal_consensus::driver::{DriverConfig, Peers, RaftDriver, RaftInbox};
//! use shoal_transport::{Router, RpcClient, RpcServer, TransportConfig};
//! use std::sync::Arc;
//!
//! let id = shoal_core::NodeId::new(1);
//! let config = DriverConfig::default();
//! let inbox = RaftInbox::new(&config);
//! let mut router = Router::new();
//! inbox.register(&mut router).unwrap(); // before the server is built with it
//! let server = RpcServer::bind("127.0.0.1:0".parse().unwrap(), id, router, TransportConfig::local())
//!     .await
//!     .unwrap();
//! let client = RpcClient::new(id, Some(server.local_addr()), TransportConfig::local()).unwrap();
//! let peers = Peers::default(); // node id -> address, kept up to date by membership
//! let driver: RaftDriver<M> = RaftDriver::start(id, Arc::new(client), peers, inbox, config);
//! // Then host groups with `driver.add_group(raft, state_machine)`, each `Raft` over a
//! // `WalStore` of the node's one `Wal`.
//! # }
//! ```

use crate::entry::LogIndex;
use crate::host::{HostError, HostEvent, RaftHost, Wait};
use crate::membership::ConfChange;
use crate::message::Message;
use crate::multi::AddGroupError;
use crate::raft::{Raft, ReadMode, Status};
use crate::ready::LeaderInfo;
use crate::snapshot::{SnapshotMeta, StateMachine};
use crate::store::LogStoreError;
use crate::wal::WalStore;
use bytes::Bytes;
use shoal_core::{Clock, GroupId, NodeId, SystemClock};
use shoal_transport::{RegisterError, Router, Rpc, RpcTransport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

mod early;
mod outbound;
mod transfer;

use early::EarlyMessages;
use outbound::Outbound;
use transfer::{receive_snapshots, send_snapshot};
pub use transfer::{ChunkAnswer, ChunkRequest, SnapshotChunk};

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
    /// How long a batch RPC or a snapshot chunk to a peer may take. Default 2 s.
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
    /// refused by [`RaftDriver::add_group`]; a snapshot chunk larger than it fails its
    /// transfer. Default 12 MiB.
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
    /// The host refused the request, or settled it without applying it: not the leader,
    /// too large, overloaded, a group not hosted here or stopped by a failure, a proposal
    /// dropped from the log or of unknown outcome (see [`HostError`]).
    #[error(transparent)]
    Host(#[from] HostError),
    /// The group could not be added.
    #[error(transparent)]
    AddGroup(#[from] AddGroupError),
    /// The request's deadline passed before it was settled. A proposal may still take
    /// effect: its outcome is unknown, as for [`HostError::Indeterminate`].
    #[error("the deadline passed before the request was settled")]
    TimedOut,
    /// A log store error.
    #[error(transparent)]
    Store(#[from] LogStoreError),
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

/// A snapshot chunk that arrived, with where its answer goes.
struct InboundChunk {
    source: NodeId,
    request: ChunkRequest,
    reply: oneshot::Sender<ChunkAnswer>,
}

/// Messages and snapshot chunks that arrived, and the handlers that receive them; register
/// it on the node's [`Router`] before building the server or endpoint, then hand it to
/// [`RaftDriver::start`].
pub struct RaftInbox {
    admission: Option<Admission>,
    tx: mpsc::Sender<Vec<Message>>,
    rx: mpsc::Receiver<Vec<Message>>,
    chunks_tx: mpsc::Sender<InboundChunk>,
    chunks_rx: mpsc::Receiver<InboundChunk>,
    stats: Arc<InboxStats>,
}

/// Whether traffic from a node is taken at all (see [`RaftInbox::admit`]).
pub type Admission = Arc<dyn Fn(NodeId) -> bool + Send + Sync>;

/// Inbound traffic the driver dropped.
#[derive(Debug, Default)]
pub struct InboxStats {
    /// Raft messages taken in (each message of a batch counts).
    pub received: AtomicU64,
    /// Batches dropped because the inbox was full.
    pub full: AtomicU64,
    /// Messages (and snapshot chunks) whose `from` was not the sender the transport reported.
    pub spoofed: AtomicU64,
    /// Snapshot chunks refused (out of order, damaged, of no transfer under way).
    pub refused_chunks: AtomicU64,
    /// Batches and chunks from a node the admission check refused (see
    /// [`RaftInbox::admit`]).
    pub refused: AtomicU64,
}

impl RaftInbox {
    /// An empty inbox sized by `config.inbox`.
    pub fn new(config: &DriverConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.inbox.max(1));
        let (chunks_tx, chunks_rx) = mpsc::channel(64);
        RaftInbox {
            admission: None,
            tx,
            rx,
            chunks_tx,
            chunks_rx,
            stats: Arc::default(),
        }
    }

    /// Takes Raft traffic (messages and snapshot chunks) only from nodes `admit` accepts;
    /// the rest is refused and counted in [`InboxStats::refused`]. A store refuses a node
    /// whose data is not the replica's any more (it came back with an empty disk), whose
    /// votes and acknowledgements would otherwise count. Set before [`RaftInbox::register`].
    pub fn admit(&mut self, admit: Admission) {
        self.admission = Some(admit);
    }

    /// Registers the [`RaftBatch`] and [`SnapshotChunk`] handlers.
    pub fn register(&self, router: &mut Router) -> Result<(), RegisterError> {
        let tx = self.tx.clone();
        let stats = self.stats.clone();
        let admission = self.admission.clone();
        let refused = |admission: &Option<Admission>, source: NodeId, stats: &InboxStats| {
            let refused = admission.as_ref().is_some_and(|admit| !admit(source));
            if refused {
                stats.refused.fetch_add(1, Ordering::Relaxed);
            }
            refused
        };
        router.register::<RaftBatch, _, _>(move |ctx, mut batch| {
            let tx = tx.clone();
            let stats = stats.clone();
            let admission = admission.clone();
            async move {
                if refused(&admission, ctx.source, &stats) {
                    return Err(shoal_core::Error::new(
                        shoal_core::ErrorCode::InvalidRequest,
                        format!("{} is not admitted: its store is not the one bound to it", ctx.source),
                    ));
                }
                let before = batch.len();
                batch.retain(|m| m.from == ctx.source);
                let spoofed = (before - batch.len()) as u64;
                if spoofed > 0 {
                    stats.spoofed.fetch_add(spoofed, Ordering::Relaxed);
                    tracing::warn!(source = %ctx.source, spoofed, "dropped Raft messages claiming another sender");
                }
                let count = batch.len() as u64;
                if !batch.is_empty() {
                    if tx.try_send(batch).is_err() {
                        stats.full.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.received.fetch_add(count, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
        })?;
        let chunks = self.chunks_tx.clone();
        let stats = self.stats.clone();
        let admission = self.admission.clone();
        router.register::<SnapshotChunk, _, _>(move |ctx, request| {
            let chunks = chunks.clone();
            let stats = stats.clone();
            let admission = admission.clone();
            async move {
                if refused(&admission, ctx.source, &stats) {
                    return Ok(ChunkAnswer::Refused("the sender is not admitted".into()));
                }
                if request.message.from != ctx.source {
                    stats.spoofed.fetch_add(1, Ordering::Relaxed);
                    return Ok(ChunkAnswer::Refused("sender mismatch".into()));
                }
                let (reply, answer) = oneshot::channel();
                let chunk = InboundChunk {
                    source: ctx.source,
                    request,
                    reply,
                };
                if chunks.send(chunk).await.is_err() {
                    return Ok(ChunkAnswer::Refused("the Raft driver has stopped".into()));
                }
                let answer = answer
                    .await
                    .unwrap_or_else(|_| ChunkAnswer::Refused("the Raft driver has stopped".into()));
                if matches!(answer, ChunkAnswer::Refused(_)) {
                    stats.refused_chunks.fetch_add(1, Ordering::Relaxed);
                }
                Ok(answer)
            }
        })?;
        Ok(())
    }
}

/// A group's leader changed, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// The group.
    pub group: GroupId,
    /// Its leader and term now (no leader: an election is under way, or the group stopped
    /// or left this node).
    pub leader: LeaderInfo,
}

/// Messages arrived for a group this node does not host: the application may host it (a
/// replica named in a membership change, or the right half of a split applied elsewhere
/// first). Sent at most once a second per group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownGroup {
    /// The group.
    pub group: GroupId,
    /// Who sent the latest message.
    pub from: NodeId,
}

/// The leader of every hosted group, as last seen: read without going through the driver's
/// queue.
type Leaders = Arc<RwLock<HashMap<GroupId, LeaderInfo>>>;

type Reply<T> = oneshot::Sender<Result<T, DriverError>>;

enum Command<M: StateMachine> {
    AddGroup {
        raft: Box<Raft<WalStore>>,
        machine: M,
        reply: Reply<()>,
    },
    RemoveGroup {
        group: GroupId,
        reply: Reply<(Raft<WalStore>, M)>,
    },
    Propose {
        group: GroupId,
        data: Bytes,
        wait: Wait,
        reply: Reply<M::Response>,
    },
    ConfChange {
        group: GroupId,
        change: ConfChange,
        reply: Reply<M::Response>,
    },
    TransferLeader {
        group: GroupId,
        target: NodeId,
        reply: Reply<()>,
    },
    Campaign {
        group: GroupId,
        reply: Reply<()>,
    },
    CompactLogs {
        groups: Vec<GroupId>,
        reply: Reply<usize>,
    },
    PeerDown {
        node: NodeId,
    },
    QuietGroups {
        reply: Reply<usize>,
    },
    Read {
        group: GroupId,
        mode: ReadMode,
        reply: Reply<LogIndex>,
    },
    Status {
        group: GroupId,
        reply: Reply<Status>,
    },
    ReceiveSnapshot {
        group: GroupId,
        meta: SnapshotMeta,
        reply: Reply<M::Sink>,
    },
    SnapshotReceived {
        message: Message,
        staged: M::Staged,
    },
    ReportSnapshot {
        group: GroupId,
        peer: NodeId,
        result: Result<LogIndex, ()>,
    },
    Shutdown,
}

/// A handle on the task running a node's groups. Cheap to clone.
pub struct RaftDriver<M: StateMachine> {
    commands: mpsc::Sender<Command<M>>,
    clock: SystemClock,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    inbox_stats: Arc<InboxStats>,
    leaders: Leaders,
    leader_changes: broadcast::Sender<LeaderChange>,
    unknown_groups: broadcast::Sender<UnknownGroup>,
}

impl<M: StateMachine> Clone for RaftDriver<M> {
    fn clone(&self) -> Self {
        RaftDriver {
            commands: self.commands.clone(),
            clock: self.clock,
            task: self.task.clone(),
            inbox_stats: self.inbox_stats.clone(),
            leaders: self.leaders.clone(),
            leader_changes: self.leader_changes.clone(),
            unknown_groups: self.unknown_groups.clone(),
        }
    }
}

impl<M> RaftDriver<M>
where
    M: StateMachine + Send + 'static,
{
    /// Starts the driver task for node `id` on the current tokio runtime.
    pub fn start(
        id: NodeId,
        transport: Arc<dyn RpcTransport>,
        peers: Peers,
        inbox: RaftInbox,
        config: DriverConfig,
    ) -> RaftDriver<M> {
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
        let leaders = Leaders::default();
        let (leader_changes, _) = broadcast::channel(1024);
        let (unknown_groups, _) = broadcast::channel(256);
        let node = Node {
            host: Some(RaftHost::new(id)),
            outbound: Some(Outbound {
                transport: transport.clone(),
                peers: peers.clone(),
                queues: HashMap::new(),
                config: config.clone(),
                runtime: tokio::runtime::Handle::current(),
            }),
            proposals: HashMap::new(),
            reads: HashMap::new(),
            early: EarlyMessages::default(),
            next_token: 0,
            clock,
            leaders: leaders.clone(),
            leader_changes: leader_changes.clone(),
            unknown_groups: unknown_groups.clone(),
            unknown_told: HashMap::new(),
            commands: commands.clone(),
            transport,
            peers,
            config: config.clone(),
        };
        tokio::spawn(receive_snapshots::<M>(inbox.chunks_rx, commands.clone()));
        let task = tokio::spawn(node.run(command_rx, inbox.rx));
        RaftDriver {
            commands,
            clock,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
            inbox_stats,
            leaders,
            leader_changes,
            unknown_groups,
        }
    }

    /// Hands a command to the driver and waits for its answer; a driver that stopped
    /// before taking it, or without answering, is [`DriverError::Stopped`].
    async fn request<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command<M>,
    ) -> Result<T, DriverError> {
        self.request_or(make, DriverError::Stopped).await
    }

    /// [`RaftDriver::request`] for a change (a proposal): once the command was handed to the
    /// driver, an answer that never comes (the driver stopped, or panicked, with it in
    /// hand) is [`HostError::Indeterminate`], never [`DriverError::Stopped`], since the
    /// entry may have been appended and may yet commit: a caller that retried on "stopped"
    /// could apply it twice.
    async fn request_change<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command<M>,
    ) -> Result<T, DriverError> {
        self.request_or(make, DriverError::Host(HostError::Indeterminate))
            .await
    }

    /// Hands a command over; `unanswered` if the driver takes it but never answers.
    async fn request_or<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command<M>,
        unanswered: DriverError,
    ) -> Result<T, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| unanswered)?
    }

    /// The clock the driver reads: create replicas with `Raft::new(…, driver.clock().now())`
    /// so their timers agree with the driver's.
    pub fn clock(&self) -> SystemClock {
        self.clock
    }

    /// Hosts a group: its replica (over a store of this node's WAL) and its state machine,
    /// which must be at the replica's applied index or ahead of it. Refused when the
    /// replica's messages could be larger than [`DriverConfig::max_rpc_bytes`]. A group that
    /// failed may be added again.
    pub async fn add_group(&self, raft: Raft<WalStore>, machine: M) -> Result<(), DriverError> {
        self.request(|reply| Command::AddGroup {
            raft: Box::new(raft),
            machine,
            reply,
        })
        .await
    }

    /// Stops hosting a group and hands back its replica and state machine (remove its log
    /// from the WAL and its data from the state machine's store as needed). Its waiting
    /// proposals end [`HostError::Indeterminate`].
    pub async fn remove_group(&self, group: GroupId) -> Result<(Raft<WalStore>, M), DriverError> {
        self.request(|reply| Command::RemoveGroup { group, reply })
            .await
    }

    /// Proposes a command to a group this node leads; resolves with the state machine's
    /// answer once it is committed and applied here.
    pub async fn propose(&self, group: GroupId, data: Bytes) -> Result<M::Response, DriverError> {
        self.propose_with(group, data, Wait::Applied).await
    }

    /// [`RaftDriver::propose`], answered as `wait` says: [`Wait::Persisted`] resolves (with
    /// the default answer) once the leader's own log holds the entry durably.
    pub async fn propose_with(
        &self,
        group: GroupId,
        data: Bytes,
        wait: Wait,
    ) -> Result<M::Response, DriverError> {
        self.request_change(|reply| Command::Propose {
            group,
            data,
            wait,
            reply,
        })
        .await
    }

    /// [`RaftDriver::propose_with`] with a deadline: past `timeout`, [`DriverError::TimedOut`]
    /// (the proposal may still take effect).
    pub async fn propose_within(
        &self,
        group: GroupId,
        data: Bytes,
        wait: Wait,
        timeout: Duration,
    ) -> Result<M::Response, DriverError> {
        tokio::time::timeout(timeout, self.propose_with(group, data, wait))
            .await
            .unwrap_or(Err(DriverError::TimedOut))
    }

    /// Proposes a membership change (add a learner, promote, remove, …) to a group this
    /// node leads; resolves once it is committed and applied here.
    pub async fn propose_conf_change(
        &self,
        group: GroupId,
        change: ConfChange,
    ) -> Result<(), DriverError> {
        self.request_change(|reply| Command::ConfChange {
            group,
            change,
            reply,
        })
        .await
        .map(|_| ())
    }

    /// Hands a group's leadership to `target`, a voter that has caught up (see
    /// [`Raft::transfer_leader`]). Resolves once the hand-over has started; watch
    /// [`RaftDriver::leader`] or [`RaftDriver::subscribe_leaders`] for its end.
    pub async fn transfer_leader(&self, group: GroupId, target: NodeId) -> Result<(), DriverError> {
        self.request(|reply| Command::TransferLeader {
            group,
            target,
            reply,
        })
        .await
    }

    /// Makes this node's replica of a group campaign now (to elect a leader at once after
    /// bootstrapping, say).
    pub async fn campaign(&self, group: GroupId) -> Result<(), DriverError> {
        self.request(|reply| Command::Campaign { group, reply })
            .await
    }

    /// Asks each of `groups` to compact its log as far as it may (see
    /// [`crate::Raft::request_compaction`]): what a store does for the groups whose entries
    /// keep old WAL segments on disk ([`crate::Wal::groups_in_old_segments`]). Resolves
    /// with how many had anything to compact; the compactions happen in the next rounds.
    pub async fn compact_logs(&self, groups: Vec<GroupId>) -> Result<usize, DriverError> {
        self.request(|reply| Command::CompactLogs { groups, reply })
            .await
    }

    /// Tells the groups that `node` is down (membership declared it suspect, dead or
    /// gone): quiet groups it led wake and elect another leader
    /// ([`crate::Raft::peer_down`]). Required with [`crate::RaftConfig::quiesce`].
    pub async fn peer_down(&self, node: NodeId) -> Result<(), DriverError> {
        self.commands
            .send(Command::PeerDown { node })
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// How many of this node's groups are quiesced.
    pub async fn quiet_groups(&self) -> Result<usize, DriverError> {
        self.request(|reply| Command::QuietGroups { reply }).await
    }

    /// A linearizable read barrier: resolves once this node's state machine for `group`
    /// reflects every write committed before the call, with the read's index (the state
    /// machine has applied at least through it); read the state machine after it resolves.
    /// [`ReadMode::Safe`] confirms leadership with a heartbeat round; [`ReadMode::Lease`]
    /// skips it while the leader's lease holds (see [`ReadMode`] for the clock-drift bound it
    /// relies on). On a follower, both go through the leader.
    pub async fn read_index(
        &self,
        group: GroupId,
        mode: ReadMode,
    ) -> Result<LogIndex, DriverError> {
        self.request(|reply| Command::Read { group, mode, reply })
            .await
    }

    /// [`RaftDriver::read_index`] with a deadline: past `timeout`, [`DriverError::TimedOut`].
    pub async fn read_index_within(
        &self,
        group: GroupId,
        mode: ReadMode,
        timeout: Duration,
    ) -> Result<LogIndex, DriverError> {
        tokio::time::timeout(timeout, self.read_index(group, mode))
            .await
            .unwrap_or(Err(DriverError::TimedOut))
    }

    /// A group's status. Fails with [`HostError::UnknownGroup`] for a group not hosted
    /// here, [`HostError::GroupFailed`] for one stopped by a failure, and
    /// [`DriverError::Stopped`] once the driver has stopped.
    pub async fn status(&self, group: GroupId) -> Result<Status, DriverError> {
        self.request(|reply| Command::Status { group, reply }).await
    }

    /// The leader of a hosted group as this node last saw it, without a round trip through
    /// the driver's queue. `None` for a group not hosted here (or not heard of yet).
    pub fn leader(&self, group: GroupId) -> Option<LeaderInfo> {
        self.leaders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .copied()
    }

    /// Every change of leader of every hosted group from now on. A receiver that falls more
    /// than 1024 changes behind misses the oldest ([`broadcast::error::RecvError::Lagged`]);
    /// [`RaftDriver::leader`] has the latest.
    pub fn subscribe_leaders(&self) -> broadcast::Receiver<LeaderChange> {
        self.leader_changes.subscribe()
    }

    /// Groups messages arrive for that this node does not host (see [`UnknownGroup`]); the
    /// messages are kept a moment, and stepped if the group is added soon.
    pub fn subscribe_unknown_groups(&self) -> broadcast::Receiver<UnknownGroup> {
        self.unknown_groups.subscribe()
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

/// The task's state: the host (away on the blocking pool during a round) and what waits on
/// it.
struct Node<M: StateMachine> {
    host: Option<RaftHost<WalStore, M>>,
    outbound: Option<Outbound>,
    proposals: HashMap<u64, Reply<M::Response>>,
    reads: HashMap<u64, Reply<LogIndex>>,
    /// Messages for groups not hosted yet (see [`EarlyMessages`]).
    early: EarlyMessages,
    next_token: u64,
    clock: SystemClock,
    leaders: Leaders,
    leader_changes: broadcast::Sender<LeaderChange>,
    unknown_groups: broadcast::Sender<UnknownGroup>,
    /// When each unknown group was last told of.
    unknown_told: HashMap<GroupId, shoal_core::Instant>,
    /// For snapshot senders to report back.
    commands: mpsc::Sender<Command<M>>,
    transport: Arc<dyn RpcTransport>,
    peers: Peers,
    config: DriverConfig,
}

impl<M> Node<M>
where
    M: StateMachine + Send + 'static,
{
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command<M>>,
        mut inbox: mpsc::Receiver<Vec<Message>>,
    ) {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        'run: loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.command(command).await,
                },
                batch = inbox.recv() => self.step(batch.into_iter().flatten()),
                _ = ticker.tick() => {
                    let now = self.clock.now();
                    self.host().tick(now);
                    self.early.expire(now);
                }
            }
            // Take whatever else is already queued, boundedly, so one round covers it.
            for _ in 0..1024 {
                match commands.try_recv() {
                    Ok(Command::Shutdown) => break 'run,
                    Ok(command) => self.command(command).await,
                    Err(_) => break,
                }
            }
            for _ in 0..1024 {
                match inbox.try_recv() {
                    Ok(batch) => self.step(batch),
                    Err(_) => break,
                }
            }
            if self.host.is_none() {
                break;
            }
            if self.host().has_ready() && !self.round().await {
                break;
            }
        }
        // Accepted proposals may already be on followers, which can commit them: their
        // outcome is unknown, not a failure.
        for (_, reply) in self.proposals.drain() {
            let _ = reply.send(Err(HostError::Indeterminate.into()));
        }
        for (_, reply) in self.reads.drain() {
            let _ = reply.send(Err(DriverError::Stopped));
        }
    }

    fn host(&mut self) -> &mut RaftHost<WalStore, M> {
        self.host
            .as_mut()
            .expect("the host is away only during a round, which the task awaits")
    }

    fn step(&mut self, messages: impl IntoIterator<Item = Message>) {
        let now = self.clock.now();
        let host = self
            .host
            .as_mut()
            .expect("the host is away only during a round");
        for m in messages {
            if let Some(m) = host.step(now, m) {
                tracing::debug!(group = %m.group, from = %m.from, "kept a message for a group not hosted here");
                let told = self.unknown_told.get(&m.group).copied();
                if told.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1))
                {
                    if self.unknown_told.len() > 4096 {
                        self.unknown_told.clear();
                    }
                    self.unknown_told.insert(m.group, now);
                    let _ = self.unknown_groups.send(UnknownGroup {
                        group: m.group,
                        from: m.from,
                    });
                }
                self.early.keep(now, m);
            }
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    async fn command(&mut self, command: Command<M>) {
        match command {
            Command::AddGroup {
                raft,
                machine,
                reply,
            } => {
                let (largest, max) = (raft.config().max_message_bytes(), self.config.max_rpc_bytes);
                let group = raft.group();
                let result = if largest > max {
                    Err(DriverError::MessagesTooLarge { largest, max })
                } else {
                    self.host()
                        .add_group(*raft, machine)
                        .map_err(DriverError::from)
                };
                if result.is_ok() {
                    let early = self.early.take(group, self.clock.now());
                    self.step(early);
                }
                let _ = reply.send(result);
            }
            Command::RemoveGroup { group, reply } => {
                // Discarding a staged snapshot may write: off the runtime, like a round.
                let result = self
                    .blocking(move |host| host.remove_group(group))
                    .await
                    .flatten()
                    .ok_or(HostError::UnknownGroup(group).into());
                self.set_leader(group, LeaderInfo { id: None, term: 0 });
                let _ = reply.send(result);
            }
            Command::Propose {
                group,
                data,
                wait,
                reply,
            } => {
                let token = self.token();
                match self.host().propose_with(group, data, token, wait) {
                    Ok(_) => {
                        self.proposals.insert(token, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::ConfChange {
                group,
                change,
                reply,
            } => {
                let token = self.token();
                match self.host().propose_conf_change(group, change, token) {
                    Ok(_) => {
                        self.proposals.insert(token, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::TransferLeader {
                group,
                target,
                reply,
            } => {
                let _ = reply.send(
                    self.host()
                        .transfer_leader(group, target)
                        .map_err(Into::into),
                );
            }
            Command::Campaign { group, reply } => {
                let _ = reply.send(self.host().campaign(group).map_err(Into::into));
            }
            Command::CompactLogs { groups, reply } => {
                let _ = reply.send(Ok(self.host().request_compaction(&groups)));
            }
            Command::PeerDown { node } => self.host().peer_down(node),
            Command::QuietGroups { reply } => {
                let _ = reply.send(Ok(self.host().quiet_groups()));
            }
            Command::Read { group, mode, reply } => {
                let token = self.token();
                match self.host().read(group, mode, token) {
                    Ok(()) => {
                        self.reads.insert(token, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Status { group, reply } => {
                let _ = reply.send(self.host().status(group).map_err(Into::into));
            }
            Command::ReceiveSnapshot { group, meta, reply } => {
                let _ = reply.send(
                    self.host()
                        .receive_snapshot(group, &meta)
                        .map_err(Into::into),
                );
            }
            Command::SnapshotReceived { message, staged } => {
                self.host().snapshot_received(message, staged);
            }
            Command::ReportSnapshot {
                group,
                peer,
                result,
            } => self.host().report_snapshot(group, peer, result),
            // Handled by the loop.
            Command::Shutdown => {}
        }
    }

    /// Runs `f` on the host on the blocking pool. `None` if it panicked (the host is then
    /// lost and the driver stops).
    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut RaftHost<WalStore, M>) -> T + Send + 'static,
    ) -> Option<T> {
        let mut host = self.host.take()?;
        match tokio::task::spawn_blocking(move || {
            let out = f(&mut host);
            (host, out)
        })
        .await
        {
            Ok((host, out)) => {
                self.host = Some(host);
                Some(out)
            }
            Err(e) => {
                tracing::error!(error = %e, "the Raft host panicked; the driver stops");
                None
            }
        }
    }

    /// One round of the host on the blocking pool, then what it settled. Returns false if
    /// the host was lost.
    async fn round(&mut self) -> bool {
        let Some(mut outbound) = self.outbound.take() else {
            return false;
        };
        let now = self.clock.now();
        let result = self
            .blocking(move |host| {
                host.round(now, &mut |messages| outbound.send(messages));
                (outbound, host.take_events())
            })
            .await;
        let Some((outbound, events)) = result else {
            return false;
        };
        self.outbound = Some(outbound);
        for event in events {
            self.event(event);
        }
        true
    }

    fn event(&mut self, event: HostEvent<M::Source, M::Response>) {
        match event {
            HostEvent::Proposal { token, result } => {
                if let Some(reply) = self.proposals.remove(&token) {
                    let _ = reply.send(result.map_err(Into::into));
                }
            }
            HostEvent::Read { token, result } => {
                if let Some(reply) = self.reads.remove(&token) {
                    let _ = reply.send(result.map_err(Into::into));
                }
            }
            HostEvent::Leader { group, leader } => self.set_leader(group, leader),
            HostEvent::SendSnapshot {
                group,
                message,
                source,
            } => {
                tokio::spawn(send_snapshot::<M>(
                    group,
                    message,
                    source,
                    self.transport.clone(),
                    self.peers.clone(),
                    self.config.clone(),
                    self.commands.clone(),
                ));
            }
            HostEvent::GroupFailed { group, .. } => {
                self.set_leader(group, LeaderInfo { id: None, term: 0 })
            }
        }
    }

    fn set_leader(&mut self, group: GroupId, leader: LeaderInfo) {
        {
            let mut leaders = self.leaders.write().unwrap_or_else(|p| p.into_inner());
            if leader.id.is_none() && leader.term == 0 {
                leaders.remove(&group);
            } else {
                leaders.insert(group, leader);
            }
        }
        let _ = self.leader_changes.send(LeaderChange { group, leader });
    }
}

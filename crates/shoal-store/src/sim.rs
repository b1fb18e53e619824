//! A whole store in the deterministic simulator (feature `sim`): the node's real engine
//! (fjall) and WAL on disk, its Raft groups in one [`RaftHost`], opened, bootstrapped and
//! recovered by the same code as the tokio store (the `hosting` module), with splits starting
//! their right halves and replicas created on demand, all in virtual time. Messages are
//! Raft messages, snapshot transfers (a whole transfer is one simulated message, lost or
//! delivered as one) and leaders' descriptor announcements (gossip's part).
//!
//! What it leaves out is what the tokio store adds around the same core: the RPC service
//! (requests here are submitted to a node directly, and only to a group's leader), the
//! membership protocol, the meta range's upkeep and automatic size splits. A crash drops
//! the node's engine and WAL without a sync: the WAL loses what it had not synced; the
//! engine keeps what fjall had handed to the operating system (as after a killed process).
//!
//! A test drives [`SimStore`]s with [`shoal_sim::Simulation`], submits requests with
//! [`SimStore::submit`] through [`shoal_sim::Simulation::act`] and collects their results
//! with [`SimStore::take_completions`].

use super::command::{Applied, Command, WriteOp, WriteOutcome};
use super::events::{self, RangeEvent, RangeEvents};
use super::hosting::{self, GroupOpener, Resume};
use super::machine::{RangeMachine, RangeSnapshot};
use super::meta::{MetaAnswer, MetaOp, META_RANGE};
use super::shared::Shared;
use bytes::Bytes;
use shoal_consensus::{
    HostError, HostEvent, LogIndex, Message, MessageBody, RaftConfig, RaftHost, ReadMode,
    SnapshotSink, SnapshotSource, Wal, WalConfig, WalStore,
};
use shoal_core::{codec, Instant, NodeId, RangeDescriptor, RangeId};
use shoal_ranges::DescriptorSet;
use shoal_sim::{Node, Outputs};
use shoal_storage::{Engine, EngineConfig, Versioned};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often a store's Raft groups tick.
const TICK: Duration = Duration::from_millis(10);

/// How often leaders announce the ranges they lead to every peer.
const ANNOUNCE_EVERY_TICKS: u64 = 25;

/// What simulated stores send each other.
#[derive(Clone, Debug)]
pub enum StoreMessage {
    /// A Raft message.
    Raft(Message),
    /// A whole snapshot transfer: its chunks, and the message that completes it.
    Snapshot {
        /// The [`MessageBody::Snapshot`] message.
        message: Message,
        /// The chunks.
        chunks: Vec<Bytes>,
    },
    /// The receiver's answer to a transfer: whether it holds the snapshot whole.
    SnapshotAck {
        /// The group.
        group: RangeId,
        /// The snapshot's index.
        index: LogIndex,
        /// Whether it arrived whole.
        ok: bool,
    },
    /// The descriptors of ranges the sender leads (gossip's announcements).
    Ranges(Vec<RangeDescriptor>),
}

/// What a simulated store's timers carry.
#[derive(Clone, Copy, Debug)]
pub enum StoreTimer {
    /// The periodic tick.
    Tick,
    /// A snapshot transfer got no answer in time: it failed.
    SnapshotTimeout {
        /// The group.
        group: RangeId,
        /// The peer.
        peer: NodeId,
        /// The snapshot's index.
        index: LogIndex,
    },
}

/// A request a test submits to a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimRequest {
    /// Writes to the range holding the first key (this node must lead it).
    Write(Vec<WriteOp>),
    /// A linearizable read of a key (ReadIndex) from the range holding it here.
    Get(Vec<u8>),
    /// A new range id from the meta range (this node must lead it).
    Allocate,
    /// Split `range` at `at`, the right half taking id `right` (this node must lead it).
    Split {
        /// The range.
        range: RangeId,
        /// The right half's first key.
        at: Vec<u8>,
        /// The right half's id (from [`SimRequest::Allocate`]).
        right: RangeId,
    },
}

/// How a submitted request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimResult {
    /// The writes applied, with their outcomes.
    Written(Vec<WriteOutcome>),
    /// A read's value.
    Value(Option<Versioned>),
    /// An allocated range id.
    Allocated(RangeId),
    /// The split applied.
    Split,
    /// It certainly did not take effect.
    Failed(String),
    /// It may or may not take effect (the node crashed, or lost track of the proposal).
    Unknown,
}

/// A submitted request's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The token it was submitted with.
    pub token: u64,
    /// How it ended.
    pub result: SimResult,
}

/// A request in flight.
enum Pending {
    Proposal,
    Read { range: RangeId, key: Vec<u8> },
}

/// A store while it runs.
struct Running {
    engine: Arc<Engine>,
    wal: Wal,
    host: RaftHost<WalStore, RangeMachine>,
    shared: Arc<Shared>,
    /// Where the machines report splits, and where the store takes them from.
    events: RangeEvents,
    range_events: tokio::sync::mpsc::UnboundedReceiver<RangeEvent>,
}

impl Running {
    /// Hosts a group just opened (or says why it could not be opened or hosted).
    fn add(
        &mut self,
        opened: Result<(shoal_consensus::Raft<WalStore>, RangeMachine), super::node::StoreError>,
    ) -> Result<(), String> {
        let (raft, machine) = opened.map_err(|e| e.to_string())?;
        self.host
            .add_group(raft, machine)
            .map_err(|e| e.to_string())
    }

    /// What opening a group on this store needs.
    fn groups<'a>(
        &'a self,
        id: NodeId,
        raft: &'a RaftConfig,
        chunk_bytes: usize,
    ) -> GroupOpener<'a> {
        GroupOpener {
            id,
            raft,
            engine: &self.engine,
            wal: &self.wal,
            shared: &self.shared,
            events: &self.events,
            chunk_bytes,
        }
    }
}

/// One node's store in the simulator.
pub struct SimStore {
    id: NodeId,
    dir: PathBuf,
    raft: RaftConfig,
    chunk_bytes: usize,
    peers: Vec<NodeId>,
    /// Founding voters, bootstrapped at the first start (empty: a node that only joins).
    founders: Vec<NodeId>,
    running: Option<Running>,
    pending: HashMap<u64, Pending>,
    completions: Vec<Completion>,
    /// Snapshot transfers out and not answered: (group, peer) to index.
    transfers: HashMap<(RangeId, NodeId), LogIndex>,
    /// Descriptors heard from leaders, for replicas created on demand.
    known: DescriptorSet,
    /// What went wrong that never should (a group failed, a store could not open).
    failures: Vec<String>,
    ticks: u64,
    now: Instant,
    /// Snapshot transfers received whole.
    snapshots_received: u64,
    /// Reads answered from the local engine at once, without a read barrier (a deliberate
    /// bug, to show the checks catch it).
    stale_reads: bool,
}

impl SimStore {
    /// A store keeping its engine and WAL under `dir`, among `peers` (itself included); if
    /// `founders` is not empty, it bootstraps the cluster with them as voters at its first
    /// start.
    pub fn new(
        id: NodeId,
        dir: impl Into<PathBuf>,
        raft: RaftConfig,
        peers: Vec<NodeId>,
        founders: Vec<NodeId>,
    ) -> Self {
        Self {
            id,
            dir: dir.into(),
            raft,
            chunk_bytes: 16 << 10,
            peers,
            founders,
            running: None,
            pending: HashMap::new(),
            completions: Vec::new(),
            transfers: HashMap::new(),
            known: DescriptorSet::new(),
            failures: Vec::new(),
            ticks: 0,
            now: Instant::ZERO,
            snapshots_received: 0,
            stale_reads: false,
        }
    }

    /// This node.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The engine, while the store runs.
    pub fn engine(&self) -> Option<&Arc<Engine>> {
        self.running.as_ref().map(|r| &r.engine)
    }

    /// The descriptors of the ranges hosted here, as applied here.
    pub fn descriptors(&self) -> Vec<RangeDescriptor> {
        self.running
            .as_ref()
            .map(|r| r.shared.descriptors())
            .unwrap_or_default()
    }

    /// The hosted range holding `key`, if any.
    pub fn hosts(&self, key: &[u8]) -> Option<RangeDescriptor> {
        self.running.as_ref()?.shared.range_for(key)
    }

    /// The hosted range holding `key`, if this node leads it.
    pub fn leads(&self, key: &[u8]) -> Option<RangeDescriptor> {
        let running = self.running.as_ref()?;
        let d = running.shared.range_for(key)?;
        running
            .host
            .raft(d.id.into())
            .is_some_and(|r| r.is_leader())
            .then_some(d)
    }

    /// Whether this node leads `range`.
    pub fn leads_range(&self, range: RangeId) -> bool {
        self.running
            .as_ref()
            .and_then(|r| r.host.raft(range.into()))
            .is_some_and(|r| r.is_leader())
    }

    /// A hosted range's applied index.
    pub fn applied(&self, range: RangeId) -> Option<LogIndex> {
        self.running
            .as_ref()?
            .host
            .raft(range.into())
            .map(|r| r.applied_index())
    }

    /// Every hosted group's (range, term) where this node is the leader.
    pub fn leaderships(&self) -> Vec<(RangeId, u64)> {
        self.running
            .as_ref()
            .map(|r| {
                r.host
                    .rafts()
                    .filter(|raft| raft.is_leader())
                    .map(|raft| (raft.group().into(), raft.term()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Snapshot transfers this store received whole.
    pub fn snapshots_received(&self) -> u64 {
        self.snapshots_received
    }

    /// Breaks the store on purpose: reads are answered from the local engine at once, on
    /// any replica, without a read barrier, so they can be stale. Only for showing that a
    /// test's checks catch such a bug.
    pub fn serve_stale_reads(&mut self, on: bool) {
        self.stale_reads = on;
    }

    /// What went wrong that never should: a failed group, a store that could not open.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// The results of requests that ended since the last call.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    /// Submits `request` with `token` (unique per store). Refused at once, with nothing
    /// done, when the store is down, hosts no range for it or does not lead it; otherwise
    /// its result comes later in [`SimStore::take_completions`].
    pub fn submit(
        &mut self,
        token: u64,
        request: SimRequest,
        out: &mut Outputs<StoreMessage, StoreTimer>,
    ) -> Result<(), String> {
        let running = self.running.as_mut().ok_or("the store is down")?;
        let (range, command, pending) = match request {
            SimRequest::Write(ops) => {
                let key = ops.first().ok_or("no writes")?.key();
                let d = running
                    .shared
                    .range_for(key)
                    .ok_or("no hosted range holds the key")?;
                (d.id, Command::Write(ops), Pending::Proposal)
            }
            SimRequest::Allocate => (
                META_RANGE,
                Command::Meta(MetaOp::AllocateRangeIds { count: 1 }),
                Pending::Proposal,
            ),
            SimRequest::Split { range, at, right } => {
                (range, Command::Split { at, right }, Pending::Proposal)
            }
            SimRequest::Get(key) => {
                let d = running
                    .shared
                    .range_for(&key)
                    .ok_or("no hosted range holds the key")?;
                if self.stale_reads {
                    let value = running.engine.get(d.id, &key).map_err(|e| e.to_string())?;
                    self.complete(token, SimResult::Value(value));
                    return Ok(());
                }
                running
                    .host
                    .read(d.id.into(), ReadMode::Safe, token)
                    .map_err(|e| e.to_string())?;
                self.pending
                    .insert(token, Pending::Read { range: d.id, key });
                self.drive(out);
                return Ok(());
            }
        };
        let data = codec::encode(&command).map_err(|e| e.to_string())?;
        running
            .host
            .propose(range.into(), data.into(), token)
            .map_err(|e| e.to_string())?;
        self.pending.insert(token, pending);
        self.drive(out);
        Ok(())
    }

    fn complete(&mut self, token: u64, result: SimResult) {
        self.completions.push(Completion { token, result });
    }

    /// Opens the engine and WAL and starts every group they hold (bootstrapping first, at
    /// the first start of a founder).
    fn open(&mut self, now: Instant) -> Result<Running, String> {
        let campaign = self.founders.first() == Some(&self.id);
        let engine = Engine::open(self.dir.join("engine"), EngineConfig::default())
            .map_err(|e| format!("engine: {e}"))?;
        let (wal, _) = Wal::open(self.dir.join("wal"), WalConfig::default())
            .map_err(|e| format!("wal: {e}"))?;
        let engine = Arc::new(engine);
        let shared = Arc::new(Shared::default());
        let (events, range_events) = events::channel();
        let mut host = RaftHost::new(self.id);
        let groups = GroupOpener {
            id: self.id,
            raft: &self.raft,
            engine: &engine,
            wal: &wal,
            shared: &shared,
            events: &events,
            chunk_bytes: self.chunk_bytes,
        };
        let fresh = engine.ranges().is_empty() && wal.groups().is_empty();
        if fresh && !self.founders.is_empty() {
            let (descriptors, membership) = hosting::bootstrap(&engine, &wal, &self.founders, &[])
                .map_err(|e| e.to_string())?;
            for d in descriptors {
                let id = d.id;
                let (raft, machine) = groups
                    .open_range(id, d.range.clone(), Some(d), Some(membership.clone()), now)
                    .map_err(|e| e.to_string())?;
                host.add_group(raft, machine).map_err(|e| e.to_string())?;
                // The first founder campaigns at once, as `Store::bootstrap` does.
                if campaign {
                    host.campaign(id.into()).map_err(|e| e.to_string())?;
                }
            }
        } else {
            for group in hosting::recover(&engine, &wal).map_err(|e| e.to_string())? {
                let (raft, machine) = match group {
                    Resume::Range {
                        id,
                        span,
                        descriptor,
                    } => groups.open_range(id, span, descriptor, None, now),
                    Resume::Uninitialized(id) => groups.open_uninitialized(id, now),
                }
                .map_err(|e| e.to_string())?;
                host.add_group(raft, machine).map_err(|e| e.to_string())?;
            }
        }
        Ok(Running {
            engine,
            wal,
            host,
            shared,
            events,
            range_events,
        })
    }

    /// Runs the host's rounds until it has nothing to do, sending what they produce,
    /// settling requests and starting the right halves of splits applied here.
    fn drive(&mut self, out: &mut Outputs<StoreMessage, StoreTimer>) {
        let now = self.now;
        for _ in 0..64 {
            let Some(running) = self.running.as_mut() else {
                return;
            };
            if !running.host.has_ready() {
                break;
            }
            running.host.round(now, &mut |messages| {
                for m in messages {
                    out.send(m.to, StoreMessage::Raft(m));
                }
            });
            let events = running.host.take_events();
            self.handle_events(events, out);
            self.start_splits();
        }
    }

    /// Starts the right half of every split applied here since the last call, as the tokio
    /// store's split task does.
    fn start_splits(&mut self) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        while let Ok(RangeEvent::Split(split)) = running.range_events.try_recv() {
            let right = split.right.id;
            let started = hosting::start_split_half(
                &running.engine,
                &running.wal,
                right,
                split.membership.clone(),
            )
            .and_then(|()| {
                running
                    .groups(self.id, &self.raft, self.chunk_bytes)
                    .open_range(
                        right,
                        split.right.range.clone(),
                        Some(split.right.clone()),
                        Some(split.membership),
                        self.now,
                    )
            });
            match running.add(started) {
                Ok(()) => {
                    if running
                        .host
                        .raft(split.parent.into())
                        .is_some_and(|r| r.is_leader())
                    {
                        let _ = running.host.campaign(right.into());
                    }
                    hosting::recount_halves(&running.engine, split.parent, right, false);
                }
                Err(e) => self
                    .failures
                    .push(format!("{}: starting split half {right}: {e}", self.id)),
            }
        }
    }

    fn handle_events(
        &mut self,
        events: Vec<HostEvent<RangeSnapshot, Applied>>,
        out: &mut Outputs<StoreMessage, StoreTimer>,
    ) {
        for event in events {
            match event {
                HostEvent::Proposal { token, result } => {
                    if self.pending.remove(&token).is_none() {
                        continue;
                    }
                    let result = match result {
                        Ok(Applied::Written(outcomes)) => SimResult::Written(outcomes),
                        Ok(Applied::Split { .. }) => SimResult::Split,
                        Ok(Applied::Meta(MetaAnswer::Allocated { first })) => {
                            SimResult::Allocated(first)
                        }
                        Ok(Applied::Rejected(r)) => SimResult::Failed(r.to_string()),
                        Ok(_) => SimResult::Unknown,
                        Err(HostError::Dropped) => SimResult::Failed("dropped".into()),
                        Err(_) => SimResult::Unknown,
                    };
                    self.complete(token, result);
                }
                HostEvent::Read { token, result } => {
                    let Some(Pending::Read { range, key }) = self.pending.remove(&token) else {
                        continue;
                    };
                    let value = match (result, self.running.as_ref()) {
                        (Ok(_), Some(running)) => match running.engine.get(range, &key) {
                            Ok(value) => SimResult::Value(value),
                            Err(e) => SimResult::Failed(e.to_string()),
                        },
                        (Ok(_), None) => SimResult::Failed("down".into()),
                        (Err(e), _) => SimResult::Failed(e.to_string()),
                    };
                    self.complete(token, value);
                }
                HostEvent::SendSnapshot {
                    group,
                    message,
                    mut source,
                } => {
                    let peer = message.to;
                    let index = source.index();
                    let mut chunks = Vec::new();
                    loop {
                        match source.next_chunk() {
                            Ok(Some(chunk)) => chunks.push(chunk),
                            Ok(None) => break,
                            Err(e) => {
                                self.failures.push(format!(
                                    "{}: reading a snapshot of {group}: {e}",
                                    self.id
                                ));
                                break;
                            }
                        }
                    }
                    self.transfers.insert((group.into(), peer), index);
                    out.send(peer, StoreMessage::Snapshot { message, chunks });
                    out.set_timer(
                        self.raft.election_timeout * 3,
                        StoreTimer::SnapshotTimeout {
                            group: group.into(),
                            peer,
                            index,
                        },
                    );
                }
                HostEvent::Leader { .. } => {}
                HostEvent::GroupFailed { group, error } => self
                    .failures
                    .push(format!("{}: group {group} failed: {error}", self.id)),
            }
        }
    }

    /// A transfer of `group` to `peer` ended.
    fn end_transfer(
        &mut self,
        group: RangeId,
        peer: NodeId,
        index: LogIndex,
        ok: bool,
        out: &mut Outputs<StoreMessage, StoreTimer>,
    ) {
        if self.transfers.get(&(group, peer)) != Some(&index) {
            return;
        }
        self.transfers.remove(&(group, peer));
        if let Some(running) = self.running.as_mut() {
            running
                .host
                .report_snapshot(group.into(), peer, if ok { Ok(index) } else { Err(()) });
        }
        self.drive(out);
    }

    /// Takes a snapshot transfer: writes its chunks into a sink, hands the result to the
    /// host. Whether it arrived whole.
    fn receive(&mut self, message: Message, chunks: Vec<Bytes>) -> bool {
        let Some(running) = self.running.as_mut() else {
            return false;
        };
        let MessageBody::Snapshot { meta } = &message.body else {
            return false;
        };
        let Ok(mut sink) = running.host.receive_snapshot(message.group, meta) else {
            return false;
        };
        if chunks.iter().any(|c| sink.write(c).is_err()) {
            return false;
        }
        let Ok(staged) = sink.finish() else {
            return false;
        };
        running.host.snapshot_received(message, staged);
        self.snapshots_received += 1;
        true
    }

    /// A message for a group not hosted here: hosts a replica waiting for its snapshot if a
    /// leader's announcement names this node and its span is free here (as the tokio
    /// store's on-demand hosting does), then steps the message.
    fn host_on_demand(&mut self, message: Message) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let group = RangeId::from(message.group);
        let Some(descriptor) = self.known.descriptors().find(|d| d.id == group) else {
            return;
        };
        if !hosting::wants_replica(descriptor, self.id, &running.engine) {
            return;
        }
        let opened = running
            .groups(self.id, &self.raft, self.chunk_bytes)
            .open_uninitialized(group, self.now);
        match running.add(opened) {
            Ok(()) => {
                let _ = running.host.step(self.now, message);
            }
            Err(e) => self
                .failures
                .push(format!("{}: hosting {group} on demand: {e}", self.id)),
        }
    }

    /// Sends the descriptors of the ranges this node leads to every peer.
    fn announce(&self, out: &mut Outputs<StoreMessage, StoreTimer>) {
        let Some(running) = self.running.as_ref() else {
            return;
        };
        let led: Vec<RangeDescriptor> = running
            .shared
            .descriptors()
            .into_iter()
            .filter(|d| {
                running
                    .host
                    .raft(d.id.into())
                    .is_some_and(|r| r.is_leader())
            })
            .collect();
        if led.is_empty() {
            return;
        }
        for &peer in self.peers.iter().filter(|&&p| p != self.id) {
            out.send(peer, StoreMessage::Ranges(led.clone()));
        }
    }
}

impl Node for SimStore {
    type Message = StoreMessage;
    type Timer = StoreTimer;

    fn on_start(&mut self, now: Instant, out: &mut Outputs<StoreMessage, StoreTimer>) {
        self.now = now;
        match self.open(now) {
            Ok(running) => {
                // Bootstrapped once: a restart recovers instead.
                self.founders.clear();
                self.running = Some(running);
                out.set_timer(TICK, StoreTimer::Tick);
                self.drive(out);
            }
            Err(e) => self
                .failures
                .push(format!("{}: could not open: {e}", self.id)),
        }
    }

    fn on_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: StoreMessage,
        out: &mut Outputs<StoreMessage, StoreTimer>,
    ) {
        self.now = now;
        match message {
            StoreMessage::Raft(m) => {
                let unknown = self
                    .running
                    .as_mut()
                    .and_then(|running| running.host.step(now, m));
                if let Some(m) = unknown {
                    self.host_on_demand(m);
                }
            }
            StoreMessage::Snapshot { message, chunks } => {
                let group = RangeId::from(message.group);
                let MessageBody::Snapshot { meta } = &message.body else {
                    return;
                };
                let index = meta.index;
                let ok = self.receive(message, chunks);
                out.send(from, StoreMessage::SnapshotAck { group, index, ok });
            }
            StoreMessage::SnapshotAck { group, index, ok } => {
                self.end_transfer(group, from, index, ok, out)
            }
            StoreMessage::Ranges(descriptors) => {
                if let Ok(set) = DescriptorSet::from_descriptors(descriptors, 4096) {
                    self.known.merge(&set);
                }
            }
        }
        self.drive(out);
    }

    fn on_timer(
        &mut self,
        now: Instant,
        timer: StoreTimer,
        out: &mut Outputs<StoreMessage, StoreTimer>,
    ) {
        self.now = now;
        match timer {
            StoreTimer::Tick => {
                if let Some(running) = self.running.as_mut() {
                    running.host.tick(now);
                }
                self.ticks += 1;
                if self.ticks.is_multiple_of(ANNOUNCE_EVERY_TICKS) {
                    self.announce(out);
                }
                self.drive(out);
                out.set_timer(TICK, StoreTimer::Tick);
            }
            StoreTimer::SnapshotTimeout { group, peer, index } => {
                self.end_transfer(group, peer, index, false, out)
            }
        }
    }

    fn on_crash(&mut self) {
        // Dropped without a sync: the WAL loses what it had not synced.
        self.running = None;
        self.transfers.clear();
        for (token, pending) in std::mem::take(&mut self.pending) {
            let result = match pending {
                Pending::Proposal => SimResult::Unknown,
                Pending::Read { .. } => SimResult::Failed("crashed".into()),
            };
            self.complete(token, result);
        }
    }
}

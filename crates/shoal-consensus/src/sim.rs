//! Runs Raft replicas in `shoal-sim`'s deterministic simulator, with a register state
//! machine and a shared [`SimHistory`] that checks Raft's safety properties as events
//! happen.
//!
//! A [`SimReplica`] runs one group in a [`RaftHost`], the same ready loop as every other
//! driver, persisting synchronously into a [`MemLogStore`] that survives a simulated crash
//! (it is the replica's disk). Its register state machine keeps a copy on that disk, refreshed
//! when it is persisted for log compaction and when a snapshot is installed; after a crash
//! it restarts from that copy and the log replays the rest. Snapshot data goes beside Raft
//! messages, as one simulated message per transfer, answered by the receiver.

use crate::config::RaftConfig;
use crate::entry::{Entry, EntryPayload, LogIndex, Term};
use crate::host::{HostError, HostEvent, RaftHost};
use crate::membership::Membership;
use crate::message::Message;
use crate::raft::{Raft, ReadMode};
use crate::snapshot::{MachineError, SnapshotMeta, SnapshotSink, SnapshotSource, StateMachine};
use crate::store::{LogStore, MemLogStore};
use bytes::Bytes;
use shoal_core::{GroupId, Instant, NodeId};
use shoal_sim::linearizability::{History, Outcome, RegisterOp as ClientOp};
use shoal_sim::{Node, Outputs};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// The group every simulated replica belongs to.
pub const SIM_GROUP: GroupId = GroupId::new(1);

/// An operation on the register state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    /// Sets `key` to the value.
    Write(u64),
    /// Sets `key` to `new` if it holds `expected` (a missing key holds 0).
    Cas {
        /// The value required.
        expected: u64,
        /// The value set.
        new: u64,
    },
}

/// A client command: an operation on one key, with the client's unique operation id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterCommand {
    /// Unique per operation.
    pub op_id: u64,
    /// The register.
    pub key: u64,
    /// What to do.
    pub op: RegisterOp,
}

const COMMAND_LEN: usize = 33;

impl RegisterCommand {
    /// The command's bytes: op id, key, kind, two operands (little-endian).
    pub fn encode(&self) -> Bytes {
        let (kind, a, b) = match self.op {
            RegisterOp::Write(v) => (0u8, v, 0),
            RegisterOp::Cas { expected, new } => (1, expected, new),
        };
        let mut out = Vec::with_capacity(COMMAND_LEN);
        out.extend_from_slice(&self.op_id.to_le_bytes());
        out.extend_from_slice(&self.key.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
        out.into()
    }

    /// Parses [`RegisterCommand::encode`]'s bytes; `None` for anything else.
    pub fn decode(data: &[u8]) -> Option<Self> {
        if data.len() != COMMAND_LEN {
            return None;
        }
        let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let op = match data[16] {
            0 => RegisterOp::Write(word(17)),
            1 => RegisterOp::Cas {
                expected: word(17),
                new: word(25),
            },
            _ => return None,
        };
        Some(Self {
            op_id: word(0),
            key: word(8),
            op,
        })
    }
}

/// A map of registers: the state machine simulated replicas apply commands to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    values: BTreeMap<u64, u64>,
    applied: LogIndex,
    /// The outcome of each applied operation: (op id, the value before, whether it took
    /// effect).
    last_outcome: Option<(u64, u64, bool)>,
}

impl Registers {
    /// The value of `key` (0 when never written).
    pub fn get(&self, key: u64) -> u64 {
        self.values.get(&key).copied().unwrap_or(0)
    }

    /// Every register.
    pub fn values(&self) -> &BTreeMap<u64, u64> {
        &self.values
    }

    /// What a client would be told about `entry`, just applied: its op id and outcome.
    fn last_client_outcome(&self, entry: &Entry) -> Option<(u64, Outcome)> {
        let (op_id, _, took) = self.last_outcome?;
        let EntryPayload::Command(data) = &entry.payload else {
            return None;
        };
        let outcome = match RegisterCommand::decode(data)?.op {
            RegisterOp::Write(_) => Outcome::Written,
            RegisterOp::Cas { .. } => Outcome::Swapped(took),
        };
        Some((op_id, outcome))
    }
}

impl Registers {
    /// Applies one committed entry; answers a command with the value before it (8 bytes LE)
    /// and whether it took effect (1 byte).
    pub fn apply(&mut self, entry: &Entry) -> Bytes {
        self.applied = entry.index;
        self.last_outcome = None;
        let EntryPayload::Command(data) = &entry.payload else {
            return Bytes::new();
        };
        let Some(cmd) = RegisterCommand::decode(data) else {
            return Bytes::new();
        };
        let before = self.get(cmd.key);
        let took = match cmd.op {
            RegisterOp::Write(v) => {
                self.values.insert(cmd.key, v);
                true
            }
            RegisterOp::Cas { expected, new } => {
                let ok = before == expected;
                if ok {
                    self.values.insert(cmd.key, new);
                }
                ok
            }
        };
        self.last_outcome = Some((cmd.op_id, before, took));
        let mut answer = before.to_le_bytes().to_vec();
        answer.push(u8::from(took));
        answer.into()
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> LogIndex {
        self.applied
    }

    /// The registers as bytes: the applied index, then (key, value) pairs.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(8 + 16 * self.values.len());
        out.extend_from_slice(&self.applied.to_le_bytes());
        for (k, v) in &self.values {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.into()
    }

    /// Parses [`Registers::encode`]'s bytes.
    pub fn decode(data: &[u8]) -> Option<Registers> {
        let applied = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
        let pairs = &data[8..];
        if !pairs.len().is_multiple_of(16) {
            return None;
        }
        let mut registers = Registers {
            applied,
            ..Registers::default()
        };
        for pair in pairs.chunks_exact(16) {
            let k = u64::from_le_bytes(pair[..8].try_into().ok()?);
            let v = u64::from_le_bytes(pair[8..].try_into().ok()?);
            registers.values.insert(k, v);
        }
        Some(registers)
    }
}

/// A simulated replica's state machine: [`Registers`] in memory, with a copy on the
/// replica's simulated disk that [`StateMachine::persist`] and snapshot installs refresh (it
/// survives crashes, as the log does), reporting every apply to the [`SimHistory`].
pub struct SimMachine {
    id: NodeId,
    registers: Registers,
    disk: Rc<RefCell<Registers>>,
    history: SharedHistory,
}

/// A snapshot of [`Registers`], as one chunk.
pub struct RegistersSource {
    index: LogIndex,
    chunk: Option<Bytes>,
}

impl SnapshotSource for RegistersSource {
    fn index(&self) -> LogIndex {
        self.index
    }

    fn next_chunk(&mut self) -> Result<Option<Bytes>, MachineError> {
        Ok(self.chunk.take())
    }
}

/// A snapshot of [`Registers`] being received.
pub struct RegistersSink {
    index: LogIndex,
    data: Vec<u8>,
}

impl SnapshotSink for RegistersSink {
    type Staged = Registers;

    fn write(&mut self, chunk: &[u8]) -> Result<(), MachineError> {
        self.data.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self) -> Result<Registers, MachineError> {
        let registers = Registers::decode(&self.data)
            .ok_or_else(|| MachineError::BadSnapshot("undecodable registers".into()))?;
        if registers.applied != self.index {
            return Err(MachineError::BadSnapshot(format!(
                "registers at {} for a snapshot at {}",
                registers.applied, self.index
            )));
        }
        Ok(registers)
    }
}

impl StateMachine for SimMachine {
    type Response = Bytes;
    type Source = RegistersSource;
    type Sink = RegistersSink;
    type Staged = Registers;

    fn apply(&mut self, entry: &Entry) -> Result<Bytes, MachineError> {
        let answer = self.registers.apply(entry);
        let mut history = self.history.borrow_mut();
        history.on_applied(self.id, entry);
        // An operation took effect when it committed, before any replica applied it: the
        // first apply anywhere completes it in the client history (its proposer may never
        // hear back, and an open-ended operation costs the checker dearly).
        if let Some((op_id, outcome)) = self.registers.last_client_outcome(entry) {
            if history.clients.is_pending(op_id) {
                history.client_completed(op_id, outcome);
            }
        }
        Ok(answer)
    }

    fn applied_index(&self) -> LogIndex {
        self.registers.applied
    }

    fn persist(&mut self) -> Result<LogIndex, MachineError> {
        *self.disk.borrow_mut() = self.registers.clone();
        Ok(self.registers.applied)
    }

    fn snapshot(&mut self) -> Result<RegistersSource, MachineError> {
        Ok(RegistersSource {
            index: self.registers.applied,
            chunk: Some(self.registers.encode()),
        })
    }

    fn receive_snapshot(&mut self, meta: &SnapshotMeta) -> Result<RegistersSink, MachineError> {
        Ok(RegistersSink {
            index: meta.index,
            data: Vec::new(),
        })
    }

    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        staged: Registers,
    ) -> Result<(), MachineError> {
        debug_assert_eq!(staged.applied, meta.index);
        self.registers = staged;
        *self.disk.borrow_mut() = self.registers.clone();
        self.history.borrow_mut().snapshots_installed += 1;
        Ok(())
    }

    fn discard_snapshot(&mut self, _staged: Registers) {}
}

/// What the history checks, shared by every replica of a simulation. Each replica reports
/// as things happen; the first violation is kept and the simulation's invariant returns it.
#[derive(Debug, Default)]
pub struct SimHistory {
    /// The leader of each term seen (election safety).
    leaders: BTreeMap<Term, NodeId>,
    /// The entry applied at each index, as (term, payload digest) (state machine safety).
    applied: BTreeMap<LogIndex, (Term, u64)>,
    /// Per replica: last applied index, commit index and term seen (monotonicity).
    positions: HashMap<NodeId, (LogIndex, LogIndex, Term)>,
    /// Acknowledged proposals: (index, term, op id).
    acknowledged: Vec<(LogIndex, Term, u64)>,
    /// Leaders whose logs were checked for completeness: (node, term).
    checked_leaders: BTreeMap<Term, NodeId>,
    /// Snapshots installed from a leader.
    snapshots_installed: u64,
    /// What clients saw: every proposal and read, as invoked and completed, for the
    /// linearizability checker.
    clients: History,
    /// The first violation.
    violation: Option<String>,
}

/// A shared handle to a [`SimHistory`].
pub type SharedHistory = Rc<RefCell<SimHistory>>;

fn digest(payload: &EntryPayload) -> u64 {
    match payload {
        EntryPayload::Noop => 0,
        EntryPayload::Command(d) => {
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            for &b in d.iter() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            h | 1
        }
        EntryPayload::Membership(m) => 2 + m.node_count() as u64,
    }
}

impl SimHistory {
    /// A new shared history.
    pub fn shared() -> SharedHistory {
        Rc::new(RefCell::new(SimHistory {
            // A register never written reads as 0.
            clients: History::new(Some(0)),
            ..SimHistory::default()
        }))
    }

    fn violate(&mut self, message: String) {
        if self.violation.is_none() {
            self.violation = Some(message);
        }
    }

    /// The first violation, if any.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    /// Proposals acknowledged to clients so far: (index, term, op id).
    pub fn acknowledged(&self) -> &[(LogIndex, Term, u64)] {
        &self.acknowledged
    }

    /// The highest index applied anywhere.
    pub fn max_applied(&self) -> LogIndex {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }

    /// What clients saw, for [`shoal_sim::linearizability::check`].
    pub fn clients(&self) -> &History {
        &self.clients
    }

    fn client_invoked(&mut self, id: u64, process: NodeId, key: u64, op: ClientOp) {
        if let Err(e) = self.clients.invoke(id, process.get(), key.to_string(), op) {
            self.violate(format!("client history: {e}"));
        }
    }

    fn client_completed(&mut self, id: u64, outcome: Outcome) {
        if let Err(e) = self.clients.complete(id, outcome) {
            self.violate(format!("client history: {e}"));
        }
    }

    /// Snapshots replicas installed from a leader.
    pub fn snapshots_installed(&self) -> u64 {
        self.snapshots_installed
    }

    /// Terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }

    fn on_leader(&mut self, node: NodeId, term: Term) {
        match self.leaders.get(&term) {
            Some(&other) if other != node => self.violate(format!(
                "election safety: {other} and {node} both led term {term}"
            )),
            _ => {
                self.leaders.insert(term, node);
            }
        }
    }

    fn on_applied(&mut self, node: NodeId, entry: &Entry) {
        let seen = (entry.term, digest(&entry.payload));
        match self.applied.get(&entry.index) {
            Some(&first) if first != seen => self.violate(format!(
                "state machine safety: {node} applied {seen:?} at {} where {first:?} was applied",
                entry.index
            )),
            _ => {
                self.applied.insert(entry.index, seen);
            }
        }
    }

    /// Checks one replica's positions after a step: term, commit and applied never go back
    /// (applied may restart from the snapshot after a crash: `restarted`), and a leader's log
    /// holds every entry applied anywhere (leader completeness).
    pub fn check_replica(&mut self, raft: &Raft<MemLogStore>, restarted: bool) {
        let id = raft.id();
        let now = (raft.applied_index(), raft.commit_index(), raft.term());
        if let Some(&(applied, commit, term)) = self.positions.get(&id) {
            if now.2 < term || now.1 < commit || (now.0 < applied && !restarted) {
                self.violate(format!(
                    "monotonicity: {id} went from (applied {applied}, commit {commit}, term {term}) to {now:?}"
                ));
            }
        }
        self.positions.insert(id, now);
        if raft.is_leader() {
            self.on_leader(id, raft.term());
            if self.checked_leaders.insert(raft.term(), id).is_none() {
                self.check_leader_completeness(raft);
            }
        }
    }

    fn check_leader_completeness(&mut self, raft: &Raft<MemLogStore>) {
        let first = raft.store().first_index().saturating_sub(1).max(1);
        let missing = self
            .applied
            .range(first..)
            .find(|(&index, &(term, _))| raft.term_at(index) != Some(term))
            .map(|(&i, &t)| (i, t));
        if let Some((index, (term, _))) = missing {
            self.violate(format!(
                "leader completeness: {} leads term {} without the committed entry ({index}, {term})",
                raft.id(),
                raft.term()
            ));
        }
    }

    /// Log matching between two replicas: if their logs hold an entry with the same index
    /// and term, every entry before it is the same too.
    pub fn check_log_matching(&mut self, a: &Raft<MemLogStore>, b: &Raft<MemLogStore>) {
        let lo = a.store().first_index().max(b.store().first_index());
        let hi = a.last_index().min(b.last_index());
        let Some(agree) = (lo..=hi)
            .rev()
            .find(|&i| a.term_at(i).is_some() && a.term_at(i) == b.term_at(i))
        else {
            return;
        };
        let (ea, eb) = (a.entries(lo, agree + 1), b.entries(lo, agree + 1));
        if ea != eb {
            self.violate(format!(
                "log matching: {} and {} agree at {agree} but differ before it",
                a.id(),
                b.id()
            ));
        }
    }
}

/// What simulated replicas send each other: Raft messages, and snapshot transfers beside
/// them (a whole transfer is one simulated message, lost or delivered as one).
#[derive(Clone, Debug)]
pub enum SimMessage {
    /// A Raft message.
    Raft(Message),
    /// A snapshot's data and the message that completes it.
    Snapshot {
        /// The [`crate::MessageBody::Snapshot`] message.
        message: Message,
        /// The chunks.
        chunks: Vec<Bytes>,
    },
    /// The receiver's answer to a transfer: whether it holds the snapshot whole.
    SnapshotAck {
        /// The snapshot's index.
        index: LogIndex,
        /// Whether it arrived whole.
        ok: bool,
    },
}

/// What a simulated replica's timer carries.
#[derive(Clone, Copy, Debug)]
pub enum SimTimer {
    /// The periodic tick.
    Tick,
    /// A snapshot transfer to a peer gets no answer in time: it failed.
    SnapshotTimeout {
        /// The peer.
        peer: NodeId,
        /// The snapshot's index.
        index: LogIndex,
    },
}

type SimOutputs = Outputs<SimMessage, SimTimer>;

/// One Raft replica in the simulator, with a register state machine, run by
/// [`RaftHost`] like any other node.
pub struct SimReplica {
    id: NodeId,
    config: RaftConfig,
    seed: u64,
    tick: Duration,
    host: Option<RaftHost<MemLogStore, SimMachine>>,
    /// The replica's disk while it is down.
    disk: MemLogStore,
    /// The state machine's copy on disk.
    disk_registers: Rc<RefCell<Registers>>,
    /// Proposals made here and not settled: op id to (index, term).
    proposals: HashMap<u64, (LogIndex, Term)>,
    /// Reads asked here and not yet answered: op id to key.
    reads: HashMap<u64, u64>,
    /// Snapshot transfers out and not answered: peer to index.
    transfers: HashMap<NodeId, LogIndex>,
    history: SharedHistory,
    restarted: Cell<bool>,
    incarnation: u64,
    /// The time of the latest event.
    now: Instant,
}

impl SimReplica {
    /// A founding replica: its disk is bootstrapped with `membership`.
    pub fn founder(
        id: NodeId,
        membership: Membership,
        config: RaftConfig,
        seed: u64,
        history: SharedHistory,
    ) -> Self {
        let mut disk = MemLogStore::new();
        Raft::bootstrap(&mut disk, membership).expect("an empty store bootstraps");
        Self::with_disk(id, disk, config, seed, history)
    }

    /// A replica with an empty disk, waiting to be added to the group.
    pub fn joiner(id: NodeId, config: RaftConfig, seed: u64, history: SharedHistory) -> Self {
        Self::with_disk(id, MemLogStore::new(), config, seed, history)
    }

    fn with_disk(
        id: NodeId,
        disk: MemLogStore,
        config: RaftConfig,
        seed: u64,
        history: SharedHistory,
    ) -> Self {
        Self {
            id,
            tick: Duration::from_millis(10),
            config,
            seed,
            host: None,
            disk,
            disk_registers: Rc::default(),
            proposals: HashMap::new(),
            reads: HashMap::new(),
            transfers: HashMap::new(),
            history,
            restarted: Cell::new(false),
            incarnation: 0,
            now: Instant::ZERO,
        }
    }

    /// The Raft core, while the replica is up.
    pub fn raft(&self) -> Option<&Raft<MemLogStore>> {
        self.host.as_ref()?.raft(SIM_GROUP)
    }

    /// The Raft core, while the replica is up, for operator actions (transfers, membership
    /// changes). Call [`SimReplica::drive`] afterwards.
    pub fn raft_mut(&mut self) -> Option<&mut Raft<MemLogStore>> {
        self.host.as_mut()?.raft_mut(SIM_GROUP)
    }

    /// The state machine, while the replica is up.
    pub fn registers(&self) -> Option<&Registers> {
        Some(&self.host.as_ref()?.machine(SIM_GROUP)?.registers)
    }

    /// Proposes a command if this replica leads. Returns whether it was appended.
    pub fn propose(&mut self, cmd: RegisterCommand, out: &mut SimOutputs) -> bool {
        let Some(host) = self.host.as_mut() else {
            return false;
        };
        match host.propose(SIM_GROUP, cmd.encode(), cmd.op_id) {
            Ok((index, term)) => {
                self.proposals.insert(cmd.op_id, (index, term));
                let op = match cmd.op {
                    RegisterOp::Write(v) => ClientOp::Write(v),
                    RegisterOp::Cas { expected, new } => ClientOp::Cas {
                        expected: Some(expected),
                        new: Some(new),
                    },
                };
                self.history
                    .borrow_mut()
                    .client_invoked(cmd.op_id, self.id, cmd.key, op);
                self.drive(out);
                true
            }
            Err(_) => false,
        }
    }

    /// Reads register `key` linearizably (through the leader's read index, or its lease),
    /// from any replica; answered once confirmed and applied. Returns whether it was asked.
    pub fn read(&mut self, op_id: u64, key: u64, mode: ReadMode, out: &mut SimOutputs) -> bool {
        let Some(host) = self.host.as_mut() else {
            return false;
        };
        if host.read(SIM_GROUP, mode, op_id).is_err() {
            return false;
        }
        self.history
            .borrow_mut()
            .client_invoked(op_id, self.id, key, ClientOp::Read);
        self.reads.insert(op_id, key);
        self.drive(out);
        true
    }

    /// Checks this replica against the history after a step (see
    /// [`SimHistory::check_replica`]).
    pub fn check(&self) {
        if let Some(raft) = self.raft() {
            self.history
                .borrow_mut()
                .check_replica(raft, self.restarted.replace(false));
        }
    }

    /// Runs the host's rounds until it has nothing to do, sending what they produce and
    /// settling clients' operations.
    pub fn drive(&mut self, out: &mut SimOutputs) {
        let now = self.now;
        for _ in 0..64 {
            let Some(host) = self.host.as_mut() else {
                return;
            };
            if !host.has_ready() {
                break;
            }
            host.round(now, &mut |messages| {
                for m in messages {
                    out.send(m.to, SimMessage::Raft(m));
                }
            });
            let events = host.take_events();
            self.handle_events(events, out);
        }
    }

    fn handle_events(
        &mut self,
        events: Vec<HostEvent<RegistersSource, Bytes>>,
        out: &mut SimOutputs,
    ) {
        for event in events {
            match event {
                HostEvent::Proposal { token, result } => {
                    let Some((index, term)) = self.proposals.remove(&token) else {
                        continue;
                    };
                    let mut history = self.history.borrow_mut();
                    match result {
                        Ok(_) => history.acknowledged.push((index, term, token)),
                        Err(HostError::Dropped) if history.clients.is_pending(token) => {
                            // Another entry holds the index: this proposal was never
                            // committed and never will be.
                            history.client_completed(token, Outcome::Failed);
                        }
                        // Indeterminate: it may still take effect; it stays open.
                        Err(_) => {}
                    }
                }
                HostEvent::Read { token, result } => {
                    let Some(key) = self.reads.remove(&token) else {
                        continue;
                    };
                    let outcome = match result {
                        Ok(_) => {
                            let value = self.registers().map_or(0, |r| r.get(key));
                            Outcome::Read(Some(value))
                        }
                        Err(_) => Outcome::Failed,
                    };
                    self.history.borrow_mut().client_completed(token, outcome);
                }
                HostEvent::SendSnapshot {
                    message,
                    mut source,
                    ..
                } => {
                    let peer = message.to;
                    let index = source.index();
                    let mut chunks = Vec::new();
                    while let Ok(Some(chunk)) = source.next_chunk() {
                        chunks.push(chunk);
                    }
                    self.transfers.insert(peer, index);
                    out.send(peer, SimMessage::Snapshot { message, chunks });
                    out.set_timer(
                        self.config.election_timeout * 3,
                        SimTimer::SnapshotTimeout { peer, index },
                    );
                }
                HostEvent::Leader { .. } => {}
                HostEvent::GroupFailed { group, error } => {
                    panic!(
                        "{}: group {group} failed in the simulation: {error}",
                        self.id
                    )
                }
            }
        }
    }

    /// A transfer to `peer` ended.
    fn end_transfer(&mut self, peer: NodeId, index: LogIndex, ok: bool, out: &mut SimOutputs) {
        if self.transfers.get(&peer) != Some(&index) {
            return;
        }
        self.transfers.remove(&peer);
        if let Some(host) = self.host.as_mut() {
            host.report_snapshot(SIM_GROUP, peer, if ok { Ok(index) } else { Err(()) });
        }
        self.drive(out);
    }

    /// Takes a snapshot transfer: writes its chunks into a sink, hands the result to the host.
    fn receive(&mut self, message: Message, chunks: Vec<Bytes>) -> bool {
        let Some(host) = self.host.as_mut() else {
            return false;
        };
        let crate::message::MessageBody::Snapshot { meta } = &message.body else {
            return false;
        };
        let Ok(mut sink) = host.receive_snapshot(SIM_GROUP, meta) else {
            return false;
        };
        if chunks.iter().any(|c| sink.write(c).is_err()) {
            return false;
        }
        let Ok(staged) = sink.finish() else {
            return false;
        };
        host.snapshot_received(message, staged);
        true
    }
}

impl Node for SimReplica {
    type Message = SimMessage;
    type Timer = SimTimer;

    fn on_start(&mut self, now: Instant, out: &mut SimOutputs) {
        self.now = now;
        let disk = std::mem::take(&mut self.disk);
        // The state machine restarts from its copy on disk; the log replays the rest.
        let registers = self.disk_registers.borrow().clone();
        self.incarnation += 1;
        let seed = self.seed ^ self.incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let raft = Raft::new(
            self.id,
            SIM_GROUP,
            self.config.clone(),
            disk,
            registers.applied_index(),
            seed,
            now,
        )
        .expect("a valid config and a readable memory store");
        let machine = SimMachine {
            id: self.id,
            registers,
            disk: self.disk_registers.clone(),
            history: self.history.clone(),
        };
        let mut host = RaftHost::new(self.id);
        host.add_group(raft, machine).expect("one group");
        self.host = Some(host);
        self.restarted.set(true);
        out.set_timer(self.tick, SimTimer::Tick);
    }

    fn on_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: SimMessage,
        out: &mut SimOutputs,
    ) {
        self.now = now;
        match message {
            SimMessage::Raft(m) => {
                if let Some(host) = self.host.as_mut() {
                    let _ = host.step(now, m);
                }
            }
            SimMessage::Snapshot { message, chunks } => {
                let Some(index) = (match &message.body {
                    crate::message::MessageBody::Snapshot { meta } => Some(meta.index),
                    _ => None,
                }) else {
                    return;
                };
                let ok = self.receive(message, chunks);
                out.send(from, SimMessage::SnapshotAck { index, ok });
            }
            SimMessage::SnapshotAck { index, ok } => self.end_transfer(from, index, ok, out),
        }
        self.drive(out);
    }

    fn on_timer(&mut self, now: Instant, timer: SimTimer, out: &mut SimOutputs) {
        self.now = now;
        match timer {
            SimTimer::Tick => {
                if let Some(host) = self.host.as_mut() {
                    host.tick(now);
                }
                self.drive(out);
                out.set_timer(self.tick, SimTimer::Tick);
            }
            SimTimer::SnapshotTimeout { peer, index } => self.end_transfer(peer, index, false, out),
        }
    }

    fn on_crash(&mut self) {
        if let Some(mut host) = self.host.take() {
            if let Some((mut raft, _)) = host.remove_group(SIM_GROUP) {
                self.disk = std::mem::take(raft.store_mut());
            }
        }
        self.proposals.clear();
        self.reads.clear();
        self.transfers.clear();
    }
}

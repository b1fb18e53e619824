//! Runs Raft replicas in `shoal-sim`'s deterministic simulator, with a register state
//! machine and a shared [`SimHistory`] that checks Raft's safety properties as events
//! happen.
//!
//! A [`SimReplica`] persists each ready synchronously into a [`MemLogStore`] that survives a
//! simulated crash (it is the replica's disk), together with the latest snapshot's bytes;
//! its register state machine is volatile and is rebuilt from the snapshot and the log on
//! restart, the way a real node's would be without a durable state machine.

use crate::config::RaftConfig;
use crate::entry::{Entry, EntryPayload, LogIndex, Term};
use crate::membership::Membership;
use crate::message::Message;
use crate::raft::{Raft, ReadMode};
use crate::ready::Ready;
use crate::snapshot::{Snapshot, StateMachine};
use crate::store::{LogStore, MemLogStore};
use bytes::Bytes;
use shoal_core::{Instant, NodeId, RangeId};
use shoal_sim::linearizability::{History, Outcome, RegisterOp as ClientOp};
use shoal_sim::{Node, Outputs};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// The group every simulated replica belongs to.
pub const SIM_GROUP: RangeId = RangeId::new(1);

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

impl StateMachine for Registers {
    /// Answers a command with the value before it (8 bytes LE) and whether it took effect
    /// (1 byte).
    fn apply(&mut self, entry: &Entry) -> Bytes {
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

    fn applied_index(&self) -> LogIndex {
        self.applied
    }

    fn snapshot(&mut self) -> Bytes {
        let mut out = Vec::with_capacity(8 + 16 * self.values.len());
        out.extend_from_slice(&self.applied.to_le_bytes());
        for (k, v) in &self.values {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.into()
    }

    fn restore(&mut self, snapshot: &Snapshot) {
        let data = &snapshot.data;
        *self = Registers {
            applied: snapshot.meta.index,
            ..Registers::default()
        };
        for pair in data.get(8..).unwrap_or_default().chunks_exact(16) {
            let k = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
            let v = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
            self.values.insert(k, v);
        }
    }
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

/// What a simulated replica's timer carries.
#[derive(Clone, Copy, Debug)]
pub enum SimTimer {
    /// The periodic tick.
    Tick,
}

/// One Raft replica in the simulator, with a register state machine.
pub struct SimReplica {
    id: NodeId,
    config: RaftConfig,
    seed: u64,
    tick: Duration,
    raft: Option<Raft<MemLogStore>>,
    /// The replica's disk while it is down.
    disk: MemLogStore,
    /// The latest snapshot's bytes on disk.
    disk_snapshot: Option<Snapshot>,
    /// A snapshot taken and not yet recorded by a ready.
    taken_snapshot: Option<Bytes>,
    registers: Registers,
    /// Proposals made here, by index: (term, command).
    proposals: BTreeMap<LogIndex, (Term, RegisterCommand)>,
    /// Reads asked here and not yet answered: op id to key.
    reads: HashMap<u64, u64>,
    /// Reads confirmed, waiting for the state machine to reach their index: (index, op id).
    confirmed_reads: Vec<(LogIndex, u64)>,
    history: SharedHistory,
    restarted: Cell<bool>,
    incarnation: u64,
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
            raft: None,
            disk,
            disk_snapshot: None,
            taken_snapshot: None,
            registers: Registers::default(),
            proposals: BTreeMap::new(),
            reads: HashMap::new(),
            confirmed_reads: Vec::new(),
            history,
            restarted: Cell::new(false),
            incarnation: 0,
        }
    }

    /// The Raft core, while the replica is up.
    pub fn raft(&self) -> Option<&Raft<MemLogStore>> {
        self.raft.as_ref()
    }

    /// The Raft core, while the replica is up, for operator actions (transfers, membership
    /// changes). Call [`SimReplica::drive`] afterwards.
    pub fn raft_mut(&mut self) -> Option<&mut Raft<MemLogStore>> {
        self.raft.as_mut()
    }

    /// The state machine.
    pub fn registers(&self) -> &Registers {
        &self.registers
    }

    /// Proposes a command if this replica leads. Returns whether it was appended.
    pub fn propose(&mut self, cmd: RegisterCommand, out: &mut Outputs<Message, SimTimer>) -> bool {
        let Some(raft) = self.raft.as_mut() else {
            return false;
        };
        match raft.propose(cmd.encode()) {
            Ok((index, term)) => {
                self.proposals.insert(index, (term, cmd));
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
    pub fn read(
        &mut self,
        op_id: u64,
        key: u64,
        mode: ReadMode,
        out: &mut Outputs<Message, SimTimer>,
    ) -> bool {
        let Some(raft) = self.raft.as_mut() else {
            return false;
        };
        self.history
            .borrow_mut()
            .client_invoked(op_id, self.id, key, ClientOp::Read);
        self.reads.insert(op_id, key);
        raft.read(op_id, mode);
        self.drive(out);
        true
    }

    /// Checks this replica against the history after a step (see
    /// [`SimHistory::check_replica`]).
    pub fn check(&self) {
        if let Some(raft) = &self.raft {
            self.history
                .borrow_mut()
                .check_replica(raft, self.restarted.replace(false));
        }
    }

    /// Takes every ready and does what it says: send, persist, apply.
    pub fn drive(&mut self, out: &mut Outputs<Message, SimTimer>) {
        for _ in 0..64 {
            let Some(raft) = self.raft.as_mut() else {
                return;
            };
            if !raft.has_ready() {
                return;
            }
            let ready = raft.ready();
            self.handle_ready(ready, out);
        }
    }

    fn handle_ready(&mut self, mut ready: Ready, out: &mut Outputs<Message, SimTimer>) {
        let raft = self.raft.as_mut().expect("up");
        for m in std::mem::take(&mut ready.messages) {
            out.send(m.to, m);
        }
        ready
            .write_to(raft.store_mut())
            .expect("the memory store takes every write the core asks for");
        if let Some(snapshot) = &ready.snapshot {
            self.registers.restore(snapshot);
            self.disk_snapshot = Some(snapshot.clone());
            self.proposals.clear();
            self.history.borrow_mut().snapshots_installed += 1;
        }
        if let Some((meta, _)) = &ready.compact {
            if let Some(data) = self.taken_snapshot.take() {
                self.disk_snapshot = Some(Snapshot {
                    meta: meta.clone(),
                    data,
                });
            }
        }
        raft.on_persisted(ready.persisted);
        for m in ready.persisted_messages {
            out.send(m.to, m);
        }
        let mut history = self.history.borrow_mut();
        for entry in &ready.committed {
            let _ = self.registers.apply(entry);
            history.on_applied(self.id, entry);
            // An operation took effect when it committed, before any replica applied it: the
            // first apply anywhere completes it in the client history (its proposer may
            // never hear back, and an open-ended operation costs the checker dearly).
            if let Some((op_id, outcome)) = self.registers.last_client_outcome(entry) {
                if history.clients.is_pending(op_id) {
                    history.client_completed(op_id, outcome);
                }
            }
            if let Some((term, cmd)) = self.proposals.remove(&entry.index) {
                if term == entry.term {
                    history.acknowledged.push((entry.index, term, cmd.op_id));
                } else if history.clients.is_pending(cmd.op_id) {
                    // Another entry holds the index: this proposal was never committed and
                    // never will be.
                    history.client_completed(cmd.op_id, Outcome::Failed);
                }
            }
        }
        self.confirmed_reads
            .extend(ready.read_states.iter().map(|r| (r.index, r.ctx)));
        for (op_id, _) in &ready.failed_reads {
            if self.reads.remove(op_id).is_some() {
                history.client_completed(*op_id, Outcome::Failed);
            }
        }
        let applied = self.registers.applied;
        let registers = &self.registers;
        let reads = &mut self.reads;
        self.confirmed_reads.retain(|&(index, op_id)| {
            if index > applied {
                return true;
            }
            if let Some(key) = reads.remove(&op_id) {
                history.client_completed(op_id, Outcome::Read(Some(registers.get(key))));
            }
            false
        });
        drop(history);
        if ready.snapshot_wanted {
            let data = self.registers.snapshot();
            self.taken_snapshot = Some(data.clone());
            raft.snapshot_taken(data);
        }
    }
}

impl Node for SimReplica {
    type Message = Message;
    type Timer = SimTimer;

    fn on_start(&mut self, now: Instant, out: &mut Outputs<Message, SimTimer>) {
        let disk = std::mem::take(&mut self.disk);
        self.registers = Registers::default();
        if let Some(snapshot) = &self.disk_snapshot {
            self.registers.restore(snapshot);
        }
        self.incarnation += 1;
        let seed = self.seed ^ self.incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let raft = Raft::new(
            self.id,
            SIM_GROUP,
            self.config.clone(),
            disk,
            self.registers.applied_index(),
            seed,
            now,
        )
        .expect("a valid config and a readable memory store");
        self.raft = Some(raft);
        self.restarted.set(true);
        out.set_timer(self.tick, SimTimer::Tick);
    }

    fn on_message(
        &mut self,
        now: Instant,
        _from: NodeId,
        message: Message,
        out: &mut Outputs<Message, SimTimer>,
    ) {
        if let Some(raft) = self.raft.as_mut() {
            raft.step(now, message);
        }
        self.drive(out);
    }

    fn on_timer(&mut self, now: Instant, _timer: SimTimer, out: &mut Outputs<Message, SimTimer>) {
        if let Some(raft) = self.raft.as_mut() {
            raft.tick(now);
        }
        self.drive(out);
        out.set_timer(self.tick, SimTimer::Tick);
    }

    fn on_crash(&mut self) {
        if let Some(mut raft) = self.raft.take() {
            self.disk = std::mem::take(raft.store_mut());
        }
        self.taken_snapshot = None;
        self.proposals.clear();
        self.reads.clear();
        self.confirmed_reads.clear();
    }
}

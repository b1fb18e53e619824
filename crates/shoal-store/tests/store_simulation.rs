//! Whole stores in the deterministic simulator: three nodes, each with its real engine and
//! WAL on disk, serve register operations on keys spread over dozens of ranges while the
//! ranges split under load (ids from the meta range's allocator), nodes crash and restart,
//! the network loses, duplicates and reorders messages and partitions a node away. After
//! every step no range has two leaders in one term and no group has failed. At the end,
//! with faults healed and every node restarted once more, every range's replicas hold the
//! same data at one applied index, and the whole history, final reads of every key
//! included, is linearizable: so no acknowledged write was lost.
//!
//! The seeds are fixed; `SHOAL_SIM_SEED=s` replays one, and a failure prints its seed.

use shoal_consensus::RaftConfig;
use shoal_core::{NodeId, RangeId, Rng};
use shoal_sim::linearizability::{check, History, Outcome, RegisterOp, Verdict};
use shoal_sim::{Latency, LinkConfig, NodeStatus, SimConfig, SimError, Simulation};
use shoal_store::sim::{SimRequest, SimResult, SimStore};
use shoal_store::{Condition, WriteOp, WriteOutcome, META_RANGE};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const NODES: u64 = 3;
/// Registers; each is a key, and splits fall between them.
const KEYS: u64 = 40;
/// Clients, each with at most one operation in flight.
const CLIENTS: u64 = 8;
const SLICE: Duration = Duration::from_millis(20);
/// Slices of faults, splits and load.
const CHAOS_SLICES: u32 = 600;

fn key(i: u64) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

fn n(raw: u64) -> NodeId {
    NodeId::new(raw)
}

fn raft_config() -> RaftConfig {
    RaftConfig {
        heartbeat_interval: Duration::from_millis(40),
        election_timeout: Duration::from_millis(300),
        max_clock_drift: Duration::from_millis(30),
        snapshot_after_entries: 100,
        compaction_trailing_entries: 20,
        ..RaftConfig::default()
    }
}

fn link(loss: f64) -> LinkConfig {
    LinkConfig {
        latency: Latency::Uniform {
            min: Duration::from_millis(1),
            max: Duration::from_millis(6),
        },
        loss,
        duplicate: 0.01,
        reorder: 0.05,
        reorder_window: Duration::from_millis(10),
    }
}

/// A client's operation in flight.
struct InFlight {
    op: u64,
    client: u64,
    node: NodeId,
    kind: RegisterOp,
}

/// A split under way: waiting for an id, then for the split.
enum Splitting {
    Allocating { token: u64, at: Vec<u8> },
    Splitting { token: u64 },
}

struct Run {
    sim: Simulation<SimStore>,
    history: History,
    rng: shoal_core::DetRng,
    next_token: u64,
    in_flight: HashMap<u64, InFlight>,
    /// Each client's current process id (a new one after an operation of unknown outcome,
    /// as Jepsen does).
    process: BTreeMap<u64, u64>,
    splitting: Option<Splitting>,
    /// The stores serve stale reads (a deliberate bug): reads go to any replica.
    stale_reads: bool,
    splits: u64,
    crashes: u64,
    isolations: u64,
    acknowledged_writes: u64,
    _dirs: Vec<tempfile::TempDir>,
}

fn encode(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn decode(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// No range has two leaders in one term, and nothing failed that never should.
fn invariant(sim: &Simulation<SimStore>) -> Result<(), String> {
    let mut leaders: HashMap<(RangeId, u64), NodeId> = HashMap::new();
    for (id, store, status) in sim.nodes() {
        if let Some(failure) = store.failures().first() {
            return Err(failure.clone());
        }
        if status != NodeStatus::Up {
            continue;
        }
        for (range, term) in store.leaderships() {
            if let Some(other) = leaders.insert((range, term), id) {
                return Err(format!(
                    "{range} has two leaders in term {term}: {other} and {id}"
                ));
            }
        }
    }
    Ok(())
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut sim = Simulation::new(
            seed,
            SimConfig {
                link: link(0.02),
                max_steps: 50_000_000,
                ..SimConfig::default()
            },
        );
        let peers: Vec<NodeId> = (1..=NODES).map(n).collect();
        let mut dirs = Vec::new();
        for &id in &peers {
            let dir = tempfile::tempdir().unwrap();
            let store = SimStore::new(id, dir.path(), raft_config(), peers.clone(), peers.clone());
            dirs.push(dir);
            sim.add_node(id, store);
        }
        let rng = sim.fork_rng();
        Run {
            sim,
            history: History::new(None),
            rng,
            next_token: 0,
            in_flight: HashMap::new(),
            process: (0..CLIENTS).map(|c| (c, c)).collect(),
            splitting: None,
            stale_reads: false,
            splits: 0,
            crashes: 0,
            isolations: 0,
            acknowledged_writes: 0,
            _dirs: dirs,
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The node leading the range that holds `key`, if any.
    fn leader_for(&self, key: &[u8]) -> Option<NodeId> {
        self.sim
            .nodes()
            .filter(|(_, _, s)| *s == NodeStatus::Up)
            .find(|(_, store, _)| store.leads(key).is_some())
            .map(|(id, _, _)| id)
    }

    fn submit(&mut self, node: NodeId, token: u64, request: SimRequest) -> bool {
        self.sim
            .act(node, |store, _, out| store.submit(token, request, out))
            .is_some_and(|r| r.is_ok())
    }

    /// Idle clients start an operation on a random register at its range's leader.
    fn start_operations(&mut self, final_reads: Option<&mut Vec<u64>>) {
        let busy: Vec<u64> = self.in_flight.values().map(|f| f.client).collect();
        let idle: Vec<u64> = (0..CLIENTS).filter(|c| !busy.contains(c)).collect();
        let mut final_reads = final_reads;
        for client in idle {
            let register = match final_reads.as_deref_mut() {
                Some(left) => match left.pop() {
                    Some(k) => k,
                    None => return,
                },
                None => self.rng.below(KEYS),
            };
            let k = key(register);
            let token = self.token();
            let roll = self.rng.below(10);
            let (kind, request) = if final_reads.is_some() || roll < 4 {
                (RegisterOp::Read, SimRequest::Get(k.clone()))
            } else if roll < 8 {
                let v = token;
                (
                    RegisterOp::Write(v),
                    SimRequest::Write(vec![WriteOp::Put {
                        key: k.clone(),
                        value: encode(v),
                    }]),
                )
            } else {
                let expected = if self.rng.chance(0.3) {
                    None
                } else {
                    Some(self.rng.below(token.max(1)))
                };
                let expect = expected.map_or(Condition::Absent, |v| Condition::Value(encode(v)));
                (
                    RegisterOp::Cas {
                        expected,
                        new: Some(token),
                    },
                    SimRequest::Write(vec![WriteOp::CompareAndSet {
                        key: k.clone(),
                        expect,
                        new: Some(encode(token)),
                    }]),
                )
            };
            let target = if self.stale_reads && kind == RegisterOp::Read {
                let node = n(1 + self.rng.below(NODES));
                self.sim
                    .node(node)
                    .is_some_and(|s| s.hosts(&k).is_some())
                    .then_some(node)
            } else {
                self.leader_for(&k)
            };
            let Some(node) = target else {
                if let Some(left) = final_reads.as_deref_mut() {
                    left.push(register);
                }
                continue;
            };
            if !self.submit(node, token, request) {
                if let Some(left) = final_reads.as_deref_mut() {
                    left.push(register);
                }
                continue;
            }
            let process = self.process[&client];
            self.history
                .invoke(token, process, String::from_utf8(k).unwrap(), kind)
                .unwrap();
            self.in_flight.insert(
                token,
                InFlight {
                    op: token,
                    client,
                    node,
                    kind,
                },
            );
        }
    }

    /// Collects every node's completions into the history (and the split's progress).
    fn collect(&mut self) {
        let ids = self.sim.node_ids();
        for id in ids {
            let done = self.sim.node_mut(id).unwrap().take_completions();
            for completion in done {
                if let Some(op) = self.in_flight.remove(&completion.token) {
                    assert_eq!(op.node, id);
                    let outcome = match (&op.kind, &completion.result) {
                        (RegisterOp::Read, SimResult::Value(v)) => {
                            Outcome::Read(v.as_ref().and_then(|v| decode(&v.value)))
                        }
                        (RegisterOp::Write(_), SimResult::Written(_)) => {
                            self.acknowledged_writes += 1;
                            Outcome::Written
                        }
                        (RegisterOp::Cas { .. }, SimResult::Written(outcomes)) => {
                            let swapped = matches!(outcomes[..], [WriteOutcome::Written { .. }]);
                            self.acknowledged_writes += u64::from(swapped);
                            Outcome::Swapped(swapped)
                        }
                        (_, SimResult::Failed(_)) => Outcome::Failed,
                        (_, SimResult::Unknown) => {
                            // The client's process is gone with its operation open.
                            let process = self.process.get_mut(&op.client).unwrap();
                            *process += CLIENTS;
                            Outcome::Unknown
                        }
                        (kind, result) => panic!("{kind:?} answered {result:?}"),
                    };
                    self.history.complete(op.op, outcome).unwrap();
                    continue;
                }
                self.split_progress(id, completion.token, completion.result);
            }
        }
    }

    fn split_progress(&mut self, node: NodeId, token: u64, result: SimResult) {
        match self.splitting.take() {
            Some(Splitting::Allocating { token: t, at }) if t == token => {
                let SimResult::Allocated(right) = result else {
                    return;
                };
                let Some(leader) = self.leader_for(&at) else {
                    return;
                };
                let range = self
                    .sim
                    .node(leader)
                    .and_then(|s| s.leads(&at))
                    .map(|d| d.id);
                let Some(range) = range else { return };
                let token = self.token();
                if self.submit(leader, token, SimRequest::Split { range, at, right }) {
                    self.splitting = Some(Splitting::Splitting { token });
                }
            }
            Some(Splitting::Splitting { token: t }) if t == token => {
                if result == SimResult::Split {
                    self.splits += 1;
                }
            }
            other => {
                let _ = node;
                self.splitting = other;
            }
        }
    }

    /// Starts a split at a random point between two registers, if none is under way.
    fn maybe_split(&mut self) {
        if self.splitting.is_some() || !self.rng.chance(0.1) {
            return;
        }
        let at = format!("k{:03}-", self.rng.below(KEYS)).into_bytes();
        let meta_leader = self
            .sim
            .nodes()
            .filter(|(_, s, status)| *status == NodeStatus::Up && s.leads_range(META_RANGE))
            .map(|(id, _, _)| id)
            .next();
        let Some(meta_leader) = meta_leader else {
            return;
        };
        let token = self.token();
        if self.submit(meta_leader, token, SimRequest::Allocate) {
            self.splitting = Some(Splitting::Allocating { token, at });
        }
    }

    /// A fault now and then: crash or restart a node, cut one off, heal, change the loss.
    fn maybe_fault(&mut self) {
        if !self.rng.chance(0.03) {
            return;
        }
        let down: Vec<NodeId> = self
            .sim
            .nodes()
            .filter(|(_, _, s)| *s != NodeStatus::Up)
            .map(|(id, _, _)| id)
            .collect();
        let node = n(1 + self.rng.below(NODES));
        match self.rng.below(4) {
            0 if down.is_empty() => {
                self.sim.crash(node);
                self.crashes += 1;
            }
            1 => {
                for id in down {
                    self.sim.restart(id);
                }
            }
            2 => {
                let others: Vec<NodeId> = (1..=NODES).map(n).filter(|&o| o != node).collect();
                self.sim.network_mut().heal();
                self.sim.network_mut().isolate(node, others);
                self.isolations += 1;
            }
            _ => {
                let loss = self.rng.unit_f64() * 0.1;
                self.sim.network_mut().heal();
                self.sim.network_mut().set_default_link(link(loss));
            }
        }
    }

    fn run(&mut self, slices: u32, mut each: impl FnMut(&mut Run)) -> Result<(), SimError> {
        for _ in 0..slices {
            self.sim.run_for(SLICE, invariant)?;
            self.collect();
            each(self);
        }
        Ok(())
    }
}

/// Every range's replicas hold the same data once they reach one applied index.
fn replicas_agree(run: &mut Run) -> Result<usize, String> {
    let ranges: Vec<RangeId> = run
        .sim
        .node(n(1))
        .unwrap()
        .descriptors()
        .iter()
        .map(|d| d.id)
        .collect();
    for &range in &ranges {
        let mut agreed = false;
        for _ in 0..250 {
            let applied: Vec<Option<u64>> = (1..=NODES)
                .map(|i| run.sim.node(n(i)).unwrap().applied(range))
                .collect();
            if applied[0].is_some() && applied.iter().all(|a| *a == applied[0]) {
                let contents: Vec<_> = (1..=NODES)
                    .map(|i| {
                        let engine = run.sim.node(n(i)).unwrap().engine().unwrap();
                        engine
                            .scan(range, &shoal_storage::Scan::all(100_000))
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<_, _>>()?;
                if contents.iter().any(|c| *c != contents[0]) {
                    return Err(format!("{range}: replicas differ at applied {applied:?}"));
                }
                agreed = true;
                break;
            }
            run.sim
                .run_for(SLICE, invariant)
                .map_err(|e| e.to_string())?;
        }
        if !agreed {
            return Err(format!("{range}: replicas never reached one applied index"));
        }
    }
    Ok(ranges.len())
}

fn run_seed(seed: u64, stale_reads: bool) -> Result<String, String> {
    let mut run = Run::new(seed);
    if stale_reads {
        run.stale_reads = true;
        for id in (1..=NODES).map(n) {
            run.sim.node_mut(id).unwrap().serve_stale_reads(true);
        }
    }
    let fail = |e: SimError| e.to_string();
    // Load, splits and faults.
    run.run(CHAOS_SLICES, |run| {
        run.maybe_fault();
        run.maybe_split();
        run.start_operations(None);
    })
    .map_err(fail)?;
    // Heal, bring every node back, let the clients finish.
    run.sim.network_mut().heal();
    run.sim.network_mut().set_default_link(link(0.0));
    for id in (1..=NODES).map(n) {
        run.sim.restart(id);
    }
    run.run(100, |_| {}).map_err(fail)?;
    // Every node crashes at once and restarts: what was acknowledged is on disk.
    for id in (1..=NODES).map(n) {
        run.sim.crash(id);
    }
    for id in (1..=NODES).map(n) {
        run.sim.restart(id);
    }
    run.run(100, |_| {}).map_err(fail)?;
    // Final reads of every register, until each has one answered.
    let mut left: Vec<u64> = (0..KEYS).collect();
    for _ in 0..500 {
        if left.is_empty() && run.in_flight.is_empty() {
            break;
        }
        run.start_operations(Some(&mut left));
        run.sim.run_for(SLICE, invariant).map_err(fail)?;
        run.collect();
    }
    if !left.is_empty() {
        return Err(format!("registers never read at the end: {left:?}"));
    }
    let ranges = replicas_agree(&mut run)?;
    match check(&run.history, 20_000_000) {
        Verdict::Linearizable => {}
        verdict => {
            return Err(format!(
                "not linearizable: {verdict:?}\n{}",
                run.history.to_text()
            ))
        }
    }
    // A run whose faults or splits never happened proves nothing.
    if run.splits < 10 || run.crashes == 0 || run.isolations == 0 {
        return Err(format!(
            "the run did not exercise enough: {} splits, {} crashes, {} isolations",
            run.splits, run.crashes, run.isolations
        ));
    }
    Ok(format!(
        "seed {seed}: {} operations, {} acknowledged writes, {} splits, {ranges} ranges, \
         {} crashes, {} isolations, {} snapshots, {} steps",
        run.history.operations().len(),
        run.acknowledged_writes,
        run.splits,
        run.crashes,
        run.isolations,
        (1..=NODES)
            .map(|i| run.sim.node(n(i)).unwrap().snapshots_received())
            .sum::<u64>(),
        run.sim.stats().steps
    ))
}

#[test]
fn whole_stores_stay_linearizable_and_lose_nothing_under_faults_and_splits() {
    for seed in shoal_sim::seeds_from_env_or(1, 3) {
        match run_seed(seed, false) {
            Ok(summary) => eprintln!("{summary}"),
            Err(e) => panic!(
                "seed {seed} failed (replay with {}={seed}): {e}",
                shoal_sim::SEED_ENV
            ),
        }
    }
}

/// The checks bite: stores that answer reads from any replica without a read barrier are
/// caught serving a stale value.
#[test]
fn the_checks_catch_stores_that_serve_stale_reads() {
    let caught = [1, 2]
        .into_iter()
        .any(|seed| matches!(run_seed(seed, true), Err(e) if e.starts_with("not linearizable")));
    assert!(caught, "stale reads went unnoticed");
}

//! Raft in the deterministic simulator: replicas on a lossy, duplicating, reordering network
//! crash and restart, get partitioned, change membership (learners added, promoted, voters
//! removed), hand leadership over, snapshot and compact on request, while clients propose.
//! After every step the shared history checks election safety, state machine safety (which
//! covers log matching of committed entries), leader completeness and monotonic
//! term/commit/applied; log matching of whole logs is checked every few hundred steps. At
//! the end, with faults healed, every member must have applied every acknowledged proposal
//! and agree.
//!
//! `SHOAL_RAFT_SEEDS=N` runs N seeds per test (default 200, a few seconds; thousands before a
//! release), and `SHOAL_SIM_SEED=s` replays one. A failure prints its seed and appends it to
//! `raft-sim-failures.txt` in Cargo's test temp directory (`target/tmp`).

use shoal_consensus::sim::{RegisterCommand, RegisterOp, SharedHistory, SimHistory, SimReplica};
use shoal_consensus::{ConfChange, LearnerKind, Membership, RaftConfig, ReadMode};
use shoal_core::{NodeId, Rng};
use shoal_sim::linearizability::{self, Verdict};
use shoal_sim::{Latency, LinkConfig, NodeStatus, SimConfig, SimError, Simulation};
use std::collections::BTreeSet;
use std::time::Duration;

const SLICE: Duration = Duration::from_millis(50);

/// Registers the clients use. Enough that few operations on one register overlap in time:
/// the linearizability search is exponential in that overlap.
const KEYS: u64 = 32;

/// Short timeouts (many elections per run), small snapshots, and pre-vote and check-quorum
/// each on or off by seed, so the core rules are tested without the protections too.
fn config(rng: &mut impl Rng) -> RaftConfig {
    RaftConfig {
        heartbeat_interval: Duration::from_millis(40),
        election_timeout: Duration::from_millis(300),
        max_clock_drift: Duration::from_millis(30),
        pre_vote: rng.chance(0.5),
        check_quorum: rng.chance(0.5),
        snapshot_after_entries: 60,
        compaction_trailing_entries: 20,
        ..RaftConfig::default()
    }
}

fn link(rng: &mut impl Rng) -> LinkConfig {
    LinkConfig {
        latency: Latency::Uniform {
            min: Duration::from_millis(1),
            max: Duration::from_millis(8),
        },
        loss: rng.unit_f64() * 0.2,
        duplicate: 0.02,
        reorder: 0.05,
        reorder_window: Duration::from_millis(20),
    }
}

/// What one seed did, for the summary.
#[derive(Debug, Default)]
struct Outcome {
    acknowledged: usize,
    applied: u64,
    leader_terms: usize,
    conf_changes: usize,
    snapshots_installed: u64,
    /// Reads answered (and checked for linearizability).
    reads: usize,
    /// Slices after which some live replica was quiet.
    quiesced: usize,
}

fn invariant(sim: &Simulation<SimReplica>, history: &SharedHistory) -> Result<(), String> {
    for (_, replica, status) in sim.nodes() {
        if status == NodeStatus::Up {
            replica.check();
        }
    }
    check_match_indexes(sim)?;
    if sim.stats().steps.is_multiple_of(500) {
        let up: Vec<_> = sim
            .nodes()
            .filter(|(_, _, s)| *s == NodeStatus::Up)
            .filter_map(|(_, r, _)| r.raft())
            .collect();
        let mut h = history.borrow_mut();
        for (i, a) in up.iter().enumerate() {
            for b in &up[i + 1..] {
                h.check_log_matching(a, b);
            }
        }
    }
    match history.borrow().violation() {
        Some(v) => Err(v.to_owned()),
        None => Ok(()),
    }
}

/// The leader of the highest term (a removed node may still lead an old term until it hears
/// of a newer one).
/// A follower never holds less than its leader (of the same term) counts as replicated on
/// it: acknowledged entries are not dropped.
fn check_match_indexes(sim: &Simulation<SimReplica>) -> Result<(), String> {
    let up: Vec<_> = sim
        .nodes()
        .filter(|(_, _, s)| *s == NodeStatus::Up)
        .filter_map(|(_, r, _)| r.raft())
        .collect();
    for leader in up.iter().filter(|r| r.is_leader()) {
        for replica in leader.status().replicas {
            let Some(follower) = up.iter().find(|f| f.id() == replica.node) else {
                continue;
            };
            if follower.term() == leader.term() && replica.match_index > follower.last_index() {
                return Err(format!(
                    "{} (term {}) counts {} as holding {}, but its log ends at {}",
                    leader.id(),
                    leader.term(),
                    replica.node,
                    replica.match_index,
                    follower.last_index()
                ));
            }
        }
    }
    Ok(())
}

fn leader(sim: &Simulation<SimReplica>) -> Option<NodeId> {
    sim.nodes()
        .filter(|(_, _, s)| *s == NodeStatus::Up)
        .filter_map(|(id, r, _)| {
            r.raft()
                .filter(|raft| raft.is_leader())
                .map(|raft| (raft.term(), id))
        })
        .max()
        .map(|(_, id)| id)
}

/// A perfect failure detector: every live replica hears of every node that is down or
/// that it cannot reach.
fn tell_who_is_down(sim: &mut Simulation<SimReplica>, all: &[NodeId]) {
    let status: Vec<(NodeId, bool)> = all
        .iter()
        .map(|&n| (n, sim.status(n) == Some(NodeStatus::Up)))
        .collect();
    for &(me, up) in &status {
        if !up {
            continue;
        }
        for &(other, other_up) in &status {
            if other != me && (!other_up || sim.network_mut().is_blocked(other, me)) {
                sim.act(me, |r, _, out| {
                    if let Some(raft) = r.raft_mut() {
                        raft.peer_down(other);
                    }
                    r.drive(out);
                });
            }
        }
    }
}

/// What a seed's clients and operator do besides proposing.
#[derive(Clone, Copy, Debug)]
struct Workload {
    /// Membership changes (add learner, promote, remove).
    churn: bool,
    /// Linearizable reads (ReadIndex or lease) from random replicas.
    reads: bool,
    /// Groups quiesce when idle: clients go quiet one second in two, and a perfect failure
    /// detector tells every live replica, after each slice, which nodes are down or cut
    /// off from it ([`shoal_consensus::Raft::peer_down`]), as membership does for a store.
    quiesce: bool,
}

fn run_seed(seed: u64, workload: Workload) -> Result<Outcome, SimError> {
    let churn = workload.churn;
    let history = SimHistory::shared();
    let mut setup = shoal_core::DetRng::from_seed(seed);
    let config = RaftConfig {
        quiesce: workload.quiesce,
        ..config(&mut setup)
    };
    let mut sim = Simulation::new(
        seed,
        SimConfig {
            link: link(&mut setup),
            max_steps: 20_000_000,
            ..SimConfig::default()
        },
    );
    let group_size = if setup.chance(0.5) { 3 } else { 5 };
    let founders: Vec<NodeId> = (1..=group_size).map(NodeId::new).collect();
    for &id in &founders {
        let replica = SimReplica::founder(
            id,
            Membership::new(founders.clone()),
            config.clone(),
            seed ^ id.get(),
            history.clone(),
        );
        sim.add_node(id, replica);
    }
    let mut rng = sim.fork_rng();
    let mut all: Vec<NodeId> = founders.clone();
    let mut removed: BTreeSet<NodeId> = BTreeSet::new();
    let mut next_id = group_size + 1;
    let mut op_id = 0;
    let mut outcome = Outcome::default();
    let check = |sim: &Simulation<SimReplica>| invariant(sim, &history);

    // Faults and churn.
    for slice in 0..400 {
        sim.run_for(SLICE, check)?;
        if workload.quiesce {
            tell_who_is_down(&mut sim, &all);
            let quiet = sim
                .nodes()
                .any(|(_, r, s)| s == NodeStatus::Up && r.raft().is_some_and(|r| r.is_quiet()));
            outcome.quiesced += usize::from(quiet);
        }
        let idle = workload.quiesce && (slice / 20) % 2 == 1;
        for _ in 0..if idle { 0 } else { 3 } {
            let target = all[rng.below(all.len() as u64) as usize];
            op_id += 1;
            let cmd = RegisterCommand {
                op_id,
                key: rng.below(KEYS),
                op: if rng.chance(0.7) {
                    RegisterOp::Write(op_id)
                } else {
                    RegisterOp::Cas {
                        expected: rng.below(op_id + 1),
                        new: op_id,
                    }
                },
            };
            sim.act(target, |r, _, out| r.propose(cmd, out));
        }
        for _ in 0..if workload.reads && !idle { 2 } else { 0 } {
            let target = all[rng.below(all.len() as u64) as usize];
            op_id += 1;
            let key = rng.below(KEYS);
            let mode = if rng.chance(0.5) {
                ReadMode::Lease
            } else {
                ReadMode::Safe
            };
            sim.act(target, |r, _, out| r.read(op_id, key, mode, out));
        }
        // A driver asks replicas to compact whenever their entries keep old WAL segments:
        // here, any replica, at any moment (a leader must keep what its followers need).
        if rng.chance(0.1) {
            let target = all[rng.below(all.len() as u64) as usize];
            sim.act(target, |r, _, out| {
                let _ = r.raft_mut().map(|raft| raft.request_compaction());
                r.drive(out);
            });
        }
        if !rng.chance(0.15) {
            continue;
        }
        let live: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|n| !removed.contains(n))
            .collect();
        match rng.below(if churn { 7 } else { 5 }) {
            0 => {
                let victim = live[rng.below(live.len() as u64) as usize];
                sim.crash(victim);
            }
            1 => {
                for &n in &all {
                    sim.restart(n);
                }
            }
            2 => {
                let mut shuffled = live.clone();
                rng.shuffle(&mut shuffled);
                let cut = 1 + rng.below(shuffled.len() as u64 - 1) as usize;
                let (a, b) = shuffled.split_at(cut);
                sim.network_mut().partition(a, b);
            }
            3 => sim.network_mut().heal(),
            4 => {
                if let Some(l) = leader(&sim) {
                    let target = live[rng.below(live.len() as u64) as usize];
                    sim.act(l, |r, _, out| {
                        let _ = r.raft_mut().map(|raft| raft.transfer_leader(target));
                        r.drive(out);
                    });
                }
            }
            _ => {
                let Some(l) = leader(&sim) else { continue };
                let membership = sim
                    .node(l)
                    .and_then(|r| r.raft())
                    .map(|r| r.membership().clone());
                let Some(membership) = membership else {
                    continue;
                };
                let change = if let Some(&learner) = membership.learners().iter().next() {
                    ConfChange::PromoteLearner(learner)
                } else if membership.voters().len() > 3 && rng.chance(0.5) {
                    let voters: Vec<NodeId> = membership.voters().iter().copied().collect();
                    ConfChange::RemoveNode(voters[rng.below(voters.len() as u64) as usize])
                } else if all.len() < 9 {
                    let id = NodeId::new(next_id);
                    next_id += 1;
                    sim.add_node(
                        id,
                        SimReplica::joiner(id, config.clone(), seed ^ id.get(), history.clone()),
                    );
                    all.push(id);
                    ConfChange::AddNode {
                        node: id,
                        kind: LearnerKind::Promotable,
                    }
                } else {
                    continue;
                };
                let accepted = sim
                    .act(l, |r, _, out| {
                        let ok = r
                            .raft_mut()
                            .map(|raft| raft.propose_conf_change(change.clone()).is_ok());
                        r.drive(out);
                        ok
                    })
                    .flatten()
                    .unwrap_or(false);
                if accepted {
                    outcome.conf_changes += 1;
                    if let ConfChange::RemoveNode(node) = change {
                        removed.insert(node);
                    }
                }
            }
        }
    }

    // Heal everything and let the group settle.
    sim.network_mut().heal();
    sim.network_mut()
        .set_default_link(LinkConfig::reliable(Latency::Fixed(Duration::from_millis(
            2,
        ))));
    for &n in &all {
        sim.restart(n);
    }
    sim.run_for(Duration::from_secs(20), check)?;

    let Some(l) = leader(&sim) else {
        return Err(sim.error("no leader after healing"));
    };
    let final_membership = sim
        .node(l)
        .and_then(|r| r.raft())
        .map(|r| r.membership().clone())
        .unwrap_or_default();
    let leader_state = sim
        .node(l)
        .and_then(|r| r.registers().cloned())
        .unwrap_or_default();
    let leader_applied = sim
        .node(l)
        .and_then(|r| r.raft())
        .map_or(0, |r| r.applied_index());
    for member in final_membership.members() {
        let replica = sim.node(member).expect("a member is simulated");
        let raft = replica
            .raft()
            .ok_or_else(|| sim.error(format!("{member} is down after healing")))?;
        if raft.applied_index() != leader_applied
            || replica.registers().map(|r| r.values()) != Some(leader_state.values())
        {
            if std::env::var("SHOAL_DEBUG").is_ok() {
                for (id, r, st) in sim.nodes() {
                    eprintln!("{id} {st:?} {:#?}", r.raft().map(|r| r.status()));
                }
            }
            return Err(sim.error(format!(
                "{member} applied {} with {:?}; the leader {l} applied {leader_applied} with {:?}",
                raft.applied_index(),
                replica.registers().map(|r| r.values()),
                leader_state.values()
            )));
        }
    }
    let h = history.borrow();
    if let Some((index, term, op)) = h
        .acknowledged()
        .iter()
        .find(|(i, _, _)| *i > leader_applied)
    {
        return Err(sim.error(format!(
            "acknowledged op {op} at ({index}, {term}) is not applied by the leader"
        )));
    }
    match linearizability::check(h.clients(), 50_000_000) {
        Verdict::Linearizable => {}
        verdict => {
            if std::env::var("SHOAL_DEBUG").is_ok() {
                eprintln!("{}", h.clients().to_text());
            }
            return Err(sim.error(format!("client history: {verdict:?}")));
        }
    }
    outcome.reads = h
        .clients()
        .operations()
        .iter()
        .filter(|o| matches!(o.outcome, linearizability::Outcome::Read(_)))
        .count();
    outcome.acknowledged = h.acknowledged().len();
    outcome.applied = leader_applied;
    outcome.leader_terms = h.leader_terms();
    outcome.snapshots_installed = h.snapshots_installed();
    Ok(outcome)
}

fn seeds() -> Vec<u64> {
    let count = std::env::var("SHOAL_RAFT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    shoal_sim::seeds_from_env_or(0x5EED_0003, count)
}

/// Appends a failure (with its seed) to `raft-sim-failures.txt` in Cargo's test temp
/// directory, so a rare seed is kept even when the test output is not.
fn record_failure(message: &str) {
    use std::io::Write;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("raft-sim-failures.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(file, "{message}");
    }
    eprintln!("(also recorded in {})", path.display());
}

fn run_seeds(workload: Workload) -> Outcome {
    let mut totals = Outcome::default();
    let seeds = seeds();
    for &seed in &seeds {
        match run_seed(seed, workload) {
            Ok(o) => {
                totals.acknowledged += o.acknowledged;
                totals.applied += o.applied;
                totals.leader_terms += o.leader_terms;
                totals.conf_changes += o.conf_changes;
                totals.snapshots_installed += o.snapshots_installed;
                totals.reads += o.reads;
                totals.quiesced += o.quiesced;
            }
            Err(e) => {
                record_failure(&e.to_string());
                panic!("{e}")
            }
        }
    }
    eprintln!("{} seeds: {totals:?}", seeds.len());
    totals
}

#[test]
fn raft_stays_safe_and_live_under_crashes_partitions_loss_and_transfers() {
    let totals = run_seeds(Workload {
        churn: false,
        reads: true,
        quiesce: false,
    });
    assert!(totals.acknowledged > 0 && totals.snapshots_installed > 0 && totals.reads > 0);
}

/// Membership churn (learners added, promoted, voters removed) on top of the faults.
#[test]
fn raft_stays_safe_and_live_under_faults_and_membership_churn() {
    let totals = run_seeds(Workload {
        churn: true,
        reads: true,
        quiesce: false,
    });
    assert!(totals.acknowledged > 0 && totals.conf_changes > 0 && totals.snapshots_installed > 0);
    assert!(totals.reads > 0);
}

/// Idle groups quiesce, under the same faults and churn: a quiet leader that crashes or
/// is cut off is replaced once the failure detector says so, and nothing is lost.
#[test]
fn raft_stays_safe_and_live_when_idle_groups_quiesce() {
    let totals = run_seeds(Workload {
        churn: true,
        reads: true,
        quiesce: true,
    });
    assert!(totals.acknowledged > 0 && totals.conf_changes > 0 && totals.reads > 0);
    assert!(totals.quiesced > 0, "no group ever went quiet");
}

/// Seeds that once failed. In the first two, a voter was removed while cut off and kept
/// leading its old term: members dropped its messages without telling it of the newer term.
#[test]
fn regression_seeds() {
    for seed in [9_499_466_914_624_073_909, 10_009_460_926_595_356_309] {
        let workload = Workload {
            churn: true,
            reads: false,
            quiesce: false,
        };
        if let Err(e) = run_seed(seed, workload) {
            panic!("{e}");
        }
    }
    // A snapshot the follower's log already covered replaced its log, dropping acknowledged
    // entries.
    let workload = Workload {
        churn: false,
        reads: true,
        quiesce: false,
    };
    if let Err(e) = run_seed(14_482_594_386_317_032_024, workload) {
        panic!("{e}");
    }
}

//! The simulator's promises: determinism by seed, and faithful faults.

use shoal_core::{DetRng, Instant, NodeId, Rng};
use shoal_sim::{Latency, LinkConfig, Node, NodeStatus, Outputs, SimConfig, Simulation, TraceKind};
use std::collections::BTreeSet;
use std::time::Duration;

const ROUND: Duration = Duration::from_millis(10);

/// A small gossip protocol: every round each node sends what it knows to a random peer, with
/// a per-sender sequence number so receivers can see reordering and duplication.
#[derive(Debug)]
struct Gossip {
    peers: Vec<NodeId>,
    rng: DetRng,
    /// Survives crashes (as if on disk).
    durable: BTreeSet<u64>,
    /// Lost on crash.
    volatile_rounds: u64,
    starts: u64,
    next_seq: u64,
    last_seq_from: std::collections::BTreeMap<NodeId, u64>,
    out_of_order: u64,
    duplicates: u64,
    received: u64,
}

#[derive(Clone, Debug)]
struct Msg {
    seq: u64,
    values: BTreeSet<u64>,
}

impl Gossip {
    fn new(me: u64, n: u64, rng: DetRng) -> Self {
        Self {
            peers: (0..n).filter(|&p| p != me).map(NodeId::new).collect(),
            rng,
            durable: BTreeSet::from([me]),
            volatile_rounds: 0,
            starts: 0,
            next_seq: 0,
            last_seq_from: Default::default(),
            out_of_order: 0,
            duplicates: 0,
            received: 0,
        }
    }
}

impl Node for Gossip {
    type Message = Msg;
    type Timer = ();

    fn on_start(&mut self, _now: Instant, out: &mut Outputs<Msg, ()>) {
        self.starts += 1;
        out.set_timer(ROUND, ());
    }

    fn on_message(&mut self, _now: Instant, from: NodeId, msg: Msg, _out: &mut Outputs<Msg, ()>) {
        self.received += 1;
        match self.last_seq_from.get(&from) {
            Some(&last) if msg.seq == last => self.duplicates += 1,
            Some(&last) if msg.seq < last => self.out_of_order += 1,
            _ => {
                self.last_seq_from.insert(from, msg.seq);
            }
        }
        self.durable.extend(msg.values);
    }

    fn on_timer(&mut self, _now: Instant, _timer: (), out: &mut Outputs<Msg, ()>) {
        self.volatile_rounds += 1;
        let peer = self.peers[self.rng.below(self.peers.len() as u64) as usize];
        self.next_seq += 1;
        out.send(
            peer,
            Msg {
                seq: self.next_seq,
                values: self.durable.clone(),
            },
        );
        out.set_timer(ROUND, ());
    }

    fn on_crash(&mut self) {
        self.volatile_rounds = 0;
    }
}

fn cluster(seed: u64, n: u64, config: SimConfig) -> Simulation<Gossip> {
    let mut sim = Simulation::new(seed, config);
    for me in 0..n {
        let rng = sim.fork_rng();
        sim.add_node(NodeId::new(me), Gossip::new(me, n, rng));
    }
    sim
}

fn lossy() -> SimConfig {
    SimConfig {
        link: LinkConfig {
            latency: Latency::LongTail {
                min: Duration::from_millis(1),
                mean_extra: Duration::from_millis(3),
            },
            loss: 0.1,
            duplicate: 0.05,
            reorder: 0.2,
            reorder_window: Duration::from_millis(30),
        },
        full_trace: true,
        ..SimConfig::default()
    }
}

/// Runs a scenario with faults in the middle and returns the full trace.
fn faulty_run(seed: u64) -> (Vec<String>, u64) {
    let mut sim = cluster(seed, 5, lossy());
    let ok = |_: &Simulation<Gossip>| Ok(());
    sim.run_for(Duration::from_millis(200), ok).unwrap();
    let victim = NodeId::new(sim.rng().below(5));
    sim.crash(victim);
    sim.pause(NodeId::new((victim.get() + 1) % 5));
    sim.run_for(Duration::from_millis(200), ok).unwrap();
    sim.restart(victim);
    sim.resume(NodeId::new((victim.get() + 1) % 5));
    sim.run_for(Duration::from_millis(200), ok).unwrap();
    let lines = sim.trace().lines().unwrap().to_vec();
    (lines, sim.trace().digest())
}

#[test]
fn one_seed_replays_the_identical_trace() {
    let (a, digest_a) = faulty_run(7);
    let (b, digest_b) = faulty_run(7);
    assert!(
        a.len() > 100,
        "the run should do real work, did {} events",
        a.len()
    );
    assert_eq!(a, b);
    assert_eq!(digest_a, digest_b);
}

#[test]
fn different_seeds_produce_different_traces() {
    let (a, digest_a) = faulty_run(7);
    let (b, digest_b) = faulty_run(8);
    assert_ne!(a, b);
    assert_ne!(digest_a, digest_b);
}

#[test]
fn test_randomness_does_not_shift_the_network() {
    let mut a = cluster(3, 4, SimConfig::default());
    let mut b = cluster(3, 4, SimConfig::default());
    for _ in 0..10 {
        b.rng().next_u64();
    }
    a.run_for(Duration::from_millis(300), |_| Ok(())).unwrap();
    b.run_for(Duration::from_millis(300), |_| Ok(())).unwrap();
    assert_eq!(a.trace().digest(), b.trace().digest());
}

#[test]
fn gossip_converges_on_a_reliable_network() {
    let mut sim = cluster(1, 6, SimConfig::default());
    sim.run_for(Duration::from_secs(2), |_| Ok(())).unwrap();
    for (_, node, _) in sim.nodes() {
        assert_eq!(node.durable.len(), 6);
    }
}

#[test]
fn crashed_nodes_lose_messages_timers_and_volatile_state_but_keep_durable_state() {
    let mut sim = cluster(2, 3, SimConfig::default());
    let victim = NodeId::new(0);
    sim.run_for(Duration::from_millis(100), |_| Ok(())).unwrap();
    assert!(sim.node(victim).unwrap().volatile_rounds > 0);
    let durable_before = sim.node(victim).unwrap().durable.clone();
    let received_before = sim.node(victim).unwrap().received;

    sim.crash(victim);
    assert_eq!(sim.status(victim), Some(NodeStatus::Crashed));
    assert_eq!(sim.node(victim).unwrap().volatile_rounds, 0);
    sim.run_for(Duration::from_millis(500), |sim| {
        let node = sim.node(NodeId::new(0)).unwrap();
        if node.volatile_rounds != 0 {
            return Err("a crashed node's timer fired".into());
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(sim.node(victim).unwrap().received, received_before);
    assert!(sim.stats().dropped_at_crashed > 0);
    assert!(
        sim.act(victim, |_, _, _| ()).is_none(),
        "acting on a crashed node"
    );

    sim.restart(victim);
    let node = sim.node(victim).unwrap();
    assert_eq!(node.starts, 2);
    assert!(node.durable.is_superset(&durable_before));
    sim.run_for(Duration::from_millis(100), |_| Ok(())).unwrap();
    assert!(sim.node(victim).unwrap().volatile_rounds > 0);
}

#[test]
fn paused_nodes_receive_everything_on_resume() {
    let mut sim = cluster(4, 3, SimConfig::default());
    let sleeper = NodeId::new(1);
    sim.run_for(Duration::from_millis(50), |_| Ok(())).unwrap();
    sim.pause(sleeper);
    let received = sim.node(sleeper).unwrap().received;
    let rounds = sim.node(sleeper).unwrap().volatile_rounds;
    sim.run_for(Duration::from_millis(300), |_| Ok(())).unwrap();
    assert_eq!(sim.node(sleeper).unwrap().received, received);
    assert_eq!(sim.node(sleeper).unwrap().volatile_rounds, rounds);
    sim.resume(sleeper);
    sim.run_for(Duration::from_millis(1), |_| Ok(())).unwrap();
    assert!(sim.node(sleeper).unwrap().received > received);
}

#[test]
fn partitions_stop_traffic_both_ways_until_healed() {
    let mut sim = cluster(5, 4, SimConfig::default());
    let (left, right) = (
        [NodeId::new(0), NodeId::new(1)],
        [NodeId::new(2), NodeId::new(3)],
    );
    sim.network_mut().partition(&left, &right);
    sim.run_for(Duration::from_secs(2), |_| Ok(())).unwrap();
    for id in left {
        assert_eq!(sim.node(id).unwrap().durable, BTreeSet::from([0, 1]));
    }
    for id in right {
        assert_eq!(sim.node(id).unwrap().durable, BTreeSet::from([2, 3]));
    }
    sim.network_mut().heal();
    sim.run_for(Duration::from_secs(2), |_| Ok(())).unwrap();
    for (_, node, _) in sim.nodes() {
        assert_eq!(node.durable.len(), 4);
    }
}

#[test]
fn one_way_partition_lets_the_other_direction_through() {
    let mut sim = cluster(6, 2, SimConfig::default());
    sim.network_mut()
        .block_one_way(NodeId::new(0), NodeId::new(1));
    sim.run_for(Duration::from_secs(1), |_| Ok(())).unwrap();
    assert_eq!(sim.node(NodeId::new(1)).unwrap().received, 0);
    assert!(sim.node(NodeId::new(0)).unwrap().received > 50);
}

#[test]
fn lossy_links_drop_duplicate_and_reorder() {
    let mut sim = cluster(9, 4, lossy());
    sim.run_for(Duration::from_secs(5), |_| Ok(())).unwrap();
    let stats = sim.stats();
    assert!(stats.dropped > 0 && stats.duplicated > 0, "{stats:?}");
    let reordered: u64 = sim.nodes().map(|(_, n, _)| n.out_of_order).sum();
    let duplicates: u64 = sim.nodes().map(|(_, n, _)| n.duplicates).sum();
    assert!(reordered > 0, "no reordering observed");
    assert!(duplicates > 0, "no duplicate observed");
}

#[test]
fn an_invariant_failure_names_the_seed_to_replay() {
    let mut sim = cluster(1234, 3, SimConfig::default());
    let err = sim
        .run_for(Duration::from_secs(1), |sim| {
            if sim.stats().delivered >= 5 {
                Err("five deliveries".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert_eq!(err.seed, 1234);
    assert_eq!(sim.stats().delivered, 5);
    assert!(err.to_string().contains("SHOAL_SIM_SEED=1234"), "{err}");
}

#[test]
fn the_step_limit_stops_a_runaway_run() {
    let config = SimConfig {
        max_steps: 50,
        ..SimConfig::default()
    };
    let mut sim = cluster(1, 3, config);
    let err = sim
        .run_for(Duration::from_secs(60), |_| Ok(()))
        .unwrap_err();
    assert!(err.message.contains("step limit"), "{err}");
}

#[test]
fn virtual_time_runs_far_faster_than_real_time() {
    let mut sim = cluster(11, 10, SimConfig::default());
    let started = std::time::Instant::now();
    sim.run_for(Duration::from_secs(600), |_| Ok(())).unwrap();
    assert_eq!(sim.now(), Instant::ZERO + Duration::from_secs(600));
    assert!(sim.stats().timers_fired >= 10 * 59_000);
    // Generous: ten minutes of a 10-node cluster must take far less than ten minutes.
    assert!(started.elapsed() < Duration::from_secs(300));
}

#[test]
fn the_trace_records_each_kind_of_event() {
    let mut sim = cluster(12, 3, lossy());
    sim.run_for(Duration::from_millis(100), |_| Ok(())).unwrap();
    sim.crash(NodeId::new(0));
    sim.run_for(Duration::from_millis(100), |_| Ok(())).unwrap();
    let lines = sim.trace().lines().unwrap();
    for kind in [
        TraceKind::Start,
        TraceKind::Deliver,
        TraceKind::Timer,
        TraceKind::Crash,
    ] {
        let name = format!(" {kind:?} ");
        assert!(
            lines.iter().any(|l| l.contains(&name)),
            "no {kind:?} in trace"
        );
    }
}

/// Runs under random faults on fixed seeds (`SHOAL_SIM_SEED` replays one,
/// `SHOAL_SIM_EXPLORE=1` draws a fresh base, both printed), the way protocol crates use the
/// simulator: invariants checked after every step.
#[test]
fn random_faults_never_break_the_gossip_invariants() {
    for seed in shoal_sim::seeds_from_env_or(0x5EED_0002, 16) {
        random_faults_never_break_the_gossip_invariants_with(seed);
    }
}

fn random_faults_never_break_the_gossip_invariants_with(seed: u64) {
    let mut sim = cluster(seed, 6, lossy());
    let ids = sim.node_ids();
    let mut known: Vec<usize> = vec![1; ids.len()];
    for _round in 0..20 {
        let victim = ids[sim.rng().below(ids.len() as u64) as usize];
        match sim.rng().below(5) {
            0 => sim.crash(victim),
            1 => sim.restart(victim),
            2 => sim.pause(victim),
            3 => sim.resume(victim),
            _ => {
                let other = ids[sim.rng().below(ids.len() as u64) as usize];
                sim.network_mut().isolate(victim, [other]);
            }
        }
        let result = sim.run_for(Duration::from_millis(100), |sim| {
            for (i, (id, node, _)) in sim.nodes().enumerate() {
                // Durable knowledge only grows and always includes the node itself.
                if node.durable.len() < known[i] || !node.durable.contains(&id.get()) {
                    return Err(format!("{id} lost durable state"));
                }
            }
            Ok(())
        });
        result.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for (i, (_, node, _)) in sim.nodes().enumerate() {
            known[i] = node.durable.len();
        }
    }
    sim.network_mut().heal();
    for id in ids {
        sim.resume(id);
        sim.restart(id);
    }
    sim.run_for(Duration::from_secs(5), |_| Ok(())).unwrap();
    for (id, node, _) in sim.nodes() {
        assert_eq!(node.durable.len(), 6, "{id} did not converge (seed {seed})");
    }
}

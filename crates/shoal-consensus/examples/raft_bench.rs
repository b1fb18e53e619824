//! Raft benchmark: proposals per second through a 3-voter group in one process, on the
//! in-memory log and on the durable WAL, and the time to elect a new leader after the
//! leader crashes (in the simulator).
//!
//! `cargo run --release -p shoal-consensus --example raft_bench -- --json`
//!
//! The throughput runs drive three replicas, each in its own `RaftHost` (the ready loop every
//! driver uses) with a state machine that only counts, from one thread in real time: every
//! round each host ticks and runs a round (persisting; for the WAL: appends, then one
//! `fdatasync` covering the round's writes of that replica), and the messages are delivered
//! directly. `N` clients each keep one 16-byte proposal outstanding and propose the next as
//! soon as the leader applies it (a closed loop), so `puts_per_s_N` is applied proposals per
//! second with `N` in flight. Each WAL replica has its own directory under the system temp
//! dir. The election figure is the median over seeds, in virtual time, with the default
//! `RaftConfig` and the simulator's default network. The last line is one JSON object.

use bytes::Bytes;
use shoal_consensus::counting::{CountingMachine, CountingSnapshot};
use shoal_consensus::sim::{SimHistory, SimReplica};
use shoal_consensus::{
    HostEvent, LogStore, MemLogStore, Membership, Message, Raft, RaftConfig, RaftHost, Wal,
    WalConfig, WalStore,
};
use shoal_core::{Clock, GroupId, NodeId, SystemClock};
use shoal_sim::{NodeStatus, SimConfig, Simulation};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const GROUP: GroupId = GroupId::new(1);
const RUN: Duration = Duration::from_secs(2);

struct Cluster<S: LogStore> {
    nodes: Vec<RaftHost<S, CountingMachine>>,
    clock: SystemClock,
}

/// The leader's group.
fn raft<S: LogStore>(host: &RaftHost<S, CountingMachine>) -> &Raft<S> {
    host.raft(GROUP).expect("the group is hosted")
}

/// Closed-loop clients: each keeps one proposal outstanding on the leader.
struct Load {
    idle: usize,
    seq: u64,
    inflight: HashMap<u64, Instant>,
    latencies: Vec<Duration>,
}

impl Load {
    fn new(clients: usize) -> Self {
        Load {
            idle: clients,
            seq: 0,
            inflight: HashMap::new(),
            latencies: Vec::new(),
        }
    }

    /// Every idle client proposes a 16-byte command.
    fn propose<S: LogStore>(&mut self, leader: &mut RaftHost<S, CountingMachine>) {
        let now = Instant::now();
        while self.idle > 0 {
            self.seq += 1;
            let mut payload = [0u8; 16];
            payload[..8].copy_from_slice(&self.seq.to_le_bytes());
            match leader.propose(GROUP, Bytes::copy_from_slice(&payload), self.seq) {
                Ok(_) => {
                    self.inflight.insert(self.seq, now);
                    self.idle -= 1;
                }
                Err(e) => panic!("proposal refused: {e}"),
            }
        }
    }

    /// The leader settled the proposals in `events`: their clients are answered and propose
    /// again.
    fn settled(&mut self, events: Vec<HostEvent<CountingSnapshot, Bytes>>) {
        for event in events {
            if let HostEvent::Proposal { token, result } = event {
                result.expect("applied");
                if let Some(at) = self.inflight.remove(&token) {
                    self.latencies.push(at.elapsed());
                    self.idle += 1;
                }
            }
        }
    }

    /// Proposals applied per second over `elapsed`, and the p99 latency in ms.
    fn result(mut self, elapsed: Duration) -> (f64, f64) {
        self.latencies.sort_unstable();
        let p99 = self
            .latencies
            .get(self.latencies.len() * 99 / 100)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        (self.latencies.len() as f64 / elapsed.as_secs_f64(), p99)
    }
}

impl<S: LogStore> Cluster<S> {
    fn new(mut stores: Vec<S>) -> Self {
        let ids: Vec<NodeId> = (1..=stores.len() as u64).map(NodeId::new).collect();
        let clock = SystemClock::new();
        let nodes = stores
            .drain(..)
            .zip(&ids)
            .map(|(mut store, &id)| {
                Raft::bootstrap(&mut store, Membership::new(ids.clone())).expect("bootstrap");
                store.sync().expect("sync");
                let raft = Raft::new(
                    id,
                    GROUP,
                    RaftConfig::default(),
                    store,
                    0,
                    id.get(),
                    clock.now(),
                )
                .expect("start");
                let mut host = RaftHost::new(id);
                host.add_group(raft, CountingMachine::default())
                    .expect("one group");
                host
            })
            .collect();
        let mut cluster = Cluster { nodes, clock };
        cluster.nodes[0].campaign(GROUP).expect("hosted");
        for _ in 0..100 {
            cluster.round(&mut |_| {});
            let leader = raft(&cluster.nodes[0]);
            if leader.is_leader() && leader.commit_index() > 1 {
                return cluster;
            }
        }
        panic!("no leader");
    }

    /// One round: every host ticks and runs a round (persisting, applying); then messages
    /// are delivered. `settled` sees the leader's events.
    fn round(&mut self, settled: &mut impl FnMut(Vec<HostEvent<CountingSnapshot, Bytes>>)) {
        let now = self.clock.now();
        let mut inbox: Vec<Message> = Vec::new();
        for node in &mut self.nodes {
            node.tick(now);
            if !node.has_ready() {
                continue;
            }
            node.round(now, &mut |messages| inbox.extend(messages));
            let events = node.take_events();
            if raft(node).is_leader() {
                settled(events);
            }
        }
        for m in inbox {
            let to = (m.to.get() - 1) as usize;
            let _ = self.nodes[to].step(now, m);
        }
    }

    /// Runs `clients` closed-loop clients for `RUN`, every replica on this thread; returns
    /// proposals applied per second and the 99th-percentile latency in milliseconds.
    fn run(&mut self, clients: usize) -> (f64, f64) {
        let leader = self.leader();
        let mut load = Load::new(clients);
        let start = Instant::now();
        while start.elapsed() < RUN {
            load.propose(&mut self.nodes[leader]);
            self.round(&mut |events| load.settled(events));
        }
        let elapsed = start.elapsed();
        // Drain what is in flight so the next run starts clean.
        for _ in 0..10_000 {
            if load.inflight.is_empty() {
                break;
            }
            self.round(&mut |events| load.settled(events));
        }
        load.result(elapsed)
    }

    fn leader(&self) -> usize {
        self.nodes
            .iter()
            .position(|n| raft(n).is_leader())
            .expect("a leader")
    }
}

impl<S: LogStore + Send + 'static> Cluster<S> {
    /// Like [`Cluster::run`], but every replica runs on its own thread (as on its own
    /// machine), so their disk writes and syncs overlap; messages go over channels. The
    /// clients live on the leader's thread.
    fn run_threaded(self, clients: usize) -> (f64, f64) {
        let n = self.nodes.len();
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| mpsc::channel::<Message>()).unzip();
        let stop = Arc::new(AtomicBool::new(false));
        let leader = self.leader();
        let clock = self.clock;
        let handles: Vec<_> = self
            .nodes
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(i, (mut node, inbox))| {
                let senders = senders.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut load = (i == leader).then(|| Load::new(clients));
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(load) = &mut load {
                            load.propose(&mut node);
                            if start.elapsed() >= RUN {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        if !node.has_ready() {
                            if let Ok(m) = inbox.recv_timeout(Duration::from_millis(1)) {
                                let _ = node.step(clock.now(), m);
                            }
                        }
                        let now = clock.now();
                        while let Ok(m) = inbox.try_recv() {
                            let _ = node.step(now, m);
                        }
                        node.tick(now);
                        if !node.has_ready() {
                            continue;
                        }
                        node.round(now, &mut |messages| {
                            for m in messages {
                                let _ = senders[(m.to.get() - 1) as usize].send(m);
                            }
                        });
                        let events = node.take_events();
                        if let Some(load) = &mut load {
                            load.settled(events);
                        }
                    }
                    load.map(|l| l.result(start.elapsed()))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("replica thread"))
            .next()
            .expect("the leader's result")
    }
}

/// Virtual milliseconds from crashing a leader until another replica leads, per seed.
fn election_ms(seed: u64) -> f64 {
    let history = SimHistory::shared();
    let mut sim = Simulation::new(seed, SimConfig::default());
    let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    for &id in &ids {
        let replica = SimReplica::founder(
            id,
            Membership::new(ids.clone()),
            RaftConfig::default(),
            seed ^ id.get(),
            history.clone(),
        );
        sim.add_node(id, replica);
    }
    let leader = |sim: &Simulation<SimReplica>| {
        sim.nodes()
            .filter(|(_, _, s)| *s == NodeStatus::Up)
            .find(|(_, r, _)| r.raft().is_some_and(|raft| raft.is_leader()))
            .map(|(id, _, _)| id)
    };
    sim.run_for(Duration::from_secs(5), |_| Ok(()))
        .expect("sim");
    let old = leader(&sim).expect("a leader after 5 s");
    sim.crash(old);
    let crashed_at = sim.now();
    for _ in 0..10_000 {
        sim.run_for(Duration::from_millis(1), |_| Ok(()))
            .expect("sim");
        if leader(&sim).is_some() {
            return sim
                .now()
                .saturating_duration_since(crashed_at)
                .as_secs_f64()
                * 1e3;
        }
    }
    panic!("no new leader within 10 s (seed {seed})");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");

    let mut memory = Cluster::new((0..3).map(|_| MemLogStore::new()).collect());
    let mut puts = Vec::new();
    for clients in [1, 64, 256] {
        let (rate, p99) = memory.run(clients);
        if !json {
            println!("memory, {clients:>3} clients: {rate:>10.0} puts/s, p99 {p99:.3} ms");
        }
        puts.push(rate);
    }
    drop(memory);

    let dirs: Vec<tempfile::TempDir> = (0..6)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let wal_stores = |dirs: &[tempfile::TempDir]| -> Vec<WalStore> {
        dirs.iter()
            .map(|d| {
                let (wal, _) = Wal::open(d.path(), WalConfig::default()).expect("open the WAL");
                wal.store(GROUP)
            })
            .collect()
    };
    let (one_thread_rate, _) = Cluster::new(wal_stores(&dirs[..3])).run(64);
    if !json {
        println!("WAL,     64 clients: {one_thread_rate:>10.0} puts/s (all replicas on one thread: fsyncs in series)");
    }
    let stores = wal_stores(&dirs[3..]);
    let wal = stores[0].clone();
    let durable = Cluster::new(stores);
    let syncs_before = wal.wal_stats().syncs;
    let (wal_rate, wal_p99) = durable.run_threaded(64);
    let syncs = wal.wal_stats().syncs - syncs_before;
    if !json {
        println!("WAL,     64 clients: {wal_rate:>10.0} puts/s, p99 {wal_p99:.3} ms ({syncs} fsyncs on the leader, a thread per replica)");
    }

    let elections: Vec<f64> = (1..=21).map(election_ms).collect();
    let election = median(elections.clone());
    let election_max = elections.iter().copied().fold(0.0, f64::max);
    if !json {
        println!("election after a leader crash: median {election:.0} ms, max {election_max:.0} ms (21 seeds, virtual time)");
    }
    println!(
        "{{\"puts_per_s_1\":{:.0},\"puts_per_s_64\":{:.0},\"puts_per_s_256\":{:.0},\"wal_puts_per_s_64\":{wal_rate:.0},\"wal_p99_ms_64\":{wal_p99:.3},\"wal_puts_per_s_64_one_thread\":{one_thread_rate:.0},\"election_ms_after_leader_crash\":{election:.0},\"election_ms_after_leader_crash_max\":{election_max:.0}}}",
        puts[0], puts[1], puts[2]
    );
}

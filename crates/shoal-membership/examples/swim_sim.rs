//! SWIM + Lifeguard at scale, in virtual time: exact and repeatable for a seed.
//!
//! ```text
//! cargo run --release -p shoal-membership --example swim_sim -- --nodes 1000 --seed 1 --json
//! ```
//!
//! Scenarios, each on the LAN preset over 0.2–1 ms links:
//! 1. `nodes` nodes start together and join through 3 seeds: `join_converge_s` is when every
//!    node sees every node alive. With `--stagger-ms M` they start instead one every `M` ms,
//!    each joining through 3 random members already started, as real deployments grow (and as
//!    clusters of several thousand simulated nodes fit this machine); `join_converge_s` then
//!    counts from the last start.
//! 2. One node publishes new metadata: `dissemination_p9999_s` is when 99.99% of the others
//!    have it.
//! 3. Five nodes crash one after another, 40 s apart: `detect_first_s` is the first
//!    suspicion of a crashed node anywhere, `detect_all_dead_s` when every live node has
//!    marked it dead; both are medians over the five (each trial is listed too: when the
//!    first probe of a crashed node happens is random, so one trial is a noisy figure).
//!    `bytes_per_node_per_s` is the mean traffic per node over phases 2 and 3.
//! 4. False positives: for each of `fp_seeds` seeds (default 3), two fresh clusters of
//!    `fp_nodes` nodes (default 200) run for `fp_minutes` virtual minutes (default 5; 0 skips
//!    the phase) with 10% loss on every link and 10% slow members: once with Lifeguard and
//!    once without. A slow member handles messages late, as under CPU starvation: now and
//!    then (exponentially spaced, mean 30 s) it lags for 20–60 s, handling every message
//!    15–30 s late while its timers fire on time, as in the Lifeguard paper's experiments,
//!    where slow members, not healthy ones, cause most false positives. `false_positives_*`
//!    counts healthy members (never slow) declared dead, once per (observer, member,
//!    incarnation), summed over the seeds (`*_by_seed` lists each); a slow member declared
//!    dead while it lags is counted apart (`slow_declared_dead_*`): it did stop answering.
//!    `fp_ratio` is plain over Lifeguard (Lifeguard's count taken as at least 1).
//!
//! The last line of output is one JSON object with every figure, the run's wall time and the
//! process's peak resident memory (`peak_rss_mib`, Linux; `null` elsewhere).

use shoal_core::{Instant, NodeId, Rng};
use shoal_membership::sim::SimMember;
use shoal_membership::{MemberEventKind, MembershipConfig};
use shoal_sim::{Latency, LinkConfig, NodeStatus, SimConfig, Simulation};
use std::collections::HashSet;
use std::time::Duration;

struct Args {
    nodes: u64,
    seed: u64,
    json: bool,
    fp_nodes: u64,
    fp_minutes: u64,
    fp_seeds: u64,
    stagger_ms: Option<u64>,
}

fn parse_args() -> Args {
    let mut args = Args {
        nodes: 1000,
        seed: 1,
        json: false,
        fp_nodes: 200,
        fp_minutes: 5,
        fp_seeds: 3,
        stagger_ms: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--nodes" => args.nodes = value("--nodes"),
            "--seed" => args.seed = value("--seed"),
            "--fp-nodes" => args.fp_nodes = value("--fp-nodes"),
            "--fp-minutes" => args.fp_minutes = value("--fp-minutes"),
            "--fp-seeds" => args.fp_seeds = value("--fp-seeds"),
            "--stagger-ms" => args.stagger_ms = Some(value("--stagger-ms")),
            "--json" => args.json = true,
            other => panic!("unknown argument {other}; see the example's docs"),
        }
    }
    assert!(args.nodes >= 4, "--nodes must be at least 4");
    args
}

fn link(loss: f64) -> LinkConfig {
    LinkConfig {
        loss,
        ..LinkConfig::reliable(Latency::Uniform {
            min: Duration::from_micros(200),
            max: Duration::from_millis(1),
        })
    }
}

fn build(seed: u64, n: u64, config: &MembershipConfig) -> Simulation<SimMember> {
    let mut sim = empty(seed);
    let seeds: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    for i in 1..=n {
        add(&mut sim, seed, i, config, &seeds);
    }
    sim
}

/// A cluster of `n` nodes started `stagger` apart, each joining through up to 3 random
/// members already started.
fn build_staggered(
    seed: u64,
    n: u64,
    config: &MembershipConfig,
    stagger: Duration,
) -> Simulation<SimMember> {
    let mut sim = empty(seed);
    let mut rng = sim.fork_rng();
    for i in 1..=n {
        let mut started: Vec<NodeId> = sim.node_ids();
        rng.shuffle(&mut started);
        started.truncate(3);
        add(&mut sim, seed, i, config, &started);
        run(&mut sim, stagger);
    }
    sim
}

fn empty(seed: u64) -> Simulation<SimMember> {
    Simulation::new(
        seed,
        SimConfig {
            link: link(0.0),
            max_steps: u64::MAX,
            ..SimConfig::default()
        },
    )
}

fn add(
    sim: &mut Simulation<SimMember>,
    seed: u64,
    i: u64,
    config: &MembershipConfig,
    seeds: &[NodeId],
) {
    let node_seed = seed.wrapping_mul(0x9E37_79B9).wrapping_add(i);
    let mut member = SimMember::new(NodeId::new(i), Vec::new(), config.clone(), seeds, node_seed)
        .expect("valid config");
    member.set_record_events(false);
    sim.add_node(NodeId::new(i), member);
}

/// The process's peak resident memory in MiB (Linux's `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn run(sim: &mut Simulation<SimMember>, d: Duration) {
    sim.run_for(d, |_| Ok(())).expect("no step limit");
}

fn set_recording(sim: &mut Simulation<SimMember>, on: bool) {
    for id in sim.node_ids() {
        if let Some(m) = sim.node_mut(id) {
            m.set_record_events(on);
        }
    }
}

fn total_bytes(sim: &Simulation<SimMember>) -> u64 {
    sim.nodes().map(|(_, m, _)| m.bytes_sent()).sum()
}

/// Phase 1: how long until every node sees all `n` alive.
fn join(sim: &mut Simulation<SimMember>, n: u64) -> Option<Duration> {
    let start = sim.now();
    let step = Duration::from_millis(100);
    while sim.now().saturating_duration_since(start) < Duration::from_secs(600) {
        let done = sim.nodes().all(|(_, m, _)| m.swim().num_live() as u64 == n);
        if done {
            return Some(sim.now().saturating_duration_since(start));
        }
        run(sim, step);
    }
    None
}

/// Phase 2: when 99.99% of the other nodes have a metadata update.
fn disseminate(sim: &mut Simulation<SimMember>, n: u64) -> Option<Duration> {
    let origin = NodeId::new(n);
    set_recording(sim, true);
    let start = sim.now();
    let incarnation = sim
        .act(origin, |m, now, out| {
            m.swim_mut().set_meta(b"v2".to_vec()).expect("small meta");
            m.flush(now, out);
            m.swim().incarnation()
        })
        .expect("origin is up");
    run(sim, Duration::from_secs(20));
    let mut times: Vec<Duration> = Vec::new();
    for id in sim.node_ids() {
        let member = sim.node_mut(id).expect("node");
        let seen = member.drain_events().into_iter().find(|e| {
            e.id == origin && e.kind == MemberEventKind::Updated && e.incarnation >= incarnation
        });
        if let Some(e) = seen {
            times.push(e.at.saturating_duration_since(start));
        }
    }
    set_recording(sim, false);
    times.sort();
    let need = ((n - 1) as f64 * 0.9999).ceil() as usize;
    times.get(need.checked_sub(1)?).copied()
}

/// Phase 3: crash nodes one at a time; for each, the first suspicion anywhere and when every
/// live node has it dead.
fn detect(sim: &mut Simulation<SimMember>, victim: NodeId) -> (Option<Duration>, Option<Duration>) {
    set_recording(sim, true);
    let start = sim.now();
    sim.crash(victim);
    run(sim, Duration::from_secs(40));
    let mut first_suspect: Option<Duration> = None;
    let mut all_dead = Some(Duration::ZERO);
    for id in sim.node_ids() {
        if sim.status(id) != Some(NodeStatus::Up) {
            continue;
        }
        let events = sim.node_mut(id).expect("node").drain_events();
        for e in events.iter().filter(|e| e.id == victim) {
            if matches!(e.kind, MemberEventKind::Suspect | MemberEventKind::Dead) {
                let t = e.at.saturating_duration_since(start);
                first_suspect = Some(first_suspect.map_or(t, |f| f.min(t)));
            }
        }
        let dead = events
            .iter()
            .find(|e| e.id == victim && e.kind == MemberEventKind::Dead);
        all_dead = match (all_dead, dead) {
            (Some(worst), Some(e)) => Some(worst.max(e.at.saturating_duration_since(start))),
            _ => None,
        };
    }
    set_recording(sim, false);
    (first_suspect, all_dead)
}

fn median(mut values: Vec<Option<Duration>>) -> Option<Duration> {
    if values.iter().any(Option::is_none) {
        return None;
    }
    values.sort();
    values[values.len() / 2]
}

/// False deaths in one phase-4 run: healthy members declared dead, and slow members
/// declared dead (while or after lagging).
#[derive(Clone, Copy, Debug, Default)]
struct FalseDeaths {
    healthy: u64,
    slow: u64,
}

/// Phase 4: false positives under loss and slow members.
fn false_positives(seed: u64, n: u64, minutes: u64, config: &MembershipConfig) -> FalseDeaths {
    if minutes == 0 {
        return FalseDeaths::default();
    }
    let mut sim = build(seed, n, config);
    join(&mut sim, n).expect("the cluster converges before faults start");
    sim.network_mut().set_default_link(link(0.10));
    let mut rng = sim.fork_rng();
    let mut ids = sim.node_ids();
    rng.shuffle(&mut ids);
    let slow: Vec<NodeId> = ids[..(n as usize).div_ceil(10)].to_vec();
    set_recording(&mut sim, true);

    // Each slow node runs normally for an exponentially distributed time (mean 30 s), then
    // lags for 20–60 s, handling every message 15–30 s late while its timers fire on time.
    let end = sim.now() + Duration::from_secs(60 * minutes);
    let mut next_change: Vec<(Instant, NodeId, bool)> = slow
        .iter()
        .map(|&id| (sim.now() + exp(&mut rng, 30.0), id, true))
        .collect();
    let mut seen: HashSet<(NodeId, NodeId, u64)> = HashSet::new();
    let mut deaths = FalseDeaths::default();
    loop {
        next_change.sort_by_key(|&(at, id, _)| (at, id));
        let (at, id, lag) = next_change[0];
        let until = at.min(end);
        sim.run_until(until, |_| Ok(())).expect("no step limit");
        count_false_positives(&mut sim, &mut seen, &slow, &mut deaths);
        if until >= end {
            break;
        }
        let member = sim.node_mut(id).expect("slow node");
        if lag {
            let delay = rng.duration_between(Duration::from_secs(15), Duration::from_secs(30));
            member.set_inbound_delay(delay);
            let length = rng.duration_between(Duration::from_secs(20), Duration::from_secs(60));
            next_change[0] = (at + length, id, false);
        } else {
            member.set_inbound_delay(Duration::ZERO);
            next_change[0] = (at + exp(&mut rng, 30.0), id, true);
        }
    }
    deaths
}

fn exp(rng: &mut impl Rng, mean_s: f64) -> Duration {
    Duration::from_secs_f64(-(1.0 - rng.unit_f64()).ln() * mean_s)
}

/// Dead events about members that are in fact running (or merely paused), added to
/// `deaths` by whether the member is one of the `slow` ones.
fn count_false_positives(
    sim: &mut Simulation<SimMember>,
    seen: &mut HashSet<(NodeId, NodeId, u64)>,
    slow: &[NodeId],
    deaths: &mut FalseDeaths,
) {
    let debug = std::env::var_os("SWIM_SIM_DEBUG").is_some();
    let watch: Option<(u64, u64)> = std::env::var("SWIM_SIM_WATCH").ok().and_then(|w| {
        let (a, b) = w.split_once(',')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    });
    for id in sim.node_ids() {
        let events = sim.node_mut(id).expect("node").drain_events();
        for e in events {
            if watch.is_some_and(|(o, m)| (o == 0 || id.get() == o) && (m == 0 || e.id.get() == m))
            {
                eprintln!(
                    "watch {id}: {:?} {} inc {} at {:?}",
                    e.kind, e.id, e.incarnation, e.at
                );
            }
            if e.kind == MemberEventKind::Dead
                && sim.status(e.id) != Some(NodeStatus::Crashed)
                && seen.insert((id, e.id, e.incarnation))
            {
                if slow.contains(&e.id) {
                    deaths.slow += 1;
                } else {
                    deaths.healthy += 1;
                }
                if debug {
                    eprintln!(
                        "fp at {:?}: {id}{} declared {}{} dead at incarnation {}",
                        e.at,
                        if slow.contains(&id) { " (slow)" } else { "" },
                        e.id,
                        if slow.contains(&e.id) { " (slow)" } else { "" },
                        e.incarnation
                    );
                }
            }
        }
    }
}

/// Nodes crashed one after another in phase 3; the figures are medians.
const CRASH_TRIALS: u64 = 5;

fn main() {
    let args = parse_args();
    let n = args.nodes;
    let wall = std::time::Instant::now();
    let config = MembershipConfig::lan();

    let mut sim = match args.stagger_ms {
        Some(ms) => build_staggered(args.seed, n, &config, Duration::from_millis(ms)),
        None => build(args.seed, n, &config),
    };
    let join_converge = join(&mut sim, n);
    eprintln!("join: {join_converge:?} ({:?} wall)", wall.elapsed());
    let bytes_before = total_bytes(&sim);
    let measured_from = sim.now();
    let dissemination = disseminate(&mut sim, n);
    eprintln!(
        "dissemination: {dissemination:?} ({:?} wall)",
        wall.elapsed()
    );
    let mut firsts = Vec::new();
    let mut alls = Vec::new();
    for trial in 0..CRASH_TRIALS {
        let victim = NodeId::new(n / 2 + 1 + trial);
        let (first, all) = detect(&mut sim, victim);
        eprintln!(
            "crash {victim}: first suspicion {first:?}, all dead {all:?} ({:?} wall)",
            wall.elapsed()
        );
        firsts.push(first);
        alls.push(all);
    }
    let detect_first = median(firsts.clone());
    let detect_all = median(alls.clone());
    let elapsed = sim
        .now()
        .saturating_duration_since(measured_from)
        .as_secs_f64();
    let bytes_per_node_per_s = (total_bytes(&sim) - bytes_before) as f64 / n as f64 / elapsed;
    let steps_main = sim.stats().steps;
    drop(sim);

    let (fp_nodes, fp_minutes) = (args.fp_nodes, args.fp_minutes);
    if fp_minutes == 0 {
        eprintln!("false-positive runs skipped (--fp-minutes 0)");
    }
    let plain = config.clone().without_lifeguard();
    let (mut fp_lifeguard, mut fp_plain) = (Vec::new(), Vec::new());
    let fp_seeds = if fp_minutes == 0 { 0 } else { args.fp_seeds };
    for fp_seed in args.seed..args.seed + fp_seeds {
        let with = false_positives(fp_seed, fp_nodes, fp_minutes, &config);
        let without = false_positives(fp_seed, fp_nodes, fp_minutes, &plain);
        eprintln!(
            "fp seed {fp_seed}: lifeguard {with:?}, plain {without:?} ({:?} wall)",
            wall.elapsed()
        );
        fp_lifeguard.push(with);
        fp_plain.push(without);
    }
    let sum = |runs: &[FalseDeaths], f: fn(&FalseDeaths) -> u64| runs.iter().map(f).sum::<u64>();
    let list = |runs: &[FalseDeaths]| {
        runs.iter()
            .map(|d| d.healthy.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (lifeguard_total, plain_total) = (
        sum(&fp_lifeguard, |d| d.healthy),
        sum(&fp_plain, |d| d.healthy),
    );
    let fp_ratio = plain_total as f64 / lifeguard_total.max(1) as f64;

    let opt = |d: Option<Duration>| d.map_or("null".to_string(), |d| secs(d).to_string());
    let json = format!(
        concat!(
            "{{\"nodes\":{},\"seed\":{},\"join_converge_s\":{},\"dissemination_p9999_s\":{},",
            "\"detect_first_s\":{},\"detect_all_dead_s\":{},\"false_positives_lifeguard\":{},",
            "\"false_positives_plain\":{},\"fp_ratio\":{:.1},",
            "\"false_positives_lifeguard_by_seed\":[{}],\"false_positives_plain_by_seed\":[{}],",
            "\"slow_declared_dead_lifeguard\":{},\"slow_declared_dead_plain\":{},",
            "\"fp_nodes\":{},\"fp_minutes\":{},\"fp_seeds\":{},",
            "\"detect_first_s_trials\":[{}],\"detect_all_dead_s_trials\":[{}],",
            "\"bytes_per_node_per_s\":{:.0},\"sim_steps\":{},\"stagger_ms\":{},",
            "\"wall_s\":{:.1},\"peak_rss_mib\":{}}}"
        ),
        n,
        args.seed,
        opt(join_converge),
        opt(dissemination),
        opt(detect_first),
        opt(detect_all),
        lifeguard_total,
        plain_total,
        fp_ratio,
        list(&fp_lifeguard),
        list(&fp_plain),
        sum(&fp_lifeguard, |d| d.slow),
        sum(&fp_plain, |d| d.slow),
        fp_nodes,
        fp_minutes,
        fp_seeds,
        firsts.iter().map(|&d| opt(d)).collect::<Vec<_>>().join(","),
        alls.iter().map(|&d| opt(d)).collect::<Vec<_>>().join(","),
        bytes_per_node_per_s,
        steps_main,
        args.stagger_ms
            .map_or("null".to_string(), |ms| ms.to_string()),
        wall.elapsed().as_secs_f64(),
        peak_rss_mib().map_or("null".to_string(), |m| format!("{m:.0}")),
    );
    if !args.json {
        println!(
            "SWIM + Lifeguard, {n} nodes, LAN preset, seed {}",
            args.seed
        );
    }
    println!("{json}");
}

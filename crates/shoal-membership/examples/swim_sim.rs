//! SWIM + Lifeguard at scale, in virtual time: exact and repeatable for a seed.
//!
//! ```text
//! cargo run --release -p shoal-membership --example swim_sim -- --nodes 1000 --seed 1 --json
//! ```
//!
//! Scenarios, each on the LAN preset over 0.2–1 ms links:
//! 1. `nodes` nodes start together and join through 3 seeds: `join_converge_s` is when every
//!    node sees every node alive.
//! 2. One node publishes new metadata: `dissemination_p9999_s` is when 99.99% of the others
//!    have it.
//! 3. Five nodes crash one after another, 40 s apart: `detect_first_s` is the first
//!    suspicion of a crashed node anywhere, `detect_all_dead_s` when every live node has
//!    marked it dead; both are medians over the five (each trial is listed too: when the
//!    first probe of a crashed node happens is random, so one trial is a noisy figure).
//!    `bytes_per_node_per_s` is the mean traffic per node over phases 2 and 3.
//! 4. Two fresh clusters of `fp_nodes` nodes (default: `nodes`, at most 1000) run for
//!    `fp_minutes` virtual minutes (default 10; 0, which skips this phase, when `nodes` is
//!    above 1000, since the figures are defined at 1000 nodes) with 10% loss on every link and 5% slow
//!    members: once with Lifeguard and once without. A slow member handles messages late,
//!    as under CPU starvation: now and then (exponentially spaced, mean 20 s) it lags for
//!    10–30 s, handling every message 1–8 s late while its timers fire on time. The false
//!    positives are live members declared dead, counted once per (observer, member,
//!    incarnation).
//!
//! The last line of output is one JSON object with every figure.

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
    fp_nodes: Option<u64>,
    fp_minutes: Option<u64>,
}

fn parse_args() -> Args {
    let mut args = Args {
        nodes: 1000,
        seed: 1,
        json: false,
        fp_nodes: None,
        fp_minutes: None,
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
            "--fp-nodes" => args.fp_nodes = Some(value("--fp-nodes")),
            "--fp-minutes" => args.fp_minutes = Some(value("--fp-minutes")),
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
    let mut sim = Simulation::new(
        seed,
        SimConfig {
            link: link(0.0),
            max_steps: u64::MAX,
            ..SimConfig::default()
        },
    );
    let seeds: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    for i in 1..=n {
        let node_seed = seed.wrapping_mul(0x9E37_79B9).wrapping_add(i);
        let mut member = SimMember::new(
            NodeId::new(i),
            Vec::new(),
            config.clone(),
            &seeds,
            node_seed,
        )
        .expect("valid config");
        member.set_record_events(false);
        sim.add_node(NodeId::new(i), member);
    }
    sim
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

/// Phase 4: false positives under loss and slow members.
fn false_positives(seed: u64, n: u64, minutes: u64, config: &MembershipConfig) -> u64 {
    if minutes == 0 {
        return 0;
    }
    let mut sim = build(seed, n, config);
    join(&mut sim, n).expect("the cluster converges before faults start");
    sim.network_mut().set_default_link(link(0.10));
    let mut rng = sim.fork_rng();
    let mut ids = sim.node_ids();
    rng.shuffle(&mut ids);
    let slow: Vec<NodeId> = ids[..(n as usize * 5).div_ceil(100)].to_vec();
    set_recording(&mut sim, true);

    // Each slow node runs normally for an exponentially distributed time (mean 20 s), then
    // lags for 10–30 s, handling every message 1–8 s late while its timers fire on time.
    let end = sim.now() + Duration::from_secs(60 * minutes);
    let mut next_change: Vec<(Instant, NodeId, bool)> = slow
        .iter()
        .map(|&id| (sim.now() + exp(&mut rng, 20.0), id, true))
        .collect();
    let mut seen: HashSet<(NodeId, NodeId, u64)> = HashSet::new();
    let mut count = 0u64;
    loop {
        next_change.sort_by_key(|&(at, id, _)| (at, id));
        let (at, id, lag) = next_change[0];
        let until = at.min(end);
        sim.run_until(until, |_| Ok(())).expect("no step limit");
        count += count_false_positives(&mut sim, &mut seen, &slow);
        if until >= end {
            break;
        }
        let member = sim.node_mut(id).expect("slow node");
        if lag {
            let delay = rng.duration_between(Duration::from_secs(1), Duration::from_secs(4));
            member.set_inbound_delay(delay);
            let length = rng.duration_between(Duration::from_secs(10), Duration::from_secs(30));
            next_change[0] = (at + length, id, false);
        } else {
            member.set_inbound_delay(Duration::ZERO);
            next_change[0] = (at + exp(&mut rng, 20.0), id, true);
        }
    }
    count
}

fn exp(rng: &mut impl Rng, mean_s: f64) -> Duration {
    Duration::from_secs_f64(-(1.0 - rng.unit_f64()).ln() * mean_s)
}

/// Dead events about members that are in fact running (or merely paused).
fn count_false_positives(
    sim: &mut Simulation<SimMember>,
    seen: &mut HashSet<(NodeId, NodeId, u64)>,
    slow: &[NodeId],
) -> u64 {
    let debug = std::env::var_os("SWIM_SIM_DEBUG").is_some();
    let watch: Option<(u64, u64)> = std::env::var("SWIM_SIM_WATCH").ok().and_then(|w| {
        let (a, b) = w.split_once(',')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    });
    let mut count = 0;
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
                count += 1;
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
    count
}

/// Nodes crashed one after another in phase 3; the figures are medians.
const CRASH_TRIALS: u64 = 5;

fn main() {
    let args = parse_args();
    let n = args.nodes;
    let wall = std::time::Instant::now();
    let config = MembershipConfig::lan();

    let mut sim = build(args.seed, n, &config);
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

    let fp_nodes = args.fp_nodes.unwrap_or(n.min(1000));
    // The false-positive runs are defined at 1000 nodes; a larger --nodes run skips them
    // unless asked, so it measures the large cluster rather than re-running the small one.
    let fp_minutes = args.fp_minutes.unwrap_or(if n > 1000 { 0 } else { 10 });
    if fp_minutes == 0 {
        eprintln!("false-positive runs skipped (--fp-minutes 0)");
    }
    let fp_lifeguard = false_positives(args.seed, fp_nodes, fp_minutes, &config);
    eprintln!("fp lifeguard: {fp_lifeguard} ({:?} wall)", wall.elapsed());
    let plain = config.clone().without_lifeguard();
    let fp_plain = false_positives(args.seed, fp_nodes, fp_minutes, &plain);
    eprintln!("fp plain: {fp_plain} ({:?} wall)", wall.elapsed());

    let opt = |d: Option<Duration>| d.map_or("null".to_string(), |d| secs(d).to_string());
    let json = format!(
        concat!(
            "{{\"nodes\":{},\"seed\":{},\"join_converge_s\":{},\"dissemination_p9999_s\":{},",
            "\"detect_first_s\":{},\"detect_all_dead_s\":{},\"false_positives_lifeguard\":{},",
            "\"false_positives_plain\":{},\"fp_nodes\":{},\"fp_minutes\":{},",
            "\"detect_first_s_trials\":[{}],\"detect_all_dead_s_trials\":[{}],",
            "\"bytes_per_node_per_s\":{:.0},\"sim_steps\":{},\"wall_s\":{:.1}}}"
        ),
        n,
        args.seed,
        opt(join_converge),
        opt(dissemination),
        opt(detect_first),
        opt(detect_all),
        fp_lifeguard,
        fp_plain,
        fp_nodes,
        fp_minutes,
        firsts.iter().map(|&d| opt(d)).collect::<Vec<_>>().join(","),
        alls.iter().map(|&d| opt(d)).collect::<Vec<_>>().join(","),
        bytes_per_node_per_s,
        steps_main,
        wall.elapsed().as_secs_f64(),
    );
    if !args.json {
        println!(
            "SWIM + Lifeguard, {n} nodes, LAN preset, seed {}",
            args.seed
        );
    }
    println!("{json}");
}

//! Helpers shared by the simulation tests.
#![allow(dead_code)]

use shoal_core::{Instant, NodeId};
use shoal_membership::sim::SimMember;
use shoal_membership::{MemberState, MembershipConfig};
use shoal_sim::{Latency, LinkConfig, SimConfig, Simulation};
use std::time::Duration;

pub fn id(n: u64) -> NodeId {
    NodeId::new(n)
}

/// A LAN link: 0.2 to 1 ms one way, optionally lossy.
pub fn lan_link(loss: f64) -> LinkConfig {
    LinkConfig {
        loss,
        ..LinkConfig::reliable(Latency::Uniform {
            min: Duration::from_micros(200),
            max: Duration::from_millis(1),
        })
    }
}

/// `n` nodes with ids 1..=n; nodes 1..=3 are the seeds. Every node starts at time 0.
pub fn cluster(seed: u64, n: u64, config: &MembershipConfig, loss: f64) -> Simulation<SimMember> {
    let mut sim = Simulation::new(
        seed,
        SimConfig {
            link: lan_link(loss),
            ..SimConfig::default()
        },
    );
    let seeds: Vec<NodeId> = (1..=n.min(3)).map(id).collect();
    for i in 1..=n {
        let node_seed = seed.wrapping_mul(1_000_003).wrapping_add(i);
        let member = SimMember::new(id(i), Vec::new(), config.clone(), &seeds, node_seed).unwrap();
        sim.add_node(id(i), member);
    }
    sim
}

/// Whether every running node sees exactly the running nodes `expected` as alive.
pub fn all_see(sim: &Simulation<SimMember>, expected: &[NodeId]) -> Result<(), String> {
    for (node, member, status) in sim.nodes() {
        if status != shoal_sim::NodeStatus::Up || !expected.contains(&node) {
            continue;
        }
        let swim = member.swim();
        for &other in expected {
            match swim.member(other) {
                Some(m) if m.state == MemberState::Alive => {}
                found => {
                    return Err(format!(
                        "{node} sees {other} as {:?}",
                        found.map(|m| m.state)
                    ))
                }
            }
        }
        let live = swim.members().iter().filter(|m| m.state.is_live()).count();
        if live != expected.len() {
            return Err(format!(
                "{node} sees {live} live members, expected {}",
                expected.len()
            ));
        }
    }
    Ok(())
}

/// Runs in steps of `step` until `check` passes or `limit` elapses; returns when it passed.
pub fn run_until_ok(
    sim: &mut Simulation<SimMember>,
    step: Duration,
    limit: Duration,
    mut check: impl FnMut(&Simulation<SimMember>) -> Result<(), String>,
) -> Result<Instant, String> {
    let deadline = sim.now() + limit;
    loop {
        if check(sim).is_ok() {
            return Ok(sim.now());
        }
        if sim.now() >= deadline {
            return Err(format!("seed {}: {}", sim.seed(), check(sim).unwrap_err()));
        }
        sim.run_for(step, |_| Ok(())).map_err(|e| e.to_string())?;
    }
}

//! Three SWIM members in shoal-sim's deterministic simulator: they join through node 1 and
//! converge, one crashes and the other two declare it dead, then it restarts and rejoins,
//! refuting its death with a higher incarnation. Time is virtual, so minutes of protocol run
//! in a moment, and the seed makes every run identical.
//!
//! Run it with `cargo run -p shoal-membership --example three_node_swim`.

use shoal_core::{Instant, NodeId};
use shoal_membership::sim::SimMember;
use shoal_membership::{MemberState, MembershipConfig};
use shoal_sim::{SimConfig, Simulation};
use std::error::Error;
use std::time::Duration;

const SEED: u64 = 7;
type Sim = Simulation<SimMember>;

fn main() -> Result<(), Box<dyn Error>> {
    let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    let (config, seeds) = (MembershipConfig::local(), [ids[0]]);
    let mut sim = Sim::new(SEED, SimConfig::default());
    for &id in &ids {
        // Every node joins through node 1, which skips its own address and starts alone.
        let meta = format!("zone={}", id.get() % 2).into_bytes();
        let member = SimMember::new(id, meta, config.clone(), &seeds, SEED + id.get())?;
        sim.add_node(id, member);
    }
    let everyone_alive = |s: &Sim| ids.iter().all(|&n| view(s, n) == [MemberState::Alive; 3]);

    let at = run_until(&mut sim, everyone_alive)?;
    println!("1. all three see each other alive at {at:?}");
    print_events(&mut sim, ids[0]);

    let victim = ids[2];
    sim.crash(victim);
    println!("2. {victim} crashes at {:?}", sim.now());
    let at = run_until(&mut sim, |s| {
        let dead = |n| view(s, n).get(2) == Some(&MemberState::Dead);
        dead(ids[0]) && dead(ids[1])
    })?;
    println!("   both survivors have declared it dead at {at:?}");
    print_events(&mut sim, ids[0]);

    sim.restart(victim);
    let now = sim.now();
    println!("3. {victim} restarts with an empty table at {now:?}");
    let at = run_until(&mut sim, everyone_alive)?;
    let incarnation = sim.node(victim).map_or(0, |m| m.swim().incarnation());
    println!("   all alive again at {at:?}; {victim} refuted at incarnation {incarnation}");
    print_events(&mut sim, ids[0]);
    Ok(())
}

/// The states `observer` holds for every member it knows, in id order.
fn view(sim: &Sim, observer: NodeId) -> Vec<MemberState> {
    let Some(node) = sim.node(observer) else {
        return Vec::new();
    };
    let members = node.swim().members();
    let mut states: Vec<_> = members.iter().map(|m| (m.id, m.state)).collect();
    states.sort_by_key(|&(id, _)| id);
    states.into_iter().map(|(_, state)| state).collect()
}

/// Steps the simulation half a second at a time until `done` holds (for at most two minutes
/// of virtual time) and returns the virtual time at which it first did.
fn run_until(sim: &mut Sim, done: impl Fn(&Sim) -> bool) -> Result<Instant, Box<dyn Error>> {
    for _ in 0..240 {
        if done(sim) {
            return Ok(sim.now());
        }
        sim.run_for(Duration::from_millis(500), |_| Ok(()))?;
    }
    Err(format!("seed {SEED}: still not done at {:?}", sim.now()).into())
}

/// Prints the membership events `observer` reported since the last call.
fn print_events(sim: &mut Sim, observer: NodeId) {
    let events = sim.node_mut(observer).map(|m| m.drain_events());
    for event in events.unwrap_or_default() {
        let (kind, id, at) = (event.kind, event.id, event.at);
        let meta = String::from_utf8_lossy(&event.meta);
        println!("   {observer} reports {kind:?} {id} ({meta}) at {at:?}");
    }
}

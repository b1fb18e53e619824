//! Whole-cluster scenarios in the deterministic simulator. A failure names its seed; rerun
//! with `SHOAL_SIM_SEED=<seed>` where the test reads it.

mod common;

use common::*;
use shoal_core::{DetRng, NodeId, Rng};
use shoal_membership::sim::{SimMember, SimPacket, SimTimer};
use shoal_membership::{MemberEventKind, MemberState, MembershipConfig};
use shoal_sim::{NodeStatus, Outputs, Simulation};
use std::time::Duration;

const S: fn(u64) -> Duration = Duration::from_secs;

fn ids(range: std::ops::RangeInclusive<u64>) -> Vec<NodeId> {
    range.map(id).collect()
}

/// Checked after every step: every running node that has not left sees itself alive at its
/// own incarnation.
fn self_alive(sim: &Simulation<SimMember>) -> Result<(), String> {
    for (node, member, status) in sim.nodes() {
        if status != NodeStatus::Up || member.swim().has_left() {
            continue;
        }
        let swim = member.swim();
        let me = swim.member(node).ok_or(format!("{node} forgot itself"))?;
        if me.state != MemberState::Alive || me.incarnation != swim.incarnation() {
            return Err(format!("{node} sees itself as {me:?}"));
        }
    }
    Ok(())
}

/// Dead events about nodes that are running.
fn false_deaths(sim: &mut Simulation<SimMember>) -> usize {
    let mut count = 0;
    for node in sim.node_ids() {
        let events = sim.node_mut(node).unwrap().drain_events();
        count += events
            .iter()
            .filter(|e| e.kind == MemberEventKind::Dead && sim.status(e.id) == Some(NodeStatus::Up))
            .count();
    }
    count
}

#[test]
fn small_cluster_joins_and_converges() {
    let mut sim = cluster(1, 20, &MembershipConfig::lan(), 0.0);
    run_until_ok(&mut sim, S(1), S(60), |s| all_see(s, &ids(1..=20))).unwrap();
    sim.run_for(S(30), self_alive).unwrap();
}

#[test]
fn thousand_nodes_join_through_three_seeds_and_converge() {
    let mut sim = cluster(2, 1000, &MembershipConfig::lan(), 0.0);
    for node in sim.node_ids() {
        sim.node_mut(node).unwrap().set_record_events(false);
    }
    let converged = run_until_ok(&mut sim, S(1), S(120), |s| {
        match s.nodes().find(|(_, m, _)| m.swim().num_live() != 1000) {
            None => Ok(()),
            Some((n, m, _)) => Err(format!("{n} sees {} live", m.swim().num_live())),
        }
    })
    .unwrap();
    assert!(
        converged.as_nanos() <= S(60).as_nanos() as u64,
        "{converged:?}"
    );
    for (_, member, _) in sim.nodes() {
        assert!(matches!(member.join_result(), Some(Ok(n)) if *n >= 1));
    }
}

#[test]
fn a_crashed_node_is_declared_dead_by_everyone() {
    let mut sim = cluster(3, 50, &MembershipConfig::lan(), 0.0);
    run_until_ok(&mut sim, S(1), S(60), |s| all_see(s, &ids(1..=50))).unwrap();
    sim.crash(id(17));
    let mut alive = ids(1..=50);
    alive.retain(|&n| n != id(17));
    run_until_ok(&mut sim, S(1), S(60), |s| {
        for (n, m, status) in s.nodes() {
            if status == NodeStatus::Up
                && m.swim().member(id(17)).map(|m| m.state) != Some(MemberState::Dead)
            {
                return Err(format!("{n} does not see n17 dead"));
            }
        }
        Ok(())
    })
    .unwrap();
    all_see(&sim, &alive).unwrap();
    assert_eq!(false_deaths(&mut sim), 0);
}

#[test]
fn partition_then_heal_converges_back() {
    let mut sim = cluster(4, 20, &MembershipConfig::lan(), 0.0);
    run_until_ok(&mut sim, S(1), S(60), |s| all_see(s, &ids(1..=20))).unwrap();
    let (a, b) = (ids(1..=10), ids(11..=20));
    sim.network_mut().partition(&a, &b);
    // Each side declares the other dead, and stays whole itself.
    run_until_ok(&mut sim, S(1), S(120), |s| {
        let sides = [(&a, &b), (&b, &a)];
        for (mine, theirs) in sides {
            for &n in mine {
                let swim = s.node(n).unwrap().swim();
                if theirs
                    .iter()
                    .any(|&o| swim.member(o).map(|m| m.state) != Some(MemberState::Dead))
                {
                    return Err(format!("{n} still sees the other side"));
                }
            }
        }
        Ok(())
    })
    .unwrap();
    // Each side still sees its own side alive.
    for (mine, theirs) in [(&a, &b), (&b, &a)] {
        for &n in mine.iter() {
            let swim = sim.node(n).unwrap().swim();
            for &o in mine.iter() {
                let state = swim.member(o).map(|m| m.state);
                assert_eq!(state, Some(MemberState::Alive), "{n} sees {o} as {state:?}");
            }
            let live = swim.members().iter().filter(|m| m.state.is_live()).count();
            assert_eq!(
                live,
                mine.len(),
                "{n} sees {live} live, {} across",
                theirs.len()
            );
        }
    }
    sim.network_mut().heal();
    // Reconnection (push-pull with dead members) merges the two views again.
    run_until_ok(&mut sim, S(1), S(300), |s| all_see(s, &ids(1..=20))).unwrap();
}

#[test]
fn converges_and_stays_converged_under_ten_percent_loss() {
    let mut sim = cluster(5, 50, &MembershipConfig::lan(), 0.10);
    run_until_ok(&mut sim, S(1), S(120), |s| all_see(s, &ids(1..=50))).unwrap();
    sim.run_for(S(300), self_alive).unwrap();
    all_see(&sim, &ids(1..=50)).unwrap();
}

/// Runs 100 nodes with 10% loss for five minutes while five of them lag (handle messages
/// 2–4 s late); returns the live members declared dead.
fn lagging_members_scenario(config: &MembershipConfig) -> usize {
    let mut sim = cluster(6, 100, config, 0.0);
    run_until_ok(&mut sim, S(1), S(60), |s| all_see(s, &ids(1..=100))).unwrap();
    sim.network_mut().set_default_link(lan_link(0.10));
    let mut rng = DetRng::from_seed(6);
    let mut deaths = 0;
    for _ in 0..30 {
        for n in 1..=5u64 {
            let lag = rng.duration_between(S(2), S(4));
            sim.node_mut(id(n * 19)).unwrap().set_inbound_delay(lag);
        }
        sim.run_for(S(10), |_| Ok(())).unwrap();
        deaths += false_deaths(&mut sim);
    }
    deaths
}

#[test]
fn lifeguard_avoids_false_deaths_that_plain_swim_suffers() {
    let lifeguard = lagging_members_scenario(&MembershipConfig::lan());
    let plain = lagging_members_scenario(&MembershipConfig::lan().without_lifeguard());
    println!("false deaths: lifeguard {lifeguard}, plain {plain}");
    assert!(lifeguard < plain, "lifeguard {lifeguard}, plain {plain}");
}

#[test]
fn rolling_restarts_rejoin_with_a_higher_incarnation() {
    let mut sim = cluster(7, 20, &MembershipConfig::lan(), 0.0);
    run_until_ok(&mut sim, S(1), S(60), |s| all_see(s, &ids(1..=20))).unwrap();
    for n in 4..=20u64 {
        sim.crash(id(n));
        sim.run_for(S(2), self_alive).unwrap();
        sim.restart(id(n));
        sim.run_for(S(5), self_alive).unwrap();
    }
    run_until_ok(&mut sim, S(1), S(120), |s| all_see(s, &ids(1..=20))).unwrap();
}

#[test]
fn leave_is_seen_as_left_and_a_restart_rejoins() {
    let mut sim = cluster(8, 20, &MembershipConfig::lan(), 0.0);
    run_until_ok(&mut sim, S(1), S(60), |s| all_see(s, &ids(1..=20))).unwrap();
    sim.act(id(20), |m, now, out: &mut Outputs<SimPacket, SimTimer>| {
        m.swim_mut().leave(now);
        m.flush(now, out);
    });
    run_until_ok(&mut sim, S(1), S(30), |s| {
        for n in 1..=19 {
            let state = s
                .node(id(n))
                .unwrap()
                .swim()
                .member(id(20))
                .map(|m| m.state);
            if state != Some(MemberState::Left) {
                return Err(format!("n{n} sees n20 as {state:?}"));
            }
        }
        Ok(())
    })
    .unwrap();
    assert!(sim.node(id(20)).unwrap().swim().leave_announced());
    assert_eq!(false_deaths(&mut sim), 0, "a leave is not a death");
    // The process exits and starts again with a fresh state; it refutes its old Left.
    sim.crash(id(20));
    sim.restart(id(20));
    run_until_ok(&mut sim, S(1), S(60), |s| all_see(s, &ids(1..=20))).unwrap();
    assert!(sim.node(id(20)).unwrap().swim().incarnation() > 0);
}

/// Fixed seeds in CI (`SHOAL_SIM_SEED` replays one, `SHOAL_SIM_EXPLORE=1` draws a fresh base).
#[test]
fn random_faults_then_heal_converge() {
    for seed in shoal_sim::seeds_from_env_or(0x5EED_0001, 3) {
        random_faults_then_heal_converge_with(seed);
    }
}

fn random_faults_then_heal_converge_with(seed: u64) {
    let mut sim = cluster(seed, 30, &MembershipConfig::lan(), 0.02);
    let mut rng = DetRng::from_seed(seed);
    run_until_ok(&mut sim, S(1), S(120), |s| all_see(s, &ids(1..=30)))
        .unwrap_or_else(|e| panic!("SHOAL_SIM_SEED={seed}: {e}"));
    for _ in 0..20 {
        let n = id(4 + rng.below(27));
        match rng.below(4) {
            0 => sim.crash(n),
            1 => sim.restart(n),
            2 => {
                let others: Vec<NodeId> = ids(1..=30).into_iter().filter(|&o| o != n).collect();
                sim.network_mut().isolate(n, others);
            }
            _ => sim.network_mut().heal(),
        }
        sim.run_for(rng.duration_between(S(1), S(20)), self_alive)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    sim.network_mut().heal();
    for n in 1..=30 {
        sim.restart(id(n));
    }
    run_until_ok(&mut sim, S(1), S(400), |s| all_see(s, &ids(1..=30)))
        .unwrap_or_else(|e| panic!("SHOAL_SIM_SEED={seed}: {e}"));
}

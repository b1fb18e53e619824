//! Quiescence: an idle group stops heartbeating, wakes for any work, and elects a new
//! leader when a failure detector says its quiet leader is down.

mod common;

use common::*;
use shoal_consensus::{Raft, RaftConfig, ReadMode};
use std::time::Duration;

const STEP: Duration = Duration::from_millis(50);

fn quiescing() -> RaftConfig {
    RaftConfig {
        quiesce: true,
        ..RaftConfig::default()
    }
}

/// Runs for `d` in steps, ticking and delivering everything; returns the messages sent.
fn run_counting(net: &mut Net, d: Duration) -> usize {
    let end = net.now + d;
    let mut sent = 0;
    while net.now < end {
        net.now += STEP;
        let now = net.now;
        for host in net.hosts.values_mut() {
            host.tick(now);
        }
        for _ in 0..1000 {
            let messages = net.flush_all();
            let busy = net.hosts.values().any(|h| h.has_ready());
            if messages.is_empty() && !busy {
                break;
            }
            sent += messages.len();
            for m in messages {
                net.deliver(m);
            }
        }
    }
    sent
}

fn all_quiet(net: &Net) -> bool {
    net.rafts().all(|r| r.is_quiet())
}

/// Three replicas, node 1 leading, "x" committed everywhere, every replica quiet.
fn quiet_group() -> Net {
    let mut net = Net::new(3, quiescing());
    net.elect(1);
    net.node(1).propose("x".into()).unwrap();
    net.settle();
    run_counting(&mut net, Duration::from_secs(1));
    assert!(all_quiet(&net), "the idle group went quiet");
    net
}

#[test]
fn an_idle_group_goes_quiet_sends_nothing_and_wakes_for_a_proposal() {
    let mut net = quiet_group();
    let term = net.node(1).term();
    assert_eq!(run_counting(&mut net, Duration::from_secs(60)), 0);
    assert!(all_quiet(&net));
    net.node(1).propose("y".into()).unwrap();
    assert!(!net.node(1).is_quiet(), "a proposal wakes the leader");
    run_counting(&mut net, Duration::from_secs(1));
    for id in 1..=3 {
        assert_eq!(net.commands(id), vec!["x", "y"], "n{id}");
    }
    assert!(all_quiet(&net), "quiet again once the write is everywhere");
    assert_eq!(net.node(1).term(), term);
}

#[test]
fn a_group_stays_quiet_without_a_failure_detector_and_elect_once_told_the_leader_is_down() {
    let mut net = quiet_group();
    let term = net.node(2).term();
    net.remove(n(1));
    // Nothing notices by itself: the followers trust their quiet leader.
    run_counting(&mut net, Duration::from_secs(10));
    assert_eq!(net.node(2).term(), term);
    assert!(net.rafts().all(|r| !r.is_leader()));
    for id in [2, 3] {
        net.hosts.get_mut(&n(id)).unwrap().peer_down(n(1));
    }
    // A node that is not the leader being down changes nothing.
    net.hosts.get_mut(&n(2)).unwrap().peer_down(n(3));
    run_counting(&mut net, Duration::from_secs(5));
    let leader = [2, 3]
        .into_iter()
        .find(|&id| net.node(id).is_leader())
        .expect("a new leader once the followers were told");
    net.node(leader).propose("z".into()).unwrap();
    run_counting(&mut net, Duration::from_secs(1));
    for id in [2, 3] {
        assert_eq!(net.commands(id), vec!["x", "z"], "n{id}");
    }
}

#[test]
fn a_restarted_follower_wakes_its_quiet_leader_and_comes_back_under_it() {
    let mut net = quiet_group();
    let term = net.node(1).term();
    let mut old = net.remove(n(3));
    let store = std::mem::take(old.store_mut());
    let restarted = Raft::new(n(3), GROUP, quiescing(), store, 0, 3, net.now).unwrap();
    net.insert(restarted);
    // It times out (it knows no leader), its pre-vote wakes the leader, which takes it
    // back; nobody's term moves and the group goes quiet again.
    run_counting(&mut net, Duration::from_secs(5));
    assert!(net.node(1).is_leader());
    assert_eq!(net.node(3).leader(), Some(n(1)));
    for id in 1..=3 {
        assert_eq!(net.node(id).term(), term, "n{id}");
    }
    assert!(all_quiet(&net));
}

#[test]
fn a_quiet_leader_that_restarts_at_once_is_not_shut_out_by_its_quiet_followers() {
    let mut net = quiet_group();
    let mut old = net.remove(n(1));
    let store = std::mem::take(old.store_mut());
    let restarted = Raft::new(n(1), GROUP, quiescing(), store, 0, 11, net.now).unwrap();
    net.insert(restarted);
    // No failure detector noticed; the followers still trust node 1 as their leader. Its
    // pre-vote tells them it no longer leads.
    run_counting(&mut net, Duration::from_secs(5));
    let leaders: Vec<u64> = (1..=3).filter(|&id| net.node(id).is_leader()).collect();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    net.node(leaders[0]).propose("y".into()).unwrap();
    run_counting(&mut net, Duration::from_secs(1));
    for id in 1..=3 {
        assert_eq!(
            net.commands(id).last().map(String::as_str),
            Some("y"),
            "n{id}"
        );
    }
}

#[test]
fn a_quiet_leader_serves_a_read_after_a_heartbeat_round() {
    let mut net = quiet_group();
    net.read(1, 7, ReadMode::Safe);
    run_counting(&mut net, Duration::from_secs(1));
    assert!(
        net.reads[&n(1)].iter().any(|r| r.ctx == 7),
        "{:?}",
        net.reads
    );
    // A follower's read goes through the quiet leader too.
    net.read(2, 8, ReadMode::Safe);
    run_counting(&mut net, Duration::from_secs(1));
    assert!(net.reads[&n(2)].iter().any(|r| r.ctx == 8));
    assert!(all_quiet(&net));
}

#[test]
fn a_leader_with_a_lagging_follower_stays_awake_until_it_catches_up() {
    let mut net = quiet_group();
    net.isolate(3);
    net.node(1).propose("y".into()).unwrap();
    run_counting(&mut net, Duration::from_secs(5));
    assert!(!net.node(1).is_quiet(), "node 3 lacks \"y\"");
    assert!(net.node(1).is_leader());
    net.heal();
    run_counting(&mut net, Duration::from_secs(3));
    assert_eq!(net.commands(3), vec!["x", "y"]);
    assert!(net.node(1).is_leader());
    assert!(all_quiet(&net));
}

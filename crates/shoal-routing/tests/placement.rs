//! Placement properties: distinctness, zone spread, weights, minimal movement.

use proptest::prelude::*;
use shoal_core::NodeId;
use shoal_routing::{jump_hash, key_hash, Candidate, HashRing, Partitioner, Rendezvous};
use std::num::NonZeroU32;

fn keys(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(|i| key_hash(&i.to_le_bytes()))
}

fn cluster(nodes: u64, zones: u32) -> Vec<Candidate> {
    (1..=nodes)
        .map(|i| Candidate::new(NodeId::new(i), (i % u64::from(zones)) as u32))
        .collect()
}

proptest! {
    #[test]
    fn hrw_picks_distinct_nodes_over_as_many_zones_as_possible(
        nodes in 1u64..40, zones in 1u32..6, r in 0usize..8, key in any::<u64>()
    ) {
        let hrw = Rendezvous::new(cluster(nodes, zones));
        let picked = hrw.pick(key, r);
        prop_assert_eq!(picked.len(), r.min(nodes as usize));
        let mut dedup = picked.clone();
        dedup.sort();
        dedup.dedup();
        prop_assert_eq!(dedup.len(), picked.len());
        let zones_present = (nodes as usize).min(zones as usize);
        let mut picked_zones: Vec<u64> = picked.iter().map(|n| n.get() % u64::from(zones)).collect();
        picked_zones.sort();
        picked_zones.dedup();
        prop_assert_eq!(picked_zones.len(), picked.len().min(zones_present));
        if r > 0 {
            prop_assert_eq!(hrw.first(key), picked.first().copied());
        }
    }

    #[test]
    fn hrw_removing_a_node_moves_only_the_sets_that_held_it(
        nodes in 2u64..30, zones in 1u32..4, r in 1usize..5, gone in 1u64..30, key in any::<u64>()
    ) {
        let gone = NodeId::new(1 + gone % nodes);
        let mut hrw = Rendezvous::new(cluster(nodes, zones));
        let before = hrw.pick(key, r);
        hrw.remove(gone);
        let after = hrw.pick(key, r);
        if !before.contains(&gone) {
            prop_assert_eq!(before, after);
        }
    }

    #[test]
    fn ring_replicas_are_distinct_and_start_at_the_owner(
        nodes in 1u64..20, vnodes in 1u32..50, r in 0usize..6, key in any::<u64>()
    ) {
        let ring = HashRing::new((1..=nodes).map(NodeId::new), vnodes);
        let replicas = ring.replicas(key, r);
        prop_assert_eq!(replicas.len(), r.min(nodes as usize));
        let mut dedup = replicas.clone();
        dedup.sort();
        dedup.dedup();
        prop_assert_eq!(dedup.len(), replicas.len());
        if r > 0 {
            prop_assert_eq!(replicas.first().copied(), ring.owner(key));
        }
    }
}

#[test]
fn hrw_shares_follow_weights() {
    let hrw = Rendezvous::new(vec![
        Candidate::weighted(NodeId::new(1), 0, 1.0),
        Candidate::weighted(NodeId::new(2), 0, 1.0),
        Candidate::weighted(NodeId::new(3), 0, 2.0),
        // Unusable weights are never picked.
        Candidate::weighted(NodeId::new(4), 0, 0.0),
        Candidate::weighted(NodeId::new(5), 0, f64::NAN),
    ]);
    let mut wins = [0u64; 6];
    let n = 200_000;
    for k in keys(n) {
        wins[hrw.first(k).unwrap().get() as usize] += 1;
    }
    let share = |i: usize| wins[i] as f64 / n as f64;
    assert!((share(1) - 0.25).abs() < 0.01, "{wins:?}");
    assert!((share(2) - 0.25).abs() < 0.01, "{wins:?}");
    assert!((share(3) - 0.50).abs() < 0.01, "{wins:?}");
    assert_eq!((wins[4], wins[5]), (0, 0));
}

#[test]
fn hrw_duplicate_listings_count_once_and_the_last_wins() {
    let hrw = Rendezvous::new(vec![
        Candidate::new(NodeId::new(2), 0),
        Candidate::new(NodeId::new(1), 0),
        Candidate::new(NodeId::new(2), 1),
    ]);
    let listed: Vec<(u64, u32)> = hrw
        .candidates()
        .iter()
        .map(|c| (c.node().get(), c.zone()))
        .collect();
    assert_eq!(listed, vec![(1, 0), (2, 1)]);
}

#[test]
fn ring_removal_moves_only_the_removed_nodes_keys() {
    let all = HashRing::new((1..=10).map(NodeId::new), 64);
    let fewer = HashRing::new((1..=10).filter(|&i| i != 4).map(NodeId::new), 64);
    for k in keys(20_000) {
        let before = all.owner(k).unwrap();
        if before != NodeId::new(4) {
            assert_eq!(fewer.owner(k), Some(before));
        }
    }
}

#[test]
fn jump_spreads_evenly_and_moves_one_in_n_plus_one() {
    let (n, buckets) = (200_000u64, 100u32);
    let b = NonZeroU32::new(buckets).unwrap();
    let b1 = NonZeroU32::new(buckets + 1).unwrap();
    let mut counts = vec![0u64; buckets as usize];
    let mut moved = 0u64;
    for k in keys(n) {
        let before = jump_hash(k, b);
        counts[before as usize] += 1;
        if jump_hash(k, b1) != before {
            moved += 1;
        }
    }
    let mean = n as f64 / f64::from(buckets);
    for &c in &counts {
        // 2000 expected per bucket; 6 standard deviations is about ±270.
        assert!((c as f64 - mean).abs() < 300.0, "{counts:?}");
    }
    let fraction = moved as f64 / n as f64;
    let ideal = 1.0 / f64::from(buckets + 1);
    assert!(
        (fraction - ideal).abs() < ideal * 0.1,
        "{fraction} vs {ideal}"
    );
}

#[test]
fn partitioner_refuses_zero_shards_and_agrees_with_jump() {
    assert!(Partitioner::new(0).is_err());
    let mut p = Partitioner::new(10).unwrap();
    assert!(p.set_shards(0).is_err());
    assert_eq!(p.shards(), 10);
    for i in 0..1000u32 {
        let subject = i.to_be_bytes();
        assert_eq!(
            p.shard_of(&subject),
            jump_hash(key_hash(&subject), NonZeroU32::new(10).unwrap())
        );
    }
}

//! The range table's invariant, the gossip merge's lattice laws, the split/merge policy and
//! placement.

use proptest::prelude::*;
use shoal_core::{
    DescriptorError, Generation, Instant, KeyRange, NodeId, RangeDescriptor, RangeEnd, RangeId,
    ReplicaDescriptor,
};
use shoal_ranges::{
    plan_placement, Decision, DescriptorSet, GossipError, InFlight, NodeInfo, PlacementAction,
    PlacementConfig, RangeStats, RangeTable, RangeTableError, SplitMergePolicy, SplitReason,
};
use std::collections::HashMap;

const MAX_KEY: usize = 64;

fn voters(nodes: &[u64]) -> Vec<ReplicaDescriptor> {
    nodes
        .iter()
        .map(|&n| ReplicaDescriptor::voter(NodeId::new(n)))
        .collect()
}

fn desc(id: u64, start: &str, end: &str, nodes: &[u64]) -> RangeDescriptor {
    let end = if end.is_empty() {
        RangeEnd::Unbounded
    } else {
        RangeEnd::Key(end.as_bytes().to_vec())
    };
    let range = KeyRange::new(start.as_bytes().to_vec(), end).unwrap();
    RangeDescriptor::new(RangeId::new(id), range, voters(nodes)).unwrap()
}

fn one_range() -> RangeTable {
    RangeTable::new(vec![desc(1, "", "", &[1, 2, 3])], MAX_KEY).unwrap()
}

#[test]
fn tables_with_gaps_overlaps_or_missing_ends_are_refused() {
    let refuse = |ds: Vec<RangeDescriptor>| RangeTable::new(ds, MAX_KEY).unwrap_err();
    assert_eq!(refuse(vec![]), RangeTableError::Empty);
    assert!(matches!(
        refuse(vec![desc(1, "a", "", &[1])]),
        RangeTableError::StartsLate(_)
    ));
    assert!(matches!(
        refuse(vec![desc(1, "", "m", &[1])]),
        RangeTableError::EndsEarly(_)
    ));
    assert!(matches!(
        refuse(vec![desc(1, "", "k", &[1]), desc(2, "m", "", &[1])]),
        RangeTableError::Gap { .. }
    ));
    assert!(matches!(
        refuse(vec![desc(1, "", "p", &[1]), desc(2, "m", "", &[1])]),
        RangeTableError::Overlap { .. }
    ));
    assert!(matches!(
        refuse(vec![desc(1, "", "m", &[1]), desc(1, "m", "", &[1])]),
        RangeTableError::DuplicateId(_)
    ));
    let long = "k".repeat(MAX_KEY + 1);
    assert!(matches!(
        refuse(vec![desc(1, "", &long, &[1]), desc(2, &long, "", &[1])]),
        RangeTableError::KeyTooLarge { .. }
    ));
    // In any order, a proper covering is accepted.
    let ok = RangeTable::new(
        vec![desc(2, "m", "", &[1]), desc(1, "", "m", &[1])],
        MAX_KEY,
    );
    assert_eq!(ok.unwrap().len(), 2);
}

#[test]
fn splits_merges_and_replica_changes_bump_generations() {
    let mut t = one_range();
    t.split(RangeId::new(1), b"m", RangeId::new(2)).unwrap();
    assert_eq!(
        t.get(RangeId::new(1)).unwrap().generation,
        Generation::new(2)
    );
    assert_eq!(t.lookup(b"zz").id, RangeId::new(2));
    assert_eq!(t.lookup(b"").id, RangeId::new(1));
    t.set_replicas(RangeId::new(2), voters(&[1, 2, 4]), Some(NodeId::new(4)))
        .unwrap();
    assert_eq!(
        t.get(RangeId::new(2)).unwrap().generation,
        Generation::new(3)
    );
    // Replicas now differ: no merge, and nothing changed.
    let before = t.clone();
    assert!(t.merge(RangeId::new(1), RangeId::new(2)).is_err());
    assert_eq!(t, before);
    t.set_replicas(RangeId::new(2), voters(&[1, 2, 3]), None)
        .unwrap();
    t.merge(RangeId::new(1), RangeId::new(2)).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        t.get(RangeId::new(1)).unwrap().generation,
        Generation::new(5)
    );
    assert_eq!(t.get(RangeId::new(2)), None);
}

#[test]
fn bad_changes_are_refused_and_leave_the_table_alone() {
    let mut t = one_range();
    t.split(RangeId::new(1), b"m", RangeId::new(2)).unwrap();
    let before = t.clone();
    let errors = [
        t.split(RangeId::new(1), b"x", RangeId::new(3)).unwrap_err(), // outside range 1
        t.split(RangeId::new(1), b"", RangeId::new(3)).unwrap_err(),  // at its start
        t.split(RangeId::new(1), b"c", RangeId::new(2)).unwrap_err(), // id in use
        t.split(RangeId::new(9), b"c", RangeId::new(3)).unwrap_err(), // unknown
        t.split(
            RangeId::new(1),
            "c".repeat(MAX_KEY + 1).as_bytes(),
            RangeId::new(3),
        )
        .unwrap_err(),
        t.merge(RangeId::new(2), RangeId::new(1)).unwrap_err(), // wrong order
        t.set_replicas(RangeId::new(1), vec![], None).unwrap_err(),
        t.set_leader_hint(RangeId::new(1), NodeId::new(7))
            .unwrap_err(),
    ];
    assert!(matches!(errors[2], RangeTableError::IdInUse(_)));
    assert!(matches!(errors[4], RangeTableError::KeyTooLarge { .. }));
    assert!(matches!(errors[5], RangeTableError::NotAdjacent { .. }));
    assert!(matches!(
        errors[6],
        RangeTableError::Descriptor(DescriptorError::NoVoter)
    ));
    assert_eq!(t, before);
}

/// A random history: splits at random keys and merges of random neighbours, with every
/// intermediate table's descriptor set recorded.
fn history(ops: &[(bool, u8, u16)]) -> (RangeTable, Vec<DescriptorSet>) {
    let mut t = one_range();
    let mut snapshots = vec![DescriptorSet::from_table(&t)];
    let mut next_id = 2;
    for &(split, pick, key) in ops {
        let ids: Vec<RangeId> = t.descriptors().map(|d| d.id).collect();
        let id = ids[pick as usize % ids.len()];
        if split {
            let key = format!("{key:05}");
            if t.split(id, key.as_bytes(), RangeId::new(next_id)).is_ok() {
                next_id += 1;
            }
        } else if let Some(right) = t.right_neighbour(id).map(|d| d.id) {
            t.merge(id, right).unwrap();
        }
        t.check().unwrap();
        snapshots.push(DescriptorSet::from_table(&t));
    }
    (t, snapshots)
}

fn merged(sets: &[&DescriptorSet]) -> DescriptorSet {
    let mut out = DescriptorSet::new();
    for s in sets {
        out.merge(s);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every change keeps the invariant, and lookups agree with a scan.
    #[test]
    fn random_histories_keep_the_table_covering(
        ops in prop::collection::vec((any::<bool>(), any::<u8>(), 0u16..2000), 0..60),
        probes in prop::collection::vec(0u16..2100, 20),
    ) {
        let (t, _) = history(&ops);
        for p in probes {
            let key = format!("{p:05}");
            let found = t.lookup(key.as_bytes());
            prop_assert!(found.contains_key(key.as_bytes()));
            prop_assert_eq!(t.descriptors().filter(|d| d.contains_key(key.as_bytes())).count(), 1);
        }
    }

    /// The merge is commutative, associative and idempotent, and merging any snapshots of a
    /// history, in any order, converges to the newest table wherever the newest is known.
    #[test]
    fn gossip_merge_is_a_semilattice(
        ops in prop::collection::vec((any::<bool>(), any::<u8>(), 0u16..2000), 1..40),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 3),
    ) {
        let (t, snaps) = history(&ops);
        let [a, b, c] = [0, 1, 2].map(|i| &snaps[picks[i].index(snaps.len())]);
        prop_assert_eq!(merged(&[a, b]), merged(&[b, a]));
        prop_assert_eq!(merged(&[&merged(&[a, b]), c]), merged(&[a, &merged(&[b, c])]));
        prop_assert_eq!(merged(&[a, a]), a.clone());
        let mut all = merged(&snaps.iter().collect::<Vec<_>>());
        prop_assert_eq!(all.to_table(MAX_KEY).unwrap(), t.clone());
        let reversed: Vec<&DescriptorSet> = snaps.iter().rev().collect();
        prop_assert_eq!(merged(&reversed), all.clone());
        // Stale knowledge merged in later changes nothing.
        prop_assert!(!all.merge(a));
        // No merge loses a key: every key has a winner.
        let ab = merged(&[a, b]);
        for k in ["", "00500", "01000", "01999", "zz"] {
            prop_assert!(ab.winner(k.as_bytes()).is_some());
        }
    }

    /// Chunks fit the limit and, applied alone in any order, rebuild the set.
    #[test]
    fn chunks_are_independent_deltas(
        ops in prop::collection::vec((Just(true), any::<u8>(), 0u16..2000), 1..40),
    ) {
        let (t, _) = history(&ops);
        let set = DescriptorSet::from_table(&t);
        let chunks = set.encode_chunks(200).unwrap();
        let mut rebuilt = DescriptorSet::new();
        for chunk in chunks.iter().rev() {
            prop_assert!(chunk.len() <= 200);
            rebuilt.merge(&DescriptorSet::decode_chunk(chunk, MAX_KEY).unwrap());
        }
        prop_assert_eq!(rebuilt, set);
    }
}

#[test]
fn a_partly_superseded_descriptor_keeps_the_keys_nobody_newer_covers() {
    let old = DescriptorSet::from_descriptors(vec![desc(1, "", "", &[1])], MAX_KEY).unwrap();
    let mut left = desc(1, "", "m", &[1]);
    left.generation = Generation::new(2);
    let newer = DescriptorSet::from_descriptors(vec![left], MAX_KEY).unwrap();
    let both = merged(&[&old, &newer]);
    assert_eq!(both.len(), 2, "the old range still answers for [m, ∞)");
    assert_eq!(both.winner(b"a").unwrap().generation, Generation::new(2));
    assert_eq!(both.winner(b"x").unwrap().generation, Generation::new(1));
    assert!(
        both.to_table(MAX_KEY).is_err(),
        "half-known split: no table yet"
    );
}

#[test]
fn bad_chunks_and_descriptors_are_refused() {
    let set = DescriptorSet::from_table(&one_range());
    let chunk = set.encode_chunks(512).unwrap().remove(0);
    assert!(DescriptorSet::decode_chunk(&chunk[..chunk.len() - 1], MAX_KEY).is_err());
    let mut garbage = chunk.clone();
    garbage.extend_from_slice(&[0xFF; 7]);
    assert!(DescriptorSet::decode_chunk(&garbage, MAX_KEY).is_err());
    assert!(matches!(
        set.encode_chunks(4),
        Err(GossipError::DescriptorTooLarge { .. })
    ));
    let long = "k".repeat(MAX_KEY + 1);
    assert!(matches!(
        DescriptorSet::from_descriptors(vec![desc(1, &long, "", &[1])], MAX_KEY),
        Err(GossipError::KeyTooLarge { .. })
    ));
}

fn stats(size_mib: u64, median: &str, qps: f64) -> RangeStats {
    RangeStats {
        size_bytes: size_mib << 20,
        size_median_key: Some(median.as_bytes().to_vec()),
        qps,
        load_median_key: Some(median.as_bytes().to_vec()),
        last_change: None,
    }
}

fn four_ranges() -> RangeTable {
    RangeTable::new(
        vec![
            desc(1, "", "d", &[1, 2, 3]),
            desc(2, "d", "h", &[1, 2, 3]),
            desc(3, "h", "p", &[1, 2, 3]),
            desc(4, "p", "", &[1, 2, 4]),
        ],
        MAX_KEY,
    )
    .unwrap()
}

#[test]
fn policy_splits_big_or_hot_ranges_at_their_median_and_merges_small_neighbours() {
    let t = four_ranges();
    let policy = SplitMergePolicy::default();
    let s = HashMap::from([
        (RangeId::new(1), stats(5, "b", 10.0)),
        (RangeId::new(2), stats(6, "f", 10.0)),
        (RangeId::new(3), stats(100, "k", 10.0)),
        (RangeId::new(4), stats(1, "t", 5_000.0)),
    ]);
    let d = policy.decide(&t, &s, &InFlight::default(), Instant::ZERO);
    assert_eq!(
        d,
        vec![
            Decision::Split {
                range: RangeId::new(4),
                at: b"t".to_vec(),
                reason: SplitReason::Load
            },
            Decision::Split {
                range: RangeId::new(3),
                at: b"k".to_vec(),
                reason: SplitReason::Size
            },
            Decision::Merge {
                left: RangeId::new(1),
                right: RangeId::new(2)
            },
        ]
    );
}

#[test]
fn policy_respects_hysteresis_cooldown_caps_and_replica_sets() {
    let t = four_ranges();
    let policy = SplitMergePolicy::default();
    // 12 + 12 MiB is over the merge threshold; range 4's replicas differ from range 3's.
    let mut s = HashMap::from([
        (RangeId::new(1), stats(12, "b", 0.0)),
        (RangeId::new(2), stats(12, "f", 0.0)),
        (RangeId::new(3), stats(12, "k", 0.0)),
        (RangeId::new(4), stats(1, "t", 0.0)),
    ]);
    assert!(policy
        .decide(&t, &s, &InFlight::default(), Instant::ZERO)
        .is_empty());
    // A fresh split half (32 MiB) is far from both thresholds.
    s.insert(RangeId::new(1), stats(32, "b", 0.0));
    assert!(policy
        .decide(&t, &s, &InFlight::default(), Instant::ZERO)
        .is_empty());
    // Cooling down: a just-split range is left alone until the cooldown passes.
    let mut big = stats(200, "b", 0.0);
    big.last_change = Some(Instant::from_millis(1_000));
    s.insert(RangeId::new(1), big);
    assert!(policy
        .decide(&t, &s, &InFlight::default(), Instant::from_millis(30_000))
        .is_empty());
    assert_eq!(
        policy
            .decide(&t, &s, &InFlight::default(), Instant::from_millis(61_000))
            .len(),
        1
    );
    // Caps count what is already running.
    let busy = InFlight {
        splits: 4,
        ..InFlight::default()
    };
    assert!(policy
        .decide(&t, &s, &busy, Instant::from_millis(61_000))
        .is_empty());
    let capped = SplitMergePolicy {
        max_concurrent_splits: 1,
        ..SplitMergePolicy::default()
    };
    for id in 1..=4 {
        s.insert(
            RangeId::new(id),
            stats(100, ["b", "f", "k", "t"][id as usize - 1], 0.0),
        );
    }
    assert_eq!(
        capped
            .decide(&t, &s, &InFlight::default(), Instant::ZERO)
            .len(),
        1
    );
    // A median outside the range (stale statistics) is never used.
    s.insert(RangeId::new(1), stats(100, "zz", 0.0));
    let d = policy.decide(&t, &s, &InFlight::default(), Instant::ZERO);
    assert!(d
        .iter()
        .all(|d| !matches!(d, Decision::Split { range, .. } if *range == RangeId::new(1))));
}

fn node(id: u64, zone: u32, alive: bool) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(id),
        zone,
        capacity: 1.0,
        alive,
    }
}

fn apply(t: &mut RangeTable, actions: &[PlacementAction]) {
    for a in actions {
        match *a {
            PlacementAction::AddReplica { range, node } => {
                let mut r = t.get(range).unwrap().replicas.clone();
                r.push(ReplicaDescriptor::voter(node));
                let leader = t.get(range).unwrap().leader_hint;
                t.set_replicas(range, r, leader).unwrap();
            }
            PlacementAction::RemoveReplica { range, node } => {
                let d = t.get(range).unwrap();
                let r: Vec<_> = d
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| r.node != node)
                    .collect();
                let leader = d.leader_hint.filter(|&l| l != node);
                t.set_replicas(range, r, leader).unwrap();
            }
            PlacementAction::TransferLeader { range, to } => t.set_leader_hint(range, to).unwrap(),
        }
    }
}

fn counts(t: &RangeTable) -> HashMap<NodeId, usize> {
    let mut c = HashMap::new();
    for d in t.descriptors() {
        for r in &d.replicas {
            *c.entry(r.node).or_default() += 1;
        }
    }
    c
}

#[test]
fn placement_replaces_a_dead_node_in_a_zone_the_range_lacks() {
    let mut t = four_ranges();
    let nodes = vec![
        node(1, 0, true),
        node(2, 1, true),
        node(3, 2, false),
        node(4, 2, true),
        node(5, 0, true),
    ];
    let plan = plan_placement(&t, &nodes, &PlacementConfig::default());
    for id in 1..=3 {
        let range = RangeId::new(id);
        assert!(plan.contains(&PlacementAction::AddReplica {
            range,
            node: NodeId::new(4)
        }));
        assert!(plan.contains(&PlacementAction::RemoveReplica {
            range,
            node: NodeId::new(3)
        }));
    }
    apply(&mut t, &plan);
    for d in t.descriptors() {
        assert_eq!(d.replicas.len(), 3);
        assert!(d.role_of(NodeId::new(3)).is_none());
        assert!(d.leader_hint.is_some(), "every range has a live leader");
    }
}

#[test]
fn placement_leaves_a_balanced_cluster_alone_and_feeds_a_new_node_its_share() {
    let mut t = RangeTable::new(vec![desc(1, "", "", &[1, 2, 3])], MAX_KEY).unwrap();
    for i in 1..30u64 {
        let key = format!("k{i:03}");
        t.split(
            t.lookup(key.as_bytes()).id,
            key.as_bytes(),
            RangeId::new(i + 1),
        )
        .unwrap();
    }
    let mut nodes: Vec<NodeInfo> = (1..=3).map(|i| node(i, i as u32, true)).collect();
    let config = PlacementConfig::default();
    for d in t.descriptors().map(|d| d.id).collect::<Vec<_>>() {
        t.set_leader_hint(d, NodeId::new(1 + d.get() % 3)).unwrap();
    }
    assert_eq!(
        plan_placement(&t, &nodes, &config),
        vec![],
        "balanced: no churn"
    );
    // A fourth node joins: 90 replicas over 4 nodes, 22 or 23 each.
    nodes.push(node(4, 4, true));
    let mut moves = 0;
    for _round in 0..10 {
        let plan = plan_placement(&t, &nodes, &config);
        if plan.is_empty() {
            break;
        }
        moves += plan
            .iter()
            .filter(|a| matches!(a, PlacementAction::AddReplica { .. }))
            .count();
        apply(&mut t, &plan);
    }
    let c = counts(&t);
    assert!(c.values().all(|&n| (22..=23).contains(&n)), "{c:?}");
    assert_eq!(moves, c[&NodeId::new(4)], "only the new node's share moved");
    assert!(plan_placement(&t, &nodes, &config).is_empty());
}

#[test]
fn placement_spreads_leaders() {
    let mut t = four_ranges();
    for id in 1..=4 {
        t.set_leader_hint(RangeId::new(id), NodeId::new(1)).unwrap();
    }
    let nodes: Vec<NodeInfo> = (1..=4).map(|i| node(i, i as u32, true)).collect();
    let plan = plan_placement(&t, &nodes, &PlacementConfig::default());
    apply(&mut t, &plan);
    let mut leaders: HashMap<NodeId, usize> = HashMap::new();
    for d in t.descriptors() {
        *leaders.entry(d.leader_hint.unwrap()).or_default() += 1;
    }
    assert!(leaders.values().all(|&n| n <= 2), "{leaders:?}");
}

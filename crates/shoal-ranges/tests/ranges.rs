//! The range table's invariant, the gossip merge's lattice laws, the split/merge policy and
//! placement.

use proptest::prelude::*;
use shoal_core::{
    DescriptorError, Generation, Instant, KeyRange, NodeId, RangeDescriptor, RangeEnd, RangeId,
    ReplicaDescriptor,
};
use shoal_ranges::{
    plan_placement, precedence, Chunks, ConfigError, Decision, DescriptorSet, GossipError,
    InFlight, NodeInfo, PlacementAction, PlacementConfig, RangeStats, RangeTable, RangeTableError,
    SplitMergePolicy, SplitReason, MAX_HINT_TERM,
};
use std::cmp::Ordering;
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
    let d = policy
        .decide(&t, &s, &InFlight::default(), Instant::ZERO)
        .unwrap();
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
        .unwrap()
        .is_empty());
    // A fresh split half (32 MiB) is far from both thresholds.
    s.insert(RangeId::new(1), stats(32, "b", 0.0));
    assert!(policy
        .decide(&t, &s, &InFlight::default(), Instant::ZERO)
        .unwrap()
        .is_empty());
    // Cooling down: a just-split range is left alone until the cooldown passes.
    let mut big = stats(200, "b", 0.0);
    big.last_change = Some(Instant::from_millis(1_000));
    s.insert(RangeId::new(1), big);
    assert!(policy
        .decide(&t, &s, &InFlight::default(), Instant::from_millis(30_000))
        .unwrap()
        .is_empty());
    assert_eq!(
        policy
            .decide(&t, &s, &InFlight::default(), Instant::from_millis(61_000))
            .unwrap()
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
        .unwrap()
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
            .unwrap()
            .len(),
        1
    );
    // A median outside the range (stale statistics) is never used.
    s.insert(RangeId::new(1), stats(100, "zz", 0.0));
    let d = policy
        .decide(&t, &s, &InFlight::default(), Instant::ZERO)
        .unwrap();
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

// Leader hints in the gossip merge.

#[test]
fn leader_hints_do_not_decide_precedence() {
    let mut low = desc(1, "", "", &[1, 2, 3]);
    low.leader_hint = Some(NodeId::new(1));
    let mut high = low.clone();
    high.leader_hint = Some(NodeId::new(3));
    assert_eq!(precedence(&low, &high), Ordering::Equal);
    // Two undated hints that disagree: neither is trusted, whichever id is higher, in
    // either order.
    let a = DescriptorSet::from_descriptors(vec![low.clone()], MAX_KEY).unwrap();
    let b = DescriptorSet::from_descriptors(vec![high], MAX_KEY).unwrap();
    for both in [merged(&[&a, &b]), merged(&[&b, &a])] {
        assert_eq!(both.len(), 1);
        assert_eq!(both.winner(b"x").unwrap().leader_hint, None);
        assert_eq!(both.winner(b"x").unwrap().generation, low.generation);
    }
}

#[test]
fn a_new_leader_spreads_by_its_term_whatever_its_id() {
    let d = desc(1, "", "", &[1, 2, 3]);
    for (old, new) in [(3, 1), (1, 3)] {
        let before = DescriptorSet::leader_delta(&d, NodeId::new(old), 4, MAX_KEY).unwrap();
        let after = DescriptorSet::leader_delta(&d, NodeId::new(new), 5, MAX_KEY).unwrap();
        let mut view = before.clone();
        assert!(view.merge(&after));
        assert_eq!(
            view.winner(b"").unwrap().leader_hint,
            Some(NodeId::new(new))
        );
        assert_eq!(view, after);
        // The old announcement, gossiped again later, changes nothing.
        assert!(!view.merge(&before));
        assert_eq!(merged(&[&after, &before]), after);
        // Neither does an undated copy, as a table gives.
        let undated = DescriptorSet::from_descriptors(vec![d.clone()], MAX_KEY).unwrap();
        assert!(!view.merge(&undated));
    }
    // Only a voter can be announced.
    assert!(matches!(
        DescriptorSet::leader_delta(&d, NodeId::new(7), 1, MAX_KEY),
        Err(GossipError::Descriptor(_))
    ));
    // A hint dated past any real term is refused, so it cannot pin a leader forever.
    assert!(matches!(
        DescriptorSet::leader_delta(&d, NodeId::new(1), u64::MAX, MAX_KEY),
        Err(GossipError::HintTermTooHigh(u64::MAX))
    ));
    assert!(DescriptorSet::leader_delta(&d, NodeId::new(1), MAX_HINT_TERM, MAX_KEY).is_ok());
}

#[test]
fn a_descriptor_too_large_for_a_broadcast_is_set_apart() {
    // A table may allow keys of 4 KiB, but a membership user broadcast is 1,024 bytes.
    let max_key = 4096;
    let long = vec![b'k'; max_key];
    let mut t = RangeTable::new(vec![desc(1, "", "", &[1, 2, 3])], max_key).unwrap();
    t.split(RangeId::new(1), b"c", RangeId::new(2)).unwrap();
    t.split(RangeId::new(2), &long, RangeId::new(3)).unwrap();
    let set = DescriptorSet::from_table(&t);
    assert!(matches!(
        set.encode_chunks(1024),
        Err(GossipError::DescriptorTooLarge { max: 1024, .. })
    ));
    let Chunks { chunks, oversized } = set.encode_fitting_chunks(1024).unwrap();
    assert!(chunks.iter().all(|c| c.len() <= 1024));
    let ids: Vec<RangeId> = oversized.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![RangeId::new(2), RangeId::new(3)]);
    // The chunks alone are a valid delta; the oversized descriptors, sent another way,
    // complete it.
    let mut peer = DescriptorSet::new();
    for chunk in &chunks {
        peer.merge(&DescriptorSet::decode_chunk(chunk, max_key).unwrap());
    }
    assert_eq!(peer.len(), 1);
    peer.merge(&DescriptorSet::from_descriptors(oversized, max_key).unwrap());
    assert_eq!(peer, set);
}

/// The bounds random gossip descriptors use. Every winner is constant from one bound to the
/// next, so probing at each bound probes every key.
const GOSSIP_KEYS: [&str; 5] = ["", "b", "d", "f", "h"];

/// A small random descriptor over [`GOSSIP_KEYS`] (few ids, generations and replica sets,
/// so that overlaps, ties and copies differing only in their hint are common), with a
/// random hint term.
fn arb_dated() -> impl Strategy<Value = (RangeDescriptor, u64)> {
    (
        0usize..4,
        1usize..5,
        1u64..4,
        1u64..3,
        prop::sample::subsequence(vec![1u64, 2, 3, 4], 1..=3),
        any::<prop::sample::Index>(),
        any::<bool>(),
        0u64..3,
    )
        .prop_map(|(s, len, generation, id, nodes, pick, hinted, term)| {
            let end = GOSSIP_KEYS.get(s + len).map_or(RangeEnd::Unbounded, |k| {
                RangeEnd::Key(k.as_bytes().to_vec())
            });
            let range = KeyRange::new(GOSSIP_KEYS[s].as_bytes().to_vec(), end).unwrap();
            let mut d = RangeDescriptor::new(RangeId::new(id), range, voters(&nodes)).unwrap();
            d.generation = Generation::new(generation);
            d.leader_hint = if hinted {
                Some(NodeId::new(*pick.get(&nodes)))
            } else {
                None
            };
            (d, term)
        })
}

/// What merging `items` must give, by brute force: at every key the descriptor of highest
/// precedence, and for each winner the join of all its copies' hints (the highest term's,
/// or none where copies of that term disagree). In canonical order.
fn lattice_model(items: &[(RangeDescriptor, u64)]) -> Vec<(RangeDescriptor, u64)> {
    let mut winners: Vec<RangeDescriptor> = Vec::new();
    for probe in GOSSIP_KEYS {
        let best = items
            .iter()
            .map(|(d, _)| d)
            .filter(|d| d.contains_key(probe.as_bytes()))
            .max_by(|a, b| precedence(a, b));
        if let Some(best) = best {
            if !winners.iter().any(|w| precedence(w, best).is_eq()) {
                winners.push(best.clone());
            }
        }
    }
    let mut model: Vec<(RangeDescriptor, u64)> = winners
        .into_iter()
        .map(|mut w| {
            let copies: Vec<&(RangeDescriptor, u64)> = items
                .iter()
                .filter(|(d, _)| precedence(d, &w).is_eq())
                .collect();
            let term = copies.iter().map(|(_, t)| *t).max().unwrap_or(0);
            let hints: Vec<Option<NodeId>> = copies
                .iter()
                .filter(|(_, t)| *t == term)
                .map(|(d, _)| d.leader_hint)
                .collect();
            w.leader_hint = if hints.iter().all(|h| *h == hints[0]) {
                hints[0]
            } else {
                None
            };
            (w, term)
        })
        .collect();
    model.sort_by(|(a, _), (b, _)| {
        a.range
            .start()
            .cmp(b.range.start())
            .then_with(|| precedence(a, b))
    });
    model
}

fn dated_set(items: &[(RangeDescriptor, u64)]) -> DescriptorSet {
    DescriptorSet::from_descriptors_with_terms(items.iter().cloned(), MAX_KEY).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With overlapping descriptors, ties and copies that differ only in their hint (dated
    /// or not), the merge is commutative, associative and idempotent, equals merging all
    /// the descriptors at once, and matches the brute-force model: the winner at every
    /// key, and hints joined by term, never by node id.
    #[test]
    fn gossip_merge_with_hints_is_a_semilattice(
        xs in prop::collection::vec(arb_dated(), 0..6),
        ys in prop::collection::vec(arb_dated(), 0..6),
        zs in prop::collection::vec(arb_dated(), 0..6),
    ) {
        let [a, b, c] = [xs.as_slice(), ys.as_slice(), zs.as_slice()].map(dated_set);
        prop_assert_eq!(merged(&[&a, &b]), merged(&[&b, &a]));
        prop_assert_eq!(merged(&[&merged(&[&a, &b]), &c]), merged(&[&a, &merged(&[&b, &c])]));
        prop_assert_eq!(merged(&[&a, &a]), a.clone());
        let mut again = a.clone();
        prop_assert!(!again.merge(&a));
        let all: Vec<(RangeDescriptor, u64)> =
            xs.iter().chain(&ys).chain(&zs).cloned().collect();
        let abc = merged(&[&a, &b, &c]);
        prop_assert_eq!(&abc, &dated_set(&all));
        let model = lattice_model(&all);
        let held: Vec<RangeDescriptor> = abc.descriptors().cloned().collect();
        let expected: Vec<RangeDescriptor> = model.iter().map(|(d, _)| d.clone()).collect();
        prop_assert_eq!(held, expected);
        prop_assert_eq!(&abc, &dated_set(&model));
        for probe in GOSSIP_KEYS {
            let want = model
                .iter()
                .map(|(d, _)| d)
                .filter(|d| d.contains_key(probe.as_bytes()))
                .max_by(|x, y| precedence(x, y));
            prop_assert_eq!(abc.winner(probe.as_bytes()), want);
        }
        // Chunks carry the hint terms: applied alone, in any order, they rebuild the set.
        let mut rebuilt = DescriptorSet::new();
        for chunk in abc.encode_chunks(200).unwrap().iter().rev() {
            rebuilt.merge(&DescriptorSet::decode_chunk(chunk, MAX_KEY).unwrap());
        }
        prop_assert_eq!(rebuilt, abc);
    }
}

// The split/merge policy's hysteresis.

#[test]
fn policies_without_hysteresis_are_refused() {
    assert_eq!(SplitMergePolicy::default().validate(), Ok(()));
    // Exactly half is the bound, and is accepted.
    let half = SplitMergePolicy {
        merge_bytes: 32 << 20,
        merge_max_qps: 1_250.0,
        ..SplitMergePolicy::default()
    };
    assert_eq!(half.validate(), Ok(()));
    // Two 40 MiB neighbours would merge into 80 MiB, which the next round splits again.
    let flapping = SplitMergePolicy {
        merge_bytes: 200 << 20,
        ..SplitMergePolicy::default()
    };
    assert!(matches!(
        flapping.validate(),
        Err(ConfigError::MergeBytesOverHalfSplit { .. })
    ));
    let s = HashMap::from([
        (RangeId::new(1), stats(40, "b", 0.0)),
        (RangeId::new(2), stats(40, "f", 0.0)),
    ]);
    assert!(matches!(
        flapping.decide(&four_ranges(), &s, &InFlight::default(), Instant::ZERO),
        Err(ConfigError::MergeBytesOverHalfSplit { .. })
    ));
    let bad = [
        SplitMergePolicy {
            merge_max_qps: 1_250.5,
            ..SplitMergePolicy::default()
        },
        SplitMergePolicy {
            split_qps: f64::NAN,
            ..SplitMergePolicy::default()
        },
        SplitMergePolicy {
            split_qps: 0.0,
            merge_max_qps: 0.0,
            ..SplitMergePolicy::default()
        },
        SplitMergePolicy {
            merge_max_qps: -1.0,
            ..SplitMergePolicy::default()
        },
        SplitMergePolicy {
            merge_max_qps: f64::NAN,
            ..SplitMergePolicy::default()
        },
        SplitMergePolicy {
            split_bytes: 0,
            merge_bytes: 0,
            ..SplitMergePolicy::default()
        },
    ];
    for policy in bad {
        assert!(policy.validate().is_err(), "{policy:?}");
    }
}

fn stats_of(size_bytes: u64, qps: f64, median: &str) -> RangeStats {
    RangeStats {
        size_bytes,
        size_median_key: Some(median.as_bytes().to_vec()),
        qps,
        load_median_key: Some(median.as_bytes().to_vec()),
        last_change: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For any thresholds `validate` accepts, a merge result does not qualify for a split,
    /// and the halves of a fresh split (at its median) merge with nothing.
    #[test]
    fn valid_policies_never_undo_their_own_decisions(
        split_bytes in 2u64..(1 << 30),
        merge_frac in 0.0f64..=0.5,
        split_qps in 1.0f64..10_000.0,
        merge_qps_frac in 0.0f64..=0.5,
        size_fracs in (0.0f64..2.0, 0.0f64..2.0),
        load_fracs in (0.0f64..2.0, 0.0f64..2.0),
    ) {
        let policy = SplitMergePolicy {
            split_bytes,
            // Both are at most half of the split threshold: `x * 0.5` is exact.
            merge_bytes: (split_bytes as f64 * merge_frac) as u64,
            split_qps,
            merge_max_qps: split_qps * merge_qps_frac,
            ..SplitMergePolicy::default()
        };
        prop_assert_eq!(policy.validate(), Ok(()));
        let sizes = [size_fracs.0, size_fracs.1].map(|f| (split_bytes as f64 * f) as u64);
        let loads = [load_fracs.0, load_fracs.1].map(|f| split_qps * f);
        let two = RangeTable::new(
            vec![desc(1, "", "m", &[1, 2, 3]), desc(2, "m", "", &[1, 2, 3])],
            MAX_KEY,
        )
        .unwrap();
        let none = InFlight::default();

        // A merge's result.
        let s = HashMap::from([
            (RangeId::new(1), stats_of(sizes[0], loads[0], "f")),
            (RangeId::new(2), stats_of(sizes[1], loads[1], "t")),
        ]);
        let decided = policy.decide(&two, &s, &none, Instant::ZERO).unwrap();
        let merge = Decision::Merge { left: RangeId::new(1), right: RangeId::new(2) };
        if decided.contains(&merge) {
            let mut one = two.clone();
            one.merge(RangeId::new(1), RangeId::new(2)).unwrap();
            let s = HashMap::from([(
                RangeId::new(1),
                stats_of(sizes[0] + sizes[1], loads[0] + loads[1], "m"),
            )]);
            let again = policy.decide(&one, &s, &none, Instant::ZERO).unwrap();
            prop_assert!(again.is_empty(), "{:?}", again);
        }

        // A split's halves, beside an empty and idle neighbour.
        let s = HashMap::from([
            (RangeId::new(1), stats_of(sizes[0], loads[0], "f")),
            (RangeId::new(2), stats_of(0, 0.0, "t")),
        ]);
        let decided = policy.decide(&two, &s, &none, Instant::ZERO).unwrap();
        let split = decided
            .iter()
            .any(|d| matches!(d, Decision::Split { range, .. } if *range == RangeId::new(1)));
        if split {
            let mut three = two.clone();
            three.split(RangeId::new(1), b"f", RangeId::new(3)).unwrap();
            let s = HashMap::from([
                (RangeId::new(1), stats_of(sizes[0] / 2, loads[0] / 2.0, "c")),
                (
                    RangeId::new(3),
                    stats_of(sizes[0] - sizes[0] / 2, loads[0] - loads[0] / 2.0, "h"),
                ),
                (RangeId::new(2), stats_of(0, 0.0, "t")),
            ]);
            let again = policy.decide(&three, &s, &none, Instant::ZERO).unwrap();
            prop_assert!(
                again.iter().all(|d| !matches!(d, Decision::Merge { .. })),
                "{:?}",
                again
            );
        }
    }
}

// Placement: budget, one step per range, partial views and quorum.

fn range_of(action: &PlacementAction) -> RangeId {
    match *action {
        PlacementAction::AddReplica { range, .. }
        | PlacementAction::RemoveReplica { range, .. }
        | PlacementAction::TransferLeader { range, .. } => range,
    }
}

/// Whether more than half of `voters` is in `nodes` and alive.
fn live_majority(nodes: &[NodeInfo], voters: &[NodeId]) -> bool {
    let live = voters
        .iter()
        .filter(|&&v| nodes.iter().any(|n| n.id == v && n.alive))
        .count();
    live * 2 > voters.len()
}

/// A random cluster: 1 to 9 ranges with 1 to 5 replicas on nodes 1 to 8, with or without
/// a leader hint; each node alive, dead or missing from the list (unknown), in one of three
/// zones, of capacity 1 or 2; a random replication factor and budget.
fn arb_cluster() -> impl Strategy<Value = (RangeTable, Vec<NodeInfo>, PlacementConfig)> {
    let range = (
        prop::sample::subsequence((1u64..=8).collect::<Vec<_>>(), 1..=5),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    (
        prop::collection::vec(range, 1..10),
        prop::collection::vec((0u32..3, 0u8..4, 1u8..=2), 8),
        1usize..=5,
        0usize..16,
    )
        .prop_map(|(ranges, states, factor, max_actions)| {
            let n = ranges.len();
            let descriptors: Vec<RangeDescriptor> = ranges
                .iter()
                .enumerate()
                .map(|(i, (nodes, pick, hinted))| {
                    let start = if i == 0 {
                        String::new()
                    } else {
                        format!("k{i:02}")
                    };
                    let end = if i + 1 == n {
                        String::new()
                    } else {
                        format!("k{:02}", i + 1)
                    };
                    let mut d = desc(i as u64 + 1, &start, &end, nodes);
                    if *hinted {
                        d.leader_hint = Some(NodeId::new(*pick.get(nodes)));
                    }
                    d
                })
                .collect();
            let table = RangeTable::new(descriptors, MAX_KEY).unwrap();
            // State 0: missing from the list; 1: dead; 2 or 3: alive.
            let nodes: Vec<NodeInfo> = states
                .iter()
                .zip(1u64..)
                .filter(|((_, state, _), _)| *state != 0)
                .map(|(&(zone, state, capacity), id)| NodeInfo {
                    id: NodeId::new(id),
                    zone,
                    capacity: f64::from(capacity),
                    alive: state >= 2,
                })
                .collect();
            let config = PlacementConfig {
                replication_factor: factor,
                max_actions,
            };
            (table, nodes, config)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A plan never holds more actions than the budget.
    #[test]
    fn placement_never_exceeds_its_budget((t, nodes, config) in arb_cluster()) {
        let plan = plan_placement(&t, &nodes, &config);
        prop_assert!(plan.len() <= config.max_actions, "{:?}", plan);
    }

    /// Each range appears in one step: its actions are adjacent, with at most one
    /// addition, one removal and one leader transfer; and the plan applies cleanly.
    #[test]
    fn placement_touches_each_range_once((t, nodes, config) in arb_cluster()) {
        let plan = plan_placement(&t, &nodes, &config);
        let mut seen: Vec<RangeId> = Vec::new();
        for (i, action) in plan.iter().enumerate() {
            let range = range_of(action);
            let continues = i > 0 && range_of(&plan[i - 1]) == range;
            prop_assert!(continues || !seen.contains(&range), "{:?}", plan);
            seen.push(range);
        }
        for d in t.descriptors() {
            let mine: Vec<PlacementAction> = plan
                .iter()
                .copied()
                .filter(|a| range_of(a) == d.id)
                .collect();
            let count = |f: fn(&PlacementAction) -> bool| mine.iter().filter(|&a| f(a)).count();
            let adds = count(|a| matches!(a, PlacementAction::AddReplica { .. }));
            let removes = count(|a| matches!(a, PlacementAction::RemoveReplica { .. }));
            let transfers = count(|a| matches!(a, PlacementAction::TransferLeader { .. }));
            prop_assert!(adds <= 1 && removes <= 1 && transfers <= 1, "{:?}", mine);
        }
        let mut applied = t.clone();
        apply(&mut applied, &plan);
    }

    /// A node missing from the list is unknown, not dead: no replica of it is removed, and
    /// nothing is added on it or handed to it.
    #[test]
    fn placement_removes_nothing_from_unknown_nodes((t, nodes, config) in arb_cluster()) {
        let plan = plan_placement(&t, &nodes, &config);
        let known = |node: NodeId| nodes.iter().any(|n| n.id == node);
        let alive = |node: NodeId| nodes.iter().any(|n| n.id == node && n.alive);
        for action in &plan {
            match *action {
                PlacementAction::RemoveReplica { node, .. } => {
                    prop_assert!(known(node), "{:?}", plan);
                }
                PlacementAction::AddReplica { node, .. } => prop_assert!(alive(node)),
                PlacementAction::TransferLeader { to, .. } => prop_assert!(alive(to)),
            }
        }
    }

    /// A range whose voters lack a known-live majority gets no action (Raft could not
    /// commit it), and a removal leaves the remaining voters a known-live majority.
    #[test]
    fn placement_plans_only_changes_a_quorum_can_commit((t, nodes, config) in arb_cluster()) {
        let plan = plan_placement(&t, &nodes, &config);
        for d in t.descriptors() {
            let voters: Vec<NodeId> = d.voters().collect();
            for action in plan.iter().filter(|a| range_of(a) == d.id) {
                prop_assert!(live_majority(&nodes, &voters), "{:?} for {:?}", action, d);
                if let PlacementAction::RemoveReplica { node, .. } = *action {
                    let left: Vec<NodeId> =
                        voters.iter().copied().filter(|&v| v != node).collect();
                    prop_assert!(live_majority(&nodes, &left), "{:?} for {:?}", action, d);
                }
            }
        }
    }
}

#[test]
fn placement_keeps_a_leader_move_within_the_budget() {
    // Node 5 is new and empty; node 2, the most loaded (ties go to the highest id), leads
    // every range, so a balance move takes three actions: add, leader, remove (safest first).
    let mut t = four_ranges();
    for id in 1..=4 {
        t.set_leader_hint(RangeId::new(id), NodeId::new(2)).unwrap();
    }
    let nodes: Vec<NodeInfo> = (1..=5).map(|i| node(i, i as u32, true)).collect();
    for max_actions in 0..6 {
        let config = PlacementConfig {
            max_actions,
            ..PlacementConfig::default()
        };
        let plan = plan_placement(&t, &nodes, &config);
        assert!(plan.len() <= max_actions, "{max_actions}: {plan:?}");
    }
    // With room for it, the move is planned whole.
    let plan = plan_placement(&t, &nodes, &PlacementConfig::default());
    assert_eq!(
        plan[..3],
        [
            PlacementAction::AddReplica {
                range: RangeId::new(1),
                node: NodeId::new(5)
            },
            PlacementAction::TransferLeader {
                range: RangeId::new(1),
                to: NodeId::new(1)
            },
            PlacementAction::RemoveReplica {
                range: RangeId::new(1),
                node: NodeId::new(2)
            },
        ]
    );
}

#[test]
fn placement_repairs_one_replica_per_range_per_round() {
    // Two of five voters are dead: one is replaced this round, the other the next.
    let t = RangeTable::new(vec![desc(1, "", "", &[1, 2, 3, 4, 5])], MAX_KEY).unwrap();
    let nodes: Vec<NodeInfo> = (1..=7)
        .map(|i| node(i, i as u32, i != 4 && i != 5))
        .collect();
    let config = PlacementConfig {
        replication_factor: 5,
        ..PlacementConfig::default()
    };
    let plan = plan_placement(&t, &nodes, &config);
    let adds = plan
        .iter()
        .filter(|a| matches!(a, PlacementAction::AddReplica { .. }))
        .count();
    let removes = plan
        .iter()
        .filter(|a| matches!(a, PlacementAction::RemoveReplica { .. }))
        .count();
    assert_eq!((adds, removes), (1, 1), "{plan:?}");
    assert!(plan.contains(&PlacementAction::RemoveReplica {
        range: RangeId::new(1),
        node: NodeId::new(4)
    }));
}

#[test]
fn placement_leaves_replicas_of_unknown_nodes_alone() {
    // Node 3 is missing from the list: a partial view, not a death.
    let t = one_range();
    let nodes = vec![node(1, 1, true), node(2, 2, true), node(4, 3, true)];
    let plan = plan_placement(&t, &nodes, &PlacementConfig::default());
    assert!(
        plan.iter()
            .all(|a| !matches!(a, PlacementAction::RemoveReplica { .. })),
        "{plan:?}"
    );
    assert!(
        plan.iter()
            .all(|a| !matches!(a, PlacementAction::AddReplica { .. })),
        "node 3 may be serving: no replacement either: {plan:?}"
    );
}

#[test]
fn placement_does_not_change_a_range_that_lost_its_majority() {
    // Two of three voters are dead: Raft cannot commit a configuration change.
    let t = one_range();
    let nodes = vec![
        node(1, 1, true),
        node(2, 2, false),
        node(3, 3, false),
        node(4, 2, true),
        node(5, 3, true),
    ];
    assert_eq!(
        plan_placement(&t, &nodes, &PlacementConfig::default()),
        vec![]
    );
}

//! The life of a range table: the policy asks for a split, the table applies it, the change
//! reaches a node with the old view as gossip chunks, the policy later merges the small halves
//! back, and placement plans the repair of a replica on a dead node. All pure functions.
//!
//! Run it with `cargo run -p shoal-ranges --example split_a_range_table`.

use shoal_core::{Instant, KeyRange, NodeId, RangeDescriptor, RangeId, ReplicaDescriptor};
use shoal_ranges::{
    plan_placement, Decision, DescriptorSet, InFlight, NodeInfo, PlacementConfig, RangeStats,
    RangeTable, SplitMergePolicy,
};
use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;

const MAX_KEY: usize = 4096;

fn stats(size_mib: u64, median: &str, at: Instant) -> RangeStats {
    RangeStats {
        size_bytes: size_mib << 20,
        size_median_key: Some(median.as_bytes().to_vec()),
        qps: 5.0,
        load_median_key: None,
        last_change: Some(at),
    }
}

fn print_table(title: &str, table: &RangeTable) {
    println!("{title}");
    for d in table.descriptors() {
        let (id, range, generation) = (d.id, &d.range, d.generation);
        let voters: Vec<NodeId> = d.voters().collect();
        println!("   {id} {range} at {generation} on voters {voters:?}");
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let (r1, r2) = (RangeId::new(1), RangeId::new(2));
    let voters = [1, 2, 3].map(|n| ReplicaDescriptor::voter(NodeId::new(n)));
    let whole = RangeDescriptor::new(r1, KeyRange::full(), voters.to_vec())?;
    let mut table = RangeTable::new(vec![whole], MAX_KEY)?;
    let old_view = DescriptorSet::from_table(&table);
    print_table("1. one range covers every key:", &table);

    let policy = SplitMergePolicy::default(); // decide() refuses a policy validate() refuses
    let start = Instant::ZERO;
    let now = start + Duration::from_secs(120); // past the 60 s cooldown
    let sizes = HashMap::from([(r1, stats(100, "m", start))]);
    for decision in policy.decide(&table, &sizes, &InFlight::default(), now)? {
        println!("2. policy: {decision:?}");
        if let Decision::Split { range, at, .. } = decision {
            table.split(range, &at, r2)?;
        }
    }
    print_table("   after the split:", &table);

    let chunks = DescriptorSet::from_table(&table).encode_chunks(1024)?;
    let mut view = old_view.clone();
    for chunk in &chunks {
        let changed = view.merge(&DescriptorSet::decode_chunk(chunk, MAX_KEY)?);
        println!("3. a node with the old view merges a gossip chunk: changed {changed}");
    }
    let zebra = view.winner(b"zebra").map(|d| d.id);
    let again = view.merge(&old_view);
    println!("   it routes \"zebra\" to {zebra:?}; merging the old view again changes {again}");
    assert_eq!(view.to_table(MAX_KEY)?, table);

    let later = now + Duration::from_secs(600);
    let sizes = HashMap::from([(r1, stats(6, "f", now)), (r2, stats(4, "t", now))]);
    for decision in policy.decide(&table, &sizes, &InFlight::default(), later)? {
        println!("4. policy, ten minutes later: {decision:?}");
        if let Decision::Merge { left, right } = decision {
            table.merge(left, right)?;
        }
    }
    print_table("   after the merge:", &table);

    let nodes = [(1, 0, true), (2, 1, true), (3, 2, false), (4, 2, true)];
    let nodes = nodes.map(|(id, zone, alive)| NodeInfo {
        id: NodeId::new(id),
        zone,
        capacity: 1.0,
        alive,
    });
    println!("5. placement with n3 dead and n4 alive in n3's zone, holding nothing:");
    for action in plan_placement(&table, &nodes, &PlacementConfig::default()) {
        println!("   {action:?}");
    }
    Ok(())
}

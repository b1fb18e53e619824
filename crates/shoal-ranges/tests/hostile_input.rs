//! Hostile gossip: random bytes and mutations of real descriptor chunks, on fixed seeds. Every
//! chunk decodes to a valid set or is refused, never a panic (overflow checks are on in
//! tests), and merging what decodes stays a semilattice: the same chunks merged in any order
//! give the same view, and the view round-trips through its own chunks.

use shoal_core::{KeyRange, NodeId, RangeDescriptor, RangeEnd, RangeId, ReplicaDescriptor};
use shoal_ranges::{DescriptorSet, RangeTable};

const MAX_KEY: usize = 64;
const CHUNK_BYTES: usize = 1024;

fn desc(id: u64, start: &str, end: &str, nodes: &[u64]) -> RangeDescriptor {
    let end = match end {
        "" => RangeEnd::Unbounded,
        key => RangeEnd::Key(key.as_bytes().to_vec()),
    };
    let range = KeyRange::new(start.as_bytes().to_vec(), end).unwrap();
    let replicas = nodes
        .iter()
        .map(|&n| ReplicaDescriptor::voter(NodeId::new(n)))
        .collect();
    RangeDescriptor::new(RangeId::new(id), range, replicas).unwrap()
}

/// Chunks of several generations of a table (splits, merges, replica changes) and leader
/// announcements with terms.
fn recorded_chunks() -> Vec<Vec<u8>> {
    let mut t = RangeTable::new(vec![desc(1, "", "", &[1, 2, 3])], MAX_KEY).unwrap();
    let mut chunks = Vec::new();
    let mut keep = |t: &RangeTable| {
        let set = DescriptorSet::from_table(t);
        chunks.extend(set.encode_chunks(CHUNK_BYTES).unwrap());
    };
    keep(&t);
    for (range, key, right) in [(1, "f", 10), (10, "m", 11), (11, "t", 12), (1, "c", 13)] {
        t.split(RangeId::new(range), key.as_bytes(), RangeId::new(right))
            .unwrap();
        keep(&t);
    }
    let first = t.descriptors().next().unwrap().clone();
    t.set_replicas(
        first.id,
        vec![
            ReplicaDescriptor::voter(NodeId::new(1)),
            ReplicaDescriptor::voter(NodeId::new(4)),
            ReplicaDescriptor::learner(NodeId::new(5)),
        ],
        Some(NodeId::new(4)),
    )
    .unwrap();
    keep(&t);
    for d in t.descriptors() {
        let leader = d.voters().next().unwrap();
        let delta = DescriptorSet::leader_delta(d, leader, 3 + d.id.get(), MAX_KEY).unwrap();
        chunks.extend(delta.encode_chunks(CHUNK_BYTES).unwrap());
    }
    chunks
}

#[test]
fn mutated_gossip_chunks_decode_or_are_refused_and_merge_as_a_semilattice() {
    let corpus = recorded_chunks();
    assert!(corpus.len() >= 10, "{} chunks", corpus.len());
    for seed in shoal_sim::seeds_from_env_or(0x5EED_0401, 4) {
        let mut mutator = shoal_sim::Mutator::new(seed);
        let mut accepted = Vec::new();
        for _ in 0..5_000 {
            let input = mutator.next_input(&corpus);
            if let Ok(set) = DescriptorSet::decode_chunk(&input, MAX_KEY) {
                accepted.push(set);
            }
        }
        assert!(
            accepted.len() > 100,
            "seed {seed}: {} chunks decoded",
            accepted.len()
        );
        let mut forward = DescriptorSet::new();
        for set in &accepted {
            forward.merge(set);
        }
        let mut backward = DescriptorSet::new();
        for set in accepted.iter().rev() {
            backward.merge(set);
            backward.merge(set);
        }
        assert_eq!(
            forward, backward,
            "seed {seed}: merge order or repetition mattered"
        );
        let mut again = DescriptorSet::new();
        for chunk in forward.encode_fitting_chunks(CHUNK_BYTES).unwrap().chunks {
            again.merge(&DescriptorSet::decode_chunk(&chunk, MAX_KEY).unwrap());
        }
        let mut whole = again.clone();
        whole.merge(&forward);
        assert_eq!(
            whole, forward,
            "seed {seed}: the view's own chunks carry more than it"
        );
    }
}

//! Routing benchmark: jump hash (bare and with key hashing) against the `jumphash` crate,
//! jump's balance and movement, weighted rendezvous against a virtual-node ring.
//!
//! `cargo run --release -p shoal-routing --example routing_bench -- --json`
//!
//! Every timing is the median of 5 rounds over the same pre-generated keys (16-byte keys,
//! as a KV store's would be), in ns per operation, all measured in this run. The last line
//! of output is one JSON object.

use shoal_core::NodeId;
use shoal_routing::{jump_hash, key_hash, Candidate, HashRing, Partitioner, Rendezvous};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Instant;

const ROUNDS: usize = 5;

/// ns per call of `op` over `inputs`, median of `ROUNDS` rounds.
fn time_per_op<T>(inputs: &[T], mut op: impl FnMut(&T) -> u64) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut acc = 0u64;
            for input in inputs {
                acc = acc.wrapping_add(op(black_box(input)));
            }
            black_box(acc);
            start.elapsed().as_nanos() as f64 / inputs.len() as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// 16-byte keys like `user/0000001234`.
fn sample_keys(n: usize) -> Vec<[u8; 16]> {
    (0..n)
        .map(|i| {
            let mut k = [0u8; 16];
            let s = format!("user/{i:011}");
            k.copy_from_slice(s.as_bytes());
            k
        })
        .collect()
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let keys = sample_keys(1_000_000);
    let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
    let n1k = NonZeroU32::new(1000).expect("nonzero");

    let jump_bare_ns_1k = time_per_op(&hashes, |&h| u64::from(jump_hash(h, n1k)));
    let p1k = Partitioner::new(1000).expect("nonzero");
    let jump_ns_1k = time_per_op(&keys, |k| u64::from(p1k.shard_of(k)));
    let p1m = Partitioner::new(1_000_000).expect("nonzero");
    let jump_ns_1m = time_per_op(&keys, |k| u64::from(p1m.shard_of(k)));
    let theirs = jumphash::JumpHasher::new_with_keys(0x0123_4567, 0x89AB_CDEF);
    // Same 16 bytes: ours hashed with XXH3, theirs with SipHash-1-3 through `Hash`.
    let jumphash_crate_ns_1k = time_per_op(&keys, |k| {
        let key: &[u8] = k;
        u64::from(theirs.slot(&key, 1000))
    });

    // Balance and movement over 10 M keys.
    let n1001 = NonZeroU32::new(1001).expect("nonzero");
    let mut counts = vec![0u64; 1000];
    let mut moved = 0u64;
    let total = 10_000_000u64;
    for i in 0..total {
        let h = key_hash(&i.to_le_bytes());
        let b = jump_hash(h, n1k);
        counts[b as usize] += 1;
        if jump_hash(h, n1001) != b {
            moved += 1;
        }
    }
    let mean = total as f64 / 1000.0;
    let var = counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / 1000.0;
    let jump_balance_rel_stddev = var.sqrt() / mean;
    let jump_moved_fraction_add = moved as f64 / total as f64;

    // 100 nodes over 5 zones.
    let nodes: Vec<Candidate> = (1..=100)
        .map(|i| Candidate::new(NodeId::new(i), (i % 5) as u32))
        .collect();
    let hrw = Rendezvous::new(nodes);
    let sample = &hashes[..200_000];
    let hrw_pick3_ns_100nodes = time_per_op(sample, |&h| hrw.pick(h, 3)[0].get());
    let ring = HashRing::new((1..=100).map(NodeId::new), 160);
    let ring_ns_100nodes_160vn = time_per_op(&hashes, |&h| ring.owner(h).map_or(0, NodeId::get));
    let ring_replicas3_ns_100nodes_160vn = time_per_op(sample, |&h| ring.replicas(h, 3)[0].get());

    let summary = format!(
        concat!(
            "{{\"jump_bare_ns_1k\":{},\"jump_ns_1k\":{},\"jump_ns_1m\":{},",
            "\"jumphash_crate_ns_1k\":{},\"jump_balance_rel_stddev\":{},",
            "\"jump_moved_fraction_add\":{},\"jump_moved_fraction_ideal\":{},",
            "\"hrw_pick3_ns_100nodes\":{},\"ring_ns_100nodes_160vn\":{},",
            "\"ring_replicas3_ns_100nodes_160vn\":{}}}"
        ),
        round3(jump_bare_ns_1k),
        round3(jump_ns_1k),
        round3(jump_ns_1m),
        round3(jumphash_crate_ns_1k),
        (jump_balance_rel_stddev * 1e6).round() / 1e6,
        (jump_moved_fraction_add * 1e7).round() / 1e7,
        (1e7 / 1001.0f64).round() / 1e7,
        round3(hrw_pick3_ns_100nodes),
        round3(ring_ns_100nodes_160vn),
        round3(ring_replicas3_ns_100nodes_160vn),
    );
    if !json {
        eprintln!("jump bare 1k: {jump_bare_ns_1k:.2} ns, with key hash 1k: {jump_ns_1k:.2} ns, 1m: {jump_ns_1m:.2} ns, jumphash crate 1k: {jumphash_crate_ns_1k:.2} ns");
        eprintln!("balance rel stddev {jump_balance_rel_stddev:.5}, moved on add {jump_moved_fraction_add:.6} (ideal {:.6})", 1.0 / 1001.0);
        eprintln!("hrw pick3/100 nodes {hrw_pick3_ns_100nodes:.1} ns, ring owner {ring_ns_100nodes_160vn:.1} ns, ring replicas3 {ring_replicas3_ns_100nodes_160vn:.1} ns");
    }
    println!("{summary}");
}

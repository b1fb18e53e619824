//! Routing benchmark: jump hash (bare and with key hashing) against the `jumphash` crate,
//! jump's balance and movement, weighted rendezvous against a virtual-node ring, and the
//! range routing cache at 100,000 ranges (one thread, two threads, against a `BTreeMap`).
//!
//! `cargo run --release -p shoal-routing --example routing_bench -- --json`
//!
//! Every timing is the median of 5 rounds over the same pre-generated keys (16-byte keys,
//! as a KV store's would be), in ns per operation, all measured in this run. The last line
//! of output is one JSON object.

use shoal_core::{KeyRange, NodeId, RangeDescriptor, RangeEnd, RangeId, ReplicaDescriptor};
use shoal_routing::{
    jump_hash, key_hash, Candidate, HashRing, Partitioner, RangeCache, RangeCacheConfig, Rendezvous,
};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::ops::Bound;
use std::sync::Barrier;
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

    let cache = cache_figures(&keys);

    let summary = format!(
        concat!(
            "{{\"jump_bare_ns_1k\":{},\"jump_ns_1k\":{},\"jump_ns_1m\":{},",
            "\"jumphash_crate_ns_1k\":{},\"jump_balance_rel_stddev\":{},",
            "\"jump_moved_fraction_add\":{},\"jump_moved_fraction_ideal\":{},",
            "\"hrw_pick3_ns_100nodes\":{},\"ring_ns_100nodes_160vn\":{},",
            "\"ring_replicas3_ns_100nodes_160vn\":{},",
            "\"range_lookup_ns_100k\":{},\"range_lookup_ns_100k_shared_prefix\":{},",
            "\"btreemap_lookup_ns_100k\":{},\"cache_lookup_ns_2threads\":{},",
            "\"cache_lookup_ns_2threads_hot_range\":{},\"memory_miss_ns_64mib\":{}}}"
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
        round3(cache.lookup_ns),
        round3(cache.lookup_shared_prefix_ns),
        round3(cache.btreemap_ns),
        round3(cache.two_threads_ns),
        round3(cache.two_threads_hot_ns),
        round3(memory_miss_ns(64 << 20)),
    );
    if !json {
        eprintln!("jump bare 1k: {jump_bare_ns_1k:.2} ns, with key hash 1k: {jump_ns_1k:.2} ns, 1m: {jump_ns_1m:.2} ns, jumphash crate 1k: {jumphash_crate_ns_1k:.2} ns");
        eprintln!("balance rel stddev {jump_balance_rel_stddev:.5}, moved on add {jump_moved_fraction_add:.6} (ideal {:.6})", 1.0 / 1001.0);
        eprintln!("hrw pick3/100 nodes {hrw_pick3_ns_100nodes:.1} ns, ring owner {ring_ns_100nodes_160vn:.1} ns, ring replicas3 {ring_replicas3_ns_100nodes_160vn:.1} ns");
        eprintln!(
            "range cache 100k: {:.1} ns ({:.1} ns with a shared 20-byte prefix; BTreeMap {:.1} ns), 2 threads {:.1} ns, 2 threads on one range {:.1} ns",
            cache.lookup_ns, cache.lookup_shared_prefix_ns, cache.btreemap_ns, cache.two_threads_ns, cache.two_threads_hot_ns
        );
    }
    println!("{summary}");
}

/// The latency of one dependent load from a `bytes`-sized buffer (a random pointer chase, one
/// 64-byte line per hop): the machine's memory latency, which bounds any lookup whose data is
/// not in cache, reported so the cache figures can be read against it.
fn memory_miss_ns(bytes: usize) -> f64 {
    let lines = bytes / 64;
    let mut order: Vec<usize> = (0..lines).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..lines).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut next = vec![[0usize; 8]; lines];
    for i in 0..lines {
        next[order[i]][0] = order[(i + 1) % lines];
    }
    let hops = 2_000_000;
    let start = Instant::now();
    let mut at = 0;
    for _ in 0..hops {
        at = next[at][0];
    }
    black_box(at);
    start.elapsed().as_nanos() as f64 / f64::from(hops)
}

/// Range-cache timings, ns per lookup.
struct CacheFigures {
    /// One thread, random keys over 100,000 cached ranges split at `user/…` keys.
    lookup_ns: f64,
    /// The same with split keys that share their first 20 bytes (every prefix ties).
    lookup_shared_prefix_ns: f64,
    /// A `BTreeMap<Vec<u8>, _>` floor lookup over the same split keys, the obvious baseline.
    btreemap_ns: f64,
    /// Two threads looking up concurrently; ns per lookup as each thread sees it.
    two_threads_ns: f64,
    /// Two threads looking up keys of one range, the worst case for shared counters.
    two_threads_hot_ns: f64,
}

const RANGES: usize = 100_000;

/// A cache holding `RANGES` ranges covering the key space, split at `split(i)`.
fn filled_cache(split: impl Fn(usize) -> Vec<u8>) -> RangeCache {
    let cache = RangeCache::new(RangeCacheConfig::default());
    let voters: Vec<_> = (1..=3)
        .map(|n| ReplicaDescriptor::voter(NodeId::new(n)))
        .collect();
    let descriptors = (0..RANGES).map(|i| {
        let start = if i == 0 { Vec::new() } else { split(i) };
        let end = if i + 1 == RANGES {
            RangeEnd::Unbounded
        } else {
            RangeEnd::Key(split(i + 1))
        };
        let range = KeyRange::new(start, end).expect("ascending splits");
        let mut d = RangeDescriptor::new(RangeId::new(i as u64 + 1), range, voters.clone())
            .expect("valid descriptor");
        d.leader_hint = Some(NodeId::new(1 + i as u64 % 3));
        d
    });
    assert_eq!(cache.insert_all(descriptors), RANGES);
    cache
}

/// The range id found for `key`, as a number to accumulate.
fn routed(cache: &RangeCache, key: &[u8]) -> u64 {
    cache
        .lookup(key)
        .expect("key within limits")
        .map_or(0, |r| r.range.get())
}

fn cache_figures(keys: &[[u8; 16]]) -> CacheFigures {
    // Probes: the 1 M sample keys in a scrambled order, so each lookup lands in a random
    // range (the sample space `user/00000000000…999999` is split every 10 keys).
    let mut probes: Vec<[u8; 16]> = keys.to_vec();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..probes.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        probes.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let split = |i: usize| format!("user/{:011}", i * 10).into_bytes();
    let cache = filled_cache(split);
    let lookup_ns = time_per_op(&probes, |k| routed(&cache, k));

    let btree: BTreeMap<Vec<u8>, u64> = (0..RANGES)
        .map(|i| (if i == 0 { Vec::new() } else { split(i) }, i as u64 + 1))
        .collect();
    let btreemap_ns = time_per_op(&probes, |k| {
        let key: &[u8] = k;
        btree
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map_or(0, |(_, v)| *v)
    });

    let shared = |i: usize| format!("tenant/000042/orders/{:011}", i * 10).into_bytes();
    let shared_cache = filled_cache(shared);
    let shared_probes: Vec<Vec<u8>> = probes
        .iter()
        .map(|k| {
            let mut p = b"tenant/000042/orders/".to_vec();
            p.extend_from_slice(&k[5..]);
            p
        })
        .collect();
    let lookup_shared_prefix_ns = time_per_op(&shared_probes, |k| routed(&shared_cache, k));

    let two_threads_ns = two_threads(&cache, &probes, &probes[probes.len() / 2..]);
    let hot: Vec<[u8; 16]> = (0..probes.len() / 2).map(|i| keys[i % 10]).collect();
    let two_threads_hot_ns = two_threads(&cache, &hot, &hot);
    CacheFigures {
        lookup_ns,
        lookup_shared_prefix_ns,
        btreemap_ns,
        two_threads_ns,
        two_threads_hot_ns,
    }
}

/// Two threads look up `a` and `b` at the same time; the median of each thread's ns per
/// lookup, the slower thread's per round.
fn two_threads(cache: &RangeCache, a: &[[u8; 16]], b: &[[u8; 16]]) -> f64 {
    let barrier = Barrier::new(2);
    let per_thread = |inputs: &[[u8; 16]]| {
        (0..ROUNDS)
            .map(|_| {
                barrier.wait();
                let start = Instant::now();
                let mut acc = 0u64;
                for k in inputs {
                    acc = acc.wrapping_add(routed(cache, black_box(k)));
                }
                black_box(acc);
                start.elapsed().as_nanos() as f64 / inputs.len() as f64
            })
            .collect::<Vec<f64>>()
    };
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| per_thread(a));
        let rb = per_thread(b);
        (ta.join().expect("bench thread"), rb)
    });
    let mut rounds: Vec<f64> = ra.iter().zip(&rb).map(|(x, y)| x.max(*y)).collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

//! Where keys go: the stable key hash, shards that grow with jump hashing, replicas chosen by
//! zone-aware rendezvous hashing (and how few move when a node leaves), and the range routing
//! cache correcting itself from replica errors and from a node's death.
//!
//! Run it with `cargo run -p shoal-routing --example route_keys`.

use shoal_core::{
    ErrorCode, KeyRange, LeaderHint, NodeId, RangeDescriptor, RangeId, ReplicaDescriptor,
};
use shoal_routing::{key_hash, Candidate, Partitioner, RangeCache, RangeCacheConfig, Rendezvous};
use std::error::Error;

/// How `cache` routes `key`, for printing.
fn route(cache: &RangeCache, key: &str) -> Result<String, Box<dyn Error>> {
    Ok(match cache.lookup(key.as_bytes())? {
        Some(r) => format!("{key} -> {r:?}"),
        None => format!("{key} -> not cached"),
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let n = NodeId::new;
    let keys: Vec<String> = (0..1000).map(|i| format!("user/{i}")).collect();
    let hash = key_hash(b"user/42");
    println!("1. key_hash(\"user/42\") = {hash:#018x}, the same on every platform");

    let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k.as_bytes())).collect();
    let shard_all =
        |p: &Partitioner| -> Vec<u32> { hashes.iter().map(|&h| p.shard_of_hash(h)).collect() };
    let mut shards = Partitioner::new(8)?;
    let before = shard_all(&shards);
    shards.set_shards(9)?;
    let after = shard_all(&shards);
    let moved = (0..keys.len()).filter(|&i| before[i] != after[i]).count();
    let in_new = after.iter().filter(|&&s| s == 8).count();
    println!("2. 8 -> 9 shards moved {moved} of 1000 keys; shard 8 now holds {in_new}");

    // Six nodes in three zones; node 6 has twice the capacity.
    let weight = |i: u64| if i == 6 { 2.0 } else { 1.0 };
    let nodes = (1..=6).map(|i| Candidate::weighted(n(i), (i % 3) as u32, weight(i)));
    let mut hrw = Rendezvous::new(nodes.collect());
    let picks =
        |hrw: &Rendezvous| -> Vec<Vec<NodeId>> { hashes.iter().map(|&h| hrw.pick(h, 3)).collect() };
    let old = picks(&hrw);
    println!("3. user/42 is placed on {:?}, one node per zone", old[42]);
    hrw.remove(n(2));
    let changed = picks(&hrw).iter().zip(&old).filter(|(a, b)| a != b).count();
    let held = old.iter().filter(|set| set.contains(&n(2))).count();
    println!("   removing n2 changed {changed} replica sets; {held} sets held n2");

    // The range cache, holding one range ["", "m") on n1, n2 and n3, led by n1.
    let cache = RangeCache::new(RangeCacheConfig::default());
    let voters = (1..=3).map(|i| ReplicaDescriptor::voter(n(i))).collect();
    let mut left = RangeDescriptor::new(RangeId::new(1), KeyRange::bounded("", "m")?, voters)?;
    left.leader_hint = Some(n(1));
    cache.insert(left.clone())?;
    println!("4. {}; {}", route(&cache, "kiwi")?, route(&cache, "melon")?);

    // n1 answers that n2 leads now.
    let r = cache.lookup(b"kiwi")?.ok_or("kiwi is not cached")?;
    let hint = Some(LeaderHint {
        node: n(2),
        addr: None,
    });
    let action = cache.observe_error(b"kiwi", &r, &ErrorCode::NotLeader { hint });
    println!("5. NotLeader(n2): {action:?}; {}", route(&cache, "kiwi")?);

    // n2 answers that the range has split at "g", with the two new descriptors.
    let r = cache.lookup(b"kiwi")?.ok_or("kiwi is not cached")?;
    left.leader_hint = Some(n(2));
    let (low, high) = left.split(b"g", RangeId::new(2))?;
    let descriptors = vec![low, high];
    let mismatch = ErrorCode::RangeKeyMismatch { descriptors };
    let action = cache.observe_error(b"kiwi", &r, &mismatch);
    let now = route(&cache, "kiwi")?;
    println!("6. RangeKeyMismatch: {action:?}; {now}");

    // Membership reports n1 dead: it leaves routing; the descriptors stay as they were sent.
    let changed = cache.evict_node(n(1));
    let live = cache.live_replicas(b"kiwi")?.unwrap_or_default();
    let live: Vec<NodeId> = live.iter().map(|replica| replica.node).collect();
    println!("7. evicting n1 changed {changed} entries; kiwi can go to {live:?}");
    let (now, len) = (route(&cache, "kiwi")?, cache.len());
    println!("   {now}; {len} ranges cached");
    Ok(())
}

//! Storage benchmark: batched puts with the applied index, random point gets over 1 M keys,
//! scans, the split key of a 64 MiB range, snapshot stream out and ingest, space on disk.
//!
//! `cargo run --release -p shoal-storage --example storage_bench -- --json`
//!
//! Keys are 16 bytes, values 256 bytes; puts go in batches of 64 on one range with the
//! default durability ([`Durability::Process`]: each batch reaches the OS before `apply`
//! returns). Everything is measured in this run, in a temporary directory. The last line
//! of output is one JSON object.

use shoal_core::{KeyRange, RangeId};
use shoal_storage::{Durability, Engine, EngineConfig, Scan, WriteBatch};
use std::time::Instant;

const KEYS: u64 = 1_000_000;
const BATCH: u64 = 64;
const VALUE_LEN: usize = 256;

/// A scrambled, unique 16-byte key for `i` (a bijection on `u64`, so keys spread evenly).
fn key(i: u64) -> [u8; 16] {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&x.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_LEN];
    let mut x = i | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    v
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = EngineConfig {
        cache_bytes: 1 << 30,
        ..EngineConfig::default()
    };
    let engine = Engine::open(dir.path().join("bench"), config).expect("open");
    let range = RangeId::new(1);
    engine
        .create_range(range, KeyRange::full(), 0)
        .expect("create");

    // Batched puts.
    let start = Instant::now();
    let mut index = 0;
    for b in 0..KEYS / BATCH {
        let mut batch = WriteBatch::with_capacity(BATCH as usize);
        for i in b * BATCH..(b + 1) * BATCH {
            batch.put(key(i), value(i));
        }
        index += 1;
        engine.apply(range, index, &batch).expect("apply");
    }
    let put_secs = start.elapsed().as_secs_f64();
    let put_batch_ops_per_s = KEYS as f64 / put_secs;

    // Random point gets over the 1 M keys.
    let gets = 1_000_000u64;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let start = Instant::now();
    let mut found = 0u64;
    for _ in 0..gets {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = key(x % KEYS);
        found += u64::from(engine.get(range, &k).expect("get").is_some());
    }
    let get_ops_per_s = gets as f64 / start.elapsed().as_secs_f64();
    assert_eq!(found, gets, "every key written must be found");

    // Scans: 1000-key pages from random starts.
    let start = Instant::now();
    let mut scanned = 0usize;
    for p in 0..200u64 {
        let from = key(p * 4999);
        scanned += engine
            .scan(range, &Scan::all(1000).from(from.to_vec()))
            .expect("scan")
            .len();
    }
    let scan_keys_per_s = scanned as f64 / start.elapsed().as_secs_f64();

    // The split key of a 64 MiB range: its own range of 64 MiB of entries.
    let big = RangeId::new(2);
    let prefix = [0xFFu8; 4];
    let big_span = KeyRange::starting_at(prefix.to_vec());
    // Range 1 covers everything; carve range 2's span out of it first.
    engine
        .split(
            range,
            &shoal_storage::SplitSpec {
                at: prefix.to_vec(),
                new_range: big,
                index: index + 1,
                new_range_applied: 0,
            },
        )
        .expect("split off");
    let entry_bytes = (4 + 16 + VALUE_LEN) as u64;
    let big_keys = (64u64 << 20) / entry_bytes;
    let mut big_index = 0;
    for b in 0..big_keys.div_ceil(BATCH) {
        let mut batch = WriteBatch::with_capacity(BATCH as usize);
        for i in b * BATCH..((b + 1) * BATCH).min(big_keys) {
            let mut k = prefix.to_vec();
            k.extend_from_slice(&key(i));
            batch.put(k, value(i));
        }
        big_index += 1;
        engine.apply(big, big_index, &batch).expect("apply big");
    }
    let info = engine.range(big).expect("big range");
    let start = Instant::now();
    let split_key = engine.split_key(big).expect("split key").expect("a median");
    let split_key_ms_64mib = start.elapsed().as_secs_f64() * 1000.0;
    assert!(big_span.contains(&split_key));

    // Snapshot of the 64 MiB range: stream out and ingest into a second engine.
    let other_dir = dir.path().join("ingest");
    let other = Engine::open(&other_dir, EngineConfig::default()).expect("open second");
    let start = Instant::now();
    let mut ingest = other.ingest(big, big_span.clone()).expect("ingest");
    for chunk in engine.snapshot_stream(big, 1 << 20).expect("stream") {
        ingest.apply(&chunk.expect("chunk")).expect("apply chunk");
    }
    let ingested = ingest.finish().expect("finish");
    let snapshot_secs = start.elapsed().as_secs_f64();
    assert_eq!(ingested.stats, info.stats);
    let snapshot_mib_per_s = info.stats.live_bytes as f64 / (1 << 20) as f64 / snapshot_secs;

    // Space: everything flushed and compacted as the engine leaves it after a persist.
    engine.persist(Durability::Sync).expect("persist");
    let live: u64 = engine.ranges().iter().map(|r| r.stats.live_bytes).sum();
    let disk = engine.disk_space().expect("disk space");
    let bytes_on_disk_per_live_byte = disk as f64 / live as f64;

    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    if !json {
        println!("put {put_batch_ops_per_s:.0}/s, get {get_ops_per_s:.0}/s, scan {scan_keys_per_s:.0} keys/s");
        println!("split key {split_key_ms_64mib:.1} ms, snapshot {snapshot_mib_per_s:.1} MiB/s, disk/live {bytes_on_disk_per_live_byte:.3}");
    }
    println!(
        "{{\"put_batch_ops_per_s\":{},\"get_ops_per_s\":{},\"scan_keys_per_s\":{},\"split_key_ms_64mib\":{},\"snapshot_mib_per_s\":{},\"bytes_on_disk_per_live_byte\":{},\"keys\":{},\"batch\":{},\"value_bytes\":{},\"range_64mib_keys\":{}}}",
        r(put_batch_ops_per_s),
        r(get_ops_per_s),
        r(scan_keys_per_s),
        r(split_key_ms_64mib),
        r(snapshot_mib_per_s),
        r(bytes_on_disk_per_live_byte),
        KEYS,
        BATCH,
        VALUE_LEN,
        big_keys,
    );
}

//! Storage benchmark: batched puts with the applied index, random point gets over 1 M keys,
//! scans, the split key of a 64 MiB range, snapshot stream out and ingest, the split of that
//! range while another range takes writes, space on disk; and raw fjall on the same puts and
//! gets, as the baseline.
//!
//! `cargo run --release -p shoal-storage --example storage_bench -- --json`
//!
//! Keys are 16 bytes, values 256 bytes; puts go in batches of 64 on one range with the
//! default durability ([`Durability::Process`]: each batch reaches the OS before `apply`
//! returns). Everything is measured in this run, in a temporary directory. The last line
//! of output is one JSON object.
//!
//! The baseline is fjall alone, no Shoal code, in its own database with the same cache: the
//! same batches of 64 with one read per put (what exact live-byte accounting needs), values
//! prefixed with an 8-byte version, one record key per batch, the same persist mode; then the
//! same random gets. `put_ratio_vs_fjall` and `get_ratio_vs_fjall` are the engine's rates over
//! fjall's (target: at least 0.8 each).
//!
//! `split_stall_other_ranges_ms` is the longest a write to another range took while the
//! 64 MiB range split (a writer thread applies small batches to range 1 throughout);
//! `other_range_write_max_ms_idle` is the same writer's longest write over a window of the
//! same length with no split, and `other_range_write_max_ms_during_read` while the 64 MiB
//! range is read whole through a view (no lock), and `other_range_write_max_ms_during_sync`
//! across one journal sync after 100 ms of the writer's buffered writes (what the split's
//! synced record commit costs the writer by itself), for comparison.

use shoal_core::{KeyRange, RangeId};
use shoal_storage::{Durability, Engine, EngineConfig, Scan, SplitSpec, WriteBatch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    let (fjall_put_ops_per_s, fjall_get_ops_per_s) = raw_fjall(&dir.path().join("raw"));

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
                left_tag: None,
                right_tag: None,
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

    // The split of the 64 MiB range at its median, while a writer keeps writing to range 1.
    let mut index_1 = index + 2; // index + 1 was the split that carved out range 2
                                 // The split's record commit is a synced write; sync what the puts above left buffered
                                 // first, so the figures below are the split's own and not a 64 MiB journal fsync.
    engine.persist(Durability::Sync).expect("persist");
    let idle = Duration::from_millis(200);
    let (_, other_range_write_max_ms_idle) =
        writes_to_range_1_during(&engine, &mut index_1, || std::thread::sleep(idle));
    let (_, other_range_write_max_ms_during_read) =
        writes_to_range_1_during(&engine, &mut index_1, || {
            let view = engine.view(big).expect("view");
            let read = view.scan(&Scan::all(usize::MAX)).expect("read the range");
            assert_eq!(read.len() as u64, big_keys);
        });
    let (_, other_range_write_max_ms_during_sync) =
        writes_to_range_1_during(&engine, &mut index_1, || {
            std::thread::sleep(Duration::from_millis(100));
            engine.persist(Durability::Sync).expect("sync");
        });
    let (split_ms_64mib, split_stall_other_ranges_ms) =
        writes_to_range_1_during(&engine, &mut index_1, || {
            engine
                .split(
                    big,
                    &SplitSpec {
                        at: split_key.clone(),
                        new_range: RangeId::new(3),
                        index: big_index + 1,
                        new_range_applied: 0,
                        left_tag: None,
                        right_tag: None,
                    },
                )
                .expect("split the 64 MiB range")
        });
    let halves = engine.range(big).unwrap().stats.live_bytes
        + engine.range(RangeId::new(3)).unwrap().stats.live_bytes;
    assert_eq!(halves, info.stats.live_bytes);

    // Space: everything flushed and compacted as the engine leaves it after a persist.
    engine.persist(Durability::Sync).expect("persist");
    let live: u64 = engine.ranges().iter().map(|r| r.stats.live_bytes).sum();
    let disk = engine.disk_space().expect("disk space");
    let bytes_on_disk_per_live_byte = disk as f64 / live as f64;

    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    if !json {
        println!("put {put_batch_ops_per_s:.0}/s, get {get_ops_per_s:.0}/s, scan {scan_keys_per_s:.0} keys/s");
        println!("raw fjall: put {fjall_put_ops_per_s:.0}/s, get {fjall_get_ops_per_s:.0}/s");
        println!("split key {split_key_ms_64mib:.1} ms, snapshot {snapshot_mib_per_s:.1} MiB/s, disk/live {bytes_on_disk_per_live_byte:.3}");
        println!("split {split_ms_64mib:.1} ms; other range's longest write {split_stall_other_ranges_ms:.2} ms (idle {other_range_write_max_ms_idle:.2} ms, during a lock-free read of the range {other_range_write_max_ms_during_read:.2} ms)");
    }
    println!(
        "{{\"put_batch_ops_per_s\":{},\"get_ops_per_s\":{},\"fjall_put_ops_per_s\":{},\"fjall_get_ops_per_s\":{},\"put_ratio_vs_fjall\":{},\"get_ratio_vs_fjall\":{},\"scan_keys_per_s\":{},\"split_key_ms_64mib\":{},\"split_ms_64mib\":{},\"split_stall_other_ranges_ms\":{},\"other_range_write_max_ms_idle\":{},\"other_range_write_max_ms_during_read\":{},\"other_range_write_max_ms_during_sync\":{},\"snapshot_mib_per_s\":{},\"bytes_on_disk_per_live_byte\":{},\"keys\":{},\"batch\":{},\"value_bytes\":{},\"range_64mib_keys\":{}}}",
        r(put_batch_ops_per_s),
        r(get_ops_per_s),
        r(fjall_put_ops_per_s),
        r(fjall_get_ops_per_s),
        r(put_batch_ops_per_s / fjall_put_ops_per_s),
        r(get_ops_per_s / fjall_get_ops_per_s),
        r(scan_keys_per_s),
        r(split_key_ms_64mib),
        r(split_ms_64mib),
        r(split_stall_other_ranges_ms),
        r(other_range_write_max_ms_idle),
        r(other_range_write_max_ms_during_read),
        r(other_range_write_max_ms_during_sync),
        r(snapshot_mib_per_s),
        r(bytes_on_disk_per_live_byte),
        KEYS,
        BATCH,
        VALUE_LEN,
        big_keys,
    );
}

/// Runs `work` while a second thread applies 4-key batches to range 1 back to back; returns
/// how long `work` took and the longest single write of the second thread meanwhile, both in
/// milliseconds.
fn writes_to_range_1_during(engine: &Engine, index: &mut u64, work: impl FnOnce()) -> (f64, f64) {
    let stop = AtomicBool::new(false);
    let first = *index;
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut longest = Duration::ZERO;
            let mut i = 0u64;
            let mut next = first;
            while !stop.load(Ordering::Relaxed) {
                let mut batch = WriteBatch::with_capacity(4);
                for _ in 0..4 {
                    batch.put(key(i % KEYS), value(i));
                    i += 1;
                }
                let started = Instant::now();
                engine
                    .apply(RangeId::new(1), next, &batch)
                    .expect("apply to range 1");
                longest = longest.max(started.elapsed());
                next += 1;
            }
            (longest, next)
        });
        // Let the writer reach its stride before the work starts.
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        work();
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (longest, next) = writer.join().expect("writer thread");
        *index = next;
        (took.as_secs_f64() * 1000.0, longest.as_secs_f64() * 1000.0)
    })
}

/// Raw fjall on the engine's workload (see the module docs): puts per second, then random
/// gets per second.
fn raw_fjall(path: &std::path::Path) -> (f64, f64) {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let db = Database::builder(path)
        .cache_size(1 << 30)
        .open()
        .expect("open raw fjall");
    let data = db
        .keyspace("data", KeyspaceCreateOptions::default)
        .expect("keyspace");
    let meta = db
        .keyspace("meta", KeyspaceCreateOptions::default)
        .expect("keyspace");
    let start = Instant::now();
    let mut version = 0u64;
    for b in 0..KEYS / BATCH {
        let mut batch = db.batch().durability(Some(PersistMode::Buffer));
        for i in b * BATCH..(b + 1) * BATCH {
            let k = key(i);
            // The read exact accounting needs: the old value's size, if any.
            std::hint::black_box(data.get(k).expect("get"));
            version += 1;
            let mut stored = version.to_be_bytes().to_vec();
            stored.extend_from_slice(&value(i));
            batch.insert(&data, k, stored);
        }
        batch.insert(&meta, b"range-1", b.to_be_bytes());
        batch.commit().expect("commit");
    }
    let put_ops_per_s = KEYS as f64 / start.elapsed().as_secs_f64();
    let gets = 1_000_000u64;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut found = 0u64;
    let start = Instant::now();
    for _ in 0..gets {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        found += u64::from(data.get(key(x % KEYS)).expect("get").is_some());
    }
    let get_ops_per_s = gets as f64 / start.elapsed().as_secs_f64();
    assert_eq!(found, gets, "every key written must be found");
    (put_ops_per_s, get_ops_per_s)
}

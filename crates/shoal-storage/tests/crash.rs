//! Crash consistency: a child process applies batches in a loop and is killed (SIGKILL) at
//! a different point each round; after every kill the engine must reopen with every
//! acknowledged batch whole, no batch in part, and accounting that matches the data.

use shoal_core::{KeyRange, RangeId, Rng};
use shoal_storage::{Durability, Engine, EngineConfig, RangeStats, Scan, WriteBatch};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const RANGE: RangeId = RangeId::new(1);
const KEYS_PER_BATCH: usize = 16;
const DIR_ENV: &str = "SHOAL_STORAGE_CRASH_DIR";

fn config() -> EngineConfig {
    EngineConfig {
        durability: Durability::Process,
        ..EngineConfig::default()
    }
}

/// Batch `i` puts 16 keys `b<i>/<j>` (values sized by `i`) and deletes batch `i - 2`'s.
fn batch(i: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for j in 0..KEYS_PER_BATCH {
        b.put(
            format!("b{i:08}/{j:02}"),
            vec![b'v'; 1 + (i as usize * 7 + j) % 300],
        );
    }
    if i > 2 {
        for j in 0..KEYS_PER_BATCH {
            b.delete(format!("b{:08}/{j:02}", i - 2));
        }
    }
    b
}

/// The child's side, run in a child process of this same test binary (the test below runs
/// it instead of itself when the parent set the environment): applies batches until killed,
/// printing each acknowledged index, and exits without returning to the test harness.
fn crash_child(dir: &std::ffi::OsStr) -> ! {
    let engine = Engine::open(Path::new(&dir), config()).expect("child open");
    if engine.range(RANGE).is_err() {
        engine
            .create_range(RANGE, KeyRange::full(), 0)
            .expect("create");
    }
    let start = engine.range(RANGE).expect("range").applied_index + 1;
    // Bounded, in case the parent never kills us.
    for i in start..start + 200_000 {
        engine.apply(RANGE, i, &batch(i)).expect("apply");
        println!("acked {i}");
    }
    std::process::exit(0)
}

/// Checks the reopened engine against the batches up to its applied index.
fn check(dir: &Path, acked: u64) -> u64 {
    let engine = Engine::open(dir, config()).expect("reopen after kill");
    let Ok(info) = engine.range(RANGE) else {
        assert_eq!(acked, 0, "range lost after acknowledged writes");
        return 0;
    };
    let applied = info.applied_index;
    assert!(
        applied >= acked,
        "acknowledged batch {acked} lost (applied {applied})"
    );
    let entries = engine.scan(RANGE, &Scan::all(1 << 20)).expect("scan");
    let mut stats = RangeStats::default();
    let mut per_batch = std::collections::BTreeMap::<u64, usize>::new();
    for e in &entries {
        let key = std::str::from_utf8(&e.key).expect("utf8 key");
        let i: u64 = key[1..9].parse().expect("batch number");
        let j: usize = key[10..].parse().expect("key number");
        assert_eq!(
            e.value.len(),
            1 + (i as usize * 7 + j) % 300,
            "value of {key}"
        );
        *per_batch.entry(i).or_default() += 1;
        stats.live_keys += 1;
        stats.live_bytes += (e.key.len() + e.value.len()) as u64;
    }
    // Exactly the last two batches survive, each whole.
    let expected: Vec<u64> = (applied.saturating_sub(1).max(1)..=applied).collect();
    assert_eq!(per_batch.keys().copied().collect::<Vec<_>>(), expected);
    assert!(
        per_batch.values().all(|&n| n == KEYS_PER_BATCH),
        "{per_batch:?}"
    );
    assert_eq!(info.stats, stats, "accounting after restart");
    applied
}

#[test]
fn killed_mid_batch_the_engine_recovers_whole_batches_and_exact_accounting() {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        crash_child(&dir);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary");
    let mut applied = 0;
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([
                "killed_mid_batch_the_engine_recovers_whole_batches_and_exact_accounting",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a different number of acknowledgements each round.
        let kill_after = 20 + round * 97;
        let before = applied;
        let mut acked = applied;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.expect("child output");
            if let Some(i) = line.strip_prefix("acked ") {
                acked = i.parse().expect("index");
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        child.kill().expect("kill child");
        // Acknowledgements printed before the kill landed count too.
        for line in lines.map_while(Result::ok) {
            if let Some(i) = line.strip_prefix("acked ") {
                acked = i.parse().expect("index");
            }
        }
        child.wait().expect("reap child");
        // The round did what it means to: the child acknowledged `kill_after` batches past
        // where the last round left off before it was killed (and `check` found every one).
        assert!(
            acked >= before + kill_after,
            "round {round}: acknowledged up to {acked}, from {before}"
        );
        applied = check(dir.path(), acked);
    }
}

const SWAP_DIR_ENV: &str = "SHOAL_STORAGE_SWAP_CRASH_DIR";
const SWAP_KEYS: usize = 3000;

/// Version `v` (0 or 1) of range 1's contents: keys `k<i>` with values of `b'a' + v`, and,
/// in version 1 only, keys `x<i>` too, so replacing one by the other must delete keys.
fn swap_version(v: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = (0..SWAP_KEYS)
        .map(|i| {
            (
                format!("k{i:05}").into_bytes(),
                vec![b'a' + v; 100 + i % 200],
            )
        })
        .collect();
    if v == 1 {
        out.extend((0..SWAP_KEYS / 2).map(|i| (format!("x{i:05}").into_bytes(), vec![b'b'; 50])));
    }
    out
}

/// The snapshot chunks of version `v`, taken from a scratch engine.
fn swap_chunks(v: u8) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("scratch dir");
    let engine = Engine::open(dir.path(), config()).expect("scratch engine");
    engine
        .create_range(RANGE, KeyRange::full(), 0)
        .expect("create");
    let mut b = WriteBatch::new();
    for (k, val) in swap_version(v) {
        b.put(k, val);
    }
    engine.apply(RANGE, 10 + u64::from(v), &b).expect("apply");
    engine
        .snapshot_stream(RANGE, 16 << 10)
        .expect("stream")
        .collect::<Result<_, _>>()
        .expect("chunks")
}

/// The child's side: replaces range 1's contents by version 1, 0, 1, … of its snapshot, as
/// a follower installs snapshots (stage, write its log, install), printing each install,
/// until killed.
fn swap_child(dir: &std::ffi::OsStr) -> ! {
    let versions = [swap_chunks(0), swap_chunks(1)];
    let engine = Engine::open(Path::new(&dir), config()).expect("child open");
    let mut ingest = engine
        .ingest(RANGE, KeyRange::full())
        .expect("first ingest");
    for chunk in &versions[0] {
        ingest.apply(chunk).expect("chunk");
    }
    ingest.finish().expect("first install");
    println!("installed 0");
    for n in 1..10_000usize {
        let mut ingest = engine.ingest(RANGE, KeyRange::full()).expect("ingest");
        for chunk in &versions[n % 2] {
            ingest.apply(chunk).expect("chunk");
        }
        ingest.stage().expect("stage");
        // A Raft replica writes and syncs its log here, before it installs.
        std::thread::sleep(std::time::Duration::from_millis(3));
        engine.install_staged(RANGE).expect("install");
        println!("installed {n}");
    }
    std::process::exit(0)
}

/// Range 1 holds exactly one whole version, with matching accounting; returns which.
fn check_whole_version(engine: &Engine) -> u8 {
    let entries = engine.scan(RANGE, &Scan::all(1 << 20)).expect("scan");
    let v = match entries.first() {
        Some(e) => e.value[0] - b'a',
        None => panic!("range 1 is empty after a crash: its contents were lost"),
    };
    let got: Vec<(Vec<u8>, Vec<u8>)> = entries.into_iter().map(|e| (e.key, e.value)).collect();
    assert!(v <= 1, "unknown contents");
    assert!(
        got == swap_version(v),
        "range 1 holds a mix of snapshots or a partial one ({} keys)",
        got.len()
    );
    let info = engine.range(RANGE).expect("range");
    let bytes: u64 = got.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    assert_eq!(info.stats.live_keys, got.len() as u64);
    assert_eq!(info.stats.live_bytes, bytes);
    assert_eq!(info.applied_index, 10 + u64::from(v));
    v
}

/// A process killed at arbitrary points while it receives, stages and installs snapshots
/// over a hosted range: after every kill the range holds one whole snapshot, never a mix,
/// and a staged one still installs whole.
#[test]
fn killed_while_replacing_a_range_the_engine_holds_one_whole_snapshot() {
    if let Some(dir) = std::env::var_os(SWAP_DIR_ENV) {
        swap_child(&dir);
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = shoal_core::DetRng::from_seed(shoal_sim::seed_from_env_or(0x5_3A9));
    let mut staged_seen = 0;
    for round in 0..12u64 {
        // A fresh directory each round: tombstones of earlier rounds' replacements would
        // otherwise pile up (nothing compacts them in a run this short) and slow every scan.
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(&exe)
            .args([
                "killed_while_replacing_a_range_the_engine_holds_one_whole_snapshot",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SWAP_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();
        let kill_after = 1 + round % 3;
        let mut installed = 0;
        for line in lines.by_ref() {
            if line.expect("child output").starts_with("installed ") {
                installed += 1;
                if installed >= kill_after {
                    break;
                }
            }
        }
        assert_eq!(
            installed, kill_after,
            "round {round}: the child stopped early"
        );
        // Somewhere inside the next receive, stage or install.
        std::thread::sleep(std::time::Duration::from_micros(rng.below(30_000)));
        child.kill().expect("kill child");
        child.wait().expect("reap child");
        let engine = Engine::open(dir.path(), config()).expect("reopen after kill");
        check_whole_version(&engine);
        let staged = engine.staged_snapshots();
        assert!(staged.len() <= 1);
        if let Some(s) = staged.first() {
            staged_seen += 1;
            assert_eq!(
                s.applied_index,
                10 + u64::from(s.stats.live_keys > SWAP_KEYS as u64)
            );
            engine
                .install_staged(RANGE)
                .expect("install what a crash left staged");
            check_whole_version(&engine);
        }
    }
    eprintln!("staged snapshots found after a kill: {staged_seen} of 12 rounds");
}

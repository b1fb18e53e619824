//! Crash consistency: a child process applies batches in a loop and is killed (SIGKILL) at
//! a different point each round; after every kill the engine must reopen with every
//! acknowledged batch whole, no batch in part, and accounting that matches the data.

use shoal_core::{KeyRange, RangeId};
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

//! The engine's behaviour through its public API: writes, versions, conditions, reads,
//! views, restarts, split/merge/removal, snapshots, and refusals of bad input.

use shoal_core::{KeyRange, RangeId};
use shoal_storage::{
    Condition, Durability, Engine, EngineConfig, RangeStats, Scan, SplitMode, SplitSpec,
    SplitStats, StorageError, WriteBatch, WriteOp, WriteOutcome,
};
use std::path::Path;

const R1: RangeId = RangeId::new(1);
const R2: RangeId = RangeId::new(2);

fn open(path: &Path) -> Engine {
    Engine::open(path, EngineConfig::default()).expect("open")
}

fn fresh() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(dir.path());
    engine
        .create_range(R1, KeyRange::full(), 0)
        .expect("create");
    (dir, engine)
}

fn puts(pairs: &[(&str, &str)]) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (k, v) in pairs {
        b.put(*k, *v);
    }
    b
}

fn value(engine: &Engine, range: RangeId, key: &str) -> Option<Vec<u8>> {
    engine
        .get(range, key.as_bytes())
        .expect("get")
        .map(|v| v.value)
}

#[test]
fn apply_records_data_versions_and_accounting() {
    let (_dir, engine) = fresh();
    let out = engine
        .apply(R1, 1, &puts(&[("a", "1"), ("b", "22"), ("a", "333")]))
        .unwrap();
    assert_eq!(
        out,
        vec![
            WriteOutcome::Written { version: 1 },
            WriteOutcome::Written { version: 2 },
            WriteOutcome::Written { version: 3 },
        ]
    );
    assert_eq!(value(&engine, R1, "a"), Some(b"333".to_vec()));
    assert_eq!(engine.get(R1, b"a").unwrap().unwrap().version, 3);
    let info = engine.range(R1).unwrap();
    assert_eq!(info.applied_index, 1);
    assert_eq!(
        info.stats,
        RangeStats {
            live_keys: 2,
            live_bytes: (1 + 3) + (1 + 2),
            estimated: false,
        }
    );
    let mut del = WriteBatch::new();
    del.delete("a").delete("zz");
    let out = engine.apply(R1, 2, &del).unwrap();
    assert_eq!(
        out,
        vec![
            WriteOutcome::Deleted { existed: true },
            WriteOutcome::Deleted { existed: false }
        ]
    );
    assert_eq!(value(&engine, R1, "a"), None);
    assert_eq!(engine.range(R1).unwrap().stats.live_keys, 1);
    // An empty batch only advances the applied index.
    engine.apply(R1, 5, &WriteBatch::new()).unwrap();
    assert_eq!(engine.range(R1).unwrap().applied_index, 5);
}

#[test]
fn conditions_report_mismatch_and_missing_distinctly() {
    let (_dir, engine) = fresh();
    engine.apply(R1, 1, &puts(&[("k", "v1")])).unwrap();
    let v = engine.get(R1, b"k").unwrap().unwrap().version;
    let mut b = WriteBatch::new();
    b.compare_and_set("k", Condition::Version(v + 7), Some(b"x".to_vec()))
        .compare_and_set("nope", Condition::Version(1), Some(b"x".to_vec()))
        .compare_and_set("nope", Condition::Value(b"v1".to_vec()), None)
        .compare_and_set("k", Condition::Absent, Some(b"x".to_vec()))
        .compare_and_set("k", Condition::Value(b"v1".to_vec()), Some(b"v2".to_vec()))
        .compare_and_set("new", Condition::Absent, Some(b"n".to_vec()))
        .compare_and_set("k", Condition::Version(v + 1), None);
    let out = engine.apply(R1, 2, &b).unwrap();
    assert_eq!(out[0], WriteOutcome::Mismatch { current_version: v });
    assert_eq!(out[1], WriteOutcome::Missing);
    assert_eq!(out[2], WriteOutcome::Missing);
    assert_eq!(out[3], WriteOutcome::Mismatch { current_version: v });
    assert_eq!(out[4], WriteOutcome::Written { version: v + 1 });
    assert_eq!(out[5], WriteOutcome::Written { version: v + 2 });
    // The last one sees the batch's own earlier write.
    assert_eq!(out[6], WriteOutcome::Deleted { existed: true });
    assert_eq!(value(&engine, R1, "k"), None);
    assert_eq!(value(&engine, R1, "new"), Some(b"n".to_vec()));
    // A recreated key never gets an old version back.
    engine.apply(R1, 3, &puts(&[("k", "again")])).unwrap();
    assert!(engine.get(R1, b"k").unwrap().unwrap().version > v + 1);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let (_dir, engine) = fresh();
    engine.apply(R1, 1, &puts(&[("a", "1")])).unwrap();
    let before = engine.range(R1).unwrap();
    let long_key = vec![b'k'; 4097];
    let mut b = WriteBatch::new();
    b.put("ok", "fine").put(long_key.clone(), "v");
    assert!(matches!(
        engine.apply(R1, 2, &b),
        Err(StorageError::KeyTooLarge {
            len: 4097,
            max: 4096
        })
    ));
    // The empty key, which the tree underneath cannot hold, in every kind of write.
    for empty in [
        WriteOp::Put {
            key: Vec::new(),
            value: b"v".to_vec(),
        },
        WriteOp::Delete { key: Vec::new() },
        WriteOp::CompareAndSet {
            key: Vec::new(),
            expect: Condition::Absent,
            new: Some(b"v".to_vec()),
        },
    ] {
        let mut b = WriteBatch::new();
        b.put("ok", "fine").push(empty);
        let refused = engine.apply(R1, 2, &b).unwrap_err();
        assert!(matches!(refused, StorageError::EmptyKey), "{refused}");
        assert!(refused.is_refusal());
    }
    assert_eq!(engine.get(R1, b"").unwrap(), None);
    let mut b = WriteBatch::new();
    b.put("ok", "fine").put("big", vec![0u8; (1 << 20) + 1]);
    assert!(matches!(
        engine.apply(R1, 2, &b),
        Err(StorageError::ValueTooLarge { .. })
    ));
    assert!(matches!(
        engine.apply(R1, 1, &puts(&[("ok", "fine")])),
        Err(StorageError::StaleApply { applied: 1, .. })
    ));
    assert!(matches!(
        engine.apply(R2, 2, &puts(&[("ok", "fine")])),
        Err(StorageError::RangeNotFound(_))
    ));
    assert_eq!(engine.range(R1).unwrap(), before);
    assert_eq!(value(&engine, R1, "ok"), None);
    assert!(matches!(
        engine.scan(R1, &Scan::all(10).from("z").to("a")),
        Err(StorageError::InvalidScan(_))
    ));
    assert!(matches!(
        engine.scan(R1, &Scan::all(0)),
        Err(StorageError::InvalidScan(_))
    ));
    assert!(matches!(
        engine.get(R1, &long_key),
        Err(StorageError::KeyTooLarge { .. })
    ));
    // Keys outside the range, once it no longer covers everything.
    engine
        .split(
            R1,
            &SplitSpec {
                at: b"m".to_vec(),
                new_range: R2,
                index: 2,
                new_range_applied: 0,
                left_tag: None,
                right_tag: None,
            },
        )
        .unwrap();
    assert!(matches!(
        engine.apply(R1, 3, &puts(&[("a", "2"), ("x", "1")])),
        Err(StorageError::KeyOutsideRange { .. })
    ));
    assert!(matches!(
        engine.get(R1, b"x"),
        Err(StorageError::KeyOutsideRange { .. })
    ));
    assert_eq!(value(&engine, R1, "a"), Some(b"1".to_vec()));
    assert!(matches!(
        engine.create_range(RangeId::new(9), KeyRange::bounded("c", "d").unwrap(), 0),
        Err(StorageError::RangeOverlap { .. })
    ));
    assert!(matches!(
        engine.create_range(R2, KeyRange::bounded("c", "d").unwrap(), 0),
        Err(StorageError::RangeExists(_))
    ));
}

#[test]
fn scans_honour_bounds_limits_direction_and_the_range() {
    let (_dir, engine) = fresh();
    let keys = ["a", "b", "c", "d", "e", "f"];
    let mut b = WriteBatch::new();
    for k in keys {
        b.put(k, k.to_uppercase());
    }
    engine.apply(R1, 1, &b).unwrap();
    let got = |s: &Scan| -> Vec<String> {
        engine
            .scan(R1, s)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e.key).unwrap())
            .collect()
    };
    assert_eq!(got(&Scan::all(100)), keys);
    assert_eq!(got(&Scan::all(2).from("b")), ["b", "c"]);
    assert_eq!(got(&Scan::all(100).from("b").to("e")), ["b", "c", "d"]);
    assert_eq!(got(&Scan::all(2).to("e").reverse()), ["d", "c"]);
    assert_eq!(got(&Scan::all(100).from("c").to("c")), Vec::<String>::new());
    engine
        .split(
            R1,
            &SplitSpec {
                at: b"c".to_vec(),
                new_range: R2,
                index: 2,
                new_range_applied: 0,
                left_tag: None,
                right_tag: None,
            },
        )
        .unwrap();
    // Bounds reaching past the range are narrowed to it.
    assert_eq!(got(&Scan::all(100).to("z")), ["a", "b"]);
    let right: Vec<_> = engine.scan(R2, &Scan::all(100).reverse()).unwrap();
    assert_eq!(right.len(), 4);
    assert_eq!(right[0].key, b"f");
    assert_eq!(right[0].value, b"F");
}

#[test]
fn views_read_one_point_in_time_while_writes_continue() {
    let (_dir, engine) = fresh();
    engine
        .apply(R1, 1, &puts(&[("a", "old"), ("b", "old")]))
        .unwrap();
    let view = engine.view(R1).unwrap();
    engine
        .apply(R1, 2, &puts(&[("a", "new"), ("c", "new")]))
        .unwrap();
    let mut del = WriteBatch::new();
    del.delete("b");
    engine.apply(R1, 3, &del).unwrap();
    assert_eq!(view.applied_index(), 1);
    assert_eq!(view.get(b"a").unwrap().unwrap().value, b"old");
    assert_eq!(view.get(b"b").unwrap().unwrap().value, b"old");
    assert_eq!(view.get(b"c").unwrap(), None);
    assert_eq!(view.scan(&Scan::all(10)).unwrap().len(), 2);
    assert_eq!(engine.scan(R1, &Scan::all(10)).unwrap().len(), 2);
    assert_eq!(value(&engine, R1, "a"), Some(b"new".to_vec()));
}

#[test]
fn split_and_merge_move_no_data_and_keep_accounting_exact() {
    let (dir, engine) = fresh();
    let mut b = WriteBatch::new();
    for i in 0..100u32 {
        b.put(format!("k{i:03}"), vec![b'x'; 10 + (i as usize % 7)]);
    }
    engine.apply(R1, 1, &b).unwrap();
    let total = engine.range(R1).unwrap().stats;
    let at = engine.split_key(R1).unwrap().unwrap();
    engine
        .split(
            R1,
            &SplitSpec {
                at: at.clone(),
                new_range: R2,
                index: 2,
                new_range_applied: 5,
                left_tag: None,
                right_tag: None,
            },
        )
        .unwrap();
    let (l, r) = (engine.range(R1).unwrap(), engine.range(R2).unwrap());
    assert_eq!(l.span, KeyRange::bounded(Vec::new(), at.clone()).unwrap());
    assert_eq!((l.applied_index, r.applied_index), (2, 5));
    assert_eq!(l.stats.live_keys + r.stats.live_keys, 100);
    assert_eq!(l.stats.live_bytes + r.stats.live_bytes, total.live_bytes);
    // The median: the halves differ by less than one entry's size.
    assert!(l.stats.live_bytes.abs_diff(r.stats.live_bytes) <= 2 * 20);
    // Versions continue past the parent's on both sides.
    engine.apply(R2, 6, &puts(&[("k099", "new")])).unwrap();
    assert!(engine.get(R2, b"k099").unwrap().unwrap().version > 100);
    drop(engine);

    let engine = open(dir.path());
    assert_eq!(engine.range(R1).unwrap(), l);
    engine.merge(R1, R2, 3).unwrap();
    let merged = engine.range(R1).unwrap();
    assert_eq!(merged.span, KeyRange::full());
    assert_eq!(merged.stats.live_keys, 100);
    assert_eq!(merged.applied_index, 3);
    assert!(matches!(
        engine.range(R2),
        Err(StorageError::RangeNotFound(_))
    ));
    assert_eq!(value(&engine, R1, "k099"), Some(b"new".to_vec()));
    assert!(matches!(
        engine.merge(R1, R2, 4),
        Err(StorageError::RangeNotFound(_))
    ));
}

#[test]
fn restart_keeps_applied_index_and_accounting() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        engine
            .create_range(R1, KeyRange::bounded("a", "m").unwrap(), 10)
            .unwrap();
        engine
            .create_range(R2, KeyRange::starting_at("m"), 0)
            .unwrap();
        engine
            .apply(R1, 11, &puts(&[("b", "1"), ("c", "2")]))
            .unwrap();
    }
    let engine = open(dir.path());
    let info = engine.range(R1).unwrap();
    assert_eq!(info.applied_index, 11);
    assert_eq!(
        info.stats,
        RangeStats {
            live_keys: 2,
            live_bytes: 4,
            estimated: false,
        }
    );
    assert_eq!(value(&engine, R1, "c"), Some(b"2".to_vec()));
}

#[test]
fn removing_a_range_deletes_its_keys_and_frees_its_span() {
    let (_dir, engine) = fresh();
    let mut b = WriteBatch::new();
    for i in 0..10_000u32 {
        b.put(format!("k{i:05}"), "v");
    }
    engine.apply(R1, 1, &b).unwrap();
    engine.remove_range(R1).unwrap();
    assert!(matches!(
        engine.get(R1, b"k00001"),
        Err(StorageError::RangeNotFound(_))
    ));
    assert!(engine.is_free(&KeyRange::full()));
    engine.create_range(R2, KeyRange::full(), 0).unwrap();
    assert_eq!(engine.scan(R2, &Scan::all(10)).unwrap(), vec![]);
    assert_eq!(engine.range(R2).unwrap().stats, RangeStats::default());
}

#[test]
fn a_locked_data_directory_is_refused() {
    let (dir, _engine) = fresh();
    assert!(matches!(
        Engine::open(dir.path(), EngineConfig::default()),
        Err(StorageError::Locked { .. })
    ));
}

#[test]
fn durability_modes_all_recover_a_prefix_of_batches_after_a_clean_persist() {
    for durability in [Durability::Sync, Durability::Process, Durability::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig {
            durability,
            ..EngineConfig::default()
        };
        {
            let engine = Engine::open(dir.path(), config.clone()).unwrap();
            engine.create_range(R1, KeyRange::full(), 0).unwrap();
            for i in 1..=50u64 {
                engine
                    .apply(R1, i, &puts(&[(&format!("k{i}"), "v")]))
                    .unwrap();
            }
            engine.persist(Durability::Sync).unwrap();
        }
        let engine = Engine::open(dir.path(), config).unwrap();
        assert_eq!(
            engine.range(R1).unwrap().applied_index,
            50,
            "{durability:?}"
        );
        assert_eq!(engine.range(R1).unwrap().stats.live_keys, 50);
    }
}

/// A split that counts nothing estimates each half at half the whole; writes keep the
/// estimates moving; a recount makes them exact, however many writes came between, and is
/// what a reopened engine finds; a snapshot of an estimated range is received with the
/// counts of what it carries.
#[test]
fn estimated_splits_are_recounted_exactly_and_snapshot_intact() {
    let (dir, engine) = fresh();
    // 30 keys below "m" (2 + 1 bytes each) and 10 from "m" on.
    let mut b = WriteBatch::new();
    for i in 0..30 {
        b.put(format!("a{i:02}"), "v");
    }
    for i in 0..10 {
        b.put(format!("m{i:02}"), "v");
    }
    engine.apply(R1, 1, &b).unwrap();
    let spec = SplitSpec {
        at: b"m".to_vec(),
        new_range: R2,
        index: 2,
        new_range_applied: 5,
        left_tag: None,
        right_tag: None,
    };
    let mode = SplitMode {
        stats: SplitStats::Estimated,
        durability: Durability::Buffered,
    };
    engine.split_with(R1, &spec, mode).unwrap();
    let (left, right) = (engine.range(R1).unwrap(), engine.range(R2).unwrap());
    assert_eq!((left.stats.live_keys, right.stats.live_keys), (20, 20));
    assert!(left.stats.estimated && right.stats.estimated);
    // Writes after the split move the estimate: one new key on the right.
    engine.apply(R2, 6, &puts(&[("z", "1")])).unwrap();
    // A snapshot of the estimated right half arrives whole, counted as it is.
    let chunks: Vec<Vec<u8>> = engine
        .snapshot_stream(R2, 4096)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    let mut ingest = other.ingest(R2, engine.range(R2).unwrap().span).unwrap();
    for chunk in &chunks {
        ingest.apply(chunk).unwrap();
    }
    ingest.finish().unwrap();
    let received = other.range(R2).unwrap().stats;
    assert_eq!((received.live_keys, received.estimated), (11, false));
    // Recounts are exact.
    let right = engine.recount_stats(R2).unwrap();
    assert_eq!(
        (right.live_keys, right.live_bytes, right.estimated),
        (11, 10 * 4 + 2, false)
    );
    let mut paces = 0;
    let left = engine
        .recount_stats_paced(R1, 7, &mut || paces += 1)
        .unwrap();
    assert_eq!(paces, 30 / 7, "paced every 7 keys of 30");
    assert_eq!(
        (left.live_keys, left.live_bytes, left.estimated),
        (30, 30 * 4, false)
    );
    assert_eq!(engine.range(R1).unwrap().stats, left);
    // The recounted stats are what a reopened engine finds.
    engine.persist(Durability::Sync).unwrap();
    drop(engine);
    let engine = open(dir.path());
    assert_eq!(engine.range(R1).unwrap().stats, left);
    assert_eq!(engine.range(R2).unwrap().stats, right);
}

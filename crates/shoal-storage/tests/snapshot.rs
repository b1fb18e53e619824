//! Snapshot streams: round trips, and every way a stream can be bad.

use shoal_core::{KeyRange, RangeId};
use shoal_storage::{Engine, EngineConfig, Scan, StorageError, WriteBatch};

const R1: RangeId = RangeId::new(1);

fn source(keys: u32) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    engine.create_range(R1, KeyRange::full(), 0).unwrap();
    let mut b = WriteBatch::new();
    for i in 0..keys {
        b.put(
            format!("key{i:06}"),
            vec![(i % 251) as u8; 100 + (i as usize % 50)],
        );
    }
    engine.apply(R1, 7, &b).unwrap();
    (dir, engine)
}

fn chunks(engine: &Engine) -> Vec<Vec<u8>> {
    engine
        .snapshot_stream(R1, 4096)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_stream_round_trips_into_an_empty_engine() {
    let (_d1, src) = source(2000);
    let chunks = chunks(&src);
    assert!(chunks.len() > 10, "small chunks: {}", chunks.len());
    // Writes after the stream was taken are not part of it.
    let mut late = WriteBatch::new();
    late.put("key999999", "late");
    src.apply(R1, 8, &late).unwrap();

    let d2 = tempfile::tempdir().unwrap();
    let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
    let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
    // Not visible while ingesting.
    for chunk in &chunks[..3] {
        ingest.apply(chunk).unwrap();
    }
    assert!(matches!(
        dst.get(R1, b"key000001"),
        Err(StorageError::RangeNotReady(_))
    ));
    for chunk in &chunks[3..] {
        ingest.apply(chunk).unwrap();
    }
    let info = ingest.finish().unwrap();
    assert_eq!(info.applied_index, 7);
    assert_eq!(info.stats.live_keys, 2000);
    let a = src.view(R1).unwrap();
    let all = |e: &Engine| e.scan(R1, &Scan::all(10_000)).unwrap();
    assert_eq!(
        all(&dst),
        a.scan(&Scan::all(10_000)).unwrap()[..2000].to_vec()
    );
    // Versions came across: the next write continues past them.
    let mut b = WriteBatch::new();
    b.put("key000000", "x");
    dst.apply(R1, 8, &b).unwrap();
    assert!(dst.get(R1, b"key000000").unwrap().unwrap().version > 2000);
}

#[test]
fn an_empty_range_streams_as_one_chunk() {
    let (_d1, src) = source(0);
    let chunks = chunks(&src);
    assert_eq!(chunks.len(), 1);
    let d2 = tempfile::tempdir().unwrap();
    let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
    let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
    ingest.apply(&chunks[0]).unwrap();
    assert_eq!(ingest.finish().unwrap().stats.live_keys, 0);
}

/// Ingests `chunks` and expects a refusal somewhere; afterwards the range is not hosted and
/// its keys are gone.
fn refused(chunks: &[Vec<u8>]) -> StorageError {
    let d2 = tempfile::tempdir().unwrap();
    let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
    let err = {
        let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
        let mut err = None;
        for chunk in chunks {
            if let Err(e) = ingest.apply(chunk) {
                err = Some(e);
                break;
            }
        }
        match err {
            Some(e) => e,
            None => ingest.finish().expect_err("a bad stream must not finish"),
        }
    };
    assert!(matches!(dst.range(R1), Err(StorageError::RangeNotFound(_))));
    assert!(dst.is_free(&KeyRange::full()));
    dst.create_range(R1, KeyRange::full(), 0).unwrap();
    assert_eq!(dst.scan(R1, &Scan::all(10)).unwrap(), vec![]);
    err
}

#[test]
fn bad_streams_are_refused_and_leave_nothing_behind() {
    let (_d1, src) = source(500);
    let good = chunks(&src);
    assert!(good.len() >= 4);

    let mut flipped = good.clone();
    flipped[2][40] ^= 1;
    assert!(format!("{}", refused(&flipped)).contains("checksum"));

    let mut missing = good.clone();
    missing.remove(1);
    assert!(format!("{}", refused(&missing)).contains("missing or repeated"));

    let mut repeated = good.clone();
    repeated.insert(2, good[1].clone());
    assert!(format!("{}", refused(&repeated)).contains("missing or repeated"));

    let truncated = good[..good.len() - 1].to_vec();
    assert!(format!("{}", refused(&truncated)).contains("ended early"));

    let mut short = good.clone();
    short[0].truncate(10);
    assert!(matches!(refused(&short), StorageError::BadSnapshot(_)));

    // A stream of another span.
    let d3 = tempfile::tempdir().unwrap();
    let dst = Engine::open(d3.path(), EngineConfig::default()).unwrap();
    let mut ingest = dst.ingest(R1, KeyRange::starting_at("key")).unwrap();
    assert!(ingest.apply(&good[0]).is_err());
    assert!(ingest.finish().is_err());
    assert!(dst.is_free(&KeyRange::full()));
}

#[test]
fn an_ingest_interrupted_by_a_crash_is_cleared_at_open() {
    let (_d1, src) = source(500);
    let good = chunks(&src);
    let d2 = tempfile::tempdir().unwrap();
    {
        let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
        let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
        ingest.apply(&good[0]).unwrap();
        ingest.apply(&good[1]).unwrap();
        // The process dies here: no finish, no abort.
        std::mem::forget(ingest);
        dst.persist(shoal_storage::Durability::Sync).unwrap();
    }
    let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
    assert!(matches!(dst.range(R1), Err(StorageError::RangeNotFound(_))));
    dst.create_range(R1, KeyRange::full(), 0).unwrap();
    assert_eq!(dst.scan(R1, &Scan::all(10)).unwrap(), vec![]);
}

/// Rewrites the header's `next_version` of chunk 0 of a full-span stream and re-seals it.
fn with_next_version(chunk: &[u8], next_version: u64) -> Vec<u8> {
    // magic 4, format 1, range 8, applied 8, seq 4, flags 1, start_len 4 (empty), has_end 1.
    const AT: usize = 4 + 1 + 8 + 8 + 4 + 1 + 4 + 1;
    let mut body = chunk[..chunk.len() - 32].to_vec();
    body[AT..AT + 8].copy_from_slice(&next_version.to_be_bytes());
    let checksum = *blake3::hash(&body).as_bytes();
    body.extend_from_slice(&checksum);
    body
}

/// Regression: ingest took the header's `next_version` on trust. At `u64::MAX` the next
/// write panicked while holding the range's lock; below the entries' versions, a later write
/// reissued a version the snapshot already held.
#[test]
fn a_snapshot_whose_version_counter_is_impossible_or_behind_its_entries_is_refused() {
    let (_d1, src) = source(3); // versions 1, 2, 3; next_version 4
    let good = chunks(&src);
    assert_eq!(good.len(), 1);
    assert_eq!(
        with_next_version(&good[0], 4),
        good[0],
        "offset of the counter"
    );
    for bad in [0, 2, 3, u64::MAX, shoal_storage::MAX_VERSION + 2] {
        let err = refused(&[with_next_version(&good[0], bad)]);
        assert!(
            format!("{err}").contains("version"),
            "next_version {bad}: {err}"
        );
    }
    // At the very top of the counter the snapshot is valid; the range then refuses writes
    // that would need another version, and changes nothing.
    let d2 = tempfile::tempdir().unwrap();
    let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
    let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
    ingest
        .apply(&with_next_version(&good[0], shoal_storage::MAX_VERSION + 1))
        .unwrap();
    ingest.finish().unwrap();
    let before = dst.scan(R1, &Scan::all(10)).unwrap();
    let mut b = WriteBatch::new();
    b.delete("key000000");
    b.put("key000001", "new");
    assert!(matches!(
        dst.apply(R1, 8, &b),
        Err(StorageError::VersionsExhausted(_))
    ));
    assert_eq!(dst.scan(R1, &Scan::all(10)).unwrap(), before);
    assert_eq!(dst.range(R1).unwrap().applied_index, 7);
    // A delete needs no version.
    let mut d = WriteBatch::new();
    d.delete("key000000");
    dst.apply(R1, 8, &d).unwrap();
}

/// `body` sealed with its checksum, as a sender would: mutations behind a valid checksum
/// reach the chunk parser instead of stopping at the checksum.
fn resealed(mut body: Vec<u8>) -> Vec<u8> {
    let checksum = *blake3::hash(&body).as_bytes();
    body.extend_from_slice(&checksum);
    body
}

/// Hostile snapshot streams on fixed seeds: one chunk of a real stream replaced by random
/// bytes or a mutation, sent as is (the checksum catches it) or resealed (the parser must).
/// Each ingest either fails and leaves the span free, or finishes with accounting that
/// matches what it holds; nothing panics (overflow checks are on in tests).
#[test]
fn mutated_snapshot_streams_are_refused_or_ingested_consistently() {
    let (_d1, src) = source(60);
    let good = chunks(&src);
    assert!(good.len() >= 3, "{} chunks", good.len());
    let bodies: Vec<Vec<u8>> = good.iter().map(|c| c[..c.len() - 32].to_vec()).collect();
    let d2 = tempfile::tempdir().unwrap();
    let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
    let mut finished = 0;
    for seed in shoal_sim::seeds_from_env_or(0x5EED_0501, 2) {
        let mut mutator = shoal_sim::Mutator::new(seed);
        for case in 0..100 {
            let victim = case % good.len();
            let mut stream = good.clone();
            stream[victim] = if case % 3 == 0 {
                mutator.next_input(&good)
            } else {
                resealed(mutator.next_input(&bodies))
            };
            let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
            let applied = stream.iter().all(|chunk| ingest.apply(chunk).is_ok());
            // A refused ingest is aborted when dropped.
            let outcome = if applied {
                ingest.finish()
            } else {
                drop(ingest);
                Err(StorageError::BadSnapshot(String::new()))
            };
            match outcome {
                Err(_) => assert!(
                    dst.is_free(&KeyRange::full()),
                    "seed {seed} case {case}: a refused stream left the range behind"
                ),
                Ok(info) => {
                    finished += 1;
                    let held = dst.scan(R1, &Scan::all(1 << 20)).unwrap();
                    assert_eq!(
                        info.stats.live_keys,
                        held.len() as u64,
                        "seed {seed} case {case}"
                    );
                    dst.remove_range(R1).unwrap();
                }
            }
        }
    }
    // Some mutations leave a valid stream (a value byte changed behind a resealed
    // checksum, say), which ingests; most do not.
    assert!(finished < 200, "no mutated stream was refused");
}

/// An engine hosting R1 over the full span with keys that the source's snapshot does not
/// hold (`old…`) and keys it does (`key000000…`, with other values), at applied index 3.
fn hosting_other_data() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    engine.create_range(R1, KeyRange::full(), 0).unwrap();
    let mut b = WriteBatch::new();
    for i in 0..300 {
        b.put(format!("old{i:04}"), "stale");
        b.put(format!("key{i:06}"), "stale");
    }
    engine.apply(R1, 3, &b).unwrap();
    (dir, engine)
}

#[test]
fn a_snapshot_of_a_hosted_range_replaces_its_contents_whole() {
    let (_d1, src) = source(1000);
    let good = chunks(&src);
    let (_d2, dst) = hosting_other_data();
    let before = dst.scan(R1, &Scan::all(10_000)).unwrap();
    let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
    assert!(ingest.replaces());
    for chunk in &good {
        ingest.apply(chunk).unwrap();
        // The range serves its old contents while the snapshot arrives.
        assert_eq!(dst.scan(R1, &Scan::all(10_000)).unwrap(), before);
    }
    // A second snapshot of the range at the same time is refused.
    assert!(matches!(
        dst.ingest(R1, KeyRange::full()),
        Err(StorageError::SnapshotInProgress(_))
    ));
    let info = ingest.finish().unwrap();
    assert_eq!(info.applied_index, 7);
    assert_eq!(info.stats, src.range(R1).unwrap().stats);
    assert_eq!(
        dst.scan(R1, &Scan::all(10_000)).unwrap(),
        src.scan(R1, &Scan::all(10_000)).unwrap(),
        "exactly the snapshot's keys: the old ones are gone"
    );
    assert!(dst.staged_snapshots().is_empty());
}

#[test]
fn a_staged_snapshot_survives_a_restart_and_installs_or_discards() {
    let (_d1, src) = source(500);
    let good = chunks(&src);
    let (d2, dst) = hosting_other_data();
    let before = dst.scan(R1, &Scan::all(10_000)).unwrap();
    let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
    for chunk in &good {
        ingest.apply(chunk).unwrap();
    }
    let staged = ingest.stage().unwrap();
    assert!(staged.replaces);
    assert_eq!(staged.applied_index, 7);
    assert_eq!(dst.scan(R1, &Scan::all(10_000)).unwrap(), before);
    assert_eq!(dst.range(R1).unwrap().applied_index, 3);
    drop(dst);

    // Staged survives a restart; the old contents still serve.
    let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
    assert_eq!(dst.staged_snapshots(), vec![staged.clone()]);
    assert_eq!(dst.scan(R1, &Scan::all(10_000)).unwrap(), before);
    // Discarded: as if it never came, and it does not come back.
    dst.discard_staged(R1).unwrap();
    assert!(matches!(
        dst.install_staged(R1),
        Err(StorageError::NoStagedSnapshot(_))
    ));
    drop(dst);
    let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
    assert!(dst.staged_snapshots().is_empty());
    assert_eq!(dst.scan(R1, &Scan::all(10_000)).unwrap(), before);

    // Staged again, installed after a restart.
    let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
    for chunk in &good {
        ingest.apply(chunk).unwrap();
    }
    ingest.stage().unwrap();
    drop(dst);
    let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
    assert_eq!(dst.install_staged(R1).unwrap().applied_index, 7);
    assert_eq!(
        dst.scan(R1, &Scan::all(10_000)).unwrap(),
        src.scan(R1, &Scan::all(10_000)).unwrap()
    );
}

#[test]
fn a_new_range_can_be_staged_too_and_serves_only_once_installed() {
    let (_d1, src) = source(200);
    let good = chunks(&src);
    let d2 = tempfile::tempdir().unwrap();
    let dst = std::sync::Arc::new(Engine::open(d2.path(), EngineConfig::default()).unwrap());
    // An ingest that owns its engine handle, as a receiver keeps one across messages.
    let mut ingest = dst.ingest_shared(R1, KeyRange::full()).unwrap();
    assert!(!ingest.replaces());
    for chunk in &good {
        ingest.apply(chunk).unwrap();
    }
    let staged = ingest.stage().unwrap();
    assert!(!staged.replaces);
    assert!(matches!(
        dst.get(R1, b"key000001"),
        Err(StorageError::RangeNotReady(_))
    ));
    assert_eq!(dst.staged_snapshots(), vec![staged]);
    dst.install_staged(R1).unwrap();
    assert_eq!(
        dst.scan(R1, &Scan::all(1000)).unwrap(),
        src.scan(R1, &Scan::all(1000)).unwrap()
    );
    // A staged new range discarded leaves its span free.
    let (_d3, src2) = source(10);
    let d4 = tempfile::tempdir().unwrap();
    let other = Engine::open(d4.path(), EngineConfig::default()).unwrap();
    let mut ingest = other.ingest(R1, KeyRange::full()).unwrap();
    for chunk in &chunks(&src2) {
        ingest.apply(chunk).unwrap();
    }
    ingest.stage().unwrap();
    other.discard_staged(R1).unwrap();
    assert!(other.is_free(&KeyRange::full()));
}

/// A replica that missed a split receives the left half's snapshot: its range shrinks to the
/// snapshot's span and the keys past it go, freeing that span for the right half.
#[test]
fn a_snapshot_over_a_smaller_span_shrinks_the_range() {
    let (_d1, src) = source(400);
    let left = KeyRange::bounded("", "key000200").unwrap();
    src.split(
        R1,
        &shoal_storage::SplitSpec {
            at: b"key000200".to_vec(),
            new_range: RangeId::new(2),
            index: 8,
            new_range_applied: 0,
            left_tag: None,
            right_tag: None,
        },
    )
    .unwrap();
    let good = chunks(&src);
    let (_d2, dst) = source(400);
    let mut ingest = dst.ingest(R1, left.clone()).unwrap();
    for chunk in &good {
        ingest.apply(chunk).unwrap();
    }
    let info = ingest.finish().unwrap();
    assert_eq!(info.span, left);
    assert_eq!(info.stats.live_keys, 200);
    assert!(dst.is_free(&KeyRange::starting_at("key000200")));
    dst.create_range(RangeId::new(2), KeyRange::starting_at("key000200"), 0)
        .unwrap();
    assert_eq!(dst.scan(RangeId::new(2), &Scan::all(10)).unwrap(), vec![]);
}

#[test]
fn a_refused_replacement_leaves_the_hosted_range_as_it_was() {
    let (_d1, src) = source(500);
    let mut bad = chunks(&src);
    let last = bad.len() - 1;
    bad[last][45] ^= 1;
    let (_d2, dst) = hosting_other_data();
    let before = dst.scan(R1, &Scan::all(10_000)).unwrap();
    let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
    let refused = bad.iter().any(|chunk| ingest.apply(chunk).is_err());
    assert!(refused);
    drop(ingest);
    assert_eq!(dst.scan(R1, &Scan::all(10_000)).unwrap(), before);
    assert_eq!(dst.range(R1).unwrap().applied_index, 3);
    assert!(dst.staged_snapshots().is_empty());
    // And the next snapshot is taken.
    let mut ingest = dst.ingest(R1, KeyRange::full()).unwrap();
    for chunk in &chunks(&src) {
        ingest.apply(chunk).unwrap();
    }
    ingest.finish().unwrap();
}

/// A range's tag (the application's metadata for it) commits with applies, follows splits,
/// survives a restart and travels in snapshots.
#[test]
fn a_ranges_tag_commits_with_applies_follows_splits_and_travels_in_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    engine.create_range(R1, KeyRange::full(), 0).unwrap();
    assert!(engine.range(R1).unwrap().tag.is_empty());
    let mut b = WriteBatch::new();
    b.put("a", "1").put("m", "2").set_tag("gen 1");
    engine.apply(R1, 1, &b).unwrap();
    assert_eq!(engine.range(R1).unwrap().tag, b"gen 1");
    // Too large a tag is refused with the batch, changing nothing.
    let mut big = WriteBatch::new();
    big.put("b", "3").set_tag(vec![0u8; (1 << 20) + 1]);
    assert!(matches!(
        engine.apply(R1, 2, &big),
        Err(StorageError::ValueTooLarge { .. })
    ));
    assert_eq!(engine.range(R1).unwrap().applied_index, 1);
    engine
        .split(
            R1,
            &shoal_storage::SplitSpec {
                at: b"h".to_vec(),
                new_range: RangeId::new(2),
                index: 2,
                new_range_applied: 0,
                left_tag: Some(b"left".to_vec()),
                right_tag: None,
            },
        )
        .unwrap();
    assert_eq!(engine.range(R1).unwrap().tag, b"left");
    assert_eq!(engine.range(RangeId::new(2)).unwrap().tag, b"gen 1");
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    assert_eq!(engine.range(R1).unwrap().tag, b"left");
    let chunks: Vec<Vec<u8>> = engine
        .snapshot_stream(R1, 4096)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let dst = Engine::open(d2.path(), EngineConfig::default()).unwrap();
    let mut ingest = dst.ingest(R1, engine.range(R1).unwrap().span).unwrap();
    for chunk in &chunks {
        ingest.apply(chunk).unwrap();
    }
    assert_eq!(ingest.finish().unwrap().tag, b"left");
}

//! The range store end to end: three stores on loopback TCP, real fjall and WALs in temp
//! dirs, a client that routes like a gateway.

mod common;

use common::{n, wait_for, Cluster};
use shoal_core::{ErrorCode, RangeId};
use shoal_store::{
    Acks, Condition, Consistency, KvOp, KvResponse, Versioned, WriteOp, WriteOutcome, FIRST_RANGE,
    META_RANGE,
};

fn value(response: KvResponse) -> Option<Versioned> {
    match response {
        KvResponse::Value(v) => v,
        other => panic!("not a value: {other:?}"),
    }
}

fn outcomes(response: KvResponse) -> Vec<WriteOutcome> {
    match response {
        KvResponse::Written(o) => o,
        other => panic!("not written: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_serve_reads_writes_and_compare_and_set() {
    let cluster = Cluster::start(3, |_| {}).await;
    let put = cluster
        .request(b"apple", KvOp::put("apple", "red"))
        .await
        .unwrap();
    let version = match outcomes(put)[..] {
        [WriteOutcome::Written { version }] => version,
        ref other => panic!("{other:?}"),
    };
    let got = value(cluster.request(b"apple", KvOp::get("apple")).await.unwrap()).unwrap();
    assert_eq!(
        got,
        Versioned {
            version,
            value: b"red".to_vec()
        }
    );

    // Compare-and-set by version, by value, on absence.
    let stale = cluster
        .request(
            b"apple",
            KvOp::cas(
                "apple",
                Condition::Version(version + 100),
                Some(b"x".to_vec()),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes(stale),
        vec![WriteOutcome::Mismatch {
            current_version: version
        }]
    );
    let swapped = cluster
        .request(
            b"apple",
            KvOp::cas(
                "apple",
                Condition::Value(b"red".to_vec()),
                Some(b"green".to_vec()),
            ),
        )
        .await
        .unwrap();
    assert!(matches!(
        outcomes(swapped)[..],
        [WriteOutcome::Written { .. }]
    ));
    let created = cluster
        .request(
            b"pear",
            KvOp::cas("pear", Condition::Absent, Some(b"new".to_vec())),
        )
        .await
        .unwrap();
    assert!(matches!(
        outcomes(created)[..],
        [WriteOutcome::Written { .. }]
    ));
    let missing = cluster
        .request(
            b"plum",
            KvOp::cas("plum", Condition::Version(1), Some(b"x".to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(outcomes(missing), vec![WriteOutcome::Missing]);

    // Deletes, and a stale read from a follower once it caught up.
    cluster
        .request(b"pear", KvOp::delete("pear"))
        .await
        .unwrap();
    assert_eq!(
        value(cluster.request(b"pear", KvOp::get("pear")).await.unwrap()),
        None
    );
    let leader = cluster.store(n(1)).leader(FIRST_RANGE).unwrap();
    let follower = (1..=3).map(n).find(|&id| id != leader).unwrap();
    let descriptor = cluster.descriptor(b"apple").await.unwrap();
    wait_for("a follower to apply", async || {
        let engine = cluster.store(follower).engine();
        let v = engine.get(FIRST_RANGE, b"apple").ok()??;
        (v.value == b"green").then_some(())
    })
    .await;
    let request = shoal_store::KvRequest {
        range: descriptor.id,
        generation: descriptor.generation,
        op: KvOp::Get {
            key: b"apple".to_vec(),
            consistency: Consistency::Stale,
        },
    };
    use shoal_transport::RpcTransportExt;
    let stale = cluster
        .client
        .call::<shoal_store::KvRpc>(
            cluster.store(follower).addr(),
            &request,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(value(stale).unwrap().value, b"green");

    // Weaker acks answer "accepted"; the write still lands.
    let accepted = cluster
        .request(
            b"k1",
            KvOp::Write {
                ops: vec![WriteOp::Put {
                    key: b"k1".to_vec(),
                    value: b"v".to_vec(),
                }],
                acks: Acks::Leader,
            },
        )
        .await
        .unwrap();
    assert_eq!(accepted, KvResponse::Accepted);
    let appended = cluster
        .request(
            b"k2",
            KvOp::Write {
                ops: vec![WriteOp::Put {
                    key: b"k2".to_vec(),
                    value: b"w".to_vec(),
                }],
                acks: Acks::None,
            },
        )
        .await
        .unwrap();
    assert_eq!(appended, KvResponse::Accepted);
    assert_eq!(
        value(cluster.request(b"k1", KvOp::get("k1")).await.unwrap())
            .unwrap()
            .value,
        b"v"
    );

    // Bad input: a key over 4 KiB, a value over 1 MiB, a scan with inverted bounds.
    let long_key = vec![b'k'; 4097];
    let err = cluster
        .request(&long_key[..10], KvOp::put(long_key.clone(), "v"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge, "{err}");
    let err = cluster
        .request(b"big", KvOp::put("big", vec![0u8; (1 << 20) + 1]))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge, "{err}");
    let err = cluster
        .request(
            b"z",
            KvOp::Scan {
                start: b"z".to_vec(),
                end: Some(b"a".to_vec()),
                limit: 10,
                reverse: false,
                consistency: Consistency::Linearizable,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{err}");
    assert_eq!(
        value(cluster.request(b"big", KvOp::get("big")).await.unwrap()),
        None
    );

    // Status, over RPC: the leader's view of the range and its followers (once the write
    // with acks = none has applied too).
    let status = wait_for("every write to apply", async || {
        let status = cluster
            .client
            .call::<shoal_store::StatusRpc>(
                cluster.store(leader).addr(),
                &None,
                std::time::Duration::from_secs(5),
            )
            .await
            .ok()?;
        let first = status
            .ranges
            .iter()
            .find(|r| r.descriptor.id == FIRST_RANGE)?;
        (first.keys == 3).then_some(status)
    })
    .await;
    // The meta range and the first user range.
    assert_eq!((status.node, status.hosted), (leader, 2));
    assert!(status.leaderships >= 1);
    let range = status
        .ranges
        .iter()
        .find(|r| r.descriptor.id == FIRST_RANGE)
        .unwrap();
    assert_eq!(range.role, shoal_consensus::Role::Leader);
    assert_eq!(range.followers.len(), 2);
    assert_eq!(range.keys, 3, "apple, k1 and k2");
    assert!(range.applied > 0 && range.applied <= range.commit);
    assert!(status.wal_syncs > 0 && status.engine_disk_bytes > 0);
    cluster.shutdown().await;
}

fn entries(response: KvResponse) -> (Vec<shoal_store::KvEntry>, Option<Vec<u8>>) {
    match response {
        KvResponse::Entries { entries, resume } => (entries, resume),
        other => panic!("not entries: {other:?}"),
    }
}

/// Scans `[start, end)` through the router, following continuations across ranges.
async fn scan_all(cluster: &Cluster, start: &[u8], end: &[u8], reverse: bool) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let (mut lo, mut hi) = (start.to_vec(), end.to_vec());
    for _ in 0..1000 {
        let route = if reverse {
            // The range holding the keys just below `hi`.
            let mut below = hi.clone();
            match below.last_mut() {
                Some(b) if *b > 0 => *b -= 1,
                _ => {
                    below.pop();
                }
            }
            below
        } else {
            lo.clone()
        };
        let op = KvOp::Scan {
            start: lo.clone(),
            end: Some(hi.clone()),
            limit: 7,
            reverse,
            consistency: Consistency::Linearizable,
        };
        let (found, resume) = entries(cluster.request(&route, op).await.unwrap());
        keys.extend(found.into_iter().map(|e| e.key));
        match resume {
            Some(next) if reverse => hi = next,
            Some(next) => lo = next,
            None => return keys,
        }
    }
    panic!("the scan did not end");
}

/// A range splits while holding data: both halves serve, a client holding the old
/// descriptor is told the new ones, scans cross the boundary both ways, and every replica
/// applied the split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_splits_online_and_both_halves_serve() {
    let cluster = Cluster::start(3, |_| {}).await;
    for i in 0..40u32 {
        let key = format!("key{i:03}");
        cluster
            .request(key.as_bytes(), KvOp::put(key.clone(), format!("v{i}")))
            .await
            .unwrap();
    }
    let before = cluster.descriptor(b"key000").await.unwrap();
    let leader = cluster.leader_of(&before).unwrap();
    let (left, right) = cluster
        .store(leader)
        .split(FIRST_RANGE, Some(b"key020".to_vec()))
        .await
        .unwrap();
    assert_eq!(left.id, FIRST_RANGE);
    assert!(left.generation > before.generation);
    assert_eq!(right.range.start(), b"key020");
    // Every replica applies the split and starts the right half's group (beside the meta
    // range).
    wait_for("every replica to host both halves", async || {
        (1..=3)
            .all(|i| cluster.store(n(i)).descriptors().len() == 3)
            .then_some(())
    })
    .await;
    wait_for("a leader for the right half", async || {
        cluster.leader_of(&right)
    })
    .await;
    // A request with the old generation is told the range changed.
    use shoal_transport::RpcTransportExt;
    let stale = shoal_store::KvRequest {
        range: before.id,
        generation: before.generation,
        op: KvOp::get("key001"),
    };
    let err = cluster
        .client
        .call::<shoal_store::KvRpc>(
            cluster.store(leader).addr(),
            &stale,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err.code, ErrorCode::RangeKeyMismatch { descriptors } if descriptors[0].generation == left.generation),
        "{err}"
    );
    // Both halves read and write.
    for i in [0u32, 19, 20, 39] {
        let key = format!("key{i:03}");
        let got = value(
            cluster
                .request(key.as_bytes(), KvOp::get(key.clone()))
                .await
                .unwrap(),
        );
        assert_eq!(got.unwrap().value, format!("v{i}").into_bytes(), "{key}");
    }
    cluster
        .request(b"key030", KvOp::put("key030", "after"))
        .await
        .unwrap();
    assert_eq!(
        value(
            cluster
                .request(b"key030", KvOp::get("key030"))
                .await
                .unwrap()
        )
        .unwrap()
        .value,
        b"after"
    );
    // Scans across the boundary, forward and backward, see every key once.
    let forward = scan_all(&cluster, b"key010", b"key035", false).await;
    let expected: Vec<Vec<u8>> = (10..35)
        .map(|i| format!("key{i:03}").into_bytes())
        .collect();
    assert_eq!(forward, expected);
    let backward = scan_all(&cluster, b"key010", b"key035", true).await;
    assert_eq!(backward, expected.iter().rev().cloned().collect::<Vec<_>>());
    // A split at a key outside the range is refused and changes nothing.
    let refused = cluster
        .store(leader)
        .split(FIRST_RANGE, Some(b"zzz".to_vec()))
        .await;
    assert!(refused.is_err());
    cluster.shutdown().await;
}

/// The leader of a range is killed during writes: writes go on after a new election; the
/// old leader restarts and catches up; after every node restarts, every acknowledged write
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_leader_crash_and_a_full_restart() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let mut acknowledged = Vec::new();
    acknowledged.extend(cluster.put_numbered("a", 0..30, b"1").await);
    let descriptor = cluster.descriptor(b"a").await.unwrap();
    let leader = cluster.leader_of(&descriptor).unwrap();
    cluster.kill(leader).await;
    acknowledged.extend(cluster.put_numbered("a", 30..60, b"1").await);
    assert_ne!(cluster.leader_of(&descriptor), Some(leader));
    cluster.restart(leader).await;
    wait_for("the old leader to catch up", async || {
        let engine = cluster.store(leader).engine();
        engine.get(FIRST_RANGE, b"a059").ok()?.map(|_| ())
    })
    .await;
    // Every node restarts.
    for i in 1..=3 {
        cluster.kill(n(i)).await;
    }
    for i in 1..=3 {
        cluster.restart(n(i)).await;
    }
    for key in &acknowledged {
        let got = value(
            cluster
                .request(key.as_bytes(), KvOp::get(key.clone()))
                .await
                .unwrap(),
        );
        assert_eq!(got.map(|v| v.value), Some(b"1".to_vec()), "{key} was lost");
    }
    cluster.shutdown().await;
}

/// A node that stops hands every range it leads to a caught-up follower before it leaves,
/// and writes go on without waiting out an election timeout: by the time the hand-over
/// returns, the new leaders lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_hands_its_leaderships_over_first() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let mut acknowledged = cluster.put_numbered("h", 0..20, b"1").await;
    let user = cluster.descriptor(b"h").await.unwrap();
    let leader = cluster.leader_of(&user).unwrap();
    let led: Vec<RangeId> = [META_RANGE, FIRST_RANGE]
        .into_iter()
        .filter(|&r| cluster.store(leader).leader(r) == Some(leader))
        .collect();
    let store = cluster.stores[(leader.get() - 1) as usize].take().unwrap();
    let handed = store
        .hand_over_leaderships(std::time::Duration::from_secs(30))
        .await;
    assert_eq!(handed.led, led.len());
    assert_eq!(handed.moved, led.len(), "{handed:?}");
    for &range in &led {
        let now = store.leader(range).expect("the new leader is known");
        assert_ne!(now, leader);
        assert_eq!(cluster.store(now).leader(range), Some(now));
    }
    store.shutdown().await;
    acknowledged.extend(cluster.put_numbered("h", 20..40, b"1").await);
    for key in &acknowledged {
        let got = value(
            cluster
                .request(key.as_bytes(), KvOp::get(key.clone()))
                .await
                .unwrap(),
        );
        assert_eq!(got.map(|v| v.value), Some(b"1".to_vec()), "{key} was lost");
    }
    cluster.shutdown().await;
}

/// A follower down while the leader writes and compacts its log far past it catches up from
/// a snapshot of the leader's engine, streamed in chunks and installed over its old data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_compacted_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, |config| {
        config.raft.snapshot_after_entries = 50;
        config.raft.compaction_trailing_entries = 5;
        config.snapshot_chunk_bytes = 4 << 10;
    })
    .await;
    cluster.put_numbered("b", 0..1, b"old").await;
    let (leader, follower) = cluster.leader_and_follower(b"b").await;
    cluster.wait_holds(follower, FIRST_RANGE, b"b000").await;
    cluster.kill(follower).await;
    cluster.put_numbered("b", 0..200, &[b'x'; 300]).await;
    let status = cluster.store(leader).status(FIRST_RANGE).await.unwrap();
    assert!(
        status.snapshot_index > 100,
        "the leader compacted: {}",
        status.snapshot_index
    );
    cluster.restart(follower).await;
    wait_for("the follower to catch up", async || {
        let engine = cluster.store(follower).engine();
        engine.get(FIRST_RANGE, b"b199").ok()?.map(|_| ())
    })
    .await;
    let follower_status = cluster.store(follower).status(FIRST_RANGE).await.unwrap();
    assert!(
        follower_status.snapshot_index > 100,
        "caught up by snapshot"
    );
    let scan = |e: &shoal_storage::Engine| {
        e.scan(FIRST_RANGE, &shoal_storage::Scan::all(1000))
            .unwrap()
    };
    wait_for("the same data on the follower", async || {
        (scan(cluster.store(follower).engine()) == scan(cluster.store(leader).engine()))
            .then_some(())
    })
    .await;
    cluster.shutdown().await;
}

/// A follower killed right after installing a snapshot in its engine but before its log
/// recorded it (the window the durability order leaves) restarts with its engine ahead of
/// its log: it skips what the engine already holds and converges with the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_engine_is_ahead_of_its_log_after_a_crash_converges() {
    let mut cluster = Cluster::start(3, |config| {
        config.raft.snapshot_after_entries = 40;
        config.raft.compaction_trailing_entries = 5;
    })
    .await;
    cluster.put_numbered("c", 0..1, b"old").await;
    let (leader, follower) = cluster.leader_and_follower(b"c").await;
    cluster.wait_holds(follower, FIRST_RANGE, b"c000").await;
    cluster.kill(follower).await;
    cluster.put_numbered("c", 0..100, &[b'y'; 100]).await;
    // The state a kill between the engine's install and the log's record leaves: the
    // follower's engine holds the leader's range at its applied index, its WAL the old log.
    let chunks: Vec<Vec<u8>> = cluster
        .store(leader)
        .engine()
        .snapshot_stream(FIRST_RANGE, 4096)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ahead = {
        let dir = cluster.dirs[(follower.get() - 1) as usize]
            .path()
            .join("engine");
        let engine =
            shoal_storage::Engine::open(dir, shoal_storage::EngineConfig::default()).unwrap();
        let span = engine.range(FIRST_RANGE).unwrap().span;
        let mut ingest = engine.ingest(FIRST_RANGE, span).unwrap();
        for chunk in &chunks {
            ingest.apply(chunk).unwrap();
        }
        ingest.finish().unwrap().applied_index
    };
    cluster.restart(follower).await;
    cluster.put_numbered("c", 100..120, &[b'y'; 100]).await;
    // A range installing a snapshot answers "not ready" for a moment: ask again.
    let scan = |e: &shoal_storage::Engine| {
        Some((
            e.range(FIRST_RANGE).ok()?.applied_index,
            e.scan(FIRST_RANGE, &shoal_storage::Scan::all(1000)).ok()?,
        ))
    };
    wait_for("the follower to converge with the leader", async || {
        let (applied, data) = scan(cluster.store(follower).engine())?;
        (applied > ahead && Some((applied, data)) == scan(cluster.store(leader).engine()))
            .then_some(())
    })
    .await;
    assert!(
        cluster.store(follower).status(FIRST_RANGE).await.is_ok(),
        "the group did not fail"
    );
    cluster.shutdown().await;
}

/// Replicas compare by Merkle check at one applied index: equal ones say so in a few round
/// trips; a replica whose engine was changed behind Raft's back (as a bug or a bad disk
/// would) is caught and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_comparison_finds_equal_replicas_equal_and_a_divergence_loud() {
    use shoal_store::Comparison;
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.put_numbered("d", 0..50, b"1").await;
    let (leader, follower) = cluster.leader_and_follower(b"d").await;
    match cluster
        .compare_at_one_index(leader, FIRST_RANGE, follower)
        .await
    {
        Comparison::Equal { round_trips, .. } => assert!(round_trips <= 3, "{round_trips}"),
        other => panic!("{other:?}"),
    }
    // Digests (what the gateway shows, and the cluster test compares) agree too: at one
    // applied index, one root.
    let digests = async |cluster: &Cluster| {
        wait_for("both digests at one applied index", async || {
            let a = cluster
                .store(leader)
                .replica_digest(FIRST_RANGE)
                .await
                .ok()?;
            let b = cluster
                .store(follower)
                .replica_digest(FIRST_RANGE)
                .await
                .ok()?;
            (a.applied == b.applied).then_some((a, b))
        })
        .await
    };
    let (a, b) = digests(&cluster).await;
    assert_eq!(a, b);
    assert!(a.keys >= 50, "{a:?}");
    // The follower's engine gains a key no entry wrote, at the index the next entry will
    // take: the follower then skips that entry (its engine is "ahead"), and diverges.
    cluster.kill(follower).await;
    {
        let dir = cluster.dirs[(follower.get() - 1) as usize]
            .path()
            .join("engine");
        let engine =
            shoal_storage::Engine::open(dir, shoal_storage::EngineConfig::default()).unwrap();
        let applied = engine.range(FIRST_RANGE).unwrap().applied_index;
        let mut batch = shoal_storage::WriteBatch::new();
        batch.put("d999", "not from the log");
        engine.apply(FIRST_RANGE, applied + 1, &batch).unwrap();
    }
    cluster.restart(follower).await;
    cluster
        .request(b"d100", KvOp::put("d100", "2"))
        .await
        .unwrap();
    match cluster
        .compare_at_one_index(leader, FIRST_RANGE, follower)
        .await
    {
        Comparison::Differ {
            key_hashes,
            complete,
            ..
        } => {
            assert!(complete);
            assert!(!key_hashes.is_empty());
        }
        other => panic!("the divergence went unnoticed: {other:?}"),
    }
    assert_eq!(cluster.store(leader).replica_mismatches(), 1);
    let (a, b) = digests(&cluster).await;
    assert_ne!(a.root, b.root, "the divergence is visible in the digests");
    cluster.shutdown().await;
}

/// A node that hosts no replica learns every range by gossip: after a split, it answers
/// lookups for keys on both sides, with the leaders as hints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hosting_nothing_learns_every_range_by_gossip() {
    use shoal_store::{LookupRequest, LookupRpc, Store};
    use shoal_transport::RpcTransportExt;
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.request(b"m", KvOp::put("m", "1")).await.unwrap();
    let descriptor = cluster.descriptor(b"a").await.unwrap();
    let leader = cluster.leader_of(&descriptor).unwrap();
    let (left, right) = cluster
        .store(leader)
        .split(FIRST_RANGE, Some(b"m".to_vec()))
        .await
        .unwrap();
    // A fourth node joins; it hosts nothing.
    let dir = tempfile::tempdir().unwrap();
    let fourth = Store::open(common::config(n(4), dir.path())).await.unwrap();
    fourth.join(vec![cluster.addrs[0]]).await.unwrap();
    for (key, want) in [(b"a", &left), (b"z", &right)] {
        let found = wait_for("the fourth node to learn the range", async || {
            let request = LookupRequest { key: key.to_vec() };
            let found = cluster
                .client
                .call::<LookupRpc>(fourth.addr(), &request, std::time::Duration::from_secs(2))
                .await
                .ok()?;
            found.into_iter().find(|d| {
                d.id == want.id && d.generation == want.generation && d.leader_hint.is_some()
            })
        })
        .await;
        assert_eq!(found.range, want.range);
    }
    assert!(fourth.descriptors().is_empty(), "it hosts nothing");
    fourth.shutdown().await;
    cluster.shutdown().await;
}

/// A range gains a replica on a node that joined later: the new replica is created on
/// demand when the leader's messages arrive, brought up by a snapshot, promoted, and holds
/// the same data; another replica is then removed (and destroyed on its node), writes go on,
/// and the removed node is added back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_added_on_a_new_node_by_snapshot_and_another_removed() {
    use shoal_consensus::{ConfChange, LearnerKind};
    use shoal_store::{Comparison, Store};
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.put_numbered("e", 0..40, b"1").await;
    let dir = tempfile::tempdir().unwrap();
    let fourth = Store::open(common::config(n(4), dir.path())).await.unwrap();
    fourth.join(vec![cluster.addrs[0]]).await.unwrap();
    let descriptor = cluster.descriptor(b"e").await.unwrap();
    let leader = cluster.leader_of(&descriptor).unwrap();
    cluster
        .store(leader)
        .change_replicas(
            FIRST_RANGE,
            ConfChange::AddNode {
                node: n(4),
                kind: LearnerKind::Promotable,
            },
        )
        .await
        .unwrap();
    wait_for("the new replica to catch up", async || {
        fourth.engine().get(FIRST_RANGE, b"e039").ok()?.map(|_| ())
    })
    .await;
    wait_for("the promotion to be taken", async || {
        cluster
            .store(leader)
            .change_replicas(FIRST_RANGE, ConfChange::PromoteLearner(n(4)))
            .await
            .ok()
    })
    .await;
    let comparison = cluster
        .compare_at_one_index(leader, FIRST_RANGE, n(4))
        .await;
    assert!(
        matches!(comparison, Comparison::Equal { .. }),
        "{comparison:?}"
    );
    // The descriptor shows four voters at a new generation.
    let after = cluster
        .store(leader)
        .descriptors()
        .into_iter()
        .find(|d| d.id == FIRST_RANGE)
        .unwrap();
    assert_eq!(after.voters().count(), 4);
    assert!(after.generation > descriptor.generation);
    // A replica leaves; writes go on.
    let leaving = (1..=3).map(n).find(|&id| id != leader).unwrap();
    cluster
        .store(leader)
        .change_replicas(FIRST_RANGE, ConfChange::RemoveNode(leaving))
        .await
        .unwrap();
    cluster
        .request(b"e100", KvOp::put("e100", "2"))
        .await
        .unwrap();
    wait_for("the new replica to apply the write", async || {
        fourth.engine().get(FIRST_RANGE, b"e100").ok()?.map(|_| ())
    })
    .await;
    // The removed replica is destroyed: no group, no data; its span is free again.
    let removed = cluster.store(leaving).clone();
    wait_for("the removed replica to be destroyed", async || {
        (removed.descriptors().iter().all(|d| d.id != FIRST_RANGE)
            && removed.engine().range(FIRST_RANGE).is_err())
        .then_some(())
    })
    .await;
    assert!(removed.status(FIRST_RANGE).await.is_err());
    // Added back (a newer generation), it hosts the range again, from a snapshot.
    let leader = wait_for("a leader of range 1", async || {
        (1..=4)
            .map(n)
            .filter(|&id| id != n(4))
            .find(|&id| cluster.store(id).leader(FIRST_RANGE) == Some(id))
            .or_else(|| (fourth.leader(FIRST_RANGE) == Some(n(4))).then_some(n(4)))
    })
    .await;
    let leader_store = if leader == n(4) {
        fourth.clone()
    } else {
        cluster.store(leader).clone()
    };
    wait_for("the replica to be added back", async || {
        leader_store
            .change_replicas(
                FIRST_RANGE,
                ConfChange::AddNode {
                    node: leaving,
                    kind: LearnerKind::Promotable,
                },
            )
            .await
            .ok()
    })
    .await;
    wait_for("the re-added replica to catch up", async || {
        removed.engine().get(FIRST_RANGE, b"e100").ok()?.map(|_| ())
    })
    .await;
    fourth.shutdown().await;
    cluster.shutdown().await;
}

//! Size splits under load: 50 MB written to three stores with a 1 MiB split threshold.

mod common;

use common::{n, wait_for, Cluster};
use shoal_core::{RangeDescriptor, RangeId};
use shoal_store::{Comparison, KvOp, KvResponse, META_RANGE};
use std::collections::BTreeMap;
use std::time::Duration;

/// 50 MB in 4 KiB values through a router that follows `RangeKeyMismatch` and `NotLeader`:
/// the ranges split by size as they grow, every key stays readable, and every range's
/// replicas end at the same applied index with the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_split_into_ranges_that_all_serve_and_agree() {
    let cluster = Cluster::start(3, |config| {
        config.split_policy.split_bytes = 1 << 20;
        config.split_policy.merge_bytes = 256 << 10;
        config.split_policy.cooldown = Duration::from_millis(500);
        config.split_check_interval = Duration::from_millis(200);
    })
    .await;
    const KEYS: usize = 12_800; // × 4 KiB = 50 MiB
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..KEYS)
        .map(|i| {
            let key = format!("user/{i:06}").into_bytes();
            let mut value = vec![(i % 251) as u8; 4096];
            value[..8].copy_from_slice(&(i as u64).to_le_bytes());
            (key, value)
        })
        .collect();
    cluster.put_sorted(&pairs, 32).await;

    // Splits keep up with the data: about 50 ranges of 1 MiB or less once the last ones
    // happened.
    let ranges = wait_for("the ranges to settle under the threshold", async || {
        let descriptors = cluster.store(n(1)).descriptors();
        let engine = cluster.store(n(1)).engine();
        let largest = descriptors
            .iter()
            .filter_map(|d| engine.range(d.id).ok())
            .map(|r| r.stats.live_bytes)
            .max()?;
        (largest <= 1 << 20 && descriptors.len() >= 40).then_some(descriptors.len())
    })
    .await;
    assert!(ranges >= 40, "{ranges} ranges");

    // Every key reads back through the router, from whichever range now holds it.
    for i in (0..KEYS).step_by(97).chain([KEYS - 1]) {
        let (key, value) = &pairs[i];
        match cluster.request(key, KvOp::get(key.clone())).await.unwrap() {
            KvResponse::Value(Some(v)) => assert_eq!(&v.value, value, "key {i}"),
            other => panic!("key {i}: {other:?}"),
        }
    }

    // Every range's replicas hold the same data at one applied index, by Merkle check over
    // the node transport (and, for the record, by a full scan).
    let descriptors = cluster.store(n(1)).descriptors();
    for d in &descriptors {
        for peer in [n(2), n(3)] {
            let comparison = cluster.compare_at_one_index(n(1), d.id, peer).await;
            assert!(
                matches!(comparison, Comparison::Equal { .. }),
                "range {} on {peer}: {comparison:?}",
                d.id
            );
        }
        if d.id == META_RANGE {
            // The meta range keeps changing as leaders record descriptors: compared at one
            // applied index above, not by scans at different moments.
            continue;
        }
        let contents: BTreeMap<u64, Vec<_>> = (1..=3)
            .map(|i| {
                let engine = cluster.store(n(i)).engine();
                (
                    i,
                    engine
                        .scan(d.id, &shoal_storage::Scan::all(100_000))
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(contents[&1], contents[&2], "range {}", d.id);
        assert_eq!(contents[&1], contents[&3], "range {}", d.id);
    }
    assert_eq!(cluster.store(n(1)).replica_mismatches(), 0);
    let total: usize = descriptors
        .iter()
        .filter(|d| d.id != META_RANGE)
        .map(|d| {
            cluster
                .store(n(1))
                .engine()
                .range(d.id)
                .unwrap()
                .stats
                .live_keys as usize
        })
        .sum();
    assert_eq!(total, KEYS);

    // The meta range comes to record every range as its replicas applied it.
    let hosted: BTreeMap<RangeId, RangeDescriptor> = descriptors
        .into_iter()
        .map(|mut d| {
            d.leader_hint = None;
            (d.id, d)
        })
        .collect();
    wait_for("the meta range to record every range", async || {
        let recorded: BTreeMap<RangeId, RangeDescriptor> = cluster
            .store(n(1))
            .meta_descriptors()
            .await
            .ok()?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        (recorded == hosted).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

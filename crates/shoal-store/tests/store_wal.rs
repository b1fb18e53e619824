//! A bounded log: after many megabytes through three real nodes, every node's WAL shrinks to
//! the bound [`StoreConfig::log_compaction_interval`] states (about two segments), the quiet
//! meta range included; a restart then replays only that, and loses nothing.

mod common;

use common::{n, wait_for, Cluster};
use shoal_store::{KvOp, KvResponse, StoreConfig};
use std::time::Duration;

/// Segments of 1 MiB, so that a few dozen megabytes make many of them.
const SEGMENT: u64 = 1 << 20;

fn small_segments(config: &mut StoreConfig) {
    config.wal.segment_bytes = SEGMENT;
    config.log_compaction_interval = Duration::from_millis(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_within_a_few_segments_and_a_restart_replays_only_them() {
    let mut cluster = Cluster::start(3, small_segments).await;
    // 24 MiB of 64 KiB values, eight to a batch, into the first range (the meta range has
    // its few entries from the start and takes no more: before compaction was asked for,
    // they kept the first segment and every one after it).
    let value = vec![b'v'; 64 << 10];
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..384)
        .map(|i| (format!("w{i:04}").into_bytes(), value.clone()))
        .collect();
    cluster.put_sorted(&pairs, 8).await;

    // Every node's WAL comes down to at most two segments, and their bytes to at most two
    // segments plus one batch (a segment ends after the record that filled it).
    let bound = 2 * SEGMENT + (600 << 10);
    for i in 1..=3 {
        let store = cluster.store(n(i)).clone();
        wait_for("the WAL to shrink", async || {
            let report = store.report(None).await;
            (report.wal_segments <= 2 && report.wal_bytes <= bound).then_some(())
        })
        .await;
    }

    // A restart of every node replays what is left and loses nothing.
    for i in 1..=3 {
        cluster.kill(n(i)).await;
    }
    for i in 1..=3 {
        cluster.restart(n(i)).await;
    }
    for key in ["w0000", "w0191", "w0383"] {
        let got = cluster
            .request(key.as_bytes(), KvOp::get(key))
            .await
            .unwrap();
        match got {
            KvResponse::Value(Some(v)) => assert_eq!(v.value, value, "{key}"),
            other => panic!("{key}: {other:?}"),
        }
    }
    for i in 1..=3 {
        let report = cluster.store(n(i)).report(None).await;
        assert!(
            report.wal_segments <= 3,
            "node {i} reopened with {} segments",
            report.wal_segments
        );
    }
    cluster.shutdown().await;
}

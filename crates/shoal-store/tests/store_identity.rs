//! No amnesia: a node whose data directory is wiped and which restarts with its old id (and
//! `--bootstrap`, as a node started the same way every time does) does not bootstrap again,
//! is refused by the meta range's store binding, hosts nothing, and its votes do not count:
//! with it and one other node up, the range has no leader rather than one that could have
//! lost a committed write. Nothing acknowledged is lost.

mod common;

use common::{n, wait_for, Cluster};
use shoal_core::NodeId;
use shoal_store::{KvOp, KvResponse, StoreError, FIRST_RANGE};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_with_its_old_id_is_refused_and_nothing_is_lost() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let written = cluster.put_numbered("a", 0..30, b"kept").await;
    // Every node's store is bound (each asks the meta range within a second or so).
    for i in 1..=3 {
        let store = cluster.store(n(i)).clone();
        wait_for("the store to be bound", async || {
            let report = store.report(None).await;
            (report.store_bound && report.refused.is_none() && report.hosted > 0).then_some(())
        })
        .await;
    }
    let old_store = cluster.store(n(3)).report(None).await.store_id;

    // Node 3 loses its disk and comes back with the same id, asked to bootstrap.
    cluster.kill(n(3)).await;
    let dir = cluster.dirs[2].path().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    cluster.restart(n(3)).await;
    let wiped = cluster.store(n(3)).clone();
    let voters: Vec<NodeId> = (1..=3).map(n).collect();
    assert!(matches!(
        wiped.bootstrap(&voters).await,
        Err(StoreError::ClusterExists)
    ));
    let report = wait_for("the wiped store to be refused", async || {
        let report = wiped.report(None).await;
        report.refused.is_some().then_some(report)
    })
    .await;
    assert_ne!(report.store_id, old_store);
    assert!(
        report.refused.as_deref().unwrap().contains("data is gone"),
        "{report:?}"
    );

    // The cluster goes on with nodes 1 and 2; node 3 hosts nothing, however long it waits.
    cluster
        .request(b"b000", KvOp::put("b000", "after"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(wiped.descriptors().is_empty(), "{:?}", wiped.descriptors());

    // With node 3 and only one other up, its votes must not elect anyone: stop the leader
    // of range 1 and check that the survivor does not come to lead through node 3.
    let leader = loop {
        if let Some(l) = [n(1), n(2)]
            .into_iter()
            .find(|&id| cluster.store(id).leader(FIRST_RANGE) == Some(id))
        {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let survivor = if leader == n(1) { n(2) } else { n(1) };
    cluster.kill(leader).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_ne!(
        cluster.store(survivor).leader(FIRST_RANGE),
        Some(survivor),
        "the survivor was elected with the wiped node's vote"
    );
    assert!(wiped.descriptors().is_empty());

    // Back to two real replicas: everything acknowledged is there.
    cluster.restart(leader).await;
    for key in written.iter().map(String::as_str).chain(["b000"]) {
        let got = cluster
            .request(key.as_bytes(), KvOp::get(key))
            .await
            .unwrap();
        assert!(matches!(got, KvResponse::Value(Some(_))), "{key}: {got:?}");
    }
    cluster.shutdown().await;
}

/// The second line of defence: a wiped node that bootstraps anyway (it asked nobody: it
/// knew no peer when it started) publishes its new store in membership, and the other nodes
/// refuse its Raft traffic, so the replicas it made up cannot vote with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_that_bootstraps_anyway_gets_no_say() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let written = cluster.put_numbered("c", 0..20, b"kept").await;
    for i in 1..=3 {
        let store = cluster.store(n(i)).clone();
        wait_for("the store to be bound", async || {
            store.report(None).await.store_bound.then_some(())
        })
        .await;
    }
    cluster.kill(n(3)).await;
    let dir = cluster.dirs[2].path().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = common::config(n(3), &dir);
    config.listen = cluster.addrs[2];
    let wiped = shoal_store::Store::open(config).await.unwrap();
    let voters: Vec<NodeId> = (1..=3).map(n).collect();
    wiped.bootstrap(&voters).await.unwrap();
    wiped.join(vec![cluster.addrs[0]]).await.unwrap();
    cluster.stores[2] = Some(wiped.clone());
    // Give membership time to carry its store to the others, and them to read bindings.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let leader = loop {
        if let Some(l) = [n(1), n(2)]
            .into_iter()
            .find(|&id| cluster.store(id).leader(FIRST_RANGE) == Some(id))
        {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let survivor = if leader == n(1) { n(2) } else { n(1) };
    cluster.kill(leader).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_ne!(
        cluster.store(survivor).leader(FIRST_RANGE),
        Some(survivor),
        "the survivor was elected with the wiped node's vote"
    );
    cluster.restart(leader).await;
    for key in &written {
        let got = cluster
            .request(key.as_bytes(), KvOp::get(key.as_str()))
            .await
            .unwrap();
        assert!(matches!(got, KvResponse::Value(Some(_))), "{key}: {got:?}");
    }
    cluster.shutdown().await;
}

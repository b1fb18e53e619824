//! The meta range: it records every range's descriptor (guarded by generation), allocates
//! range ids, registers nodes, answers lookups gossip has not covered, and keeps the system
//! keys out of clients' reach. Real fjall and TCP on loopback.

mod common;

use common::{n, wait_for, Cluster};
use shoal_core::{ErrorCode, RangeDescriptor, RangeId};
use shoal_store::{
    is_system_key, meta_keys, user_keys, KvOp, KvRequest, KvResponse, KvRpc, MetaAnswer, MetaOp,
    MetaRequest, MetaResponse, MetaRpc, Store, FIRST_RANGE, META_RANGE, RANGE_INIT_INDEX,
};
use shoal_transport::{RpcClient, RpcTransportExt, TransportConfig};
use std::collections::BTreeMap;
use std::time::Duration;

/// Descriptors by id, without leader hints (the meta range records none).
fn by_id(
    descriptors: impl IntoIterator<Item = RangeDescriptor>,
) -> BTreeMap<RangeId, RangeDescriptor> {
    descriptors
        .into_iter()
        .map(|mut d| {
            d.leader_hint = None;
            (d.id, d)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meta_range_records_ranges_allocates_ids_and_registers_nodes() {
    let cluster = Cluster::start(3, |_| {}).await;
    let store = cluster.store(n(1));

    // Bootstrap recorded the meta range and the first user range.
    let recorded = by_id(store.meta_descriptors().await.unwrap());
    assert_eq!(
        recorded.keys().copied().collect::<Vec<_>>(),
        vec![META_RANGE, FIRST_RANGE]
    );
    assert!(is_system_key(recorded[&META_RANGE].range.start()));

    // Two splits: their right halves get ids from the allocator, in order, and the meta range
    // comes to record both halves of each.
    let mut rights = Vec::new();
    for at in ["g", "p"] {
        let descriptor = cluster.descriptor(at.as_bytes()).await.unwrap();
        let leader = wait_for("a leader", async || cluster.leader_of(&descriptor)).await;
        let (_, right) = cluster
            .store(leader)
            .split(descriptor.id, Some(at.as_bytes().to_vec()))
            .await
            .unwrap();
        rights.push(right.id);
    }
    assert_eq!(rights, vec![RangeId::new(2), RangeId::new(3)]);
    let hosted = wait_for("every node to host four ranges", async || {
        let hosted = by_id(store.descriptors());
        (hosted.len() == 4).then_some(hosted)
    })
    .await;
    wait_for(
        "the meta range to record every range as hosted",
        async || {
            let recorded = by_id(store.meta_descriptors().await.ok()?);
            (recorded == hosted).then_some(())
        },
    )
    .await;

    // Every node registered, at the address it listens on.
    let nodes = wait_for("every node to register", async || {
        let nodes = store.registered_nodes().await.ok()?;
        (nodes.len() == 3).then_some(nodes)
    })
    .await;
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node.id, n(i as u64 + 1));
        assert_eq!(node.addr, cluster.addrs[i]);
    }

    // An older descriptor recorded late changes nothing: generation guards the record.
    let mut stale = hosted[&FIRST_RANGE].clone();
    stale.generation = shoal_core::Generation::new(0);
    let answer = call_meta(
        &cluster,
        &member_client(),
        MetaRequest::Apply(MetaOp::Record(vec![stale])),
    )
    .await;
    assert_eq!(
        answer,
        Ok(MetaResponse::Applied(MetaAnswer::Recorded { changed: 0 }))
    );
    let recorded = by_id(store.meta_descriptors().await.unwrap());
    assert_eq!(recorded, hosted);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_knows_no_ranges_asks_the_meta_range() {
    let cluster = Cluster::start(3, |_| {}).await;
    // A store that has not joined: no gossip, no ranges; it knows one peer's address.
    let dir = tempfile::tempdir().unwrap();
    let stranger = Store::open(common::config(n(9), dir.path())).await.unwrap();
    stranger.set_peer(n(1), cluster.addrs[0]);
    let found = stranger.lookup(b"some key").await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id, FIRST_RANGE);
    // The answer is remembered: with the cluster gone, the next lookup still answers.
    cluster.shutdown().await;
    assert_eq!(stranger.lookup(b"other").await.unwrap()[0].id, FIRST_RANGE);
    stranger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_keys_and_bad_meta_operations_are_refused() {
    let cluster = Cluster::start(3, |_| {}).await;
    // A client write of a system key, through the range that would hold it: refused.
    let meta = cluster.descriptor(b"\xffd").await.unwrap();
    assert_eq!(meta.id, META_RANGE);
    let refused = cluster
        .request_in(&meta, KvOp::put(b"\xffnnode".to_vec(), "forged"))
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidRequest, "{refused}");
    let first = cluster.descriptor(b"a").await.unwrap();
    let refused = cluster
        .request_in(&first, KvOp::put(b"\xff".to_vec(), "x"))
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidRequest, "{refused}");

    // A scan to the end of the key space stops at the user keys' end.
    cluster
        .request(b"zz", KvOp::put("zz", "last"))
        .await
        .unwrap();
    let scan = KvOp::Scan {
        start: b"z".to_vec(),
        end: None,
        limit: 100,
        reverse: false,
        consistency: Default::default(),
    };
    match cluster.request(b"z", scan).await.unwrap() {
        KvResponse::Entries { entries, resume } => {
            assert_eq!(entries.len(), 1);
            assert_eq!(resume, None, "the scan does not run on into the meta range");
        }
        other => panic!("{other:?}"),
    }

    // A router (not one of the cluster's nodes) may read the meta range but not change it.
    let outsider = call_meta(
        &cluster,
        &cluster.client,
        MetaRequest::Apply(MetaOp::AllocateRangeIds { count: 1 }),
    )
    .await;
    assert_eq!(outsider, Err(ErrorCode::InvalidRequest));
    assert!(matches!(
        call_meta(&cluster, &cluster.client, MetaRequest::Nodes).await,
        Ok(MetaResponse::Nodes(_))
    ));

    // A reverse scan with no end starts from the last user key, never from system keys.
    let reverse = KvOp::Scan {
        start: Vec::new(),
        end: None,
        limit: 1,
        reverse: true,
        consistency: Default::default(),
    };
    match cluster.request_in(&first, reverse).await.unwrap() {
        KvResponse::Entries { entries, .. } => {
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].key, b"zz");
        }
        other => panic!("{other:?}"),
    }

    // Malformed meta operations: a clear error, nothing recorded (an invalid descriptor is
    // refused as it decodes, the rest before they are proposed).
    let before = cluster.store(n(1)).meta_descriptors().await.unwrap();
    let mut bad = before[0].clone();
    bad.replicas.clear();
    for op in [
        MetaOp::Record(Vec::new()),
        MetaOp::Record(vec![bad]),
        MetaOp::AllocateRangeIds { count: 0 },
        MetaOp::AllocateRangeIds { count: 1 << 20 },
    ] {
        let answer = call_meta(&cluster, &member_client(), MetaRequest::Apply(op.clone())).await;
        assert!(
            matches!(
                &answer,
                Err(ErrorCode::InvalidRequest | ErrorCode::CorruptMessage)
            ),
            "{op:?}: {answer:?}"
        );
    }
    assert_eq!(
        cluster.store(n(1)).meta_descriptors().await.unwrap(),
        before
    );
    // The meta range itself does not split.
    let leader = wait_for("a meta leader", async || cluster.leader_of(&meta)).await;
    let refused = cluster
        .store(leader)
        .split(META_RANGE, Some(b"\xffm".to_vec()))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("does not split"), "{refused}");
    // Writes through KvRpc straight at the meta range, bypassing the router: refused.
    let request = KvRequest {
        range: META_RANGE,
        generation: meta.generation,
        op: KvOp::delete(b"\xffarange-id".to_vec()),
    };
    let refused = cluster
        .client
        .call::<KvRpc>(
            cluster.addrs[leader.get() as usize - 1],
            &request,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidRequest, "{refused}");
    cluster.shutdown().await;
}

/// A client that claims to be node 1: the transport does not authenticate the id a
/// connection announces, so a test can speak for a member.
fn member_client() -> RpcClient {
    RpcClient::new(n(1), None, TransportConfig::local()).unwrap()
}

/// Sends a meta request through `client` to whichever node leads the meta range, following
/// hints.
async fn call_meta(
    cluster: &Cluster,
    client: &RpcClient,
    request: MetaRequest,
) -> Result<MetaResponse, ErrorCode> {
    let mut target = 0usize;
    for _ in 0..100 {
        match client
            .call::<MetaRpc>(cluster.addrs[target], &request, Duration::from_secs(10))
            .await
        {
            Ok(answer) => return Ok(answer),
            Err(e) => match e.code {
                ErrorCode::NotLeader { hint: Some(hint) } => {
                    target = hint.node.get() as usize - 1;
                }
                ErrorCode::NotLeader { hint: None }
                | ErrorCode::Unavailable
                | ErrorCode::Unreachable => {
                    target = (target + 1) % cluster.addrs.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                code => return Err(code),
            },
        }
    }
    panic!("no meta leader answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_cut_short_by_a_crash_is_undone_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(n(1), dir.path());
    {
        // What a crash leaves after the engine ranges were made, before any log started.
        let engine =
            shoal_storage::Engine::open(dir.path().join("engine"), config.engine.clone()).unwrap();
        engine
            .create_range(META_RANGE, meta_keys(), RANGE_INIT_INDEX - 1)
            .unwrap();
        engine
            .create_range(FIRST_RANGE, user_keys(), RANGE_INIT_INDEX - 1)
            .unwrap();
        let mut batch = shoal_storage::WriteBatch::new();
        batch.put(b"\xffarange-id".to_vec(), 2u64.to_be_bytes().to_vec());
        engine.apply(META_RANGE, RANGE_INIT_INDEX, &batch).unwrap();
        engine.persist(shoal_storage::Durability::Sync).unwrap();
    }
    let store = Store::open(config).await.unwrap();
    assert!(
        store.descriptors().is_empty(),
        "the half bootstrap was undone"
    );
    store.bootstrap(&[n(1)]).await.unwrap();
    let recorded = store.meta_descriptors().await.unwrap();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert!(matches!(
        store.bootstrap(&[n(1)]).await,
        Err(shoal_store::StoreError::AlreadyBootstrapped)
    ));
    store.shutdown().await;
}

//! No poison pills: node RPCs that once failed a range's group or panicked every replica
//! (a write of the empty key, a split at a key the engine refuses, replica changes from
//! anyone) are refused before anything is proposed, over real sockets; the range then still
//! serves, and still does after every node restarts and replays its log.

mod common;

use common::{n, Cluster};
use shoal_consensus::{ConfChange, LearnerKind};
use shoal_core::{ErrorCode, NodeId};
use shoal_store::{
    ChangeReplicasRequest, ChangeReplicasRpc, Condition, KvOp, KvRequest, KvResponse, KvRpc,
    SplitRequest, SplitRpc, StoreConfig, FIRST_RANGE,
};
use shoal_transport::{Rpc, RpcClient, RpcTransport, RpcTransportExt, TransportConfig};
use std::time::Duration;

const CALL: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_node_rpcs_are_refused_and_the_range_still_serves() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.put_numbered("p", 0..5, b"v").await;
    let descriptor = cluster.descriptor(b"").await.unwrap();
    assert_eq!(descriptor.id, FIRST_RANGE);
    let leader = cluster.leader_of(&descriptor).unwrap();
    let addr = cluster.store(leader).addr();
    // A caller that claims to be one of the nodes (the transport believes the claim until
    // the node transport is authenticated), and one that does not.
    let member = RpcClient::new(n(2), None, TransportConfig::local()).unwrap();
    let stranger = &cluster.client;

    // The body the issue found: Put { key "", value "x" } for range 1, generation 1.
    let raw = vec![0x01, 0x01, 0x02, 0x01, 0x00, 0x00, 0x01, 0x78, 0x00];
    let err = member
        .call_raw(addr, KvRpc::METHOD, raw, CALL)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{err}");

    // Every write of the empty key, and its read.
    let kv = |op| KvRequest {
        range: descriptor.id,
        generation: descriptor.generation,
        op,
    };
    for op in [
        KvOp::put("", "x"),
        KvOp::delete(""),
        KvOp::cas("", Condition::Absent, Some(b"x".to_vec())),
        KvOp::cas("", Condition::Version(1), None),
        KvOp::get(""),
    ] {
        let err = member
            .call::<KvRpc>(addr, &kv(op.clone()), CALL)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest, "{op:?}: {err}");
    }

    // Splits at keys the engine refuses, from a member: refused before an id is allocated.
    let max_key = StoreConfig::local(n(1), "/unused").engine.max_key_len;
    for (at, code) in [
        (vec![b'k'; max_key + 1], ErrorCode::TooLarge),
        (Vec::new(), ErrorCode::InvalidRequest),
        (descriptor.range.start().to_vec(), ErrorCode::InvalidRequest),
        (vec![0xff, 0xff], ErrorCode::InvalidRequest),
    ] {
        let split = SplitRequest {
            range: descriptor.id,
            at: Some(at.clone()),
        };
        let err = member
            .call::<SplitRpc>(addr, &split, CALL)
            .await
            .unwrap_err();
        assert_eq!(err.code, code, "split at {} bytes: {err}", at.len());
    }

    // Splits and replica changes from a caller that is not a node: refused.
    let split = SplitRequest {
        range: descriptor.id,
        at: Some(b"p002".to_vec()),
    };
    let err = stranger
        .call::<SplitRpc>(addr, &split, CALL)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{err}");
    let removal = ChangeReplicasRequest {
        range: descriptor.id,
        change: ConfChange::RemoveNode(n(3)),
    };
    let err = stranger
        .call::<ChangeReplicasRpc>(addr, &removal, CALL)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{err}");
    // A learner on a node the cluster does not know: refused, even from a member.
    let unknown = ChangeReplicasRequest {
        range: descriptor.id,
        change: ConfChange::AddNode {
            node: NodeId::new(77),
            kind: LearnerKind::Promotable,
        },
    };
    let err = member
        .call::<ChangeReplicasRpc>(addr, &unknown, CALL)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{err}");
    let now = cluster.descriptor(b"").await.unwrap();
    assert_eq!(
        (now.generation, now.replicas.len()),
        (descriptor.generation, 3)
    );

    // The range serves, and after every node restarts (replaying its log) it still does.
    put_and_read(&cluster, b"after-1").await;
    for id in (1..=3).map(n) {
        cluster.kill(id).await;
    }
    for id in (1..=3).map(n) {
        cluster.restart(id).await;
    }
    put_and_read(&cluster, b"after-2").await;
    let got = cluster.request(b"p001", KvOp::get("p001")).await.unwrap();
    assert!(matches!(got, KvResponse::Value(Some(_))), "{got:?}");
    cluster.shutdown().await;
}

async fn put_and_read(cluster: &Cluster, key: &[u8]) {
    cluster
        .request(key, KvOp::put(key.to_vec(), "ok"))
        .await
        .unwrap();
    let got = cluster.request(key, KvOp::get(key.to_vec())).await.unwrap();
    match got {
        KvResponse::Value(Some(v)) => assert_eq!(v.value, b"ok"),
        other => panic!("{other:?}"),
    }
}

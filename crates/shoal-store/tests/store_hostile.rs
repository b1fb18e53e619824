//! Forged and garbled node RPCs: requests for ranges the node does not hold, and, on fixed
//! seeds, every store method fed random bytes and mutations of honest requests. Each gets an
//! answer (an error code for what does not decode or does not fit), nothing panics, the
//! store goes on serving, and the replicas stay equal.

mod common;

use common::{n, Cluster};
use shoal_core::{ErrorCode, Generation, RangeId};
use shoal_store::{
    Comparison, Condition, Consistency, DigestRpc, KvOp, KvRequest, KvResponse, KvRpc,
    LookupRequest, LookupRpc, SplitRequest, SplitRpc, StatusRpc,
};
use shoal_transport::{Rpc, RpcTransport, RpcTransportExt};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_garbled_requests_get_errors_and_change_nothing_they_should_not() {
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.put_numbered("h", 0..20, b"v").await;
    let descriptor = cluster.descriptor(b"h").await.unwrap();
    let leader = cluster.leader_of(&descriptor).unwrap();
    let addr = cluster.store(leader).addr();

    // A range this node does not hold: a clear error, nothing written.
    let absent = KvRequest {
        range: RangeId::new(999),
        generation: Generation::new(1),
        op: KvOp::put("h000", "forged"),
    };
    let err = cluster
        .client
        .call::<KvRpc>(addr, &absent, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::RangeNotFound {
            range: RangeId::new(999)
        }
    );

    // Honest requests of every kind, encoded, as the corpus.
    let kv = |op| KvRequest {
        range: descriptor.id,
        generation: descriptor.generation,
        op,
    };
    let encode = |r: &KvRequest| shoal_core::codec::encode(r).unwrap();
    let kv_corpus: Vec<Vec<u8>> = vec![
        encode(&kv(KvOp::get("h001"))),
        encode(&kv(KvOp::put("h002", "x"))),
        encode(&kv(KvOp::delete("h003"))),
        encode(&kv(KvOp::cas(
            "h004",
            Condition::Version(1),
            Some(b"y".to_vec()),
        ))),
        encode(&kv(KvOp::Scan {
            start: b"h".to_vec(),
            end: Some(b"i".to_vec()),
            limit: 5,
            reverse: true,
            consistency: Consistency::Stale,
        })),
    ];
    let lookup_corpus = vec![shoal_core::codec::encode(&LookupRequest {
        key: b"h005".to_vec(),
    })
    .unwrap()];
    let split_corpus = vec![shoal_core::codec::encode(&SplitRequest {
        range: descriptor.id,
        at: Some(b"zz".to_vec()),
    })
    .unwrap()];
    let status_corpus = vec![shoal_core::codec::encode(&Some(descriptor.id)).unwrap()];
    let digest_corpus = vec![shoal_core::codec::encode(&descriptor.id).unwrap()];
    let methods: Vec<(shoal_core::MethodId, &Vec<Vec<u8>>)> = vec![
        (KvRpc::METHOD, &kv_corpus),
        (LookupRpc::METHOD, &lookup_corpus),
        (SplitRpc::METHOD, &split_corpus),
        (StatusRpc::METHOD, &status_corpus),
        (DigestRpc::METHOD, &digest_corpus),
    ];
    let base = shoal_sim::seed_from_env_or(0x5EED_0180);
    let mut answered = 0u64;
    let mut refused = 0u64;
    for (m, (method, corpus)) in methods.iter().enumerate() {
        let mut mutator = shoal_sim::Mutator::new(base + m as u64);
        for case in 0..150 {
            let body = if case % 4 == 0 {
                mutator.next_input(corpus)
            } else {
                let mut body = corpus[case % corpus.len()].clone();
                mutator.mutate(&mut body, corpus);
                body
            };
            match cluster
                .client
                .call_raw(addr, *method, body, Duration::from_secs(10))
                .await
            {
                Ok(_) => answered += 1,
                Err(e) => {
                    assert!(
                        !matches!(e.code, ErrorCode::Internal),
                        "seed {base} method {m} case {case}: {e}"
                    );
                    refused += 1;
                }
            }
        }
    }
    assert!(
        refused > 0 && answered > 0,
        "refused {refused}, answered {answered}"
    );

    // The store goes on serving, and the replicas agree.
    let got = cluster.request(b"h000", KvOp::get("h000")).await.unwrap();
    assert!(matches!(got, KvResponse::Value(Some(_))), "{got:?}");
    cluster
        .request(b"h99", KvOp::put("h99", "after"))
        .await
        .unwrap();
    for descriptor in cluster.store(leader).descriptors() {
        for peer in (1..=3).map(n).filter(|&p| p != leader) {
            let comparison = cluster
                .compare_at_one_index(leader, descriptor.id, peer)
                .await;
            assert!(
                matches!(comparison, Comparison::Equal { .. }),
                "{comparison:?}"
            );
        }
    }
    cluster.shutdown().await;
}

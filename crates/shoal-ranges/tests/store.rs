//! The range store end to end: three stores on loopback TCP, real fjall and WALs in temp
//! dirs, a client that routes like a gateway.

mod common;

use common::{n, wait_for, Cluster};
use shoal_core::ErrorCode;
use shoal_ranges::store::{
    Acks, Consistency, Expect, KvOp, KvResponse, Versioned, WriteOp, WriteOutcome, FIRST_RANGE,
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
            KvOp::cas("apple", Expect::Version(version + 100), Some(b"x".to_vec())),
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
                Expect::Value(b"red".to_vec()),
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
            KvOp::cas("pear", Expect::Absent, Some(b"new".to_vec())),
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
            KvOp::cas("plum", Expect::Version(1), Some(b"x".to_vec())),
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
    let request = shoal_ranges::store::KvRequest {
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
        .call::<shoal_ranges::store::KvRpc>(
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
    cluster.shutdown().await;
}

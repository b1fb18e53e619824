//! Concurrent register operations while the range splits twice, recorded as a history and
//! checked with shoal-sim's linearizability checker.

mod common;

use common::{n, wait_for, Cluster};
use shoal_core::ErrorCode;
use shoal_sim::linearizability::{check, History, Outcome, RegisterOp, Verdict};
use shoal_store::{Condition, KvOp, KvRequest, KvResponse, KvRpc, WriteOutcome, FIRST_RANGE};
use shoal_transport::RpcTransportExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEYS: u64 = 6;

fn key(k: u64) -> Vec<u8> {
    format!("reg{k}").into_bytes()
}

fn parse(value: &[u8]) -> u64 {
    std::str::from_utf8(value).unwrap().parse().unwrap()
}

/// Sends `op` the way a Jepsen client does: retries only while the request certainly did
/// not take effect (wrong node, stale descriptor); anything else ends it (`None`: unknown).
async fn send(cluster: &Cluster, key: &[u8], op: KvOp) -> Option<KvResponse> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut target = None;
    while Instant::now() < deadline {
        let descriptor = cluster.descriptor(key).await?;
        let node = target
            .or_else(|| cluster.leader_of(&descriptor))
            .unwrap_or(descriptor.replicas[0].node);
        let request = KvRequest {
            range: descriptor.id,
            generation: descriptor.generation,
            op: op.clone(),
        };
        let addr = cluster.addrs[(node.get() - 1) as usize];
        match cluster
            .client
            .call::<KvRpc>(addr, &request, Duration::from_secs(5))
            .await
        {
            Ok(response) => return Some(response),
            Err(e) => match e.code {
                ErrorCode::NotLeader { hint } => target = hint.map(|h| h.node),
                ErrorCode::RangeKeyMismatch { .. } | ErrorCode::RangeNotFound { .. } => {
                    target = None
                }
                _ => return None,
            },
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// One client: `ops` random operations on the registers, each recorded before it is sent
/// and after it ends.
async fn client(cluster: Arc<Cluster>, history: Arc<Mutex<History>>, process: u64, ops: u64) {
    let mut state = process.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for i in 0..ops {
        let id = process * 1_000_000 + i;
        let k = next() % KEYS;
        let value = id;
        let (register_op, kv_op) = match next() % 4 {
            0 | 1 => (RegisterOp::Read, KvOp::get(key(k))),
            2 => (
                RegisterOp::Write(value),
                KvOp::put(key(k), value.to_string()),
            ),
            _ => {
                // Compare-and-set from the value this client last saw (or from absence).
                let expected = seen.get(&k).copied();
                let expect = match expected {
                    Some(v) => Condition::Value(v.to_string().into_bytes()),
                    None => Condition::Absent,
                };
                (
                    RegisterOp::Cas {
                        expected,
                        new: Some(value),
                    },
                    KvOp::cas(key(k), expect, Some(value.to_string().into_bytes())),
                )
            }
        };
        history
            .lock()
            .unwrap()
            .invoke(id, process, format!("reg{k}"), register_op)
            .unwrap();
        let outcome = match (register_op, send(&cluster, &key(k), kv_op).await) {
            (RegisterOp::Read, Some(KvResponse::Value(v))) => {
                Outcome::Read(v.map(|v| parse(&v.value)))
            }
            (RegisterOp::Read, _) => Outcome::Failed,
            (RegisterOp::Write(_), Some(KvResponse::Written(_))) => Outcome::Written,
            (RegisterOp::Cas { .. }, Some(KvResponse::Written(o))) => {
                Outcome::Swapped(matches!(o[..], [WriteOutcome::Written { .. }]))
            }
            (_, _) => Outcome::Unknown,
        };
        match outcome {
            Outcome::Read(Some(v)) => {
                seen.insert(k, v);
            }
            Outcome::Written | Outcome::Swapped(true) => {
                seen.insert(k, value);
            }
            _ => {}
        }
        if outcome != Outcome::Unknown {
            history.lock().unwrap().complete(id, outcome).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_register_operations_during_splits_are_linearizable() {
    let cluster = Arc::new(Cluster::start(3, |_| {}).await);
    let history = Arc::new(Mutex::new(History::new(None)));
    let clients: Vec<_> = (1..=6)
        .map(|p| tokio::spawn(client(cluster.clone(), history.clone(), p, 200)))
        .collect();
    // Two splits while the clients run, between the registers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leader = wait_for("a leader", async || cluster.store(n(1)).leader(FIRST_RANGE)).await;
    cluster
        .store(leader)
        .split(FIRST_RANGE, Some(b"reg2".to_vec()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leader = wait_for("a leader", async || cluster.store(n(1)).leader(FIRST_RANGE)).await;
    cluster
        .store(leader)
        .split(FIRST_RANGE, Some(b"reg1".to_vec()))
        .await
        .unwrap();
    let splits_done = Instant::now();
    let mut finished_after_splits = 0;
    for c in clients {
        c.await.unwrap();
        finished_after_splits += usize::from(Instant::now() > splits_done);
    }
    assert!(
        finished_after_splits > 0,
        "the splits happened while clients ran"
    );
    wait_for("every node to apply both splits", async || {
        (1..=3)
            .all(|i| cluster.store(n(i)).descriptors().len() == 4)
            .then_some(())
    })
    .await;
    let history = history.lock().unwrap().clone();
    let completed = history
        .operations()
        .iter()
        .filter(|o| o.completed.is_some())
        .count();
    assert!(completed > 200, "only {completed} operations completed");
    match check(&history, 50_000_000) {
        Verdict::Linearizable => {}
        other => panic!("{other:?}\n{}", history.to_text()),
    }
    Arc::try_unwrap(cluster).ok().unwrap().shutdown().await;
}

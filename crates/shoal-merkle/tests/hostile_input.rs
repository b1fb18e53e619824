//! Hostile input to Merkle sync: random bytes and mutations of real requests and answers
//! (recorded from honest reconciling and check sessions), on fixed seeds. A responder answers
//! or refuses every request it decodes; a session takes or refuses every answer; neither
//! panics (overflow checks are on in tests), and a session never stores an item that neither
//! replica held.

use shoal_core::{HlcTimestamp, NodeId};
use shoal_merkle::*;
use std::collections::BTreeSet;

fn stamp(ms: u64, node: u64) -> HlcTimestamp {
    HlcTimestamp {
        physical_ms: ms,
        logical: 0,
        node: NodeId::new(node),
    }
}

/// Two replicas of 300 items that differ in a dozen keys each way.
fn replicas() -> (MemStore, MemStore) {
    let shape = TreeShape::new(2, 4).unwrap();
    let rule = ConflictRule::LastWriterWins;
    let mut a = MemStore::new(rule, MerkleTree::new(shape));
    let mut b = MemStore::new(rule, MerkleTree::new(shape));
    for i in 0..300u32 {
        let item = Item::new(format!("k{i}"), "v", stamp(1, 1));
        a.put(item.clone());
        b.put(item);
    }
    for i in 0..12u32 {
        a.put(Item::new(format!("k{}", i * 7), "newer on a", stamp(2, 1)));
        b.put(Item::new(format!("only-b-{i}"), "b", stamp(2, 2)));
    }
    (a, b)
}

/// Every request and answer of an honest reconciling session and an honest check session.
fn recorded() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut requests, mut responses) = (Vec::new(), Vec::new());
    let config = SyncConfig::default();
    let sessions = [
        SyncSession::new(config.clone()),
        SyncSession::check(config.clone(), usize::MAX),
    ];
    for mut session in sessions {
        let (mut a, mut b) = replicas();
        let mut responder = Responder::new(NodeId::new(2), config.clone());
        for _ in 0..10_000 {
            match session.poll(&mut a) {
                Step::Send(request) => {
                    requests.push(request.encode().unwrap());
                    let response = responder.respond(&mut b, request);
                    responses.push(response.encode().unwrap());
                    session.handle_response(&mut a, response).unwrap();
                }
                Step::Done(_) => break,
            }
        }
    }
    (requests, responses)
}

fn keys_and_values(store: &MemStore) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
    store
        .iter()
        .map(|i| (i.key.clone(), i.value.clone()))
        .collect()
}

#[test]
fn responders_answer_or_refuse_mutated_requests() {
    let (requests, _) = recorded();
    assert!(requests.len() > 5, "{} requests", requests.len());
    for seed in shoal_sim::seeds_from_env_or(0x5EED_0301, 4) {
        let mut mutator = shoal_sim::Mutator::new(seed);
        let (_, mut b) = replicas();
        let mut responder = Responder::new(NodeId::new(2), SyncConfig::default());
        let mut read_only = Responder::read_only(NodeId::new(2), SyncConfig::default());
        let before = keys_and_values(&b);
        for case in 0..5_000 {
            let input = mutator.next_input(&requests);
            let Ok(request) = SyncRequest::decode(&input) else {
                continue;
            };
            let writes = matches!(
                request,
                SyncRequest::Push { .. } | SyncRequest::Gossip { .. }
            );
            let response = if case % 2 == 0 {
                read_only.respond(&mut b, request)
            } else if writes {
                // A push may write (that is its purpose); keep the check of the read-only
                // responder meaningful by leaving writes to a scratch replica.
                let (_, mut scratch) = replicas();
                responder.respond(&mut scratch, request)
            } else {
                responder.respond(&mut b, request)
            };
            assert!(
                response.encode().is_ok(),
                "seed {seed} case {case}: an answer over the message limit"
            );
        }
        assert_eq!(
            keys_and_values(&b),
            before,
            "seed {seed}: a read changed the replica"
        );
    }
}

#[test]
fn sessions_take_or_refuse_mutated_answers_and_store_nothing_forged() {
    let (_, responses) = recorded();
    assert!(responses.len() > 5, "{} responses", responses.len());
    let (a0, b0) = replicas();
    let honest: BTreeSet<_> = keys_and_values(&a0)
        .union(&keys_and_values(&b0))
        .cloned()
        .collect();
    for seed in shoal_sim::seeds_from_env_or(0x5EED_0302, 4) {
        let mut mutator = shoal_sim::Mutator::new(seed);
        let (mut a, _) = replicas();
        let mut session = SyncSession::new(SyncConfig::default());
        let mut answered = 0;
        for case in 0..5_000 {
            match session.poll(&mut a) {
                Step::Done(_) => {
                    session = if case % 2 == 0 {
                        SyncSession::new(SyncConfig::default())
                    } else {
                        SyncSession::check(SyncConfig::default(), 64)
                    };
                }
                Step::Send(_) => {
                    let input = mutator.next_input(&responses);
                    if let Ok(response) = SyncResponse::decode(&input) {
                        answered += 1;
                        let _ = session.handle_response(&mut a, response);
                    }
                }
            }
            if case % 10 != 9 {
                continue;
            }
            let forged: Vec<_> = keys_and_values(&a).difference(&honest).cloned().collect();
            assert!(
                forged.is_empty(),
                "seed {seed} case {case}: stored items neither replica held: {forged:?}"
            );
        }
        assert!(
            answered > 100,
            "seed {seed}: only {answered} answers decoded"
        );
    }
}

//! Sessions against a model: after one session both replicas hold, for every key, the
//! winner under the conflict rule; a check session reports exactly the keys that differ;
//! and every kind of bad input is refused and counted.

use proptest::prelude::*;
use shoal_core::{ErrorCode, HlcTimestamp, KeyRange, NodeId};
use shoal_merkle::*;
use std::collections::BTreeMap;

fn stamp(ms: u64, node: u64) -> HlcTimestamp {
    HlcTimestamp {
        physical_ms: ms,
        logical: 0,
        node: NodeId::new(node),
    }
}

fn store(rule: ConflictRule, shape: TreeShape) -> MemStore {
    MemStore::new(rule, MerkleTree::new(shape))
}

/// Runs a session from `a` against `b` to the end (no faults).
fn sync(a: &mut MemStore, b: &mut MemStore, config: &SyncConfig) -> (SyncOutcome, SessionStats) {
    let mut session = SyncSession::new(config.clone());
    let mut responder = Responder::new(NodeId::new(2), config.clone());
    for _ in 0..100_000 {
        match session.poll(a) {
            Step::Send(request) => {
                let request = SyncRequest::decode(&request.encode().unwrap()).unwrap();
                let response = responder.respond(b, request);
                let response = SyncResponse::decode(&response.encode().unwrap()).unwrap();
                session.handle_response(a, response).unwrap();
            }
            Step::Done(outcome) => return (outcome, *session.stats()),
        }
    }
    panic!("session did not end");
}

fn contents(s: &MemStore) -> BTreeMap<Vec<u8>, Item> {
    s.iter().map(|i| (i.key.clone(), i.clone())).collect()
}

/// What each replica writes: (key, value, stamp ms) for A and for B.
type Writes = (Vec<(u16, u8, u8)>, Vec<(u16, u8, u8)>);

fn writes() -> impl Strategy<Value = Writes> {
    let w = prop::collection::vec((0u16..400, any::<u8>(), 0u8..8), 0..300);
    (w.clone(), w)
}

fn tight_config() -> impl Strategy<Value = SyncConfig> {
    (
        2u8..=32,
        1u32..6,
        1u32..5,
        1usize..7,
        1usize..5,
        64usize..400,
    )
        .prop_map(
            |(digest_len, nodes, leaves, fetch, push, bytes)| SyncConfig {
                digest_len,
                max_nodes_per_request: nodes,
                max_leaves_per_response: leaves,
                max_fetch: fetch,
                max_push_items: push,
                max_batch_bytes: bytes,
                ..SyncConfig::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn after_a_session_both_hold_the_last_writer_wins_winners(
        (wa, wb) in writes(),
        config in prop_oneof![Just(SyncConfig::default()), tight_config()],
        shape in prop_oneof![Just(TreeShape::new(2, 3).unwrap()), Just(TreeShape::new(1, 7).unwrap()), Just(TreeShape::default())],
    ) {
        let rule = ConflictRule::LastWriterWins;
        let (mut a, mut b) = (store(rule, shape), store(rule, shape));
        let mut model: BTreeMap<Vec<u8>, Item> = BTreeMap::new();
        for (node, writes, replica) in [(1, &wa, &mut a), (2, &wb, &mut b)] {
            for &(k, v, ms) in writes {
                let item = Item::new(format!("k{k}"), vec![v], stamp(u64::from(ms), node));
                let current = model.get(&item.key);
                if rule.wins(&item, current) {
                    model.insert(item.key.clone(), item.clone());
                }
                replica.put(item);
            }
        }
        let (outcome, _) = sync(&mut a, &mut b, &config);
        prop_assert!(outcome.converged);
        prop_assert_eq!(contents(&a), model.clone());
        prop_assert_eq!(contents(&b), model);
        prop_assert_eq!(a.tree_mut().root(), b.tree_mut().root());
    }

    #[test]
    fn content_addressed_replicas_end_with_the_union(
        va in prop::collection::btree_set(any::<u32>(), 0..200),
        vb in prop::collection::btree_set(any::<u32>(), 0..200),
        config in tight_config(),
    ) {
        let rule = ConflictRule::ContentAddressed;
        let shape = TreeShape::new(2, 4).unwrap();
        let (mut a, mut b) = (store(rule, shape), store(rule, shape));
        for v in &va { a.put(Item::content(v.to_be_bytes())); }
        for v in &vb { b.put(Item::content(v.to_be_bytes())); }
        let (outcome, _) = sync(&mut a, &mut b, &config);
        prop_assert!(outcome.converged);
        prop_assert_eq!(a.len(), va.union(&vb).count());
        prop_assert_eq!(contents(&a), contents(&b));
    }

    #[test]
    fn a_check_session_reports_exactly_the_diverging_keys(
        (wa, wb) in writes(),
        config in prop_oneof![Just(SyncConfig::default()), tight_config()],
    ) {
        let rule = ConflictRule::LastWriterWins;
        let shape = TreeShape::new(2, 3).unwrap();
        let (mut a, mut b) = (store(rule, shape), store(rule, shape));
        for (node, writes, replica) in [(1, &wa, &mut a), (2, &wb, &mut b)] {
            for &(k, v, ms) in writes {
                replica.put(Item::new(format!("k{k}"), vec![v], stamp(u64::from(ms), node)));
            }
        }
        let mut expected: Vec<u64> = diverging_keys(a.tree_mut(), b.tree_mut())
            .unwrap()
            .iter()
            .map(|d| key_hash(&d.key))
            .collect();
        expected.sort_unstable();
        let outcome = check_with(&mut a, &mut b, config, usize::MAX, |_, _, _| {});
        prop_assert_eq!(&outcome.differing, &expected);
        prop_assert!(outcome.differing_complete);
        prop_assert_eq!(outcome.converged, expected.is_empty());
    }
}

/// Runs a check session from `a` against an honest responder on `b` to the end, passing
/// each answer through `tamper` (which sees `a` as the session left it) on its way back.
fn check_with(
    a: &mut MemStore,
    b: &mut MemStore,
    config: SyncConfig,
    limit: usize,
    mut tamper: impl FnMut(&MemStore, &SyncRequest, &mut SyncResponse),
) -> SyncOutcome {
    let mut session = SyncSession::check(config.clone(), limit);
    let mut responder = Responder::new(NodeId::new(2), config);
    for _ in 0..100_000 {
        match session.poll(a) {
            Step::Send(request) => {
                assert!(!matches!(
                    request,
                    SyncRequest::Fetch { .. } | SyncRequest::Push { .. }
                ));
                let mut response = responder.respond(b, request.clone());
                tamper(&*a, &request, &mut response);
                session.handle_response(a, response).unwrap();
            }
            Step::Done(outcome) => return outcome,
        }
    }
    panic!("check session did not end");
}

/// Two replicas holding the same 200 items.
fn twins() -> (MemStore, MemStore) {
    let rule = ConflictRule::LastWriterWins;
    let shape = TreeShape::new(2, 4).unwrap();
    let (mut a, mut b) = (store(rule, shape), store(rule, shape));
    for i in 0..200u32 {
        let item = Item::new(format!("k{i}"), "v", stamp(1, 1));
        a.put(item.clone());
        b.put(item);
    }
    (a, b)
}

/// Two replicas that differ in two keys: `k5` is newer on A, `only-b` is only on B.
fn diverged() -> (MemStore, MemStore) {
    let (mut a, mut b) = twins();
    a.put(Item::new("k5", "newer", stamp(2, 1)));
    b.put(Item::new("only-b", "x", stamp(2, 2)));
    (a, b)
}

/// Drives the session until it asks for something matching `want`, answering honestly.
fn until(
    session: &mut SyncSession,
    a: &mut MemStore,
    b: &mut MemStore,
    want: impl Fn(&SyncRequest) -> bool,
) -> SyncRequest {
    let mut responder = Responder::new(NodeId::new(2), SyncConfig::default());
    for _ in 0..1000 {
        let Step::Send(request) = session.poll(a) else {
            panic!("session ended early")
        };
        if want(&request) {
            return request;
        }
        let response = responder.respond(b, request);
        session.handle_response(a, response).unwrap();
    }
    panic!("never asked");
}

#[test]
fn malformed_answers_are_refused_counted_and_the_request_is_sent_again() {
    let (mut a, mut b) = diverged();
    let mut session = SyncSession::new(SyncConfig::default());
    let nodes = until(&mut session, &mut a, &mut b, |r| {
        matches!(r, SyncRequest::GetNodes { .. })
    });
    let root_before = a.tree_mut().root();
    for bad in [
        // Wrong kind.
        SyncResponse::Pong {
            node: NodeId::new(2),
            count: 0,
        },
        // Digest block of the wrong size.
        SyncResponse::Nodes {
            digests: vec![0; 7],
            truncated: false,
        },
        // Claims truncation with everything answered.
        SyncResponse::Nodes {
            digests: vec![0; 12],
            truncated: true,
        },
    ] {
        assert!(matches!(
            session.handle_response(&mut a, bad),
            Err(SyncError::Malformed(_))
        ));
        assert_eq!(
            session.poll(&mut a),
            Step::Send(nodes.clone()),
            "the same request again"
        );
    }
    assert_eq!(session.stats().malformed_responses, 3);
    assert_eq!(a.tree_mut().root(), root_before, "nothing changed");

    let leaves = until(&mut session, &mut a, &mut b, |r| {
        matches!(r, SyncRequest::GetLeaves { .. })
    });
    let SyncRequest::GetLeaves { buckets, .. } = &leaves else {
        unreachable!()
    };
    let outside = (0..u64::MAX / 2)
        .step_by(1 << 40)
        .find(|id| {
            !buckets
                .as_slice()
                .contains(&TreeShape::new(2, 4).unwrap().bucket_of(*id))
        })
        .unwrap();
    let bad = SyncResponse::Leaves {
        ids: IdList(vec![outside]),
        digests: vec![0; 3],
        truncated: false,
    };
    assert!(matches!(
        session.handle_response(&mut a, bad),
        Err(SyncError::Malformed(_))
    ));
    assert_eq!(session.poll(&mut a), Step::Send(leaves));
}

#[test]
fn items_not_asked_for_or_forged_are_refused_and_never_stored() {
    let (mut a, mut b) = diverged();
    let mut session = SyncSession::new(SyncConfig::default());
    until(&mut session, &mut a, &mut b, |r| {
        matches!(r, SyncRequest::Fetch { .. })
    });
    let intruder = Item::new("not-asked", "evil", stamp(99, 9));
    let honest = b.get(b"only-b").unwrap().clone();
    let answer = SyncResponse::Items {
        items: vec![intruder, honest],
        answered: 1,
    };
    session.handle_response(&mut a, answer).unwrap();
    assert_eq!(session.stats().items_refused, 1);
    assert!(a.get(b"not-asked").is_none());
    assert!(a.get(b"only-b").is_some());

    // Content-addressed: an item whose value does not hash to its key is refused.
    let rule = ConflictRule::ContentAddressed;
    let shape = TreeShape::new(2, 4).unwrap();
    let (mut c, mut d) = (store(rule, shape), store(rule, shape));
    let good = Item::content("payload");
    d.put(good.clone());
    let mut session = SyncSession::new(SyncConfig::default());
    until(&mut session, &mut c, &mut d, |r| {
        matches!(r, SyncRequest::Fetch { .. })
    });
    let mut forged = good.clone();
    forged.value = b"tampered".to_vec();
    session
        .handle_response(
            &mut c,
            SyncResponse::Items {
                items: vec![forged],
                answered: 1,
            },
        )
        .unwrap();
    assert_eq!(session.stats().items_refused, 1);
    assert!(c.is_empty());
}

#[test]
fn the_responder_refuses_bad_requests_and_changes_nothing() {
    let (_, mut b) = diverged();
    let root = b.tree_mut().root();
    let mut r = Responder::new(NodeId::new(2), SyncConfig::default());
    let window = DigestWindow { len: 3, window: 0 };
    let list = |v: Vec<u64>| NodeList::new(v).unwrap();
    let bad = [
        SyncRequest::ExchangeRoots {
            root,
            count: 0,
            shape: TreeShape::default(),
            span: KeyRange::full(),
        },
        SyncRequest::GetNodes {
            level: 4,
            nodes: list(vec![0]),
            window,
            max: 1000,
        },
        SyncRequest::GetNodes {
            level: 1,
            nodes: list(vec![4]),
            window,
            max: 1000,
        },
        SyncRequest::GetNodes {
            level: 0,
            nodes: list(vec![0]),
            window: DigestWindow { len: 1, window: 0 },
            max: 1000,
        },
        SyncRequest::GetNodes {
            level: 0,
            nodes: list(vec![]),
            window,
            max: 1000,
        },
        SyncRequest::GetNodes {
            level: 0,
            nodes: list(vec![0]),
            window,
            max: 3,
        },
        SyncRequest::GetLeaves {
            buckets: list(vec![1]),
            after: Some(0),
            window,
            max: 10,
        },
        SyncRequest::GetLeaves {
            buckets: list(vec![256]),
            after: None,
            window,
            max: 10,
        },
        SyncRequest::Fetch {
            ids: IdList(vec![1; 1001]),
        },
        SyncRequest::FetchByHash {
            hashes: vec![Digest::ZERO; 1001],
        },
        SyncRequest::FetchKeys {
            keys: vec![Vec::new(); 1001],
        },
        SyncRequest::Push {
            items: vec![Item::new("x", "y", stamp(1, 1)); 1001],
        },
    ];
    for request in bad {
        let answer = r.respond(&mut b, request.clone());
        assert!(
            matches!(answer, SyncResponse::Refused { .. }),
            "{request:?} got {answer:?}"
        );
    }
    assert_eq!(r.stats().refused_requests, 12);
    // Fetching by key and by hash.
    let by_key = r.respond(
        &mut b,
        SyncRequest::FetchKeys {
            keys: vec![b"k5".to_vec(), b"nope".to_vec()],
        },
    );
    assert_eq!(
        by_key,
        SyncResponse::Items {
            items: vec![b.get(b"k5").unwrap().clone()],
            answered: 2
        }
    );
    let content = Item::content("blob");
    let mut c = MemStore::new(
        ConflictRule::ContentAddressed,
        MerkleTree::new(TreeShape::default()),
    );
    c.put(content.clone());
    let by_hash = r.respond(
        &mut c,
        SyncRequest::FetchByHash {
            hashes: vec![Digest(content.key.clone().try_into().unwrap())],
        },
    );
    assert_eq!(
        by_hash,
        SyncResponse::Items {
            items: vec![content],
            answered: 1
        }
    );
    // Oversized and out-of-rule pushes are refused item by item.
    let huge = Item::new("big", vec![0; (1 << 20) + 1], stamp(5, 1));
    let answer = r.respond(&mut b, SyncRequest::Push { items: vec![huge] });
    assert_eq!(
        answer,
        SyncResponse::Pushed {
            accepted: 0,
            refused: 1
        }
    );
    assert_eq!(r.stats().items_invalid, 1);
    assert_eq!(b.tree_mut().root(), root);
    // Garbage bytes never decode into a request.
    for garbage in [&[][..], &[0xff; 3], &[0, 0xfc, 0xff, 0xff, 0xff, 0xff]] {
        assert!(SyncRequest::decode(garbage).is_err());
    }
}

#[test]
fn a_check_session_reports_differences_and_changes_nothing() {
    let (mut a, mut b) = diverged();
    let (ra, rb) = (a.tree_mut().root(), b.tree_mut().root());
    let mut session = SyncSession::check(SyncConfig::exact(), 100);
    let mut responder = Responder::new(NodeId::new(2), SyncConfig::exact());
    let outcome = loop {
        match session.poll(&mut a) {
            Step::Send(request) => {
                assert!(!matches!(
                    request,
                    SyncRequest::Fetch { .. } | SyncRequest::Push { .. }
                ));
                let response = responder.respond(&mut b, request);
                session.handle_response(&mut a, response).unwrap();
            }
            Step::Done(outcome) => break outcome,
        }
    };
    assert!(!outcome.converged);
    assert!(outcome.differing_complete);
    let mut expected = vec![key_hash(b"k5"), key_hash(b"only-b")];
    expected.sort_unstable();
    assert_eq!(outcome.differing, expected, "every difference, in order");
    assert_eq!((a.tree_mut().root(), b.tree_mut().root()), (ra, rb));
    // The same answer from the local comparison, by key.
    let keys: Vec<Vec<u8>> = diverging_keys(a.tree_mut(), b.tree_mut())
        .unwrap()
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(keys, [b"k5".to_vec(), b"only-b".to_vec()]);
}

#[test]
fn a_check_session_finds_a_difference_that_a_chance_match_hid() {
    let (mut a, mut b) = twins();
    b.put(Item::new("only-b", "x", stamp(2, 2)));
    let shape = a.tree().shape();
    let hidden = key_hash(b"only-b");
    let mut forged = 0;
    // In the first pass (window 0), the compared bytes of every node above `only-b` happen
    // to equal the local ones: a chance match of 3-byte digests, made certain here. The
    // peer's full root is honest.
    let outcome = check_with(
        &mut a,
        &mut b,
        SyncConfig::default(),
        100,
        |a, request, response| {
            let (
                SyncRequest::GetNodes {
                    level,
                    nodes,
                    window,
                    ..
                },
                SyncResponse::Nodes { digests, .. },
            ) = (request, response)
            else {
                return;
            };
            if window.window != 0 {
                return;
            }
            let fanout = shape.fanout();
            let child_level = *level + 1;
            let target = shape.node_of(hidden, child_level);
            for (p, &parent) in nodes.as_slice().iter().enumerate() {
                let first = shape.first_child(parent);
                if !(first..first + fanout as u64).contains(&target) {
                    continue;
                }
                let at = (p * fanout + (target - first) as usize) * window.len();
                let Some(theirs) = digests.get_mut(at..at + window.len()) else {
                    continue;
                };
                theirs.copy_from_slice(a.tree().node(child_level, target).window(*window));
                forged += 1;
            }
        },
    );
    assert!(forged > 0, "the first pass was shown matching digests");
    assert_eq!(outcome.differing, vec![hidden]);
    assert!(outcome.differing_complete && !outcome.converged);
    assert_eq!(outcome.passes, 2, "found by the second pass");
}

#[test]
fn a_check_session_at_its_limit_says_its_list_is_incomplete() {
    let (mut a, mut b) = diverged();
    let outcome = check_with(&mut a, &mut b, SyncConfig::default(), 1, |_, _, _| {});
    assert_eq!(outcome.differing.len(), 1);
    assert!(!outcome.differing_complete && !outcome.converged);
    let outcome = check_with(&mut a, &mut b, SyncConfig::default(), 2, |_, _, _| {});
    assert_eq!(outcome.differing.len(), 2);
    assert!(outcome.differing_complete);
}

#[test]
fn the_responder_enforces_its_configured_fetch_limit() {
    let (_, mut b) = diverged();
    let config = SyncConfig {
        max_fetch: 5,
        ..SyncConfig::default()
    };
    let mut r = Responder::new(NodeId::new(2), config);
    let over = [
        SyncRequest::Fetch {
            ids: IdList(vec![1; 6]),
        },
        SyncRequest::FetchKeys {
            keys: vec![b"k1".to_vec(); 6],
        },
        SyncRequest::FetchByHash {
            hashes: vec![Digest::ZERO; 6],
        },
    ];
    for request in over {
        match r.respond(&mut b, request) {
            SyncResponse::Refused { error } => assert_eq!(error.code, ErrorCode::TooLarge),
            other => panic!("a fetch over max_fetch was answered: {other:?}"),
        }
    }
    let at_limit = r.respond(
        &mut b,
        SyncRequest::FetchKeys {
            keys: vec![b"k1".to_vec(); 5],
        },
    );
    assert!(
        matches!(at_limit, SyncResponse::Items { answered: 5, .. }),
        "{at_limit:?}"
    );
}

#[test]
fn a_root_exchange_for_another_key_range_is_refused() {
    // B has not applied a split that A has: same shape and the same keys below "m", but
    // B's tree covers every key.
    let rule = ConflictRule::LastWriterWins;
    let shape = TreeShape::new(2, 4).unwrap();
    let left = KeyRange::bounded("", "m").unwrap();
    let mut a = MemStore::new(rule, MerkleTree::with_span(shape, left));
    let mut b = store(rule, shape);
    for i in 0..50u32 {
        let item = Item::new(format!("a{i}"), "v", stamp(1, 1));
        assert!(a.put(item.clone()) && b.put(item));
    }
    let mut session = SyncSession::new(SyncConfig::default());
    let mut responder = Responder::new(NodeId::new(2), SyncConfig::default());
    let Step::Send(request) = session.poll(&mut a) else {
        panic!("the session ended before asking");
    };
    assert!(matches!(request, SyncRequest::ExchangeRoots { .. }));
    let answer = responder.respond(&mut b, request);
    let Err(SyncError::Refused(error)) = session.handle_response(&mut a, answer) else {
        panic!("roots over different key ranges were compared");
    };
    assert_eq!(error.code, ErrorCode::InvalidRequest);
    assert!(matches!(
        session.poll(&mut a),
        Step::Done(SyncOutcome {
            converged: false,
            ..
        })
    ));
    assert_eq!(responder.stats().refused_requests, 1);
}

#[test]
fn a_peer_that_keeps_answering_badly_is_given_up_on() {
    for tolerated in [0u32, 3] {
        let (mut a, _) = diverged();
        let config = SyncConfig {
            max_malformed_answers: tolerated,
            ..SyncConfig::default()
        };
        let mut session = SyncSession::new(config);
        let mut sent = 0u32;
        let error = loop {
            let Step::Send(_) = session.poll(&mut a) else {
                panic!("the session ended without an error");
            };
            sent += 1;
            assert!(sent <= 100, "still asking after {sent} bad answers");
            let garbage = SyncResponse::Pong {
                node: NodeId::new(2),
                count: 0,
            };
            match session.handle_response(&mut a, garbage) {
                Err(SyncError::Malformed(_)) => continue,
                Err(e) => break e,
                Ok(()) => panic!("a wrong answer was taken"),
            }
        };
        assert_eq!(sent, tolerated + 1, "the request and {tolerated} resends");
        assert!(
            matches!(error, SyncError::TooManyMalformed { count, .. } if count == tolerated + 1),
            "{error}"
        );
        assert!(matches!(
            session.poll(&mut a),
            Step::Done(SyncOutcome {
                converged: false,
                ..
            })
        ));
        assert_eq!(
            session.stats().malformed_responses,
            u64::from(tolerated + 1)
        );
    }
}

#[test]
fn a_read_only_responder_can_be_checked_and_read_but_never_written() {
    let (mut a, mut b) = diverged();
    let root = b.tree_mut().root();
    let config = SyncConfig::default();
    let mut r = Responder::read_only(NodeId::new(2), config.clone());
    assert!(r.is_read_only() && !Responder::new(NodeId::new(2), config.clone()).is_read_only());
    for write in [
        SyncRequest::Push {
            items: vec![Item::new("k5", "newest", stamp(9, 1))],
        },
        SyncRequest::Gossip {
            item: Item::new("fresh", "x", stamp(9, 1)),
        },
    ] {
        match r.respond(&mut b, write) {
            SyncResponse::Refused { error } => {
                assert_eq!(error.code, ErrorCode::InvalidRequest);
                assert!(error.message.contains("read-only"), "{error}");
            }
            other => panic!("a read-only responder answered a write with {other:?}"),
        }
    }
    assert_eq!(b.tree_mut().root(), root, "nothing written");
    assert_eq!(r.stats().items_accepted, 0);
    assert_eq!(r.stats().refused_requests, 2);

    // A check against it runs to the end.
    let mut check = SyncSession::check(config.clone(), 10);
    let outcome = loop {
        match check.poll(&mut a) {
            Step::Send(request) => {
                let answer = r.respond(&mut b, request);
                check.handle_response(&mut a, answer).unwrap();
            }
            Step::Done(outcome) => break outcome,
        }
    };
    assert_eq!(outcome.differing.len(), 2);
    assert!(outcome.differing_complete);

    // A reconciling session takes what it fetches, and is refused at its first push.
    let mut session = SyncSession::new(config);
    let result = loop {
        match session.poll(&mut a) {
            Step::Send(request) => {
                let answer = r.respond(&mut b, request);
                if let Err(e) = session.handle_response(&mut a, answer) {
                    break Err(e);
                }
            }
            Step::Done(outcome) => break Ok(outcome),
        }
    };
    assert!(matches!(result, Err(SyncError::Refused(_))), "{result:?}");
    assert!(a.get(b"only-b").is_some(), "reads still work");
    assert_eq!(b.tree_mut().root(), root, "still nothing written");
}

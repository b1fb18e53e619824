//! The routing cache: lookups, the generation rule, corrections from errors, membership
//! eviction (out of routing, descriptors untouched), capacity, refusal of bad input,
//! concurrent readers and coalesced misses (per key and per uncached gap).

use proptest::prelude::*;
use shoal_core::{
    ErrorCode, Generation, KeyRange, LeaderHint, NodeId, RangeDescriptor, RangeEnd, RangeId,
    ReplicaDescriptor,
};
use shoal_routing::{
    ErrorAction, InsertOutcome, RangeCache, RangeCacheConfig, RangeCacheError, ResolveError, Route,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn n(i: u64) -> NodeId {
    NodeId::new(i)
}

fn end(key: &str) -> RangeEnd {
    if key.is_empty() {
        RangeEnd::Unbounded
    } else {
        RangeEnd::Key(key.as_bytes().to_vec())
    }
}

/// Range `id` over `[start, end)` (an empty `end` is unbounded) at `generation`, replicated on
/// nodes 1..=3, led by node 1.
fn desc(id: u64, start: &str, end_key: &str, generation: u64) -> RangeDescriptor {
    let voters = (1..=3).map(|i| ReplicaDescriptor::voter(n(i))).collect();
    let range = KeyRange::new(start.as_bytes().to_vec(), end(end_key)).unwrap();
    let mut d = RangeDescriptor::new(RangeId::new(id), range, voters).unwrap();
    d.generation = Generation::new(generation);
    d.leader_hint = Some(n(1));
    d
}

fn cache() -> RangeCache {
    RangeCache::new(RangeCacheConfig::default())
}

fn range_of(cache: &RangeCache, key: &str) -> Option<u64> {
    cache.lookup(key.as_bytes()).unwrap().map(|r| r.range.get())
}

#[test]
fn lookups_hit_inside_and_miss_in_gaps() {
    let c = cache();
    c.insert(desc(1, "", "c", 1)).unwrap();
    c.insert(desc(2, "f", "k", 1)).unwrap();
    c.insert(desc(3, "k", "", 1)).unwrap();
    assert_eq!(range_of(&c, ""), Some(1));
    assert_eq!(range_of(&c, "bzzz"), Some(1));
    assert_eq!(range_of(&c, "c"), None, "end is exclusive");
    assert_eq!(range_of(&c, "e"), None, "gap");
    assert_eq!(range_of(&c, "f"), Some(2));
    assert_eq!(range_of(&c, "k"), Some(3));
    assert_eq!(range_of(&c, "zzzz"), Some(3), "unbounded end");
    let route = c.lookup(b"g").unwrap().unwrap();
    assert_eq!(
        route,
        Route {
            range: RangeId::new(2),
            generation: Generation::new(1),
            leader: Some(n(1)),
        }
    );
    assert_eq!(c.len(), 3);
}

#[test]
fn keys_sharing_long_prefixes_route_exactly() {
    // Split points that agree on their first 16 bytes exercise the full-key tie-break.
    let c = cache();
    let base = "tenant/00000000/orders/";
    c.insert(desc(1, "", &format!("{base}100"), 1)).unwrap();
    c.insert(desc(2, &format!("{base}100"), &format!("{base}200"), 1))
        .unwrap();
    c.insert(desc(3, &format!("{base}200"), "", 1)).unwrap();
    assert_eq!(range_of(&c, &format!("{base}099")), Some(1));
    assert_eq!(range_of(&c, &format!("{base}100")), Some(2));
    assert_eq!(range_of(&c, &format!("{base}1999")), Some(2));
    assert_eq!(range_of(&c, &format!("{base}200")), Some(3));
}

#[test]
fn newer_generations_replace_overlaps_and_older_ones_are_dropped() {
    let c = cache();
    c.insert(desc(1, "", "", 1)).unwrap();
    // A split: the left half arrives first, at generation 2.
    assert_eq!(
        c.insert(desc(1, "", "m", 2)).unwrap(),
        InsertOutcome::Inserted { replaced: 1 }
    );
    assert_eq!(range_of(&c, "p"), None, "the stale right part is gone");
    // The pre-split descriptor arriving late is stale.
    assert_eq!(
        c.insert(desc(1, "", "", 1)).unwrap(),
        InsertOutcome::Stale {
            newer: Generation::new(2)
        }
    );
    c.insert(desc(2, "m", "", 2)).unwrap();
    // A merge at generation 3 replaces both halves.
    assert_eq!(
        c.insert(desc(1, "", "", 3)).unwrap(),
        InsertOutcome::Inserted { replaced: 2 }
    );
    assert_eq!(c.len(), 1);
    // Same generation from the authority: the newcomer wins.
    let mut moved = desc(1, "", "", 3);
    moved.leader_hint = Some(n(2));
    c.insert(moved).unwrap();
    assert_eq!(c.lookup(b"x").unwrap().unwrap().leader, Some(n(2)));
    let stats = c.stats();
    assert_eq!((stats.inserted, stats.stale_dropped), (5, 1));
}

#[test]
fn generations_beyond_32_bits_and_start_keys_beyond_64_kib_are_exact() {
    // Entries keep a 32-bit generation and a 16-bit start length inline; anything larger
    // must still be exact (read from the descriptor, or compared in full).
    let c = RangeCache::new(RangeCacheConfig {
        max_key_len: 200_000,
        ..RangeCacheConfig::default()
    });
    let big = 1u64 << 40;
    let long = |tail: &str| format!("{}{tail}", "k".repeat(70_000));
    c.insert(desc(1, "", &long("1"), big)).unwrap();
    c.insert(desc(2, &long("1"), &long("2"), u64::from(u32::MAX)))
        .unwrap();
    c.insert(desc(3, &long("2"), "", big + 7)).unwrap();
    let route = |key: &str| c.lookup(key.as_bytes()).unwrap().unwrap();
    assert_eq!(route("a").generation, Generation::new(big));
    assert_eq!(route(&long("")).range, RangeId::new(1));
    assert_eq!(route(&long("1")).range, RangeId::new(2));
    assert_eq!(
        route(&long("15")).generation,
        Generation::new(u64::from(u32::MAX))
    );
    assert_eq!(route(&long("2")).range, RangeId::new(3));
    assert_eq!(route(&long("2")).generation, Generation::new(big + 7));
    assert_eq!(
        c.insert(desc(3, &long("2"), "", big + 6)).unwrap(),
        InsertOutcome::Stale {
            newer: Generation::new(big + 7)
        }
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let c = RangeCache::new(RangeCacheConfig {
        max_key_len: 8,
        ..RangeCacheConfig::default()
    });
    c.insert(desc(1, "", "", 1)).unwrap();
    assert_eq!(
        c.lookup(b"123456789").unwrap_err(),
        RangeCacheError::KeyTooLarge { len: 9, max: 8 }
    );
    assert!(matches!(
        c.insert(desc(2, "a", "b23456789", 2)),
        Err(RangeCacheError::KeyTooLarge { .. })
    ));
    let mut dup = desc(2, "a", "b", 2);
    dup.replicas.push(ReplicaDescriptor::learner(n(1)));
    assert!(matches!(
        c.insert(dup),
        Err(RangeCacheError::InvalidDescriptor(_))
    ));
    assert_eq!(range_of(&c, "a"), Some(1));
    assert_eq!(c.len(), 1);
    assert_eq!(c.stats().refused, 3);
}

#[test]
fn not_leader_moves_the_leader_or_drops_a_stale_descriptor() {
    let c = cache();
    c.insert(desc(1, "", "", 1)).unwrap();
    let route = c.lookup(b"k").unwrap().unwrap();
    let hint = |node| ErrorCode::NotLeader {
        hint: Some(LeaderHint { node, addr: None }),
    };
    assert_eq!(
        c.observe_error(b"k", &route, &hint(n(3))),
        ErrorAction::Retry
    );
    let route = c.lookup(b"k").unwrap().unwrap();
    assert_eq!(route.leader, Some(n(3)));
    // No hint: forget the leader that just refused.
    let none = ErrorCode::NotLeader { hint: None };
    assert_eq!(c.observe_error(b"k", &route, &none), ErrorAction::Retry);
    assert_eq!(c.lookup(b"k").unwrap().unwrap().leader, None);
    // A hint outside the replica set: the descriptor itself is stale.
    assert_eq!(
        c.observe_error(b"k", &route, &hint(n(9))),
        ErrorAction::Refresh
    );
    assert_eq!(c.lookup(b"k").unwrap(), None);
}

#[test]
fn leader_survives_a_refresh_of_the_same_range() {
    let c = cache();
    c.insert(desc(1, "", "", 1)).unwrap();
    assert!(c.set_leader(b"a", RangeId::new(1), n(2)));
    assert!(!c.set_leader(b"a", RangeId::new(1), n(7)), "not a voter");
    let mut refreshed = desc(1, "", "", 2);
    refreshed.leader_hint = None;
    c.insert(refreshed).unwrap();
    assert_eq!(c.lookup(b"a").unwrap().unwrap().leader, Some(n(2)));
}

#[test]
fn range_key_mismatch_replaces_stale_descriptors() {
    let c = cache();
    c.insert(desc(1, "", "", 1)).unwrap();
    let route = c.lookup(b"q").unwrap().unwrap();
    let mismatch = ErrorCode::RangeKeyMismatch {
        descriptors: vec![desc(1, "", "m", 2), desc(2, "m", "", 2)],
    };
    assert_eq!(c.observe_error(b"q", &route, &mismatch), ErrorAction::Retry);
    assert_eq!(range_of(&c, "q"), Some(2));
    assert_eq!(range_of(&c, "a"), Some(1));
    // A mismatch carrying nothing new: the routed entry is dropped, resolve again.
    let route = c.lookup(b"q").unwrap().unwrap();
    let empty = ErrorCode::RangeKeyMismatch {
        descriptors: vec![],
    };
    assert_eq!(c.observe_error(b"q", &route, &empty), ErrorAction::Refresh);
    assert_eq!(range_of(&c, "q"), None);
    assert_eq!(range_of(&c, "a"), Some(1));
}

#[test]
fn other_errors_map_to_refresh_backoff_or_fail() {
    let c = cache();
    c.insert(desc(1, "", "", 1)).unwrap();
    let route = c.lookup(b"a").unwrap().unwrap();
    assert_eq!(
        c.observe_error(b"a", &route, &ErrorCode::Overloaded),
        ErrorAction::Backoff
    );
    assert_eq!(
        c.observe_error(b"a", &route, &ErrorCode::InvalidRequest),
        ErrorAction::Fail
    );
    assert_eq!(c.len(), 1);
    let not_found = ErrorCode::RangeNotFound {
        range: RangeId::new(1),
    };
    assert_eq!(
        c.observe_error(b"a", &route, &not_found),
        ErrorAction::Refresh
    );
    assert!(c.is_empty());
}

#[test]
fn a_dead_node_leaves_routing_but_descriptors_stay_as_the_authority_sent_them() {
    let c = cache();
    let left = desc(1, "", "m", 1);
    c.insert(left.clone()).unwrap();
    let mut lone = desc(2, "m", "", 1);
    lone.replicas = vec![ReplicaDescriptor::voter(n(1))];
    c.insert(lone).unwrap();
    assert_eq!(c.evict_node(n(1)), 2);
    // Same generation, same descriptor: nothing the authority did not send.
    assert_eq!(*c.descriptor(b"a").unwrap().unwrap(), left);
    let all: Vec<RangeDescriptor> = c.descriptors().iter().map(|d| (**d).clone()).collect();
    assert_eq!(all, vec![left]);
    // Routing leaves the dead node out.
    let live: Vec<NodeId> = c
        .live_replicas(b"a")
        .unwrap()
        .unwrap()
        .iter()
        .map(|r| r.node)
        .collect();
    assert_eq!(live, vec![n(2), n(3)]);
    assert_eq!(c.lookup(b"a").unwrap().unwrap().leader, None);
    assert!(!c.set_leader(b"a", RangeId::new(1), n(1)), "a dead node");
    assert!(c.set_leader(b"a", RangeId::new(1), n(2)));
    // The documented rule: a range with no live voter is dropped, to be resolved afresh.
    assert_eq!(c.lookup(b"z").unwrap(), None, "no voter left: dropped");
    assert_eq!(c.evict_node(n(1)), 0, "already out");
    assert_eq!(c.lookup(b"a").unwrap().unwrap().leader, Some(n(2)));
    // A replica naming the dead node as leader: the entry is stale, as for a stranger.
    let route = c.lookup(b"a").unwrap().unwrap();
    let hint = ErrorCode::NotLeader {
        hint: Some(LeaderHint {
            node: n(1),
            addr: None,
        }),
    };
    assert_eq!(c.observe_error(b"a", &route, &hint), ErrorAction::Refresh);
    // A descriptor from the authority starts with nothing evicted.
    c.insert(desc(1, "", "m", 2)).unwrap();
    assert_eq!(c.live_replicas(b"a").unwrap().unwrap().len(), 3);
    assert_eq!(c.live_replicas(b"z").unwrap(), None);
}

#[test]
fn capacity_is_enforced_and_the_newest_entry_kept() {
    let c = RangeCache::new(RangeCacheConfig {
        capacity: 10,
        ..RangeCacheConfig::default()
    });
    for i in 0..100u64 {
        let start = format!("k{i:03}");
        let stop = format!("k{i:03}~");
        c.insert(desc(i + 1, &start, &stop, 1)).unwrap();
        assert!(c.len() <= 10);
        assert_eq!(range_of(&c, &start), Some(i + 1));
    }
    assert_eq!(c.stats().capacity_evictions, 90);
}

const BOUNDS: [&str; 7] = ["", "b", "d", "f", "h", "j", ""];

fn arb_descriptor() -> impl Strategy<Value = RangeDescriptor> {
    (0usize..6, 1usize..6, 1u64..6, 1u64..4).prop_map(|(lo, len, generation, id)| {
        let hi = (lo + len).min(6);
        desc(id, BOUNDS[lo], BOUNDS[hi], generation)
    })
}

proptest! {
    /// Against a naive model of the rule (a list, scanned in full): the cache keeps exactly
    /// the same descriptors, never overlapping, and every lookup agrees.
    #[test]
    fn cache_agrees_with_a_naive_model(inserts in prop::collection::vec(arb_descriptor(), 1..60)) {
        let c = cache();
        let mut model: Vec<RangeDescriptor> = Vec::new();
        for d in inserts {
            let stale = model
                .iter()
                .any(|m| m.range.overlaps(&d.range) && m.generation > d.generation);
            c.insert(d.clone()).unwrap();
            if !stale {
                model.retain(|m| !m.range.overlaps(&d.range));
                model.push(d);
            }
        }
        model.sort_by(|a, b| a.range.start().cmp(b.range.start()));
        let cached: Vec<RangeDescriptor> = c.descriptors().iter().map(|d| (**d).clone()).collect();
        for pair in cached.windows(2) {
            prop_assert!(!pair[0].range.overlaps(&pair[1].range));
        }
        prop_assert_eq!(&cached, &model);
        for probe in ["", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "zz"] {
            let want = model.iter().find(|m| m.contains_key(probe.as_bytes())).map(|m| m.id.get());
            prop_assert_eq!(range_of(&c, probe), want);
        }
    }
}

#[test]
fn readers_on_many_threads_see_only_whole_descriptors() {
    let c = Arc::new(cache());
    c.insert(desc(1, "", "", 1)).unwrap();
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                let mut hits = 0;
                for i in 0..20_000u64 {
                    let key = format!("k{:04}", (i * 7 + t) % 1000);
                    if let Some(route) = c.lookup(key.as_bytes()).unwrap() {
                        let d = c.descriptor(key.as_bytes()).unwrap();
                        // The descriptor may have moved on since, but never to one that does
                        // not hold the key.
                        if let Some(d) = d {
                            assert!(d.contains_key(key.as_bytes()));
                        }
                        assert!(route.generation.get() >= 1);
                        hits += 1;
                    }
                }
                hits
            })
        })
        .collect();
    // Meanwhile split the space into 100 ranges, one split at a time.
    for i in 1..100u64 {
        let at = format!("k{:04}", i * 10);
        let left_start = if i == 1 {
            String::new()
        } else {
            format!("k{:04}", (i - 1) * 10)
        };
        c.insert(desc(i, &left_start, &at, i + 1)).unwrap();
        c.insert(desc(i + 1, &at, "", i + 1)).unwrap();
    }
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(c.len(), 100);
    for i in 0..1000u64 {
        let key = format!("k{i:04}");
        assert_eq!(range_of(&c, &key), Some(i / 10 + 1));
    }
}

/// Yields to the spawned tasks until `done` holds, giving up after a bounded number of turns.
async fn until(done: impl Fn() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the spawned tasks never reached the expected state");
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("meta range unavailable")]
struct MetaDown;

#[tokio::test]
async fn concurrent_misses_for_one_key_share_one_lookup() {
    let c = Arc::new(cache());
    let calls = Arc::new(AtomicUsize::new(0));
    let (release, gate) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let c = Arc::clone(&c);
            let calls = Arc::clone(&calls);
            let mut gate = gate.clone();
            tokio::spawn(async move {
                c.resolve(b"user/7", |_key| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.wait_for(|open| *open).await.unwrap();
                    Ok::<_, MetaDown>(vec![desc(4, "user/", "user0", 2)])
                })
                .await
            })
        })
        .collect();
    // Let every task reach its miss before the lookup answers.
    until(|| c.stats().coalesced >= 15).await;
    release.send(true).unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().range, RangeId::new(4));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().fetches, 1);
    // A later miss for a key the lookup covered is a plain hit.
    let again = c
        .resolve(b"user/8", |_| async {
            Err::<Vec<RangeDescriptor>, _>(MetaDown)
        })
        .await;
    assert_eq!(again.unwrap().range, RangeId::new(4));
}

#[tokio::test]
async fn a_failed_lookup_fails_every_waiter_once() {
    let c = Arc::new(cache());
    let calls = Arc::new(AtomicUsize::new(0));
    let (release, gate) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (c, calls, mut gate) = (Arc::clone(&c), Arc::clone(&calls), gate.clone());
            tokio::spawn(async move {
                c.resolve(b"k", |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.wait_for(|open| *open).await.unwrap();
                    Err::<Vec<RangeDescriptor>, _>(MetaDown)
                })
                .await
            })
        })
        .collect();
    until(|| c.stats().coalesced >= 3).await;
    release.send(true).unwrap();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(ResolveError::Fetch(_))));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(c.is_empty());
    // A lookup answering with descriptors that miss the key is an error, not a hang.
    let off = c
        .resolve(b"k", |_| async {
            Ok::<_, MetaDown>(vec![desc(1, "a", "b", 1)])
        })
        .await;
    assert!(matches!(off, Err(ResolveError::NotCovered)));
}

#[tokio::test]
async fn a_cancelled_leader_hands_the_lookup_to_a_waiter() {
    let c = Arc::new(cache());
    let leader = {
        let c = Arc::clone(&c);
        tokio::spawn(async move {
            c.resolve(b"k", |_| {
                std::future::pending::<Result<Vec<RangeDescriptor>, MetaDown>>()
            })
            .await
        })
    };
    until(|| c.stats().fetches >= 1).await;
    let follower = {
        let c = Arc::clone(&c);
        tokio::spawn(async move {
            c.resolve(b"k", |_| async {
                Ok::<_, MetaDown>(vec![desc(9, "", "", 1)])
            })
            .await
        })
    };
    until(|| c.stats().coalesced >= 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert_eq!(follower.await.unwrap().unwrap().range, RangeId::new(9));
    assert_eq!(c.stats().fetches, 2);
}

#[tokio::test]
async fn a_burst_of_cold_keys_in_one_range_shares_one_lookup() {
    let c = Arc::new(cache());
    let calls = Arc::new(AtomicUsize::new(0));
    let (release, gate) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (c, calls, mut gate) = (Arc::clone(&c), Arc::clone(&calls), gate.clone());
            tokio::spawn(async move {
                let key = format!("user/{i}");
                c.resolve(key.as_bytes(), |_key| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.wait_for(|open| *open).await.unwrap();
                    Ok::<_, MetaDown>(vec![desc(4, "user/", "user0", 2)])
                })
                .await
            })
        })
        .collect();
    // Every distinct key misses while the first lookup is in flight, and waits for it.
    until(|| c.stats().coalesced >= 15).await;
    release.send(true).unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().range, RangeId::new(4));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().fetches, 1);
}

/// Resolves `a` with a lookup held until released, answering `[_, m)` or failing, and
/// meanwhile `x`, which that answer does not cover: `x` waits for it, then looks up `[m, _)`
/// itself. Returns both results and the lookups run.
async fn a_then_x(first_fails: bool) -> (Result<Route, ResolveError>, Route, u64) {
    let c = Arc::new(cache());
    let (release, gate) = tokio::sync::watch::channel(false);
    let first = {
        let (c, mut gate) = (Arc::clone(&c), gate.clone());
        tokio::spawn(async move {
            c.resolve(b"a", |_| async move {
                gate.wait_for(|open| *open).await.unwrap();
                if first_fails {
                    Err(MetaDown)
                } else {
                    Ok(vec![desc(1, "", "m", 1)])
                }
            })
            .await
        })
    };
    until(|| c.stats().fetches >= 1).await;
    let second = {
        let c = Arc::clone(&c);
        tokio::spawn(async move {
            c.resolve(b"x", |_| async {
                Ok::<_, MetaDown>(vec![desc(2, "m", "", 1)])
            })
            .await
        })
    };
    until(|| c.stats().coalesced >= 1).await;
    release.send(true).unwrap();
    let first = first.await.unwrap();
    let second = second.await.unwrap().unwrap();
    (first, second, c.stats().fetches)
}

#[tokio::test]
async fn a_miss_the_awaited_lookup_did_not_cover_runs_its_own() {
    let (first, second, fetches) = a_then_x(false).await;
    assert_eq!(first.unwrap().range, RangeId::new(1));
    assert_eq!(second.range, RangeId::new(2));
    assert_eq!(fetches, 2);
    // Another key's failed lookup is not this key's failure.
    let (first, second, fetches) = a_then_x(true).await;
    assert!(matches!(first, Err(ResolveError::Fetch(_))));
    assert_eq!(second.range, RangeId::new(2));
    assert_eq!(fetches, 2);
}

#[tokio::test]
async fn a_miss_outside_the_gap_of_a_lookup_in_flight_does_not_wait_for_it() {
    let c = Arc::new(cache());
    // Cached: [m, n). Misses on either side of it are in different gaps.
    c.insert(desc(5, "m", "n", 1)).unwrap();
    let (release, gate) = tokio::sync::watch::channel(false);
    let held = {
        let (c, mut gate) = (Arc::clone(&c), gate.clone());
        tokio::spawn(async move {
            c.resolve(b"a", |_| async move {
                gate.wait_for(|open| *open).await.unwrap();
                Ok::<_, MetaDown>(vec![desc(1, "", "m", 1)])
            })
            .await
        })
    };
    until(|| c.stats().fetches >= 1).await;
    let other_side = c
        .resolve(b"x", |_| async {
            Ok::<_, MetaDown>(vec![desc(2, "n", "", 1)])
        })
        .await
        .unwrap();
    assert_eq!(other_side.range, RangeId::new(2));
    assert_eq!(c.stats().coalesced, 0, "it did not wait behind `a`");
    release.send(true).unwrap();
    assert_eq!(held.await.unwrap().unwrap().range, RangeId::new(1));
}

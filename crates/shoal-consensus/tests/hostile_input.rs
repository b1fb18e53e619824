//! Terms and log positions no honest peer sends: a replica drops them at the door (counted in
//! `RaftStats::out_of_bounds`) instead of letting them wrap its term or overflow its log's
//! arithmetic, keeps its term and log as they were, and goes on working. A membership that
//! breaks its invariants does not even decode.

mod common;

use bytes::Bytes;
use common::*;
use shoal_consensus::{
    Entry, EntryPayload, LearnerKind, Membership, Message, MessageBody, RaftConfig, Role,
    SnapshotMeta, MAX_INDEX, MAX_TERM,
};
use std::time::Duration;

const STEP: Duration = Duration::from_millis(50);

/// A replica's term, last index and commit index.
fn position(net: &mut Net, id: u64) -> (u64, u64, u64) {
    let node = net.node(id);
    (node.term(), node.last_index(), node.commit_index())
}

/// A TimeoutNow at term `u64::MAX` used to raise the follower's term to it and then overflow
/// its `term += 1` as it campaigned (a panic in debug builds, a term wrapped to 0 in release
/// ones).
#[test]
fn a_timeout_now_at_the_largest_term_is_dropped_and_a_real_transfer_still_works() {
    let mut net = Net::new(3, RaftConfig::default());
    net.elect(1);
    let before = position(&mut net, 2);
    net.deliver(msg(1, 2, u64::MAX, MessageBody::TimeoutNow));
    assert_eq!(position(&mut net, 2), before);
    assert_eq!(net.node(2).role(), Role::Follower);
    assert_eq!(net.node(2).leader(), Some(n(1)));
    assert_eq!(net.node(2).stats().out_of_bounds, 1);
    assert!(net.flush(n(2)).is_empty(), "no vote was asked for");

    // A real hand-over to n2 still elects it, one term up, and the group commits.
    net.node(1).transfer_leader(n(2)).unwrap();
    net.settle();
    assert!(net.node(2).is_leader());
    assert_eq!(net.node(2).term(), before.0 + 1);
    net.node(2).propose("after".into()).unwrap();
    net.settle();
    for id in 1..=3 {
        assert_eq!(net.commands(id), vec!["after"], "n{id}");
    }
}

/// A term of exactly `MAX_TERM` is taken, but a replica there does not campaign: the next
/// term would be refused by every peer (and past `u64::MAX` it would wrap).
#[test]
fn a_replica_at_the_largest_term_does_not_campaign_past_it() {
    for pre_vote in [false, true] {
        let config = RaftConfig {
            pre_vote,
            ..RaftConfig::default()
        };
        let mut net = Net::new(3, config);
        net.elect(1);
        net.deliver(msg(1, 3, MAX_TERM, MessageBody::TimeoutNow));
        assert_eq!(net.node(3).term(), MAX_TERM, "pre_vote {pre_vote}");
        assert_eq!(net.node(3).role(), Role::Follower);
        // Its election timeout passes again and again: still no campaign.
        for _ in 0..5 {
            let sent = net.flush(n(3));
            assert!(
                sent.iter().all(|m| !matches!(
                    m.body,
                    MessageBody::Vote { .. } | MessageBody::PreVote { .. }
                )),
                "pre_vote {pre_vote}: {sent:?}"
            );
            let now = net.now + Duration::from_secs(3);
            net.now = now;
            net.node(3).tick(now);
            assert_eq!(net.node(3).term(), MAX_TERM);
            assert_eq!(net.node(3).role(), Role::Follower);
        }
    }
}

/// Under pre-vote, a heartbeat (or append) at term `u64::MAX` used to make the follower adopt
/// that term, and its next pre-vote, sent for `term + 1`, overflowed: the node was poisoned.
#[test]
fn a_heartbeat_or_append_at_the_largest_term_is_dropped_and_elections_go_on() {
    let config = RaftConfig::default();
    assert!(config.pre_vote);
    let mut net = Net::new(3, config);
    net.elect(1);
    let before = position(&mut net, 3);
    let (term, last, commit) = before;
    net.deliver(msg(
        1,
        3,
        u64::MAX,
        MessageBody::Heartbeat {
            commit,
            read_round: 0,
            sent_at: 0,
        },
    ));
    net.deliver(msg(
        1,
        3,
        u64::MAX,
        MessageBody::Append {
            prev_index: last,
            prev_term: term,
            entries: Vec::new(),
            commit,
            sent_at: 0,
        },
    ));
    assert_eq!(position(&mut net, 3), before);
    assert_eq!(net.node(3).stats().out_of_bounds, 2);

    // The leader goes away: n2 and n3 pre-vote for the next term (not a wrapped one), elect
    // one of them, and commit.
    net.isolate(1);
    net.run_for(Duration::from_secs(5), STEP);
    let leader = (2..=3)
        .find(|&id| net.node(id).is_leader())
        .expect("n2 or n3 took over");
    let new_term = net.node(leader).term();
    assert!(new_term > term && new_term < term + 10, "term {new_term}");
    net.node(leader).propose("after".into()).unwrap();
    net.settle();
    assert_eq!(net.commands(2), vec!["after"]);
    assert_eq!(net.commands(3), vec!["after"]);
    net.heal();
    net.run_for(Duration::from_secs(1), STEP);
    assert_eq!(net.commands(1), vec!["after"]);
}

/// A snapshot at index `u64::MAX - 1` used to be installed, after which the log's
/// `offset += 1` and the leader's `last_index() + 1` overflowed. Neither it nor an append
/// reaching that far changes anything now, and replication carries on.
#[test]
fn a_snapshot_or_append_near_the_largest_index_is_dropped_and_replication_goes_on() {
    let mut net = Net::new(3, RaftConfig::default());
    net.elect(1);
    let term = net.node(1).term();
    let before = position(&mut net, 3);
    for index in [u64::MAX - 1, MAX_INDEX + 1] {
        let meta = SnapshotMeta {
            index,
            term,
            membership: Membership::new([n(1), n(2), n(3)]),
        };
        // Stepped straight into the replica, as its host does once a transfer's data is
        // whole (the host drops snapshot messages that come as ordinary traffic).
        let now = net.now;
        net.node(3)
            .step(now, msg(1, 3, term, MessageBody::Snapshot { meta }));
    }
    let entry = Entry {
        index: u64::MAX - 1,
        term,
        payload: EntryPayload::Noop,
    };
    net.deliver(msg(
        1,
        3,
        term,
        MessageBody::Append {
            prev_index: u64::MAX - 2,
            prev_term: term,
            entries: vec![entry],
            commit: 0,
            sent_at: 0,
        },
    ));
    assert_eq!(position(&mut net, 3), before);
    assert_eq!(net.node(3).stats().out_of_bounds, 3);
    assert_eq!(net.node(3).pending_snapshot(), None);
    assert!(net.flush(n(3)).is_empty(), "nothing was acknowledged");

    net.node(1).propose("after".into()).unwrap();
    net.settle();
    assert_eq!(net.commands(3), vec!["after"]);
    assert_eq!(net.node(3).last_index(), before.1 + 1);
}

/// A membership with no voter, or with a node in two roles, cannot arrive inside a message:
/// the codec refuses the whole message.
#[test]
fn a_message_carrying_a_broken_membership_does_not_decode() {
    let limit = shoal_core::codec::MAX_MESSAGE_BYTES;
    let append = |membership: Membership| {
        msg(
            1,
            2,
            3,
            MessageBody::Append {
                prev_index: 1,
                prev_term: 1,
                entries: vec![Entry {
                    index: 2,
                    term: 3,
                    payload: EntryPayload::Membership(membership),
                }],
                commit: 1,
                sent_at: 0,
            },
        )
    };
    let good = append(Membership::new([n(1), n(2)]).with_learners([n(3)], LearnerKind::ReadOnly));
    let bytes = shoal_core::codec::encode(&good).unwrap();
    assert_eq!(
        shoal_core::codec::decode::<Message>(&bytes, limit),
        Ok(good)
    );

    // Learners and no voter (the builders let one be made, but nothing sends it).
    let no_voters = append(Membership::default().with_learners([n(3)], LearnerKind::Promotable));
    let bytes = shoal_core::codec::encode(&no_voters).unwrap();
    let refused = shoal_core::codec::decode::<Message>(&bytes, limit).unwrap_err();
    assert!(refused.to_string().contains("no voter"), "{refused}");
}

/// Delivers messages, and whatever they cause, until the network is quiet, keeping each
/// round's messages to one replica as a batch, as the driver sends them.
fn settle_recording(net: &mut Net, batches: &mut Vec<Vec<u8>>) {
    for _ in 0..1000 {
        let messages = net.flush_all();
        if messages.is_empty() {
            return;
        }
        for to in 1..=3 {
            let batch: Vec<&Message> = messages.iter().filter(|m| m.to == n(to)).collect();
            if !batch.is_empty() {
                batches.push(shoal_core::codec::encode(&batch).unwrap());
            }
        }
        for m in messages {
            net.deliver(m);
        }
    }
    panic!("the network did not settle");
}

/// Real `RaftBatch` bodies of a 3-replica group: an election, appends, heartbeats, and a
/// lagging follower brought back by a snapshot.
fn recorded_batches(config: &RaftConfig) -> Vec<Vec<u8>> {
    let mut net = Net::new(3, config.clone());
    let mut batches = Vec::new();
    net.node(1).campaign();
    settle_recording(&mut net, &mut batches);
    net.isolate(3);
    for i in 0..40 {
        net.node(1)
            .propose(Bytes::from(format!("put k{i}")))
            .unwrap();
        settle_recording(&mut net, &mut batches);
    }
    net.heal();
    for _ in 0..30 {
        net.now += STEP;
        for id in 1..=3 {
            let now = net.now;
            net.node(id).tick(now);
        }
        settle_recording(&mut net, &mut batches);
    }
    batches
}

/// Random bytes and mutations of real batches, decoded as the driver decodes a `RaftBatch`
/// and stepped into a leader and a follower: each must be refused or handled with no panic
/// (overflow checks are on in tests), and the replica's term and log stay within bounds.
#[test]
fn random_and_mutated_raft_batches_are_refused_or_handled_within_bounds() {
    const CASES: usize = 20_000;
    let config = RaftConfig {
        snapshot_after_entries: 16,
        compaction_trailing_entries: 4,
        ..RaftConfig::default()
    };
    let corpus = recorded_batches(&config);
    assert!(corpus.len() > 50, "{} batches", corpus.len());
    for seed in shoal_sim::seeds_from_env_or(0x5EED_0102, 4) {
        let mut mutator = shoal_sim::Mutator::new(seed);
        let mut net = Net::new(3, config.clone());
        net.elect(1);
        let mut decoded = 0;
        for case in 0..CASES {
            let input = mutator.next_input(&corpus);
            let Ok(batch) = shoal_core::codec::decode::<Vec<Message>>(&input, input.len()) else {
                continue;
            };
            decoded += 1;
            // Alternately at the leader and at a follower.
            let target = n(1 + (case as u64 % 2));
            for mut m in batch {
                m.to = target;
                net.deliver(m);
            }
            let _ = net.flush(target);
            let node = net.node(target.get());
            let (term, last, commit) = (node.term(), node.last_index(), node.commit_index());
            assert!(term <= MAX_TERM, "seed {seed} case {case}: term {term}");
            assert!(
                last <= MAX_INDEX,
                "seed {seed} case {case}: last index {last}"
            );
            assert!(
                commit <= last,
                "seed {seed} case {case}: commit {commit} > {last}"
            );
            if case % 100 == 99 {
                net.run_for(STEP, STEP);
            }
        }
        assert!(
            decoded > CASES / 40,
            "seed {seed}: only {decoded} inputs decoded"
        );
        // Counters pushed past their bounds reached the door and were turned away there.
        let refused: u64 = net.rafts().map(|r| r.stats().out_of_bounds).sum();
        assert!(
            refused > 0,
            "seed {seed}: no out-of-bounds input reached a replica"
        );
    }
}

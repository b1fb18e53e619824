//! One test per rule of the Raft paper (§5.1–§5.4) and of joint consensus (thesis §4.3),
//! each named after its rule, in the manner of etcd's raft_paper_test.

mod common;

use common::*;
use shoal_consensus::{
    AppendResult, ConfChange, ConfChangeError, Entry, EntryPayload, HardState, LearnerKind,
    LogStore, MemLogStore, Membership, MessageBody, ProposeError, Raft, Role,
};
use shoal_core::Instant;
use std::time::Duration;

/// A store bootstrapped for voters 1..=3 whose log continues with entries of `terms` (from
/// index 2), at hard-state term `term`.
fn store_with(terms: &[u64], term: u64) -> MemLogStore {
    let mut store = MemLogStore::new();
    Raft::bootstrap(&mut store, Membership::new([n(1), n(2), n(3)])).unwrap();
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry {
            index: i as u64 + 2,
            term: t,
            payload: EntryPayload::Command(format!("e{}", i + 2).into()),
        })
        .collect();
    store.append(&entries).unwrap();
    store
        .set_hard_state(HardState {
            term,
            vote: None,
            commit: 1,
        })
        .unwrap();
    store
}

fn replica(id: u64, store: MemLogStore) -> Raft<MemLogStore> {
    Raft::new(
        n(id),
        GROUP,
        paper_config(),
        store,
        0,
        id,
        Instant::from_millis(1),
    )
    .unwrap()
}

fn append(prev_index: u64, prev_term: u64, entries: &[(u64, u64)], commit: u64) -> MessageBody {
    MessageBody::Append {
        prev_index,
        prev_term,
        entries: entries
            .iter()
            .map(|&(index, term)| Entry {
                index,
                term,
                payload: EntryPayload::Command(format!("x{index}").into()),
            })
            .collect(),
        commit,
        sent_at: 0,
    }
}

// §5.1: current terms are exchanged; a server that sees a larger term adopts it, and a
// candidate or leader that does reverts to follower.
#[test]
fn s5_1_a_larger_term_in_any_message_updates_the_term_and_reverts_to_follower() {
    for role in [Role::Follower, Role::Candidate, Role::Leader] {
        let mut net = Net::new(3, paper_config());
        match role {
            Role::Candidate => {
                net.node(1).campaign();
            }
            Role::Leader => net.elect(1),
            _ => {}
        }
        let term = net.node(1).term();
        net.flush_all();
        net.deliver(msg(
            2,
            1,
            term + 5,
            MessageBody::Heartbeat {
                commit: 0,
                read_round: 0,
                sent_at: 0,
            },
        ));
        assert_eq!(net.node(1).term(), term + 5, "{role:?}");
        assert_eq!(net.node(1).role(), Role::Follower, "{role:?}");
        assert_eq!(net.node(1).leader(), Some(n(2)), "{role:?}");
    }
}

// §5.1: a request with a stale term is rejected.
#[test]
fn s5_1_a_stale_term_message_is_rejected() {
    let mut net = Net::new(3, paper_config());
    net.elect(1);
    net.elect(2);
    let old_term = net.node(2).term() - 1;
    let before = net.node(3).last_index();
    let before_term = net.node(3).term_at(before).unwrap();
    net.deliver(msg(
        1,
        3,
        old_term,
        append(before, before_term, &[(before + 1, old_term)], 0),
    ));
    assert_eq!(net.node(3).last_index(), before);
    assert_eq!(net.node(3).stats().stale_term, 1);
}

// §5.2: servers start as followers.
#[test]
fn s5_2_servers_start_as_followers() {
    let mut net = Net::new(3, paper_config());
    for id in 1..=3 {
        assert_eq!(net.node(id).role(), Role::Follower);
        assert_eq!(net.node(id).leader(), None);
    }
}

// §5.2: a leader sends periodic heartbeats to all followers.
#[test]
fn s5_2_a_leader_sends_heartbeats_every_interval() {
    let mut net = Net::new(3, paper_config());
    net.elect(1);
    net.settle();
    let interval = net.config.heartbeat_interval;
    net.now += interval;
    let now = net.now;
    net.node(1).tick(now);
    let sent = net.flush(n(1));
    let mut beats: Vec<_> = sent
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .map(|m| m.to)
        .collect();
    beats.sort();
    assert_eq!(beats, vec![n(2), n(3)]);
}

// §5.2: a follower that hears nothing for an election timeout becomes a candidate: it
// increments its term, votes for itself and requests votes from every other server.
#[test]
fn s5_2_a_follower_times_out_and_starts_an_election() {
    let mut net = Net::new(3, paper_config());
    let term = net.node(1).term();
    let now = net.now + net.config.election_timeout * 2;
    net.node(1).tick(now);
    assert_eq!(net.node(1).role(), Role::Candidate);
    assert_eq!(net.node(1).term(), term + 1);
    let sent = net.flush(n(1));
    assert_eq!(kinds(&sent), vec![("Vote", n(2)), ("Vote", n(3))]);
    assert_eq!(net.node(1).store().hard_state().vote, Some(n(1)));
}

// §5.2: a candidate wins with votes from a majority, loses on a majority of refusals, and
// otherwise stays a candidate.
#[test]
fn s5_2_a_candidate_wins_with_a_majority_of_votes() {
    // (cluster size, granted by, refused by, outcome)
    let cases: &[(u64, &[u64], &[u64], Role)] = &[
        (3, &[2], &[], Role::Leader),
        (3, &[], &[2, 3], Role::Follower),
        (3, &[], &[2], Role::Candidate),
        (5, &[2], &[], Role::Candidate),
        (5, &[2, 3], &[], Role::Leader),
        (5, &[2], &[3, 4, 5], Role::Follower),
    ];
    for &(size, granted, refused, outcome) in cases {
        let mut net = Net::new(size, paper_config());
        net.node(1).campaign();
        net.flush_all();
        let term = net.node(1).term();
        for &g in granted {
            net.deliver(msg(g, 1, term, MessageBody::VoteResponse { granted: true }));
        }
        for &r in refused {
            net.deliver(msg(
                r,
                1,
                term,
                MessageBody::VoteResponse { granted: false },
            ));
        }
        assert_eq!(
            net.node(1).role(),
            outcome,
            "size {size} granted {granted:?} refused {refused:?}"
        );
    }
}

// §5.2: each server votes for at most one candidate per term, first come first served.
#[test]
fn s5_2_a_server_votes_for_at_most_one_candidate_per_term() {
    let mut net = Net::new(3, paper_config());
    let term = net.node(1).term() + 1;
    let last = net.node(1).last_index();
    let vote = |from| {
        msg(
            from,
            1,
            term,
            MessageBody::Vote {
                last_index: last,
                last_term: 1,
                transfer: false,
            },
        )
    };
    net.deliver(vote(2));
    net.deliver(vote(3));
    net.deliver(vote(2));
    let answers: Vec<_> = net
        .flush(n(1))
        .into_iter()
        .map(|m| {
            (
                m.to,
                matches!(m.body, MessageBody::VoteResponse { granted: true }),
            )
        })
        .collect();
    assert_eq!(answers, vec![(n(2), true), (n(3), false), (n(2), true)]);
}

// §5.2: a candidate that receives an append from a leader of its term steps down.
#[test]
fn s5_2_a_candidate_steps_down_for_a_leader_of_its_term() {
    let mut net = Net::new(3, paper_config());
    net.node(1).campaign();
    let term = net.node(1).term();
    net.deliver(msg(
        2,
        1,
        term,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
            sent_at: 0,
        },
    ));
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(net.node(1).leader(), Some(n(2)));
}

// §5.2: election timeouts are randomized, so split votes are rare and resolve.
#[test]
fn s5_2_election_timeouts_are_randomized() {
    let config = paper_config();
    let mut fire_times = std::collections::BTreeSet::new();
    for seed in 0..50 {
        let mut store = MemLogStore::new();
        Raft::bootstrap(&mut store, Membership::new([n(1), n(2), n(3)])).unwrap();
        let mut raft =
            Raft::new(n(1), GROUP, config.clone(), store, 0, seed, Instant::ZERO).unwrap();
        let at = raft.next_deadline();
        assert!(at >= Instant::ZERO + config.election_timeout);
        assert!(at < Instant::ZERO + config.election_timeout * 2);
        raft.tick(at);
        assert_eq!(raft.role(), Role::Candidate);
        fire_times.insert(at);
    }
    assert!(
        fire_times.len() > 45,
        "timeouts are not spread: {}",
        fire_times.len()
    );
}

// §5.3: the leader appends a proposal to its log and sends it to every follower.
#[test]
fn s5_3_the_leader_appends_a_proposal_and_replicates_it() {
    let mut net = Net::new(3, paper_config());
    net.elect(1);
    let (index, term) = net.node(1).propose("x".into()).unwrap();
    assert_eq!(net.node(1).last_index(), index);
    let sent = net.flush(n(1));
    for to in [n(2), n(3)] {
        let append = sent.iter().find(|m| m.to == to).unwrap();
        let MessageBody::Append {
            entries,
            prev_index,
            ..
        } = &append.body
        else {
            panic!("expected an append, got {append:?}");
        };
        assert_eq!(*prev_index, index - 1);
        assert_eq!((entries[0].index, entries[0].term), (index, term));
    }
}

// §5.3: an entry is committed once the leader has replicated it on a majority; the leader
// applies it and followers learn of the commit.
#[test]
fn s5_3_an_entry_commits_on_a_majority_and_every_replica_applies_it() {
    let mut net = Net::new(5, paper_config());
    net.elect(1);
    net.isolate(4);
    net.isolate(5);
    net.node(1).propose("x".into()).unwrap();
    net.settle();
    assert_eq!(net.commands(1), vec!["x"]);
    assert_eq!(net.commands(2), vec!["x"]);
    assert!(net.commands(4).is_empty());
    // Without a majority nothing more commits.
    net.isolate(3);
    net.node(1).propose("y".into()).unwrap();
    net.settle();
    assert_eq!(net.commands(1), vec!["x"]);
}

// §5.3: committing an entry commits every preceding entry, including earlier leaders'.
#[test]
fn s5_3_committing_an_entry_commits_the_entries_before_it() {
    let mut nodes = vec![replica(1, store_with(&[1, 1], 1))];
    nodes.push(replica(2, store_with(&[], 1)));
    nodes.push(replica(3, store_with(&[], 1)));
    let mut net = Net::new(3, paper_config());
    for raft in nodes {
        net.insert(raft);
    }
    net.elect(1);
    net.node(1).propose("new".into()).unwrap();
    net.settle();
    assert_eq!(net.commands(3), vec!["e2", "e3", "new"]);
}

// §5.3: a follower refuses an append whose previous entry it does not hold.
#[test]
fn s5_3_a_follower_rejects_an_append_whose_previous_entry_does_not_match() {
    let mut follower = replica(2, store_with(&[1, 2], 2));
    // (prev_index, prev_term, accepted)
    for (prev_index, prev_term, accepted) in
        [(3, 2, true), (3, 1, false), (5, 2, false), (2, 1, true)]
    {
        follower.step(
            Instant::from_millis(2),
            msg(1, 2, 2, append(prev_index, prev_term, &[], 0)),
        );
        let ready = follower.ready();
        let ok = matches!(
            ready.persisted_messages[0].body,
            MessageBody::AppendResponse {
                result: AppendResult::Accepted { .. },
                ..
            }
        );
        assert_eq!(ok, accepted, "prev ({prev_index}, {prev_term})");
        follower.on_persisted(ready.persisted);
    }
}

// §5.3: a conflicting entry and everything after it are deleted, and new entries appended.
#[test]
fn s5_3_a_follower_drops_conflicting_entries_and_appends_the_leaders() {
    let mut follower = replica(2, store_with(&[1, 2, 2], 3));
    follower.step(
        Instant::from_millis(2),
        msg(1, 2, 3, append(2, 1, &[(3, 3), (4, 3)], 0)),
    );
    assert_eq!(follower.last_index(), 4);
    assert_eq!(follower.term_at(3), Some(3));
    assert_eq!(follower.term_at(4), Some(3));
    // An append the log already holds changes nothing (no truncation of later entries).
    follower.step(
        Instant::from_millis(3),
        msg(1, 2, 3, append(2, 1, &[(3, 3)], 0)),
    );
    assert_eq!(follower.last_index(), 4);
}

// §5.3 (figure 7): a new leader brings every follower's log to match its own, whatever
// entries they lack or hold in excess.
#[test]
fn s5_3_the_leader_forces_follower_logs_to_match_its_own() {
    let leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [&[u64]; 6] = [
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],
        &[1, 1, 1, 4],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
        &[1, 1, 1, 4, 4, 4, 4],
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    ];
    for follower_log in followers {
        let mut net = Net::new(3, paper_config());
        net.insert(replica(1, store_with(&leader_log, 8)));
        net.insert(replica(2, store_with(follower_log, 8)));
        net.insert(replica(3, store_with(&[], 8)));
        net.elect(1);
        net.node(1).propose("z".into()).unwrap();
        net.settle();
        let leader_last = net.node(1).last_index();
        let leader = net.node(1).entries(1, leader_last + 1);
        let last = net.node(2).last_index();
        assert_eq!(
            net.node(2).entries(1, last + 1),
            leader,
            "follower {follower_log:?}"
        );
    }
}

// §5.4.1: a vote is granted only to a candidate whose log is at least as up to date.
#[test]
fn s5_4_1_votes_go_only_to_candidates_with_up_to_date_logs() {
    // Voter log ends at (index 3, term 2).
    for (last_index, last_term, granted) in [
        (3, 2, true),
        (4, 2, true),
        (2, 2, false),
        (9, 1, false),
        (1, 3, true),
    ] {
        let mut voter = replica(2, store_with(&[1, 2], 2));
        voter.step(
            Instant::from_millis(2),
            msg(
                1,
                2,
                3,
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer: false,
                },
            ),
        );
        let ready = voter.ready();
        assert_eq!(
            ready.persisted_messages[0].body,
            MessageBody::VoteResponse { granted },
            "candidate log ({last_index}, {last_term})"
        );
    }
}

// §5.4.2 (figure 8): a leader does not commit an entry of an earlier term by counting
// replicas; it commits it only with an entry of its own term.
#[test]
fn s5_4_2_only_current_term_entries_commit_by_counting_replicas() {
    let mut net = Net::new(3, paper_config());
    // n1's log holds an unreplicated entry of term 2 at index 2; it leads in term 4.
    net.insert(replica(1, store_with(&[2], 3)));
    net.insert(replica(2, store_with(&[], 3)));
    net.insert(replica(3, store_with(&[], 3)));
    net.node(1).campaign();
    // Deliver the votes, but drop the leader's first appends (with its no-op).
    let votes = net.flush_all();
    for m in votes {
        net.deliver(m);
    }
    let answers = net.flush_all();
    for m in answers {
        net.deliver(m);
    }
    assert!(net.node(1).is_leader());
    net.flush(n(1)); // appends lost
                     // n2 acknowledges the old-term entry only (as if the no-op had not reached it).
    let term = net.node(1).term();
    net.deliver(msg(
        2,
        1,
        term,
        MessageBody::AppendResponse {
            result: AppendResult::Accepted { match_index: 2 },
            sent_at: 0,
        },
    ));
    assert_eq!(
        net.node(1).commit_index(),
        1,
        "an old-term entry was committed by counting"
    );
    // Once the no-op of the new term is on a majority, both commit.
    net.deliver(msg(
        2,
        1,
        term,
        MessageBody::AppendResponse {
            result: AppendResult::Accepted { match_index: 3 },
            sent_at: 0,
        },
    ));
    assert_eq!(net.node(1).commit_index(), 3);
}

// §5.4.3 (leader completeness): a committed entry is in the log of every later leader.
#[test]
fn s5_4_3_every_later_leader_holds_the_committed_entries() {
    let mut net = Net::new(5, paper_config());
    net.elect(1);
    net.isolate(4);
    net.isolate(5);
    net.node(1).propose("kept".into()).unwrap();
    net.settle();
    assert_eq!(net.commands(1), vec!["kept"]);
    net.heal();
    net.isolate(1);
    // n4 and n5 lack the entry: neither can win, but n2 or n3 can.
    net.node(4).campaign();
    net.settle();
    assert!(!net.node(4).is_leader());
    net.elect(2);
    net.node(2).propose("after".into()).unwrap();
    net.settle();
    for id in 2..=5 {
        assert_eq!(net.commands(id), vec!["kept", "after"], "n{id}");
    }
}

// §4.3: a voter change passes through a joint configuration, which needs majorities of both
// the old and the new voters, and the leader then leaves it on its own.
#[test]
fn s4_3_a_voter_change_goes_through_a_joint_configuration() {
    let membership =
        Membership::new([n(1), n(2), n(3)]).with_learners([n(4)], LearnerKind::Promotable);
    let mut net = Net::with_membership(membership, paper_config());
    net.elect(1);
    net.settle();
    net.node(1)
        .propose_conf_change(ConfChange::PromoteLearner(n(4)))
        .unwrap();
    // A second change is refused while the first is pending.
    assert!(matches!(
        net.node(1)
            .propose_conf_change(ConfChange::RemoveNode(n(2))),
        Err(ProposeError::ConfChange(ConfChangeError::ChangePending))
    ));
    net.settle();
    for id in 1..=4 {
        let m = net.node(id).membership().clone();
        assert!(!m.is_joint(), "n{id} still joint");
        assert_eq!(m.voters().len(), 4, "n{id}");
    }
    // The joint entry and the final entry are both in the log.
    let last = net.node(1).last_index();
    let joint_then_final: Vec<bool> = net
        .node(1)
        .entries(1, last + 1)
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(m.is_joint()),
            _ => None,
        })
        .collect();
    assert_eq!(joint_then_final, vec![false, true, false]);
}

// §4.3: in the joint configuration, the old voters alone cannot commit.
#[test]
fn s4_3_the_joint_configuration_needs_both_majorities() {
    let membership =
        Membership::new([n(1), n(2), n(3)]).with_learners([n(4), n(5)], LearnerKind::Promotable);
    let mut net = Net::with_membership(membership, paper_config());
    net.elect(1);
    net.settle();
    net.node(1)
        .propose_conf_change(ConfChange::BatchPromote(vec![n(4), n(5)]))
        .unwrap();
    // Let the joint entry commit, but stop n4 and n5 before they take the final one.
    let sent = net.flush_all();
    for m in sent {
        net.deliver(m);
    }
    let acks = net.flush_all();
    for m in acks {
        net.deliver(m);
    }
    assert!(net.node(1).membership().is_joint());
    net.isolate(4);
    net.isolate(5);
    net.node(1).propose("x".into()).unwrap();
    net.settle();
    // Old voters {1,2,3} all hold it, but the new voters {1..5} have only 3 of 5: it commits.
    assert_eq!(net.commands(1), vec!["x"]);
    // Now lose n3 too: the old half has {1,2} (a majority of 3), the new half {1,2} (not a
    // majority of 5): nothing commits.
    net.isolate(3);
    net.node(1).propose("y".into()).unwrap();
    net.settle();
    assert_eq!(net.commands(1), vec!["x"]);
}

// §4.3 (and the d-engine rule): a learner that has not caught up is not promoted.
#[test]
fn s4_3_promoting_a_learner_that_lags_is_refused() {
    let config = shoal_consensus::RaftConfig {
        promote_max_lag: 2,
        ..paper_config()
    };
    let membership =
        Membership::new([n(1), n(2), n(3)]).with_learners([n(4)], LearnerKind::Promotable);
    let mut net = Net::with_membership(membership, config);
    net.isolate(4);
    net.elect(1);
    for i in 0..5 {
        net.node(1).propose(format!("{i}").into()).unwrap();
    }
    net.settle();
    assert!(matches!(
        net.node(1)
            .propose_conf_change(ConfChange::PromoteLearner(n(4))),
        Err(ProposeError::ConfChange(
            ConfChangeError::NotCaughtUp { .. }
        ))
    ));
    net.heal();
    net.run_for(Duration::from_millis(300), Duration::from_millis(100));
    net.node(1)
        .propose_conf_change(ConfChange::PromoteLearner(n(4)))
        .unwrap();
}

// §4.2.2: a leader removed from the configuration steps down once the change commits, and
// the remaining voters carry on.
#[test]
fn s4_2_2_a_removed_leader_steps_down_after_the_change_commits() {
    let mut net = Net::new(3, paper_config());
    net.elect(1);
    net.node(1)
        .propose_conf_change(ConfChange::RemoveNode(n(1)))
        .unwrap();
    net.settle();
    assert_eq!(net.node(1).role(), Role::Follower);
    assert!(!net.node(2).membership().contains(n(1)));
    // It handed over: one of the others leads, and takes proposals.
    let leader = (2..=3)
        .find(|&id| net.node(id).is_leader())
        .expect("a successor leads");
    net.node(leader).propose("on".into()).unwrap();
    net.settle();
    let other = 5 - leader;
    assert_eq!(net.commands(other), vec!["on"]);
}

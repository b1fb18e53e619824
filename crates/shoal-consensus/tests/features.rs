//! The features beyond the paper's core: pre-vote, check-quorum, leader stickiness, reads,
//! leadership transfer, learners, snapshots, asynchronous persistence, restarts, and the
//! refusal of bad input.

mod common;

use common::*;
use shoal_consensus::{
    ConfChange, LearnerKind, LogStore, MemLogStore, Membership, MessageBody, ProposeError, Raft,
    RaftConfig, ReadError, ReadMode, ReplicaState, Role, TransferError,
};
use std::time::Duration;

const STEP: Duration = Duration::from_millis(50);

fn full_config() -> RaftConfig {
    RaftConfig::default()
}

#[test]
fn pre_vote_keeps_an_isolated_node_from_raising_its_term_and_disrupting_on_return() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.run_for(Duration::from_secs(10), STEP);
    assert_eq!(
        net.node(3).term(),
        term,
        "pre-votes must not raise the term"
    );
    net.heal();
    net.run_for(Duration::from_secs(2), STEP);
    assert!(net.node(1).is_leader());
    assert_eq!(net.node(1).term(), term);
}

#[test]
fn without_pre_vote_the_same_isolation_deposes_the_leader() {
    let config = RaftConfig {
        pre_vote: false,
        check_quorum: false,
        ..full_config()
    };
    let mut net = Net::new(3, config);
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.run_for(Duration::from_secs(10), STEP);
    assert!(net.node(3).term() > term);
    net.heal();
    net.run_for(Duration::from_secs(3), STEP);
    assert!(
        net.node(1).term() > term,
        "the returning node's term deposed the leader"
    );
}

#[test]
fn check_quorum_makes_a_cut_off_leader_step_down() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    net.isolate(1);
    net.run_for(Duration::from_secs(3), STEP);
    assert_eq!(net.node(1).role(), Role::Follower);
    let new_leader = (2..=3).find(|&id| net.node(id).is_leader());
    assert!(new_leader.is_some(), "the majority side elected a leader");
}

#[test]
fn a_follower_with_a_live_leader_ignores_vote_requests() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    let term = net.node(2).term();
    let last = net.node(2).last_index();
    let last_term = net.node(2).term_at(last).unwrap();
    net.deliver(msg(
        3,
        2,
        term + 1,
        MessageBody::Vote {
            last_index: last,
            last_term,
            transfer: false,
        },
    ));
    assert_eq!(
        net.node(2).term(),
        term,
        "stickiness: the term did not move"
    );
    assert_eq!(net.node(2).stats().votes_ignored_in_lease, 1);
    // A transfer's vote is not ignored.
    net.deliver(msg(
        3,
        2,
        term + 1,
        MessageBody::Vote {
            last_index: last,
            last_term,
            transfer: true,
        },
    ));
    assert_eq!(net.node(2).term(), term + 1);
}

#[test]
fn read_index_is_served_after_a_heartbeat_round_at_the_commit_index() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    net.node(1).propose("a".into()).unwrap();
    net.settle();
    let commit = net.node(1).commit_index();
    net.read(1, 7, ReadMode::Safe);
    // Not served before the round trip.
    let first = net.flush(n(1));
    assert!(net.reads[&n(1)].is_empty());
    assert!(first
        .iter()
        .any(|m| matches!(m.body, MessageBody::Heartbeat { read_round: 1, .. })));
    for m in first {
        net.deliver(m);
    }
    net.settle();
    let reads = &net.reads[&n(1)];
    assert_eq!(reads.len(), 1);
    assert_eq!((reads[0].ctx, reads[0].index), (7, commit));
}

#[test]
fn a_leader_cut_off_from_its_quorum_never_confirms_a_read() {
    let config = RaftConfig {
        check_quorum: false,
        pre_vote: false,
        ..full_config()
    };
    let mut net = Net::new(3, config);
    net.elect(1);
    net.isolate(1);
    net.read(1, 1, ReadMode::Safe);
    net.run_for(Duration::from_secs(5), STEP);
    assert!(net.reads[&n(1)].is_empty());
    // Lease reads are off without check-quorum.
    net.read(1, 2, ReadMode::Lease);
    net.settle();
    assert!(net.reads[&n(1)].is_empty());
}

#[test]
fn lease_reads_are_served_at_once_while_the_lease_holds_and_not_after() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    net.run_for(Duration::from_millis(200), STEP);
    assert!(net.node(1).lease_valid());
    net.read(1, 1, ReadMode::Lease);
    let sent = net.flush(n(1));
    assert_eq!(net.reads[&n(1)].len(), 1, "served without a round trip");
    assert!(sent
        .iter()
        .all(|m| !matches!(m.body, MessageBody::Heartbeat { read_round: 1, .. })));
    // Cut off, the lease runs out well before another leader could be elected.
    net.isolate(1);
    let now = net.now + (net.config.election_timeout - net.config.max_clock_drift);
    net.node(1).tick(now);
    net.now = now;
    net.flush_all();
    assert!(!net.node(1).lease_valid());
}

#[test]
fn follower_and_learner_reads_go_through_the_leaders_read_index() {
    let membership =
        Membership::new([n(1), n(2), n(3)]).with_learners([n(4)], LearnerKind::ReadOnly);
    let mut net = Net::with_membership(membership, full_config());
    net.elect(1);
    net.node(1).propose("a".into()).unwrap();
    net.settle();
    for id in [2, 4] {
        net.read(id, 40 + id, ReadMode::Safe);
        net.settle();
        let reads = &net.reads[&n(id)];
        assert_eq!(reads.len(), 1, "n{id}");
        assert_eq!(reads[0].index, net.raft(n(1)).commit_index());
    }
    // With no leader known, a follower read fails at once.
    let mut lone = Net::new(3, full_config());
    lone.read(2, 9, ReadMode::Safe);
    let ready = lone.node(2).ready();
    assert_eq!(
        ready.failed_reads,
        vec![(9, ReadError::NotLeader { leader: None })]
    );
}

#[test]
fn leadership_transfer_hands_over_and_refuses_proposals_meanwhile() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    net.isolate(3);
    net.node(1).propose("x".into()).unwrap();
    net.settle();
    assert_eq!(
        net.node(1).transfer_leader(n(9)),
        Err(TransferError::NotAVoter(n(9)))
    );
    net.node(1).transfer_leader(n(3)).unwrap();
    assert!(matches!(
        net.node(1).propose("refused".into()),
        Err(ProposeError::TransferInProgress { to }) if to == n(3)
    ));
    net.heal();
    net.run_for(Duration::from_millis(300), STEP);
    assert!(net.node(3).is_leader(), "n3 caught up and took over");
    assert_eq!(net.node(1).leader(), Some(n(3)));
    assert_eq!(
        net.node(2).transfer_leader(n(1)),
        Err(TransferError::NotLeader)
    );
}

#[test]
fn read_only_learners_replicate_but_never_vote_or_get_promoted() {
    let membership =
        Membership::new([n(1), n(2), n(3)]).with_learners([n(4)], LearnerKind::ReadOnly);
    let mut net = Net::with_membership(membership, full_config());
    net.elect(1);
    net.node(1).propose("a".into()).unwrap();
    net.settle();
    assert_eq!(net.commands(4), vec!["a"]);
    assert!(net
        .node(1)
        .propose_conf_change(ConfChange::PromoteLearner(n(4)))
        .is_err());
    // A learner never campaigns.
    net.isolate(1);
    net.isolate(4);
    net.run_for(Duration::from_secs(5), STEP);
    assert_eq!(net.node(4).role(), Role::Follower);
    assert_eq!(net.node(4).term(), net.raft(n(4)).term());
}

#[test]
fn a_new_node_joins_as_a_learner_catches_up_and_is_promoted() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    for i in 0..20 {
        net.node(1).propose(format!("{i}").into()).unwrap();
    }
    net.settle();
    net.add_node(n(4), MemLogStore::new());
    net.node(1)
        .propose_conf_change(ConfChange::AddNode {
            node: n(4),
            kind: LearnerKind::Promotable,
        })
        .unwrap();
    net.run_for(Duration::from_millis(500), STEP);
    assert_eq!(net.commands(4).len(), 20);
    net.node(1)
        .propose_conf_change(ConfChange::PromoteLearner(n(4)))
        .unwrap();
    net.run_for(Duration::from_millis(500), STEP);
    assert!(net.rafts().all(|r| r.membership().voters().len() == 4));
}

/// A follower that fell behind the leader's compaction point gets a snapshot streamed beside
/// Raft traffic, in several chunks; a failed transfer is reported, and the leader asks for
/// another after the follower next answers it.
#[test]
fn a_lagging_follower_receives_a_snapshot_and_a_failed_transfer_is_retried() {
    let config = RaftConfig {
        snapshot_after_entries: 50,
        compaction_trailing_entries: 5,
        ..full_config()
    };
    let mut net = Net::new(3, config);
    net.elect(1);
    net.isolate(3);
    for i in 0..120 {
        net.node(1)
            .propose(format!("command-{i:03}").into())
            .unwrap();
        net.settle();
    }
    assert!(
        net.node(1).store().first_index() > 50,
        "the leader compacted its log"
    );
    net.heal();
    net.fail_transfers = 1;
    net.run_for(Duration::from_secs(3), STEP);
    assert_eq!(net.transfers_failed, 1);
    assert!(net.snapshots_sent >= 1);
    assert!(
        net.largest_transfer_chunks > 1,
        "the snapshot took several chunks"
    );
    assert_eq!(net.commands(3), net.commands(1));
    assert_eq!(net.commands(3).len(), 120);
    let status = net.node(1).status();
    assert!(status
        .replicas
        .iter()
        .all(|r| r.state == ReplicaState::Replicate && r.snapshot_for.is_none()));
}

/// Snapshot messages come only after their data: one arriving as ordinary traffic (from a
/// broken or hostile peer) is dropped by the host before the replica sees it.
#[test]
fn a_snapshot_message_without_its_data_is_dropped_and_changes_nothing() {
    let mut net = Net::new(3, full_config());
    let meta = shoal_consensus::SnapshotMeta {
        index: 50,
        term: 1,
        membership: Membership::new([n(1), n(2), n(3)]),
    };
    net.deliver(msg(1, 2, 1, MessageBody::Snapshot { meta }));
    assert_eq!(net.hosts[&n(2)].stats().unsolicited_snapshots, 1);
    assert_eq!(net.node(2).last_index(), 1);
    assert_eq!(net.node(2).commit_index(), 1);
}

#[test]
fn the_leader_counts_itself_only_once_its_own_write_is_persisted() {
    let mut net = Net::new(1, full_config());
    net.node(1).campaign();
    // A single voter wins at once but commits nothing until its disk write is done.
    assert!(net.node(1).is_leader());
    let ready = net.node(1).ready();
    assert!(!ready.entries.is_empty());
    assert_eq!(net.node(1).commit_index(), 1);
    persist(net.node(1), &ready);
    net.node(1).on_persisted(ready.persisted);
    assert_eq!(net.node(1).commit_index(), 2);
}

#[test]
fn a_follower_acknowledges_only_after_persisting() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    net.node(1).propose("x".into()).unwrap();
    for m in net.flush(n(1)) {
        net.deliver(m);
    }
    let ready = net.node(2).ready();
    assert!(ready.messages.is_empty());
    assert!(ready
        .persisted_messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::AppendResponse { .. })));
    assert!(!ready.entries.is_empty());
}

#[test]
fn a_restarted_replica_keeps_its_term_vote_and_log() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    net.node(1).propose("x".into()).unwrap();
    net.settle();
    let mut old = net.remove(n(2));
    let (term, last, commit) = (old.term(), old.last_index(), old.commit_index());
    let vote = old.store().hard_state().vote;
    let store = std::mem::take(old.store_mut());
    let restarted = Raft::new(n(2), GROUP, full_config(), store, 0, 2, net.now).unwrap();
    assert_eq!(
        (
            restarted.term(),
            restarted.last_index(),
            restarted.commit_index()
        ),
        (term, last, commit)
    );
    assert_eq!(restarted.store().hard_state().vote, vote);
    net.insert(restarted);
    net.settle();
    // Committed entries are handed out again for a state machine that starts empty.
    assert_eq!(net.commands(2), vec!["x"]);
}

#[test]
fn bad_input_is_dropped_and_counted() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    let before = net.node(2).status();
    // From a node that is not a member.
    net.deliver(msg(
        9,
        2,
        99,
        MessageBody::Heartbeat {
            commit: 100,
            read_round: 0,
            sent_at: 0,
        },
    ));
    // For another group: the host hands it back (its driver may create the group), and the
    // replica drops it if it gets it anyway.
    let mut other = msg(1, 2, 99, MessageBody::TimeoutNow);
    other.group = shoal_core::GroupId::new(99);
    let now = net.now;
    let back = net.hosts.get_mut(&n(2)).unwrap().step(now, other.clone());
    assert_eq!(back, Some(other.clone()));
    net.node(2).step(now, other);
    let after = net.node(2).status();
    assert_eq!(after.stats.dropped_unknown_sender, 1);
    assert_eq!(after.stats.dropped_misaddressed, 1);
    assert_eq!((after.term, after.commit), (before.term, before.commit));
    // A commit index beyond the log is clamped.
    let term = net.node(2).term();
    net.deliver(msg(
        1,
        2,
        term,
        MessageBody::Heartbeat {
            commit: 10_000,
            read_round: 0,
            sent_at: 0,
        },
    ));
    assert_eq!(net.node(2).commit_index(), net.node(2).last_index());
    assert_eq!(net.node(2).stats().commit_beyond_log, 1);
    // Oversized proposals and proposals to a follower are refused.
    let big = vec![0u8; (net.config.max_proposal_bytes + 1) as usize];
    assert!(matches!(
        net.node(1).propose(big.into()),
        Err(ProposeError::TooLarge { .. })
    ));
    assert_eq!(
        net.node(2).propose("x".into()),
        Err(ProposeError::NotLeader { leader: Some(n(1)) })
    );
}

#[test]
fn too_much_uncommitted_data_is_refused_as_overloaded() {
    let config = RaftConfig {
        max_uncommitted_bytes: 1000,
        max_proposal_bytes: 500,
        ..full_config()
    };
    let mut net = Net::new(3, config);
    net.elect(1);
    net.isolate(1);
    let mut refused = false;
    for _ in 0..10 {
        if net.node(1).propose(vec![0u8; 400].into()) == Err(ProposeError::Overloaded) {
            refused = true;
            break;
        }
    }
    assert!(refused);
}

#[test]
fn extreme_indexes_from_a_peer_change_nothing_and_do_not_panic() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    let term = net.node(1).term();
    let (last, commit) = (net.node(2).last_index(), net.node(2).commit_index());
    // An append whose previous index is the largest there is, with an entry after it.
    let entry = shoal_consensus::Entry {
        index: u64::MAX,
        term,
        payload: shoal_consensus::EntryPayload::Noop,
    };
    net.deliver(msg(
        1,
        2,
        term,
        MessageBody::Append {
            prev_index: u64::MAX,
            prev_term: term,
            entries: vec![entry],
            commit: u64::MAX,
            sent_at: 0,
        },
    ));
    assert_eq!(
        (net.node(2).last_index(), net.node(2).commit_index()),
        (last, commit)
    );
    // Rejections and snapshot answers with absurd positions, at the leader.
    net.deliver(msg(
        2,
        1,
        term,
        MessageBody::AppendResponse {
            result: shoal_consensus::AppendResult::Rejected {
                prev_index: u64::MAX,
                hint_index: u64::MAX,
                hint_term: u64::MAX,
            },
            sent_at: 0,
        },
    ));
    // A snapshot at the largest index (stepped straight into the replica, as its host does
    // once a transfer's data is whole) is refused.
    let meta = shoal_consensus::SnapshotMeta {
        index: u64::MAX,
        term,
        membership: Membership::new([n(1), n(2), n(3)]),
    };
    let now = net.now;
    net.node(3)
        .step(now, msg(1, 3, term, MessageBody::Snapshot { meta }));
    // Each was dropped at the door, as out of bounds.
    assert_eq!(net.node(1).stats().out_of_bounds, 1);
    assert_eq!(net.node(2).stats().out_of_bounds, 1);
    assert_eq!(net.node(3).stats().out_of_bounds, 1);
    assert_eq!(net.node(3).pending_snapshot(), None);
    net.settle();
    net.node(1).propose("still works".into()).unwrap();
    net.settle();
    assert_eq!(net.commands(3), vec!["still works"]);
}

#[test]
fn a_forwarded_read_whose_answer_is_lost_fails_after_an_election_timeout() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    net.cut.insert((n(1), n(2)));
    net.read(2, 5, ReadMode::Safe);
    net.settle();
    let timeout = net.config.election_timeout;
    let now = net.now + timeout;
    net.node(2).tick(now);
    let ready = net.node(2).ready();
    assert_eq!(
        ready.failed_reads,
        vec![(5, ReadError::NotLeader { leader: Some(n(1)) })]
    );
}

/// A leader cut off while the others remove it keeps leading its old term (check-quorum
/// off). Once the network heals, the members still drop its appends because it is no longer
/// one of them, but they answer with their newer term, so it steps down. Without that answer
/// it led its stale configuration forever (found by the churn simulation, seed
/// 9499466914624073909).
#[test]
fn a_removed_leader_cut_off_during_its_removal_learns_the_newer_term_and_steps_down() {
    let mut net = Net::new(4, paper_config());
    net.elect(1);
    net.isolate(1);
    net.elect(2);
    net.node(2)
        .propose_conf_change(ConfChange::RemoveNode(n(1)))
        .unwrap();
    net.settle();
    net.run_for(Duration::from_millis(200), STEP);
    assert!(!net.node(2).membership().contains(n(1)));
    assert!(net.node(1).is_leader(), "still leading its old term");

    net.heal();
    net.run_for(Duration::from_millis(500), STEP);
    assert!(!net.node(1).is_leader(), "the removed leader stepped down");
    assert!(net.node(1).term() >= net.node(2).term());
    assert!(net.node(2).is_leader(), "the group kept its leader");
    assert!(net.node(2).status().stats.dropped_unknown_sender > 0);
}

/// A snapshot whose last entry the follower already holds is not installed: installing it
/// would drop the entries after it, which the follower has acknowledged and the leader
/// counts as replicated (the leader then probed at an index the follower no longer had,
/// forever: found by the simulation, seed 14482594386317032024). The follower commits up
/// to the snapshot instead and keeps its log (Raft §7).
#[test]
fn a_snapshot_the_log_already_covers_commits_instead_of_dropping_later_entries() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    let term = net.node(1).term();
    let commit = net.node(2).commit_index();
    // Two entries reach n2 and are acknowledged, but it never hears they committed.
    net.node(1).propose("x".into()).unwrap();
    net.node(1).propose("y".into()).unwrap();
    for m in net.flush(n(1)) {
        if m.to == n(2) {
            net.deliver(m);
        }
    }
    let _ = net.flush(n(2));
    let last = net.node(2).last_index();
    assert_eq!(last, commit + 2);
    assert_eq!(net.node(2).commit_index(), commit);

    // A snapshot at the first of them arrives (a late or duplicated one), stepped as the
    // host does once its data is whole.
    let meta = shoal_consensus::SnapshotMeta {
        index: commit + 1,
        term,
        membership: Membership::new([n(1), n(2), n(3)]),
    };
    let now = net.now;
    net.node(2)
        .step(now, msg(1, 2, term, MessageBody::Snapshot { meta }));
    assert_eq!(net.node(2).pending_snapshot(), None, "not installed");
    assert_eq!(
        net.node(2).last_index(),
        last,
        "the acknowledged entries stay"
    );
    assert_eq!(net.node(2).commit_index(), commit + 1);
    assert_eq!(net.node(2).term_at(last), Some(term));
}

/// Log compaction follows the state machine's own durability: the leader compacts once it
/// persisted its state machine, keeps nothing of a snapshot in memory, and a follower that
/// falls behind later is sent a fresh snapshot of the state machine as it is then.
#[test]
fn compaction_follows_the_state_machine_and_late_followers_get_a_fresh_snapshot() {
    let config = RaftConfig {
        snapshot_after_entries: 20,
        compaction_trailing_entries: 2,
        ..full_config()
    };
    let timeout = config.election_timeout;
    let mut net = Net::new(3, config);
    net.elect(1);
    for i in 0..30 {
        net.node(1).propose(format!("a{i}").into()).unwrap();
        net.settle();
    }
    let first = net.node(1).status().snapshot_index;
    assert!(first >= 20, "compacted at {first}");
    assert_eq!(net.snapshots_sent, 0);

    // n3 falls behind past the compaction point and needs a snapshot.
    net.isolate(3);
    for i in 0..30 {
        net.node(1).propose(format!("b{i}").into()).unwrap();
        net.settle();
    }
    net.run_for(timeout * 2, STEP);
    net.heal();
    net.run_for(Duration::from_secs(3), STEP);
    assert_eq!(net.snapshots_sent, 1);
    assert!(net.node(3).status().snapshot_index > first);
    assert_eq!(net.commands(3), net.commands(1));
    assert_eq!(net.commands(3).len(), 60);
}

/// A quiet group's log is compacted on request, not only every `snapshot_after_entries`: a
/// follower drops every entry its state machine made durable; the leader drops what its
/// followers hold, but keeps what a lagging one still needs (within
/// `compaction_trailing_entries`), so that it catches up from the log, not a snapshot.
#[test]
fn a_requested_compaction_empties_a_quiet_log_but_keeps_what_a_follower_needs() {
    let mut net = Net::new(3, full_config());
    net.elect(1);
    for i in 0..10 {
        net.node(1).propose(format!("quiet-{i}").into()).unwrap();
        net.settle();
    }
    for id in 1..=3 {
        assert!(net.node(id).request_compaction(), "node {id}");
    }
    net.settle();
    for id in 1..=3 {
        let raft = net.node(id);
        assert_eq!(
            raft.store().first_index(),
            raft.applied_index() + 1,
            "node {id} kept entries"
        );
        // Nothing left to compact: asking again is a no-op.
        assert!(!raft.request_compaction(), "node {id}");
    }

    // Node 3 falls behind; the leader keeps its entries, the other follower does not.
    net.isolate(3);
    for i in 0..10 {
        net.node(1).propose(format!("lagging-{i}").into()).unwrap();
        net.settle();
    }
    let behind = net.node(3).last_index();
    assert!(net.node(1).request_compaction());
    assert!(net.node(2).request_compaction());
    net.settle();
    assert_eq!(net.node(1).store().first_index(), behind + 1);
    assert_eq!(
        net.node(2).store().first_index(),
        net.node(2).applied_index() + 1
    );
    net.heal();
    net.run_for(Duration::from_secs(2), STEP);
    assert_eq!(net.snapshots_sent, 0, "caught up from the log");
    assert_eq!(net.commands(3), net.commands(1));
    assert_eq!(net.commands(3).len(), 20);
}

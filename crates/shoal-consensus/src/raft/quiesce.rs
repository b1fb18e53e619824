//! Quiescence ([`crate::RaftConfig::quiesce`]): an idle group stops heartbeating and its
//! followers stop their election timers, so a node hosting thousands of idle groups spends
//! nothing on them (CockroachDB's quiesced ranges, TiKV's hibernate regions).
//!
//! A leader goes quiet when, at a heartbeat, nothing is in flight: every entry committed
//! and applied, no read waiting, no leadership transfer, no membership change under way,
//! and every follower holding the whole log with no snapshot being sent. It sends each
//! follower a [`MessageBody::Quiesce`] instead of the heartbeat. A follower whose log
//! reaches the commit it names goes quiet too; one that is behind stays awake, times out,
//! and its pre-vote wakes the leader.
//!
//! What wakes a replica: on a leader, a proposal, a read, a membership change, a transfer,
//! or any message but a heartbeat's answer; on a follower, its leader's appends,
//! heartbeats or snapshots, a local read, a handed-over leadership, and
//! [`Raft::peer_down`] for its leader. A quiet follower treats its leader as live (leader
//! stickiness holds without a timer), so the failure detector that calls
//! [`Raft::peer_down`] is what ends a dead leader's term.

use super::{Raft, Role};
use crate::entry::LogIndex;
use crate::message::MessageBody;
use crate::store::LogStore;
use shoal_core::NodeId;
use std::time::Duration;

/// How far away a quiet replica says its next deadline is: it has none; only an input
/// wakes it.
pub(super) const QUIET_DEADLINE: Duration = Duration::from_secs(3600);

impl<S: LogStore> Raft<S> {
    /// Whether the replica is quiesced.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Wakes a quiet replica: a leader heartbeats at its next tick and gives its followers
    /// a full election timeout to answer before a quorum check; a follower restarts its
    /// election timer (its leader counted as just heard from). Does nothing to a replica
    /// that is awake.
    pub fn wake(&mut self) {
        if !self.quiet {
            return;
        }
        self.quiet = false;
        if self.role == Role::Leader {
            self.heartbeat_deadline = self.now;
            self.quorum_check_deadline = self.now + self.config.election_timeout;
            for pr in self.progress.values_mut() {
                pr.recent_active = true;
            }
        } else {
            self.leader_contact = Some(self.now);
            self.reset_election_deadline();
        }
    }

    /// A failure detector says `node` is down. A quiet follower of `node` wakes without
    /// leader stickiness, so it and the other followers can elect a new leader after an
    /// election timeout; anything else is unchanged (an awake follower notices a dead
    /// leader by its own timer).
    pub fn peer_down(&mut self, node: NodeId) {
        if self.quiet && self.role != Role::Leader && self.leader == Some(node) {
            self.wake();
            self.leader_contact = None;
        }
    }

    /// Whether this leader may go quiet now (see the module docs).
    pub(super) fn may_quiesce(&self) -> bool {
        let last = self.log.last_index();
        self.config.quiesce
            && self.role == Role::Leader
            && self.transfer.is_none()
            && !self.membership.is_joint()
            && self.pending_memberships.is_empty()
            && self.uncommitted.is_empty()
            && self.log.committed == last
            && self.log.applied == last
            && self.reads.is_idle()
            && self.send_snapshots.is_empty()
            && !self.broadcast_pending
            && self
                .progress
                .values()
                .all(|pr| pr.match_index == last && pr.snapshot.is_none())
    }

    /// Goes quiet, telling every follower.
    pub(super) fn quiesce(&mut self) {
        self.quiet = true;
        let commit = self.log.committed;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            if let Some(pr) = self.progress.get_mut(&peer) {
                pr.commit_sent = pr.commit_sent.max(commit);
            }
            self.send(peer, MessageBody::Quiesce { commit });
        }
    }

    /// The leader went quiet at `commit` (the replica already follows it): commit through
    /// it, and go quiet if this log reaches it.
    pub(super) fn handle_quiesce(&mut self, from: NodeId, commit: LogIndex) {
        let last = self.log.last_index();
        if commit > last {
            self.stats.commit_beyond_log += 1;
            tracing::debug!(id = %self.id, %from, commit, last, "quiesce beyond the log; staying awake");
            self.commit_to(last);
            return;
        }
        self.commit_to(commit);
        if self.config.quiesce {
            self.quiet = true;
        }
    }
}

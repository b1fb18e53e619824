//! Membership changes (joint consensus, Raft thesis §4.3) and leadership transfer (§3.10).

use super::{Raft, Role, Transfer};
use crate::entry::{EntryPayload, LogIndex, Term};
use crate::error::{ProposeError, TransferError};
use crate::membership::{ConfChange, ConfChangeError, Membership};
use crate::message::MessageBody;
use crate::progress::Progress;
use crate::store::LogStore;
use shoal_core::NodeId;

impl<S: LogStore> Raft<S> {
    /// Proposes a membership change. Refused while another is pending or the group is joint,
    /// and for a promotion of a learner more than `promote_max_lag` entries behind the
    /// commit index. A voter change enters a joint configuration, and the leader leaves it
    /// on its own once that is committed.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.wake();
        let result = self.check_conf_change(&change).map(|next| {
            let index = self.append_entry(EntryPayload::Membership(next));
            (index, self.term)
        });
        if result.is_err() {
            self.stats.proposals_refused += 1;
        }
        result
    }

    fn check_conf_change(&self, change: &ConfChange) -> Result<Membership, ProposeError> {
        self.check_proposal(0)?;
        if !self.pending_memberships.is_empty() {
            return Err(ConfChangeError::ChangePending.into());
        }
        let next = self.membership.apply(change)?;
        for node in next.promoted_nodes() {
            let matched = self.progress.get(&node).map_or(0, |p| p.match_index);
            let lag = self.log.committed.saturating_sub(matched);
            if lag > self.config.promote_max_lag {
                return Err(ConfChangeError::NotCaughtUp { node, lag }.into());
            }
        }
        Ok(next)
    }

    /// A membership entry committed at `index`: it is now in force.
    pub(super) fn apply_membership(&mut self, index: LogIndex, membership: Membership) {
        tracing::info!(id = %self.id, group = %self.group, index, ?membership, "membership in force");
        self.membership = membership;
        self.membership_history
            .push((index, self.membership.clone()));
        if self.role != Role::Leader {
            return;
        }
        let next = self.log.last_index() + 1;
        let now = self.now;
        let members = self.membership.members();
        self.progress.retain(|n, _| members.contains(n));
        for node in members {
            if node != self.id {
                self.progress
                    .entry(node)
                    .or_insert_with(|| Progress::new(next, now));
            }
        }
        if self
            .transfer
            .is_some_and(|t| !self.membership.voters().contains(&t.target))
        {
            self.transfer = None;
        }
        if self.membership.is_joint() {
            if self.pending_memberships.is_empty() {
                let next = self.membership.leave_joint();
                self.append_entry(EntryPayload::Membership(next));
            }
        } else if !self.membership.is_voter(self.id) {
            self.step_down_removed();
        }
    }

    /// This leader is no longer a voter: tell the others the commit index, hand leadership to
    /// the most up-to-date voter, and step down.
    fn step_down_removed(&mut self) {
        tracing::info!(id = %self.id, group = %self.group, "removed from the voters; stepping down");
        self.broadcast_heartbeat();
        let successor = self
            .progress
            .iter()
            .filter(|(n, _)| self.membership.voters().contains(n))
            .max_by_key(|(_, p)| p.match_index)
            .map(|(&n, p)| (n, p.match_index));
        if let Some((node, matched)) = successor {
            if matched >= self.log.last_index() {
                self.send(node, MessageBody::TimeoutNow);
            }
        }
        self.become_follower(self.term, None);
    }

    /// Hands leadership to `target`, a voter: proposals are refused meanwhile, the target is
    /// brought up to date, then told to campaign at once. Abandoned after an election
    /// timeout.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), TransferError> {
        self.wake();
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        if target == self.id || !self.membership.voters().contains(&target) {
            return Err(TransferError::NotAVoter(target));
        }
        tracing::info!(id = %self.id, %target, "transferring leadership");
        self.transfer = Some(Transfer {
            target,
            deadline: self.now + self.config.election_timeout,
        });
        self.continue_transfer(target);
        if self.transfer.is_some() {
            while self.send_append(target, false) {}
        }
        Ok(())
    }

    /// The transfer target may have caught up: if so, tell it to campaign.
    pub(super) fn continue_transfer(&mut self, node: NodeId) {
        let Some(t) = self.transfer else {
            return;
        };
        if t.target != node {
            return;
        }
        let caught_up = self
            .progress
            .get(&node)
            .is_some_and(|p| p.match_index >= self.log.last_index());
        if caught_up {
            self.send(node, MessageBody::TimeoutNow);
        }
    }

    /// The membership in force at `index`, from the history since the last snapshot.
    pub(super) fn membership_at(&self, index: LogIndex) -> Membership {
        self.membership_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

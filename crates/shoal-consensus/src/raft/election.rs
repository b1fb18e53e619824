//! Elections (§5.2): pre-vote, voting, and the transitions to candidate and leader.

use super::{Raft, Role};
use crate::entry::{EntryPayload, LogIndex, Term, MAX_TERM};
use crate::membership::VoteResult;
use crate::message::MessageBody;
use crate::progress::Progress;
use crate::store::LogStore;
use shoal_core::NodeId;

impl<S: LogStore> Raft<S> {
    /// Starts an election now, as if the election timeout had passed (with a pre-vote when
    /// configured). Does nothing on a leader or a non-voter. For operators and tests.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader {
            self.start_campaign(false);
        }
    }

    /// Starts an election: a pre-vote first unless disabled or handed leadership.
    pub(super) fn start_campaign(&mut self, transfer: bool) {
        if !self.membership.is_voter(self.id) {
            return;
        }
        if self.config.pre_vote && !transfer {
            self.start_pre_vote();
        } else {
            self.start_election(transfer);
        }
    }

    fn start_campaign_round(&mut self) {
        self.quiet = false;
        self.leader_contact = None;
        self.set_leader(None);
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_deadline();
    }

    /// The term a campaign would enter, or `None` at [`MAX_TERM`]: peers refuse terms past
    /// it, and past `u64::MAX` the term would wrap to 0 and break election safety. Only a
    /// store restored with an absurd term, or a peer that sent exactly [`MAX_TERM`], gets
    /// here.
    fn next_term(&self) -> Option<Term> {
        self.term.checked_add(1).filter(|&t| t <= MAX_TERM)
    }

    /// The term cannot be raised: stay a follower instead of campaigning.
    fn term_exhausted(&mut self) {
        tracing::error!(id = %self.id, term = self.term, group = %self.group, "the term is at its bound; not campaigning");
        if self.role == Role::Follower {
            self.reset_election_deadline();
        } else {
            self.become_follower(self.term, None);
        }
    }

    fn start_pre_vote(&mut self) {
        let Some(next_term) = self.next_term() else {
            return self.term_exhausted();
        };
        self.start_campaign_round();
        self.role = Role::PreCandidate;
        tracing::debug!(id = %self.id, term = next_term, "pre-vote");
        if self.tally() == VoteResult::Won {
            return self.start_election(false);
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.other_voters() {
            self.send_in_term(
                peer,
                next_term,
                MessageBody::PreVote {
                    last_index,
                    last_term,
                },
            );
        }
    }

    /// A real election in a new term. `transfer`: the leader handed over, so followers'
    /// stickiness does not apply.
    fn start_election(&mut self, transfer: bool) {
        let Some(next_term) = self.next_term() else {
            return self.term_exhausted();
        };
        self.start_campaign_round();
        self.role = Role::Candidate;
        self.term = next_term;
        self.vote = Some(self.id);
        tracing::debug!(id = %self.id, term = self.term, "campaigning");
        if self.tally() == VoteResult::Won {
            return self.become_leader();
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.other_voters() {
            self.send(
                peer,
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                },
            );
        }
    }

    fn tally(&self) -> VoteResult {
        self.membership.vote_result(|n| self.votes.get(&n).copied())
    }

    /// Counts a (pre-)vote answer.
    pub(super) fn record_vote(&mut self, from: NodeId, granted: bool) {
        if !self.membership.is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        match self.tally() {
            VoteResult::Won if self.role == Role::PreCandidate => self.start_election(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    /// A pre-vote: would this replica vote for the sender in `term`? Changes nothing here.
    pub(super) fn handle_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: LogIndex,
        last_term: Term,
    ) {
        let free = term > self.term
            || self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none());
        let granted = free && self.log.is_up_to_date(last_index, last_term);
        let answer_term = if granted { term } else { self.term };
        self.send_in_term(from, answer_term, MessageBody::PreVoteResponse { granted });
    }

    /// A vote request in the current term (§5.2, §5.4.1): at most one vote per term, only
    /// for a log at least as up to date as this one.
    pub(super) fn handle_vote(&mut self, from: NodeId, last_index: LogIndex, last_term: Term) {
        let free = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = free && self.log.is_up_to_date(last_index, last_term);
        if granted {
            self.vote = Some(from);
            self.reset_election_deadline();
        }
        self.send(from, MessageBody::VoteResponse { granted });
    }

    pub(super) fn become_leader(&mut self) {
        tracing::info!(id = %self.id, term = self.term, group = %self.group, "became leader");
        self.role = Role::Leader;
        self.set_leader(Some(self.id));
        self.votes.clear();
        let next = self.log.last_index() + 1;
        self.progress = self
            .membership
            .members()
            .into_iter()
            .filter(|&n| n != self.id)
            .map(|n| (n, Progress::new(next, self.now)))
            .collect();
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
        self.reads.reset();
        self.heartbeat_deadline = self.now + self.config.heartbeat_interval;
        self.quorum_check_deadline = self.now + self.config.election_timeout;
        // A no-op of the new term lets earlier entries commit (§5.4.2) and reads start.
        self.append_entry(EntryPayload::Noop);
        // A leader elected mid-change finishes it.
        if self.membership.is_joint() && self.pending_memberships.is_empty() {
            let next = self.membership.leave_joint();
            self.append_entry(EntryPayload::Membership(next));
        }
    }
}

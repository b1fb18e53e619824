//! Log replication (§5.3) and commitment (§5.4.2): proposals, pipelined appends with flow
//! control, fast backtracking, heartbeats and the commit index.

use super::{Raft, Role};
use crate::entry::{Entry, EntryPayload, LogIndex, Term};
use crate::error::ProposeError;
use crate::message::{AppendResult, MessageBody};
use crate::progress::ReplicaState;
use crate::store::{LogStore, LogStoreError};
use bytes::Bytes;
use shoal_core::NodeId;

impl<S: LogStore> Raft<S> {
    /// Proposes a command. On success it is appended at the returned (index, term); it is
    /// committed once an applied entry at that index carries that term (if the entry applied
    /// there has another term, the proposal was lost to a leader change: retry it).
    pub fn propose(&mut self, data: Bytes) -> Result<(LogIndex, Term), ProposeError> {
        self.wake();
        let size = data.len() as u64;
        let result = self.check_proposal(size).map(|()| {
            let index = self.append_entry(EntryPayload::Command(data));
            (index, self.term)
        });
        if result.is_err() {
            self.stats.proposals_refused += 1;
        }
        result
    }

    pub(super) fn check_proposal(&self, size: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(t) = self.transfer {
            return Err(ProposeError::TransferInProgress { to: t.target });
        }
        if size > self.config.max_proposal_bytes {
            return Err(ProposeError::TooLarge {
                size,
                max: self.config.max_proposal_bytes,
            });
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.config.max_uncommitted_bytes
        {
            return Err(ProposeError::Overloaded);
        }
        Ok(())
    }

    /// Appends an entry of this leader's term; appends go out with the next ready.
    pub(super) fn append_entry(&mut self, payload: EntryPayload) -> LogIndex {
        // No overflow: peers can move the log to at most MAX_INDEX (`Raft::step` drops
        // larger positions), and past that it grows by one entry per local proposal.
        let index = self.log.last_index() + 1;
        let entry = Entry {
            index,
            term: self.term,
            payload,
        };
        let size = entry.size();
        if let EntryPayload::Membership(m) = &entry.payload {
            self.pending_memberships.insert(index, m.clone());
        }
        self.log.append(entry);
        self.uncommitted.push_back((index, size));
        self.uncommitted_bytes += size;
        self.broadcast_pending = true;
        index
    }

    pub(super) fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            while self.send_append(peer, false) {}
        }
    }

    /// Sends `peer` the entries it lacks, if flow control allows. `probe`: send even when
    /// there is nothing new for it, so a follower whose appends were lost answers with where
    /// its log really ends. Returns whether it sent entries (so the caller may go on).
    pub(super) fn send_append(&mut self, peer: NodeId, probe: bool) -> bool {
        let (max_msgs, max_bytes) = (
            self.config.max_inflight_msgs,
            self.config.max_inflight_bytes,
        );
        let last = self.log.last_index();
        let Some(pr) = self.progress.get(&peer) else {
            return false;
        };
        if pr.is_paused(max_msgs, max_bytes) {
            return false;
        }
        let next = pr.next_index;
        let state = pr.state;
        if state == ReplicaState::Replicate && next > last && !probe {
            return false;
        }
        let prev_index = next - 1;
        let prev_term = match self.log.term(prev_index) {
            Ok(term) => term,
            Err(LogStoreError::Compacted(_)) => {
                self.send_snapshot(peer);
                return false;
            }
            Err(error) => {
                tracing::error!(id = %self.id, %error, prev_index, "log unreadable; cannot replicate");
                return false;
            }
        };
        let entries = match self
            .log
            .entries(next, last + 1, self.config.max_append_bytes)
        {
            Ok(entries) => entries,
            Err(LogStoreError::Compacted(_)) => {
                self.send_snapshot(peer);
                return false;
            }
            Err(error) => {
                tracing::error!(id = %self.id, %error, next, "log unreadable; cannot replicate");
                return false;
            }
        };
        let sent_last = entries.last().map_or(prev_index, |e| e.index);
        let bytes: u64 = entries.iter().map(Entry::size).sum();
        let commit = self.log.committed;
        let sent_any = !entries.is_empty();
        let pr = self.progress.get_mut(&peer).expect("checked above");
        pr.sent_entries(sent_last, bytes);
        pr.commit_sent = pr.commit_sent.max(commit.min(sent_last));
        let sent_at = self.now.as_nanos();
        self.send(
            peer,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                sent_at,
            },
        );
        sent_any && state == ReplicaState::Replicate
    }

    /// The follower side of an append (§5.3).
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
        commit: LogIndex,
        sent_at: u64,
    ) {
        let committed = self.log.committed;
        if prev_index < committed {
            // Already have it all: say where the committed log ends.
            self.send(
                from,
                MessageBody::AppendResponse {
                    result: AppendResult::Accepted {
                        match_index: committed,
                    },
                    sent_at,
                },
            );
            return;
        }
        if !entries_are_consecutive(prev_index, entries) {
            self.stats.conflicting_appends += 1;
            tracing::warn!(id = %self.id, %from, "dropped an append whose entries are not consecutive");
            return;
        }
        match self.log.maybe_append(prev_index, prev_term, entries) {
            Ok(Some(last_new)) => {
                self.track_appended_memberships(prev_index, last_new, entries);
                self.commit_to(commit.min(last_new));
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        result: AppendResult::Accepted {
                            match_index: last_new,
                        },
                        sent_at,
                    },
                );
            }
            Ok(None) => {
                let (hint_index, hint_term) =
                    self.find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        result: AppendResult::Rejected {
                            prev_index,
                            hint_index,
                            hint_term,
                        },
                        sent_at,
                    },
                );
            }
            Err(_) => {
                self.stats.conflicting_appends += 1;
                tracing::error!(id = %self.id, %from, prev_index, "an append contradicts a committed entry; dropped");
            }
        }
    }

    /// Keeps the uncommitted membership entries in step with the log after an append.
    fn track_appended_memberships(
        &mut self,
        prev_index: LogIndex,
        last_new: LogIndex,
        entries: &[Entry],
    ) {
        let last = self.log.last_index();
        self.pending_memberships
            .retain(|&i, _| i <= prev_index || (i > last_new && i <= last));
        for entry in entries {
            if let EntryPayload::Membership(m) = &entry.payload {
                if entry.index > self.log.committed {
                    self.pending_memberships.insert(entry.index, m.clone());
                }
            }
        }
    }

    /// The last index at or below `index` whose term is at most `term`, and that term: where
    /// two logs that disagree at `index` may still agree (etcd's findConflictByTerm). One
    /// answer skips a whole term of conflicting entries.
    pub(super) fn find_conflict_by_term(
        &self,
        mut index: LogIndex,
        term: Term,
    ) -> (LogIndex, Term) {
        loop {
            match self.log.term(index) {
                Ok(t) if t > term && index > 0 => index -= 1,
                Ok(t) => return (index, t),
                Err(_) => return (index, 0),
            }
        }
    }

    pub(super) fn handle_heartbeat(
        &mut self,
        from: NodeId,
        commit: LogIndex,
        read_round: u64,
        sent_at: u64,
    ) {
        let last = self.log.last_index();
        if commit > last {
            self.stats.commit_beyond_log += 1;
            tracing::warn!(id = %self.id, %from, commit, last, "heartbeat commit beyond the log; clamped");
        }
        self.commit_to(commit.min(last));
        self.send(
            from,
            MessageBody::HeartbeatResponse {
                read_round,
                sent_at,
            },
        );
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        result: AppendResult,
        sent_at: u64,
    ) {
        let last = self.log.last_index();
        let first = self.log.first_index();
        let now = self.now;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.acked_sent_at = pr.acked_sent_at.max(sent_at);
        match result {
            AppendResult::Accepted { match_index } => {
                if match_index > last {
                    tracing::warn!(id = %self.id, %from, match_index, last, "follower claims entries the leader lacks");
                    return;
                }
                let advanced = pr.matched(match_index);
                match pr.state {
                    ReplicaState::Probe => pr.become_replicate(),
                    // It installed a snapshot (or holds enough some other way): the log
                    // continues from there.
                    ReplicaState::Snapshot if match_index + 1 >= first => pr.become_replicate(),
                    _ => {}
                }
                if pr.match_index >= last {
                    pr.caught_up_at = now;
                }
                if advanced {
                    self.maybe_commit();
                    if self.role != Role::Leader {
                        return;
                    }
                    self.continue_transfer(from);
                }
            }
            AppendResult::Rejected {
                prev_index,
                hint_index,
                hint_term,
            } => {
                let probe_to = if hint_term > 0 {
                    self.find_conflict_by_term(hint_index, hint_term).0
                } else {
                    hint_index
                };
                let Some(pr) = self.progress.get_mut(&from) else {
                    return;
                };
                if !pr.rejected(prev_index, probe_to.saturating_add(1)) {
                    return;
                }
            }
        }
        while self.send_append(from, false) {}
    }

    pub(super) fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        read_round: u64,
        sent_at: u64,
    ) {
        let max_msgs = self.config.max_inflight_msgs;
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.acked_sent_at = pr.acked_sent_at.max(sent_at);
        pr.read_round = pr.read_round.max(read_round);
        let behind = pr.match_index < last;
        if behind {
            pr.probe_sent = false;
            pr.free_one_if_full(max_msgs);
        }
        self.advance_reads();
        if behind && self.send_append(from, true) {
            while self.send_append(from, false) {}
        }
    }

    /// Advances the commit index to what a quorum holds, if that entry is of this term
    /// (§5.4.2: counting replicas commits only current-term entries).
    pub(super) fn maybe_commit(&mut self) -> bool {
        let own = self.log.persisted;
        let me = self.id;
        let progress = &self.progress;
        let quorum = self.membership.committed_index(|n| {
            if n == me {
                own
            } else {
                progress.get(&n).map_or(0, |p| p.match_index)
            }
        });
        if quorum <= self.log.committed || self.log.term(quorum).ok() != Some(self.term) {
            return false;
        }
        self.commit_to(quorum);
        true
    }

    /// Moves the commit index forward, putting committed memberships in force.
    pub(super) fn commit_to(&mut self, index: LogIndex) {
        if index <= self.log.committed {
            return;
        }
        let first_commit_of_term = self.role == Role::Leader && !self.committed_in_term();
        self.log.committed = index;
        while let Some(entry) = self.pending_memberships.first_entry() {
            if *entry.key() > index {
                break;
            }
            let (at, membership) = entry.remove_entry();
            self.apply_membership(at, membership);
        }
        while self.uncommitted.front().is_some_and(|&(i, _)| i <= index) {
            let (_, size) = self.uncommitted.pop_front().expect("checked");
            self.uncommitted_bytes -= size;
        }
        if first_commit_of_term && self.role == Role::Leader {
            self.start_waiting_reads();
        }
    }

    /// Whether this leader has committed an entry of its term (its no-op): until then its
    /// commit index may lag the true one, so it cannot serve reads.
    pub(super) fn committed_in_term(&self) -> bool {
        self.log.term(self.log.committed).ok() == Some(self.term)
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            self.send_heartbeat(peer);
        }
    }

    pub(super) fn send_heartbeat(&mut self, peer: NodeId) {
        let commit = self.log.committed;
        let read_round = self.reads.round();
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        let commit = commit.min(pr.match_index);
        pr.commit_sent = pr.commit_sent.max(commit);
        let sent_at = self.now.as_nanos();
        self.send(
            peer,
            MessageBody::Heartbeat {
                commit,
                read_round,
                sent_at,
            },
        );
    }

    /// Whether some follower has not been told of the commit index it could take.
    pub(super) fn commit_to_propagate(&self) -> bool {
        let commit = self.log.committed;
        self.progress
            .values()
            .any(|p| p.commit_sent < commit.min(p.match_index))
    }

    /// Tells followers that hold newly committed entries about them (appends carry the
    /// commit index too, so under load this sends nothing extra).
    pub(super) fn propagate_commit(&mut self) {
        let commit = self.log.committed;
        let lagging: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, p)| p.commit_sent < commit.min(p.match_index))
            .map(|(&n, _)| n)
            .collect();
        for peer in lagging {
            self.send_heartbeat(peer);
        }
    }

    /// Check-quorum: whether a quorum was heard from since the last check (and resets the
    /// marks for the next round).
    pub(super) fn check_quorum_active(&mut self) -> bool {
        let me = self.id;
        let progress = &self.progress;
        let active = self
            .membership
            .is_quorum(|n| n == me || progress.get(&n).is_some_and(|p| p.recent_active));
        for pr in self.progress.values_mut() {
            pr.recent_active = false;
        }
        active
    }
}

/// Whether `entries` follow `prev_index` one by one (peer input: no overflow).
fn entries_are_consecutive(prev_index: LogIndex, entries: &[Entry]) -> bool {
    entries
        .iter()
        .enumerate()
        .all(|(i, e)| prev_index.checked_add(1 + i as u64) == Some(e.index))
}

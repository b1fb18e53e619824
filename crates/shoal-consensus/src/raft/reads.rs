//! Linearizable reads without writing to the log (Raft thesis §6.4): ReadIndex, confirmed by
//! a heartbeat round, and lease reads, confirmed by time.

use super::{Raft, Role};
use crate::entry::LogIndex;
use crate::error::ReadError;
use crate::message::MessageBody;
use crate::ready::ReadState;
use crate::store::LogStore;
use serde::{Deserialize, Serialize};
use shoal_core::NodeId;
use std::collections::VecDeque;

/// How a read is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadMode {
    /// ReadIndex: the leader records its commit index and confirms it still leads with a
    /// heartbeat round to a quorum. Safe whatever the clocks do; costs a round trip.
    Safe,
    /// Lease: the leader serves at once while its lease holds. A lease starts when a heartbeat
    /// that a quorum acknowledged was *sent*, and lasts `election_timeout - max_clock_drift`:
    /// followers that acknowledged it refuse to vote for anyone else for an election timeout
    /// after *receiving* it, so no other leader can exist before then, provided no clock runs
    /// more than `max_clock_drift` per election timeout slower than the leader's. Falls back
    /// to [`ReadMode::Safe`] when the lease has lapsed.
    Lease,
}

/// A read waiting for its heartbeat round.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    /// `None`: a local client; `Some`: a follower that forwarded it.
    from: Option<NodeId>,
    index: LogIndex,
    round: u64,
}

/// The leader's reads in progress.
#[derive(Debug, Default)]
pub(super) struct ReadQueue {
    /// Reads that arrived before this leader committed an entry of its term.
    waiting_commit: Vec<(u64, Option<NodeId>)>,
    pending: VecDeque<PendingRead>,
    /// The latest heartbeat round sent.
    round: u64,
    /// Reads wait for a round not sent yet.
    round_needed: bool,
}

impl ReadQueue {
    pub(super) fn round(&self) -> u64 {
        self.round
    }

    pub(super) fn round_needed(&self) -> bool {
        self.round_needed
    }

    /// No read in progress.
    pub(super) fn is_idle(&self) -> bool {
        self.waiting_commit.is_empty() && self.pending.is_empty() && !self.round_needed
    }

    pub(super) fn reset(&mut self) {
        *self = ReadQueue::default();
    }

    /// Every read in progress, for failing them all.
    pub(super) fn drain(&mut self) -> Vec<(u64, Option<NodeId>)> {
        let mut all = std::mem::take(&mut self.waiting_commit);
        all.extend(self.pending.drain(..).map(|r| (r.ctx, r.from)));
        self.round_needed = false;
        all
    }
}

impl<S: LogStore> Raft<S> {
    /// Asks for a linearizable read. `ctx` is the caller's token: a [`ReadState`] with it
    /// comes out of a later [`crate::Ready`] (serve the read once applied through its
    /// index), or a failure. On a follower the request is forwarded to the leader (follower
    /// reads); learners may read this way too.
    pub fn read(&mut self, ctx: u64, mode: ReadMode) {
        self.wake();
        match self.role {
            Role::Leader => self.leader_read(ctx, None, mode),
            _ => match self.leader {
                Some(leader) => {
                    self.forwarded_reads.push((ctx, self.now));
                    self.send(leader, MessageBody::ReadIndex { ctx });
                }
                None => self
                    .failed_reads
                    .push((ctx, ReadError::NotLeader { leader: None })),
            },
        }
    }

    fn leader_read(&mut self, ctx: u64, from: Option<NodeId>, mode: ReadMode) {
        if let Some(t) = self.transfer {
            return self.fail_read(ctx, from, ReadError::TransferInProgress { to: t.target });
        }
        if !self.committed_in_term() {
            self.reads.waiting_commit.push((ctx, from));
            return;
        }
        let index = self.log.committed;
        if self.is_sole_voter() || (mode == ReadMode::Lease && self.lease_valid()) {
            return self.serve_read(ctx, from, index);
        }
        self.reads.pending.push_back(PendingRead {
            ctx,
            from,
            index,
            round: self.reads.round + 1,
        });
        self.reads.round_needed = true;
    }

    fn is_sole_voter(&self) -> bool {
        let me = self.id;
        self.membership.is_quorum(|n| n == me)
    }

    /// Whether this leader's lease holds now (see [`ReadMode::Lease`]).
    pub fn lease_valid(&self) -> bool {
        if self.role != Role::Leader || !self.config.check_quorum || self.transfer.is_some() {
            return false;
        }
        let now = self.now.as_nanos();
        let me = self.id;
        let progress = &self.progress;
        let start = self.membership.committed_index(|n| {
            if n == me {
                now
            } else {
                progress.get(&n).map_or(0, |p| p.acked_sent_at)
            }
        });
        let lease = (self.config.election_timeout - self.config.max_clock_drift).as_nanos() as u64;
        start > 0 && now < start.saturating_add(lease)
    }

    /// A follower forwarded a read.
    pub(super) fn handle_forwarded_read(&mut self, from: NodeId, ctx: u64) {
        if self.role == Role::Leader {
            self.leader_read(ctx, Some(from), ReadMode::Safe);
        } else {
            self.send(from, MessageBody::ReadIndexResponse { ctx, index: None });
        }
    }

    pub(super) fn handle_read_index_response(&mut self, ctx: u64, index: Option<LogIndex>) {
        let Some(pos) = self.forwarded_reads.iter().position(|&(c, _)| c == ctx) else {
            return;
        };
        self.forwarded_reads.swap_remove(pos);
        match index {
            Some(index) => self.read_states.push(ReadState { ctx, index }),
            None => self.failed_reads.push((
                ctx,
                ReadError::NotLeader {
                    leader: self.leader,
                },
            )),
        }
    }

    /// Fails reads forwarded to a leader this node no longer follows.
    pub(super) fn fail_forwarded_reads(&mut self) {
        let leader = self.leader;
        for (ctx, _) in self.forwarded_reads.drain(..) {
            self.failed_reads
                .push((ctx, ReadError::NotLeader { leader }));
        }
    }

    /// Fails forwarded reads unanswered for an election timeout (the request or the answer
    /// was lost); the caller retries.
    pub(super) fn expire_forwarded_reads(&mut self) {
        let timeout = self.config.election_timeout;
        let now = self.now;
        let leader = self.leader;
        let failed = &mut self.failed_reads;
        self.forwarded_reads.retain(|&(ctx, sent)| {
            let waiting = now < sent + timeout;
            if !waiting {
                failed.push((ctx, ReadError::NotLeader { leader }));
            }
            waiting
        });
    }

    /// This leader just committed its first entry: the reads that waited for it start.
    pub(super) fn start_waiting_reads(&mut self) {
        for (ctx, from) in std::mem::take(&mut self.reads.waiting_commit) {
            self.leader_read(ctx, from, ReadMode::Safe);
        }
    }

    /// Sends a heartbeat round for reads that wait for one.
    pub(super) fn send_read_round(&mut self) {
        if !self.reads.round_needed {
            return;
        }
        self.reads.round_needed = false;
        self.reads.round += 1;
        self.broadcast_heartbeat();
    }

    /// Serves the reads whose round a quorum has confirmed.
    pub(super) fn advance_reads(&mut self) {
        let me = self.id;
        let own = self.reads.round;
        let progress = &self.progress;
        let confirmed = self.membership.committed_index(|n| {
            if n == me {
                own
            } else {
                progress.get(&n).map_or(0, |p| p.read_round)
            }
        });
        while self
            .reads
            .pending
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            let read = self.reads.pending.pop_front().expect("checked");
            self.serve_read(read.ctx, read.from, read.index);
        }
    }

    fn serve_read(&mut self, ctx: u64, from: Option<NodeId>, index: LogIndex) {
        match from {
            None => self.read_states.push(ReadState { ctx, index }),
            Some(follower) => self.send(
                follower,
                MessageBody::ReadIndexResponse {
                    ctx,
                    index: Some(index),
                },
            ),
        }
    }

    pub(super) fn fail_read(&mut self, ctx: u64, from: Option<NodeId>, error: ReadError) {
        match from {
            None => self.failed_reads.push((ctx, error)),
            Some(follower) => self.send(
                follower,
                MessageBody::ReadIndexResponse { ctx, index: None },
            ),
        }
    }
}

//! What a leader knows about each follower's log, and how much it may send it.

use crate::entry::LogIndex;
use serde::{Deserialize, Serialize};
use shoal_core::Instant;
use std::collections::VecDeque;

/// How the leader is replicating to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    /// The follower's match point is unknown: one append at a time, until one is accepted.
    Probe,
    /// The follower is in step: appends are pipelined, up to the in-flight limits.
    Replicate,
    /// The follower needs entries the leader has compacted: the driver is streaming it a
    /// snapshot, and reports how that went ([`crate::Raft::report_snapshot`]).
    Snapshot,
}

/// A snapshot the driver was asked to send a follower.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SnapshotSend {
    /// When it was asked for.
    pub(crate) since: Instant,
}

/// The leader's record of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicaState,
    /// In `Probe`: an append is out and unanswered.
    pub(crate) probe_sent: bool,
    /// In `Replicate`: the last index and size of each append in flight, oldest first.
    inflight: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    pub(crate) snapshot: Option<SnapshotSend>,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// The latest `sent_at` the follower echoed: the leader's lease is measured from it.
    pub(crate) acked_sent_at: u64,
    /// The latest read round the follower confirmed.
    pub(crate) read_round: u64,
    /// When the follower last held the leader's whole log (for lag in time).
    pub(crate) caught_up_at: Instant,
    /// The commit index last sent to it.
    pub(crate) commit_sent: LogIndex,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex, now: Instant) -> Self {
        Self {
            match_index: 0,
            next_index,
            state: ReplicaState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            snapshot: None,
            recent_active: false,
            acked_sent_at: 0,
            read_round: 0,
            caught_up_at: now,
            commit_sent: 0,
        }
    }

    /// Whether nothing more may be sent now.
    pub(crate) fn is_paused(&self, max_msgs: usize, max_bytes: u64) -> bool {
        match self.state {
            ReplicaState::Probe => self.probe_sent,
            ReplicaState::Replicate => {
                self.inflight.len() >= max_msgs || self.inflight_bytes >= max_bytes
            }
            ReplicaState::Snapshot => true,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.snapshot = None;
        self.next_index = self.match_index + 1;
        self.state = ReplicaState::Probe;
        self.probe_sent = false;
        self.clear_inflight();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicaState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.snapshot = None;
        self.clear_inflight();
    }

    pub(crate) fn become_snapshot(&mut self, send: SnapshotSend) {
        self.state = ReplicaState::Snapshot;
        self.snapshot = Some(send);
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Records an append of entries through `last` (`bytes` long) just sent.
    pub(crate) fn sent_entries(&mut self, last: LogIndex, bytes: u64) {
        match self.state {
            ReplicaState::Replicate => {
                self.next_index = last + 1;
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
            ReplicaState::Probe => self.probe_sent = true,
            ReplicaState::Snapshot => {}
        }
    }

    /// The follower holds the log through `index`. Returns whether that is news.
    pub(crate) fn matched(&mut self, index: LogIndex) -> bool {
        self.probe_sent = false;
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        if index > self.match_index {
            self.match_index = index;
            self.next_index = self.next_index.max(index + 1);
            return true;
        }
        false
    }

    /// The follower rejected the append at `rejected`; `probe_from` is where the term hint
    /// says to try next. Returns whether the rejection was current (not a stale answer).
    pub(crate) fn rejected(&mut self, rejected: LogIndex, probe_from: LogIndex) -> bool {
        match self.state {
            ReplicaState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.become_probe();
                true
            }
            ReplicaState::Probe => {
                if rejected.checked_add(1) != Some(self.next_index) {
                    return false;
                }
                self.next_index = probe_from.min(rejected).max(self.match_index + 1);
                self.probe_sent = false;
                true
            }
            ReplicaState::Snapshot => false,
        }
    }

    /// Frees one in-flight slot when the pipe is full, so a heartbeat answer from a
    /// follower whose appends were lost lets the leader try again.
    pub(crate) fn free_one_if_full(&mut self, max_msgs: usize) {
        if self.inflight.len() >= max_msgs {
            if let Some((_, bytes)) = self.inflight.pop_front() {
                self.inflight_bytes -= bytes;
            }
        }
    }
}

/// A follower's replication status, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The follower.
    pub node: shoal_core::NodeId,
    /// The highest index known to be on its log.
    pub match_index: LogIndex,
    /// The next index the leader will send.
    pub next_index: LogIndex,
    /// How the leader is replicating to it.
    pub state: ReplicaState,
    /// Entries it lacks: the leader's last index minus its match index.
    pub lag_entries: u64,
    /// How long since it last held the leader's whole log (zero when it does).
    pub lag: std::time::Duration,
    /// How long a snapshot transfer to it has been under way, if one is.
    pub snapshot_for: Option<std::time::Duration>,
    /// Whether it is a learner.
    pub learner: bool,
}

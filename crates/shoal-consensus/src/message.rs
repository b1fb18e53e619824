//! What the replicas of a group send each other.

use crate::entry::{Entry, LogIndex, Term};
use crate::snapshot::SnapshotMeta;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_core::{NodeId, RangeId};

/// One Raft message. Every message carries its group, so the groups of a node share one
/// connection per peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The Raft group (the range this group replicates).
    pub group: RangeId,
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// The log index of the membership in force at the sender. A replica takes messages from
    /// nodes outside its own membership only when this is newer than its own (it is the one
    /// behind, the way TiKV compares region epochs); otherwise they are from an unknown or
    /// removed node and dropped.
    pub config_index: LogIndex,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Would you vote for me in `term` (the message's term)? Sent without raising the
    /// sender's own term, so a node cut off from the group does not disrupt it on return.
    PreVote {
        /// The candidate's last log index.
        last_index: LogIndex,
        /// The term of that entry.
        last_term: Term,
    },
    /// The answer to a pre-vote.
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// Vote for me in the message's term (§5.2).
    Vote {
        /// The candidate's last log index.
        last_index: LogIndex,
        /// The term of that entry.
        last_term: Term,
        /// The election follows a leadership transfer: a follower's leader stickiness does
        /// not apply.
        transfer: bool,
    },
    /// The answer to a vote.
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Entries after `prev_index`, and the leader's commit index (§5.3).
    Append {
        /// The index just before the first entry.
        prev_index: LogIndex,
        /// Its term, which the follower's log must match.
        prev_term: Term,
        /// The entries, possibly none (a probe).
        entries: Vec<Entry>,
        /// The leader's commit index, capped at what this follower is known to hold.
        commit: LogIndex,
        /// The leader's clock when it sent this, echoed back (leases are measured from it).
        sent_at: u64,
    },
    /// The answer to an append.
    AppendResponse {
        /// Whether the log matched, and where it now ends or why not.
        result: AppendResult,
        /// The `sent_at` of the append answered.
        sent_at: u64,
    },
    /// The leader is alive; it may also confirm leadership for reads.
    Heartbeat {
        /// The leader's commit index, capped at what this follower is known to hold.
        commit: LogIndex,
        /// The latest read round this heartbeat confirms.
        read_round: u64,
        /// The leader's clock when it sent this, echoed back.
        sent_at: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// The read round the heartbeat carried.
        read_round: u64,
        /// The `sent_at` of the heartbeat answered.
        sent_at: u64,
    },
    /// One chunk of a snapshot being installed on a follower.
    Snapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// Where this chunk starts in the snapshot's bytes.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// CRC32C of `data`.
        crc: u32,
    },
    /// How much of a snapshot a follower holds: the leader continues (or resumes) from there.
    SnapshotResponse {
        /// The snapshot's index.
        index: LogIndex,
        /// Bytes received in order so far.
        received: u64,
    },
    /// Start an election now, skipping pre-vote: the leader is handing over leadership.
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndex {
        /// The follower's token for the read.
        ctx: u64,
    },
    /// The leader's answer: the index a linearizable read must wait for, or `None` when the
    /// sender could not serve it (it is no longer the leader).
    ReadIndexResponse {
        /// The follower's token.
        ctx: u64,
        /// The read index.
        index: Option<LogIndex>,
    },
}

/// How a follower answered an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The log matched; the follower's log now matches the leader's through `match_index`.
    Accepted {
        /// The last index known to match.
        match_index: LogIndex,
    },
    /// The entry at `prev_index` did not match. The hint lets the leader skip a whole term of
    /// conflicting entries in one round trip instead of one entry per round trip.
    Rejected {
        /// The `prev_index` of the rejected append.
        prev_index: LogIndex,
        /// The follower's guess at the last index that could match.
        hint_index: LogIndex,
        /// The term of the follower's entry at `hint_index` (0 if its log is shorter).
        hint_term: Term,
    },
}

impl MessageBody {
    /// A short name for traces and counters.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::SnapshotResponse { .. } => "SnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }

    /// About how many bytes the message takes encoded: its entries' or snapshot chunk's
    /// payload plus a fixed allowance for the rest. For batching within size limits.
    pub fn approx_size(&self) -> u64 {
        const HEADER: u64 = 64;
        HEADER
            + match self {
                MessageBody::Append { entries, .. } => entries.iter().map(Entry::size).sum(),
                MessageBody::Snapshot { data, meta, .. } => {
                    data.len() as u64 + 8 * meta.membership.node_count() as u64
                }
                _ => 0,
            }
    }
}

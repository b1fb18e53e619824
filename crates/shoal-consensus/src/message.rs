//! What the replicas of a group send each other.

use crate::entry::{Entry, LogIndex, Term, MAX_INDEX, MAX_TERM};
use crate::snapshot::SnapshotMeta;
use serde::{Deserialize, Serialize};
use shoal_core::{GroupId, NodeId};

/// What [`MessageBody::approx_size`] allows for everything but entries and memberships: the
/// addressing, terms and indexes. Their varints take less with realistic values (small ids
/// and terms, indexes below 2^32); with extreme ones the estimate falls short by a few dozen
/// bytes per message, which limits built on it leave room for.
pub(crate) const MESSAGE_OVERHEAD: u64 = 64;

/// One Raft message. Every message carries its group, so the groups of a node share one
/// connection per peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The Raft group.
    pub group: GroupId,
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
    /// Install this snapshot in place of the log. Its data came on another channel (see
    /// [`crate::snapshot`]): only the receiver's driver steps this message, once the data is
    /// whole and kept aside; one arriving with ordinary Raft traffic is dropped by
    /// [`crate::host::RaftHost`]. The follower answers with an [`MessageBody::AppendResponse`].
    Snapshot {
        /// What the snapshot covers.
        meta: SnapshotMeta,
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
    /// The group is idle: every follower holds the leader's whole log, committed through
    /// `commit`, and nothing is in flight. The leader stops heartbeating; a follower whose
    /// log ends at `commit` stops its election timer until the leader (or anything local)
    /// wakes it ([`crate::RaftConfig::quiesce`]). Not answered.
    Quiesce {
        /// The leader's commit index, which is also its last index.
        commit: LogIndex,
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

impl Message {
    /// The name of the first term or log position in the message above [`MAX_TERM`] or
    /// [`MAX_INDEX`], or `None` when every one is within them. No honest peer sends such a
    /// message: [`crate::Raft::step`] drops it before it can raise the term or move the log
    /// to where the core's `+ 1` arithmetic would overflow.
    pub fn out_of_bounds(&self) -> Option<&'static str> {
        use MessageBody as B;
        let own =
            over_term("term", self.term).or_else(|| over_index("config_index", self.config_index));
        own.or_else(|| match &self.body {
            B::PreVote {
                last_index,
                last_term,
            }
            | B::Vote {
                last_index,
                last_term,
                ..
            } => {
                over_index("last_index", *last_index).or_else(|| over_term("last_term", *last_term))
            }
            B::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                ..
            } => over_index("prev_index", *prev_index)
                .or_else(|| over_term("prev_term", *prev_term))
                .or_else(|| over_index("commit", *commit))
                .or_else(|| {
                    entries.iter().find_map(|e| {
                        over_index("entry index", e.index)
                            .or_else(|| over_term("entry term", e.term))
                    })
                }),
            B::AppendResponse { result, .. } => match *result {
                AppendResult::Accepted { match_index } => over_index("match_index", match_index),
                AppendResult::Rejected {
                    prev_index,
                    hint_index,
                    hint_term,
                } => over_index("prev_index", prev_index)
                    .or_else(|| over_index("hint_index", hint_index))
                    .or_else(|| over_term("hint_term", hint_term)),
            },
            B::Heartbeat { commit, .. } | B::Quiesce { commit } => over_index("commit", *commit),
            B::Snapshot { meta, .. } => over_index("snapshot index", meta.index)
                .or_else(|| over_term("snapshot term", meta.term)),
            B::ReadIndexResponse {
                index: Some(index), ..
            } => over_index("read index", *index),
            B::PreVoteResponse { .. }
            | B::VoteResponse { .. }
            | B::HeartbeatResponse { .. }
            | B::TimeoutNow
            | B::ReadIndex { .. }
            | B::ReadIndexResponse { index: None, .. } => None,
        })
    }
}

/// `Some(name)` when `term` is above [`MAX_TERM`].
fn over_term(name: &'static str, term: Term) -> Option<&'static str> {
    (term > MAX_TERM).then_some(name)
}

/// `Some(name)` when `index` is above [`MAX_INDEX`].
fn over_index(name: &'static str, index: LogIndex) -> Option<&'static str> {
    (index > MAX_INDEX).then_some(name)
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
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::Quiesce { .. } => "Quiesce",
        }
    }

    /// About how many bytes the message takes encoded: its entries' payload (or a snapshot's
    /// membership) plus a fixed allowance for the rest. For batching within size limits.
    pub fn approx_size(&self) -> u64 {
        MESSAGE_OVERHEAD
            + match self {
                MessageBody::Append { entries, .. } => entries.iter().map(Entry::size).sum(),
                MessageBody::Snapshot { meta } => 8 * meta.membership.node_count() as u64,
                _ => 0,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryPayload;

    fn message(term: Term, body: MessageBody) -> Message {
        Message {
            group: GroupId::new(1),
            from: NodeId::new(1),
            to: NodeId::new(2),
            term,
            config_index: 0,
            body,
        }
    }

    fn heartbeat(commit: LogIndex) -> MessageBody {
        MessageBody::Heartbeat {
            commit,
            read_round: 0,
            sent_at: 0,
        }
    }

    #[test]
    fn positions_up_to_the_bounds_pass_and_one_past_is_named() {
        assert_eq!(
            message(MAX_TERM, heartbeat(MAX_INDEX)).out_of_bounds(),
            None
        );
        assert_eq!(
            message(MAX_TERM + 1, heartbeat(0)).out_of_bounds(),
            Some("term")
        );
        assert_eq!(
            message(1, heartbeat(MAX_INDEX + 1)).out_of_bounds(),
            Some("commit")
        );
        let append = MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![Entry {
                index: u64::MAX,
                term: 1,
                payload: EntryPayload::Noop,
            }],
            commit: 1,
            sent_at: 0,
        };
        assert_eq!(message(1, append).out_of_bounds(), Some("entry index"));
        let mut far = message(1, MessageBody::TimeoutNow);
        far.config_index = u64::MAX;
        assert_eq!(far.out_of_bounds(), Some("config_index"));
        // Read rounds, clocks and read tokens are not log positions: any value passes.
        let answer = MessageBody::HeartbeatResponse {
            read_round: u64::MAX,
            sent_at: u64::MAX,
        };
        assert_eq!(message(1, answer).out_of_bounds(), None);
    }
}

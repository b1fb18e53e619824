//! Log entries: what a Raft group agrees on, one index at a time.

use crate::membership::Membership;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A Raft term: a period with at most one leader. Starts at 0, only grows.
pub type Term = u64;

/// A position in the replicated log. The first entry is at index 1; index 0 means "nothing".
pub type LogIndex = u64;

/// The largest term a replica takes from a peer. No real group gets near it (one election a
/// nanosecond would take 146 years), and it is far enough below `u64::MAX` that a local
/// increment of a term that passed the check cannot overflow. A message with a larger term
/// is dropped and counted in [`crate::RaftStats::out_of_bounds`]; a replica at this term does
/// not campaign (a wrapped term would break election safety).
///
/// Raft trusts its members: one that sends a message at this very term stops the group's
/// elections for good. The bound turns a wrap (a safety break) into a loss of liveness; it
/// is not a defence against a hostile member, which the transport's peer authentication must
/// keep out.
pub const MAX_TERM: Term = 1 << 62;

/// The largest log index (and commit index, and snapshot index) a replica takes from a peer.
/// No real log gets near it, and it leaves `u64::MAX - MAX_INDEX` of headroom, so the
/// `index + 1` arithmetic of the log cannot overflow on anything a peer can send. A message
/// with a larger position is dropped and counted in [`crate::RaftStats::out_of_bounds`].
pub const MAX_INDEX: LogIndex = 1 << 62;

/// The bytes an entry's header costs in [`Entry::size`]: index, term and kind.
pub(crate) const ENTRY_OVERHEAD: u64 = 24;

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's position.
    pub index: LogIndex,
    /// The term of the leader that created it.
    pub term: Term,
    /// What it carries.
    pub payload: EntryPayload,
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader at the start of its term, so that it can commit entries of
    /// earlier terms (which it may only do by committing one of its own, §5.4.2) and serve
    /// reads.
    Noop,
    /// An application command, opaque to Raft.
    Command(Bytes),
    /// The group's complete membership from this entry on (once committed). The leader
    /// computes it from a [`crate::ConfChange`]; followers adopt it as written, the way
    /// hashicorp/raft logs whole configurations.
    Membership(Membership),
}

impl Entry {
    /// The bytes this entry counts for flow control and log-size limits: the payload plus a
    /// fixed header. Exact for commands, an estimate for membership entries.
    pub fn size(&self) -> u64 {
        ENTRY_OVERHEAD
            + match &self.payload {
                EntryPayload::Noop => 0,
                EntryPayload::Command(data) => data.len() as u64,
                EntryPayload::Membership(m) => 8 * m.node_count() as u64,
            }
    }

    /// Whether the entry changes the membership.
    pub fn is_membership(&self) -> bool {
        matches!(self.payload, EntryPayload::Membership(_))
    }
}

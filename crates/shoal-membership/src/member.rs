//! What one node knows about another.

use serde::{Deserialize, Serialize};
use shoal_core::{Instant, NodeId};
use std::net::SocketAddr;

/// The highest incarnation a member may announce: 2^60. A member raises its incarnation once
/// per refutation or metadata change, so no honest member comes near it. Alive news above it,
/// and suspicions or deaths at or above it, are refused and counted
/// ([`MembershipStats::incarnations_refused`](crate::MembershipStats)): a forged accusation
/// at `u64::MAX` cannot make a node's own counter wrap, and the highest accusation accepted
/// can still be refuted at an incarnation peers accept.
pub const MAX_INCARNATION: u64 = 1 << 60;

/// A member's liveness, as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// A probe failed; dead unless it refutes before the suspicion timeout.
    Suspect,
    /// Confirmed failed.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// Alive or suspect: still counted, probed and gossiped to.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
}

/// One member as this node knows it.
///
/// The incarnation is the member's own version counter: only the member raises it (to
/// refute a suspicion or to publish new metadata), and for the same incarnation the order is
/// Alive < Suspect < Dead, so newer news always wins and old news is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: NodeId,
    /// Where its datagrams and push-pulls go.
    pub addr: SocketAddr,
    /// Its incarnation (also the version of its metadata).
    pub incarnation: u64,
    /// Liveness.
    pub state: MemberState,
    /// Its application metadata (bounded by `max_meta_bytes`).
    pub meta: Vec<u8>,
    /// When `state` last changed, on this node's clock.
    pub state_changed: Instant,
}

impl Member {
    /// The member's state as sent in push-pull.
    pub(crate) fn to_wire(&self) -> WireMember {
        WireMember {
            id: self.id,
            addr: self.addr,
            incarnation: self.incarnation,
            state: self.state,
            meta: self.meta.clone(),
        }
    }
}

/// A member's state on the wire (push-pull), without local bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMember {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// Its incarnation.
    pub incarnation: u64,
    /// Liveness, as the sender sees it.
    pub state: MemberState,
    /// Its metadata.
    pub meta: Vec<u8>,
}

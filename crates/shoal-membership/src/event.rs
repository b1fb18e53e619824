//! Membership changes as the application sees them.

use shoal_core::{Instant, NodeId};
use std::net::SocketAddr;

/// What happened to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberEventKind {
    /// A member was learned of, or came back after being dead or having left.
    Joined,
    /// A live member published new metadata.
    Updated,
    /// A member is suspected of having failed.
    Suspect,
    /// A suspected member refuted the suspicion.
    AliveAgain,
    /// A member was confirmed dead.
    Dead,
    /// A member left gracefully. It may follow [`MemberEventKind::Dead`] for the same
    /// member when this node declared it dead before the member's own Left notice arrived.
    Left,
    /// A dead or departed member's id came back from another address.
    Reclaimed,
}

/// One membership change, with the member's state after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEvent {
    /// What happened.
    pub kind: MemberEventKind,
    /// To whom.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its metadata.
    pub meta: Vec<u8>,
    /// When this node noticed, on its own clock.
    pub at: Instant,
}

/// A user broadcast from another member, delivered once (see [`crate::Swim::broadcast`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserMessage {
    /// The member that broadcast it.
    pub from: NodeId,
    /// The application's bytes.
    pub payload: Vec<u8>,
}

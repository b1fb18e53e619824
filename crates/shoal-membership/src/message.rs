//! The messages SWIM nodes exchange.
//!
//! Datagrams carry one or more [`Message`]s (a probe or ack first, then piggybacked
//! updates). The reliable channel carries one [`ReliableRequest`] answered by one
//! [`ReliableResponse`]. Both are wrapped by the `packet` module with the cluster label and,
//! optionally, encryption.

use crate::member::WireMember;
use serde::{Deserialize, Serialize};
use shoal_core::NodeId;
use std::net::SocketAddr;

/// One protocol message inside a datagram.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A direct probe; answered with an [`Message::Ack`] carrying the same `seq`.
    Ping(Ping),
    /// Please probe `target` for me and forward its ack (SWIM's ping-req).
    IndirectPing(IndirectPing),
    /// The answer to a probe.
    Ack {
        /// The probe's sequence number.
        seq: u32,
    },
    /// Lifeguard: an indirect prober could not reach the target in time. Tells the origin
    /// that the relay itself is fine, so the origin does not blame its own health.
    Nack {
        /// The origin's probe sequence number.
        seq: u32,
    },
    /// A member is alive at this incarnation (also carries its metadata).
    Alive(Alive),
    /// A member is suspected at this incarnation.
    Suspect(Suspect),
    /// A member is dead (or left, when `from == id`) at this incarnation.
    Dead(Dead),
    /// An application broadcast, spread epidemically to every member, best-effort.
    User(UserBroadcast),
}

/// An application broadcast. Receivers deliver each `(origin, seq)` once and gossip it on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBroadcast {
    /// The member that broadcast it.
    pub origin: NodeId,
    /// The origin's sequence number for it.
    pub seq: u64,
    /// The application's bytes.
    pub payload: Vec<u8>,
}

/// A direct probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Matches the ack to the probe.
    pub seq: u32,
    /// The member the prober means to reach; a node with another id at that address
    /// ignores the probe.
    pub target: NodeId,
    /// Lifeguard's buddy system: the prober suspects the target, so it can refute at once.
    pub suspicion: Option<Suspect>,
}

/// A request to probe a member on the sender's behalf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndirectPing {
    /// The origin's probe sequence number, echoed in the forwarded ack or nack.
    pub seq: u32,
    /// The member to probe.
    pub target: NodeId,
    /// Its address.
    pub target_addr: SocketAddr,
    /// Send a [`Message::Nack`] if the target does not answer in time.
    pub want_nack: bool,
    /// Lifeguard's buddy system, through the relay: the suspicion to hand the target.
    pub suspicion: Option<Suspect>,
}

/// A member is alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    /// Who.
    pub id: NodeId,
    /// Where.
    pub addr: SocketAddr,
    /// At which incarnation.
    pub incarnation: u64,
    /// Its metadata at this incarnation.
    pub meta: Vec<u8>,
}

/// A member is suspected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    /// Who is suspected.
    pub id: NodeId,
    /// At which incarnation.
    pub incarnation: u64,
    /// Who suspects it (each distinct suspecter is one Lifeguard confirmation).
    pub from: NodeId,
}

/// A member is dead, or has left when `from == id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dead {
    /// Who.
    pub id: NodeId,
    /// At which incarnation.
    pub incarnation: u64,
    /// Who declared it.
    pub from: NodeId,
}

impl Dead {
    /// A graceful leave: the member announced its own departure.
    pub fn is_leave(&self) -> bool {
        self.from == self.id
    }
}

/// A full-state exchange: the sender's whole member list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPull {
    /// Sent while joining (the answer is what the joiner learns the cluster from).
    pub join: bool,
    /// Every member the sender knows, itself included.
    pub members: Vec<WireMember>,
}

/// A request over the reliable channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReliableRequest {
    /// Merge my state and send me yours.
    PushPull(PushPull),
    /// A probe over TCP, when UDP probes fail (the network may drop UDP only).
    Ping {
        /// The member the prober means to reach.
        target: NodeId,
    },
}

/// The answer on the reliable channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReliableResponse {
    /// The answerer's state.
    PushPull(PushPull),
    /// The probe reached the right node.
    Ack,
    /// The request was refused (wrong target, or this node has left).
    Refused,
}

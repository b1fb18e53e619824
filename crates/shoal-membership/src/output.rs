//! What the core asks its driver to do.

use crate::event::MemberEvent;
use shoal_core::NodeId;
use std::net::SocketAddr;
use std::time::Duration;

/// Identifies one reliable exchange, so the driver can hand back its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A timer the core set. Opaque: hand it back to [`crate::Swim::handle_timer`] when it fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer(pub(crate) TimerKind);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// Start the next probe (carries the probe loop's generation).
    Probe(u64),
    /// The direct ack is overdue: probe indirectly.
    ProbeTimeout(u32),
    /// The probe interval is over: judge the probe.
    ProbeEnd(u32),
    /// A relayed probe is overdue: nack the origin.
    RelayTimeout(u32),
    /// Gossip round.
    Gossip,
    /// Periodic push-pull.
    PushPull,
    /// A suspicion may have expired.
    Suspicion(NodeId),
    /// Forget long-dead members.
    Reap,
    /// Try to reach one dead member again.
    Reconnect,
    /// Retry joining (carries the join generation).
    JoinRetry(u64),
}

/// One effect for the driver to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes as one datagram.
    Datagram {
        /// Destination.
        to: SocketAddr,
        /// The packet.
        bytes: Vec<u8>,
    },
    /// Send these bytes over the reliable channel and hand the answer (or the failure) to
    /// [`crate::Swim::handle_reliable_response`] with `id`, exactly once, within `timeout`.
    Reliable {
        /// Destination.
        to: SocketAddr,
        /// The exchange's id.
        id: RequestId,
        /// The request.
        bytes: Vec<u8>,
        /// How long to wait for the answer.
        timeout: Duration,
    },
    /// Call [`crate::Swim::handle_timer`] with `timer` after `after`.
    Timer {
        /// Delay.
        after: Duration,
        /// What to hand back.
        timer: Timer,
    },
    /// A membership change for subscribers.
    Event(MemberEvent),
    /// A user broadcast from another member, with the member's id.
    UserMessage(crate::UserMessage),
    /// The join finished: `Ok(n)` after `n` seeds answered, or `Err` after the last attempt.
    JoinFinished(Result<usize, crate::SwimError>),
}

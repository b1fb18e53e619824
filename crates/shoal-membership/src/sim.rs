//! Runs [`Swim`] nodes in `shoal-sim`'s deterministic simulator.
//!
//! Each simulated node has a synthetic address ([`sim_addr`]) from which its id can be read
//! back. Datagrams and reliable exchanges both cross the simulated network, so both suffer
//! its loss, latency and partitions; a reliable exchange that loses its request or response
//! fails at its timeout. That is harsher than TCP, which would retransmit, so simulated
//! results are if anything pessimistic.

use crate::config::MembershipConfig;
use crate::event::{MemberEvent, UserMessage};
use crate::output::{Output, RequestId, Timer};
use crate::swim::{Swim, SwimError};
use shoal_core::{Instant, NodeId};
use shoal_sim::{Node, Outputs};
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

const SIM_PORT: u16 = 7946;

/// The synthetic address of simulated node `id` (ids must be below 2^24).
pub fn sim_addr(id: NodeId) -> SocketAddr {
    let [_, a, b, c] = (id.get() as u32).to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, a, b, c), SIM_PORT))
}

/// The simulated node at `addr`, if it is a [`sim_addr`].
pub fn sim_node(addr: SocketAddr) -> Option<NodeId> {
    match addr {
        SocketAddr::V4(v4) if v4.port() == SIM_PORT && v4.ip().octets()[0] == 10 => {
            let [_, a, b, c] = v4.ip().octets();
            Some(NodeId::new(u64::from(u32::from_be_bytes([0, a, b, c]))))
        }
        _ => None,
    }
}

/// What simulated members send each other.
#[derive(Clone)]
pub enum SimPacket {
    /// One datagram.
    Datagram(Vec<u8>),
    /// A reliable-channel request.
    Request {
        /// The sender's exchange id.
        id: RequestId,
        /// The request.
        bytes: Vec<u8>,
    },
    /// A reliable-channel response (`None`: the request was refused).
    Response {
        /// The exchange it answers.
        id: RequestId,
        /// The response.
        bytes: Option<Vec<u8>>,
    },
}

impl SimPacket {
    /// Bytes this packet puts on the wire.
    pub fn len(&self) -> usize {
        match self {
            SimPacket::Datagram(b) | SimPacket::Request { bytes: b, .. } => b.len(),
            SimPacket::Response { bytes, .. } => bytes.as_ref().map_or(0, Vec::len),
        }
    }

    /// Whether the packet is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for SimPacket {
    // Sizes, not contents: traces stay short and independent of random nonces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimPacket::Datagram(b) => write!(f, "Datagram({} B)", b.len()),
            SimPacket::Request { id, bytes } => write!(f, "Request({}, {} B)", id.0, bytes.len()),
            SimPacket::Response { id, bytes } => {
                write!(
                    f,
                    "Response({}, {:?} B)",
                    id.0,
                    bytes.as_ref().map(Vec::len)
                )
            }
        }
    }
}

/// A simulated node's timers.
#[derive(Clone, Debug)]
pub enum SimTimer {
    /// A timer of the protocol core.
    Swim(Timer),
    /// A reliable exchange's deadline.
    ReliableTimeout(RequestId),
    /// Messages held by a processing delay are due.
    Inbound,
}

/// A [`Swim`] node in the simulator. Crashing it loses all state; restarting it boots a
/// fresh core (incarnation 0) that joins through the same seeds, so the cluster sees a
/// restart followed by a refutation, as with a real process.
pub struct SimMember {
    id: NodeId,
    meta: Vec<u8>,
    config: MembershipConfig,
    seed: u64,
    boots: u64,
    seeds: Vec<SocketAddr>,
    swim: Swim,
    pending: BTreeSet<RequestId>,
    record_events: bool,
    events: Vec<MemberEvent>,
    user_messages: Vec<(Instant, UserMessage)>,
    bytes_sent: u64,
    join_result: Option<Result<usize, SwimError>>,
    inbound_delay: Duration,
    inbound: VecDeque<(Instant, NodeId, SimPacket)>,
}

impl SimMember {
    /// A node `id` that joins through the nodes `seeds` when it starts.
    pub fn new(
        id: NodeId,
        meta: Vec<u8>,
        config: MembershipConfig,
        seeds: &[NodeId],
        seed: u64,
    ) -> Result<Self, SwimError> {
        let swim = Swim::new(id, sim_addr(id), meta.clone(), 0, config.clone(), seed)?;
        Ok(Self {
            id,
            meta,
            config,
            seed,
            boots: 0,
            seeds: seeds.iter().map(|&s| sim_addr(s)).collect(),
            swim,
            pending: BTreeSet::new(),
            record_events: true,
            events: Vec::new(),
            user_messages: Vec::new(),
            bytes_sent: 0,
            join_result: None,
            inbound_delay: Duration::ZERO,
            inbound: VecDeque::new(),
        })
    }

    /// Whether to keep [`MemberEvent`]s for [`SimMember::drain_events`] (on by default; large
    /// simulations may turn it off to save memory).
    pub fn set_record_events(&mut self, record: bool) {
        self.record_events = record;
        if !record {
            self.events.clear();
        }
    }

    /// Makes the node handle every arriving message `delay` late, in arrival order, while
    /// its timers still fire on time: a node starved of CPU, whose receive loop lags.
    /// Zero restores normal handling (messages already held keep their times).
    pub fn set_inbound_delay(&mut self, delay: Duration) {
        self.inbound_delay = delay;
    }

    /// The protocol core.
    pub fn swim(&self) -> &Swim {
        &self.swim
    }

    /// The protocol core, to call its API; hand what it outputs to
    /// [`SimMember::flush`] in the same `act` call.
    pub fn swim_mut(&mut self) -> &mut Swim {
        &mut self.swim
    }

    /// Events recorded since the last call.
    pub fn drain_events(&mut self) -> Vec<MemberEvent> {
        std::mem::take(&mut self.events)
    }

    /// User broadcasts delivered since the last call, with when they arrived.
    pub fn drain_user_messages(&mut self) -> Vec<(Instant, UserMessage)> {
        std::mem::take(&mut self.user_messages)
    }

    /// Bytes this node sent (datagrams and reliable traffic) since it was created.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// How the last join ended, if it has.
    pub fn join_result(&self) -> Option<&Result<usize, SwimError>> {
        self.join_result.as_ref()
    }

    /// Moves everything the core asked for into the simulator's outputs.
    pub fn flush(&mut self, now: Instant, out: &mut Outputs<SimPacket, SimTimer>) {
        while let Some(output) = self.swim.poll_output() {
            match output {
                Output::Datagram { to, bytes } => {
                    if let Some(node) = sim_node(to) {
                        self.bytes_sent += bytes.len() as u64;
                        out.send(node, SimPacket::Datagram(bytes));
                    }
                }
                Output::Reliable {
                    to,
                    id,
                    bytes,
                    timeout,
                } => {
                    self.pending.insert(id);
                    out.set_timer(timeout, SimTimer::ReliableTimeout(id));
                    if let Some(node) = sim_node(to) {
                        self.bytes_sent += bytes.len() as u64;
                        out.send(node, SimPacket::Request { id, bytes });
                    }
                }
                Output::Timer { after, timer } => out.set_timer(after, SimTimer::Swim(timer)),
                Output::Event(event) => {
                    if self.record_events {
                        self.events.push(event);
                    }
                }
                Output::UserMessage(message) => self.user_messages.push((now, message)),
                Output::JoinFinished(result) => self.join_result = Some(result),
            }
        }
    }
}

impl Node for SimMember {
    type Message = SimPacket;
    type Timer = SimTimer;

    fn on_start(&mut self, now: Instant, out: &mut Outputs<SimPacket, SimTimer>) {
        if self.boots > 0 {
            let seed = self.seed ^ self.boots.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            self.swim = Swim::new(
                self.id,
                sim_addr(self.id),
                self.meta.clone(),
                0,
                self.config.clone(),
                seed,
            )
            .expect("the config was valid at the first boot");
            self.pending.clear();
            self.join_result = None;
        }
        self.boots += 1;
        self.swim.start(now);
        let seeds = self.seeds.clone();
        // A node only fails to join when it has left, which a fresh core has not.
        let _ = self.swim.join(now, &seeds);
        self.flush(now, out);
    }

    fn on_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: SimPacket,
        out: &mut Outputs<SimPacket, SimTimer>,
    ) {
        if !self.inbound_delay.is_zero() || !self.inbound.is_empty() {
            let due = now.checked_add(self.inbound_delay).unwrap_or(now);
            let due = self
                .inbound
                .back()
                .map_or(due, |&(last, _, _)| due.max(last));
            self.inbound.push_back((due, from, message));
            out.set_timer(due.saturating_duration_since(now), SimTimer::Inbound);
            return;
        }
        self.handle(now, from, message, out);
    }

    fn on_timer(&mut self, now: Instant, timer: SimTimer, out: &mut Outputs<SimPacket, SimTimer>) {
        match timer {
            SimTimer::Swim(timer) => self.swim.handle_timer(now, timer),
            SimTimer::ReliableTimeout(id) => {
                if self.pending.remove(&id) {
                    self.swim.handle_reliable_response(now, id, Err(()));
                }
            }
            SimTimer::Inbound => {
                while self.inbound.front().is_some_and(|&(due, _, _)| due <= now) {
                    let (_, from, message) = self.inbound.pop_front().expect("checked");
                    self.handle(now, from, message, out);
                }
            }
        }
        self.flush(now, out);
    }

    fn on_crash(&mut self) {
        self.pending.clear();
        self.events.clear();
        self.inbound.clear();
    }
}

impl SimMember {
    fn handle(
        &mut self,
        now: Instant,
        from: NodeId,
        message: SimPacket,
        out: &mut Outputs<SimPacket, SimTimer>,
    ) {
        let from_addr = sim_addr(from);
        match message {
            SimPacket::Datagram(bytes) => self.swim.handle_datagram(now, from_addr, &bytes),
            SimPacket::Request { id, bytes } => {
                let response = self.swim.handle_reliable_request(now, from_addr, &bytes);
                if let Some(r) = &response {
                    self.bytes_sent += r.len() as u64;
                }
                out.send(
                    from,
                    SimPacket::Response {
                        id,
                        bytes: response,
                    },
                );
            }
            SimPacket::Response { id, bytes } => {
                if self.pending.remove(&id) {
                    self.swim.handle_reliable_response(now, id, bytes.ok_or(()));
                }
            }
        }
        self.flush(now, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_addresses_round_trip() {
        for id in [1u64, 255, 256, 65_535, 1_000_000] {
            let id = NodeId::new(id);
            assert_eq!(sim_node(sim_addr(id)), Some(id));
        }
        assert_eq!(sim_node("127.0.0.1:7946".parse().unwrap()), None);
        assert_eq!(sim_node("10.0.0.1:80".parse().unwrap()), None);
    }
}

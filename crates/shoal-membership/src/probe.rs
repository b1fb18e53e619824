//! Failure detection: SWIM's randomized round-robin probing with indirect probes, plus
//! Lifeguard's nacks and local health (LHA-Probe) and the buddy system, and a TCP fallback.
//!
//! One probe runs at a time. It starts with a direct ping; if no ack comes within the
//! (health-scaled) probe timeout, `indirect_checks` members are asked to ping the target for
//! us, and the target is asked over the reliable channel too. If nothing has acked when the
//! (health-scaled) probe interval ends, the target is suspected and the next probe starts.

use crate::member::MemberState;
use crate::message::{IndirectPing, Message, Ping, ReliableRequest, Suspect};
use crate::output::TimerKind;
use crate::swim::Swim;
use crate::sync::ReliablePurpose;
use shoal_core::{codec, Instant, NodeId};
use std::net::SocketAddr;

/// The probe in flight.
#[derive(Clone, Debug)]
pub(crate) struct ProbeState {
    pub(crate) seq: u32,
    pub(crate) target: NodeId,
    pub(crate) acked: bool,
    pub(crate) expected_nacks: u32,
    pub(crate) nacks: u32,
    pub(crate) started: Instant,
}

/// An indirect probe this node runs for another.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relay {
    pub(crate) origin: SocketAddr,
    pub(crate) origin_seq: u32,
    pub(crate) want_nack: bool,
}

/// Last-chance probes whose acks are recognised: a few rounds' worth (each suspect gets at
/// most one, answered within a probe timeout).
pub(crate) const LAST_CHANCE_REMEMBERED: usize = 64;

impl Swim {
    fn next_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    /// The next member to probe: round-robin over a shuffled list, reshuffled each round.
    fn next_probe_target(&mut self) -> Option<NodeId> {
        for _ in 0..2 {
            while self.probe_cursor < self.probe_order.len() {
                let id = self.probe_order[self.probe_cursor];
                self.probe_cursor += 1;
                if self.member(id).is_some_and(|m| m.state.is_live()) {
                    return Some(id);
                }
            }
            // A new round over the members that exist now.
            let mut order: Vec<NodeId> = self
                .members
                .as_slice()
                .iter()
                .filter(|m| m.id != self.id && m.state.is_live())
                .map(|m| m.id)
                .collect();
            if order.is_empty() {
                self.probe_order.clear();
                self.probe_cursor = 0;
                return None;
            }
            shoal_core::Rng::shuffle(&mut self.rng, &mut order);
            self.probe_order = order;
            self.probe_cursor = 0;
        }
        None
    }

    /// Lifeguard's buddy system: the suspicion to carry in a probe of `target`, if we
    /// suspect it, so it can refute at once.
    pub(crate) fn buddy_suspicion(&self, target: NodeId) -> Option<Suspect> {
        let member = self.member(target)?;
        (self.config.buddy_system && member.state == MemberState::Suspect).then_some(Suspect {
            id: target,
            incarnation: member.incarnation,
            from: self.id,
        })
    }

    /// Probes a suspect whose suspicion expired with little independent evidence: directly
    /// and through `indirect_checks` relays, each carrying the suspicion. A live member
    /// refutes, and its new incarnation rides back on the acks. Acks alone do not clear a
    /// suspicion (only the member's refutation does), so they are not tracked.
    pub(crate) fn last_chance_probe(&mut self, target: NodeId) {
        let Some(addr) = self.member(target).map(|m| m.addr) else {
            return;
        };
        let suspicion = self.buddy_suspicion(target);
        let seq = self.next_seq();
        if self.last_chance_seqs.len() >= LAST_CHANCE_REMEMBERED {
            self.last_chance_seqs.pop_front();
        }
        self.last_chance_seqs.push_back(seq);
        let ping = Message::Ping(Ping {
            seq,
            target,
            suspicion: suspicion.clone(),
        });
        self.send_messages(addr, &[ping]);
        let helpers = self.random_members(self.config.indirect_checks, |m| {
            m.id != target && m.state == MemberState::Alive
        });
        let request = Message::IndirectPing(IndirectPing {
            seq,
            target,
            target_addr: addr,
            want_nack: false,
            suspicion,
        });
        for i in helpers {
            let helper = self.members.at(i).addr;
            self.send_messages(helper, std::slice::from_ref(&request));
        }
    }

    /// Starts a probe of the next member, and schedules its end (which starts the next).
    pub(crate) fn start_probe(&mut self, now: Instant) {
        if self.left {
            return;
        }
        let interval = self.awareness.scale(self.config.probe_interval);
        let Some(target) = self.next_probe_target() else {
            // Nobody to probe yet: look again after an interval.
            self.set_timer(interval, TimerKind::Probe(self.probe_generation));
            return;
        };
        let member = self.member(target).expect("probe target is a member");
        let (addr, state, incarnation) = (member.addr, member.state, member.incarnation);
        let seq = self.next_seq();
        let suspicion =
            (self.config.buddy_system && state == MemberState::Suspect).then_some(Suspect {
                id: target,
                incarnation,
                from: self.id,
            });
        self.probe = Some(ProbeState {
            seq,
            target,
            acked: false,
            expected_nacks: 0,
            nacks: 0,
            started: now,
        });
        self.stats.probes += 1;
        self.send_messages(
            addr,
            &[Message::Ping(Ping {
                seq,
                target,
                suspicion,
            })],
        );
        let timeout = self.awareness.scale(self.config.probe_timeout);
        self.set_timer(timeout, TimerKind::ProbeTimeout(seq));
        self.set_timer(interval, TimerKind::ProbeEnd(seq));
    }

    /// The direct ack is overdue: ask others to probe, and try the reliable channel.
    pub(crate) fn on_probe_timeout(&mut self, now: Instant, seq: u32) {
        let Some(probe) = self.probe.as_ref().filter(|p| p.seq == seq && !p.acked) else {
            return;
        };
        let target = probe.target;
        let started = probe.started;
        let Some(target_addr) = self.member(target).map(|m| m.addr) else {
            return;
        };
        let helpers = self.random_members(self.config.indirect_checks, |m| {
            m.id != target && m.state == MemberState::Alive
        });
        let suspicion = self.buddy_suspicion(target);
        let request = Message::IndirectPing(IndirectPing {
            seq,
            target,
            target_addr,
            want_nack: true,
            suspicion,
        });
        for &i in &helpers {
            let addr = self.members.at(i).addr;
            self.send_messages(addr, std::slice::from_ref(&request));
        }
        if let Some(probe) = self.probe.as_mut() {
            probe.expected_nacks = helpers.len() as u32;
        }
        if self.config.tcp_fallback_ping {
            // Whatever is left of the probe interval.
            let end = self.awareness.scale(self.config.probe_interval);
            let remaining = end.saturating_sub(now.saturating_duration_since(started));
            if !remaining.is_zero() {
                let body = codec::encode(&ReliableRequest::Ping { target });
                if let Ok(body) = body {
                    self.send_reliable(
                        target_addr,
                        ReliablePurpose::ProbePing(seq),
                        &body,
                        remaining,
                    );
                }
            }
        }
    }

    /// The probe interval is over: suspect the target unless something acked, adjust local
    /// health, and start the next probe.
    pub(crate) fn on_probe_end(&mut self, now: Instant, seq: u32) {
        let Some(probe) = self.probe.as_ref().filter(|p| p.seq == seq) else {
            return;
        };
        let probe = probe.clone();
        self.probe = None;
        if !probe.acked {
            // Lifeguard: relays that did not even nack suggest our own receive path is the
            // problem; with no relays to ask, a failed probe is itself weak evidence.
            let delta = if probe.expected_nacks > 0 {
                i64::from(probe.expected_nacks.saturating_sub(probe.nacks))
            } else {
                1
            };
            self.awareness.apply(delta);
            self.stats.probe_failures += 1;
            if let Some(member) = self.member(probe.target) {
                if member.state.is_live() {
                    let suspect = Suspect {
                        id: probe.target,
                        incarnation: member.incarnation,
                        from: self.id,
                    };
                    self.stats.suspicions_raised += 1;
                    self.on_suspect(now, suspect);
                }
            }
        }
        self.start_probe(now);
    }

    /// An ack arrived: it ends our probe, or is forwarded to the origin of a relayed probe.
    pub(crate) fn on_ack(&mut self, _now: Instant, seq: u32) {
        if let Some(probe) = self.probe.as_mut().filter(|p| p.seq == seq) {
            if !probe.acked {
                probe.acked = true;
                self.awareness.apply(-1);
            }
            return;
        }
        if let Some(relay) = self.relays.remove(&seq) {
            let ack = Message::Ack {
                seq: relay.origin_seq,
            };
            self.send_messages(relay.origin, &[ack]);
            return;
        }
        if self.last_chance_seqs.contains(&seq) {
            self.stats.last_chance_acks += 1;
            return;
        }
        self.stats.unexpected_acks += 1;
    }

    /// A relay could not reach our target: evidence that the relay, at least, is fine.
    pub(crate) fn on_nack(&mut self, seq: u32) {
        if let Some(probe) = self.probe.as_mut().filter(|p| p.seq == seq) {
            probe.nacks += 1;
        }
    }

    /// A probe of this node: ack it (after refuting a suspicion the buddy system carried).
    pub(crate) fn on_ping(&mut self, now: Instant, from: SocketAddr, ping: Ping) {
        if ping.target != self.id {
            self.stats.misdirected_pings += 1;
            tracing::debug!(%from, target = %ping.target, "ping for another node ignored");
            return;
        }
        if let Some(suspicion) = ping.suspicion {
            if suspicion.id == self.id {
                self.on_suspect(now, suspicion);
            }
        }
        self.send_messages(from, &[Message::Ack { seq: ping.seq }]);
    }

    /// Another member asks us to probe a target for it.
    pub(crate) fn on_indirect_ping(&mut self, from: SocketAddr, request: IndirectPing) {
        if self.relays.len() >= self.config.max_pending_relays {
            self.stats.relays_refused += 1;
            return;
        }
        let seq = self.next_seq();
        self.relays.insert(
            seq,
            Relay {
                origin: from,
                origin_seq: request.seq,
                want_nack: request.want_nack,
            },
        );
        let ping = Message::Ping(Ping {
            seq,
            target: request.target,
            suspicion: request.suspicion,
        });
        self.send_messages(request.target_addr, &[ping]);
        self.set_timer(self.config.probe_timeout, TimerKind::RelayTimeout(seq));
    }

    /// A relayed probe got no ack in time: tell the origin, if it asked.
    pub(crate) fn on_relay_timeout(&mut self, seq: u32) {
        if let Some(relay) = self.relays.remove(&seq) {
            if relay.want_nack {
                let nack = Message::Nack {
                    seq: relay.origin_seq,
                };
                self.send_messages(relay.origin, &[nack]);
            }
        }
    }

    /// The reliable-channel probe answered.
    pub(crate) fn on_reliable_ack(&mut self, seq: u32) {
        if let Some(probe) = self.probe.as_mut().filter(|p| p.seq == seq) {
            probe.acked = true;
        }
    }
}

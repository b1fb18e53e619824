//! Dissemination and state sync: periodic gossip of queued updates, push-pull full-state
//! exchange over the reliable channel, joining through seeds, and leaving gracefully.

use crate::member::Member;
use crate::member::{MemberState, WireMember};
use crate::message::{Alive, Dead, PushPull, ReliableRequest, ReliableResponse, Suspect};
use crate::output::{Output, RequestId, TimerKind};
use crate::packet::Kind;
use crate::swim::{Swim, SwimError};
use shoal_core::{codec, Instant, Rng};
use std::net::SocketAddr;
use std::time::Duration;

/// Largest reliable message accepted: a push-pull of a very large cluster.
pub const MAX_RELIABLE_BYTES: usize = 16 * 1024 * 1024;

/// Why a reliable exchange was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReliablePurpose {
    /// Periodic anti-entropy.
    PushPull,
    /// Part of join attempt `generation`.
    Join(u64),
    /// TCP fallback for probe `seq`.
    ProbePing(u32),
}

/// A join in progress.
#[derive(Clone, Debug)]
pub(crate) struct JoinState {
    seeds: Vec<SocketAddr>,
    attempt: u32,
    generation: u64,
    outstanding: usize,
    answered: usize,
}

impl Swim {
    // ---- gossip --------------------------------------------------------------------------

    pub(crate) fn on_gossip_timer(&mut self, now: Instant) {
        self.set_timer(self.config.gossip_interval, TimerKind::Gossip);
        self.gossip_now(now);
    }

    // ---- push-pull -----------------------------------------------------------------------

    /// memberlist's scaling: clusters above 32 members push-pull less often, so the total
    /// rate grows only logarithmically.
    fn push_pull_interval(&self) -> Duration {
        let base = self.config.push_pull_interval;
        let n = self.live as f64;
        if n <= 32.0 {
            return base;
        }
        let multiplier = (n.log2() - 32f64.log2()).ceil() as u32 + 1;
        base.saturating_mul(multiplier)
    }

    pub(crate) fn on_push_pull_timer(&mut self, _now: Instant) {
        self.set_timer(self.push_pull_interval(), TimerKind::PushPull);
        if self.left {
            return;
        }
        let peers = self.random_members(1, |m| m.state == MemberState::Alive);
        if let Some(&i) = peers.first() {
            let addr = self.members.at(i).addr;
            self.send_push_pull(addr, false, ReliablePurpose::PushPull);
        }
    }

    /// Push-pull with one random dead member, in case it is alive behind a healed
    /// partition. If it is, the exchange makes both sides refute and re-merge.
    pub(crate) fn on_reconnect_timer(&mut self, _now: Instant) {
        self.set_timer(self.config.reconnect_interval, TimerKind::Reconnect);
        if self.left {
            return;
        }
        let dead = self.random_members(1, |m| m.state == MemberState::Dead);
        if let Some(&i) = dead.first() {
            let addr = self.members.at(i).addr;
            self.send_push_pull(addr, false, ReliablePurpose::PushPull);
        }
    }

    fn local_state(&self, join: bool) -> PushPull {
        PushPull {
            join,
            members: self
                .members
                .as_slice()
                .iter()
                .map(Member::to_wire)
                .collect(),
        }
    }

    fn send_push_pull(&mut self, to: SocketAddr, join: bool, purpose: ReliablePurpose) -> bool {
        let request = ReliableRequest::PushPull(self.local_state(join));
        let body = match codec::encode(&request) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(%e, "could not encode push-pull");
                return false;
            }
        };
        self.send_reliable(to, purpose, &body, self.config.reliable_timeout);
        true
    }

    /// Merges a peer's full state into ours. A peer's "dead" becomes our suspicion (we give
    /// the member the chance to refute); its "left" is taken as is.
    fn merge_remote(&mut self, now: Instant, members: Vec<WireMember>) {
        for m in members {
            match m.state {
                MemberState::Alive => self.on_alive(
                    now,
                    Alive {
                        id: m.id,
                        addr: m.addr,
                        incarnation: m.incarnation,
                        meta: m.meta,
                    },
                ),
                MemberState::Left => self.on_dead(
                    now,
                    Dead {
                        id: m.id,
                        incarnation: m.incarnation,
                        from: m.id,
                    },
                ),
                MemberState::Suspect | MemberState::Dead => self.on_suspect(
                    now,
                    Suspect {
                        id: m.id,
                        incarnation: m.incarnation,
                        from: self.id,
                    },
                ),
            }
        }
    }

    /// Answers a request that arrived on the reliable channel. `None` means the request was
    /// refused (malformed, another cluster, undecryptable) and counted; the driver should
    /// close the exchange with an error.
    pub fn handle_reliable_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        if bytes.len() > MAX_RELIABLE_BYTES {
            self.stats.packets_malformed += 1;
            return None;
        }
        let body = match self.codec.open(Kind::Request, bytes) {
            Ok(body) => body,
            Err(e) => {
                self.count_refused(from, e);
                return None;
            }
        };
        let request: ReliableRequest = match codec::decode(&body, MAX_RELIABLE_BYTES) {
            Ok(request) => request,
            Err(_) => {
                self.stats.packets_malformed += 1;
                return None;
            }
        };
        let response = match request {
            ReliableRequest::PushPull(remote) => {
                self.merge_remote(now, remote.members);
                ReliableResponse::PushPull(self.local_state(false))
            }
            ReliableRequest::Ping { target } if target == self.id && !self.left => {
                ReliableResponse::Ack
            }
            ReliableRequest::Ping { .. } => ReliableResponse::Refused,
        };
        let body = codec::encode(&response).ok()?;
        let sealed = self.codec.seal(Kind::Response, &body);
        self.stats.reliable_bytes_sent += sealed.len() as u64;
        Some(sealed)
    }

    /// The outcome of an [`Output::Reliable`] exchange: the response's bytes, or `Err(())`
    /// if it failed or timed out.
    pub fn handle_reliable_response(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<Vec<u8>, ()>,
    ) {
        let Some((peer, purpose)) = self.reliable.remove(&id) else {
            return;
        };
        let response = result
            .ok()
            .and_then(|bytes| self.open_response(peer, &bytes));
        match purpose {
            ReliablePurpose::ProbePing(seq) => {
                if response == Some(ReliableResponse::Ack) {
                    self.on_reliable_ack(seq);
                }
            }
            ReliablePurpose::PushPull => {
                if let Some(ReliableResponse::PushPull(remote)) = response {
                    self.merge_remote(now, remote.members);
                }
            }
            ReliablePurpose::Join(generation) => {
                let ok = match response {
                    Some(ReliableResponse::PushPull(remote)) => {
                        self.merge_remote(now, remote.members);
                        true
                    }
                    _ => false,
                };
                self.on_join_answer(generation, ok);
            }
        }
    }

    /// Seals `body` and asks the driver to send it over the reliable channel to `to`,
    /// remembering what it was for and whom it went to.
    pub(crate) fn send_reliable(
        &mut self,
        to: SocketAddr,
        purpose: ReliablePurpose,
        body: &[u8],
        timeout: Duration,
    ) {
        let bytes = self.codec.seal(Kind::Request, body);
        let id = self.next_request_id();
        self.reliable.insert(id, (to, purpose));
        self.stats.reliable_sent += 1;
        self.stats.reliable_bytes_sent += bytes.len() as u64;
        self.outputs.push_back(Output::Reliable {
            to,
            id,
            bytes,
            timeout,
        });
    }

    fn open_response(&mut self, from: SocketAddr, bytes: &[u8]) -> Option<ReliableResponse> {
        if bytes.len() > MAX_RELIABLE_BYTES {
            self.stats.packets_malformed += 1;
            return None;
        }
        let body = match self.codec.open(Kind::Response, bytes) {
            Ok(body) => body,
            Err(e) => {
                self.count_refused(from, e);
                return None;
            }
        };
        match codec::decode(&body, MAX_RELIABLE_BYTES) {
            Ok(response) => Some(response),
            Err(_) => {
                self.stats.packets_malformed += 1;
                None
            }
        }
    }

    // ---- join ----------------------------------------------------------------------------

    /// Joins the cluster through `seeds`: a push-pull with each. Succeeds (see
    /// [`Output::JoinFinished`]) as soon as an attempt has at least one answer; if none
    /// answers, retries with exponential backoff and jitter. Seeds may be down, wrong, or
    /// this node's own address (skipped). With no usable seed, this node is the first and
    /// the join succeeds at once with 0.
    pub fn join(&mut self, now: Instant, seeds: &[SocketAddr]) -> Result<(), SwimError> {
        if self.left {
            return Err(SwimError::Left);
        }
        let mut unique: Vec<SocketAddr> = Vec::new();
        for &seed in seeds {
            if seed != self.addr && !unique.contains(&seed) {
                unique.push(seed);
            }
        }
        self.join_generation += 1;
        if unique.is_empty() {
            self.join = None;
            self.outputs.push_back(Output::JoinFinished(Ok(0)));
            return Ok(());
        }
        self.join = Some(JoinState {
            seeds: unique,
            attempt: 0,
            generation: self.join_generation,
            outstanding: 0,
            answered: 0,
        });
        self.join_attempt(now);
        Ok(())
    }

    fn join_attempt(&mut self, _now: Instant) {
        let Some(join) = self.join.as_mut() else {
            return;
        };
        join.attempt += 1;
        join.outstanding = join.seeds.len();
        join.answered = 0;
        let generation = join.generation;
        let seeds = join.seeds.clone();
        for seed in seeds {
            if !self.send_push_pull(seed, true, ReliablePurpose::Join(generation)) {
                self.on_join_answer(generation, false);
            }
        }
    }

    fn on_join_answer(&mut self, generation: u64, ok: bool) {
        let Some(join) = self.join.as_mut().filter(|j| j.generation == generation) else {
            return;
        };
        join.outstanding = join.outstanding.saturating_sub(1);
        if ok {
            join.answered += 1;
        }
        if join.outstanding > 0 {
            return;
        }
        let (answered, attempt) = (join.answered, join.attempt);
        if answered > 0 {
            self.join = None;
            self.outputs.push_back(Output::JoinFinished(Ok(answered)));
            return;
        }
        let max = self.config.join_max_attempts;
        if max != 0 && attempt >= max {
            self.join = None;
            self.outputs
                .push_back(Output::JoinFinished(Err(SwimError::JoinFailed {
                    attempts: attempt,
                })));
            return;
        }
        // Exponential backoff with equal jitter: half fixed, half random.
        let exp = self
            .config
            .join_initial_backoff
            .saturating_mul(1u32 << (attempt - 1).min(20));
        let backoff = exp.min(self.config.join_max_backoff);
        let delay = self.rng.duration_between(backoff / 2, backoff);
        tracing::debug!(attempt, ?delay, "no seed answered; retrying join");
        self.set_timer(delay, TimerKind::JoinRetry(generation));
    }

    pub(crate) fn on_join_retry(&mut self, now: Instant, generation: u64) {
        if self
            .join
            .as_ref()
            .is_some_and(|j| j.generation == generation)
        {
            self.join_attempt(now);
        }
    }

    // ---- leave ---------------------------------------------------------------------------

    /// Leaves the cluster gracefully: stops probing and gossips a Left notice, so peers
    /// drop this node at once instead of suspecting it. Keep driving the node until
    /// [`Swim::leave_announced`] (or a timeout), then stop it.
    pub fn leave(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.left = true;
        self.join = None;
        self.probe = None;
        self.probe_generation += 1;
        let id = self.id;
        self.set_state(now, id, MemberState::Left);
        let dead = Dead {
            id,
            incarnation: self.incarnation,
            from: id,
        };
        self.queue_news(id, dead.from);
    }

    /// Whether [`Swim::leave`] was called and its Left notice has been sent as many times as
    /// any update is retransmitted.
    pub fn leave_announced(&self) -> bool {
        self.left && !self.broadcasts.contains_member(self.id)
    }

    /// Runs a gossip round now: queued updates to `gossip_nodes` random members. The gossip
    /// timer does this every `gossip_interval`; a driver may call it after
    /// [`Swim::leave`] to get the notice out sooner.
    pub fn gossip_now(&mut self, now: Instant) {
        if self.broadcasts.len() == 0 {
            return;
        }
        // Gossiping to the recently dead lets a wrongly declared member learn of it and
        // refute. A leaving node has only its Left notice to spread and a short time to do
        // it, so it spends none of the notice's transmissions on members that cannot hear.
        let dead_time = self.config.gossip_to_the_dead_time;
        let left = self.left;
        let targets = self.random_members(self.config.gossip_nodes, |m| {
            m.state.is_live()
                || (!left && now.saturating_duration_since(m.state_changed) < dead_time)
        });
        for i in targets {
            let addr = self.members.at(i).addr;
            self.send_messages(addr, &[]);
        }
    }
}

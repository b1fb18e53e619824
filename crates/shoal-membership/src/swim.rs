//! The SWIM state machine: one node's view of the cluster, driven by inputs and `now`.
//!
//! The rules are split by concern: [`crate::probe`] (failure detection), [`crate::rules`]
//! (how alive/suspect/dead news changes a member), [`crate::sync`] (gossip, push-pull, join,
//! leave). This file holds the state, the public API and the plumbing they share.

use crate::awareness::Awareness;
use crate::broadcast::{retransmit_limit, BroadcastQueue};
use crate::config::{ConfigError, MembershipConfig};
use crate::event::{MemberEvent, MemberEventKind};
use crate::keyring::Keyring;
use crate::member::{Member, MemberState, MAX_INCARNATION};
use crate::message::{Alive, Dead, Message, Suspect, UserBroadcast};
use crate::output::{Output, RequestId, Timer, TimerKind};
use crate::packet::{push_part, split_parts, Kind, PacketCodec, PacketError};
use crate::probe::{ProbeState, Relay};
use crate::stats::MembershipStats;
use crate::suspicion::Suspicion;
use crate::sync::{JoinState, ReliablePurpose};
use crate::table::MemberTable;
use foldhash::fast::FixedState;
use shoal_core::{codec, DetRng, Instant, NodeId, Rng};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

/// Hash maps with a fixed hasher (foldhash), so iteration order (and with it a simulation)
/// depends only on the inputs, never on per-process random keys.
pub(crate) type DetHashMap<K, V> = hashbrown::HashMap<K, V, FixedState>;
pub(crate) type DetHashSet<K> = hashbrown::HashSet<K, FixedState>;

/// User broadcasts remembered as already delivered, so each is delivered once.
const SEEN_USER_BROADCASTS: usize = 8192;

/// What the API refuses.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SwimError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Metadata over `max_meta_bytes`.
    #[error("metadata of {size} bytes is over the {limit}-byte limit")]
    MetaTooLarge {
        /// Bytes offered.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A user broadcast over `max_user_broadcast_bytes`.
    #[error("broadcast of {size} bytes is over the {limit}-byte limit")]
    BroadcastTooLarge {
        /// Bytes offered.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// `user_broadcast_queue_limit` broadcasts are already waiting.
    #[error("the broadcast queue is full ({limit} waiting)")]
    BroadcastQueueFull {
        /// The limit.
        limit: usize,
    },
    /// This node has left the cluster.
    #[error("this node has left the cluster")]
    Left,
    /// No seed answered after the configured number of attempts.
    #[error("could not join through any seed after {attempts} attempts")]
    JoinFailed {
        /// Attempts made.
        attempts: u32,
    },
    /// A newer join replaced this one before it finished; the newer one carries on.
    #[error("replaced by a newer join")]
    JoinSuperseded,
}

/// One node's SWIM + Lifeguard protocol state. Sans-IO: feed it datagrams, reliable messages
/// and timers with the current time, and carry out what [`Swim::poll_output`] returns.
#[derive(Debug)]
pub struct Swim {
    pub(crate) config: MembershipConfig,
    pub(crate) id: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) incarnation: u64,
    pub(crate) meta: Vec<u8>,
    pub(crate) left: bool,
    pub(crate) rng: DetRng,
    pub(crate) codec: PacketCodec,
    /// Every known member, this node included.
    pub(crate) members: MemberTable,
    /// Members alive or suspect, this node included while it has not left.
    pub(crate) live: usize,
    pub(crate) suspicions: DetHashMap<NodeId, Suspicion>,
    pub(crate) broadcasts: BroadcastQueue,
    pub(crate) awareness: Awareness,
    pub(crate) probe_order: Vec<NodeId>,
    pub(crate) probe_cursor: usize,
    pub(crate) probe: Option<ProbeState>,
    pub(crate) probe_generation: u64,
    pub(crate) next_seq: u32,
    pub(crate) relays: DetHashMap<u32, Relay>,
    /// Sequence numbers of the latest last-chance probes, so their acks are recognised
    /// (bounded by [`crate::probe::LAST_CHANCE_REMEMBERED`]).
    pub(crate) last_chance_seqs: std::collections::VecDeque<u32>,
    /// Reliable exchanges under way: the peer and what each is for.
    pub(crate) reliable: DetHashMap<RequestId, (SocketAddr, ReliablePurpose)>,
    pub(crate) next_request: u64,
    pub(crate) join: Option<JoinState>,
    pub(crate) join_generation: u64,
    pub(crate) user_seq: u64,
    pub(crate) seen_user: DetHashSet<(NodeId, u64)>,
    pub(crate) seen_user_order: VecDeque<(NodeId, u64)>,
    pub(crate) started: bool,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) stats: MembershipStats,
}

impl Swim {
    /// A node `id` reachable at `addr`, with initial metadata `meta`. `seed` drives every
    /// random choice (probe order, gossip targets, jitter): pass
    /// [`shoal_core::rng::entropy_seed`] in production and a fixed seed in simulation.
    ///
    /// `incarnation` should be 0 for a new node. A restarted node may pass anything up to
    /// [`MAX_INCARNATION`](crate::member::MAX_INCARNATION) (a larger value is taken as the
    /// bound, which peers still accept); if the cluster remembers it at a higher incarnation,
    /// it refutes that on joining.
    pub fn new(
        id: NodeId,
        addr: SocketAddr,
        meta: Vec<u8>,
        incarnation: u64,
        config: MembershipConfig,
        seed: u64,
    ) -> Result<Self, SwimError> {
        config.validate()?;
        check_meta(&meta, config.max_meta_bytes)?;
        let codec = PacketCodec::new(
            config.label.clone(),
            config.keyring.clone(),
            config.accept_plaintext,
        );
        let awareness = Awareness::new(config.awareness_max_multiplier);
        let mut swim = Self {
            id,
            addr,
            incarnation: incarnation.min(MAX_INCARNATION),
            meta,
            left: false,
            rng: DetRng::from_seed(seed),
            codec,
            members: MemberTable::new(seed),
            live: 0,
            suspicions: DetHashMap::default(),
            broadcasts: BroadcastQueue::new(seed),
            awareness,
            probe_order: Vec::new(),
            probe_cursor: 0,
            probe: None,
            probe_generation: 0,
            next_seq: 0,
            relays: DetHashMap::default(),
            last_chance_seqs: std::collections::VecDeque::new(),
            reliable: DetHashMap::default(),
            next_request: 0,
            join: None,
            join_generation: 0,
            user_seq: 0,
            seen_user: DetHashSet::default(),
            seen_user_order: VecDeque::new(),
            started: false,
            outputs: VecDeque::new(),
            stats: MembershipStats::default(),
            config,
        };
        let me = Member {
            id,
            addr,
            incarnation,
            state: MemberState::Alive,
            meta: swim.meta.clone(),
            state_changed: Instant::from_nanos(0),
        };
        swim.insert_member(me);
        Ok(swim)
    }

    /// Starts the protocol's periodic work (probing, gossip, push-pull, reaping) and
    /// announces this node. Call once, before anything else.
    pub fn start(&mut self, now: Instant) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(me) = self.members.get_mut(self.id) {
            me.state_changed = now;
        }
        self.queue_alive_of_self();
        // Random phases, so nodes started together do not probe and gossip in lockstep.
        let probe_at = self
            .rng
            .duration_between(Duration::ZERO, self.config.probe_interval);
        self.set_timer(probe_at, TimerKind::Probe(self.probe_generation));
        let gossip_at = self
            .rng
            .duration_between(Duration::ZERO, self.config.gossip_interval);
        self.set_timer(gossip_at, TimerKind::Gossip);
        if !self.config.push_pull_interval.is_zero() {
            let at = self.rng.duration_between(
                self.config.push_pull_interval / 2,
                self.config.push_pull_interval,
            );
            self.set_timer(at, TimerKind::PushPull);
        }
        self.set_timer(self.reap_interval(), TimerKind::Reap);
        if !self.config.reconnect_interval.is_zero() {
            self.set_timer(self.config.reconnect_interval, TimerKind::Reconnect);
        }
    }

    /// The next thing the driver should do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Handles a timer set earlier.
    pub fn handle_timer(&mut self, now: Instant, timer: Timer) {
        match timer.0 {
            TimerKind::Probe(generation) => {
                if generation == self.probe_generation && self.probe.is_none() {
                    self.start_probe(now);
                }
            }
            TimerKind::ProbeTimeout(seq) => self.on_probe_timeout(now, seq),
            TimerKind::ProbeEnd(seq) => self.on_probe_end(now, seq),
            TimerKind::RelayTimeout(seq) => self.on_relay_timeout(seq),
            TimerKind::Gossip => self.on_gossip_timer(now),
            TimerKind::PushPull => self.on_push_pull_timer(now),
            TimerKind::Suspicion(id) => self.on_suspicion_timer(now, id),
            TimerKind::Reap => self.on_reap_timer(now),
            TimerKind::Reconnect => self.on_reconnect_timer(now),
            TimerKind::JoinRetry(generation) => self.on_join_retry(now, generation),
        }
    }

    /// Handles a datagram from `from`. Anything malformed, from another cluster or not
    /// decryptable is dropped and counted; nothing in it takes effect.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.packets_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        if bytes.len() > self.config.max_packet_bytes {
            self.stats.packets_malformed += 1;
            tracing::debug!(%from, len = bytes.len(), "oversized membership packet dropped");
            return;
        }
        let body = match self.codec.open(Kind::Datagram, bytes) {
            Ok(body) => body,
            Err(e) => return self.count_refused(from, e),
        };
        // Decode everything before acting on anything: a packet is taken whole or not at all.
        let messages: Result<Vec<Message>, PacketError> = split_parts(&body).and_then(|parts| {
            parts
                .into_iter()
                .map(|part| codec::decode(part, part.len()).map_err(|_| PacketError::Malformed))
                .collect()
        });
        let messages = match messages {
            Ok(messages) => messages,
            Err(e) => return self.count_refused(from, e),
        };
        for message in messages {
            self.handle_message(now, from, message);
        }
    }

    fn handle_message(&mut self, now: Instant, from: SocketAddr, message: Message) {
        match message {
            Message::Ping(ping) => self.on_ping(now, from, ping),
            Message::IndirectPing(req) => self.on_indirect_ping(from, req),
            Message::Ack { seq } => self.on_ack(now, seq),
            Message::Nack { seq } => self.on_nack(seq),
            Message::Alive(alive) => self.on_alive(now, alive),
            Message::Suspect(suspect) => self.on_suspect(now, suspect),
            Message::Dead(dead) => self.on_dead(now, dead),
            Message::User(user) => self.on_user_broadcast(user),
        }
    }

    pub(crate) fn count_refused(&mut self, from: SocketAddr, error: PacketError) {
        match error {
            PacketError::Malformed | PacketError::WrongKind => self.stats.packets_malformed += 1,
            PacketError::WrongLabel => self.stats.packets_wrong_label += 1,
            PacketError::DecryptFailed | PacketError::NoKeyring => {
                self.stats.packets_decrypt_failed += 1
            }
            PacketError::Unencrypted => self.stats.packets_unencrypted += 1,
        }
        tracing::debug!(%from, %error, "membership packet refused");
    }

    /// Publishes new metadata: raises this node's incarnation and gossips it.
    pub fn set_meta(&mut self, meta: Vec<u8>) -> Result<(), SwimError> {
        if self.left {
            return Err(SwimError::Left);
        }
        if let Err(e) = check_meta(&meta, self.config.max_meta_bytes) {
            self.stats.meta_too_large += 1;
            return Err(e);
        }
        self.meta = meta;
        self.incarnation = self.incarnation.saturating_add(1).min(MAX_INCARNATION);
        self.sync_self_member();
        self.queue_alive_of_self();
        Ok(())
    }

    /// Broadcasts `payload` to every member, best-effort (epidemic gossip; each member
    /// delivers it once as [`Output::UserMessage`]).
    pub fn broadcast(&mut self, payload: Vec<u8>) -> Result<(), SwimError> {
        if self.left {
            return Err(SwimError::Left);
        }
        let limit = self.config.max_user_broadcast_bytes;
        if payload.len() > limit {
            return Err(SwimError::BroadcastTooLarge {
                size: payload.len(),
                limit,
            });
        }
        let queue_limit = self.config.user_broadcast_queue_limit;
        if self.broadcasts.user_len() >= queue_limit {
            return Err(SwimError::BroadcastQueueFull { limit: queue_limit });
        }
        self.user_seq += 1;
        let user = UserBroadcast {
            origin: self.id,
            seq: self.user_seq,
            payload,
        };
        self.remember_user(user.origin, user.seq);
        self.queue_user(&user);
        Ok(())
    }

    fn on_user_broadcast(&mut self, user: UserBroadcast) {
        if !self.remember_user(user.origin, user.seq) {
            return;
        }
        self.stats.user_messages_received += 1;
        if self.broadcasts.user_len() < self.config.user_broadcast_queue_limit {
            self.queue_user(&user);
        } else {
            self.stats.user_messages_dropped += 1;
        }
        self.outputs
            .push_back(Output::UserMessage(crate::UserMessage {
                from: user.origin,
                payload: user.payload,
            }));
    }

    fn queue_user(&mut self, user: &UserBroadcast) {
        match codec::encode(&Message::User(user.clone())) {
            Ok(bytes) => self.broadcasts.push_user(bytes),
            Err(e) => tracing::error!(%e, "could not encode a user broadcast"),
        }
    }

    /// Records a user broadcast as seen; false if it already was.
    fn remember_user(&mut self, origin: NodeId, seq: u64) -> bool {
        if !self.seen_user.insert((origin, seq)) {
            return false;
        }
        self.seen_user_order.push_back((origin, seq));
        if self.seen_user_order.len() > SEEN_USER_BROADCASTS {
            if let Some(old) = self.seen_user_order.pop_front() {
                self.seen_user.remove(&old);
            }
        }
        true
    }

    // ---- accessors -------------------------------------------------------------------

    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.id
    }

    /// This node's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// This node's incarnation (raised by refutations and metadata updates).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Every member this node knows of, itself included, dead and left ones until reaped.
    pub fn members(&self) -> &[Member] {
        self.members.as_slice()
    }

    /// One member, if known.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(id)
    }

    /// Members alive or suspect, this node included (unless it has left).
    pub fn num_live(&self) -> usize {
        self.live
    }

    /// Counters.
    pub fn stats(&self) -> &MembershipStats {
        &self.stats
    }

    /// Lifeguard's local health score: 0 is healthy, up to `awareness_max_multiplier − 1`.
    pub fn health_score(&self) -> u32 {
        self.awareness.score()
    }

    /// Whether [`Swim::leave`] was called.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Whether a join is still in progress.
    pub fn is_joining(&self) -> bool {
        self.join.is_some()
    }

    /// The encryption keyring, to rotate keys while running.
    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.codec.keyring_mut().as_mut()
    }

    // ---- plumbing shared by the rule files ---------------------------------------------

    pub(crate) fn set_timer(&mut self, after: Duration, kind: TimerKind) {
        self.outputs.push_back(Output::Timer {
            after,
            timer: Timer(kind),
        });
    }

    pub(crate) fn emit(&mut self, now: Instant, kind: MemberEventKind, id: NodeId) {
        if let Some(m) = self.member(id) {
            let event = MemberEvent {
                kind,
                id,
                addr: m.addr,
                incarnation: m.incarnation,
                meta: m.meta.clone(),
                at: now,
            };
            self.outputs.push_back(Output::Event(event));
        }
    }

    pub(crate) fn transmit_limit(&self) -> u32 {
        retransmit_limit(self.config.retransmit_mult, self.live)
    }

    /// Queues news about member `id` for gossip: its state in the table when sent, with
    /// `from` as the suspecter or declarer of suspect and dead news.
    pub(crate) fn queue_news(&mut self, id: NodeId, from: NodeId) {
        self.broadcasts.push_member(id, from);
    }

    pub(crate) fn queue_alive_of_self(&mut self) {
        self.queue_news(self.id, self.id);
    }

    /// Copies this node's incarnation and metadata into its own member entry.
    pub(crate) fn sync_self_member(&mut self) {
        if let Some(me) = self.members.get_mut(self.id) {
            me.incarnation = self.incarnation;
            me.meta = self.meta.clone();
        }
    }

    /// Sends `primary` messages to `to` in one datagram, filling the rest with queued
    /// updates.
    pub(crate) fn send_messages(&mut self, to: SocketAddr, primary: &[Message]) {
        let limit = self
            .config
            .max_packet_bytes
            .saturating_sub(self.codec.overhead());
        let mut body = Vec::with_capacity(256);
        for message in primary {
            let encoded = match codec::encode(message) {
                Ok(encoded) => encoded,
                Err(e) => {
                    tracing::error!(%e, "could not encode a membership message");
                    return;
                }
            };
            if !push_part(&mut body, &encoded, limit) {
                tracing::error!("membership message does not fit in a packet");
                return;
            }
        }
        let transmit_limit = self.transmit_limit();
        let members = &self.members;
        self.broadcasts
            .fill(&mut body, limit, transmit_limit, |id, from| {
                members.get(id).map(|m| member_news(m, from))
            });
        if body.is_empty() {
            return;
        }
        self.send_body(to, &body);
    }

    pub(crate) fn send_body(&mut self, to: SocketAddr, body: &[u8]) {
        let bytes = self.codec.seal(Kind::Datagram, body);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += bytes.len() as u64;
        self.outputs.push_back(Output::Datagram { to, bytes });
    }

    /// Adds a member never seen before.
    pub(crate) fn insert_member(&mut self, member: Member) {
        let id = member.id;
        if member.state.is_live() {
            self.live += 1;
        }
        self.members.insert(member);
        if id != self.id {
            // A random place in the rest of this probe round, found in O(1).
            self.probe_order.push(id);
            let remaining = self.probe_order.len() - self.probe_cursor.min(self.probe_order.len());
            if remaining > 1 {
                let j = self.probe_cursor + self.rng.below(remaining as u64) as usize;
                let last = self.probe_order.len() - 1;
                self.probe_order.swap(j, last);
            }
        }
    }

    /// Changes a known member's state, keeping the live count and timestamps right.
    pub(crate) fn set_state(&mut self, now: Instant, id: NodeId, state: MemberState) {
        let Some(member) = self.members.get_mut(id) else {
            return;
        };
        if member.state == state {
            return;
        }
        match (member.state.is_live(), state.is_live()) {
            (true, false) => self.live -= 1,
            (false, true) => self.live += 1,
            _ => {}
        }
        member.state = state;
        member.state_changed = now;
    }

    /// Forgets a member entirely (after its retention period).
    pub(crate) fn remove_member(&mut self, id: NodeId) {
        let Some(member) = self.members.remove(id) else {
            return;
        };
        if member.state.is_live() {
            self.live -= 1;
        }
        self.suspicions.remove(&id);
    }

    /// Up to `k` distinct random members satisfying `eligible`, excluding this node. Random
    /// probing first (O(k) when most members qualify), then a scan if that came up short.
    pub(crate) fn random_members(
        &mut self,
        k: usize,
        mut eligible: impl FnMut(&Member) -> bool,
    ) -> Vec<usize> {
        let n = self.members.len();
        let mut picked: Vec<usize> = Vec::with_capacity(k);
        if k == 0 || n <= 1 {
            return picked;
        }
        let ok =
            |i: usize, m: &Member, picked: &[usize], eligible: &mut dyn FnMut(&Member) -> bool| {
                m.id != self.id && !picked.contains(&i) && eligible(m)
            };
        for _ in 0..(3 * k + 8) {
            if picked.len() == k {
                return picked;
            }
            let i = self.rng.below(n as u64) as usize;
            if ok(i, self.members.at(i), &picked, &mut eligible) {
                picked.push(i);
            }
        }
        // Few eligible members: scan from a random start so the choice stays fair enough.
        let start = self.rng.below(n as u64) as usize;
        for offset in 0..n {
            if picked.len() == k {
                break;
            }
            let i = (start + offset) % n;
            if ok(i, self.members.at(i), &picked, &mut eligible) {
                picked.push(i);
            }
        }
        picked
    }

    fn reap_interval(&self) -> Duration {
        (self.config.left_retention.min(self.config.dead_retention) / 4).max(Duration::from_secs(1))
    }

    fn on_reap_timer(&mut self, now: Instant) {
        self.set_timer(self.reap_interval(), TimerKind::Reap);
        let (dead, left) = (self.config.dead_retention, self.config.left_retention);
        let expired: Vec<NodeId> = self
            .members
            .as_slice()
            .iter()
            .filter(|m| {
                let retention = match m.state {
                    MemberState::Alive | MemberState::Suspect => return false,
                    MemberState::Dead => dead,
                    MemberState::Left => left,
                };
                m.id != self.id && now.saturating_duration_since(m.state_changed) >= retention
            })
            .map(|m| m.id)
            .collect();
        for id in expired {
            self.remove_member(id);
        }
    }

    pub(crate) fn next_request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }
}

/// The gossip message for `member`'s current state; `from` is who suspected or declared it.
fn member_news(member: &Member, from: NodeId) -> Message {
    let (id, incarnation) = (member.id, member.incarnation);
    match member.state {
        MemberState::Alive => Message::Alive(Alive {
            id,
            addr: member.addr,
            incarnation,
            meta: member.meta.clone(),
        }),
        MemberState::Suspect => Message::Suspect(Suspect {
            id,
            incarnation,
            from,
        }),
        MemberState::Dead => Message::Dead(Dead {
            id,
            incarnation,
            from,
        }),
        MemberState::Left => Message::Dead(Dead {
            id,
            incarnation,
            from: id,
        }),
    }
}

pub(crate) fn check_meta(meta: &[u8], limit: usize) -> Result<(), SwimError> {
    if meta.len() > limit {
        return Err(SwimError::MetaTooLarge {
            size: meta.len(),
            limit,
        });
    }
    Ok(())
}

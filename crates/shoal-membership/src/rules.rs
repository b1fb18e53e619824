//! How alive, suspect and dead news changes a member: SWIM's incarnation rules, with
//! Lifeguard's dynamic suspicion, refutation and dead-node reclaim.
//!
//! For one member, news at a higher incarnation beats news at a lower one, and at the same
//! incarnation Left beats Dead beats Suspect beats Alive. Left beats Dead because it comes
//! from the member itself: a peer that concluded Dead from silence before the Left notice
//! reached it learns, later, through gossip or push-pull, that the departure was graceful. Only the member itself raises its
//! incarnation, which it does to refute. Every accepted change is re-gossiped; everything
//! else is ignored (and counted when it was stale).

use crate::event::MemberEventKind;
use crate::member::{Member, MemberState, MAX_INCARNATION};
use crate::message::{Alive, Dead, Suspect};
use crate::output::TimerKind;
use crate::suspicion::{min_suspicion_timeout, Suspicion};
use crate::swim::{check_meta, Swim};
use shoal_core::{Instant, NodeId};

impl Swim {
    /// News that a member is alive.
    pub(crate) fn on_alive(&mut self, now: Instant, alive: Alive) {
        if self.incarnation_refused(alive.id, alive.incarnation, false) {
            return;
        }
        if check_meta(&alive.meta, self.config.max_meta_bytes).is_err() {
            self.stats.meta_too_large += 1;
            tracing::debug!(id = %alive.id, len = alive.meta.len(), "alive with oversized metadata refused");
            return;
        }
        if alive.id == self.id {
            return self.on_alive_about_self(alive);
        }
        let Some(known) = self.members.get(alive.id) else {
            if self.address_held_by_another(&alive) {
                return;
            }
            if self.members.len() >= self.config.max_members {
                self.stats.members_refused += 1;
                tracing::warn!(id = %alive.id, max = self.config.max_members, "member table full; a new member refused");
                return;
            }
            let id = alive.id;
            self.insert_member(Member {
                id,
                addr: alive.addr,
                incarnation: alive.incarnation,
                state: MemberState::Alive,
                meta: alive.meta.clone(),
                state_changed: now,
            });
            self.queue_news(id, id);
            self.emit(now, MemberEventKind::Joined, id);
            return;
        };
        let moved = known.addr != alive.addr;
        let old_state = known.state;
        let meta_changed = known.meta != alive.meta;
        if moved {
            let reclaimable = match known.state {
                MemberState::Left => true,
                MemberState::Dead => {
                    let after = self.config.dead_node_reclaim_time;
                    !after.is_zero() && now.saturating_duration_since(known.state_changed) >= after
                }
                MemberState::Alive | MemberState::Suspect => false,
            };
            if !reclaimable {
                self.stats.address_conflicts += 1;
                tracing::debug!(id = %alive.id, old = %known.addr, new = %alive.addr, "member claims a new address while live");
                return;
            }
            if self.address_held_by_another(&alive) {
                return;
            }
        } else if alive.incarnation <= known.incarnation {
            if alive.incarnation < known.incarnation {
                self.stats.stale_updates += 1;
            }
            return;
        }
        let id = alive.id;
        if moved {
            self.members.set_addr(id, alive.addr);
        }
        if let Some(member) = self.members.get_mut(id) {
            member.incarnation = alive.incarnation;
            member.meta = alive.meta;
        }
        self.suspicions.remove(&id);
        self.set_state(now, id, MemberState::Alive);
        self.queue_news(id, id);
        let event = match old_state {
            _ if moved => Some(MemberEventKind::Reclaimed),
            MemberState::Dead | MemberState::Left => Some(MemberEventKind::Joined),
            MemberState::Suspect => Some(MemberEventKind::AliveAgain),
            MemberState::Alive if meta_changed => Some(MemberEventKind::Updated),
            MemberState::Alive => None,
        };
        if let Some(kind) = event {
            self.emit(now, kind, id);
        }
    }

    /// Whether another live member holds the address `alive` claims (an impostor, refused
    /// and counted). Only asked when the address is new for the member, so the common case,
    /// news about a known member at its known address, costs one lookup.
    fn address_held_by_another(&mut self, alive: &Alive) -> bool {
        let Some(holder) = self.members.holder(&alive.addr) else {
            return false;
        };
        if holder.id == alive.id || !holder.state.is_live() {
            return false;
        }
        self.stats.address_conflicts += 1;
        tracing::debug!(id = %alive.id, addr = %alive.addr, holder = %holder.id, "address held by another live member");
        true
    }

    /// Alive news about this node: our own gossip coming back is ignored; anything claiming
    /// a newer or different us is refuted by raising our incarnation above it.
    fn on_alive_about_self(&mut self, alive: Alive) {
        if self.left || alive.incarnation < self.incarnation {
            return;
        }
        if alive.incarnation == self.incarnation
            && alive.addr == self.addr
            && alive.meta == self.meta
        {
            return;
        }
        tracing::warn!(addr = %alive.addr, incarnation = alive.incarnation, "another node claims this node's id; refuting");
        self.stats.address_conflicts += 1;
        self.refute(alive.incarnation);
    }

    /// News that a member is suspected.
    pub(crate) fn on_suspect(&mut self, now: Instant, suspect: Suspect) {
        if self.incarnation_refused(suspect.id, suspect.incarnation, true) {
            return;
        }
        let Some(known) = self.member(suspect.id) else {
            return;
        };
        if suspect.incarnation < known.incarnation {
            self.stats.stale_updates += 1;
            return;
        }
        let state = known.state;
        // A suspicion of a newer incarnation than the one we suspect starts afresh.
        let renewed = state == MemberState::Suspect && suspect.incarnation > known.incarnation;
        if state != MemberState::Alive && !renewed {
            // Already suspect: an independent suspecter is a Lifeguard confirmation, which
            // shortens the timeout and is worth gossiping on. Dead or left: nothing to do.
            if state == MemberState::Suspect {
                self.confirm_suspicion(now, suspect);
            }
            return;
        }
        if suspect.id == self.id {
            if !self.left {
                self.refute(suspect.incarnation);
            }
            return;
        }
        let min = min_suspicion_timeout(
            self.config.suspicion_mult,
            self.live,
            self.config.probe_interval,
        );
        let max = min.saturating_mul(self.config.suspicion_max_timeout_mult);
        // Confirmations that bring the timeout to the minimum: memberlist's k, zero in
        // clusters too small to produce them.
        let k = self.config.suspicion_mult.saturating_sub(2);
        let k = if (self.live as u64) < u64::from(k) + 2 {
            0
        } else {
            k
        };
        let suspicion = Suspicion::new(suspect.from, suspect.incarnation, now, k, min, max);
        let deadline = suspicion.deadline();
        self.suspicions.insert(suspect.id, suspicion);
        if let Some(member) = self.members.get_mut(suspect.id) {
            member.incarnation = suspect.incarnation;
        }
        self.set_state(now, suspect.id, MemberState::Suspect);
        self.set_timer(
            deadline.saturating_duration_since(now),
            TimerKind::Suspicion(suspect.id),
        );
        self.queue_news(suspect.id, suspect.from);
        self.emit(now, MemberEventKind::Suspect, suspect.id);
    }

    fn confirm_suspicion(&mut self, now: Instant, suspect: Suspect) {
        let Some(suspicion) = self.suspicions.get_mut(&suspect.id) else {
            return;
        };
        if suspicion.incarnation != suspect.incarnation || !suspicion.confirm(suspect.from) {
            return;
        }
        let deadline = suspicion.deadline();
        self.set_timer(
            deadline.saturating_duration_since(now),
            TimerKind::Suspicion(suspect.id),
        );
        self.queue_news(suspect.id, suspect.from);
    }

    /// A suspicion timer fired: declare the member dead if it is still suspected and the
    /// (possibly shortened) deadline has passed.
    pub(crate) fn on_suspicion_timer(&mut self, now: Instant, id: NodeId) {
        let Some(suspicion) = self.suspicions.get(&id) else {
            return;
        };
        if now < suspicion.deadline() {
            return;
        }
        let incarnation = suspicion.incarnation;
        if self.member(id).map(|m| (m.state, m.incarnation))
            != Some((MemberState::Suspect, incarnation))
        {
            return;
        }
        // Lifeguard's buddy system, extended: a suspicion that expires without its full
        // independent confirmations is weak evidence (one lossy path, or a refutation this
        // node missed). Probe the member once more, carrying the suspicion, and give it one
        // probe interval to refute before declaring it dead.
        if self.config.buddy_system
            && !suspicion.fully_confirmed()
            && suspicion.last_chance_until.is_none()
        {
            let grace = self.config.probe_interval;
            if let Some(s) = self.suspicions.get_mut(&id) {
                s.last_chance_until = Some(now.checked_add(grace).unwrap_or(now));
            }
            self.last_chance_probe(id);
            self.set_timer(grace, TimerKind::Suspicion(id));
            return;
        }
        let dead = Dead {
            id,
            incarnation,
            from: self.id,
        };
        self.on_dead(now, dead);
    }

    /// News that a member is dead, or left.
    pub(crate) fn on_dead(&mut self, now: Instant, dead: Dead) {
        if self.incarnation_refused(dead.id, dead.incarnation, !dead.is_leave()) {
            return;
        }
        let Some(known) = self.member(dead.id) else {
            return;
        };
        if dead.incarnation < known.incarnation {
            self.stats.stale_updates += 1;
            return;
        }
        let left_after_dead = known.state == MemberState::Dead
            && dead.is_leave()
            && dead.incarnation == known.incarnation;
        if !known.state.is_live() && !left_after_dead {
            return;
        }
        if dead.id == self.id {
            if !self.left {
                self.refute(dead.incarnation);
            }
            return;
        }
        let state = if dead.is_leave() {
            MemberState::Left
        } else {
            MemberState::Dead
        };
        if let Some(member) = self.members.get_mut(dead.id) {
            member.incarnation = dead.incarnation;
        }
        self.suspicions.remove(&dead.id);
        self.set_state(now, dead.id, state);
        let id = dead.id;
        self.queue_news(id, dead.from);
        let kind = if state == MemberState::Left {
            MemberEventKind::Left
        } else {
            MemberEventKind::Dead
        };
        self.emit(now, kind, id);
    }

    /// Whether news at `incarnation` is refused (and counted): alive news above
    /// [`MAX_INCARNATION`], or an accusation (suspect or dead) at or above it. Every alive,
    /// suspect and dead path, datagram or push-pull, passes here first. An accusation is at
    /// most `MAX_INCARNATION - 1`, so the accused can always refute it at an incarnation its
    /// peers accept, and refuting can never be pushed to `u64::MAX` and wrap.
    fn incarnation_refused(&mut self, id: NodeId, incarnation: u64, accusation: bool) -> bool {
        let highest = if accusation {
            MAX_INCARNATION - 1
        } else {
            MAX_INCARNATION
        };
        if incarnation <= highest {
            return false;
        }
        self.stats.incarnations_refused += 1;
        tracing::debug!(%id, incarnation, "news at an impossible incarnation refused");
        true
    }

    /// Raises this node's incarnation above `accused` and gossips that it is alive. A node
    /// that has to refute is likely slow itself, so Lifeguard raises its health score too.
    /// An accusation is below [`MAX_INCARNATION`] (checked on the way in), so the new
    /// incarnation is at most the bound, which peers accept; the clamp keeps even a local
    /// slip within it.
    pub(crate) fn refute(&mut self, accused: u64) {
        self.incarnation = self
            .incarnation
            .max(accused)
            .saturating_add(1)
            .min(MAX_INCARNATION);
        self.sync_self_member();
        self.queue_alive_of_self();
        self.awareness.apply(1);
        self.stats.refutations += 1;
    }
}

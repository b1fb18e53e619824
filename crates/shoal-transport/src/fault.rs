//! Fault injection for real sockets: drop or delay traffic to or from chosen peers.
//!
//! The filter is compiled in but costs one relaxed atomic load per message while disabled,
//! which is the default. Multi-process tests enable it to partition real nodes without root
//! or iptables. Peers are named by their advertised address (the address they listen on),
//! which is what both directions of traffic can identify.

use crate::lock::{read, write};
use crate::stats::{bump, TransportStats};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Which traffic a rule applies to, seen from this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Traffic arriving from the peer.
    Inbound,
    /// Traffic sent to the peer.
    Outbound,
    /// Both.
    Both,
}

/// What a rule does to matching traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Discard it silently, as a partition would.
    Drop,
    /// Hold it back this long first.
    Delay(Duration),
}

/// The decision for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through now.
    Pass,
    /// Discard it.
    Drop,
    /// Let it through after the delay.
    Delay(Duration),
}

#[derive(Debug, Default)]
struct Rules {
    inbound: HashMap<SocketAddr, FaultAction>,
    outbound: HashMap<SocketAddr, FaultAction>,
}

/// A shared, switchable set of drop and delay rules keyed by peer address. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct FaultFilter {
    inner: Arc<FilterInner>,
}

#[derive(Debug, Default)]
struct FilterInner {
    enabled: AtomicBool,
    rules: RwLock<Rules>,
    stats: Arc<TransportStats>,
}

impl FaultFilter {
    /// A disabled filter with no rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// A disabled filter that counts its drops and delays in `stats` (share them with the
    /// transports the filter is given to).
    pub fn with_stats(stats: Arc<TransportStats>) -> Self {
        Self {
            inner: Arc::new(FilterInner {
                stats,
                ..FilterInner::default()
            }),
        }
    }

    /// Whether rules are being applied.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Relaxed)
    }

    /// Starts (or stops) applying the rules.
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Applies `action` to traffic with `peer` in `direction` (replacing earlier rules for that
    /// peer and direction), and enables the filter.
    pub fn add_rule(&self, peer: SocketAddr, direction: Direction, action: FaultAction) {
        let mut rules = self.write_rules();
        if matches!(direction, Direction::Inbound | Direction::Both) {
            rules.inbound.insert(peer, action);
        }
        if matches!(direction, Direction::Outbound | Direction::Both) {
            rules.outbound.insert(peer, action);
        }
        drop(rules);
        self.set_enabled(true);
    }

    /// Replaces every rule with `rules` at once (no message sees a mix of old and new), and
    /// enables the filter.
    pub fn replace(&self, rules: &[(SocketAddr, Direction, FaultAction)]) {
        let mut fresh = Rules::default();
        for &(peer, direction, action) in rules {
            if matches!(direction, Direction::Inbound | Direction::Both) {
                fresh.inbound.insert(peer, action);
            }
            if matches!(direction, Direction::Outbound | Direction::Both) {
                fresh.outbound.insert(peer, action);
            }
        }
        *self.write_rules() = fresh;
        self.set_enabled(true);
    }

    /// Removes the rules for `peer` in `direction`.
    pub fn remove_rule(&self, peer: SocketAddr, direction: Direction) {
        let mut rules = self.write_rules();
        if matches!(direction, Direction::Inbound | Direction::Both) {
            rules.inbound.remove(&peer);
        }
        if matches!(direction, Direction::Outbound | Direction::Both) {
            rules.outbound.remove(&peer);
        }
    }

    /// Every rule: peer, direction (`Inbound` or `Outbound`, never `Both`) and action, in
    /// address order, inbound first.
    pub fn rules(&self) -> Vec<(SocketAddr, Direction, FaultAction)> {
        let rules = read(&self.inner.rules);
        let mut listed: Vec<_> = rules
            .inbound
            .iter()
            .map(|(&peer, &action)| (peer, Direction::Inbound, action))
            .chain(
                rules
                    .outbound
                    .iter()
                    .map(|(&peer, &action)| (peer, Direction::Outbound, action)),
            )
            .collect();
        listed.sort_by_key(|&(peer, direction, _)| (direction == Direction::Outbound, peer));
        listed
    }

    /// Removes every rule (the filter stays enabled, passing everything).
    pub fn clear(&self) {
        let mut rules = self.write_rules();
        rules.inbound.clear();
        rules.outbound.clear();
    }

    /// Decides the fate of one message exchanged with `peer` in `direction` (`Inbound` or
    /// `Outbound`; `Both` checks outbound rules first) and counts drops and delays.
    pub fn check(&self, peer: SocketAddr, direction: Direction) -> Verdict {
        if !self.is_enabled() {
            return Verdict::Pass;
        }
        let rules = read(&self.inner.rules);
        let action = match direction {
            Direction::Inbound => rules.inbound.get(&peer),
            Direction::Outbound => rules.outbound.get(&peer),
            Direction::Both => rules.outbound.get(&peer).or(rules.inbound.get(&peer)),
        };
        match action {
            None => Verdict::Pass,
            Some(FaultAction::Drop) => {
                bump(&self.inner.stats.fault_dropped);
                Verdict::Drop
            }
            Some(FaultAction::Delay(d)) => {
                bump(&self.inner.stats.fault_delayed);
                Verdict::Delay(*d)
            }
        }
    }

    fn write_rules(&self) -> std::sync::RwLockWriteGuard<'_, Rules> {
        write(&self.inner.rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_disabled_filter_passes_everything() {
        let filter = FaultFilter::new();
        assert_eq!(filter.check(addr(1), Direction::Inbound), Verdict::Pass);
    }

    #[test]
    fn rules_apply_per_direction() {
        let filter = FaultFilter::new();
        filter.add_rule(addr(1), Direction::Outbound, FaultAction::Drop);
        filter.add_rule(
            addr(2),
            Direction::Both,
            FaultAction::Delay(Duration::from_millis(5)),
        );
        assert_eq!(filter.check(addr(1), Direction::Outbound), Verdict::Drop);
        assert_eq!(filter.check(addr(1), Direction::Inbound), Verdict::Pass);
        assert_eq!(
            filter.check(addr(2), Direction::Inbound),
            Verdict::Delay(Duration::from_millis(5))
        );
        assert_eq!(
            filter.rules(),
            vec![
                (
                    addr(2),
                    Direction::Inbound,
                    FaultAction::Delay(Duration::from_millis(5))
                ),
                (addr(1), Direction::Outbound, FaultAction::Drop),
                (
                    addr(2),
                    Direction::Outbound,
                    FaultAction::Delay(Duration::from_millis(5))
                ),
            ]
        );
        filter.replace(&[(addr(3), Direction::Inbound, FaultAction::Drop)]);
        assert_eq!(
            filter.rules(),
            vec![(addr(3), Direction::Inbound, FaultAction::Drop)]
        );
        filter.replace(&[
            (addr(1), Direction::Outbound, FaultAction::Drop),
            (
                addr(2),
                Direction::Both,
                FaultAction::Delay(Duration::from_millis(5)),
            ),
        ]);
        filter.remove_rule(addr(1), Direction::Both);
        assert_eq!(filter.check(addr(1), Direction::Outbound), Verdict::Pass);
        filter.clear();
        assert_eq!(filter.check(addr(2), Direction::Outbound), Verdict::Pass);
    }
}

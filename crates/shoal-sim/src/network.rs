//! The simulated network: per-link latency, loss, duplication, reordering, and partitions.
//!
//! [`NetworkModel`] is pure: given a sender, a receiver and a random source it decides a
//! message's [`Fate`]. The simulator uses it for its event queue; shoal-transport's in-memory
//! network uses the same model with real tokio timers. It is generic over the address type so
//! both node ids and socket addresses work.

use crate::latency::Latency;
use shoal_core::{NodeId, Rng};
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

/// The behaviour of one direction of a link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way latency.
    pub latency: Latency,
    /// Probability that a message is lost, in `[0, 1]`.
    pub loss: f64,
    /// Probability that a message is delivered twice, in `[0, 1]`.
    pub duplicate: f64,
    /// Probability that a message is held back by up to `reorder_window` extra, so that later
    /// messages overtake it.
    pub reorder: f64,
    /// The largest extra delay a reordered message suffers.
    pub reorder_window: Duration,
}

impl LinkConfig {
    /// A perfect link with the given latency: no loss, no duplicates, no reordering beyond what
    /// the latency distribution causes.
    pub fn reliable(latency: Latency) -> Self {
        Self {
            latency,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_window: Duration::ZERO,
        }
    }
}

impl Default for LinkConfig {
    /// A reliable LAN link (see [`Latency::default`]).
    fn default() -> Self {
        Self::reliable(Latency::default())
    }
}

/// Why a message was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A partition blocks this direction.
    Partitioned,
    /// Random loss on the link.
    Lost,
}

/// What happens to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It never arrives.
    Dropped(DropReason),
    /// It arrives once, after the delay.
    Delivered(Duration),
    /// It arrives twice, after each delay.
    Duplicated(Duration, Duration),
}

/// Links, their faults and the partitions between addresses.
#[derive(Clone, Debug)]
pub struct NetworkModel<A = NodeId> {
    default_link: LinkConfig,
    links: HashMap<(A, A), LinkConfig>,
    blocked: HashSet<(A, A)>,
}

impl<A: Copy + Eq + Hash> Default for NetworkModel<A> {
    fn default() -> Self {
        Self::new(LinkConfig::default())
    }
}

impl<A: Copy + Eq + Hash> NetworkModel<A> {
    /// A network where every link behaves like `default_link` and nothing is partitioned.
    pub fn new(default_link: LinkConfig) -> Self {
        Self {
            default_link,
            links: HashMap::new(),
            blocked: HashSet::new(),
        }
    }

    /// Changes the behaviour of every link without an override.
    pub fn set_default_link(&mut self, link: LinkConfig) {
        self.default_link = link;
    }

    /// Overrides the link from `from` to `to` (one direction).
    pub fn set_link(&mut self, from: A, to: A, link: LinkConfig) {
        self.links.insert((from, to), link);
    }

    /// The behaviour of the link from `from` to `to`.
    pub fn link(&self, from: A, to: A) -> &LinkConfig {
        self.links.get(&(from, to)).unwrap_or(&self.default_link)
    }

    /// Blocks traffic from `from` to `to` only (a one-way partition).
    pub fn block_one_way(&mut self, from: A, to: A) {
        self.blocked.insert((from, to));
    }

    /// Blocks traffic in both directions between every member of `side_a` and every member of
    /// `side_b`.
    pub fn partition(&mut self, side_a: &[A], side_b: &[A]) {
        for &a in side_a {
            for &b in side_b {
                self.blocked.insert((a, b));
                self.blocked.insert((b, a));
            }
        }
    }

    /// Cuts `node` off from every address in `others`, both ways.
    pub fn isolate(&mut self, node: A, others: impl IntoIterator<Item = A>) {
        for other in others {
            if other != node {
                self.blocked.insert((node, other));
                self.blocked.insert((other, node));
            }
        }
    }

    /// Removes every partition (link behaviours stay).
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Whether traffic from `from` to `to` is blocked.
    pub fn is_blocked(&self, from: A, to: A) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Decides what happens to one message from `from` to `to`.
    pub fn fate(&self, from: A, to: A, rng: &mut impl Rng) -> Fate {
        if self.is_blocked(from, to) {
            return Fate::Dropped(DropReason::Partitioned);
        }
        let link = self.link(from, to);
        if rng.chance(link.loss) {
            return Fate::Dropped(DropReason::Lost);
        }
        let first = Self::delay(link, rng);
        if rng.chance(link.duplicate) {
            Fate::Duplicated(first, Self::delay(link, rng))
        } else {
            Fate::Delivered(first)
        }
    }

    fn delay(link: &LinkConfig, rng: &mut impl Rng) -> Duration {
        let base = link.latency.sample(rng);
        if rng.chance(link.reorder) {
            base + rng.duration_between(Duration::ZERO, link.reorder_window)
        } else {
            base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::DetRng;

    fn n(i: u64) -> NodeId {
        NodeId::new(i)
    }

    #[test]
    fn partitions_block_both_ways_and_one_way_blocks_one() {
        let mut net: NetworkModel = NetworkModel::default();
        let mut rng = DetRng::from_seed(1);
        net.partition(&[n(1)], &[n(2), n(3)]);
        assert_eq!(
            net.fate(n(1), n(2), &mut rng),
            Fate::Dropped(DropReason::Partitioned)
        );
        assert_eq!(
            net.fate(n(3), n(1), &mut rng),
            Fate::Dropped(DropReason::Partitioned)
        );
        assert!(matches!(net.fate(n(2), n(3), &mut rng), Fate::Delivered(_)));
        net.heal();
        net.block_one_way(n(1), n(2));
        assert!(net.is_blocked(n(1), n(2)));
        assert!(!net.is_blocked(n(2), n(1)));
    }

    #[test]
    fn loss_and_duplication_happen_at_their_rates() {
        let mut net: NetworkModel = NetworkModel::default();
        net.set_default_link(LinkConfig {
            loss: 0.2,
            duplicate: 0.1,
            ..LinkConfig::default()
        });
        let mut rng = DetRng::from_seed(2);
        let (mut lost, mut dup) = (0, 0);
        for _ in 0..10_000 {
            match net.fate(n(1), n(2), &mut rng) {
                Fate::Dropped(DropReason::Lost) => lost += 1,
                Fate::Duplicated(..) => dup += 1,
                _ => {}
            }
        }
        assert!((1_700..2_300).contains(&lost), "lost {lost}");
        assert!((550..1_050).contains(&dup), "dup {dup}");
    }

    #[test]
    fn per_link_overrides_apply_to_one_direction() {
        let mut net: NetworkModel = NetworkModel::default();
        let slow = LinkConfig::reliable(Latency::Fixed(Duration::from_secs(1)));
        net.set_link(n(1), n(2), slow);
        let mut rng = DetRng::from_seed(3);
        assert_eq!(
            net.fate(n(1), n(2), &mut rng),
            Fate::Delivered(Duration::from_secs(1))
        );
        assert_ne!(
            net.fate(n(2), n(1), &mut rng),
            Fate::Delivered(Duration::from_secs(1))
        );
    }
}

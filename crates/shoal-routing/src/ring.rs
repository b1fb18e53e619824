//! A consistent-hash ring with virtual nodes (Karger et al., 1997): the classic baseline
//! that [`crate::rendezvous`] and [`crate::jump`] are measured against.
//!
//! Each node is hashed onto a 64-bit circle at `vnodes` points; a key belongs to the first
//! point at or after its hash, and its replicas to the next distinct nodes clockwise.
//! Lookups are a binary search over all points, O(log(nodes × vnodes)).

use crate::key_hash::{mix, node_hash};
use shoal_core::NodeId;

/// A consistent-hash ring.
///
/// ```
/// use shoal_core::NodeId;
/// use shoal_routing::{key_hash, HashRing};
///
/// let ring = HashRing::new((1..=10).map(NodeId::new), 160);
/// let owner = ring.owner(key_hash(b"user/42")).unwrap();
/// let replicas = ring.replicas(key_hash(b"user/42"), 3);
/// assert_eq!(replicas[0], owner);
/// assert_eq!(replicas.len(), 3);
/// ```
#[derive(Clone, Debug, Default)]
pub struct HashRing {
    /// (point, node), sorted by point.
    points: Vec<(u64, NodeId)>,
    nodes: usize,
}

impl HashRing {
    /// A ring of `nodes`, each at `vnodes` points (at least one).
    pub fn new(nodes: impl IntoIterator<Item = NodeId>, vnodes: u32) -> Self {
        let mut ids: Vec<NodeId> = nodes.into_iter().collect();
        ids.sort();
        ids.dedup();
        let vnodes = vnodes.max(1);
        let mut points = Vec::with_capacity(ids.len() * vnodes as usize);
        for &node in &ids {
            let h = node_hash(node);
            for v in 0..vnodes {
                points.push((mix(h, u64::from(v)), node));
            }
        }
        points.sort_unstable();
        Self {
            points,
            nodes: ids.len(),
        }
    }

    /// How many distinct nodes.
    pub fn len(&self) -> usize {
        self.nodes
    }

    /// Whether the ring has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }

    fn start(&self, key_hash: u64) -> usize {
        let i = self.points.partition_point(|&(p, _)| p < key_hash);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    /// The node owning a key hash.
    #[inline]
    pub fn owner(&self, key_hash: u64) -> Option<NodeId> {
        if self.points.is_empty() {
            return None;
        }
        Some(self.points[self.start(key_hash)].1)
    }

    /// Up to `r` distinct nodes clockwise from a key hash.
    pub fn replicas(&self, key_hash: u64, r: usize) -> Vec<NodeId> {
        let r = r.min(self.nodes);
        let mut out: Vec<NodeId> = Vec::with_capacity(r);
        if r == 0 {
            return out;
        }
        let start = self.start(key_hash);
        for i in 0..self.points.len() {
            let node = self.points[(start + i) % self.points.len()].1;
            if !out.contains(&node) {
                out.push(node);
                if out.len() == r {
                    break;
                }
            }
        }
        out
    }
}

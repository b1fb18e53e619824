//! Weighted rendezvous (highest-random-weight) hashing, zone-aware.
//!
//! Every candidate node gets a score for a key, and the key's replicas are the best-scoring
//! nodes. A node's score for a key does not depend on the other nodes, so when a node joins
//! it takes over only the keys it now wins, and when one leaves only its keys move, each to
//! its next-best node: minimal movement without a ring or virtual nodes.
//!
//! Weights follow Schindelhauer and Schomaker's logarithmic method: with `u` the key-node
//! hash mapped into (0, 1), the score is `-weight / ln(u)`, which gives each node a share of
//! first places proportional to its weight.
//!
//! Zone awareness: [`Rendezvous::pick`] takes the best node of each zone first (zones in the
//! order of their best node's score), so replicas spread over as many zones as there are,
//! and only then fills the rest by score. A zone failing moves only the replicas it held.

use crate::key_hash::{mix, node_hash};
use shoal_core::NodeId;

/// One node a key may be placed on. Fields are read-only: the node's hash is computed once,
/// when the candidate is made.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    node: NodeId,
    zone: u32,
    weight: f64,
    hash: u64,
}

impl Candidate {
    /// The node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Its failure domain (zone, rack, region), as a small integer the caller assigns.
    pub fn zone(&self) -> u32 {
        self.zone
    }

    /// Its relative capacity; only positive, finite weights are ever picked.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// A candidate with weight 1.
    pub fn new(node: NodeId, zone: u32) -> Self {
        Self::weighted(node, zone, 1.0)
    }

    /// A candidate with `weight`.
    pub fn weighted(node: NodeId, zone: u32, weight: f64) -> Self {
        Self {
            node,
            zone,
            weight,
            hash: node_hash(node),
        }
    }

    /// This candidate's score for a key hash; higher wins. Never NaN: an unusable weight
    /// scores negative infinity.
    #[inline]
    pub fn score(&self, key_hash: u64) -> f64 {
        if !(self.weight > 0.0 && self.weight.is_finite()) {
            return f64::NEG_INFINITY;
        }
        // 53 random bits into (0, 1): never 0 (ln 0) and never 1 (ln 1 = 0).
        let bits = mix(key_hash, self.hash) >> 11;
        let u = (bits as f64 + 0.5) / (1u64 << 53) as f64;
        -self.weight / u.ln()
    }
}

/// Rendezvous placement over a set of candidates.
///
/// ```
/// use shoal_core::NodeId;
/// use shoal_routing::{key_hash, Candidate, Rendezvous};
///
/// let nodes = (1..=6).map(|i| Candidate::new(NodeId::new(i), (i % 3) as u32)).collect();
/// let hrw = Rendezvous::new(nodes);
/// let replicas = hrw.pick(key_hash(b"user/42"), 3);
/// assert_eq!(replicas.len(), 3);
/// // One replica per zone.
/// let mut zones: Vec<u64> = replicas.iter().map(|n| n.get() % 3).collect();
/// zones.sort();
/// assert_eq!(zones, vec![0, 1, 2]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Rendezvous {
    /// Ordered by (zone, node), so each zone is one run.
    candidates: Vec<Candidate>,
    /// Every weight is the same usable value: ranking by the raw hash is then the same as
    /// ranking by score, and skips a logarithm per node.
    uniform: bool,
}

/// A scored candidate: (score, node). Higher score wins; ties go to the lower node id.
type Scored = (f64, NodeId);

fn beats(a: Scored, b: Scored) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

impl Rendezvous {
    /// Placement over `candidates` (a node listed twice counts once, the last listing wins).
    pub fn new(mut candidates: Vec<Candidate>) -> Self {
        // Stable sort by node keeps listing order among duplicates; keep the last of each.
        candidates.sort_by_key(|c| c.node);
        let mut unique: Vec<Candidate> = Vec::with_capacity(candidates.len());
        for c in candidates {
            match unique.last_mut() {
                Some(last) if last.node == c.node => *last = c,
                _ => unique.push(c),
            }
        }
        unique.sort_by_key(|c| (c.zone, c.node));
        let mut hrw = Self {
            candidates: unique,
            uniform: false,
        };
        hrw.refresh();
        hrw
    }

    /// The candidates, ordered by zone, then node id.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Adds or replaces a candidate.
    pub fn insert(&mut self, candidate: Candidate) {
        self.candidates.retain(|c| c.node != candidate.node);
        let at = self
            .candidates
            .partition_point(|c| (c.zone, c.node) < (candidate.zone, candidate.node));
        self.candidates.insert(at, candidate);
        self.refresh();
    }

    /// Removes a node; returns whether it was a candidate.
    pub fn remove(&mut self, node: NodeId) -> bool {
        let before = self.candidates.len();
        self.candidates.retain(|c| c.node != node);
        self.refresh();
        self.candidates.len() != before
    }

    fn refresh(&mut self) {
        let usable = |w: f64| w > 0.0 && w.is_finite();
        self.uniform = self.candidates.first().is_some_and(|first| {
            usable(first.weight) && self.candidates.iter().all(|c| c.weight == first.weight)
        });
    }

    #[inline]
    fn score(&self, c: &Candidate, key_hash: u64) -> f64 {
        if self.uniform {
            (mix(key_hash, c.hash) >> 11) as f64
        } else {
            c.score(key_hash)
        }
    }

    /// The single best node for a key hash.
    pub fn first(&self, key_hash: u64) -> Option<NodeId> {
        let mut best: Option<Scored> = None;
        for c in &self.candidates {
            let s = (self.score(c, key_hash), c.node);
            if s.0 > f64::NEG_INFINITY && best.is_none_or(|b| beats(s, b)) {
                best = Some(s);
            }
        }
        best.map(|b| b.1)
    }

    /// Up to `r` distinct nodes for a key hash, best first, spread over zones: the best node
    /// of each zone (zones in the order of those nodes' scores) before any second node of a
    /// zone, then the rest by score. One pass over the candidates, no sort.
    pub fn pick(&self, key_hash: u64, r: usize) -> Vec<NodeId> {
        let r = r.min(self.candidates.len());
        if r == 0 {
            return Vec::new();
        }
        // The best of each zone, and the best 2r overall (enough to fill up to r after
        // skipping the at most r zone leaders already picked), both best first.
        let mut leaders: Vec<Scored> = Vec::new();
        let mut top: Vec<Scored> = Vec::with_capacity(2 * r + 1);
        let mut zone: Option<(u32, Scored)> = None;
        for c in &self.candidates {
            let s = (self.score(c, key_hash), c.node);
            if s.0 == f64::NEG_INFINITY {
                continue;
            }
            zone = match zone {
                Some((z, best)) if z == c.zone => Some((z, if beats(s, best) { s } else { best })),
                Some((_, best)) => {
                    leaders.push(best);
                    Some((c.zone, s))
                }
                None => Some((c.zone, s)),
            };
            if top.len() < 2 * r || beats(s, top[top.len() - 1]) {
                let at = top.partition_point(|&t| beats(t, s));
                top.insert(at, s);
                top.truncate(2 * r);
            }
        }
        if let Some((_, best)) = zone {
            leaders.push(best);
        }
        leaders.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut picked: Vec<NodeId> = leaders.iter().take(r).map(|s| s.1).collect();
        for s in &top {
            if picked.len() >= r {
                break;
            }
            if !picked.contains(&s.1) {
                picked.push(s.1);
            }
        }
        picked
    }
}

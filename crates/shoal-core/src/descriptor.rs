//! Range descriptors: which key range a range covers, who replicates it, at what generation.

use crate::id::{Generation, NodeId, RangeId};
use crate::key_range::{KeyRange, KeyRangeError};
use serde::{Deserialize, Serialize};

/// What a replica does in its range's Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaRole {
    /// Votes in elections and counts toward the commit quorum.
    Voter,
    /// Receives the log but neither votes nor counts toward quorum.
    Learner,
}

/// One replica of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaDescriptor {
    /// The node hosting the replica.
    pub node: NodeId,
    /// Its role in the range's group.
    pub role: ReplicaRole,
}

impl ReplicaDescriptor {
    /// A voting replica on `node`.
    pub fn voter(node: NodeId) -> Self {
        Self {
            node,
            role: ReplicaRole::Voter,
        }
    }

    /// A learner on `node`.
    pub fn learner(node: NodeId) -> Self {
        Self {
            node,
            role: ReplicaRole::Learner,
        }
    }
}

/// Why a descriptor is invalid or an operation on it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// A node appears twice in the replica set.
    #[error("node {0} appears more than once in the replica set")]
    DuplicateReplica(NodeId),
    /// The leader hint names a node that is not a voter of the range.
    #[error("leader hint {0} is not a voter of the range")]
    LeaderNotVoter(NodeId),
    /// No replica is a voter: the range's Raft group could never elect a leader or commit.
    #[error("the range has no voter")]
    NoVoter,
    /// More replicas than [`RangeDescriptor::MAX_REPLICAS`].
    #[error("{0} replicas, more than the {max} a range may have", max = RangeDescriptor::MAX_REPLICAS)]
    TooManyReplicas(usize),
    /// The generation is above [`Generation::MAX`], which no honest counter reaches.
    #[error("generation {0} is above the highest valid generation")]
    GenerationTooHigh(Generation),
    /// A split or merge would take the generation past [`Generation::MAX`].
    #[error("generation {0} cannot be bumped: it is at the highest valid generation")]
    GenerationExhausted(Generation),
    /// The key-range operation underneath failed.
    #[error(transparent)]
    KeyRange(#[from] KeyRangeError),
    /// Merging ranges whose replicas differ would strand data on some nodes.
    #[error("ranges {left} and {right} cannot merge: their replica sets differ")]
    ReplicasDiffer {
        /// The left range.
        left: RangeId,
        /// The right range.
        right: RangeId,
    },
}

/// The authoritative description of one range: its keys, replicas and version.
///
/// Decoding validates it (see [`RangeDescriptor::validate`]), so a descriptor received from a
/// peer is as trustworthy as a local one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRangeDescriptor")]
pub struct RangeDescriptor {
    /// The range's id, stable across its lifetime (a split creates a new id for the right half).
    pub id: RangeId,
    /// The keys it holds.
    pub range: KeyRange,
    /// Bumped by every split, merge and replica change; higher wins when descriptors overlap.
    pub generation: Generation,
    /// Its replicas, voters and learners.
    pub replicas: Vec<ReplicaDescriptor>,
    /// The last known leader, if any: a hint, possibly stale.
    pub leader_hint: Option<NodeId>,
}

#[derive(Deserialize)]
struct RawRangeDescriptor {
    id: RangeId,
    range: KeyRange,
    generation: Generation,
    replicas: Vec<ReplicaDescriptor>,
    leader_hint: Option<NodeId>,
}

impl TryFrom<RawRangeDescriptor> for RangeDescriptor {
    type Error = DescriptorError;
    fn try_from(raw: RawRangeDescriptor) -> Result<Self, Self::Error> {
        let descriptor = RangeDescriptor {
            id: raw.id,
            range: raw.range,
            generation: raw.generation,
            replicas: raw.replicas,
            leader_hint: raw.leader_hint,
        };
        descriptor.validate()?;
        Ok(descriptor)
    }
}

impl RangeDescriptor {
    /// A descriptor at generation 1 with no leader hint, validated.
    pub fn new(
        id: RangeId,
        range: KeyRange,
        replicas: Vec<ReplicaDescriptor>,
    ) -> Result<Self, DescriptorError> {
        let descriptor = Self {
            id,
            range,
            generation: Generation::new(1),
            replicas,
            leader_hint: None,
        };
        descriptor.validate()?;
        Ok(descriptor)
    }

    /// The most replicas a range may have. Raft groups have 3 to 7 voters; the bound leaves
    /// room for learners during moves, and keeps a peer's descriptor small to check.
    pub const MAX_REPLICAS: usize = 64;

    /// Checks the invariants that decoding enforces: at most [`Self::MAX_REPLICAS`] replicas,
    /// none twice, at least one voter, the leader hint (if any) a voter, and a generation no
    /// higher than [`Generation::MAX`]. (The key range is checked when it is decoded or
    /// built.) Linear in the replica count after the bound.
    ///
    /// This is the one rule for a well-formed descriptor: the range table, the gossip merge
    /// and the routing cache all refuse what it refuses.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        if self.replicas.len() > Self::MAX_REPLICAS {
            return Err(DescriptorError::TooManyReplicas(self.replicas.len()));
        }
        if self.generation > Generation::MAX {
            return Err(DescriptorError::GenerationTooHigh(self.generation));
        }
        let mut nodes = [NodeId::new(0); Self::MAX_REPLICAS];
        let nodes = &mut nodes[..self.replicas.len()];
        for (slot, replica) in nodes.iter_mut().zip(&self.replicas) {
            *slot = replica.node;
        }
        nodes.sort_unstable();
        if let Some(pair) = nodes.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(DescriptorError::DuplicateReplica(pair[0]));
        }
        if self.voters().next().is_none() {
            return Err(DescriptorError::NoVoter);
        }
        if let Some(leader) = self.leader_hint {
            if self.role_of(leader) != Some(ReplicaRole::Voter) {
                return Err(DescriptorError::LeaderNotVoter(leader));
            }
        }
        Ok(())
    }

    /// Whether `key` belongs to this range.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.range.contains(key)
    }

    /// The role of `node` in this range, or `None` if it holds no replica.
    pub fn role_of(&self, node: NodeId) -> Option<ReplicaRole> {
        self.replicas
            .iter()
            .find(|r| r.node == node)
            .map(|r| r.role)
    }

    /// The nodes holding voting replicas.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes_with(ReplicaRole::Voter)
    }

    /// The nodes holding learners.
    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes_with(ReplicaRole::Learner)
    }

    fn nodes_with(&self, role: ReplicaRole) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas
            .iter()
            .filter(move |r| r.role == role)
            .map(|r| r.node)
    }

    /// Splits at `key`: this range keeps `[start, key)`, `right_id` gets `[key, end)`. Both
    /// halves keep the replicas and the leader hint and move to the next generation.
    pub fn split(
        &self,
        key: &[u8],
        right_id: RangeId,
    ) -> Result<(RangeDescriptor, RangeDescriptor), DescriptorError> {
        let (left_range, right_range) = self.range.split_at(key)?;
        let generation = next_generation(self.generation)?;
        let left = RangeDescriptor {
            range: left_range,
            generation,
            ..self.clone()
        };
        let right = RangeDescriptor {
            id: right_id,
            range: right_range,
            generation,
            ..self.clone()
        };
        Ok((left, right))
    }

    /// Whether `other` has the same replicas in the same roles, in any order.
    pub fn same_replicas(&self, other: &RangeDescriptor) -> bool {
        self.replicas.len() == other.replicas.len()
            && self
                .replicas
                .iter()
                .all(|r| other.role_of(r.node) == Some(r.role))
    }

    /// Merges `right` (which must start where this range ends and have the same replica set)
    /// into this range, at a generation above both.
    pub fn merge(&self, right: &RangeDescriptor) -> Result<RangeDescriptor, DescriptorError> {
        if !self.same_replicas(right) {
            return Err(DescriptorError::ReplicasDiffer {
                left: self.id,
                right: right.id,
            });
        }
        Ok(RangeDescriptor {
            range: self.range.merge(&right.range)?,
            generation: next_generation(self.generation.max(right.generation))?,
            ..self.clone()
        })
    }
}

/// The generation after `current`, or the error that says the counter is exhausted.
fn next_generation(current: Generation) -> Result<Generation, DescriptorError> {
    current
        .next()
        .ok_or(DescriptorError::GenerationExhausted(current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn n(i: u64) -> NodeId {
        NodeId::new(i)
    }

    fn three_voters() -> RangeDescriptor {
        RangeDescriptor::new(
            RangeId::new(1),
            KeyRange::full(),
            vec![
                ReplicaDescriptor::voter(n(1)),
                ReplicaDescriptor::voter(n(2)),
                ReplicaDescriptor::learner(n(3)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn voters_and_learners_are_told_apart() {
        let d = three_voters();
        assert_eq!(d.voters().collect::<Vec<_>>(), vec![n(1), n(2)]);
        assert_eq!(d.learners().collect::<Vec<_>>(), vec![n(3)]);
        assert_eq!(d.role_of(n(3)), Some(ReplicaRole::Learner));
        assert_eq!(d.role_of(n(4)), None);
    }

    #[test]
    fn duplicate_replicas_and_non_voter_leaders_are_refused() {
        let dup = RangeDescriptor::new(
            RangeId::new(1),
            KeyRange::full(),
            vec![
                ReplicaDescriptor::voter(n(1)),
                ReplicaDescriptor::learner(n(1)),
            ],
        );
        assert_eq!(dup.unwrap_err(), DescriptorError::DuplicateReplica(n(1)));
        let mut d = three_voters();
        d.leader_hint = Some(n(3));
        assert_eq!(
            d.validate().unwrap_err(),
            DescriptorError::LeaderNotVoter(n(3))
        );
    }

    #[test]
    fn split_bumps_generation_and_keeps_replicas() {
        let d = three_voters();
        let (left, right) = d.split(b"k", RangeId::new(2)).unwrap();
        assert_eq!(left.id, RangeId::new(1));
        assert_eq!(right.id, RangeId::new(2));
        assert_eq!(left.generation, Generation::new(2));
        assert_eq!(right.generation, Generation::new(2));
        assert_eq!(left.replicas, d.replicas);
        assert!(left.contains_key(b"a") && right.contains_key(b"k"));
        let merged = left.merge(&right).unwrap();
        assert_eq!(merged.range, KeyRange::full());
        assert_eq!(merged.generation, Generation::new(3));
    }

    #[test]
    fn merge_refuses_different_replica_sets() {
        let d = three_voters();
        let (left, mut right) = d.split(b"k", RangeId::new(2)).unwrap();
        right.replicas.pop();
        assert!(matches!(
            left.merge(&right),
            Err(DescriptorError::ReplicasDiffer { .. })
        ));
    }

    #[test]
    fn decoding_validates_descriptors_from_the_wire() {
        let mut d = three_voters();
        let ok = codec::encode(&d).unwrap();
        assert_eq!(codec::decode::<RangeDescriptor>(&ok, 4096).unwrap(), d);
        d.replicas.push(ReplicaDescriptor::voter(n(1)));
        let bad = codec::encode(&d).unwrap();
        assert!(codec::decode::<RangeDescriptor>(&bad, 4096).is_err());
    }

    #[test]
    fn a_descriptor_without_a_voter_is_refused() {
        let learners_only = RangeDescriptor::new(
            RangeId::new(1),
            KeyRange::full(),
            vec![ReplicaDescriptor::learner(n(1))],
        );
        assert_eq!(learners_only.unwrap_err(), DescriptorError::NoVoter);
        let none = RangeDescriptor::new(RangeId::new(1), KeyRange::full(), vec![]);
        assert_eq!(none.unwrap_err(), DescriptorError::NoVoter);
    }

    /// Regression: validation was quadratic in the replica count and ran on every decode, so
    /// one 1.3 MB descriptor of 240,000 replicas held a thread for 9.5 s. Now the count is
    /// bounded and checked first.
    #[test]
    fn a_huge_replica_set_from_a_peer_is_refused_at_once() {
        let mut d = three_voters();
        d.replicas = (1..=240_000)
            .map(|i| ReplicaDescriptor::voter(n(i)))
            .collect();
        let bytes = codec::encode(&d).unwrap();
        let started = std::time::Instant::now();
        let err = codec::decode::<RangeDescriptor>(&bytes, 16 << 20).unwrap_err();
        assert!(err.to_string().contains("replicas"), "{err}");
        // Generous: the bound makes this milliseconds; quadratic checking took seconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let mut at_bound = three_voters();
        at_bound.replicas = (1..=RangeDescriptor::MAX_REPLICAS as u64)
            .map(|i| ReplicaDescriptor::voter(n(i)))
            .collect();
        assert_eq!(at_bound.validate(), Ok(()));
        at_bound.replicas.push(ReplicaDescriptor::learner(n(1000)));
        assert_eq!(
            at_bound.validate(),
            Err(DescriptorError::TooManyReplicas(
                RangeDescriptor::MAX_REPLICAS + 1
            ))
        );
    }

    /// Regression: a peer's descriptor at generation `u64::MAX` won every gossip merge and
    /// made the next split, merge or replica change panic. It is refused at decode, and a
    /// bump at the bound is an error, not a panic.
    #[test]
    fn generations_past_the_bound_are_refused_and_never_bumped_past_it() {
        let mut d = three_voters();
        d.generation = Generation::new(u64::MAX);
        let bytes = codec::encode(&d).unwrap();
        assert!(codec::decode::<RangeDescriptor>(&bytes, 4096).is_err());
        assert_eq!(
            d.validate(),
            Err(DescriptorError::GenerationTooHigh(Generation::new(
                u64::MAX
            )))
        );
        d.generation = Generation::MAX;
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(
            d.split(b"k", RangeId::new(2)).unwrap_err(),
            DescriptorError::GenerationExhausted(Generation::MAX)
        );
        let (left, right) = three_voters().split(b"k", RangeId::new(2)).unwrap();
        let right = RangeDescriptor {
            generation: Generation::MAX,
            ..right
        };
        assert_eq!(
            left.merge(&right).unwrap_err(),
            DescriptorError::GenerationExhausted(Generation::MAX)
        );
    }
}

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
/// Decoding validates it (no duplicate replicas, the leader hint is a voter, the key range is
/// non-empty), so a descriptor received from a peer is as trustworthy as a local one.
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

    /// Checks the invariants that decoding enforces.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        for (i, replica) in self.replicas.iter().enumerate() {
            if self.replicas[..i].iter().any(|r| r.node == replica.node) {
                return Err(DescriptorError::DuplicateReplica(replica.node));
            }
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
        let generation = self.generation.next();
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
            generation: self.generation.max(right.generation).next(),
            ..self.clone()
        })
    }
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
}

//! The range table: descriptors that cover the whole key space, with no gap and no overlap.
//!
//! Every change (split, merge, replica change) goes through a method that validates its
//! input, applies it, bumps the generations it must, and then checks the table's invariant
//! over the whole table before returning; a change that would break it is refused and the
//! table is left as it was.

use shoal_core::{
    DescriptorError, EscapedKey, KeyRange, NodeId, RangeDescriptor, RangeEnd, RangeId,
    ReplicaDescriptor, ReplicaRole,
};
use std::collections::{BTreeMap, HashMap};

/// Why a table could not be built or a change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeTableError {
    /// No descriptors at all.
    #[error("a range table needs at least one descriptor")]
    Empty,
    /// The first range does not start at the empty key.
    #[error("the first range starts at {0}, not at the empty key")]
    StartsLate(String),
    /// Keys between two ranges belong to neither.
    #[error("gap between {left} and {right}")]
    Gap {
        /// The range before the gap.
        left: RangeId,
        /// The range after it.
        right: RangeId,
    },
    /// Two ranges share keys.
    #[error("ranges {left} and {right} overlap")]
    Overlap {
        /// The first of the two.
        left: RangeId,
        /// The second.
        right: RangeId,
    },
    /// The last range ends at a key instead of covering everything above it.
    #[error("the last range ends at {0} instead of being unbounded")]
    EndsEarly(String),
    /// Two descriptors have the same id.
    #[error("range id {0} appears twice")]
    DuplicateId(RangeId),
    /// The table holds no range with this id.
    #[error("no range {0}")]
    UnknownRange(RangeId),
    /// A new range id is already in use.
    #[error("range id {0} is already in use")]
    IdInUse(RangeId),
    /// A key or bound is longer than the table's limit.
    #[error("key of {len} bytes is over the {max}-byte limit")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The two ranges of a merge are not neighbours, left then right.
    #[error("ranges {left} and {right} are not adjacent")]
    NotAdjacent {
        /// The range meant to be on the left.
        left: RangeId,
        /// The range meant to be on the right.
        right: RangeId,
    },
    /// A descriptor or descriptor operation was invalid.
    #[error(transparent)]
    Descriptor(#[from] DescriptorError),
}

/// Descriptors covering the key space `[b"", ∞)` exactly once, ordered by start key.
///
/// ```
/// use shoal_core::{KeyRange, NodeId, RangeDescriptor, RangeId, ReplicaDescriptor};
/// use shoal_ranges::RangeTable;
///
/// let voters = (1..=3).map(|n| ReplicaDescriptor::voter(NodeId::new(n))).collect();
/// let all = RangeDescriptor::new(RangeId::new(1), KeyRange::full(), voters)?;
/// let mut table = RangeTable::new(vec![all], 4096)?;
/// table.split(RangeId::new(1), b"m", RangeId::new(2))?;
/// assert_eq!(table.lookup(b"zebra").id, RangeId::new(2));
/// assert_eq!(table.get(RangeId::new(2)).unwrap().generation.get(), 2);
/// table.merge(RangeId::new(1), RangeId::new(2))?;
/// assert_eq!(table.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeTable {
    by_start: BTreeMap<Vec<u8>, RangeDescriptor>,
    start_of: HashMap<RangeId, Vec<u8>>,
    max_key_len: usize,
}

impl RangeTable {
    /// A table from `descriptors` (any order), refused unless each is valid, ids are
    /// unique, every bound is at most `max_key_len` bytes, and together they cover the key
    /// space with no gap and no overlap.
    pub fn new(
        descriptors: Vec<RangeDescriptor>,
        max_key_len: usize,
    ) -> Result<Self, RangeTableError> {
        let mut table = Self {
            by_start: BTreeMap::new(),
            start_of: HashMap::new(),
            max_key_len,
        };
        for d in descriptors {
            d.validate()?;
            table.check_bounds(&d.range)?;
            if table
                .start_of
                .insert(d.id, d.range.start().to_vec())
                .is_some()
            {
                return Err(RangeTableError::DuplicateId(d.id));
            }
            let id = d.id;
            if let Some(other) = table.by_start.insert(d.range.start().to_vec(), d) {
                return Err(RangeTableError::Overlap {
                    left: other.id,
                    right: id,
                });
            }
        }
        table.check()?;
        Ok(table)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), RangeTableError> {
        if key.len() > self.max_key_len {
            return Err(RangeTableError::KeyTooLarge {
                len: key.len(),
                max: self.max_key_len,
            });
        }
        Ok(())
    }

    fn check_bounds(&self, range: &KeyRange) -> Result<(), RangeTableError> {
        self.check_key(range.start())?;
        if let Some(end) = range.end().as_key() {
            self.check_key(end)?;
        }
        Ok(())
    }

    /// Checks the invariant over the whole table: starts at the empty key, each range ends
    /// where the next starts, the last is unbounded, the id index agrees.
    pub fn check(&self) -> Result<(), RangeTableError> {
        let mut iter = self.by_start.values();
        let Some(first) = iter.next() else {
            return Err(RangeTableError::Empty);
        };
        if !first.range.start().is_empty() {
            return Err(RangeTableError::StartsLate(
                EscapedKey(first.range.start()).to_string(),
            ));
        }
        let mut previous = first;
        for d in iter {
            match previous.range.end().as_key() {
                None => {
                    return Err(RangeTableError::Overlap {
                        left: previous.id,
                        right: d.id,
                    })
                }
                Some(end) if end < d.range.start() => {
                    return Err(RangeTableError::Gap {
                        left: previous.id,
                        right: d.id,
                    })
                }
                Some(end) if end > d.range.start() => {
                    return Err(RangeTableError::Overlap {
                        left: previous.id,
                        right: d.id,
                    })
                }
                Some(_) => {}
            }
            previous = d;
        }
        if let RangeEnd::Key(end) = previous.range.end() {
            return Err(RangeTableError::EndsEarly(EscapedKey(end).to_string()));
        }
        let ids_agree = self.start_of.len() == self.by_start.len()
            && self
                .start_of
                .iter()
                .all(|(id, start)| self.by_start.get(start).is_some_and(|d| d.id == *id));
        if !ids_agree {
            return Err(RangeTableError::DuplicateId(previous.id));
        }
        Ok(())
    }

    /// How many ranges the table holds.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Never true: a table covers the key space with at least one range.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// The range holding `key`. Every key has one.
    pub fn lookup(&self, key: &[u8]) -> &RangeDescriptor {
        self.by_start
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .next_back()
            .map(|(_, d)| d)
            .expect("the first range starts at the empty key, at or below every key")
    }

    /// The range with id `id`.
    pub fn get(&self, id: RangeId) -> Option<&RangeDescriptor> {
        self.by_start.get(self.start_of.get(&id)?)
    }

    /// Every descriptor, in key order.
    pub fn descriptors(&self) -> impl Iterator<Item = &RangeDescriptor> {
        self.by_start.values()
    }

    /// The range to the right of `id`, if any.
    pub fn right_neighbour(&self, id: RangeId) -> Option<&RangeDescriptor> {
        let end = self.get(id)?.range.end().as_key()?;
        self.by_start.get(end)
    }

    /// Applies `change`, then checks the whole table; on any error the table is restored
    /// from a copy taken before. O(n) per change, which metadata rates afford.
    fn apply(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<(), RangeTableError>,
    ) -> Result<(), RangeTableError> {
        let before = self.clone();
        let result = change(self).and_then(|()| self.check());
        if result.is_err() {
            *self = before;
        }
        result
    }

    /// Splits range `id` at `key` (strictly inside it): `id` keeps the left half, `right_id`
    /// (unused so far) takes the right. Both halves move to the next generation.
    pub fn split(
        &mut self,
        id: RangeId,
        key: &[u8],
        right_id: RangeId,
    ) -> Result<(), RangeTableError> {
        self.check_key(key)?;
        if self.start_of.contains_key(&right_id) {
            return Err(RangeTableError::IdInUse(right_id));
        }
        let current = self.get(id).ok_or(RangeTableError::UnknownRange(id))?;
        let (left, right) = current.split(key, right_id)?;
        self.apply(|t| {
            t.start_of.insert(right_id, right.range.start().to_vec());
            t.by_start.insert(left.range.start().to_vec(), left);
            t.by_start.insert(right.range.start().to_vec(), right);
            Ok(())
        })
    }

    /// Merges range `right` into its left neighbour `left` (same replica set required); the
    /// result keeps `left`'s id at a generation above both.
    pub fn merge(&mut self, left: RangeId, right: RangeId) -> Result<(), RangeTableError> {
        let l = self.get(left).ok_or(RangeTableError::UnknownRange(left))?;
        let r = self
            .get(right)
            .ok_or(RangeTableError::UnknownRange(right))?;
        if !l.range.is_left_neighbour_of(&r.range) {
            return Err(RangeTableError::NotAdjacent { left, right });
        }
        let merged = l.merge(r)?;
        let right_start = r.range.start().to_vec();
        self.apply(|t| {
            t.by_start.remove(&right_start);
            t.start_of.remove(&right);
            t.by_start.insert(merged.range.start().to_vec(), merged);
            Ok(())
        })
    }

    /// Replaces range `id`'s replica set (and leader hint, which must name a voter of the new
    /// set or be `None`), bumping its generation.
    pub fn set_replicas(
        &mut self,
        id: RangeId,
        replicas: Vec<ReplicaDescriptor>,
        leader_hint: Option<NodeId>,
    ) -> Result<(), RangeTableError> {
        let current = self.get(id).ok_or(RangeTableError::UnknownRange(id))?;
        let updated = RangeDescriptor {
            replicas,
            leader_hint,
            generation: current
                .generation
                .next()
                .ok_or(DescriptorError::GenerationExhausted(current.generation))?,
            ..current.clone()
        };
        // The one descriptor rule: no voter, duplicates or a non-voter leader are refused.
        updated.validate()?;
        self.apply(|t| {
            t.by_start.insert(updated.range.start().to_vec(), updated);
            Ok(())
        })
    }

    /// Records `node` as range `id`'s leader hint (it must be a voter). Not a replica change:
    /// the generation stays.
    pub fn set_leader_hint(&mut self, id: RangeId, node: NodeId) -> Result<(), RangeTableError> {
        let start = self
            .start_of
            .get(&id)
            .ok_or(RangeTableError::UnknownRange(id))?;
        let d = self
            .by_start
            .get_mut(start)
            .ok_or(RangeTableError::UnknownRange(id))?;
        if d.role_of(node) != Some(ReplicaRole::Voter) {
            return Err(DescriptorError::LeaderNotVoter(node).into());
        }
        d.leader_hint = Some(node);
        Ok(())
    }
}

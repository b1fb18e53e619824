//! The fixed shape of a tree: how many children a node has and how deep the tree is.

use crate::error::MerkleError;
use serde::{Deserialize, Serialize};

/// The most bucket-index bits a tree may use (2<sup>24</sup> buckets).
pub const MAX_BUCKET_BITS: u32 = 24;

/// A tree's shape: `fanout` = 2<sup>`fanout_bits`</sup> children per inner node and `depth`
/// levels below the root, so fanout<sup>depth</sup> buckets. A key's bucket is the top
/// `fanout_bits × depth` bits of its [key hash](crate::key_hash).
///
/// Both replicas in a session must use the same shape. Pick one with about one to a few
/// dozen keys per bucket: [`TreeShape::for_keys`] does that for fanout 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeShape {
    fanout_bits: u8,
    depth: u8,
}

impl TreeShape {
    /// A shape with fanout 2<sup>`fanout_bits`</sup> (2 to 256) and `depth` levels, at
    /// most 2<sup>24</sup> buckets in all.
    pub fn new(fanout_bits: u8, depth: u8) -> Result<TreeShape, MerkleError> {
        let shape = TreeShape { fanout_bits, depth };
        shape.validate()?;
        Ok(shape)
    }

    /// Fanout 4, deep enough for about one key per bucket at `keys` keys (at least 4 levels).
    pub fn for_keys(keys: u64) -> TreeShape {
        let mut depth = 4u8;
        while u64::from(depth) * 2 < u64::from(MAX_BUCKET_BITS) && (1u64 << (2 * depth)) < keys {
            depth += 1;
        }
        TreeShape {
            fanout_bits: 2,
            depth,
        }
    }

    /// Checks the bounds (shapes arrive from peers too).
    pub fn validate(&self) -> Result<(), MerkleError> {
        if !(1..=8).contains(&self.fanout_bits)
            || self.depth == 0
            || self.bucket_bits() > MAX_BUCKET_BITS
        {
            return Err(MerkleError::BadShape {
                fanout_bits: self.fanout_bits,
                depth: self.depth,
            });
        }
        Ok(())
    }

    /// Children per inner node.
    pub fn fanout(&self) -> usize {
        1 << self.fanout_bits
    }

    /// log2 of the fanout.
    pub fn fanout_bits(&self) -> u32 {
        u32::from(self.fanout_bits)
    }

    /// Levels below the root; buckets are at this level.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// Bits of the key hash that pick the bucket.
    pub fn bucket_bits(&self) -> u32 {
        u32::from(self.fanout_bits) * u32::from(self.depth)
    }

    /// Number of nodes at `level` (1 at the root).
    pub fn width(&self, level: u8) -> u64 {
        1u64 << (self.fanout_bits() * u32::from(level))
    }

    /// The node at `level` holding the key with hash `hash`.
    pub fn node_of(&self, hash: u64, level: u8) -> u64 {
        let bits = self.fanout_bits() * u32::from(level);
        if bits == 0 {
            0
        } else {
            hash >> (64 - bits)
        }
    }

    /// The bucket holding the key with hash `hash`.
    pub fn bucket_of(&self, hash: u64) -> u64 {
        self.node_of(hash, self.depth)
    }

    /// The first child (at `level + 1`) of node `index` at `level`.
    pub fn first_child(&self, index: u64) -> u64 {
        index << self.fanout_bits
    }

    /// The parent of node `index`.
    pub fn parent(&self, index: u64) -> u64 {
        index >> self.fanout_bits
    }

    /// Visits, bottom up and each once, every ancestor of the buckets in `nodes`: level
    /// `depth - 1` first, the root last, calling `visit(level, index, children)` with the
    /// range of the node's children one level down. A node is visited after all of its
    /// changed children, so a caller can rehash inner digests from the children as it goes.
    /// `nodes` is used as scratch space and holds only the root afterwards.
    pub(crate) fn for_each_ancestor(
        &self,
        nodes: &mut Vec<u64>,
        mut visit: impl FnMut(u8, u64, std::ops::Range<u64>),
    ) {
        let fanout = self.fanout() as u64;
        for level in (0..self.depth).rev() {
            for index in nodes.iter_mut() {
                *index = self.parent(*index);
            }
            nodes.sort_unstable();
            nodes.dedup();
            for &index in nodes.iter() {
                let first = self.first_child(index);
                visit(level, index, first..first + fanout);
            }
        }
    }
}

impl Default for TreeShape {
    /// Fanout 4, depth 8: 65,536 buckets.
    fn default() -> Self {
        TreeShape {
            fanout_bits: 2,
            depth: 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_top_bits_and_levels_nest() {
        let s = TreeShape::new(2, 3).unwrap();
        assert_eq!((s.fanout(), s.bucket_bits(), s.width(3)), (4, 6, 64));
        let hash = 0b101101u64 << 58 | 12345;
        assert_eq!(s.bucket_of(hash), 0b101101);
        assert_eq!(s.node_of(hash, 1), 0b10);
        assert_eq!(s.node_of(hash, 0), 0);
        assert_eq!(s.parent(s.bucket_of(hash)), s.node_of(hash, 2));
        assert_eq!(s.first_child(0b10), 0b1000);
    }

    #[test]
    fn bad_shapes_are_refused_and_for_keys_scales() {
        assert!(TreeShape::new(0, 4).is_err());
        assert!(TreeShape::new(9, 1).is_err());
        assert!(TreeShape::new(2, 0).is_err());
        assert!(TreeShape::new(4, 7).is_err());
        assert!(TreeShape::new(4, 6).is_ok());
        assert_eq!(TreeShape::for_keys(10).depth(), 4);
        assert_eq!(TreeShape::for_keys(1_000_000).depth(), 10);
        assert_eq!(TreeShape::for_keys(u64::MAX).depth(), 12);
    }
}

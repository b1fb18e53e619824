//! The meta-range gossip merge: descriptor sets form a join-semilattice.
//!
//! Every node holds a [`DescriptorSet`] and gossips it (or deltas of it). Read the set as a
//! function from each key to the descriptor that wins there: of the descriptors covering the
//! key, the one with the highest [`precedence`] (generation first). Merging two sets takes,
//! key by key, the winner of both — a pointwise maximum, so merging is commutative,
//! associative and idempotent, and replicas that saw the same updates in any order, any
//! grouping and with any repetition hold the same set. The set stores exactly the
//! descriptors that win somewhere: a descriptor beaten over its whole span by newer ones is
//! dropped, one beaten over only part of its span stays (it is still the best knowledge of
//! the rest), so a merge of unrelated generations never loses a key's range.
//!
//! Because a merge is a join, any subset of a set is a valid delta and may be applied alone,
//! in any order: [`DescriptorSet::encode_chunks`] cuts a set into pieces that each fit a
//! membership broadcast.

use crate::table::{RangeTable, RangeTableError};
use shoal_core::codec::{self, CodecError};
use shoal_core::{DescriptorError, RangeDescriptor, RangeEnd};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Which of two overlapping descriptors wins: the higher generation, then the higher range
/// id, then (for descriptors that agree on both, so that the order is total) their
/// contents: start, end, replicas, leader hint. Equal only for identical descriptors.
pub fn precedence(a: &RangeDescriptor, b: &RangeDescriptor) -> Ordering {
    let replicas = |d: &RangeDescriptor| -> Vec<(u64, bool)> {
        d.replicas
            .iter()
            .map(|r| (r.node.get(), r.role == shoal_core::ReplicaRole::Voter))
            .collect()
    };
    a.generation
        .cmp(&b.generation)
        .then(a.id.cmp(&b.id))
        .then_with(|| a.range.start().cmp(b.range.start()))
        .then_with(|| a.range.end().cmp(b.range.end()))
        .then_with(|| replicas(a).cmp(&replicas(b)))
        .then_with(|| a.leader_hint.cmp(&b.leader_hint))
}

/// Why a set or a chunk was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// A descriptor failed validation.
    #[error("invalid descriptor: {0}")]
    Descriptor(#[from] DescriptorError),
    /// A descriptor bound is longer than the limit.
    #[error("key of {len} bytes is over the {max}-byte limit")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A single descriptor does not fit in one chunk.
    #[error("a descriptor of {size} bytes does not fit a {max}-byte chunk")]
    DescriptorTooLarge {
        /// Its encoded size.
        size: usize,
        /// The chunk limit.
        max: usize,
    },
    /// A chunk did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// The descriptors that win somewhere, in canonical order (by start key, then precedence).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescriptorSet {
    descriptors: Vec<RangeDescriptor>,
}

impl DescriptorSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of `descriptors` (validated; those beaten everywhere are dropped). Bounds over
    /// `max_key_len` bytes are refused.
    pub fn from_descriptors(
        descriptors: impl IntoIterator<Item = RangeDescriptor>,
        max_key_len: usize,
    ) -> Result<Self, GossipError> {
        let descriptors: Vec<RangeDescriptor> = descriptors.into_iter().collect();
        for d in &descriptors {
            d.validate()?;
            let ends = d.range.end().as_key().map_or(0, <[u8]>::len);
            let len = d.range.start().len().max(ends);
            if len > max_key_len {
                return Err(GossipError::KeyTooLarge {
                    len,
                    max: max_key_len,
                });
            }
        }
        Ok(Self {
            descriptors: winners(descriptors),
        })
    }

    /// The set a table's descriptors form (a table never overlaps, so all of them win).
    pub fn from_table(table: &RangeTable) -> Self {
        Self {
            descriptors: winners(table.descriptors().cloned().collect()),
        }
    }

    /// Merges `other` in. Returns whether this set changed.
    pub fn merge(&mut self, other: &DescriptorSet) -> bool {
        if other.descriptors.is_empty() {
            return false;
        }
        let mut all = std::mem::take(&mut self.descriptors);
        let before = all.clone();
        all.extend(other.descriptors.iter().cloned());
        self.descriptors = winners(all);
        self.descriptors != before
    }

    /// The descriptors, in canonical order.
    pub fn descriptors(&self) -> &[RangeDescriptor] {
        &self.descriptors
    }

    /// How many descriptors the set holds.
    pub fn len(&self) -> usize {
        self.descriptors.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.descriptors.is_empty()
    }

    /// The descriptor that wins at `key`, if any covers it.
    pub fn winner(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        self.descriptors
            .iter()
            .filter(|d| d.contains_key(key))
            .max_by(|a, b| precedence(a, b))
    }

    /// The set as a range table, when its descriptors cover the key space exactly once (no
    /// split or merge half-known).
    pub fn to_table(&self, max_key_len: usize) -> Result<RangeTable, RangeTableError> {
        RangeTable::new(self.descriptors.clone(), max_key_len)
    }

    /// Cuts the set into encoded chunks of at most `max_bytes` each; each chunk is a valid
    /// delta on its own (see the module docs).
    pub fn encode_chunks(&self, max_bytes: usize) -> Result<Vec<Vec<u8>>, GossipError> {
        let mut chunks = Vec::new();
        let mut current = Vec::new();
        for d in &self.descriptors {
            let size = codec::encode(d)?.len();
            if size > max_bytes {
                return Err(GossipError::DescriptorTooLarge {
                    size,
                    max: max_bytes,
                });
            }
            if current.len() + size > max_bytes {
                chunks.push(std::mem::take(&mut current));
            }
            codec::encode_into(d, &mut current, max_bytes)?;
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        Ok(chunks)
    }

    /// Decodes one chunk made by [`DescriptorSet::encode_chunks`], validating every
    /// descriptor and its bounds; a chunk with any bad part is refused whole.
    pub fn decode_chunk(bytes: &[u8], max_key_len: usize) -> Result<Self, GossipError> {
        let mut descriptors = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (d, used): (RangeDescriptor, usize) =
                codec::decode_prefix(&bytes[at..], bytes.len())?;
            descriptors.push(d);
            at += used.max(1);
        }
        Self::from_descriptors(descriptors, max_key_len)
    }
}

/// The descriptors of `all` that win at some key, deduplicated, in canonical order.
///
/// A sweep over the key space: at each boundary (a start or end key), the descriptors
/// starting there join a max-heap by precedence, those that have ended leave it lazily when
/// they surface, and the top wins the span up to the next boundary. O(n log n).
fn winners(mut all: Vec<RangeDescriptor>) -> Vec<RangeDescriptor> {
    all.sort_by(|a, b| {
        a.range
            .start()
            .cmp(b.range.start())
            .then_with(|| precedence(a, b))
    });
    all.dedup();
    // Rank every descriptor by precedence, so the heap compares integers.
    let mut by_precedence: Vec<usize> = (0..all.len()).collect();
    by_precedence.sort_by(|&a, &b| precedence(&all[a], &all[b]));
    let mut rank = vec![0usize; all.len()];
    for (r, &i) in by_precedence.iter().enumerate() {
        rank[i] = r;
    }
    let mut boundaries: Vec<&[u8]> = all
        .iter()
        .flat_map(|d| [Some(d.range.start()), d.range.end().as_key()])
        .flatten()
        .collect();
    boundaries.sort_unstable();
    boundaries.dedup();

    let mut wins = vec![false; all.len()];
    let mut heap = BinaryHeap::new();
    let mut next = 0;
    for &at in &boundaries {
        while next < all.len() && all[next].range.start() == at {
            heap.push((rank[next], next));
            next += 1;
        }
        while let Some(&(_, top)) = heap.peek() {
            let ended = match all[top].range.end() {
                RangeEnd::Key(end) => end.as_slice() <= at,
                RangeEnd::Unbounded => false,
            };
            if !ended {
                break;
            }
            heap.pop();
        }
        if let Some(&(_, top)) = heap.peek() {
            wins[top] = true;
        }
    }
    all.into_iter()
        .zip(wins)
        .filter_map(|(d, won)| won.then_some(d))
        .collect()
}

//! The Merkle tree: leaves bucketed by key hash, inner nodes over fixed-size groups of
//! children, digests recomputed lazily for what changed.

use crate::digest::{bucket_digest, inner_digest, key_hash, Digest};
use crate::error::MerkleError;
use crate::shape::TreeShape;
use foldhash::fast::FixedState;
use hashbrown::HashMap;
use shoal_core::KeyRange;
use std::cmp::Ordering;

type Map<V> = HashMap<u64, V, FixedState>;

/// One key in the tree: its hash, the key, and its leaf digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    hash: u64,
    key: Box<[u8]>,
    digest: Digest,
}

impl Entry {
    /// The key's [hash](crate::key_hash), its id on the wire.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The leaf digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    fn order(&self, hash: u64, key: &[u8]) -> Ordering {
        (self.hash, &*self.key).cmp(&(hash, key))
    }
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    /// Sorted by (hash, key).
    entries: Vec<Entry>,
    dirty: bool,
}

/// A Merkle tree over the keys of one key range (or all keys).
///
/// Keys are placed in buckets by the top bits of their hash, so the tree's shape is fixed
/// and two replicas' trees line up node for node whatever keys they hold. Inserting,
/// updating or removing a key costs a hash, a bucket lookup and a dirty mark; the next
/// [`MerkleTree::root`] rehashes only the dirty buckets and their ancestors. Memory follows
/// the keys, not the shape: empty buckets and subtrees are not stored.
///
/// ```
/// use shoal_merkle::{Digest, MerkleTree, TreeShape};
///
/// let mut a = MerkleTree::new(TreeShape::default());
/// let mut b = MerkleTree::new(TreeShape::default());
/// for (tree, version) in [(&mut a, 1), (&mut b, 2)] {
///     tree.insert(b"apple", Digest::of_version(b"apple", 1))?;
///     tree.insert(b"pear", Digest::of_version(b"pear", version))?;
/// }
/// assert_ne!(a.root(), b.root());
/// b.insert(b"pear", Digest::of_version(b"pear", 1))?;
/// assert_eq!(a.root(), b.root());
/// # Ok::<(), shoal_merkle::MerkleError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MerkleTree {
    shape: TreeShape,
    span: KeyRange,
    buckets: Map<Bucket>,
    /// Digests of non-empty nodes at every level, keyed by `level << 32 | index`, as of the
    /// last refresh.
    nodes: Map<Digest>,
    /// Buckets changed since the last refresh.
    dirty: Vec<u64>,
    len: usize,
}

fn node_key(level: u8, index: u64) -> u64 {
    (u64::from(level) << 32) | index
}

impl MerkleTree {
    /// An empty tree over every key.
    pub fn new(shape: TreeShape) -> MerkleTree {
        Self::with_span(shape, KeyRange::full())
    }

    /// An empty tree over the keys in `span`; other keys are refused.
    pub fn with_span(shape: TreeShape, span: KeyRange) -> MerkleTree {
        MerkleTree {
            shape,
            span,
            buckets: Map::default(),
            nodes: Map::default(),
            dirty: Vec::new(),
            len: 0,
        }
    }

    /// The tree's shape.
    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// The key range the tree covers.
    pub fn span(&self) -> &KeyRange {
        &self.span
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets `key`'s leaf digest and returns the previous one. Refused for a key outside the
    /// tree's range.
    pub fn insert(&mut self, key: &[u8], digest: Digest) -> Result<Option<Digest>, MerkleError> {
        if !self.span.contains(key) {
            return Err(MerkleError::KeyOutsideSpan);
        }
        Ok(self.insert_hashed(key_hash(key), key, digest))
    }

    fn insert_hashed(&mut self, hash: u64, key: &[u8], digest: Digest) -> Option<Digest> {
        let b = self.shape.bucket_of(hash);
        let bucket = self.buckets.entry(b).or_default();
        let previous = match bucket.entries.binary_search_by(|e| e.order(hash, key)) {
            Ok(i) => {
                let entry = &mut bucket.entries[i];
                if entry.digest == digest {
                    return Some(digest);
                }
                Some(std::mem::replace(&mut entry.digest, digest))
            }
            Err(i) => {
                bucket.entries.insert(
                    i,
                    Entry {
                        hash,
                        key: key.into(),
                        digest,
                    },
                );
                self.len += 1;
                None
            }
        };
        if !bucket.dirty {
            bucket.dirty = true;
            self.dirty.push(b);
        }
        previous
    }

    /// Removes `key` and returns its leaf digest, if it was there.
    pub fn remove(&mut self, key: &[u8]) -> Option<Digest> {
        let hash = key_hash(key);
        let b = self.shape.bucket_of(hash);
        let bucket = self.buckets.get_mut(&b)?;
        let i = bucket
            .entries
            .binary_search_by(|e| e.order(hash, key))
            .ok()?;
        let entry = bucket.entries.remove(i);
        self.len -= 1;
        if !bucket.dirty {
            bucket.dirty = true;
            self.dirty.push(b);
        }
        Some(entry.digest)
    }

    /// `key`'s leaf digest.
    pub fn get(&self, key: &[u8]) -> Option<Digest> {
        let hash = key_hash(key);
        let bucket = self.buckets.get(&self.shape.bucket_of(hash))?;
        let i = bucket
            .entries
            .binary_search_by(|e| e.order(hash, key))
            .ok()?;
        Some(bucket.entries[i].digest)
    }

    /// The root digest, after rehashing what changed since the last call.
    pub fn root(&mut self) -> Digest {
        self.refresh();
        self.node(0, 0)
    }

    /// Whether every digest is up to date (nothing changed since the last refresh).
    pub fn is_fresh(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Rehashes the buckets changed since the last refresh and their ancestors: per changed
    /// bucket, one hash of the bucket and one per level above it (shared ancestors once).
    pub fn refresh(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut level_nodes = std::mem::take(&mut self.dirty);
        let depth = self.shape.depth();
        for &b in &level_nodes {
            let digest = match self.buckets.get_mut(&b) {
                Some(bucket) => {
                    bucket.dirty = false;
                    bucket_digest(bucket.entries.iter().map(|e| (e.hash, &e.digest)))
                }
                None => Digest::ZERO,
            };
            if digest.is_zero() {
                self.buckets.remove(&b);
            }
            self.set_node(depth, b, digest);
        }
        let shape = self.shape;
        let mut children = Vec::with_capacity(shape.fanout());
        shape.for_each_ancestor(&mut level_nodes, |level, index, below| {
            children.clear();
            children.extend(below.map(|child| self.node(level + 1, child)));
            let digest = inner_digest(&children);
            self.set_node(level, index, digest);
        });
        // Hand the allocation back for the next round of changes.
        level_nodes.clear();
        self.dirty = level_nodes;
    }

    fn set_node(&mut self, level: u8, index: u64, digest: Digest) {
        if digest.is_zero() {
            self.nodes.remove(&node_key(level, index));
        } else {
            self.nodes.insert(node_key(level, index), digest);
        }
    }

    /// The digest of node `index` at `level` as of the last refresh ([`Digest::ZERO`] for an
    /// empty subtree or a node outside the shape).
    pub fn node(&self, level: u8, index: u64) -> Digest {
        self.nodes
            .get(&node_key(level, index))
            .copied()
            .unwrap_or(Digest::ZERO)
    }

    /// The entries of bucket `index`, in (hash, key) order.
    pub fn bucket(&self, index: u64) -> &[Entry] {
        self.buckets
            .get(&index)
            .map(|b| b.entries.as_slice())
            .unwrap_or(&[])
    }

    /// The entries whose key hash is `hash` (almost always zero or one).
    pub fn entries_with_hash(&self, hash: u64) -> &[Entry] {
        let entries = self.bucket(self.shape.bucket_of(hash));
        let start = entries.partition_point(|e| e.hash < hash);
        let end = start + entries[start..].partition_point(|e| e.hash == hash);
        &entries[start..end]
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.buckets.values().flat_map(|b| b.entries.iter())
    }

    /// Splits the tree at `at` (strictly inside its range): this tree keeps the keys below
    /// `at`, the returned tree (same shape) takes the rest, as when a range splits.
    pub fn split_off(&mut self, at: &[u8]) -> Result<MerkleTree, MerkleError> {
        let (left, right) = self
            .span
            .split_at(at)
            .map_err(|_| MerkleError::BadSplitKey)?;
        let mut moved = MerkleTree::with_span(self.shape, right);
        let mut changed = Vec::new();
        for (&b, bucket) in self.buckets.iter_mut() {
            let before = bucket.entries.len();
            bucket.entries.retain(|e| {
                if moved.span.contains(&e.key) {
                    moved.insert_hashed(e.hash, &e.key, e.digest);
                    false
                } else {
                    true
                }
            });
            if bucket.entries.len() != before && !bucket.dirty {
                bucket.dirty = true;
                changed.push(b);
            }
        }
        self.len -= moved.len;
        self.dirty.extend(changed);
        self.span = left;
        Ok(moved)
    }

    /// Absorbs `right`, the tree of the key range just after this one, as when two ranges
    /// merge.
    pub fn merge(&mut self, right: MerkleTree) -> Result<(), MerkleError> {
        if right.shape != self.shape {
            return Err(MerkleError::ShapeMismatch);
        }
        let span = self
            .span
            .merge(&right.span)
            .map_err(|_| MerkleError::NotAdjacent)?;
        self.span = span;
        for bucket in right.buckets.into_values() {
            for e in bucket.entries {
                self.insert_hashed(e.hash, &e.key, e.digest);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> TreeShape {
        TreeShape::new(2, 4).unwrap()
    }

    fn tree_of(keys: impl IntoIterator<Item = u32>) -> MerkleTree {
        let mut t = MerkleTree::new(shape());
        for k in keys {
            let key = k.to_be_bytes();
            t.insert(&key, Digest::of_version(&key, 1)).unwrap();
        }
        t
    }

    #[test]
    fn the_root_depends_on_contents_not_history() {
        let mut a = tree_of(0..500);
        let mut b = tree_of((0..500).rev());
        assert_eq!(a.root(), b.root());
        assert_eq!(a.len(), 500);
        let key = 7u32.to_be_bytes();
        let old = a.insert(&key, Digest::of_version(&key, 2)).unwrap();
        assert_eq!(old, Some(Digest::of_version(&key, 1)));
        assert_ne!(a.root(), b.root());
        a.insert(&key, Digest::of_version(&key, 1)).unwrap();
        assert_eq!(a.root(), b.root());
        // Removing everything gives the empty root and frees every node.
        for k in 0..500u32 {
            assert!(a.remove(&k.to_be_bytes()).is_some());
        }
        assert_eq!(a.root(), Digest::ZERO);
        assert!(a.nodes.is_empty() && a.buckets.is_empty());
        assert_eq!(a.remove(b"missing"), None);
    }

    #[test]
    fn incremental_refresh_matches_a_fresh_build() {
        let mut t = tree_of(0..300);
        t.root();
        for k in 100..200u32 {
            t.remove(&k.to_be_bytes());
        }
        for k in 1000..1050u32 {
            let key = k.to_be_bytes();
            t.insert(&key, Digest::of_version(&key, 1)).unwrap();
        }
        let mut fresh = tree_of((0..100).chain(200..300).chain(1000..1050));
        assert_eq!(t.root(), fresh.root());
        assert_eq!(t.nodes, fresh.nodes);
    }

    #[test]
    fn lookups_by_key_and_hash() {
        let t = tree_of(0..50);
        let key = 9u32.to_be_bytes();
        assert_eq!(t.get(&key), Some(Digest::of_version(&key, 1)));
        let found = t.entries_with_hash(key_hash(&key));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key(), key);
        assert!(t.entries_with_hash(key_hash(b"nope")).is_empty());
        assert_eq!(t.entries().count(), 50);
    }

    #[test]
    fn spans_refuse_outside_keys_and_split_and_merge_round_trip() {
        let mut whole = tree_of(0..400);
        let root = whole.root();
        let at = 150u32.to_be_bytes();
        let mut right = whole.split_off(&at).unwrap();
        assert_eq!((whole.len(), right.len()), (150, 250));
        assert_eq!(whole.root(), tree_of(0..150).root());
        assert_eq!(
            whole.insert(&at, Digest::ZERO),
            Err(MerkleError::KeyOutsideSpan)
        );
        assert!(right.split_off(&at).is_err(), "split key must be inside");
        assert_eq!(right.root(), {
            let mut t = MerkleTree::with_span(shape(), right.span().clone());
            for k in 150..400u32 {
                let key = k.to_be_bytes();
                t.insert(&key, Digest::of_version(&key, 1)).unwrap();
            }
            t.root()
        });
        let other_shape =
            MerkleTree::with_span(TreeShape::new(3, 2).unwrap(), right.span().clone());
        assert_eq!(whole.merge(other_shape), Err(MerkleError::ShapeMismatch));
        let mut not_adjacent = right.clone();
        assert_eq!(
            not_adjacent.merge(whole.clone()),
            Err(MerkleError::NotAdjacent)
        );
        whole.merge(right).unwrap();
        assert_eq!(whole.root(), root);
        assert_eq!(whole.span(), &KeyRange::full());
    }
}

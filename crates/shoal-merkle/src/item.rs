//! Items that travel between replicas, and the rules that decide which copy wins.

use crate::digest::{Digest, DIGEST_LEN};
use serde::{Deserialize, Serialize};
use shoal_core::HlcTimestamp;

/// One key and its value, with the timestamp of the write that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The key. For [`ConflictRule::ContentAddressed`], the BLAKE3 of `value`.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// When and where it was written (ignored by [`ConflictRule::ContentAddressed`]).
    pub stamp: HlcTimestamp,
}

impl Item {
    /// A last-writer-wins item.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, stamp: HlcTimestamp) -> Item {
        Item {
            key: key.into(),
            value: value.into(),
            stamp,
        }
    }

    /// An immutable content-addressed item: its key is the BLAKE3 of its value.
    pub fn content(value: impl Into<Vec<u8>>) -> Item {
        let value = value.into();
        Item {
            key: blake3::hash(&value).as_bytes().to_vec(),
            value,
            stamp: HlcTimestamp::default(),
        }
    }

    /// Bytes of key and value.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.len()
    }
}

/// How replicas settle two copies of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ConflictRule {
    /// Last writer wins: the copy with the greater [`HlcTimestamp`] wins. Timestamps are
    /// ordered by physical time, then the logical counter, then the issuing node's id, so
    /// the node id breaks ties between concurrent writes and every replica picks the same
    /// winner. Two copies with the same timestamp but different values (only possible if a
    /// node reuses a timestamp) are settled by the greater value hash, so replicas still
    /// converge.
    #[default]
    LastWriterWins,
    /// Immutable content-addressed items: the key is the BLAKE3 of the value, items never
    /// change, and replicas hold the union. An item whose key is not its value's hash is
    /// refused.
    ContentAddressed,
}

/// Why an incoming item was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The item is malformed for the rule: a content-addressed key that is not the value's
    /// hash, a key outside the tree's range, or a key or value over the limits.
    Invalid,
    /// The local copy is as new or newer.
    Stale,
}

impl ConflictRule {
    /// The leaf digest a replica records for `item`.
    pub fn leaf_digest(&self, item: &Item) -> Digest {
        match self {
            ConflictRule::LastWriterWins => {
                let mut h = blake3::Hasher::new();
                h.update(b"shoal-merkle/leaf/lww/1");
                h.update(&(item.key.len() as u64).to_be_bytes());
                h.update(&item.key);
                h.update(&item.stamp.physical_ms.to_be_bytes());
                h.update(&item.stamp.logical.to_be_bytes());
                h.update(&item.stamp.node.get().to_be_bytes());
                h.update(blake3::hash(&item.value).as_bytes());
                Digest(*h.finalize().as_bytes())
            }
            ConflictRule::ContentAddressed => Digest::of_version(&item.key, 0),
        }
    }

    /// Whether `item` is well formed for this rule.
    pub fn is_valid(&self, item: &Item) -> bool {
        match self {
            ConflictRule::LastWriterWins => true,
            ConflictRule::ContentAddressed => {
                item.key.len() == DIGEST_LEN
                    && blake3::hash(&item.value).as_bytes()[..] == item.key[..]
            }
        }
    }

    /// Whether `incoming` should replace `local` (None: the key is absent locally).
    pub fn wins(&self, incoming: &Item, local: Option<&Item>) -> bool {
        let Some(local) = local else {
            return true;
        };
        match self {
            ConflictRule::ContentAddressed => false,
            ConflictRule::LastWriterWins => match incoming.stamp.cmp(&local.stamp) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => {
                    blake3::hash(&incoming.value).as_bytes() > blake3::hash(&local.value).as_bytes()
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::NodeId;

    fn stamp(ms: u64, node: u64) -> HlcTimestamp {
        HlcTimestamp {
            physical_ms: ms,
            logical: 0,
            node: NodeId::new(node),
        }
    }

    #[test]
    fn last_writer_wins_with_the_node_id_as_tiebreak() {
        let rule = ConflictRule::LastWriterWins;
        let old = Item::new("k", "a", stamp(10, 9));
        let new = Item::new("k", "b", stamp(11, 1));
        assert!(rule.wins(&new, Some(&old)) && !rule.wins(&old, Some(&new)));
        let (n1, n2) = (
            Item::new("k", "x", stamp(10, 1)),
            Item::new("k", "y", stamp(10, 2)),
        );
        assert!(rule.wins(&n2, Some(&n1)) && !rule.wins(&n1, Some(&n2)));
        // A reused timestamp still has exactly one winner.
        let (s1, s2) = (
            Item::new("k", "x", stamp(10, 1)),
            Item::new("k", "y", stamp(10, 1)),
        );
        assert_ne!(rule.wins(&s1, Some(&s2)), rule.wins(&s2, Some(&s1)));
        assert!(!rule.wins(&s1, Some(&s1)));
        assert!(rule.wins(&old, None));
        assert_ne!(rule.leaf_digest(&n1), rule.leaf_digest(&n2));
    }

    #[test]
    fn content_addressed_items_are_checked_and_never_replaced() {
        let rule = ConflictRule::ContentAddressed;
        let item = Item::content("hello");
        assert!(rule.is_valid(&item));
        let mut forged = item.clone();
        forged.value = b"other".to_vec();
        assert!(!rule.is_valid(&forged));
        assert!(!rule.wins(&item, Some(&item)) && rule.wins(&item, None));
        // The stamp is not part of a content item's identity.
        let mut stamped = item.clone();
        stamped.stamp = stamp(5, 5);
        assert_eq!(rule.leaf_digest(&item), rule.leaf_digest(&stamped));
    }
}

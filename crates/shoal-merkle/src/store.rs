//! What a sync session needs from the replica it runs on, and an in-memory replica.

use crate::item::{ConflictRule, Item, Refusal};
use crate::tree::MerkleTree;
use foldhash::fast::FixedState;
use hashbrown::HashMap;

/// Size bounds on items taken from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemLimits {
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Longest value accepted, in bytes.
    pub max_value_bytes: usize,
}

impl Default for ItemLimits {
    /// 4 KiB keys and 1 MiB values, as in shoal-storage.
    fn default() -> Self {
        ItemLimits {
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
        }
    }
}

/// A replica's items and the Merkle tree over them, as a sync session sees them.
///
/// The store keeps items; the tree must hold, for every item, its key with
/// [`ConflictRule::leaf_digest`]. [`SyncStore::offer`] keeps the two in step for items
/// that arrive from peers; local writes must do the same.
pub trait SyncStore {
    /// How copies of one key are settled.
    fn rule(&self) -> ConflictRule;
    /// The tree over the items.
    fn tree(&self) -> &MerkleTree;
    /// The tree, to refresh or update it.
    fn tree_mut(&mut self) -> &mut MerkleTree;
    /// The item stored under `key`.
    fn item(&self, key: &[u8]) -> Option<Item>;
    /// Stores `item`, replacing any copy under its key. Called only with items that are
    /// valid and win; the caller updates the tree.
    fn write(&mut self, item: Item);

    /// Appends the items whose key hash is `hash` to `out`.
    fn items_with_hash(&self, hash: u64, out: &mut Vec<Item>) {
        for entry in self.tree().entries_with_hash(hash) {
            if let Some(item) = self.item(entry.key()) {
                out.push(item);
            }
        }
    }

    /// Takes `item` from a peer if it is valid and wins over the local copy; updates the
    /// tree with it. Nothing changes when it is refused.
    fn offer(&mut self, item: Item, limits: &ItemLimits) -> Result<(), Refusal> {
        let rule = self.rule();
        if item.key.len() > limits.max_key_bytes
            || item.value.len() > limits.max_value_bytes
            || !rule.is_valid(&item)
            || !self.tree().span().contains(&item.key)
        {
            return Err(Refusal::Invalid);
        }
        if !rule.wins(&item, self.item(&item.key).as_ref()) {
            return Err(Refusal::Stale);
        }
        let digest = rule.leaf_digest(&item);
        self.tree_mut()
            .insert(&item.key, digest)
            .map_err(|_| Refusal::Invalid)?;
        self.write(item);
        Ok(())
    }
}

/// A replica held in memory: a hash map of items and the tree over them. Useful on its own
/// for small gossip-replicated data sets, and as the model in tests.
#[derive(Clone, Debug)]
pub struct MemStore {
    rule: ConflictRule,
    items: HashMap<Vec<u8>, Item, FixedState>,
    tree: MerkleTree,
}

impl MemStore {
    /// An empty replica settling conflicts by `rule`, with a tree of `tree`'s shape and range
    /// (pass an empty tree).
    pub fn new(rule: ConflictRule, tree: MerkleTree) -> MemStore {
        MemStore {
            rule,
            items: HashMap::default(),
            tree,
        }
    }

    /// A local write: stored if it wins over the current copy (under last-writer-wins a
    /// fresh timestamp always does). Returns whether it was stored.
    pub fn put(&mut self, item: Item) -> bool {
        self.offer(item, &ItemLimits::default()).is_ok()
    }

    /// Removes `key` outright (a local administrative delete, not a replicated one: peers
    /// still holding the key will send it back; replicate deletes as tombstone values).
    pub fn remove(&mut self, key: &[u8]) -> Option<Item> {
        self.tree.remove(key);
        self.items.remove(key)
    }

    /// The stored item under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Item> {
        self.items.get(key)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every item, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Item> + '_ {
        self.items.values()
    }
}

impl SyncStore for MemStore {
    fn rule(&self) -> ConflictRule {
        self.rule
    }

    fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    fn tree_mut(&mut self) -> &mut MerkleTree {
        &mut self.tree
    }

    fn item(&self, key: &[u8]) -> Option<Item> {
        self.items.get(key).cloned()
    }

    fn write(&mut self, item: Item) {
        self.items.insert(item.key.clone(), item);
    }
}

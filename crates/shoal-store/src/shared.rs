//! What a node's range machines tell the store as they apply: each hosted range's current
//! descriptor, and splits whose right halves need a Raft group started.

use shoal_consensus::Membership;
use shoal_core::{RangeDescriptor, RangeId};
use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};
use tokio::sync::Notify;

/// A split applied on this node: its right half's group is to be started here.
#[derive(Clone, Debug)]
pub(crate) struct SplitDone {
    /// The range that split (the left half now).
    pub parent: RangeId,
    /// The new range.
    pub right: RangeDescriptor,
    /// The parent group's membership when it split (the new group's first).
    pub membership: Membership,
}

/// State the machines (on the blocking pool) and the store (on the runtime) share.
#[derive(Default)]
pub(crate) struct Shared {
    /// Every hosted range's descriptor at its applied index.
    descriptors: RwLock<BTreeMap<RangeId, RangeDescriptor>>,
    /// Splits applied and not yet acted on.
    splits: Mutex<Vec<SplitDone>>,
    /// Wakes the store's task when there is a split to act on.
    pub(crate) wake: Notify,
    /// Wakes the meta range upkeep when a hosted range's descriptor is new or changed.
    pub(crate) changed: Notify,
}

impl Shared {
    pub(crate) fn set_descriptor(&self, descriptor: RangeDescriptor) {
        let generation = descriptor.generation;
        let before = self
            .descriptors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(descriptor.id, descriptor);
        if before.is_none_or(|b| b.generation != generation) {
            self.changed.notify_one();
        }
    }

    pub(crate) fn descriptor(&self, range: RangeId) -> Option<RangeDescriptor> {
        self.descriptors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&range)
            .cloned()
    }

    /// The hosted ranges' descriptors, in range id order.
    pub(crate) fn descriptors(&self) -> Vec<RangeDescriptor> {
        self.descriptors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The hosted range holding `key`, if any.
    pub(crate) fn range_for(&self, key: &[u8]) -> Option<RangeDescriptor> {
        self.descriptors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|d| d.contains_key(key))
            .cloned()
    }

    pub(crate) fn split_done(&self, split: SplitDone) {
        self.splits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(split);
        self.wake.notify_one();
    }

    pub(crate) fn take_splits(&self) -> Vec<SplitDone> {
        std::mem::take(&mut *self.splits.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

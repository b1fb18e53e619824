//! What a node's range machines and its store share: each hosted range's current
//! descriptor (events, such as splits, go through [`super::events`]).

use shoal_core::{RangeDescriptor, RangeId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use tokio::sync::Notify;

/// State the machines (on the blocking pool) and the store (on the runtime) share.
#[derive(Default)]
pub(crate) struct Shared {
    /// Every hosted range's descriptor at its applied index.
    descriptors: RwLock<BTreeMap<RangeId, RangeDescriptor>>,
    /// Wakes the meta range upkeep when a hosted range's descriptor is new or changed.
    pub(crate) changed: Notify,
    /// Counts changes to the descriptors (a range hosted, changed or gone), so periodic
    /// work over all of them can skip a pass when nothing changed.
    version: AtomicU64,
}

impl Shared {
    pub(crate) fn set_descriptor(&self, descriptor: RangeDescriptor) {
        let generation = descriptor.generation;
        let before = self
            .descriptors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(descriptor.id, descriptor);
        self.version.fetch_add(1, Ordering::Relaxed);
        if before.is_none_or(|b| b.generation != generation) {
            self.changed.notify_one();
        }
    }

    /// Changes to the descriptors so far (any change bumps it).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Forgets a range no longer hosted here.
    pub(crate) fn remove_descriptor(&self, range: RangeId) {
        self.descriptors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&range);
        self.version.fetch_add(1, Ordering::Relaxed);
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

    /// The hosted ranges' descriptors that `keep` accepts, in range id order.
    pub(crate) fn descriptors_where(
        &self,
        keep: impl Fn(&RangeDescriptor) -> bool,
    ) -> Vec<RangeDescriptor> {
        self.descriptors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|d| keep(d))
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
}

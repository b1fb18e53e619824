//! What a node's range machines report to the store as they apply, as typed events rather
//! than state the store polls (as TiKV's raftstore reports a split to its store through a
//! message): for now, a split whose right half needs a Raft group started here.
//!
//! The channel is unbounded on purpose: its sender is on the apply path, which must neither
//! block nor fail, and there is one event per split applied, which the store's task handles
//! as they come.

use shoal_consensus::Membership;
use shoal_core::{RangeDescriptor, RangeId};
use tokio::sync::mpsc;

/// Something a range machine reports as it applies.
#[derive(Debug)]
pub(crate) enum RangeEvent {
    /// A split applied on this node: its right half's group is to be started here.
    Split(SplitDone),
}

/// A split applied on this node.
#[derive(Clone, Debug)]
pub(crate) struct SplitDone {
    /// The range that split (the left half now).
    pub parent: RangeId,
    /// The new range.
    pub right: RangeDescriptor,
    /// The parent group's membership when it split (the new group's first).
    pub membership: Membership,
}

/// Where the machines send their events.
pub(crate) type RangeEvents = mpsc::UnboundedSender<RangeEvent>;

/// A channel for one node's range events.
pub(crate) fn channel() -> (RangeEvents, mpsc::UnboundedReceiver<RangeEvent>) {
    mpsc::unbounded_channel()
}

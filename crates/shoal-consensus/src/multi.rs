//! Many Raft groups on one node, as one sans-IO state machine.
//!
//! A node hosts a replica of many groups (a range store, one per range). [`MultiRaft`] routes each message
//! to its group by [`Message::group`], ticks every group with one call, and collects every
//! group's ready in one pass, so a driver persists all of them and then syncs once: with
//! the groups' stores in one [`crate::Wal`], that is one `fdatasync` for the whole node per
//! round (group commit across groups). [`batch_by_node`] then packs the round's messages
//! into one batch per peer.

use crate::message::Message;
use crate::raft::Raft;
use crate::ready::{PersistedToken, Ready};
use crate::store::LogStore;
use shoal_core::{GroupId, Instant, NodeId};
use std::collections::BTreeMap;

/// Input a [`MultiRaft`] dropped, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MultiRaftStats {
    /// Messages for a group this node does not host.
    pub unknown_group: u64,
}

/// Why a group could not be added.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddGroupError {
    /// The replica belongs to another node.
    #[error("the replica is {replica}'s, not this node's ({node})")]
    WrongNode {
        /// This node.
        node: NodeId,
        /// The replica's node.
        replica: NodeId,
    },
    /// The node already hosts the group.
    #[error("group {0} is already hosted here")]
    Exists(GroupId),
}

/// Every Raft group one node hosts.
pub struct MultiRaft<S: LogStore> {
    id: NodeId,
    groups: BTreeMap<GroupId, Raft<S>>,
    stats: MultiRaftStats,
}

impl<S: LogStore> MultiRaft<S> {
    /// No groups yet, on node `id`.
    pub fn new(id: NodeId) -> Self {
        MultiRaft {
            id,
            groups: BTreeMap::new(),
            stats: MultiRaftStats::default(),
        }
    }

    /// This node.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Hosts a group's replica.
    pub fn add_group(&mut self, raft: Raft<S>) -> Result<(), AddGroupError> {
        if raft.id() != self.id {
            return Err(AddGroupError::WrongNode {
                node: self.id,
                replica: raft.id(),
            });
        }
        if self.groups.contains_key(&raft.group()) {
            return Err(AddGroupError::Exists(raft.group()));
        }
        self.groups.insert(raft.group(), raft);
        Ok(())
    }

    /// Stops hosting a group and hands its replica back.
    pub fn remove_group(&mut self, group: GroupId) -> Option<Raft<S>> {
        self.groups.remove(&group)
    }

    /// A hosted group.
    pub fn group(&self, group: GroupId) -> Option<&Raft<S>> {
        self.groups.get(&group)
    }

    /// A hosted group, to propose, read or reconfigure.
    pub fn group_mut(&mut self, group: GroupId) -> Option<&mut Raft<S>> {
        self.groups.get_mut(&group)
    }

    /// Every hosted group, by id.
    pub fn groups(&self) -> impl Iterator<Item = &Raft<S>> {
        self.groups.values()
    }

    /// Hosted groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether no group is hosted.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Dropped input.
    pub fn stats(&self) -> MultiRaftStats {
        self.stats
    }

    /// Hands a message to its group. Messages for groups not hosted here are counted and
    /// dropped (the group may have moved away, or not arrived yet).
    pub fn step(&mut self, now: Instant, message: Message) {
        match self.groups.get_mut(&message.group) {
            Some(raft) => raft.step(now, message),
            None => {
                self.stats.unknown_group += 1;
                tracing::debug!(node = %self.id, group = %message.group, from = %message.from, "dropped a message for a group not hosted here");
            }
        }
    }

    /// Ticks every group.
    pub fn tick(&mut self, now: Instant) {
        for raft in self.groups.values_mut() {
            raft.tick(now);
        }
    }

    /// The earliest time any group needs a tick.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.groups.values().map(Raft::next_deadline).min()
    }

    /// Whether any group has work for the driver.
    pub fn has_ready(&self) -> bool {
        self.groups.values().any(Raft::has_ready)
    }

    /// The ready of every group that has one. Persist them all, sync once, then report
    /// each with [`MultiRaft::on_persisted`].
    pub fn ready(&mut self) -> Vec<(GroupId, Ready)> {
        self.groups
            .iter_mut()
            .filter(|(_, raft)| raft.has_ready())
            .map(|(&group, raft)| (group, raft.ready()))
            .collect()
    }

    /// A group's ready is on disk. A group removed meanwhile is ignored.
    pub fn on_persisted(&mut self, group: GroupId, token: PersistedToken) {
        if let Some(raft) = self.groups.get_mut(&group) {
            raft.on_persisted(token);
        }
    }
}

/// Packs messages into one batch per destination node, in order.
pub fn batch_by_node(
    messages: impl IntoIterator<Item = Message>,
) -> BTreeMap<NodeId, Vec<Message>> {
    let mut batches: BTreeMap<NodeId, Vec<Message>> = BTreeMap::new();
    for m in messages {
        batches.entry(m.to).or_default().push(m);
    }
    batches
}

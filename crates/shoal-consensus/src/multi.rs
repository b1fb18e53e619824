//! Many Raft groups on one node, as one sans-IO state machine.
//!
//! A node hosts a replica of many groups (a range store, one per range). [`MultiRaft`] routes each message
//! to its group by [`Message::group`], ticks every group with one call, and collects every
//! group's ready in one pass, so a driver persists all of them and then syncs once: with
//! the groups' stores in one [`crate::Wal`], that is one `fdatasync` for the whole node per
//! round (group commit across groups). [`batch_by_node`] then packs the round's messages
//! into one batch per peer.
//!
//! Ticks and readies visit only the *active* groups: those that are awake, and quiet ones
//! touched since their last ready (a message stepped, a proposal made through
//! [`MultiRaft::group_mut`], a ready persisted). A quiesced group
//! ([`crate::RaftConfig::quiesce`]) with nothing left for the driver drops out, so a round
//! costs in proportion to the groups with work, not to every group hosted.

use crate::message::Message;
use crate::raft::Raft;
use crate::ready::{PersistedToken, Ready};
use crate::store::LogStore;
use shoal_core::{GroupId, Instant, NodeId};
use std::collections::{BTreeMap, BTreeSet};

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
    /// The groups ticks and readies visit (see the module docs); ordered, so rounds are
    /// deterministic.
    active: BTreeSet<GroupId>,
    stats: MultiRaftStats,
}

impl<S: LogStore> MultiRaft<S> {
    /// No groups yet, on node `id`.
    pub fn new(id: NodeId) -> Self {
        MultiRaft {
            id,
            groups: BTreeMap::new(),
            active: BTreeSet::new(),
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
        self.active.insert(raft.group());
        self.groups.insert(raft.group(), raft);
        Ok(())
    }

    /// Stops hosting a group and hands its replica back.
    pub fn remove_group(&mut self, group: GroupId) -> Option<Raft<S>> {
        self.active.remove(&group);
        self.groups.remove(&group)
    }

    /// A hosted group.
    pub fn group(&self, group: GroupId) -> Option<&Raft<S>> {
        self.groups.get(&group)
    }

    /// A hosted group, to propose, read or reconfigure.
    pub fn group_mut(&mut self, group: GroupId) -> Option<&mut Raft<S>> {
        let raft = self.groups.get_mut(&group)?;
        self.active.insert(group);
        Some(raft)
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
            Some(raft) => {
                self.active.insert(message.group);
                raft.step(now, message)
            }
            None => {
                self.stats.unknown_group += 1;
                tracing::debug!(node = %self.id, group = %message.group, from = %message.from, "dropped a message for a group not hosted here");
            }
        }
    }

    /// Ticks every active group (see the module docs).
    pub fn tick(&mut self, now: Instant) {
        let groups = &mut self.groups;
        self.active.retain(|group| {
            let Some(raft) = groups.get_mut(group) else {
                return false;
            };
            raft.tick(now);
            !raft.is_quiet() || raft.has_ready()
        });
    }

    /// A failure detector says `node` is down: every quiet group it leads here wakes
    /// ([`Raft::peer_down`]).
    pub fn peer_down(&mut self, node: NodeId) {
        for (&group, raft) in self.groups.iter_mut() {
            raft.peer_down(node);
            if !raft.is_quiet() {
                self.active.insert(group);
            }
        }
    }

    /// How many groups are quiesced.
    pub fn quiet_groups(&self) -> usize {
        self.groups.values().filter(|r| r.is_quiet()).count()
    }

    /// The earliest time any group needs a tick.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.active
            .iter()
            .filter_map(|g| self.groups.get(g))
            .map(Raft::next_deadline)
            .min()
    }

    /// Whether any group has work for the driver.
    pub fn has_ready(&self) -> bool {
        self.active
            .iter()
            .filter_map(|g| self.groups.get(g))
            .any(Raft::has_ready)
    }

    /// The ready of every group that has one. Persist them all, sync once, then report
    /// each with [`MultiRaft::on_persisted`].
    pub fn ready(&mut self) -> Vec<(GroupId, Ready)> {
        let mut readies = Vec::new();
        let mut idle = Vec::new();
        for &group in &self.active {
            let Some(raft) = self.groups.get_mut(&group) else {
                continue;
            };
            if raft.has_ready() {
                readies.push((group, raft.ready()));
            } else if raft.is_quiet() {
                idle.push(group);
            }
        }
        for group in idle {
            self.active.remove(&group);
        }
        readies
    }

    /// A group's ready is on disk. A group removed meanwhile is ignored.
    pub fn on_persisted(&mut self, group: GroupId, token: PersistedToken) {
        if let Some(raft) = self.groups.get_mut(&group) {
            raft.on_persisted(token);
            self.active.insert(group);
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

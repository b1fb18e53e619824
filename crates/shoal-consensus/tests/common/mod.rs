//! An in-process network of Raft replicas for rule tests: messages are delivered by hand or
//! until the network is quiet, links can be cut, and each replica persists synchronously
//! into a [`MemLogStore`].

#![allow(dead_code)]

use shoal_consensus::{
    Entry, MemLogStore, Membership, Message, MessageBody, Raft, RaftConfig, ReadState, Ready,
};
use shoal_core::{Instant, NodeId, RangeId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub const GROUP: RangeId = RangeId::new(7);

pub fn n(raw: u64) -> NodeId {
    NodeId::new(raw)
}

/// A config with pre-vote and check-quorum off, as the paper describes Raft; tests of those
/// features turn them on.
pub fn paper_config() -> RaftConfig {
    RaftConfig {
        pre_vote: false,
        check_quorum: false,
        ..RaftConfig::default()
    }
}

pub struct Net {
    pub nodes: BTreeMap<NodeId, Raft<MemLogStore>>,
    /// Each replica's state machine: the commands it applied, in order (restored from a
    /// snapshot as a whole).
    pub applied: BTreeMap<NodeId, Vec<String>>,
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    pub now: Instant,
    /// Links (from, to) that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub config: RaftConfig,
}

impl Net {
    /// `voters` replicas bootstrapped together, nothing delivered yet.
    pub fn new(voters: u64, config: RaftConfig) -> Net {
        let ids: Vec<NodeId> = (1..=voters).map(n).collect();
        Self::with_membership(Membership::new(ids), config)
    }

    pub fn with_membership(membership: Membership, config: RaftConfig) -> Net {
        let mut net = Net {
            nodes: BTreeMap::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            now: Instant::from_millis(1),
            cut: BTreeSet::new(),
            config,
        };
        for id in membership.members() {
            let mut store = MemLogStore::new();
            Raft::bootstrap(&mut store, membership.clone()).unwrap();
            net.add_node(id, store);
        }
        net
    }

    /// Adds a replica over `store` (an empty store: a node joining).
    pub fn add_node(&mut self, id: NodeId, store: MemLogStore) {
        let raft = Raft::new(id, GROUP, self.config.clone(), store, 0, id.get(), self.now).unwrap();
        self.nodes.insert(id, raft);
        self.applied.insert(id, Vec::new());
        self.reads.insert(id, Vec::new());
    }

    pub fn node(&mut self, id: u64) -> &mut Raft<MemLogStore> {
        self.nodes.get_mut(&n(id)).unwrap()
    }

    /// Takes a replica's ready, persists it, and returns every message it produced.
    pub fn flush(&mut self, id: NodeId) -> Vec<Message> {
        let raft = self.nodes.get_mut(&id).unwrap();
        let ready = raft.ready();
        persist(raft, &ready);
        raft.on_persisted(ready.persisted);
        let sm = self.applied.get_mut(&id).unwrap();
        if let Some(snapshot) = &ready.snapshot {
            *sm = decode_commands(&snapshot.data);
        }
        sm.extend(ready.committed.iter().filter_map(command));
        if ready.snapshot_wanted {
            raft.snapshot_taken(encode_commands(sm));
        }
        self.reads.get_mut(&id).unwrap().extend(ready.read_states);
        let mut out = ready.messages;
        out.extend(ready.persisted_messages);
        out
    }

    /// Messages every replica has to send now.
    pub fn flush_all(&mut self) -> Vec<Message> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        ids.into_iter().flat_map(|id| self.flush(id)).collect()
    }

    /// Delivers one message unless its link is cut.
    pub fn deliver(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to)) {
            return;
        }
        if let Some(raft) = self.nodes.get_mut(&m.to) {
            raft.step(self.now, m);
        }
    }

    /// Delivers messages, and whatever they cause, until the network is quiet.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            let messages = self.flush_all();
            if messages.is_empty() {
                return;
            }
            for m in messages {
                self.deliver(m);
            }
        }
        panic!("the network did not settle");
    }

    /// Advances time by `d` in steps of `step`, ticking and settling after each.
    pub fn run_for(&mut self, d: Duration, step: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += step;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let now = self.now;
                self.nodes.get_mut(&id).unwrap().tick(now);
            }
            self.settle();
        }
    }

    /// Makes `id` campaign and settles: it should then lead.
    pub fn elect(&mut self, id: u64) {
        self.node(id).campaign();
        self.settle();
        assert!(self.node(id).is_leader(), "n{id} did not win");
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: u64) {
        for &other in self.nodes.keys() {
            self.cut.insert((n(id), other));
            self.cut.insert((other, n(id)));
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The commands a replica applied.
    pub fn commands(&self, id: u64) -> Vec<String> {
        self.applied[&n(id)].clone()
    }
}

/// A command entry's text.
pub fn command(entry: &Entry) -> Option<String> {
    match &entry.payload {
        shoal_consensus::EntryPayload::Command(d) => Some(String::from_utf8_lossy(d).into_owned()),
        _ => None,
    }
}

/// The test state machine's snapshot format: commands, one per line.
pub fn encode_commands(commands: &[String]) -> bytes::Bytes {
    commands.join("\n").into()
}

pub fn decode_commands(data: &[u8]) -> Vec<String> {
    if data.is_empty() {
        return Vec::new();
    }
    String::from_utf8_lossy(data)
        .split('\n')
        .map(str::to_owned)
        .collect()
}

/// Persists a ready into the replica's own store, the way a synchronous driver does.
pub fn persist(raft: &mut Raft<MemLogStore>, ready: &Ready) {
    ready.write_to(raft.store_mut()).unwrap();
}

/// The bodies of `messages` sent to `to`, by kind name.
pub fn kinds(messages: &[Message]) -> Vec<(&'static str, NodeId)> {
    messages.iter().map(|m| (m.body.name(), m.to)).collect()
}

/// A message from `from` to `to` in `term`.
pub fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        group: GROUP,
        from: n(from),
        to: n(to),
        term,
        config_index: 0,
        body,
    }
}

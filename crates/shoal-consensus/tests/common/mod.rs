//! An in-process network of Raft replicas for rule tests: messages are delivered by hand or
//! until the network is quiet, links can be cut, and each replica runs in its own
//! [`RaftHost`] (the ready loop every driver uses), persisting synchronously into a
//! [`MemLogStore`].

#![allow(dead_code)]

pub mod machine;

use machine::{CommandLog, CommandSource};
use shoal_consensus::{
    Entry, HostEvent, MemLogStore, Membership, Message, MessageBody, Raft, RaftConfig, RaftHost,
    ReadMode, ReadState, Ready, SnapshotSink, SnapshotSource,
};
use shoal_core::{GroupId, Instant, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub const GROUP: GroupId = GroupId::new(7);

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
    /// Each replica in its own host (one group), with its state machine.
    pub hosts: BTreeMap<NodeId, RaftHost<MemLogStore, CommandLog>>,
    /// Each replica's state machine (a handle on the one its host owns).
    pub machines: BTreeMap<NodeId, CommandLog>,
    /// Reads served per replica, in order.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// Snapshot transfers completed (the data delivered whole).
    pub snapshots_sent: u64,
    /// Transfers to fail from now on, as a broken stream would.
    pub fail_transfers: u64,
    /// Transfers that failed.
    pub transfers_failed: u64,
    /// The most chunks one transfer took.
    pub largest_transfer_chunks: u64,
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
            hosts: BTreeMap::new(),
            machines: BTreeMap::new(),
            reads: BTreeMap::new(),
            snapshots_sent: 0,
            fail_transfers: 0,
            transfers_failed: 0,
            largest_transfer_chunks: 0,
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
        self.insert(raft);
    }

    /// Hosts `raft` (replacing any replica with its id) over a fresh, empty state machine.
    pub fn insert(&mut self, raft: Raft<MemLogStore>) {
        let id = raft.id();
        let machine = CommandLog::default();
        let mut host = RaftHost::new(id);
        host.add_group(raft, machine.clone()).unwrap();
        self.hosts.insert(id, host);
        self.machines.insert(id, machine);
        self.reads.insert(id, Vec::new());
    }

    /// Takes a replica out (its state machine goes with it).
    pub fn remove(&mut self, id: NodeId) -> Raft<MemLogStore> {
        self.machines.remove(&id);
        let mut host = self.hosts.remove(&id).unwrap();
        host.remove_group(GROUP).unwrap().0
    }

    pub fn node(&mut self, id: u64) -> &mut Raft<MemLogStore> {
        self.hosts.get_mut(&n(id)).unwrap().raft_mut(GROUP).unwrap()
    }

    /// A replica, to look at.
    pub fn raft(&self, id: NodeId) -> &Raft<MemLogStore> {
        self.hosts[&id].raft(GROUP).unwrap()
    }

    /// Every replica.
    pub fn rafts(&self) -> impl Iterator<Item = &Raft<MemLogStore>> {
        self.hosts.values().map(|h| h.raft(GROUP).unwrap())
    }

    /// Asks replica `id` for a read barrier with token `ctx`; served reads land in
    /// [`Net::reads`].
    pub fn read(&mut self, id: u64, ctx: u64, mode: ReadMode) {
        self.hosts
            .get_mut(&n(id))
            .unwrap()
            .read(GROUP, mode, ctx)
            .unwrap();
    }

    /// Runs one round of a replica's host and returns every message it produced. Snapshot
    /// transfers it asks for happen at once over the link (the data delivered whole to the
    /// follower's host, or the transfer failed when the link is cut).
    pub fn flush(&mut self, id: NodeId) -> Vec<Message> {
        let now = self.now;
        let host = self.hosts.get_mut(&id).unwrap();
        let mut out = Vec::new();
        host.round(now, &mut |messages| out.extend(messages));
        for event in host.take_events() {
            match event {
                HostEvent::Read {
                    token,
                    result: Ok(index),
                } => self
                    .reads
                    .get_mut(&id)
                    .unwrap()
                    .push(ReadState { ctx: token, index }),
                HostEvent::SendSnapshot {
                    message, source, ..
                } => self.transfer(message, source),
                _ => {}
            }
        }
        out
    }

    /// Streams a snapshot to its follower, chunk by chunk, and reports to the leader.
    fn transfer(&mut self, message: Message, mut source: CommandSource) {
        let (from, to) = (message.from, message.to);
        let index = source.index();
        let broken = self.fail_transfers > 0;
        self.fail_transfers = self.fail_transfers.saturating_sub(1);
        let delivered =
            !broken && !self.cut.contains(&(from, to)) && self.hosts.contains_key(&to) && {
                let host = self.hosts.get_mut(&to).unwrap();
                let MessageBody::Snapshot { meta } = &message.body else {
                    unreachable!()
                };
                let mut sink = host.receive_snapshot(GROUP, meta).unwrap();
                let mut chunks = 0;
                while let Some(chunk) = source.next_chunk().unwrap() {
                    sink.write(&chunk).unwrap();
                    chunks += 1;
                }
                self.largest_transfer_chunks = self.largest_transfer_chunks.max(chunks);
                host.snapshot_received(message, sink.finish().unwrap());
                true
            };
        if delivered {
            self.snapshots_sent += 1;
        } else {
            self.transfers_failed += 1;
        }
        let result = if delivered { Ok(index) } else { Err(()) };
        self.hosts
            .get_mut(&from)
            .unwrap()
            .report_snapshot(GROUP, to, result);
    }

    /// Messages every replica has to send now.
    pub fn flush_all(&mut self) -> Vec<Message> {
        let ids: Vec<NodeId> = self.hosts.keys().copied().collect();
        ids.into_iter().flat_map(|id| self.flush(id)).collect()
    }

    /// Delivers one message unless its link is cut.
    pub fn deliver(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to)) {
            return;
        }
        let now = self.now;
        if let Some(host) = self.hosts.get_mut(&m.to) {
            let _ = host.step(now, m);
        }
    }

    /// Delivers messages, and whatever they cause, until the network is quiet.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            let messages = self.flush_all();
            let busy = self.hosts.values().any(|h| h.has_ready());
            if messages.is_empty() && !busy {
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
            let now = self.now;
            for host in self.hosts.values_mut() {
                host.tick(now);
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
        for &other in self.hosts.keys() {
            self.cut.insert((n(id), other));
            self.cut.insert((other, n(id)));
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The commands a replica applied.
    pub fn commands(&self, id: u64) -> Vec<String> {
        self.machines[&n(id)].strings()
    }
}

/// A command entry's text.
pub fn command(entry: &Entry) -> Option<String> {
    match &entry.payload {
        shoal_consensus::EntryPayload::Command(d) => Some(String::from_utf8_lossy(d).into_owned()),
        _ => None,
    }
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

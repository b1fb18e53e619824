//! The one ready loop: every Raft group of a node with its state machine, driven through
//! [`crate::Ready`] in the order that keeps every promise (see [`Ready`]'s steps).
//!
//! A [`RaftHost`] is synchronous and does no I/O of its own beyond its log stores and state
//! machines: drivers decide where it runs and where messages go. The tokio driver
//! ([`crate::driver::RaftDriver`]) runs each round on the blocking pool so fjall commits and
//! WAL syncs never hold a runtime thread; the simulator adapter (module `sim`), the rule tests and
//! the benchmarks run it inline. Each round:
//!
//! 1. takes every group's ready and sends what may go at once (a leader's appends);
//! 2. installs accepted snapshots into their state machines, writes every group's log
//!    entries, hard state and compaction, and syncs each store once (group commit: with one
//!    [`crate::Wal`] for the node, the first sync covers every group);
//! 3. reports each group persisted and only then sends what had to wait for the disk
//!    (votes, acknowledgements);
//! 4. applies committed entries and settles the proposals they answer;
//! 5. serves confirmed reads once their group has applied through their index;
//! 6. persists state machines whose group wants its log compacted, and opens snapshot
//!    sources for followers that need one ([`HostEvent::SendSnapshot`]).
//!
//! A failure of a group's log store or state machine stops that group alone
//! ([`HostEvent::GroupFailed`]); the node's other groups go on.
//!
//! Snapshot data travels beside Raft (see [`crate::snapshot`]): the leader's driver streams
//! a [`HostEvent::SendSnapshot`]'s source to the follower and reports with
//! [`RaftHost::report_snapshot`]; the follower's driver writes it into
//! [`RaftHost::receive_snapshot`]'s sink and hands the result to
//! [`RaftHost::snapshot_received`] with the event's message.

use crate::entry::{LogIndex, Term};
use crate::error::{ProposeError, ReadError, TransferError};
use crate::membership::ConfChange;
use crate::message::{Message, MessageBody};
use crate::multi::{AddGroupError, MultiRaft};
use crate::raft::{Raft, ReadMode, Status};
use crate::ready::{LeaderInfo, Ready};
use crate::snapshot::{SnapshotMeta, SnapshotSource, StateMachine};
use crate::store::LogStore;
use bytes::Bytes;
use shoal_core::{GroupId, Instant, NodeId};
use std::collections::{BTreeMap, HashMap};

/// Why a request to a host failed, or how a proposal ended other than applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The node does not host the group.
    #[error("group {0} is not hosted here")]
    UnknownGroup(GroupId),
    /// The group stopped after its log store or state machine failed.
    #[error("group {group} stopped after a failure: {error}")]
    GroupFailed {
        /// The group.
        group: GroupId,
        /// What failed.
        error: String,
    },
    /// The group refused the proposal (not the leader, too large, overloaded, …).
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// The read could not be served.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The leadership transfer was refused.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// Another entry took the proposal's place in the log: it did not and will not take
    /// effect.
    #[error("the proposal was replaced in the log by a new leader and did not take effect")]
    Dropped,
    /// The outcome cannot be known here any more (a snapshot replaced the log meanwhile, the
    /// group failed or was removed after the proposal's entry may have reached followers):
    /// the proposal may or may not take effect.
    #[error("the proposal's outcome is unknown here")]
    Indeterminate,
}

/// What a round settled, for the driver to pass on.
#[derive(Debug)]
pub enum HostEvent<Source, Response> {
    /// A proposal made with [`RaftHost::propose`] ended: applied (with the state machine's
    /// answer), [`HostError::Dropped`], or [`HostError::Indeterminate`].
    Proposal {
        /// The proposal's token.
        token: u64,
        /// How it ended.
        result: Result<Response, HostError>,
    },
    /// A read barrier asked with [`RaftHost::read`] ended: `Ok(index)` once the state
    /// machine has applied through `index`, every write committed before the read.
    Read {
        /// The read's token.
        token: u64,
        /// Its read index, or why it failed.
        result: Result<LogIndex, HostError>,
    },
    /// The leader of a group, as this node sees it, changed.
    Leader {
        /// The group.
        group: GroupId,
        /// Its leader and term.
        leader: LeaderInfo,
    },
    /// Stream `source` to `message.to` on the snapshot channel, then deliver `message` there
    /// (through [`RaftHost::snapshot_received`] on the receiving node), and report with
    /// [`RaftHost::report_snapshot`].
    SendSnapshot {
        /// The group.
        group: GroupId,
        /// The [`MessageBody::Snapshot`] to deliver once the data is whole.
        message: Message,
        /// The data.
        source: Source,
    },
    /// A group stopped after its log store or state machine failed.
    GroupFailed {
        /// The group.
        group: GroupId,
        /// What failed.
        error: String,
    },
}

/// When a proposal is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Once committed and applied here, with the state machine's answer (durable on a
    /// majority).
    #[default]
    Applied,
    /// As soon as the leader's own log holds it durably, with an empty answer: a leader that
    /// fails before a majority holds it can lose it. Answered as [`Wait::Applied`] would be
    /// if it is applied first, or dropped or settled otherwise.
    Persisted,
    /// As soon as the leader has appended it (in memory, not yet on any disk), with an empty
    /// answer: any leader crash or change can lose it.
    Appended,
}

/// Input a host dropped, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// [`MessageBody::Snapshot`] messages that came as ordinary Raft traffic instead of after
    /// a snapshot transfer (no honest peer sends one).
    pub unsolicited_snapshots: u64,
    /// Received snapshots the core did not take (already covered, or stale).
    pub snapshots_discarded: u64,
}

/// Every Raft group of one node with its state machine, and the ready loop over them.
pub struct RaftHost<S: LogStore, M: StateMachine> {
    multi: MultiRaft<S>,
    machines: HashMap<GroupId, M>,
    /// Proposals waiting to apply, per group by index: (term, token, when to answer).
    proposals: HashMap<GroupId, BTreeMap<LogIndex, (Term, u64, Wait)>>,
    /// Reads asked and not confirmed yet: token → group.
    reads: HashMap<u64, GroupId>,
    /// Reads confirmed, waiting for their group to apply through their index.
    waiting_reads: Vec<(GroupId, LogIndex, u64)>,
    /// Received snapshots the core accepted, until a ready installs them.
    staged: HashMap<GroupId, (SnapshotMeta, M::Staged)>,
    /// Snapshot transfers finished, for the next round to hand to their groups.
    received: Vec<(Message, M::Staged)>,
    failed: HashMap<GroupId, String>,
    events: Vec<HostEvent<M::Source, M::Response>>,
    stats: HostStats,
}

impl<S: LogStore, M: StateMachine> RaftHost<S, M> {
    /// No groups yet, on node `id`.
    pub fn new(id: NodeId) -> Self {
        RaftHost {
            multi: MultiRaft::new(id),
            machines: HashMap::new(),
            proposals: HashMap::new(),
            reads: HashMap::new(),
            waiting_reads: Vec::new(),
            staged: HashMap::new(),
            received: Vec::new(),
            failed: HashMap::new(),
            events: Vec::new(),
            stats: HostStats::default(),
        }
    }

    /// This node.
    pub fn id(&self) -> NodeId {
        self.multi.id()
    }

    /// Hosts a group: its replica and its state machine (at the replica's applied index or
    /// ahead of it). A group that failed may be added again.
    pub fn add_group(&mut self, raft: Raft<S>, machine: M) -> Result<(), AddGroupError> {
        let group = raft.group();
        self.multi.add_group(raft)?;
        self.machines.insert(group, machine);
        self.failed.remove(&group);
        Ok(())
    }

    /// Stops hosting a group and hands back its replica and state machine. Its waiting
    /// proposals end [`HostError::Indeterminate`] and its reads fail.
    pub fn remove_group(&mut self, group: GroupId) -> Option<(Raft<S>, M)> {
        let raft = self.multi.remove_group(group)?;
        let mut machine = self.machines.remove(&group)?;
        if let Some((_, staged)) = self.staged.remove(&group) {
            machine.discard_snapshot(staged);
        }
        self.settle_group(group, HostError::UnknownGroup(group));
        Some((raft, machine))
    }

    /// A hosted group's replica.
    pub fn raft(&self, group: GroupId) -> Option<&Raft<S>> {
        self.multi.group(group)
    }

    /// A hosted group's replica, to campaign, reconfigure or transfer leadership.
    pub fn raft_mut(&mut self, group: GroupId) -> Option<&mut Raft<S>> {
        self.multi.group_mut(group)
    }

    /// A hosted group's state machine.
    pub fn machine(&self, group: GroupId) -> Option<&M> {
        self.machines.get(&group)
    }

    /// Every hosted group's replica.
    pub fn rafts(&self) -> impl Iterator<Item = &Raft<S>> {
        self.multi.groups()
    }

    /// Dropped input so far.
    pub fn stats(&self) -> HostStats {
        self.stats
    }

    /// Messages dropped for groups not hosted here.
    pub fn unknown_group_messages(&self) -> u64 {
        self.multi.stats().unknown_group
    }

    /// A group's status, or why there is none.
    pub fn status(&self, group: GroupId) -> Result<Status, HostError> {
        self.multi
            .group(group)
            .map(Raft::status)
            .ok_or_else(|| self.missing(group))
    }

    /// Hands a peer's message to its group. Returns it when the group is not hosted here
    /// (the driver may create the replica and step it again). A snapshot message arriving
    /// this way is dropped: its data never came (see [`RaftHost::snapshot_received`]).
    pub fn step(&mut self, now: Instant, message: Message) -> Option<Message> {
        if matches!(message.body, MessageBody::Snapshot { .. }) {
            self.stats.unsolicited_snapshots += 1;
            tracing::warn!(node = %self.id(), from = %message.from, group = %message.group, "dropped a snapshot message that came without its data");
            return None;
        }
        if self.multi.group(message.group).is_none() {
            return Some(message);
        }
        self.multi.step(now, message);
        None
    }

    /// Ticks every group.
    pub fn tick(&mut self, now: Instant) {
        self.multi.tick(now);
    }

    /// A failure detector says `node` is down: the quiet groups it led wake (see
    /// [`Raft::peer_down`]).
    pub fn peer_down(&mut self, node: NodeId) {
        self.multi.peer_down(node);
    }

    /// How many groups are quiesced ([`crate::RaftConfig::quiesce`]).
    pub fn quiet_groups(&self) -> usize {
        self.multi.quiet_groups()
    }

    /// The earliest time any group needs a tick.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.multi.next_deadline()
    }

    /// Proposes `data` to a group this node leads. Its outcome comes as a
    /// [`HostEvent::Proposal`] with `token`; the entry's index and term are returned now.
    pub fn propose(
        &mut self,
        group: GroupId,
        data: Bytes,
        token: u64,
    ) -> Result<(LogIndex, Term), HostError> {
        self.propose_with(group, data, token, Wait::Applied)
    }

    /// [`RaftHost::propose`], answered as `wait` says.
    pub fn propose_with(
        &mut self,
        group: GroupId,
        data: Bytes,
        token: u64,
        wait: Wait,
    ) -> Result<(LogIndex, Term), HostError> {
        let Some(raft) = self.multi.group_mut(group) else {
            return Err(self.missing(group));
        };
        let (index, term) = raft.propose(data)?;
        if wait == Wait::Appended {
            self.events.push(HostEvent::Proposal {
                token,
                result: Ok(M::Response::default()),
            });
        } else {
            self.proposals
                .entry(group)
                .or_default()
                .insert(index, (term, token, wait));
        }
        Ok((index, term))
    }

    /// Proposes a membership change to a group this node leads; settled like
    /// [`RaftHost::propose`] (with an empty answer once applied).
    pub fn propose_conf_change(
        &mut self,
        group: GroupId,
        change: ConfChange,
        token: u64,
    ) -> Result<(LogIndex, Term), HostError> {
        let Some(raft) = self.multi.group_mut(group) else {
            return Err(self.missing(group));
        };
        let (index, term) = raft.propose_conf_change(change)?;
        self.proposals
            .entry(group)
            .or_default()
            .insert(index, (term, token, Wait::Applied));
        Ok((index, term))
    }

    /// Hands a group's leadership to `target` (see [`Raft::transfer_leader`]).
    pub fn transfer_leader(&mut self, group: GroupId, target: NodeId) -> Result<(), HostError> {
        let Some(raft) = self.multi.group_mut(group) else {
            return Err(self.missing(group));
        };
        Ok(raft.transfer_leader(target)?)
    }

    /// Asks each of `groups` hosted here to compact its log as far as it may (see
    /// [`Raft::request_compaction`]); groups not hosted are passed over. Returns how many
    /// had anything to compact.
    pub fn request_compaction(&mut self, groups: &[GroupId]) -> usize {
        let mut asked = 0;
        for &group in groups {
            if let Some(raft) = self.multi.group_mut(group) {
                asked += usize::from(raft.request_compaction());
            }
        }
        asked
    }

    /// Makes this node's replica of a group campaign now (see [`Raft::campaign`]).
    pub fn campaign(&mut self, group: GroupId) -> Result<(), HostError> {
        let Some(raft) = self.multi.group_mut(group) else {
            return Err(self.missing(group));
        };
        raft.campaign();
        Ok(())
    }

    /// Asks for a linearizable read barrier on a group (see [`ReadMode`]); it ends as a
    /// [`HostEvent::Read`] with `token`, which must be unique among reads in flight.
    pub fn read(&mut self, group: GroupId, mode: ReadMode, token: u64) -> Result<(), HostError> {
        let Some(raft) = self.multi.group_mut(group) else {
            return Err(self.missing(group));
        };
        raft.read(token, mode);
        self.reads.insert(token, group);
        Ok(())
    }

    /// Starts receiving a snapshot for a hosted group: the sink the driver writes the
    /// transfer's chunks into.
    pub fn receive_snapshot(
        &mut self,
        group: GroupId,
        meta: &SnapshotMeta,
    ) -> Result<M::Sink, HostError> {
        let missing = self.missing(group);
        let machine = self.machines.get_mut(&group).ok_or(missing)?;
        machine
            .receive_snapshot(meta)
            .map_err(|e| HostError::GroupFailed {
                group,
                error: e.to_string(),
            })
    }

    /// A snapshot transfer finished: `staged` holds its data, whole, and `message` is the
    /// [`MessageBody::Snapshot`] that came with it. The next round hands it to the group's
    /// replica, which decides whether to take it; if it does, that round installs `staged` in
    /// the state machine before anything acknowledges it, and otherwise `staged` is
    /// discarded.
    pub fn snapshot_received(&mut self, message: Message, staged: M::Staged) {
        self.received.push((message, staged));
    }

    /// Hands finished transfers to their groups (the first thing a round does).
    fn take_received(&mut self, now: Instant) {
        for (message, staged) in std::mem::take(&mut self.received) {
            let group = message.group;
            let (Some(raft), Some(machine)) =
                (self.multi.group_mut(group), self.machines.get_mut(&group))
            else {
                tracing::debug!(%group, "a snapshot arrived for a group no longer hosted");
                continue;
            };
            let MessageBody::Snapshot { meta } = &message.body else {
                machine.discard_snapshot(staged);
                continue;
            };
            let meta = meta.clone();
            raft.step(now, message);
            let taken = raft
                .pending_snapshot()
                .is_some_and(|p| p.index == meta.index && p.term == meta.term);
            if taken {
                if let Some((_, older)) = self.staged.insert(group, (meta, staged)) {
                    machine.discard_snapshot(older);
                }
            } else {
                self.stats.snapshots_discarded += 1;
                machine.discard_snapshot(staged);
            }
        }
    }

    /// How a [`HostEvent::SendSnapshot`] went: `Ok(index)` once the follower holds the
    /// snapshot at `index` whole, `Err(())` if the transfer failed.
    pub fn report_snapshot(&mut self, group: GroupId, peer: NodeId, result: Result<LogIndex, ()>) {
        if let Some(raft) = self.multi.group_mut(group) {
            raft.report_snapshot(peer, result);
        }
    }

    /// Whether a round has anything to do.
    pub fn has_ready(&self) -> bool {
        self.multi.has_ready() || !self.waiting_reads.is_empty() || !self.received.is_empty()
    }

    /// Takes what rounds settled so far.
    pub fn take_events(&mut self) -> Vec<HostEvent<M::Source, M::Response>> {
        std::mem::take(&mut self.events)
    }

    /// One round over every group's ready (see the module docs), at time `now`; `send` gets
    /// the messages to deliver, in order, as soon as each may go.
    pub fn round(&mut self, now: Instant, send: &mut dyn FnMut(Vec<Message>)) {
        self.take_received(now);
        let mut readies = self.multi.ready();
        if !readies.is_empty() {
            send(
                readies
                    .iter_mut()
                    .flat_map(|(_, r)| std::mem::take(&mut r.messages))
                    .collect(),
            );
            let mut failures = Vec::new();
            for (group, ready) in &readies {
                if let Err(error) = self.persist(*group, ready) {
                    failures.push((*group, error));
                }
            }
            // The first sync covers every group of a shared WAL; the rest find nothing to
            // do. After a failed one the WAL refuses every further sync, so each group whose
            // writes it held fails too, as it must.
            for (group, ready) in &readies {
                if !ready.needs_persist() || failures.iter().any(|(g, _)| g == group) {
                    continue;
                }
                let raft = self.multi.group_mut(*group).expect("hosted");
                if let Err(error) = raft.store_mut().sync() {
                    failures.push((*group, error.to_string()));
                }
            }
            for (group, error) in failures {
                self.fail_group(group, error);
            }
            for (group, mut ready) in readies {
                if self.failed.contains_key(&group) {
                    // Not persisted: its acknowledgements must not go out, nor its entries
                    // apply.
                    continue;
                }
                self.multi.on_persisted(group, ready.persisted);
                if let Some(last) = ready.persisted.last_entry {
                    self.answer_persisted(group, last);
                }
                send(std::mem::take(&mut ready.persisted_messages));
                if let Err(error) = self.apply(group, ready) {
                    self.fail_group(group, error);
                }
            }
        }
        self.serve_reads();
    }

    /// Answers proposals waiting only for the leader's own log, now durable through `last`
    /// (index, term). Entries of `last`'s term below it are this leader's own, so they are
    /// the proposals'; older terms' may have been replaced, and wait to apply.
    fn answer_persisted(&mut self, group: GroupId, last: (LogIndex, Term)) {
        let Some(pending) = self.proposals.get_mut(&group) else {
            return;
        };
        let durable: Vec<LogIndex> = pending
            .range(..=last.0)
            .filter(|(_, (term, _, wait))| *wait == Wait::Persisted && *term == last.1)
            .map(|(&index, _)| index)
            .collect();
        for index in durable {
            if let Some((_, token, _)) = pending.remove(&index) {
                self.events.push(HostEvent::Proposal {
                    token,
                    result: Ok(M::Response::default()),
                });
            }
        }
    }

    /// Step 2 for one group: the snapshot into the state machine, then the log writes.
    fn persist(&mut self, group: GroupId, ready: &Ready) -> Result<(), String> {
        if let Some(meta) = &ready.snapshot {
            let machine = self.machines.get_mut(&group).expect("hosted");
            let staged = match self.staged.remove(&group) {
                Some((staged_meta, staged)) if staged_meta == *meta => staged,
                Some((staged_meta, staged)) => {
                    machine.discard_snapshot(staged);
                    return Err(format!(
                        "the snapshot to install ({}, {}) is not the one received ({}, {})",
                        meta.index, meta.term, staged_meta.index, staged_meta.term
                    ));
                }
                None => return Err(format!("no data for the snapshot at {}", meta.index)),
            };
            machine
                .install_snapshot(meta, staged)
                .map_err(|e| e.to_string())?;
            // Proposals the snapshot covers were decided elsewhere; this node cannot tell.
            if let Some(pending) = self.proposals.get_mut(&group) {
                let covered: Vec<LogIndex> =
                    pending.range(..=meta.index).map(|(&i, _)| i).collect();
                for index in covered {
                    if let Some((_, token, _)) = pending.remove(&index) {
                        self.events.push(HostEvent::Proposal {
                            token,
                            result: Err(HostError::Indeterminate),
                        });
                    }
                }
            }
        }
        let raft = self.multi.group_mut(group).expect("hosted");
        ready.write_to(raft.store_mut()).map_err(|e| e.to_string())
    }

    /// Steps 4 to 6 for one persisted ready.
    fn apply(&mut self, group: GroupId, ready: Ready) -> Result<(), String> {
        let machine = self.machines.get_mut(&group).expect("hosted");
        let pending = self.proposals.entry(group).or_default();
        for entry in &ready.committed {
            // A snapshot installed before a crash can leave the state machine ahead of the
            // log it restarted with: what it holds is already applied.
            let answer = if entry.index <= machine.applied_index() {
                None
            } else {
                Some(machine.apply(entry).map_err(|e| e.to_string())?)
            };
            if let Some((term, token, _)) = pending.remove(&entry.index) {
                let result = match answer {
                    Some(answer) if term == entry.term => Ok(answer),
                    Some(_) => Err(HostError::Dropped),
                    None => Err(HostError::Indeterminate),
                };
                self.events.push(HostEvent::Proposal { token, result });
            }
        }
        for read in &ready.read_states {
            if self.reads.remove(&read.ctx).is_some() {
                self.waiting_reads.push((group, read.index, read.ctx));
            }
        }
        for (token, error) in ready.failed_reads {
            if self.reads.remove(&token).is_some() {
                self.events.push(HostEvent::Read {
                    token,
                    result: Err(error.into()),
                });
            }
        }
        if let Some(leader) = ready.leader {
            self.events.push(HostEvent::Leader { group, leader });
        }
        if ready.snapshot_wanted {
            let index = machine.persist().map_err(|e| e.to_string())?;
            if let Some(raft) = self.multi.group_mut(group) {
                raft.snapshot_taken(index);
            }
        }
        for peer in ready.send_snapshots {
            self.open_snapshot(group, peer);
        }
        Ok(())
    }

    /// Opens a snapshot source for `peer` of `group`, or reports the transfer failed.
    fn open_snapshot(&mut self, group: GroupId, peer: NodeId) {
        let machine = self.machines.get_mut(&group).expect("hosted");
        let raft = self.multi.group_mut(group).expect("hosted");
        let source = match machine.snapshot() {
            Ok(source) => source,
            Err(error) => {
                tracing::warn!(%group, %peer, %error, "could not open a snapshot");
                raft.report_snapshot(peer, Err(()));
                return;
            }
        };
        let Some(meta) = raft.snapshot_meta(source.index()) else {
            tracing::warn!(%group, %peer, index = source.index(), "a snapshot at an index the log cannot describe");
            raft.report_snapshot(peer, Err(()));
            return;
        };
        let message = raft.snapshot_message(peer, meta);
        self.events.push(HostEvent::SendSnapshot {
            group,
            message,
            source,
        });
    }

    /// Step 5: confirmed reads whose group has applied through their index.
    fn serve_reads(&mut self) {
        let machines = &self.machines;
        let events = &mut self.events;
        self.waiting_reads.retain(|&(group, index, token)| {
            let Some(machine) = machines.get(&group) else {
                return false;
            };
            if machine.applied_index() < index {
                return true;
            }
            events.push(HostEvent::Read {
                token,
                result: Ok(index),
            });
            false
        });
    }

    /// Why a group is not hosted: it failed, or it was never added (or was removed).
    fn missing(&self, group: GroupId) -> HostError {
        match self.failed.get(&group) {
            Some(error) => HostError::GroupFailed {
                group,
                error: error.clone(),
            },
            None => HostError::UnknownGroup(group),
        }
    }

    /// Stops a group whose log store or state machine failed, leaving the node's other
    /// groups running: its replica and state machine are dropped (so it is no longer
    /// ticked, stepped or persisted), its waiting proposals end
    /// [`HostError::Indeterminate`] (their entries may already be on followers, which can
    /// commit them), its reads fail, and requests for it answer [`HostError::GroupFailed`]
    /// until it is added again.
    fn fail_group(&mut self, group: GroupId, error: String) {
        tracing::error!(node = %self.id(), %group, %error, "a group failed and stops");
        self.multi.remove_group(group);
        if let Some(mut machine) = self.machines.remove(&group) {
            if let Some((_, staged)) = self.staged.remove(&group) {
                machine.discard_snapshot(staged);
            }
        }
        self.settle_group(
            group,
            HostError::GroupFailed {
                group,
                error: error.clone(),
            },
        );
        self.failed.insert(group, error.clone());
        self.events.push(HostEvent::GroupFailed { group, error });
    }

    /// Ends a departed group's proposals (indeterminate) and reads (`read_error`).
    fn settle_group(&mut self, group: GroupId, read_error: HostError) {
        for (_, (_, token, _)) in self.proposals.remove(&group).into_iter().flatten() {
            self.events.push(HostEvent::Proposal {
                token,
                result: Err(HostError::Indeterminate),
            });
        }
        let reads: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, g)| **g == group)
            .map(|(&token, _)| token)
            .collect();
        let waiting = self
            .waiting_reads
            .iter()
            .filter(|(g, _, _)| *g == group)
            .map(|&(_, _, token)| token);
        let tokens: Vec<u64> = reads.into_iter().chain(waiting).collect();
        for token in tokens {
            self.reads.remove(&token);
            self.events.push(HostEvent::Read {
                token,
                result: Err(read_error.clone()),
            });
        }
        self.waiting_reads.retain(|&(g, _, _)| g != group);
    }
}

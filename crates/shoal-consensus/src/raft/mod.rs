//! The Raft core: one replica of one group, as a sans-IO state machine.
//!
//! Inputs are method calls that take `now`: [`Raft::step`] (a message), [`Raft::tick`] (time
//! passes), [`Raft::propose`], [`Raft::read`], [`Raft::propose_conf_change`],
//! [`Raft::transfer_leader`], [`Raft::on_persisted`], [`Raft::snapshot_taken`] and
//! [`Raft::report_snapshot`]. Outputs
//! accumulate until the driver takes them with [`Raft::ready`]. The core never reads a clock,
//! sleeps, spawns or touches a socket; it reads its [`LogStore`] but never writes it.

mod election;
mod quiesce;
mod reads;
mod reconfig;
mod replication;
mod snapshots;

use crate::config::RaftConfig;
use crate::entry::{Entry, EntryPayload, LogIndex, Term};
use crate::error::StartError;
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::progress::{Progress, ReplicaStatus};
use crate::ready::{LeaderInfo, PersistedToken, ReadState, Ready};
use crate::snapshot::SnapshotMeta;
use crate::store::{HardState, LogStore};
use crate::ReadError;
use quiesce::QUIET_DEADLINE;
pub use reads::ReadMode;
use reads::ReadQueue;
use serde::{Deserialize, Serialize};
use shoal_core::{DetRng, GroupId, Instant, NodeId, Rng};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// A replica's role in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (learners are always followers).
    Follower,
    /// Asking whether it could win an election, without raising its term.
    PreCandidate,
    /// Campaigning in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Bad or stale input the core dropped, by kind. Each is also traced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStats {
    /// Messages for another group or another node.
    pub dropped_misaddressed: u64,
    /// Messages from a node that is not a member (unknown, or removed).
    pub dropped_unknown_sender: u64,
    /// Messages from an older term.
    pub stale_term: u64,
    /// Vote requests ignored because this node's leader is live (leader stickiness).
    pub votes_ignored_in_lease: u64,
    /// Appends that contradict a committed entry (only a broken leader sends them).
    pub conflicting_appends: u64,
    /// Commit indexes beyond what this node's log holds, clamped.
    pub commit_beyond_log: u64,
    /// Proposals refused.
    pub proposals_refused: u64,
    /// Messages with a term above [`crate::MAX_TERM`] or a log, commit or snapshot index
    /// above [`crate::MAX_INDEX`] (see [`Message::out_of_bounds`]): no honest peer sends one.
    pub out_of_bounds: u64,
}

/// A point-in-time view of a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: NodeId,
    /// Its group.
    pub group: GroupId,
    /// Its current term.
    pub term: Term,
    /// Its role.
    pub role: Role,
    /// The leader it follows (itself when leading).
    pub leader: Option<NodeId>,
    /// Whether the replica is quiesced ([`RaftConfig::quiesce`]).
    pub quiet: bool,
    /// The commit index.
    pub commit: LogIndex,
    /// The last index handed out for applying.
    pub applied: LogIndex,
    /// The last log index.
    pub last_index: LogIndex,
    /// The membership in force.
    pub membership: Membership,
    /// Per-follower replication status (leader only).
    pub replicas: Vec<ReplicaStatus>,
    /// The index of the latest snapshot taken or installed (the log starts after it, or
    /// a little before when trailing entries are kept).
    pub snapshot_index: LogIndex,
    /// Dropped input, by kind.
    pub stats: RaftStats,
}

/// A leadership hand-over in progress.
#[derive(Clone, Copy, Debug)]
struct Transfer {
    target: NodeId,
    deadline: Instant,
}

/// One replica of one Raft group. See the crate docs for the driver loop.
pub struct Raft<S: LogStore> {
    id: NodeId,
    group: GroupId,
    config: RaftConfig,
    log: RaftLog<S>,
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    /// The membership in force: the latest committed one.
    membership: Membership,
    /// Membership entries in the log but not yet committed, by index.
    pending_memberships: BTreeMap<LogIndex, Membership>,
    /// Committed memberships since the last snapshot (for snapshot metadata).
    membership_history: Vec<(LogIndex, Membership)>,
    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    rng: DetRng,
    now: Instant,
    election_deadline: Instant,
    heartbeat_deadline: Instant,
    quorum_check_deadline: Instant,
    /// When the leader was last heard from (leader stickiness).
    leader_contact: Option<Instant>,
    transfer: Option<Transfer>,
    /// (index, size) of entries this leader appended that are not committed yet.
    uncommitted: VecDeque<(LogIndex, u64)>,
    uncommitted_bytes: u64,
    /// New entries were appended since appends were last sent.
    broadcast_pending: bool,
    reads: ReadQueue,
    /// Reads forwarded to the leader and not answered yet, with when they were sent: a read
    /// whose request or answer was lost fails after an election timeout instead of staying
    /// here for ever.
    forwarded_reads: Vec<(u64, Instant)>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    failed_reads: Vec<(u64, ReadError)>,
    handed_hard_state: HardState,
    reported_leader: LeaderInfo,
    /// The index of the latest snapshot (taken or installed).
    snapshot_index: LogIndex,
    snapshot_wanted: bool,
    /// The wanted snapshot was asked for from outside ([`Raft::request_compaction`]): a
    /// follower compacts through it, keeping no trailing entries.
    compaction_requested: bool,
    /// Followers the driver is to stream a snapshot to.
    send_snapshots: Vec<NodeId>,
    compact: Option<(SnapshotMeta, LogIndex)>,
    /// Quiesced ([`RaftConfig::quiesce`]): a leader sends no heartbeats, a follower runs no
    /// election timer, until something wakes it.
    quiet: bool,
    stats: RaftStats,
}

impl<S: LogStore> Raft<S> {
    /// Writes the initial log of a new group into an empty store: one membership entry at
    /// index 1, term 1, committed. Every founding voter bootstraps with the same
    /// `membership`; nodes that join later start from an empty store and receive the log.
    pub fn bootstrap(store: &mut S, membership: Membership) -> Result<(), StartError> {
        if store.last_index() != 0 || store.hard_state() != HardState::default() {
            return Err(StartError::AlreadyInitialized);
        }
        store.append(&[Entry {
            index: 1,
            term: 1,
            payload: EntryPayload::Membership(membership),
        }])?;
        store.set_hard_state(HardState {
            term: 1,
            vote: None,
            commit: 1,
        })?;
        store.sync()?;
        Ok(())
    }

    /// Starts (or restarts) replica `id` of `group` over `store`. `applied` is the state
    /// machine's applied index (committed entries after it are handed out again); a state
    /// machine behind the store's snapshot must restore that snapshot first, since the log
    /// before it is gone. `seed` drives the election-timeout jitter.
    pub fn new(
        id: NodeId,
        group: GroupId,
        config: RaftConfig,
        store: S,
        applied: LogIndex,
        seed: u64,
        now: Instant,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let hard_state = store.hard_state();
        let snapshot = store.snapshot_meta();
        let log = RaftLog::new(store, applied.max(snapshot.index));
        let mut raft = Raft {
            id,
            group,
            log,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            membership: Membership::default(),
            pending_memberships: BTreeMap::new(),
            membership_history: Vec::new(),
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            rng: DetRng::from_seed(seed),
            now,
            election_deadline: now,
            heartbeat_deadline: now,
            quorum_check_deadline: now,
            leader_contact: None,
            transfer: None,
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            broadcast_pending: false,
            reads: ReadQueue::default(),
            forwarded_reads: Vec::new(),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            handed_hard_state: hard_state,
            reported_leader: LeaderInfo {
                id: None,
                term: hard_state.term,
            },
            snapshot_index: snapshot.index,
            snapshot_wanted: false,
            compaction_requested: false,
            send_snapshots: Vec::new(),
            compact: None,
            quiet: false,
            stats: RaftStats::default(),
            config,
        };
        if snapshot.index > 0 {
            raft.membership = snapshot.membership.clone();
            raft.membership_history
                .push((snapshot.index, snapshot.membership));
        }
        let committed = raft.log.committed;
        for entry in raft.log.stored_entries()? {
            if let EntryPayload::Membership(m) = entry.payload {
                if entry.index <= committed {
                    raft.membership = m.clone();
                    raft.membership_history.push((entry.index, m));
                } else {
                    raft.pending_memberships.insert(entry.index, m);
                }
            }
        }
        raft.reset_election_deadline();
        Ok(raft)
    }

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether this replica leads its group.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The leader this replica follows, if any (itself when leading).
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The commit index.
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }

    /// The last index handed out for applying.
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }

    /// The last log index.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The term of the entry at `index`, if the log holds it.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index).ok()
    }

    /// Entries in `lo..hi` (for inspection and tests).
    pub fn entries(&self, lo: LogIndex, hi: LogIndex) -> Vec<Entry> {
        self.log.entries(lo, hi, u64::MAX).unwrap_or_default()
    }

    /// The membership in force.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The configuration.
    pub fn config(&self) -> &RaftConfig {
        &self.config
    }

    /// The log store (for reads; writes are the driver's, per [`Ready`]).
    pub fn store(&self) -> &S {
        &self.log.store
    }

    /// The log store, for the driver to persist a ready.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.log.store
    }

    /// Dropped input so far.
    pub fn stats(&self) -> RaftStats {
        self.stats
    }

    /// A status report: role, positions, and per-follower replication when leading.
    pub fn status(&self) -> Status {
        let last = self.log.last_index();
        let replicas = self
            .progress
            .iter()
            .map(|(&node, pr)| ReplicaStatus {
                node,
                match_index: pr.match_index,
                next_index: pr.next_index,
                state: pr.state,
                lag_entries: last.saturating_sub(pr.match_index),
                lag: if pr.match_index >= last {
                    Duration::ZERO
                } else {
                    self.now.saturating_duration_since(pr.caught_up_at)
                },
                snapshot_for: pr
                    .snapshot
                    .map(|s| self.now.saturating_duration_since(s.since)),
                learner: self.membership.is_learner(node),
            })
            .collect();
        Status {
            id: self.id,
            group: self.group,
            term: self.term,
            role: self.role,
            leader: self.leader,
            quiet: self.quiet,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: last,
            membership: self.membership.clone(),
            replicas,
            snapshot_index: self.snapshot_index,
            stats: self.stats,
        }
    }

    /// The earliest time at which [`Raft::tick`] has something to do (an hour away while
    /// quiet: only an input wakes a quiet replica).
    pub fn next_deadline(&self) -> Instant {
        if self.quiet {
            return self.now + QUIET_DEADLINE;
        }
        match self.role {
            Role::Leader => {
                let mut at = self.heartbeat_deadline;
                if self.config.check_quorum {
                    at = at.min(self.quorum_check_deadline);
                }
                if let Some(t) = self.transfer {
                    at = at.min(t.deadline);
                }
                at
            }
            _ => self.election_deadline,
        }
    }

    /// Lets time pass: elections, heartbeats, quorum checks and transfer timeouts.
    pub fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        if self.quiet {
            return;
        }
        if self.role == Role::Leader {
            if now >= self.heartbeat_deadline {
                self.heartbeat_deadline = now + self.config.heartbeat_interval;
                if self.may_quiesce() {
                    return self.quiesce();
                }
                self.broadcast_heartbeat();
            }
            if self.config.check_quorum && now >= self.quorum_check_deadline {
                self.quorum_check_deadline = now + self.config.election_timeout;
                if !self.check_quorum_active() {
                    tracing::info!(id = %self.id, term = self.term, "leader lost its quorum; stepping down");
                    self.become_follower(self.term, None);
                    return;
                }
            }
            if self.transfer.is_some_and(|t| now >= t.deadline) {
                tracing::info!(id = %self.id, "leadership transfer timed out");
                self.transfer = None;
            }
        } else {
            self.expire_forwarded_reads();
            if now >= self.election_deadline {
                if self.membership.is_voter(self.id) {
                    self.start_campaign(false);
                } else {
                    self.reset_election_deadline();
                }
            }
        }
    }

    /// Handles a message from another replica of the group. Messages for another group or
    /// node, from a non-member, or with a term or index beyond [`crate::MAX_TERM`] and
    /// [`crate::MAX_INDEX`] are dropped and counted in [`RaftStats`].
    pub fn step(&mut self, now: Instant, m: Message) {
        self.now = self.now.max(now);
        if m.group != self.group || m.to != self.id || m.from == self.id {
            self.stats.dropped_misaddressed += 1;
            tracing::debug!(id = %self.id, from = %m.from, "dropped a misaddressed message");
            return;
        }
        // Before anything reads the message: a term or index this large would wrap the term
        // (an election safety break) or overflow the log's `index + 1` arithmetic later.
        if let Some(field) = m.out_of_bounds() {
            self.stats.out_of_bounds += 1;
            tracing::warn!(id = %self.id, from = %m.from, kind = m.body.name(), field, "dropped a message with a term or index beyond the bounds");
            return;
        }
        if !self.accepts_from(m.from, m.config_index) {
            // A removed leader still in its old term is told about the newer one, or it
            // would lead its stale configuration forever (without check-quorum).
            if m.term < self.term {
                self.tell_stale_leader(&m);
            }
            self.stats.dropped_unknown_sender += 1;
            tracing::debug!(id = %self.id, from = %m.from, kind = m.body.name(), "dropped a message from a non-member");
            return;
        }
        // A quiet leader wakes for anything but the answers to its last heartbeats (a vote
        // request from a restarted replica, say, gets it heartbeating again, which brings
        // that replica back under it). A quiet follower stays quiet for vote requests (its
        // leader is live as far as it knows) and wakes when its leader speaks.
        if self.quiet
            && self.role == Role::Leader
            && !matches!(m.body, MessageBody::HeartbeatResponse { .. })
        {
            self.wake();
        }
        // A quiet follower asked for a vote by its own leader: the leader restarted (it
        // campaigns, so it no longer leads), faster than a failure detector could tell.
        if self.quiet
            && self.role != Role::Leader
            && self.leader == Some(m.from)
            && matches!(
                m.body,
                MessageBody::PreVote { .. } | MessageBody::Vote { .. }
            )
        {
            self.peer_down(m.from);
        }
        if !self.step_term(&m) {
            return;
        }
        let from = m.from;
        match m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_pre_vote(from, m.term, last_index, last_term),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote(from, last_index, last_term),
            MessageBody::PreVoteResponse { granted } => {
                if self.role == Role::PreCandidate {
                    self.record_vote(from, granted);
                }
            }
            MessageBody::VoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.record_vote(from, granted);
                }
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                sent_at,
            } => {
                if self.follow(from) {
                    self.handle_append(from, prev_index, prev_term, &entries, commit, sent_at);
                }
            }
            MessageBody::Heartbeat {
                commit,
                read_round,
                sent_at,
            } => {
                if self.follow(from) {
                    self.handle_heartbeat(from, commit, read_round, sent_at);
                }
            }
            MessageBody::Snapshot { meta } => {
                if self.follow(from) {
                    self.handle_snapshot(from, meta);
                }
            }
            MessageBody::AppendResponse { result, sent_at } => {
                if self.role == Role::Leader {
                    self.handle_append_response(from, result, sent_at);
                }
            }
            MessageBody::HeartbeatResponse {
                read_round,
                sent_at,
            } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(from, read_round, sent_at);
                }
            }
            MessageBody::TimeoutNow => {
                if self.membership.is_voter(self.id) && self.role != Role::Leader {
                    tracing::info!(id = %self.id, term = self.term, "leadership handed over; campaigning");
                    self.start_campaign(true);
                }
            }
            MessageBody::ReadIndex { ctx } => self.handle_forwarded_read(from, ctx),
            MessageBody::ReadIndexResponse { ctx, index } => {
                self.handle_read_index_response(ctx, index)
            }
            MessageBody::Quiesce { commit } => {
                if self.follow(from) {
                    self.handle_quiesce(from, commit);
                }
            }
        }
    }

    /// The driver persisted a ready (see [`Ready::persisted`]).
    pub fn on_persisted(&mut self, token: PersistedToken) {
        if let Some(index) = token.snapshot {
            self.log.snapshot_persisted(index);
        }
        if let Some((index, term)) = token.last_entry {
            if self.log.entries_persisted(index, term) && self.role == Role::Leader {
                self.maybe_commit();
            }
        }
    }

    /// Whether [`Raft::ready`] has anything for the driver.
    pub fn has_ready(&self) -> bool {
        !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || self.broadcast_pending
            || self.reads.round_needed()
            || self.log.last_index() > self.log.handed()
            || self.hard_state() != self.handed_hard_state
            || self.log.has_unapplied_committed()
            || !self.read_states.is_empty()
            || !self.failed_reads.is_empty()
            || self.leader_info() != self.reported_leader
            || self.snapshot_wanted
            || !self.send_snapshots.is_empty()
            || self.compact.is_some()
            || (self.role == Role::Leader && self.commit_to_propagate())
    }

    /// Takes everything the driver must do now (see [`Ready`] for the order).
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            if self.broadcast_pending {
                self.broadcast_pending = false;
                self.broadcast_append();
            }
            self.send_read_round();
            self.propagate_commit();
        }
        if self.log.applied.saturating_sub(self.snapshot_index)
            >= self.config.snapshot_after_entries
        {
            self.snapshot_wanted = true;
        }
        let (snapshot, entries) = self.log.take_unpersisted();
        let hard_state = self.hard_state();
        let hard_state = (hard_state != self.handed_hard_state).then(|| {
            self.handed_hard_state = hard_state;
            hard_state
        });
        let leader_info = self.leader_info();
        let leader = (leader_info != self.reported_leader).then(|| {
            self.reported_leader = leader_info;
            leader_info
        });
        let persisted = PersistedToken {
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot: snapshot.as_ref().map(|s| s.index),
        };
        Ready {
            messages: std::mem::take(&mut self.messages),
            snapshot,
            entries,
            hard_state,
            compact: self.compact.take(),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed: self.log.take_committed(self.config.max_apply_bytes),
            read_states: std::mem::take(&mut self.read_states),
            failed_reads: std::mem::take(&mut self.failed_reads),
            leader,
            snapshot_wanted: self.snapshot_wanted,
            send_snapshots: std::mem::take(&mut self.send_snapshots),
            persisted,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    fn leader_info(&self) -> LeaderInfo {
        LeaderInfo {
            id: self.leader,
            term: self.term,
        }
    }

    /// Whether `node` may send to this replica: a member of the membership in force or of
    /// one in the log; the leader it follows (a leader that just removed itself hands over
    /// with its last messages); or a node whose membership is newer than this replica's
    /// (`config_index`: this replica is behind and does not know it yet). A replica that
    /// knows no membership (it is joining) takes messages from anyone.
    fn accepts_from(&self, node: NodeId, config_index: LogIndex) -> bool {
        self.membership.is_empty()
            || self.leader == Some(node)
            || self.membership.contains(node)
            || self.pending_memberships.values().any(|m| m.contains(node))
            || config_index > self.membership_index()
    }

    /// The log index of the membership in force (0 before any).
    fn membership_index(&self) -> LogIndex {
        self.membership_history
            .last()
            .map_or(0, |&(index, _)| index)
    }

    /// Applies the term rules (§5.1) before the message itself. Returns whether to go on.
    fn step_term(&mut self, m: &Message) -> bool {
        use MessageBody as B;
        if m.term > self.term {
            let vote_request = match m.body {
                B::PreVote { .. } => true,
                B::Vote { transfer, .. } => !transfer,
                _ => false,
            };
            if vote_request && self.in_lease() {
                self.stats.votes_ignored_in_lease += 1;
                tracing::debug!(id = %self.id, from = %m.from, "ignored a vote request: the leader is live");
                return false;
            }
            match m.body {
                // A pre-vote carries a term the sender has not entered; granted pre-votes
                // come back with it.
                B::PreVote { .. } | B::PreVoteResponse { granted: true } => {}
                B::Append { .. } | B::Heartbeat { .. } | B::Snapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
            return true;
        }
        if m.term < self.term {
            self.stats.stale_term += 1;
            match m.body {
                B::PreVote { .. } => self.send(m.from, B::PreVoteResponse { granted: false }),
                _ => self.tell_stale_leader(m),
            }
            return false;
        }
        true
    }

    /// Answers a leader's message from an older term with this replica's term, so the stale
    /// leader steps down (with pre-vote and check-quorum, or once removed from the group, it
    /// would otherwise never hear of the newer term).
    fn tell_stale_leader(&mut self, m: &Message) {
        if matches!(
            m.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. }
        ) {
            self.send(
                m.from,
                MessageBody::HeartbeatResponse {
                    read_round: 0,
                    sent_at: 0,
                },
            );
        }
    }

    /// An append, heartbeat or snapshot from the leader of the current term: follow it.
    /// Returns false if this replica is itself the leader of the term (which cannot happen
    /// with a correct peer).
    fn follow(&mut self, leader: NodeId) -> bool {
        match self.role {
            Role::Leader => {
                tracing::error!(id = %self.id, from = %leader, term = self.term, "two leaders in one term; ignoring");
                return false;
            }
            Role::Candidate | Role::PreCandidate => self.become_follower(self.term, Some(leader)),
            Role::Follower => {
                if self.leader != Some(leader) {
                    self.set_leader(Some(leader));
                }
            }
        }
        self.leader_contact = Some(self.now);
        self.quiet = false;
        self.reset_election_deadline();
        true
    }

    /// Whether this replica is bound to its current leader (leader stickiness).
    fn in_lease(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        match self.role {
            Role::Leader => true,
            // Quiet, a follower's leader is live until membership says otherwise.
            _ if self.quiet => self.leader.is_some(),
            _ => {
                self.leader.is_some()
                    && self
                        .leader_contact
                        .is_some_and(|t| self.now < t + self.config.election_timeout)
            }
        }
    }

    fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader != leader {
            self.leader = leader;
            self.fail_forwarded_reads();
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        let was_leader = self.role == Role::Leader;
        self.role = Role::Follower;
        self.quiet = false;
        self.set_leader(leader);
        self.leader_contact = leader.map(|_| self.now);
        self.votes.clear();
        self.transfer = None;
        if was_leader {
            self.progress.clear();
            self.uncommitted.clear();
            self.uncommitted_bytes = 0;
            self.broadcast_pending = false;
            let leader = self.leader;
            for (ctx, from) in self.reads.drain() {
                self.fail_read(ctx, from, ReadError::NotLeader { leader });
            }
        }
        self.reset_election_deadline();
    }

    fn reset_election_deadline(&mut self) {
        let base = self.config.election_timeout;
        let jitter = self
            .rng
            .duration_between(Duration::ZERO, base - Duration::from_nanos(1));
        self.election_deadline = self.now + base + jitter;
    }

    /// Queues a message. A leader's go out at once; anything else is sent after the ready
    /// it belongs to is persisted, because votes and acknowledgements promise what is on
    /// disk.
    fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_in_term(to, term, body);
    }

    fn send_in_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let message = Message {
            group: self.group,
            from: self.id,
            to,
            term,
            config_index: self.membership_index(),
            body,
        };
        if self.role == Role::Leader {
            self.messages.push(message);
        } else {
            self.persisted_messages.push(message);
        }
    }

    /// The other voters of the membership in force (both halves when joint), in id order.
    fn other_voters(&self) -> Vec<NodeId> {
        let mut voters: Vec<NodeId> = self.membership.voters().iter().copied().collect();
        voters.extend(self.membership.outgoing());
        voters.sort_unstable();
        voters.dedup();
        voters.retain(|&n| n != self.id);
        voters
    }
}

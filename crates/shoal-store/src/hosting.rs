//! Opening a node's range groups from its engine and WAL: bootstrapping the first ranges,
//! recovering after a restart, and building each group's Raft core and state machine. All
//! of it is synchronous and does no I/O but the engine's and the WAL's; the tokio store
//! ([`super::Store`]) runs it on the blocking pool and hands the groups to its driver, the
//! whole-store simulation runs it in virtual time.

use super::events::RangeEvents;
use super::machine::{
    decode_descriptor, membership_of, replicas_of, RangeMachine, RANGE_INIT_INDEX, RANGE_INIT_TERM,
};
use super::meta::{self, meta_keys, user_keys, META_RANGE};
use super::node::{StoreError, FIRST_RANGE};
use super::shared::Shared;
use shoal_consensus::{
    HardState, LogStore, Membership, Raft, RaftConfig, SnapshotMeta, Wal, WalStore,
};
use shoal_core::{
    codec, GroupId, Instant, KeyRange, NodeId, RangeDescriptor, RangeEnd, RangeId,
    ReplicaDescriptor,
};
use shoal_storage::{Durability, Engine, RangeInfo, RangeStatus, WriteBatch};
use std::sync::Arc;

/// What opening a group needs: the node, its Raft settings, engine, WAL and shared state.
pub(crate) struct GroupOpener<'a> {
    /// This node.
    pub id: NodeId,
    /// Every group's Raft settings.
    pub raft: &'a RaftConfig,
    /// The node's engine.
    pub engine: &'a Arc<Engine>,
    /// The node's WAL.
    pub wal: &'a Wal,
    /// What the machines and the store share.
    pub shared: &'a Arc<Shared>,
    /// Where the machines report splits.
    pub events: &'a RangeEvents,
    /// Target bytes per snapshot chunk.
    pub chunk_bytes: usize,
}

/// A group to start after a restart.
#[derive(Debug)]
pub(crate) enum Resume {
    /// A range the engine holds: started from its applied index.
    Range {
        /// The range.
        id: RangeId,
        /// Its span in the engine.
        span: KeyRange,
        /// Its descriptor from the engine tag (`None` before its first entry applied).
        descriptor: Option<RangeDescriptor>,
    },
    /// A group whose log is here but whose data is not (a replica created on demand that
    /// had not received its snapshot): it waits for one again.
    Uninitialized(RangeId),
}

/// Brings a node's engine and WAL to a state to resume from after a restart, and says which
/// groups to start. A snapshot a crash left staged is discarded (nothing acknowledged it;
/// the leader sends another). A bootstrap a crash cut before any range's log started (no
/// log at all, and nothing in the engine but the founding ranges at or before their
/// starting point: nothing was ever acknowledged) is undone, so bootstrapping can run
/// again.
pub(crate) fn recover(engine: &Engine, wal: &Wal) -> Result<Vec<Resume>, StoreError> {
    for snapshot in engine.staged_snapshots() {
        tracing::info!(range = %snapshot.range, "discarding a snapshot a crash left staged");
        engine.discard_staged(snapshot.range)?;
    }
    let logs = wal.groups();
    let all = engine.ranges();
    let founding = |r: &RangeInfo| {
        r.applied_index <= RANGE_INIT_INDEX
            && ((r.id == META_RANGE && r.span == meta_keys())
                || (r.id == FIRST_RANGE && r.span == user_keys()))
    };
    let half_bootstrapped = logs.is_empty() && all.iter().all(founding);
    let mut resume = Vec::new();
    for info in all {
        if half_bootstrapped {
            tracing::info!(range = %info.id, "removing a range a crash left half-bootstrapped");
            engine.remove_range(info.id)?;
            continue;
        }
        if info.status != RangeStatus::Active {
            continue;
        }
        resume.push(Resume::Range {
            id: info.id,
            descriptor: decode_descriptor(&info.tag).map_err(StoreError::Corrupt)?,
            span: info.span,
        });
    }
    for group in logs {
        if !resume
            .iter()
            .any(|r| matches!(r, Resume::Range { id, .. } if GroupId::from(*id) == group))
        {
            resume.push(Resume::Uninitialized(group.into()));
        }
    }
    Ok(resume)
}

/// Creates the cluster's first ranges in the engine and the WAL: the meta range (keys from
/// `0xff` on) and the first user range (every key below), replicated by `voters`, the meta
/// range holding both descriptors and the allocator. Both engine ranges are written before
/// either log starts, so [`recover`] undoes a crash part-way. Refused if the node holds
/// ranges. Returns the descriptors (meta first) and the founding membership.
pub(crate) fn bootstrap(
    engine: &Engine,
    wal: &Wal,
    voters: &[NodeId],
    splits: &[Vec<u8>],
) -> Result<(Vec<RangeDescriptor>, Membership), StoreError> {
    if !engine.ranges().is_empty() || !wal.groups().is_empty() {
        return Err(StoreError::AlreadyBootstrapped);
    }
    let replicas: Vec<ReplicaDescriptor> = voters
        .iter()
        .map(|&n| ReplicaDescriptor::voter(n))
        .collect();
    let meta_descriptor = RangeDescriptor::new(META_RANGE, meta_keys(), replicas.clone())
        .map_err(|e| StoreError::Raft(e.to_string()))?;
    let mut descriptors = vec![meta_descriptor];
    for (i, span) in user_spans(splits, engine.config().max_key_len)?
        .into_iter()
        .enumerate()
    {
        let id = RangeId::new(FIRST_RANGE.get() + i as u64);
        descriptors.push(
            RangeDescriptor::new(id, span, replicas.clone())
                .map_err(|e| StoreError::Raft(e.to_string()))?,
        );
    }
    let membership = Membership::new(voters.iter().copied());
    let tag =
        |d: &RangeDescriptor| codec::encode(d).map_err(|e| StoreError::Corrupt(e.to_string()));
    let next_id = FIRST_RANGE.get() + descriptors.len() as u64 - 1;
    let mut meta_batch =
        meta::bootstrap_batch(&descriptors, next_id).map_err(StoreError::Corrupt)?;
    meta_batch.set_tag(tag(&descriptors[0])?);
    for d in &descriptors {
        engine.create_range(d.id, d.range.clone(), RANGE_INIT_INDEX - 1)?;
    }
    engine.apply(META_RANGE, RANGE_INIT_INDEX, &meta_batch)?;
    for d in &descriptors[1..] {
        let mut batch = WriteBatch::new();
        batch.set_tag(tag(d)?);
        engine.apply(d.id, RANGE_INIT_INDEX, &batch)?;
    }
    // The starting point is never replayed from a log: it must be on disk before the logs
    // that start after it.
    engine.persist(Durability::Sync)?;
    for d in &descriptors {
        write_range_log_start(&mut wal.store(d.id.into()), membership.clone())?;
    }
    wal.store(META_RANGE.into()).sync()?;
    Ok((descriptors, membership))
}

/// The user key space (below `0xff`) cut at `splits`: one span per range. The split keys
/// must be non-empty, strictly ascending, user keys of at most `max_key_len` bytes.
fn user_spans(splits: &[Vec<u8>], max_key_len: usize) -> Result<Vec<KeyRange>, StoreError> {
    let refuse = |why: String| Err(StoreError::Config(why));
    let mut spans = Vec::with_capacity(splits.len() + 1);
    let mut start: Vec<u8> = Vec::new();
    for key in splits {
        if key.is_empty() || meta::is_system_key(key) || key.len() > max_key_len {
            return refuse(format!(
                "a bootstrap split key must be a non-empty user key of at most {max_key_len} bytes"
            ));
        }
        if *key <= start {
            return refuse("bootstrap split keys must be strictly ascending".to_string());
        }
        spans.push(
            KeyRange::new(start.clone(), RangeEnd::Key(key.clone()))
                .map_err(|e| StoreError::Config(e.to_string()))?,
        );
        start = key.clone();
    }
    spans.push(
        KeyRange::new(start, user_keys().end().clone())
            .map_err(|e| StoreError::Config(e.to_string()))?,
    );
    Ok(spans)
}

/// Starts a range's log (a founding range's, or a split's right half's): empty, after a
/// snapshot point at [`RANGE_INIT_INDEX`] with the founding or parent membership (every
/// replica does the same, so their logs agree from the start), synced.
pub(crate) fn start_range_log(
    store: &mut WalStore,
    membership: Membership,
) -> Result<(), StoreError> {
    write_range_log_start(store, membership)?;
    store.sync()?;
    Ok(())
}

/// [`start_range_log`] without the sync: the group's first round that acknowledges anything
/// syncs the WAL first, and a crash before that leaves no log for the range, which
/// [`GroupOpener::open_range`] starts again.
fn write_range_log_start(store: &mut WalStore, membership: Membership) -> Result<(), StoreError> {
    let hard_state = store.hard_state();
    store.install_snapshot(SnapshotMeta {
        index: RANGE_INIT_INDEX,
        term: RANGE_INIT_TERM,
        membership,
    })?;
    store.set_hard_state(HardState {
        term: hard_state.term.max(RANGE_INIT_TERM),
        vote: hard_state.vote,
        commit: RANGE_INIT_INDEX,
    })?;
    Ok(())
}

/// Makes a split this node applied durable and starts its right half's log. The split was
/// applied without a sync (inside a round every group waits for); the right half's log must
/// not outlive it, or a crash could leave a log for a range the engine no longer has.
pub(crate) fn start_split_half(
    engine: &Engine,
    wal: &Wal,
    right: RangeId,
    membership: Membership,
) -> Result<(), StoreError> {
    engine.persist(Durability::Sync)?;
    write_range_log_start(&mut wal.store(right.into()), membership)
}

/// Keys a background recount reads between two pauses.
const RECOUNT_STEP: usize = 1024;
/// How long a background recount pauses every [`RECOUNT_STEP`] keys.
const RECOUNT_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Counts the stats a split estimated for its halves (see shoal-storage's
/// `SplitStats::Estimated`), pausing every [`RECOUNT_STEP`] keys (`pause`: sleep for
/// [`RECOUNT_PAUSE`] on a thread of the store's own, nothing in the simulation) so that
/// every replica counting at once does not take the processor from the node's rounds. A
/// half that moved on meanwhile (split again, took a snapshot, left) keeps its estimate
/// until its next recount.
pub(crate) fn recount_halves(engine: &Engine, left: RangeId, right: RangeId, pause: bool) {
    recount(engine, &[left, right], pause);
}

/// Counts the stats of `ranges` exactly (see [`recount_halves`]): after a restart, those
/// a split left estimated whose count had not finished.
pub(crate) fn recount(engine: &Engine, ranges: &[RangeId], pause: bool) {
    let mut pace = || {
        if pause {
            std::thread::sleep(RECOUNT_PAUSE);
        }
    };
    for &range in ranges {
        if let Err(e) = engine.recount_stats_paced(range, RECOUNT_STEP, &mut pace) {
            tracing::debug!(%range, error = %e, "could not recount a split half's stats");
        }
    }
}

/// Whether this node should host a replica, waiting for its snapshot, of a range it does not
/// host but hears of (a replica being added, or the right half of a split the others applied
/// first): `descriptor` names `node`, and no range hosted here overlaps its span (a parent
/// that has not applied the split yet still does, and will start the half itself).
pub(crate) fn wants_replica(descriptor: &RangeDescriptor, node: NodeId, engine: &Engine) -> bool {
    descriptor.role_of(node).is_some() && engine.is_free(&descriptor.range)
}

fn seed(id: NodeId, range: RangeId) -> u64 {
    id.get().wrapping_mul(0x9e37_79b9) ^ range.get()
}

impl GroupOpener<'_> {
    /// The group of a range the engine hosts, from its applied index. `descriptor` and
    /// `membership` are known for a range just bootstrapped or split; otherwise the
    /// membership comes from the log and the descriptor from the engine's tag (or, for a
    /// range whose first entry has not applied yet, from its span and the log's membership).
    pub(crate) fn open_range(
        &self,
        range: RangeId,
        span: KeyRange,
        descriptor: Option<RangeDescriptor>,
        membership: Option<Membership>,
        now: Instant,
    ) -> Result<(Raft<WalStore>, RangeMachine), StoreError> {
        let applied = self.engine.range(range)?.applied_index;
        let mut store = self.wal.store(range.into());
        if applied == RANGE_INIT_INDEX
            && store.last_index() == 0
            && store.snapshot_meta().index == 0
        {
            // The right half of a split whose log was not started before a crash.
            let membership = membership
                .clone()
                .or_else(|| descriptor.as_ref().map(membership_of))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("split range {range} without a descriptor"))
                })?;
            start_range_log(&mut store, membership)?;
        }
        let raft = Raft::new(
            self.id,
            range.into(),
            self.raft.clone(),
            store,
            applied,
            seed(self.id, range),
            now,
        )
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        let membership = membership.unwrap_or_else(|| {
            raft.snapshot_meta(applied)
                .map(|m| m.membership)
                .unwrap_or_else(|| raft.membership().clone())
        });
        let descriptor = match descriptor {
            Some(d) => d,
            None => RangeDescriptor::new(range, span, replicas_of(&membership))
                .map_err(|e| StoreError::Corrupt(format!("range {range}: {e}")))?,
        };
        let machine = RangeMachine::hosted(
            self.engine.clone(),
            descriptor,
            membership,
            self.shared.clone(),
            self.events.clone(),
            self.chunk_bytes,
        )?;
        Ok((raft, machine))
    }

    /// The group of a replica that holds no data yet (this node was named a member of a
    /// group it does not host): its log is empty (or as a crash left it) and it waits for a
    /// snapshot from the leader.
    pub(crate) fn open_uninitialized(
        &self,
        range: RangeId,
        now: Instant,
    ) -> Result<(Raft<WalStore>, RangeMachine), StoreError> {
        let raft = Raft::new(
            self.id,
            range.into(),
            self.raft.clone(),
            self.wal.store(range.into()),
            0,
            seed(self.id, range),
            now,
        )
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        let machine = RangeMachine::uninitialized(
            self.engine.clone(),
            range,
            self.shared.clone(),
            self.events.clone(),
            self.chunk_bytes,
        );
        Ok((raft, machine))
    }
}

//! A range's state machine: the range inside the node's one shoal-storage engine.
//!
//! Every applied entry commits to the engine together with the range's applied index (and,
//! when it changes, the range's descriptor, kept as the engine range's tag), so after a
//! crash the engine says where to replay the log from. Snapshots are the engine's own
//! streams: read lazily from a point-in-time view on the leader, written into a staged ingest
//! on the follower and installed atomically.

use super::command::{Applied, Command, Rejection, WriteOp, WriteOutcome};
use super::events::{RangeEvent, RangeEvents, SplitDone};
use super::meta::{self, MetaOp, META_RANGE};
use super::shared::Shared;
use bytes::Bytes;
use shoal_consensus::{
    Entry, EntryPayload, LogIndex, MachineError, Membership, SnapshotMeta, SnapshotSink,
    SnapshotSource, StateMachine,
};
use shoal_core::{codec, RangeDescriptor, RangeId, ReplicaDescriptor};
use shoal_storage::{
    Durability, Engine, Ingest, SnapshotStream, SplitMode, SplitSpec, SplitStats, StagedSnapshot,
    StorageError, WriteBatch,
};
use std::sync::Arc;

/// The applied index every range starts at (the first, bootstrapped, and each split's right
/// half): its log begins after it, so a replica without the data (a new replica, or one that
/// has not applied the split itself) cannot be brought up from the log and is sent a
/// snapshot instead (TiKV's `RAFT_INIT_LOG_INDEX`).
pub const RANGE_INIT_INDEX: LogIndex = 5;
/// The term of that starting point.
pub const RANGE_INIT_TERM: u64 = 5;

/// The largest descriptor kept as a range's tag.
const MAX_TAG_BYTES: usize = 64 << 10;

/// One range's state machine.
pub struct RangeMachine {
    engine: Arc<Engine>,
    range: RangeId,
    /// The range as it stands at the applied index; `None` until a replica created on
    /// demand receives its first snapshot.
    descriptor: Option<RangeDescriptor>,
    /// The Raft membership in force at the applied index.
    membership: Membership,
    applied: LogIndex,
    /// The engine range's tag does not hold the descriptor yet (a crash came before the
    /// first entry that writes it): the next commit writes it.
    tag_missing: bool,
    shared: Arc<Shared>,
    /// Where splits applied here are reported to the store.
    events: RangeEvents,
    chunk_bytes: usize,
}

impl RangeMachine {
    /// The machine of a range the engine hosts, at its applied index, with `membership` the
    /// group's membership at that index.
    pub(crate) fn hosted(
        engine: Arc<Engine>,
        descriptor: RangeDescriptor,
        membership: Membership,
        shared: Arc<Shared>,
        events: RangeEvents,
        chunk_bytes: usize,
    ) -> Result<Self, StorageError> {
        let info = engine.range(descriptor.id)?;
        shared.set_descriptor(descriptor.clone());
        Ok(Self {
            engine,
            range: descriptor.id,
            descriptor: Some(descriptor),
            membership,
            applied: info.applied_index,
            tag_missing: info.tag.is_empty(),
            shared,
            events,
            chunk_bytes,
        })
    }

    /// The machine of a replica created on demand that holds no data yet: it waits for a
    /// snapshot (every range's log starts after [`RANGE_INIT_INDEX`], so it gets one).
    pub(crate) fn uninitialized(
        engine: Arc<Engine>,
        range: RangeId,
        shared: Arc<Shared>,
        events: RangeEvents,
        chunk_bytes: usize,
    ) -> Self {
        Self {
            engine,
            range,
            descriptor: None,
            membership: Membership::default(),
            applied: 0,
            tag_missing: false,
            shared,
            events,
            chunk_bytes,
        }
    }

    /// The range's descriptor at the applied index.
    pub fn descriptor(&self) -> Option<&RangeDescriptor> {
        self.descriptor.as_ref()
    }

    fn failed(e: impl std::fmt::Display) -> MachineError {
        MachineError::Failed(e.to_string())
    }

    /// Commits `batch` (with `descriptor` as the new tag, if any) at `index`. Deterministic
    /// refusals of the batch become rejections, applied as an empty batch.
    fn commit(
        &mut self,
        index: LogIndex,
        mut batch: WriteBatch,
    ) -> Result<Result<Vec<WriteOutcome>, Rejection>, MachineError> {
        if self.tag_missing && batch.tag().is_none() {
            if let Some(descriptor) = &self.descriptor {
                batch.set_tag(encode_descriptor(descriptor)?);
            }
        }
        let result = self.engine.apply(self.range, index, &batch);
        let rejection = match result {
            Ok(outcomes) => {
                self.applied = index;
                self.tag_missing &= batch.tag().is_none();
                return Ok(Ok(outcomes));
            }
            Err(StorageError::KeyOutsideRange { .. }) => Rejection::KeyOutsideRange(Box::new(
                self.descriptor
                    .clone()
                    .ok_or_else(|| Self::failed("no descriptor"))?,
            )),
            Err(e @ (StorageError::KeyTooLarge { .. } | StorageError::ValueTooLarge { .. })) => {
                Rejection::TooLarge(e.to_string())
            }
            Err(StorageError::VersionsExhausted(_)) => Rejection::VersionsExhausted,
            // Any other refusal of the input is the same on every replica: a rejection too,
            // never a failed group.
            Err(e) if e.is_refusal() => Rejection::Refused(e.to_string()),
            Err(e) => return Err(Self::failed(e)),
        };
        let mut empty = WriteBatch::new();
        if let Some(tag) = batch.tag() {
            empty.set_tag(tag.to_vec());
        }
        self.engine
            .apply(self.range, index, &empty)
            .map_err(Self::failed)?;
        self.applied = index;
        self.tag_missing &= empty.tag().is_none();
        Ok(Err(rejection))
    }

    fn apply_write(&mut self, index: LogIndex, ops: Vec<WriteOp>) -> Result<Applied, MachineError> {
        let mut batch = WriteBatch::with_capacity(ops.len());
        for op in ops {
            batch.push(op);
        }
        Ok(match self.commit(index, batch)? {
            Ok(outcomes) => Applied::Written(outcomes),
            Err(rejection) => Applied::Rejected(rejection),
        })
    }

    fn apply_split(
        &mut self,
        index: LogIndex,
        at: Vec<u8>,
        right: RangeId,
    ) -> Result<Applied, MachineError> {
        let descriptor = self
            .descriptor
            .clone()
            .ok_or_else(|| Self::failed("no descriptor"))?;
        let refuse = |this: &mut Self, why: String| -> Result<Applied, MachineError> {
            this.commit(index, WriteBatch::new())?
                .map_err(|r| Self::failed(format!("an empty batch was refused: {r}")))?;
            Ok(Applied::Rejected(Rejection::InvalidSplit(why)))
        };
        if self.membership.is_joint() {
            return refuse(self, "a membership change is under way".into());
        }
        if self.range == META_RANGE {
            return refuse(self, "the meta range does not split".into());
        }
        if right == self.range || right == META_RANGE || self.engine.range(right).is_ok() {
            return refuse(self, format!("range {right} already exists here"));
        }
        let (left_desc, right_desc) = match descriptor.split(&at, right) {
            Ok(halves) => halves,
            Err(e) => return refuse(self, e.to_string()),
        };
        let spec = SplitSpec {
            at,
            new_range: right,
            index,
            new_range_applied: RANGE_INIT_INDEX,
            left_tag: Some(encode_descriptor(&left_desc)?),
            right_tag: Some(encode_descriptor(&right_desc)?),
        };
        // Nothing read, nothing synced: the split costs the same for a range of any size,
        // inside a round every group on the node waits for. The store syncs it before the
        // right half's log starts, and counts the halves' stats afterwards.
        let mode = SplitMode {
            stats: SplitStats::Estimated,
            durability: Durability::Buffered,
        };
        match self.engine.split_with(self.range, &spec, mode) {
            Ok(()) => {}
            Err(StorageError::InvalidSplitMerge(why)) => return refuse(self, why),
            // A split key the engine refuses (empty, too long) is refused on every replica.
            Err(e) if e.is_refusal() => return refuse(self, e.to_string()),
            Err(e) => return Err(Self::failed(e)),
        }
        self.applied = index;
        self.descriptor = Some(left_desc.clone());
        self.shared.set_descriptor(left_desc.clone());
        // A closed channel means the store is stopping; after a restart, recovery resumes
        // the ranges the engine holds (`hosting::recover`).
        let _ = self.events.send(RangeEvent::Split(SplitDone {
            parent: self.range,
            right: right_desc.clone(),
            membership: self.membership.clone(),
        }));
        Ok(Applied::Split {
            left: Box::new(left_desc),
            right: Box::new(right_desc),
        })
    }

    fn apply_meta(&mut self, index: LogIndex, op: MetaOp) -> Result<Applied, MachineError> {
        let (batch, answer) = match meta::evaluate(&self.engine, self.range, op) {
            Ok(Ok((batch, answer))) => (batch, Ok(answer)),
            Ok(Err(rejection)) => (WriteBatch::new(), Err(rejection)),
            Err(e) => return Err(Self::failed(e)),
        };
        let committed = self.commit(index, batch)?;
        Ok(match (committed, answer) {
            (Ok(_), Ok(answer)) => Applied::Meta(answer),
            (Ok(_), Err(rejection)) | (Err(rejection), _) => Applied::Rejected(rejection),
        })
    }

    fn apply_membership(
        &mut self,
        index: LogIndex,
        membership: &Membership,
    ) -> Result<Applied, MachineError> {
        self.membership = membership.clone();
        let mut batch = WriteBatch::new();
        if let Some(current) = &self.descriptor {
            let mut next = current.clone();
            next.replicas = replicas_of(membership);
            next.leader_hint = None;
            if !next.same_replicas(current) {
                if let Some(generation) = current.generation.next() {
                    next.generation = generation;
                }
            }
            if next.validate().is_ok() {
                batch.set_tag(encode_descriptor(&next)?);
                self.descriptor = Some(next);
            }
        }
        self.commit(index, batch)?
            .map_err(|r| Self::failed(format!("a membership entry was refused: {r}")))?;
        if let Some(descriptor) = &self.descriptor {
            self.shared.set_descriptor(descriptor.clone());
        }
        Ok(Applied::Nothing)
    }
}

/// The replicas a membership names: voters (both halves of a joint one) and learners.
pub(crate) fn replicas_of(membership: &Membership) -> Vec<ReplicaDescriptor> {
    let mut voters: Vec<_> = membership
        .voters()
        .iter()
        .chain(membership.outgoing())
        .copied()
        .collect();
    voters.sort_unstable();
    voters.dedup();
    let mut replicas: Vec<ReplicaDescriptor> =
        voters.into_iter().map(ReplicaDescriptor::voter).collect();
    replicas.extend(
        membership
            .learners()
            .iter()
            .chain(membership.read_only_learners())
            .map(|&n| ReplicaDescriptor::learner(n)),
    );
    replicas
}

/// A membership with a descriptor's replicas: its voters and (promotable) learners.
pub(crate) fn membership_of(descriptor: &RangeDescriptor) -> Membership {
    Membership::new(descriptor.voters()).with_learners(
        descriptor.learners(),
        shoal_consensus::LearnerKind::Promotable,
    )
}

/// A descriptor as a range tag.
pub(crate) fn encode_descriptor(descriptor: &RangeDescriptor) -> Result<Vec<u8>, MachineError> {
    codec::encode(descriptor).map_err(|e| MachineError::Failed(e.to_string()))
}

/// A range tag as a descriptor (`None` for an empty tag).
pub(crate) fn decode_descriptor(tag: &[u8]) -> Result<Option<RangeDescriptor>, String> {
    if tag.is_empty() {
        return Ok(None);
    }
    codec::decode(tag, MAX_TAG_BYTES)
        .map(Some)
        .map_err(|e| format!("range tag: {e}"))
}

impl StateMachine for RangeMachine {
    type Source = RangeSnapshot;
    type Sink = RangeSink;
    type Staged = StagedSnapshot;
    type Response = Applied;

    fn apply(&mut self, entry: &Entry) -> Result<Applied, MachineError> {
        if self.descriptor.is_none() {
            return Err(Self::failed(
                "a replica without data was handed an entry before a snapshot",
            ));
        }
        let applied = match &entry.payload {
            EntryPayload::Noop => {
                self.commit(entry.index, WriteBatch::new())?
                    .map_err(|r| Self::failed(format!("an empty batch was refused: {r}")))?;
                Applied::Nothing
            }
            EntryPayload::Membership(m) => self.apply_membership(entry.index, m)?,
            EntryPayload::Command(data) => match codec::decode::<Command>(data, data.len()) {
                Ok(Command::Write(ops)) => self.apply_write(entry.index, ops)?,
                Ok(Command::Split { at, right }) => self.apply_split(entry.index, at, right)?,
                Ok(Command::Meta(op)) => self.apply_meta(entry.index, op)?,
                Err(_) => {
                    self.commit(entry.index, WriteBatch::new())?
                        .map_err(|r| Self::failed(format!("an empty batch was refused: {r}")))?;
                    Applied::Rejected(Rejection::Undecodable)
                }
            },
        };
        Ok(applied)
    }

    fn applied_index(&self) -> LogIndex {
        self.applied
    }

    fn persist(&mut self) -> Result<LogIndex, MachineError> {
        let applied = self.applied;
        self.engine
            .persist(Durability::Sync)
            .map_err(Self::failed)?;
        Ok(applied)
    }

    fn snapshot(&mut self) -> Result<RangeSnapshot, MachineError> {
        let stream = self
            .engine
            .snapshot_stream(self.range, self.chunk_bytes)
            .map_err(Self::failed)?;
        Ok(RangeSnapshot { stream })
    }

    fn receive_snapshot(&mut self, meta: &SnapshotMeta) -> Result<RangeSink, MachineError> {
        Ok(RangeSink {
            engine: self.engine.clone(),
            range: self.range,
            index: meta.index,
            ingest: None,
        })
    }

    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        staged: StagedSnapshot,
    ) -> Result<(), MachineError> {
        if staged.applied_index != meta.index {
            let error = Self::failed(format!(
                "the staged snapshot is at {}, not {}",
                staged.applied_index, meta.index
            ));
            self.discard_snapshot(staged);
            return Err(error);
        }
        let info = self
            .engine
            .install_staged(self.range)
            .map_err(Self::failed)?;
        let descriptor = decode_descriptor(&info.tag)
            .map_err(Self::failed)?
            .ok_or_else(|| Self::failed("a snapshot without a descriptor"))?;
        self.applied = info.applied_index;
        self.tag_missing = false;
        self.membership = meta.membership.clone();
        self.shared.set_descriptor(descriptor.clone());
        self.descriptor = Some(descriptor);
        Ok(())
    }

    fn discard_snapshot(&mut self, staged: StagedSnapshot) {
        if let Err(e) = self.engine.discard_staged(staged.range) {
            tracing::warn!(range = %staged.range, error = %e, "could not discard a staged snapshot");
        }
    }
}

/// A range's snapshot, read from a point-in-time view.
pub struct RangeSnapshot {
    stream: SnapshotStream,
}

impl SnapshotSource for RangeSnapshot {
    fn index(&self) -> LogIndex {
        self.stream.applied_index()
    }

    fn next_chunk(&mut self) -> Result<Option<Bytes>, MachineError> {
        match self.stream.next() {
            None => Ok(None),
            Some(Ok(chunk)) => Ok(Some(chunk.into())),
            Some(Err(e)) => Err(MachineError::Failed(e.to_string())),
        }
    }
}

/// A range's snapshot being received: the ingest opens at the first chunk (which names the
/// span), into the engine beside the range's current contents.
pub struct RangeSink {
    engine: Arc<Engine>,
    range: RangeId,
    index: LogIndex,
    ingest: Option<Ingest<Arc<Engine>>>,
}

impl SnapshotSink for RangeSink {
    type Staged = StagedSnapshot;

    fn write(&mut self, chunk: &[u8]) -> Result<(), MachineError> {
        let bad = |e: StorageError| MachineError::BadSnapshot(e.to_string());
        if self.ingest.is_none() {
            let (range, applied, span) = shoal_storage::snapshot_header(chunk).map_err(bad)?;
            if range != self.range || applied != self.index {
                return Err(MachineError::BadSnapshot(format!(
                    "a snapshot of {range} at {applied}, expected {} at {}",
                    self.range, self.index
                )));
            }
            // A snapshot already staged for the range belongs to the host (which installs or
            // discards it); until then the engine refuses another, and this transfer fails
            // and is retried.
            let ingest = self
                .engine
                .ingest_shared(self.range, span)
                .map_err(|e| match e {
                    // A span the engine refuses (a hostile or garbled header) is the
                    // stream's fault, not the group's.
                    StorageError::SnapshotInProgress(_) => MachineError::BadSnapshot(e.to_string()),
                    e if e.is_refusal() => MachineError::BadSnapshot(e.to_string()),
                    e => MachineError::Failed(e.to_string()),
                })?;
            self.ingest = Some(ingest);
        }
        let ingest = self.ingest.as_mut().expect("opened above");
        ingest.apply(chunk).map_err(bad)
    }

    fn finish(self) -> Result<StagedSnapshot, MachineError> {
        let ingest = self
            .ingest
            .ok_or_else(|| MachineError::BadSnapshot("no chunk arrived".into()))?;
        ingest
            .stage()
            .map_err(|e| MachineError::BadSnapshot(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    //! Committed commands the engine refuses: each is the same rejection on every replica
    //! (an empty batch at the entry's index), never a failed group or a panic.

    use super::*;
    use shoal_core::{KeyRange, NodeId};
    use shoal_storage::{Condition, EngineConfig};

    fn machine(dir: &std::path::Path) -> (Arc<Engine>, RangeMachine) {
        let engine = Arc::new(Engine::open(dir, EngineConfig::default()).unwrap());
        let range = RangeId::new(1);
        engine
            .create_range(range, KeyRange::full(), RANGE_INIT_INDEX)
            .unwrap();
        let descriptor = RangeDescriptor::new(
            range,
            KeyRange::full(),
            vec![ReplicaDescriptor::voter(NodeId::new(1))],
        )
        .unwrap();
        let (events, _) = super::super::events::channel();
        let machine = RangeMachine::hosted(
            engine.clone(),
            descriptor.clone(),
            membership_of(&descriptor),
            Arc::new(Shared::default()),
            events,
            1 << 20,
        )
        .unwrap();
        (engine, machine)
    }

    fn entry(index: LogIndex, command: &Command) -> Entry {
        Entry {
            index,
            term: 1,
            payload: EntryPayload::Command(codec::encode(command).unwrap().into()),
        }
    }

    #[test]
    fn refused_input_is_a_rejection_at_its_index_and_the_range_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, mut machine) = machine(dir.path());
        let max_key = EngineConfig::default().max_key_len;
        let empty_writes = [
            WriteOp::Put {
                key: Vec::new(),
                value: b"x".to_vec(),
            },
            WriteOp::Delete { key: Vec::new() },
            WriteOp::CompareAndSet {
                key: Vec::new(),
                expect: Condition::Absent,
                new: Some(b"x".to_vec()),
            },
        ];
        let mut index = RANGE_INIT_INDEX;
        for op in empty_writes {
            index += 1;
            let applied = machine
                .apply(&entry(index, &Command::Write(vec![op.clone()])))
                .unwrap();
            assert!(
                matches!(applied, Applied::Rejected(Rejection::Refused(_))),
                "{op:?}: {applied:?}"
            );
            assert_eq!(machine.applied_index(), index);
        }
        for at in [Vec::new(), vec![b'k'; max_key + 1]] {
            index += 1;
            let split = Command::Split {
                at: at.clone(),
                right: RangeId::new(2),
            };
            let applied = machine.apply(&entry(index, &split)).unwrap();
            assert!(
                matches!(applied, Applied::Rejected(Rejection::InvalidSplit(_))),
                "split at {} bytes: {applied:?}",
                at.len()
            );
            assert_eq!(machine.applied_index(), index);
        }
        // Nothing was written, and the range takes honest writes at the next index.
        index += 1;
        let put = Command::Write(vec![WriteOp::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }]);
        assert!(matches!(
            machine.apply(&entry(index, &put)).unwrap(),
            Applied::Written(_)
        ));
        let info = engine.range(RangeId::new(1)).unwrap();
        assert_eq!((info.applied_index, info.stats.live_keys), (index, 1));
    }
}

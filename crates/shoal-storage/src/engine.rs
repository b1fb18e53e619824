//! The engine: opening and recovering a data directory, hosting ranges, applying batches,
//! reading.

use crate::batch::{Condition, WriteBatch, WriteOp, WriteOutcome};
use crate::config::{Durability, EngineConfig};
use crate::error::{check_key_len, check_stored_key, Result, StorageError};
use crate::layout::{
    self, decode_value, encode_value, range_key, RangeRecord, StagedRecord, DATA, FORMAT_KEY,
    FORMAT_VERSION, META, RANGE_PREFIX, STAGING,
};
use crate::range_info::{RangeInfo, RangeStats, RangeStatus};
use crate::read::{self, Scan, Versioned};
use crate::registry::{Registry, Slot};
use crate::view::RangeView;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use shoal_core::{KeyRange, RangeId};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Keys deleted per batch when a range's keys are cleared.
const CLEAR_BATCH: usize = 4096;

/// The highest version a range issues: 2^62, far above any real count (a million writes a
/// second to one range for 140,000 years). A range that reached it refuses further writes
/// ([`StorageError::VersionsExhausted`]) rather than reuse or wrap a version, and a snapshot
/// claiming more is refused at ingest.
pub const MAX_VERSION: u64 = 1 << 62;

/// A durable, range-aware ordered key-value engine: one per node, holding every range
/// replica the node hosts. See the crate docs for an example and the `layout` module for how
/// it sits on disk.
pub struct Engine {
    pub(crate) db: Database,
    pub(crate) data: Keyspace,
    pub(crate) meta: Keyspace,
    pub(crate) staging: Keyspace,
    pub(crate) config: EngineConfig,
    path: PathBuf,
    pub(crate) registry: RwLock<Registry>,
    /// Snapshots of hosted ranges in `staging`, being received or whole (see `staging.rs`).
    staged: Mutex<HashMap<RangeId, StagedRecord>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.path).finish()
    }
}

/// A key's state while a batch is being applied: as stored, or as an earlier operation of
/// the batch left it.
enum Current<'b> {
    Absent,
    Stored { version: u64, value: fjall::Slice },
    Batch { version: u64, value: &'b [u8] },
}

impl Current<'_> {
    fn version(&self) -> Option<u64> {
        match self {
            Current::Absent => None,
            Current::Stored { version, .. } | Current::Batch { version, .. } => Some(*version),
        }
    }

    fn value(&self) -> Option<&[u8]> {
        match self {
            Current::Absent => None,
            Current::Stored { value, .. } => Some(&value[layout::VERSION_LEN..]),
            Current::Batch { value, .. } => Some(value),
        }
    }
}

impl Engine {
    /// Opens (or creates) the engine in `path`. Recovery replays fjall's journal (a torn
    /// final batch is dropped whole), then finishes what a crash interrupted: a half-received
    /// snapshot is cleared, a half-removed range is removed, a half-installed snapshot is
    /// installed; a whole staged snapshot stays staged ([`Engine::staged_snapshots`]).
    ///
    /// Fails with [`StorageError::Locked`] if another process has `path` open, and with
    /// [`StorageError::Corrupt`] if a file or record cannot be read.
    pub fn open(path: impl AsRef<Path>, config: EngineConfig) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = Database::builder(&path)
            .cache_size(config.cache_bytes)
            .open()
            .map_err(|e| match StorageError::from(e) {
                StorageError::Locked { .. } => StorageError::Locked { path: path.clone() },
                other => other,
            })?;
        let data = db.keyspace(DATA, KeyspaceCreateOptions::default)?;
        let meta = db.keyspace(META, KeyspaceCreateOptions::default)?;
        let staging = db.keyspace(STAGING, KeyspaceCreateOptions::default)?;
        let engine = Self {
            db,
            data,
            meta,
            staging,
            config,
            path,
            registry: RwLock::new(Registry::default()),
            staged: Mutex::new(HashMap::new()),
        };
        engine.check_format()?;
        engine.recover_ranges()?;
        engine.recover_staging(engine.record_limit())?;
        Ok(engine)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration the engine was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn check_format(&self) -> Result<()> {
        match self.meta.get(FORMAT_KEY)? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(&v[..])
                    .map(u32::from_be_bytes)
                    .map_err(|_| StorageError::Corrupt("format marker".into()))?;
                if found != FORMAT_VERSION {
                    return Err(StorageError::Corrupt(format!(
                        "layout version {found}, this build reads {FORMAT_VERSION}"
                    )));
                }
                Ok(())
            }
            None if self.meta.is_empty()?
                && self.data.is_empty()?
                && self.staging.is_empty()? =>
            {
                let mut batch = self.db.batch().durability(Durability::Sync.persist_mode());
                batch.insert(&self.meta, FORMAT_KEY, FORMAT_VERSION.to_be_bytes());
                batch.commit()?;
                Ok(())
            }
            None => Err(StorageError::Corrupt("format marker missing".into())),
        }
    }

    fn record_limit(&self) -> usize {
        2 * self.config.max_key_len + 256
    }

    fn recover_ranges(&self) -> Result<()> {
        let mut records = Vec::new();
        for guard in self.meta.prefix(RANGE_PREFIX) {
            let (key, value) = guard.into_inner()?;
            let record = RangeRecord::decode(&value, self.record_limit())?;
            if key[..] != range_key(record.id)[..] {
                return Err(StorageError::Corrupt(format!(
                    "record of {} stored under another key",
                    record.id
                )));
            }
            records.push(record);
        }
        let mut registry = self.write_registry();
        let mut unfinished = Vec::new();
        for record in records {
            registry
                .check_new(record.id, &record.span)
                .map_err(|e| StorageError::Corrupt(format!("range records disagree: {e}")))?;
            // Staged ranges wait for their owner's decision; swapping ones are finished
            // once staged snapshots are loaded.
            if matches!(
                record.status,
                RangeStatus::Ingesting | RangeStatus::Clearing
            ) {
                unfinished.push(record.clone());
            }
            let (id, span) = (record.id, record.span.clone());
            registry.insert(Slot::new(record), span, id);
        }
        drop(registry);
        for record in unfinished {
            tracing::info!(range = %record.id, status = ?record.status, "finishing an interrupted ingest or removal");
            self.clear_and_forget(&record)?;
        }
        Ok(())
    }

    pub(crate) fn read_registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_registry(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The snapshots of hosted ranges in `staging`, by range.
    pub(crate) fn staged_records(&self) -> MutexGuard<'_, HashMap<RangeId, StagedRecord>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn slot(&self, range: RangeId) -> Result<Arc<Slot>> {
        self.read_registry().get(range)
    }

    /// Refuses a key to store or split at: empty, or over the limit.
    pub(crate) fn check_key(&self, key: &[u8]) -> Result<()> {
        check_stored_key(key, self.config.max_key_len)
    }

    pub(crate) fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.config.max_value_len {
            return Err(StorageError::ValueTooLarge {
                len: value.len(),
                max: self.config.max_value_len,
            });
        }
        Ok(())
    }

    pub(crate) fn check_span(&self, span: &KeyRange) -> Result<()> {
        // A span may start at the empty key (the first range does); its end is a key.
        check_key_len(span.start(), self.config.max_key_len)?;
        if let Some(end) = span.end().as_key() {
            self.check_key(end)?;
        }
        Ok(())
    }

    /// Commits `records` (and removals of `removed`) in one synced batch.
    pub(crate) fn commit_records(
        &self,
        records: &[&RangeRecord],
        removed: &[RangeId],
    ) -> Result<()> {
        self.commit_records_with(records, removed, Durability::Sync)
    }

    /// [`Engine::commit_records`] with the given durability.
    pub(crate) fn commit_records_with(
        &self,
        records: &[&RangeRecord],
        removed: &[RangeId],
        durability: Durability,
    ) -> Result<()> {
        let mut batch = self.db.batch().durability(durability.persist_mode());
        for record in records {
            batch.insert(&self.meta, range_key(record.id), record.encode()?);
        }
        for id in removed {
            batch.remove(&self.meta, range_key(*id));
        }
        batch.commit()?;
        Ok(())
    }

    /// Starts hosting an empty range `id` over `span` at applied index `applied_index`.
    /// Refused if the id is in use or the span overlaps a hosted range.
    pub fn create_range(&self, id: RangeId, span: KeyRange, applied_index: u64) -> Result<()> {
        self.add_range(id, span, RangeStatus::Active, applied_index)
    }

    /// Registers a new empty range with `status`, durably.
    pub(crate) fn add_range(
        &self,
        id: RangeId,
        span: KeyRange,
        status: RangeStatus,
        applied_index: u64,
    ) -> Result<()> {
        self.check_span(&span)?;
        let mut registry = self.write_registry();
        registry.check_new(id, &span)?;
        // Keys left in the span by an earlier, unfinished removal would surface here.
        if self.span_iter(&span).next().is_some() {
            return Err(StorageError::Corrupt(format!(
                "keys present in the span of new range {id}"
            )));
        }
        let record = RangeRecord {
            id,
            span: span.clone(),
            status,
            applied_index,
            next_version: 1,
            stats: RangeStats::default(),
            tag: Vec::new(),
        };
        self.commit_records(&[&record], &[])?;
        registry.insert(Slot::new(record), span, id);
        Ok(())
    }

    /// Every hosted range (ingesting and clearing ones included), in key order.
    pub fn ranges(&self) -> Vec<RangeInfo> {
        self.read_registry()
            .slots()
            .iter()
            .map(|s| s.read().info())
            .collect()
    }

    /// One hosted range.
    pub fn range(&self, id: RangeId) -> Result<RangeInfo> {
        Ok(self.slot(id)?.read().info())
    }

    /// Applies `batch` to range `range` as the entry at log index `index`, which must be
    /// above the range's applied index. The data changes and the new applied index commit
    /// in one fjall batch, with the configured [`Durability`].
    ///
    /// The whole batch is refused, changing nothing, if any key is empty, any key or value
    /// is over the limit, or any key lies outside the range. A failed condition is not an error: that
    /// operation is skipped, reported in its [`WriteOutcome`], and the rest apply.
    pub fn apply(
        &self,
        range: RangeId,
        index: u64,
        batch: &WriteBatch,
    ) -> Result<Vec<WriteOutcome>> {
        if let Some(tag) = batch.tag() {
            self.check_value(tag)?;
        }
        for op in batch.ops() {
            self.check_key(op.key())?;
            match op {
                WriteOp::Put { value, .. }
                | WriteOp::CompareAndSet {
                    new: Some(value), ..
                } => self.check_value(value)?,
                _ => {}
            }
            if let WriteOp::CompareAndSet {
                expect: Condition::Value(v),
                ..
            } = op
            {
                self.check_value(v)?;
            }
        }
        let slot = self.slot(range)?;
        let mut state = slot.lock();
        let record = state.serving()?;
        if index <= record.applied_index {
            return Err(StorageError::StaleApply {
                range,
                index,
                applied: record.applied_index,
            });
        }
        if batch.ops().iter().any(|op| !record.span.contains(op.key())) {
            return Err(StorageError::KeyOutsideRange { range });
        }
        let mut next = record.clone();
        next.applied_index = index;
        if let Some(tag) = batch.tag() {
            next.tag = tag.to_vec();
        }
        // Each key's state as the batch goes, and whether the batch changed it.
        let mut pending: HashMap<&[u8], (Current<'_>, bool)> = HashMap::with_capacity(batch.len());
        let mut outcomes = Vec::with_capacity(batch.len());
        for op in batch.ops() {
            let key = op.key();
            let (current, dirty) = match pending.entry(key) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let current = match self.data.get(key)? {
                        None => Current::Absent,
                        Some(stored) => Current::Stored {
                            version: decode_value(&stored)?.0,
                            value: stored,
                        },
                    };
                    e.insert((current, false))
                }
            };
            let new = match op {
                WriteOp::Put { value, .. } => Some(value.as_slice()),
                WriteOp::Delete { .. } => None,
                WriteOp::CompareAndSet { expect, new, .. } => {
                    if let Err(failed) = check_condition(expect, current) {
                        outcomes.push(failed);
                        continue;
                    }
                    new.as_deref()
                }
            };
            let existed = current.version().is_some();
            if let Some(old) = current.value() {
                next.stats.sub(RangeStats::of_entry(key.len(), old.len()));
            }
            outcomes.push(match new {
                Some(value) => {
                    let version = next.next_version;
                    if version > MAX_VERSION {
                        // Nothing is committed: `next` is a copy, dropped with the error.
                        return Err(StorageError::VersionsExhausted(range));
                    }
                    next.next_version = version + 1;
                    next.stats.add(RangeStats::of_entry(key.len(), value.len()));
                    *current = Current::Batch { version, value };
                    *dirty = true;
                    WriteOutcome::Written { version }
                }
                None => {
                    *current = Current::Absent;
                    *dirty |= existed;
                    WriteOutcome::Deleted { existed }
                }
            });
        }
        let mut commit = self
            .db
            .batch()
            .durability(self.config.durability.persist_mode());
        for (key, (current, dirty)) in pending {
            match current {
                Current::Batch { version, value } => {
                    commit.insert(&self.data, key, encode_value(version, value));
                }
                Current::Absent if dirty => commit.remove(&self.data, key),
                // Read but left as it was.
                Current::Absent | Current::Stored { .. } => {}
            }
        }
        commit.insert(&self.meta, range_key(range), next.encode()?);
        commit.commit()?;
        state.record = next;
        Ok(outcomes)
    }

    /// The value and version of `key` in range `range`, if it exists.
    pub fn get(&self, range: RangeId, key: &[u8]) -> Result<Option<Versioned>> {
        check_key_len(key, self.config.max_key_len)?;
        let slot = self.slot(range)?;
        // Read under the range's lock (shared with other reads): a snapshot install replaces
        // the range's keys only after marking it swapping under this lock, so a get never
        // sees it half-way.
        let state = slot.read();
        if !state.serving()?.span.contains(key) {
            return Err(StorageError::KeyOutsideRange { range });
        }
        let stored = self.data.get(key)?;
        drop(state);
        read::versioned(stored)
    }

    /// The entries of range `range` that `scan` asks for, read at one point in time.
    pub fn scan(&self, range: RangeId, scan: &Scan) -> Result<Vec<read::Entry>> {
        self.view(range)?.scan(scan)
    }

    /// A consistent view of range `range`: reads at this point in time, whatever is
    /// applied afterwards, together with the applied index and stats of that point.
    pub fn view(&self, range: RangeId) -> Result<RangeView> {
        let slot = self.slot(range)?;
        let state = slot.read();
        let record = state.serving()?;
        // Taken under the slot's lock: no batch of this range is half-way through.
        let snapshot = self.db.snapshot();
        Ok(RangeView::new(
            snapshot,
            self.data.clone(),
            record.clone(),
            self.config.max_key_len,
        ))
    }

    /// Writes out the journal with the given durability (for [`Durability::Buffered`]
    /// engines, or before a planned shutdown).
    pub fn persist(&self, durability: Durability) -> Result<()> {
        if let Some(mode) = durability.persist_mode() {
            self.db.persist(mode)?;
        }
        Ok(())
    }

    /// Writes everything in memory out to tables and waits for it (the journal then holds
    /// nothing that is not also in a table). For backups, tests and planned shutdowns.
    pub fn flush(&self) -> Result<()> {
        self.data.rotate_memtable_and_wait()?;
        self.meta.rotate_memtable_and_wait()?;
        Ok(())
    }

    /// Bytes the data directory takes on disk (tables and journals).
    pub fn disk_space(&self) -> Result<u64> {
        Ok(self.db.disk_space()?)
    }

    /// Every stored key in `span`, in order (read at this point).
    pub(crate) fn span_iter(&self, span: &KeyRange) -> fjall::Iter {
        let start = span.start().to_vec();
        match span.end().as_key() {
            Some(end) => self.data.range(start..end.to_vec()),
            None => self.data.range(start..),
        }
    }

    /// Deletes every key in `span`, a batch at a time (keys only: values are not read). Each
    /// batch's scan starts after the last key deleted, so it does not wade through the
    /// tombstones the earlier batches left.
    pub(crate) fn clear_span(&self, span: &KeyRange) -> Result<()> {
        let mut from = span.start().to_vec();
        loop {
            let rest = KeyRange::new(from, span.end().clone())
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            let mut keys = Vec::with_capacity(CLEAR_BATCH);
            for guard in self.span_iter(&rest).take(CLEAR_BATCH) {
                keys.push(guard.key()?);
            }
            let Some(last) = keys.last() else {
                return Ok(());
            };
            from = successor(last);
            let mut batch = self.db.batch();
            for key in keys {
                batch.remove(&self.data, key);
            }
            batch.commit()?;
            if !span.end().is_above(&from) {
                return Ok(());
            }
        }
    }

    /// Deletes a non-serving range's keys, then its record, then forgets it.
    pub(crate) fn clear_and_forget(&self, record: &RangeRecord) -> Result<()> {
        self.clear_span(&record.span)?;
        self.commit_records(&[], &[record.id])?;
        let mut registry = self.write_registry();
        if let Ok(slot) = registry.get(record.id) {
            slot.lock().gone = true;
        }
        registry.remove(record.id, &record.span);
        Ok(())
    }
}

/// The smallest key after `key`.
pub(crate) fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// `Ok` if `expect` holds for `current`, else the outcome reporting why not.
fn check_condition(expect: &Condition, current: &Current<'_>) -> Result<(), WriteOutcome> {
    let Some(version) = current.version() else {
        return match expect {
            Condition::Absent => Ok(()),
            _ => Err(WriteOutcome::Missing),
        };
    };
    let holds = match expect {
        Condition::Absent => false,
        Condition::Version(v) => *v == version,
        Condition::Value(v) => current.value() == Some(v.as_slice()),
    };
    if holds {
        Ok(())
    } else {
        Err(WriteOutcome::Mismatch {
            current_version: version,
        })
    }
}

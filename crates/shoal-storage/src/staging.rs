//! Staged snapshots: a whole snapshot received and checked, kept durable and invisible until
//! it is installed (the range then serves it) or discarded.
//!
//! A snapshot of a range the engine does not host sits in `data` under a range record marked
//! [`RangeStatus::Staged`]; installing it is one record write. A snapshot of a hosted range
//! sits in `staging` beside the range, which goes on serving what it holds; installing it
//! replaces the range's keys, crash-safely, in three steps:
//!
//! 1. one synced write marks the range [`RangeStatus::Swapping`] over the cover of its old
//!    span and the snapshot's (so no other range can take any of it meanwhile);
//! 2. every key in that cover is deleted from `data` and the staged keys are copied in,
//!    a batch at a time;
//! 3. one synced write makes the range active over the snapshot's span, at its applied
//!    index and accounting, and drops the staged record; the staged keys are then deleted.
//!
//! A crash before step 1 leaves the old contents and the staged snapshot; a crash after it
//! is finished at the next open (steps 2 and 3 are redone from the start, which is
//! idempotent since step 2 begins by clearing the cover). Readers never see a mix: the
//! range refuses reads and writes ([`StorageError::RangeNotReady`]) from step 1 to step 3.
//!
//! The copy writes the snapshot twice; a snapshot of a range not hosted yet (the common case:
//! a new replica) is written once.

use crate::config::Durability;
use crate::engine::{successor, Engine};
use crate::error::{Result, StorageError};
use crate::layout::{range_key, staged_key, RangeRecord, StagedRecord, STAGED_PREFIX};
use crate::range_info::{RangeInfo, RangeStats, RangeStatus};
use shoal_core::{KeyRange, RangeId};

/// Bytes of staged keys and values copied per batch when a snapshot is installed.
const COPY_BATCH_BYTES: usize = 4 << 20;
/// Keys deleted per batch when staged keys are cleared.
const CLEAR_BATCH: usize = 4096;

/// A whole snapshot, received and checked, waiting to be installed or discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedSnapshot {
    /// The range it is of.
    pub range: RangeId,
    /// The span it covers.
    pub span: KeyRange,
    /// The applied index it was taken at.
    pub applied_index: u64,
    /// Its live keys and bytes.
    pub stats: RangeStats,
    /// Whether it replaces a range the engine hosts (which serves its old contents until the
    /// install), rather than creating one.
    pub replaces: bool,
}

impl Engine {
    /// Every staged snapshot, as after [`crate::Ingest::stage`] (and after a crash: a staged
    /// snapshot survives one). Each waits for [`Engine::install_staged`] or
    /// [`Engine::discard_staged`].
    pub fn staged_snapshots(&self) -> Vec<StagedSnapshot> {
        let mut out: Vec<StagedSnapshot> = self
            .read_registry()
            .slots()
            .iter()
            .filter_map(|slot| {
                let state = slot.lock();
                let r = &state.record;
                (!state.gone && r.status == RangeStatus::Staged).then(|| StagedSnapshot {
                    range: r.id,
                    span: r.span.clone(),
                    applied_index: r.applied_index,
                    stats: r.stats,
                    replaces: false,
                })
            })
            .collect();
        out.extend(
            self.staged_records()
                .values()
                .filter(|s| s.ready)
                .map(|s| StagedSnapshot {
                    range: s.id,
                    span: s.span.clone(),
                    applied_index: s.applied_index,
                    stats: s.stats,
                    replaces: true,
                }),
        );
        out
    }

    /// Installs range `range`'s staged snapshot: from now on the range serves exactly the
    /// snapshot's keys, at its applied index, over its span. For a hosted range this replaces
    /// its contents atomically, also across a crash (see the module docs); its reads and
    /// writes wait or are refused while the keys are replaced. Refused, changing nothing, if
    /// no snapshot of the range is staged ([`StorageError::NoStagedSnapshot`]) or the
    /// snapshot's span would overlap another hosted range.
    pub fn install_staged(&self, range: RangeId) -> Result<RangeInfo> {
        {
            let slot = self.slot(range)?;
            let mut state = slot.lock();
            if !state.gone && state.record.status == RangeStatus::Staged {
                let mut active = state.record.clone();
                active.status = RangeStatus::Active;
                self.commit_records(&[&active], &[])?;
                state.record = active;
                return Ok(state.info());
            }
        }
        let staged = self
            .staged_records()
            .get(&range)
            .filter(|s| s.ready)
            .cloned()
            .ok_or(StorageError::NoStagedSnapshot(range))?;
        self.begin_swap(&staged)?;
        self.finish_swap(&staged)
    }

    /// Drops range `range`'s staged snapshot; the engine is as if it had never arrived (a
    /// hosted range keeps serving its contents; a range that was not hosted is not).
    pub fn discard_staged(&self, range: RangeId) -> Result<()> {
        let direct = self.slot(range).ok().and_then(|slot| {
            let mut state = slot.lock();
            if state.gone || state.record.status != RangeStatus::Staged {
                return None;
            }
            let mut clearing = state.record.clone();
            clearing.status = RangeStatus::Clearing;
            Some(self.commit_records(&[&clearing], &[]).map(|()| {
                state.record = clearing.clone();
                clearing
            }))
        });
        match direct {
            Some(clearing) => self.clear_and_forget(&clearing?),
            None if self.staged_records().get(&range).is_some_and(|s| s.ready) => {
                self.drop_staging(range)
            }
            None => Err(StorageError::NoStagedSnapshot(range)),
        }
    }

    /// Registers a snapshot of hosted range `range` about to be received into `staging`.
    pub(crate) fn begin_staging(&self, range: RangeId, span: &KeyRange) -> Result<()> {
        self.check_span(span)?;
        self.read_registry().check_free(range, span, Some(range))?;
        let mut staged = self.staged_records();
        if staged.contains_key(&range) {
            return Err(StorageError::SnapshotInProgress(range));
        }
        let record = StagedRecord {
            id: range,
            span: span.clone(),
            ready: false,
            applied_index: 0,
            next_version: 1,
            stats: RangeStats::default(),
            tag: Vec::new(),
        };
        self.commit_staged(&record)?;
        staged.insert(range, record);
        Ok(())
    }

    /// Marks a snapshot received into `data` (a new range) staged.
    pub(crate) fn stage_direct(
        &self,
        range: RangeId,
        applied_index: u64,
        next_version: u64,
        stats: RangeStats,
        tag: Vec<u8>,
    ) -> Result<StagedSnapshot> {
        let slot = self.slot(range)?;
        let mut state = slot.lock();
        if state.gone || state.record.status != RangeStatus::Ingesting {
            return Err(StorageError::RangeNotFound(range));
        }
        let record = RangeRecord {
            status: RangeStatus::Staged,
            applied_index,
            next_version,
            stats,
            tag,
            ..state.record.clone()
        };
        self.commit_records(&[&record], &[])?;
        state.record = record;
        Ok(StagedSnapshot {
            range,
            span: state.record.span.clone(),
            applied_index,
            stats,
            replaces: false,
        })
    }

    /// Marks a snapshot received into `staging` (beside a hosted range) staged.
    pub(crate) fn stage_aside(
        &self,
        range: RangeId,
        span: &KeyRange,
        applied_index: u64,
        next_version: u64,
        stats: RangeStats,
        tag: Vec<u8>,
    ) -> Result<StagedSnapshot> {
        let mut staged = self.staged_records();
        let Some(receiving) = staged.get(&range).filter(|s| !s.ready) else {
            return Err(StorageError::NoStagedSnapshot(range));
        };
        let record = StagedRecord {
            ready: true,
            applied_index,
            next_version,
            stats,
            tag,
            ..receiving.clone()
        };
        // Synced: it also makes every chunk written before it durable (one journal).
        self.commit_staged(&record)?;
        staged.insert(range, record);
        Ok(StagedSnapshot {
            range,
            span: span.clone(),
            applied_index,
            stats,
            replaces: true,
        })
    }

    /// Forgets range `range`'s snapshot in `staging` (received or not) and deletes its keys.
    pub(crate) fn drop_staging(&self, range: RangeId) -> Result<()> {
        let mut batch = self.db.batch().durability(Durability::Sync.persist_mode());
        batch.remove(&self.meta, staged_key(range));
        batch.commit()?;
        self.staged_records().remove(&range);
        self.clear_staging_keys(range)
    }

    /// Step 1 of an install over a hosted range (see the module docs).
    fn begin_swap(&self, staged: &StagedRecord) -> Result<()> {
        let range = staged.id;
        let mut registry = self.write_registry();
        let slot = registry.get(range)?;
        let mut state = slot.lock();
        if state.gone {
            return Err(StorageError::RangeNotFound(range));
        }
        if state.record.status != RangeStatus::Active {
            return Err(StorageError::RangeNotReady(range));
        }
        let cover = cover(&state.record.span, &staged.span)?;
        registry.check_free(range, &cover, Some(range))?;
        let swapping = RangeRecord {
            status: RangeStatus::Swapping,
            span: cover.clone(),
            ..state.record.clone()
        };
        self.commit_records(&[&swapping], &[])?;
        let old = std::mem::replace(&mut state.record, swapping).span;
        registry.respan(range, &old, cover);
        Ok(())
    }

    /// Steps 2 and 3 of an install over a hosted range marked swapping (see the module docs):
    /// at the install, or at the open after a crash interrupted one.
    pub(crate) fn finish_swap(&self, staged: &StagedRecord) -> Result<RangeInfo> {
        let range = staged.id;
        let cover = {
            let slot = self.slot(range)?;
            let state = slot.lock();
            if state.gone || state.record.status != RangeStatus::Swapping {
                return Err(StorageError::RangeNotReady(range));
            }
            state.record.span.clone()
        };
        self.clear_span(&cover)?;
        self.copy_staging(range)?;
        let info = {
            let mut registry = self.write_registry();
            let slot = registry.get(range)?;
            let mut state = slot.lock();
            let active = RangeRecord {
                id: range,
                span: staged.span.clone(),
                status: RangeStatus::Active,
                applied_index: staged.applied_index,
                next_version: staged.next_version,
                stats: staged.stats,
                tag: staged.tag.clone(),
            };
            let mut batch = self.db.batch().durability(Durability::Sync.persist_mode());
            batch.insert(&self.meta, range_key(range), active.encode()?);
            batch.remove(&self.meta, staged_key(range));
            batch.commit()?;
            let cover = std::mem::replace(&mut state.record, active).span;
            registry.respan(range, &cover, staged.span.clone());
            state.info()
        };
        self.staged_records().remove(&range);
        if let Err(e) = self.clear_staging_keys(range) {
            // Orphaned staged keys are deleted at the next open.
            tracing::warn!(%range, error = %e, "could not delete installed snapshot's staged keys");
        }
        Ok(info)
    }

    /// Copies range `range`'s staged keys into `data`, a batch at a time (not synced: the
    /// synced write that ends the install covers them).
    fn copy_staging(&self, range: RangeId) -> Result<()> {
        let prefix = range.get().to_be_bytes();
        let mut batch = self.db.batch();
        let mut bytes = 0;
        for guard in self.staging.prefix(prefix) {
            let (key, value) = guard.into_inner()?;
            bytes += key.len() + value.len();
            batch.insert(&self.data, &key[prefix.len()..], value);
            if bytes >= COPY_BATCH_BYTES {
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
                bytes = 0;
            }
        }
        batch.commit()?;
        Ok(())
    }

    /// Deletes range `range`'s keys from `staging`, a batch at a time (keys only), each scan
    /// starting after the last key deleted.
    fn clear_staging_keys(&self, range: RangeId) -> Result<()> {
        let prefix = range.get().to_be_bytes();
        let mut from = prefix.to_vec();
        loop {
            let mut keys = Vec::with_capacity(CLEAR_BATCH);
            for guard in self.staging.range(from.clone()..).take(CLEAR_BATCH) {
                let key = guard.key()?;
                if !key.starts_with(&prefix) {
                    break;
                }
                keys.push(key);
            }
            let Some(last) = keys.last() else {
                return Ok(());
            };
            from = successor(last);
            let mut batch = self.db.batch();
            for key in keys {
                batch.remove(&self.staging, key);
            }
            batch.commit()?;
        }
    }

    fn commit_staged(&self, record: &StagedRecord) -> Result<()> {
        let mut batch = self.db.batch().durability(Durability::Sync.persist_mode());
        batch.insert(&self.meta, staged_key(record.id), record.encode()?);
        batch.commit()?;
        Ok(())
    }

    /// At open, after the ranges are recovered: keeps staged snapshots that were whole,
    /// drops those a crash interrupted, finishes interrupted installs, and deletes staged
    /// keys nothing refers to.
    pub(crate) fn recover_staging(&self, limit: usize) -> Result<()> {
        let mut records = Vec::new();
        for guard in self.meta.prefix(STAGED_PREFIX) {
            let (key, value) = guard.into_inner()?;
            let record = StagedRecord::decode(&value, limit)?;
            if key[..] != staged_key(record.id)[..] {
                return Err(StorageError::Corrupt(format!(
                    "staged record of {} stored under another key",
                    record.id
                )));
            }
            records.push(record);
        }
        for record in records {
            if record.ready {
                self.staged_records().insert(record.id, record);
            } else {
                tracing::info!(range = %record.id, "dropping a snapshot a crash interrupted");
                self.drop_staging(record.id)?;
            }
        }
        let swapping: Vec<RangeId> = self
            .ranges()
            .into_iter()
            .filter(|r| r.status == RangeStatus::Swapping)
            .map(|r| r.id)
            .collect();
        for range in swapping {
            let staged = self.staged_records().get(&range).cloned().ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "range {range} was being replaced by a snapshot that is not staged"
                ))
            })?;
            tracing::info!(%range, "finishing a snapshot install a crash interrupted");
            self.finish_swap(&staged)?;
        }
        // Keys of snapshots whose records are gone (an install finished, or a drop began).
        let mut orphans = Vec::new();
        let mut next: Option<[u8; 8]> = None;
        loop {
            let mut iter = match next {
                Some(from) => self.staging.range(from.to_vec()..),
                None => self.staging.range(Vec::<u8>::new()..),
            };
            let Some(guard) = iter.next() else { break };
            let key = guard.key()?;
            let id = key
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StorageError::Corrupt("staged key without a range".into()))?;
            if !self.staged_records().contains_key(&RangeId::new(id)) {
                orphans.push(RangeId::new(id));
            }
            match id.checked_add(1) {
                Some(n) => next = Some(n.to_be_bytes()),
                None => break,
            }
        }
        for range in orphans {
            self.clear_staging_keys(range)?;
        }
        Ok(())
    }
}

/// The smallest span holding both `a` and `b`.
fn cover(a: &KeyRange, b: &KeyRange) -> Result<KeyRange> {
    let start = a.start().min(b.start()).to_vec();
    let end = a.end().max(b.end()).clone();
    KeyRange::new(start, end).map_err(|e| StorageError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineConfig, Scan, WriteBatch};

    const R: RangeId = RangeId::new(1);

    /// An engine over `dir` hosting R over the full span with `keys` keys named `prefix…`.
    fn engine_with(dir: &std::path::Path, prefix: &str, keys: usize, index: u64) -> Engine {
        let engine = Engine::open(dir, EngineConfig::default()).unwrap();
        engine.create_range(R, KeyRange::full(), 0).unwrap();
        let mut b = WriteBatch::new();
        for i in 0..keys {
            b.put(format!("{prefix}{i:05}"), vec![b'v'; 64]);
        }
        engine.apply(R, index, &b).unwrap();
        engine
    }

    /// The crash the module docs promise to finish: after step 1 (the range marked swapping,
    /// part of its keys possibly replaced), the next open completes the install.
    #[test]
    fn an_install_interrupted_after_it_began_is_finished_at_open() {
        let src_dir = tempfile::tempdir().unwrap();
        let src = engine_with(src_dir.path(), "new", 900, 9);
        let chunks: Vec<Vec<u8>> = src
            .snapshot_stream(R, 4096)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        {
            let dst = engine_with(dir.path(), "old", 700, 4);
            let mut ingest = dst.ingest(R, KeyRange::full()).unwrap();
            for chunk in &chunks {
                ingest.apply(chunk).unwrap();
            }
            ingest.stage().unwrap();
            let staged = dst.staged_records().get(&R).cloned().unwrap();
            dst.begin_swap(&staged).unwrap();
            // Part of step 2, then the process dies.
            dst.clear_span(&KeyRange::bounded("", "old00300").unwrap())
                .unwrap();
            dst.persist(Durability::Sync).unwrap();
        }
        let dst = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let info = dst.range(R).unwrap();
        assert_eq!(info.status, RangeStatus::Active);
        assert_eq!(info.applied_index, 9);
        assert_eq!(info.stats, src.range(R).unwrap().stats);
        assert_eq!(
            dst.scan(R, &Scan::all(10_000)).unwrap(),
            src.scan(R, &Scan::all(10_000)).unwrap()
        );
        assert!(dst.staged_snapshots().is_empty());
        assert_eq!(dst.staging.iter().count(), 0, "staged keys deleted");
    }
}

//! Receiving a snapshot stream (see `snapshot.rs` for its format): every chunk checked and
//! written where it cannot be seen, then, as one step, staged (durable, still invisible) and
//! installed.
//!
//! A snapshot of a range this engine does not host is written straight to `data` under a
//! range registered as [`RangeStatus::Ingesting`]: nothing else lives in its span. A snapshot
//! of a range it hosts is written to `staging` (see `staging.rs`), so the range keeps its
//! contents, and keeps serving them, until the snapshot is installed in their place.

use crate::engine::Engine;
use crate::error::{Result, StorageError};
use crate::layout::{encode_value, staging_key};
use crate::range_info::{RangeInfo, RangeStats, RangeStatus};
use crate::snapshot::{open_chunk, read_header, Header, FLAG_HEADER, FLAG_LAST};
use crate::staging::StagedSnapshot;
use shoal_core::{KeyRange, RangeId};
use std::ops::Deref;
use std::sync::Arc;

impl Engine {
    /// Starts receiving a snapshot of range `range` over `span`.
    ///
    /// - If the range is not hosted, it is registered (durably) as ingesting: it serves
    ///   nothing and, should the process crash, is cleared at the next open. Refused if the
    ///   span overlaps a hosted range.
    /// - If the range is hosted and serving, the snapshot is kept aside and the range goes on
    ///   serving its current contents; [`Ingest::finish`] (or [`Engine::install_staged`] after
    ///   [`Ingest::stage`]) replaces them whole, atomically across a crash. The snapshot's span
    ///   may differ from the range's (a split or merge this replica missed); refused if it
    ///   overlaps another hosted range, or a snapshot of the range is already in progress.
    pub fn ingest(&self, range: RangeId, span: KeyRange) -> Result<Ingest<&Engine>> {
        Ingest::start(self, range, span)
    }

    /// [`Engine::ingest`] for an engine behind an [`Arc`]: the ingest holds its own handle, so
    /// it can be kept across calls (while chunks arrive over the network, say).
    pub fn ingest_shared(
        self: &Arc<Self>,
        range: RangeId,
        span: KeyRange,
    ) -> Result<Ingest<Arc<Engine>>> {
        Ingest::start(self.clone(), range, span)
    }
}

/// Where the chunks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Into `data`, under a new range registered as ingesting.
    Direct,
    /// Into `staging`, beside a hosted range.
    Staging,
}

/// Where an ingest stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IngestState {
    Open,
    /// A chunk was refused; only aborting is left.
    Failed,
    /// Staged, finished or aborted.
    Closed,
}

/// A snapshot being received (see [`Engine::ingest`]). Feed it every chunk in order with
/// [`Ingest::apply`], then [`Ingest::finish`] (install it now) or [`Ingest::stage`] (keep it,
/// durable and invisible, to install later). Dropping it unfinished (or after a refused chunk)
/// deletes what was written and leaves the engine as it was.
pub struct Ingest<E: Deref<Target = Engine>> {
    engine: E,
    range: RangeId,
    span: KeyRange,
    target: Target,
    next_seq: u32,
    header: Option<Header>,
    applied_index: u64,
    seen: RangeStats,
    last_key: Option<Vec<u8>>,
    complete: bool,
    state: IngestState,
}

impl<E: Deref<Target = Engine>> Ingest<E> {
    fn start(engine: E, range: RangeId, span: KeyRange) -> Result<Self> {
        let hosted = engine.slot(range).ok().map(|slot| {
            let state = slot.lock();
            (!state.gone).then_some(state.record.status)
        });
        let target = match hosted.flatten() {
            None => {
                engine.add_range(range, span.clone(), RangeStatus::Ingesting, 0)?;
                Target::Direct
            }
            Some(RangeStatus::Active) => {
                engine.begin_staging(range, &span)?;
                Target::Staging
            }
            Some(_) => return Err(StorageError::SnapshotInProgress(range)),
        };
        Ok(Self {
            engine,
            range,
            span,
            target,
            next_seq: 0,
            header: None,
            applied_index: 0,
            seen: RangeStats::default(),
            last_key: None,
            complete: false,
            state: IngestState::Open,
        })
    }

    /// The range being received.
    pub fn range(&self) -> RangeId {
        self.range
    }

    /// Whether the snapshot replaces a range this engine hosts (it is kept aside until
    /// installed) rather than creating one.
    pub fn replaces(&self) -> bool {
        self.target == Target::Staging
    }

    /// Checks and writes one chunk. A refused chunk writes nothing and fails the ingest.
    pub fn apply(&mut self, chunk: &[u8]) -> Result<()> {
        if self.state != IngestState::Open {
            return Err(StorageError::BadSnapshot(
                "the ingest has already failed".into(),
            ));
        }
        let result = self.apply_chunk(chunk);
        if result.is_err() {
            self.state = IngestState::Failed;
        }
        result
    }

    fn apply_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        let bad = |what: &str| StorageError::BadSnapshot(what.to_string());
        if self.complete {
            return Err(bad("a chunk after the last one"));
        }
        let mut r = open_chunk(chunk)?;
        if r.u64()? != self.range.get() {
            return Err(bad("chunk of another range"));
        }
        let applied_index = r.u64()?;
        let seq = r.u32()?;
        if seq != self.next_seq {
            return Err(StorageError::BadSnapshot(format!(
                "chunk {seq} where chunk {} was expected (missing or repeated chunk)",
                self.next_seq
            )));
        }
        let flags = r.u8()?;
        if (flags & FLAG_HEADER != 0) != (seq == 0) {
            return Err(bad("header missing from the first chunk, or repeated"));
        }
        if seq == 0 {
            let header = read_header(&mut r, flags)?;
            self.engine.check_value(&header.tag)?;
            if header.span != self.span {
                return Err(bad("snapshot of another span"));
            }
            self.header = Some(header);
            self.applied_index = applied_index;
        } else if applied_index != self.applied_index {
            return Err(bad("chunks from different snapshots"));
        }
        let Some(next_version) = self.header.as_ref().map(|h| h.next_version) else {
            return Err(bad("chunk before the header"));
        };
        let engine = &*self.engine;
        let count = r.u32()?;
        let mut batch = engine.db.batch();
        let mut seen = self.seen;
        let mut last_key = self.last_key.clone();
        for _ in 0..count {
            let key = r.bytes()?;
            let version = r.u64()?;
            let value = r.bytes()?;
            engine.check_key(key)?;
            engine.check_value(value)?;
            if !self.span.contains(key) {
                return Err(bad("entry outside the span"));
            }
            if last_key.as_deref().is_some_and(|last| last >= key) {
                return Err(bad("entries out of order"));
            }
            // A version at or above the header's counter would be issued again by a later
            // write, and compare-and-set by version relies on versions never repeating.
            if version == 0 || version >= next_version {
                return Err(bad("entry version outside 1..next_version"));
            }
            seen.add(RangeStats::of_entry(key.len(), value.len()));
            let stored = encode_value(version, value);
            match self.target {
                Target::Direct => batch.insert(&engine.data, key, stored),
                Target::Staging => {
                    batch.insert(&engine.staging, staging_key(self.range, key), stored)
                }
            }
            last_key = Some(key.to_vec());
        }
        if !r.buf.is_empty() {
            return Err(bad("trailing bytes"));
        }
        batch.commit()?;
        self.seen = seen;
        self.last_key = last_key;
        self.next_seq += 1;
        self.complete = flags & FLAG_LAST != 0;
        Ok(())
    }

    /// Installs the snapshot: [`Ingest::stage`], then [`Engine::install_staged`]. The range
    /// then serves the snapshot's contents at its applied index (in place of what it held,
    /// if it was hosted). A refused stream aborts the ingest; if only the install fails (an
    /// I/O error), the snapshot stays staged.
    pub fn finish(mut self) -> Result<RangeInfo> {
        let staged = self.stage_here()?;
        self.engine.install_staged(staged.range)
    }

    /// Keeps the whole snapshot, checked and durable, without installing it: the range
    /// serves what it served before (or nothing, if it is new) until
    /// [`Engine::install_staged`] or [`Engine::discard_staged`], and a crash leaves it staged
    /// (listed by [`Engine::staged_snapshots`]). Checks that the last chunk arrived and the
    /// totals match the header; on a refusal the ingest is aborted.
    pub fn stage(mut self) -> Result<StagedSnapshot> {
        self.stage_here()
    }

    fn stage_here(&mut self) -> Result<StagedSnapshot> {
        let result = self.stage_inner();
        match &result {
            Ok(_) => self.state = IngestState::Closed,
            Err(_) => self.state = IngestState::Failed,
        }
        result
    }

    fn stage_inner(&mut self) -> Result<StagedSnapshot> {
        if self.state != IngestState::Open {
            return Err(StorageError::BadSnapshot(
                "the ingest has already failed".into(),
            ));
        }
        let header = match (&self.header, self.complete) {
            (Some(header), true) => header.clone(),
            _ => return Err(StorageError::BadSnapshot("the stream ended early".into())),
        };
        // Estimated totals (a split that did not count) cannot be checked; what arrived is
        // counted either way, and that is what the range keeps.
        if !header.stats.estimated && header.stats != self.seen {
            return Err(StorageError::BadSnapshot(format!(
                "totals differ: header {:?}, received {:?}",
                header.stats, self.seen
            )));
        }
        match self.target {
            Target::Direct => self.engine.stage_direct(
                self.range,
                self.applied_index,
                header.next_version,
                self.seen,
                header.tag,
            ),
            Target::Staging => self.engine.stage_aside(
                self.range,
                &self.span,
                self.applied_index,
                header.next_version,
                self.seen,
                header.tag,
            ),
        }
    }

    /// Deletes what was written and leaves the engine as it was.
    pub fn abort(mut self) -> Result<()> {
        self.abort_inner()
    }

    fn abort_inner(&mut self) -> Result<()> {
        if self.state == IngestState::Closed {
            return Ok(());
        }
        self.state = IngestState::Closed;
        match self.target {
            Target::Direct => {
                let record = self.engine.slot(self.range)?.lock().record.clone();
                self.engine.clear_and_forget(&record)
            }
            Target::Staging => self.engine.drop_staging(self.range),
        }
    }
}

impl<E: Deref<Target = Engine>> Drop for Ingest<E> {
    fn drop(&mut self) {
        if let Err(e) = self.abort_inner() {
            // The range stays registered as ingesting (or its staging record as receiving);
            // the next open clears it.
            tracing::warn!(range = %self.range, error = %e, "could not abort an ingest");
        }
    }
}

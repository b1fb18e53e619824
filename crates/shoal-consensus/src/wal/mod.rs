//! A durable write-ahead log shared by many Raft groups: the [`LogStore`] for production.
//!
//! # Layout
//! A directory of segment files named by a growing id (`00000000000000000001.wal`, …). Each
//! holds records (see `record.rs`: length, CRC32C, bincode payload), each about one group:
//! appended entries, a hard state, a truncation, a compaction, an installed snapshot, or a
//! checkpoint. Only the newest segment is written; when it passes
//! [`WalConfig::segment_bytes`] the next one starts with a checkpoint of every group (hard
//! state, snapshot, log base), so older segments are needed only for the entries they hold.
//! A segment is deleted once every group has compacted away all its entries in it.
//!
//! # Group commit
//! Writes from every group go to one buffer. [`LogStore::sync`] on any group's store writes
//! the buffer and calls `fdatasync` once; the syncs of the other groups that follow find
//! nothing left to do. A driver that appends every group's ready and then syncs each store
//! pays one fsync for all of them.
//!
//! # Recovery
//! [`Wal::open`] replays the segments in order and rebuilds every group's state. A bad
//! record at the very end of the **last** segment (cut short by the end of the file, or
//! failing its checksum with nothing but zeros after it) is a torn write from a crash: the
//! segment is truncated there and the loss is reported in [`Recovery::torn`] (nothing after
//! it was ever acknowledged as synced, since a sync covers a prefix of the file). A bad
//! record with data after it, or in an **earlier** segment, is not a torn write but
//! corruption of synced data: opening fails with [`LogStoreError::Corrupt`] rather than
//! silently dropping what followed.
//!
//! # Memory
//! Per group, 32 bytes of index per entry not yet compacted, plus a cache of the newest
//! entries bounded by [`WalConfig::cache_bytes_per_group`]. Older entries are read back
//! from disk.
//!
//! After an I/O error the WAL refuses every further write: a failed `fsync` may have dropped
//! dirty pages, so retrying it could report durable what is not.

mod group;
mod record;

pub use record::RecordError;

use crate::entry::{Entry, LogIndex, Term};
use crate::snapshot::SnapshotMeta;
use crate::store::{HardState, LogStore, LogStoreError};
use group::{GroupLog, Location};
use record::{Record, HEADER_BYTES};
use shoal_core::GroupId;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How a [`Wal`] writes and what it keeps in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// A new segment starts once the current one is this large, in bytes. Default 64 MiB.
    pub segment_bytes: u64,
    /// The largest record payload, in bytes: one append's entries must fit. Default 64 MiB
    /// (the codec's own limit).
    pub max_record_bytes: usize,
    /// Newest entries kept in memory per group, in bytes of [`Entry::size`]. Default 4 MiB.
    pub cache_bytes_per_group: u64,
    /// Buffered bytes written to the file (without a sync) once the buffer passes this,
    /// bounding memory between syncs. Default 4 MiB.
    pub write_buffer_bytes: usize,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 64 << 20,
            max_record_bytes: shoal_core::codec::MAX_MESSAGE_BYTES,
            cache_bytes_per_group: 4 << 20,
            write_buffer_bytes: 4 << 20,
        }
    }
}

/// A torn write found at open and cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub segment: u64,
    /// Where the bad record started: the segment's new length.
    pub offset: u64,
    /// Bytes dropped.
    pub dropped_bytes: u64,
    /// What was wrong.
    pub reason: RecordError,
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments replayed.
    pub segments: usize,
    /// Records replayed.
    pub records: u64,
    /// The torn write cut off the end, if there was one.
    pub torn: Option<TornTail>,
    /// Groups with state in the WAL.
    pub groups: Vec<GroupId>,
}

/// Counters since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records written.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Segments started.
    pub segments_created: u64,
    /// Segments deleted after compaction.
    pub segments_deleted: u64,
    /// Entries read back from disk (cache misses).
    pub disk_reads: u64,
}

/// What a [`Wal`] takes on disk (see [`Wal::disk_usage`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalDiskUsage {
    /// Segment files, the current one included.
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// A write-ahead log shared by many groups. Cheap to clone; every clone and every
/// [`WalStore`] is a handle on the same log.
#[derive(Clone, Debug)]
pub struct Wal {
    inner: Arc<Mutex<Inner>>,
}

/// One group's [`LogStore`] inside a [`Wal`]. Once [`Wal::remove_group`] removed its group,
/// the handle (and every clone of it) reads an empty log and refuses writes with
/// [`LogStoreError::GroupRemoved`], even if the group is added again.
#[derive(Clone, Debug)]
pub struct WalStore {
    group: GroupId,
    /// The group's life this handle belongs to (see `GroupLog::incarnation`).
    incarnation: u64,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    config: WalConfig,
    groups: HashMap<GroupId, GroupLog>,
    /// Read handles of every live segment, the current one included.
    segments: BTreeMap<u64, File>,
    current: u64,
    writer: File,
    /// Bytes of the current segment already written to the file.
    written: u64,
    /// Bytes of the current segment not yet written to the file.
    buf: Vec<u8>,
    scratch: Vec<u8>,
    /// Written to the file but not yet synced.
    dirty: bool,
    /// A compaction, snapshot install or group removal was written since segments were last
    /// deleted: once it is synced, segments older than the current one may be free.
    freed: bool,
    /// The first I/O error, after which nothing more is written.
    failed: Option<String>,
    /// The incarnation the next group created by `Wal::store` gets.
    next_incarnation: u64,
    stats: WalStats,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether a bad record at the start of `rest` (the rest of the last segment) is a torn
/// append: cut short by the end of the file, or followed by nothing but zeros (blocks the
/// file system allocated but the crash left unwritten). A bad record with data after it is
/// damage to synced records, which must not be cut away.
fn is_torn_tail(rest: &[u8], reason: &RecordError) -> bool {
    let zeros_from = |at: usize| {
        rest.get(at..)
            .is_none_or(|tail| tail.iter().all(|&b| b == 0))
    };
    match reason {
        RecordError::ShortHeader(_) | RecordError::Truncated { .. } => true,
        RecordError::BadLength(_) => zeros_from(HEADER_BYTES),
        RecordError::Checksum | RecordError::Decode(_) => {
            let len = u32::from_le_bytes(rest[..4].try_into().expect("a whole header"));
            zeros_from(HEADER_BYTES + len as usize)
        }
    }
}

fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` and replays it. See the module docs for what
    /// recovery truncates and what it refuses.
    pub fn open(
        dir: impl AsRef<Path>,
        config: WalConfig,
    ) -> Result<(Wal, Recovery), LogStoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let ids = list_segments(&dir)?;
        let mut groups: HashMap<GroupId, GroupLog> = HashMap::new();
        let mut recovery = Recovery {
            segments: ids.len(),
            ..Recovery::default()
        };
        let mut segments = BTreeMap::new();
        for (i, &id) in ids.iter().enumerate() {
            let path = segment_path(&dir, id);
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let mut offset = 0usize;
            while offset < bytes.len() {
                match record::decode(&bytes[offset..], config.max_record_bytes) {
                    Ok((record, len)) => {
                        let at = Location {
                            segment: id,
                            offset: offset as u64,
                            len: len as u32,
                            nth: 0,
                        };
                        replay(&mut groups, record, at, config.cache_bytes_per_group).map_err(
                            |e| {
                                LogStoreError::Corrupt(format!(
                                    "WAL segment {} at offset {offset}: {e}",
                                    path.display()
                                ))
                            },
                        )?;
                        recovery.records += 1;
                        offset += len;
                    }
                    Err(reason)
                        if i + 1 == ids.len() && is_torn_tail(&bytes[offset..], &reason) =>
                    {
                        tracing::warn!(segment = id, offset, %reason, "torn write at the end of the WAL; truncating");
                        let file = OpenOptions::new().write(true).open(&path)?;
                        file.set_len(offset as u64)?;
                        file.sync_all()?;
                        recovery.torn = Some(TornTail {
                            segment: id,
                            offset: offset as u64,
                            dropped_bytes: (bytes.len() - offset) as u64,
                            reason,
                        });
                        break;
                    }
                    Err(reason) => {
                        return Err(LogStoreError::Corrupt(format!(
                            "WAL segment {} is damaged at offset {offset} ({reason}) and data follows, so this is not a torn write",
                            path.display()
                        )));
                    }
                }
            }
            segments.insert(id, File::open(&path)?);
        }
        if let Some((group, _)) = groups.iter().find(|(_, g)| !g.base_known) {
            return Err(LogStoreError::Corrupt(format!(
                "group {group}: entries follow a deleted segment with no record of the term before them"
            )));
        }
        let current = ids.last().copied().unwrap_or(1);
        let path = segment_path(&dir, current);
        let writer = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = writer.metadata()?.len();
        if ids.is_empty() {
            sync_dir(&dir)?;
            segments.insert(current, File::open(&path)?);
        }
        recovery.groups = groups.keys().copied().collect();
        recovery.groups.sort_unstable();
        let inner = Inner {
            dir,
            config,
            groups,
            segments,
            current,
            writer,
            written,
            buf: Vec::new(),
            scratch: Vec::new(),
            dirty: false,
            failed: None,
            freed: false,
            next_incarnation: 1,
            stats: WalStats {
                segments_created: u64::from(ids.is_empty()),
                ..WalStats::default()
            },
        };
        Ok((
            Wal {
                inner: Arc::new(Mutex::new(inner)),
            },
            recovery,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The store of `group`, with whatever the WAL holds for it (nothing for a new group).
    /// For a group removed with [`Wal::remove_group`], this starts it afresh; handles taken
    /// before the removal stay refused.
    pub fn store(&self, group: GroupId) -> WalStore {
        let mut inner = self.lock();
        let existing = inner.groups.get(&group).map(|g| g.incarnation);
        let incarnation = match existing {
            Some(incarnation) => incarnation,
            None => {
                let incarnation = inner.next_incarnation;
                inner.next_incarnation += 1;
                inner.groups.insert(group, GroupLog::new(incarnation));
                incarnation
            }
        };
        WalStore {
            group,
            incarnation,
            inner: self.inner.clone(),
        }
    }

    /// Groups with state in the WAL.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut groups: Vec<GroupId> = self.lock().groups.keys().copied().collect();
        groups.sort_unstable();
        groups
    }

    /// Removes a group and everything it wrote (durable at the next sync; its segments are
    /// deleted once no other group needs them). Its store handles refuse writes from now on.
    pub fn remove_group(&self, group: GroupId) -> Result<(), LogStoreError> {
        let mut inner = self.lock();
        inner.write(&Record::RemoveGroup { group })?;
        inner.groups.remove(&group);
        inner.freed = true;
        Ok(())
    }

    /// Makes every write so far durable, for every group, with one `fdatasync`.
    pub fn sync(&self) -> Result<(), LogStoreError> {
        self.lock().sync()
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        self.lock().stats
    }

    /// What the WAL takes on disk now: its segments and their bytes (the current segment's
    /// buffered tail included).
    pub fn disk_usage(&self) -> WalDiskUsage {
        let wal = self.lock();
        let older: u64 = wal
            .segments
            .iter()
            .filter(|(&id, _)| id != wal.current)
            .map(|(_, file)| file.metadata().map_or(0, |m| m.len()))
            .sum();
        WalDiskUsage {
            segments: wal.segments.len(),
            bytes: older + wal.written + wal.buf.len() as u64,
        }
    }

    /// The groups holding entries in a segment older than the current one: what keeps old
    /// segments on disk. Once each compacts through those entries, the segments go at the
    /// next sync.
    pub fn groups_in_old_segments(&self) -> Vec<GroupId> {
        let wal = self.lock();
        wal.groups
            .iter()
            .filter(|(_, g)| g.first_segment().is_some_and(|s| s < wal.current))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Ids of the segments on disk, oldest first.
    pub fn segments(&self) -> Vec<u64> {
        self.lock().segments.keys().copied().collect()
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves the in-memory state possibly half-updated, but
    // every write checks `failed` first and the disk holds only whole records.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// Applies one recovered record to the groups.
/// A whole, checksummed record that still makes no sense (only a bug or a forged file can
/// write one) is refused rather than trusted.
fn replay(
    groups: &mut HashMap<GroupId, GroupLog>,
    record: Record,
    at: Location,
    cache: u64,
) -> Result<(), String> {
    let group = record.group();
    if let Record::RemoveGroup { .. } = record {
        groups.remove(&group);
        return Ok(());
    }
    let g = groups.entry(group).or_default();
    match record {
        Record::Entries { entries, .. } => {
            if entries.first().is_some_and(|e| e.index == 0)
                || entries.windows(2).any(|w| w[1].index != w[0].index + 1)
            {
                return Err(format!(
                    "group {group}: entries at index 0 or not consecutive"
                ));
            }
            let locations = (0..entries.len() as u32).map(|nth| Location { nth, ..at });
            g.append(&entries, locations, cache);
        }
        Record::HardState { state, .. } => g.hard_state = state,
        Record::Truncate { from, .. } => g.truncate(from),
        Record::Compact {
            snapshot,
            through,
            term,
            ..
        } => {
            g.record_snapshot(&snapshot);
            g.compact(through, term);
        }
        Record::InstallSnapshot { meta, .. } => g.install(meta),
        Record::Checkpoint {
            hard_state,
            snapshot,
            base,
            ..
        } => {
            g.hard_state = hard_state;
            g.record_snapshot(&snapshot);
            g.compact(base.0, base.1);
        }
        Record::RemoveGroup { .. } => unreachable!("handled above"),
    }
    Ok(())
}

impl Inner {
    fn check(&self) -> Result<(), LogStoreError> {
        match &self.failed {
            Some(e) => Err(LogStoreError::Io(std::io::Error::other(format!(
                "the WAL failed earlier and takes no more writes: {e}"
            )))),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: std::io::Error) -> LogStoreError {
        tracing::error!(error = %e, "WAL I/O failed; refusing further writes");
        self.failed = Some(e.to_string());
        LogStoreError::Io(e)
    }

    /// Buffers one record in the current segment; returns where it starts and its length.
    fn write(&mut self, record: &Record) -> Result<(u64, u32), LogStoreError> {
        self.check()?;
        let offset = self.written + self.buf.len() as u64;
        let len = record::encode(
            record,
            &mut self.buf,
            &mut self.scratch,
            self.config.max_record_bytes,
        )
        .map_err(|e| LogStoreError::InvalidWrite(format!("record too large for the WAL: {e}")))?;
        self.stats.records += 1;
        self.stats.bytes += len as u64;
        if self.buf.len() >= self.config.write_buffer_bytes {
            self.flush()?;
        }
        Ok((offset, len as u32))
    }

    /// Writes the buffer to the file, without syncing.
    fn flush(&mut self) -> Result<(), LogStoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.writer.write_all(&self.buf) {
            return Err(self.fail(e));
        }
        self.written += self.buf.len() as u64;
        self.buf.clear();
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogStoreError> {
        self.check()?;
        self.flush()?;
        if self.dirty {
            if let Err(e) = self.writer.sync_data() {
                return Err(self.fail(e));
            }
            self.dirty = false;
            self.stats.syncs += 1;
        }
        if self.written >= self.config.segment_bytes {
            self.rotate()?;
        } else if self.freed && self.segments.len() > 1 {
            // What dropped the entries is durable now, and the current segment's checkpoint
            // (synced when it started) holds every group's state as of then.
            self.delete_unneeded();
        }
        Ok(())
    }

    /// Starts the next segment with a checkpoint of every group, then deletes the segments
    /// no group needs any more.
    fn rotate(&mut self) -> Result<(), LogStoreError> {
        let id = self.current + 1;
        let path = segment_path(&self.dir, id);
        let opened = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .and_then(|w| Ok((w, File::open(&path)?)))
            .and_then(|files| sync_dir(&self.dir).map(|()| files));
        let (writer, reader) = match opened {
            Ok(files) => files,
            Err(e) => return Err(self.fail(e)),
        };
        self.writer = writer;
        self.segments.insert(id, reader);
        self.current = id;
        self.written = 0;
        self.stats.segments_created += 1;
        let checkpoints: Vec<Record> = self
            .groups
            .iter()
            .map(|(&group, g)| Record::Checkpoint {
                group,
                hard_state: g.hard_state,
                snapshot: g.snapshot.clone(),
                base: g.base(),
            })
            .collect();
        for record in &checkpoints {
            self.write(record)?;
        }
        self.flush()?;
        if let Err(e) = self.writer.sync_data() {
            return Err(self.fail(e));
        }
        self.dirty = false;
        self.stats.syncs += 1;
        self.delete_unneeded();
        Ok(())
    }

    /// Deletes segments before the oldest one still holding a group's entry. Only after a
    /// rotation's checkpoint is synced, so what those segments held about hard states and
    /// snapshots is in a newer segment.
    fn delete_unneeded(&mut self) {
        self.freed = false;
        let keep_from = self
            .groups
            .values()
            .filter_map(GroupLog::first_segment)
            .min()
            .unwrap_or(self.current)
            .min(self.current);
        let doomed: Vec<u64> = self
            .segments
            .range(..keep_from)
            .map(|(&id, _)| id)
            .collect();
        for id in doomed {
            self.segments.remove(&id);
            match std::fs::remove_file(segment_path(&self.dir, id)) {
                Ok(()) => self.stats.segments_deleted += 1,
                Err(e) => {
                    tracing::warn!(segment = id, error = %e, "could not delete a WAL segment")
                }
            }
        }
    }

    /// A group's state as a handle of `incarnation` sees it: a group removed since the
    /// handle was taken (and perhaps added again) reads as empty.
    fn group(&self, group: GroupId, incarnation: u64) -> &GroupLog {
        static REMOVED: std::sync::LazyLock<GroupLog> = std::sync::LazyLock::new(GroupLog::default);
        self.groups
            .get(&group)
            .filter(|g| g.incarnation == incarnation)
            .unwrap_or(&REMOVED)
    }

    /// A group's state, for a handle of `incarnation` to write: refused for a group removed
    /// since the handle was taken, which a write would otherwise bring back half-made, in
    /// memory and in the WAL (where recovery would then find entries with no start).
    fn live_group(
        &mut self,
        group: GroupId,
        incarnation: u64,
    ) -> Result<&mut GroupLog, LogStoreError> {
        self.groups
            .get_mut(&group)
            .filter(|g| g.incarnation == incarnation)
            .ok_or(LogStoreError::GroupRemoved(group))
    }

    /// Reads back the entries of the record at `at`.
    fn read_record(&self, at: Location) -> Result<Vec<Entry>, LogStoreError> {
        let mut bytes = vec![0; at.len as usize];
        if at.segment == self.current && at.offset >= self.written {
            let start = (at.offset - self.written) as usize;
            bytes.copy_from_slice(&self.buf[start..start + at.len as usize]);
        } else {
            let file = self.segments.get(&at.segment).ok_or_else(|| {
                LogStoreError::Corrupt(format!("WAL segment {} is gone", at.segment))
            })?;
            file.read_exact_at(&mut bytes, at.offset)?;
        }
        match record::decode(&bytes, self.config.max_record_bytes) {
            Ok((Record::Entries { entries, .. }, _)) => Ok(entries),
            Ok((other, _)) => Err(LogStoreError::Corrupt(format!(
                "expected entries at segment {} offset {}, found {other:?}",
                at.segment, at.offset
            ))),
            Err(e) => Err(LogStoreError::Corrupt(format!(
                "WAL segment {} offset {}: {e}",
                at.segment, at.offset
            ))),
        }
    }
}

impl WalStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The group this store belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Counters of the shared WAL.
    pub fn wal_stats(&self) -> WalStats {
        self.lock().stats
    }
}

impl LogStore for WalStore {
    fn hard_state(&self) -> HardState {
        self.lock().group(self.group, self.incarnation).hard_state
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.lock()
            .group(self.group, self.incarnation)
            .snapshot
            .clone()
    }

    fn first_index(&self) -> LogIndex {
        self.lock()
            .group(self.group, self.incarnation)
            .first_index()
    }

    fn last_index(&self) -> LogIndex {
        self.lock().group(self.group, self.incarnation).last_index()
    }

    fn term(&self, index: LogIndex) -> Result<Term, LogStoreError> {
        self.lock().group(self.group, self.incarnation).term(index)
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogStoreError> {
        let mut inner = self.lock();
        let g = inner.group(self.group, self.incarnation);
        if lo >= hi {
            return Ok(Vec::new());
        }
        g.location(lo)?;
        g.location(hi - 1)?;
        let mut out: Vec<Entry> = Vec::new();
        let mut total = 0u64;
        let mut decoded: Option<(Location, Vec<Entry>)> = None;
        let mut disk_reads = 0;
        for index in lo..hi {
            let entry = match g.cached(index) {
                Some(e) => e.clone(),
                None => {
                    let at = g.location(index)?;
                    let same = decoded
                        .as_ref()
                        .is_some_and(|(d, _)| (d.segment, d.offset) == (at.segment, at.offset));
                    if !same {
                        decoded = Some((at, inner.read_record(at)?));
                    }
                    disk_reads += 1;
                    let (_, entries) = decoded.as_ref().expect("decoded above");
                    entries
                        .get(at.nth as usize)
                        .filter(|e| e.index == index)
                        .cloned()
                        .ok_or_else(|| {
                            LogStoreError::Corrupt(format!(
                                "entry {index} is not where the index says"
                            ))
                        })?
                }
            };
            total += entry.size();
            if !out.is_empty() && total > max_bytes {
                break;
            }
            out.push(entry);
        }
        inner.stats.disk_reads += disk_reads;
        Ok(out)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), LogStoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut inner = self.lock();
        inner.live_group(self.group, self.incarnation)?;
        let g = inner.group(self.group, self.incarnation);
        if !g.can_append_at(first.index) || entries.windows(2).any(|w| w[1].index != w[0].index + 1)
        {
            return Err(LogStoreError::InvalidWrite(format!(
                "append at {} to a log of {}..={}",
                first.index,
                g.first_index(),
                g.last_index()
            )));
        }
        let (offset, len) = inner.write(&Record::Entries {
            group: self.group,
            entries: entries.to_vec(),
        })?;
        let at = Location {
            segment: inner.current,
            offset,
            len,
            nth: 0,
        };
        let cache = inner.config.cache_bytes_per_group;
        inner.live_group(self.group, self.incarnation)?.append(
            entries,
            (0..entries.len() as u32).map(|nth| Location { nth, ..at }),
            cache,
        );
        Ok(())
    }

    fn truncate(&mut self, from: LogIndex) -> Result<(), LogStoreError> {
        let mut inner = self.lock();
        if from > inner.live_group(self.group, self.incarnation)?.last_index() {
            return Ok(());
        }
        inner.write(&Record::Truncate {
            group: self.group,
            from,
        })?;
        inner
            .live_group(self.group, self.incarnation)?
            .truncate(from);
        Ok(())
    }

    fn set_hard_state(&mut self, state: HardState) -> Result<(), LogStoreError> {
        let mut inner = self.lock();
        if inner.live_group(self.group, self.incarnation)?.hard_state == state {
            return Ok(());
        }
        inner.write(&Record::HardState {
            group: self.group,
            state,
        })?;
        inner.live_group(self.group, self.incarnation)?.hard_state = state;
        Ok(())
    }

    fn compact(&mut self, snapshot: &SnapshotMeta, through: LogIndex) -> Result<(), LogStoreError> {
        let mut inner = self.lock();
        let g = inner.live_group(self.group, self.incarnation)?;
        if through > g.last_index() {
            return Err(LogStoreError::InvalidWrite(format!(
                "compact through {through} past the last index {}",
                g.last_index()
            )));
        }
        let (base, _) = g.base();
        let term = if through <= base {
            g.base().1
        } else {
            g.term(through)?
        };
        let through = through.max(base);
        inner.write(&Record::Compact {
            group: self.group,
            snapshot: snapshot.clone(),
            through,
            term,
        })?;
        let g = inner.live_group(self.group, self.incarnation)?;
        g.record_snapshot(snapshot);
        g.compact(through, term);
        inner.freed = true;
        Ok(())
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), LogStoreError> {
        let mut inner = self.lock();
        inner.live_group(self.group, self.incarnation)?;
        inner.write(&Record::InstallSnapshot {
            group: self.group,
            meta: meta.clone(),
        })?;
        inner
            .live_group(self.group, self.incarnation)?
            .install(meta);
        inner.freed = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogStoreError> {
        self.lock().sync()
    }
}

#[cfg(test)]
mod tests;

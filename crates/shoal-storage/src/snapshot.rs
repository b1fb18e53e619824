//! Range snapshots as a stream of self-checking chunks, and their atomic ingestion.
//!
//! A chunk on the wire (integers big-endian):
//!
//! ```text
//! "SHSC" | format u8 = 1 | range u64 | applied_index u64 | seq u32 | flags u8
//!        | [header, if flags & HEADER] | count u32 | count × entry | blake3 of all before (32)
//! header = start_len u32 | start | has_end u8 | [end_len u32 | end]
//!        | next_version u64 | live_keys u64 | live_bytes u64
//! entry  = key_len u32 | key | version u64 | value_len u32 | value
//! ```
//!
//! Chunk 0 carries the header (the span and the totals the receiver checks at the end); the
//! last chunk has the `LAST` flag. Sequence numbers make a missing, repeated or reordered
//! chunk detectable; the checksum, a damaged one.

use crate::engine::{Engine, MAX_VERSION};
use crate::error::{Result, StorageError};
use crate::layout::{decode_value, encode_value, RangeRecord};
use crate::range_info::{RangeInfo, RangeStats, RangeStatus};
use crate::view::RangeView;
use shoal_core::{KeyRange, RangeEnd, RangeId};

/// The most bytes one chunk may take (16 MiB, the wire's frame limit).
pub const MAX_CHUNK_BYTES: usize = 16 << 20;

const MAGIC: &[u8; 4] = b"SHSC";
const FORMAT: u8 = 1;
const FLAG_LAST: u8 = 1;
const FLAG_HEADER: u8 = 2;
const CHECKSUM_LEN: usize = 32;

/// What chunk 0 says about the whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    span: KeyRange,
    next_version: u64,
    stats: RangeStats,
}

/// A range's contents at one point, as chunks of about `target_bytes` each (always at least
/// one entry per chunk; at least one chunk, even for an empty range). Reads lazily from a
/// [`RangeView`], so writes continue meanwhile.
pub struct SnapshotStream {
    view: RangeView,
    iter: fjall::Iter,
    target_bytes: usize,
    seq: u32,
    done: bool,
}

impl Engine {
    /// Streams range `range` at this point in time, in chunks of about `target_bytes`
    /// (clamped to `1 KiB..=8 MiB`).
    pub fn snapshot_stream(&self, range: RangeId, target_bytes: usize) -> Result<SnapshotStream> {
        let view = self.view(range)?;
        let iter = view.iter_all();
        Ok(SnapshotStream {
            view,
            iter,
            target_bytes: target_bytes.clamp(1024, MAX_CHUNK_BYTES / 2),
            seq: 0,
            done: false,
        })
    }

    /// Starts ingesting a snapshot into a new range `range` over `span`. The range is
    /// registered (durably) as ingesting: it serves nothing and, should the process crash,
    /// is cleared at the next open. Refused if the id is hosted or the span overlaps.
    pub fn ingest(&self, range: RangeId, span: KeyRange) -> Result<Ingest<'_>> {
        self.add_range(range, span.clone(), RangeStatus::Ingesting, 0)?;
        Ok(Ingest {
            engine: self,
            range,
            span,
            next_seq: 0,
            header: None,
            applied_index: 0,
            seen: RangeStats::default(),
            last_key: None,
            complete: false,
            state: IngestState::Open,
        })
    }
}

impl SnapshotStream {
    /// The applied index the snapshot was taken at.
    pub fn applied_index(&self) -> u64 {
        self.view.applied_index()
    }

    fn next_chunk(&mut self) -> Result<Vec<u8>> {
        let record = self.view.record();
        let mut out = Vec::with_capacity(self.target_bytes + 4096);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&record.id.get().to_be_bytes());
        out.extend_from_slice(&record.applied_index.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        let flags_at = out.len();
        out.push(0);
        let mut flags = 0;
        if self.seq == 0 {
            flags |= FLAG_HEADER;
            put_bytes(&mut out, record.span.start());
            match record.span.end() {
                RangeEnd::Key(end) => {
                    out.push(1);
                    put_bytes(&mut out, end);
                }
                RangeEnd::Unbounded => out.push(0),
            }
            out.extend_from_slice(&record.next_version.to_be_bytes());
            out.extend_from_slice(&record.stats.live_keys.to_be_bytes());
            out.extend_from_slice(&record.stats.live_bytes.to_be_bytes());
        }
        let count_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut count = 0u32;
        loop {
            if count > 0 && out.len() >= self.target_bytes {
                break;
            }
            let Some(guard) = self.iter.next() else {
                flags |= FLAG_LAST;
                self.done = true;
                break;
            };
            let (key, stored) = guard.into_inner()?;
            let (version, value) = decode_value(&stored)?;
            put_bytes(&mut out, &key);
            out.extend_from_slice(&version.to_be_bytes());
            put_bytes(&mut out, value);
            count += 1;
        }
        out[flags_at] = flags;
        out[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        self.seq += 1;
        Ok(out)
    }
}

impl Iterator for SnapshotStream {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let chunk = self.next_chunk();
        if chunk.is_err() {
            self.done = true;
        }
        Some(chunk)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are far below 4 GiB (limits are checked on every write).
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Where an ingest stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IngestState {
    Open,
    /// A chunk was refused; only aborting is left.
    Failed,
    /// Finished or aborted.
    Closed,
}

/// A snapshot being ingested into a new range (see [`Engine::ingest`]). Feed it every chunk
/// in order with [`Ingest::apply`], then [`Ingest::finish`]: only then does the range serve,
/// with the snapshot's applied index. Dropping it unfinished (or a refused chunk followed
/// by a drop) deletes what was written and forgets the range.
pub struct Ingest<'e> {
    engine: &'e Engine,
    range: RangeId,
    span: KeyRange,
    next_seq: u32,
    header: Option<Header>,
    applied_index: u64,
    seen: RangeStats,
    last_key: Option<Vec<u8>>,
    complete: bool,
    state: IngestState,
}

impl Ingest<'_> {
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
        if chunk.len() > MAX_CHUNK_BYTES {
            return Err(bad("chunk over 16 MiB"));
        }
        let body_len = chunk
            .len()
            .checked_sub(CHECKSUM_LEN)
            .ok_or_else(|| bad("chunk too short"))?;
        let (body, checksum) = chunk.split_at(body_len);
        if blake3::hash(body).as_bytes() != checksum {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Reader { buf: body };
        if r.take(4)? != MAGIC || r.u8()? != FORMAT {
            return Err(bad("not a snapshot chunk of a known format"));
        }
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
            let header = read_header(&mut r)?;
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
        let engine = self.engine;
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
            batch.insert(&engine.data, key, encode_value(version, value));
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

    /// Makes the range serve the ingested snapshot: checks that the last chunk arrived and
    /// the totals match the header, then, in one synced write, marks the range active at
    /// the snapshot's applied index. On a refusal the ingest is aborted.
    pub fn finish(mut self) -> Result<RangeInfo> {
        let result = self.finish_inner();
        if result.is_err() {
            self.state = IngestState::Failed;
        }
        result
    }

    fn finish_inner(&mut self) -> Result<RangeInfo> {
        if self.state != IngestState::Open {
            return Err(StorageError::BadSnapshot(
                "the ingest has already failed".into(),
            ));
        }
        let header = match (&self.header, self.complete) {
            (Some(header), true) => header.clone(),
            _ => return Err(StorageError::BadSnapshot("the stream ended early".into())),
        };
        if header.stats != self.seen {
            return Err(StorageError::BadSnapshot(format!(
                "totals differ: header {:?}, received {:?}",
                header.stats, self.seen
            )));
        }
        let record = RangeRecord {
            id: self.range,
            span: self.span.clone(),
            status: RangeStatus::Active,
            applied_index: self.applied_index,
            next_version: header.next_version,
            stats: self.seen,
        };
        let engine = self.engine;
        let slot = engine.slot(self.range)?;
        let mut state = slot.lock();
        engine.commit_records(&[&record], &[])?;
        state.record = record;
        self.state = IngestState::Closed;
        Ok(state.info())
    }

    /// Deletes what was written and forgets the range.
    pub fn abort(mut self) -> Result<()> {
        self.abort_inner()
    }

    fn abort_inner(&mut self) -> Result<()> {
        if self.state == IngestState::Closed {
            return Ok(());
        }
        self.state = IngestState::Closed;
        let record = self.engine.slot(self.range)?.lock().record.clone();
        self.engine.clear_and_forget(&record)
    }
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.abort_inner() {
            // The range stays registered as ingesting; the next open clears it.
            tracing::warn!(range = %self.range, error = %e, "could not abort an ingest");
        }
    }
}

fn read_header(r: &mut Reader<'_>) -> Result<Header> {
    let start = r.bytes()?.to_vec();
    let end = match r.u8()? {
        0 => RangeEnd::Unbounded,
        1 => RangeEnd::Key(r.bytes()?.to_vec()),
        _ => return Err(StorageError::BadSnapshot("bad span end tag".into())),
    };
    let span = KeyRange::new(start, end).map_err(|e| StorageError::BadSnapshot(e.to_string()))?;
    let next_version = r.u64()?;
    if next_version == 0 || next_version > MAX_VERSION + 1 {
        return Err(StorageError::BadSnapshot(format!(
            "next version {next_version} outside 1..={}",
            MAX_VERSION + 1
        )));
    }
    Ok(Header {
        span,
        next_version,
        stats: RangeStats {
            live_keys: r.u64()?,
            live_bytes: r.u64()?,
        },
    })
}

/// Bounds-checked reads from a chunk.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(StorageError::BadSnapshot("chunk truncated".into()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

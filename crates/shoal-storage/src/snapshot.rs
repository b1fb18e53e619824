//! Range snapshots as a stream of self-checking chunks (taken in by `ingest.rs`).
//!
//! A chunk on the wire (integers big-endian):
//!
//! ```text
//! "SHSC" | format u8 = 2 | range u64 | applied_index u64 | seq u32 | flags u8
//!        | [header, if flags & HEADER] | count u32 | count × entry | blake3 of all before (32)
//! header = start_len u32 | start | has_end u8 | [end_len u32 | end]
//!        | next_version u64 | live_keys u64 | live_bytes u64 | tag_len u32 | tag
//! entry  = key_len u32 | key | version u64 | value_len u32 | value
//! ```
//!
//! Chunk 0 carries the header (the span and the totals the receiver checks at the end); the
//! last chunk has the `LAST` flag. Sequence numbers make a missing, repeated or reordered
//! chunk detectable; the checksum, a damaged one.

use crate::engine::{Engine, MAX_VERSION};
use crate::error::{Result, StorageError};
use crate::layout::decode_value;
use crate::range_info::RangeStats;
use crate::view::RangeView;
use shoal_core::{KeyRange, RangeEnd, RangeId};

/// The most bytes one chunk may take (16 MiB, the wire's frame limit).
pub const MAX_CHUNK_BYTES: usize = 16 << 20;

pub(crate) const MAGIC: &[u8; 4] = b"SHSC";
pub(crate) const FORMAT: u8 = 2;
pub(crate) const FLAG_LAST: u8 = 1;
pub(crate) const FLAG_HEADER: u8 = 2;
/// The header's stats are an estimate ([`RangeStats::estimated`]): the receiver keeps what it
/// counts instead of checking it against them.
pub(crate) const FLAG_STATS_ESTIMATED: u8 = 4;
pub(crate) const CHECKSUM_LEN: usize = 32;

/// What chunk 0 says about the whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) span: KeyRange,
    pub(crate) next_version: u64,
    pub(crate) stats: RangeStats,
    pub(crate) tag: Vec<u8>,
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
}

/// What the first chunk of a snapshot stream says about it: the range, the applied index it
/// was taken at and the span it covers, so a receiver can open an [`Engine::ingest`] for it.
/// Refused unless `chunk` is an intact first chunk.
pub fn snapshot_header(chunk: &[u8]) -> Result<(RangeId, u64, KeyRange)> {
    let mut r = open_chunk(chunk)?;
    let range = RangeId::new(r.u64()?);
    let applied_index = r.u64()?;
    let seq = r.u32()?;
    let flags = r.u8()?;
    if seq != 0 || flags & FLAG_HEADER == 0 {
        return Err(StorageError::BadSnapshot("not the first chunk".into()));
    }
    Ok((range, applied_index, read_header(&mut r, flags)?.span))
}

/// Checks a chunk's size, checksum, magic and format; returns a reader at its range id.
pub(crate) fn open_chunk(chunk: &[u8]) -> Result<Reader<'_>> {
    let bad = |what: &str| StorageError::BadSnapshot(what.to_string());
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
    Ok(r)
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
            if record.stats.estimated {
                flags |= FLAG_STATS_ESTIMATED;
            }
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
            put_bytes(&mut out, &record.tag);
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

pub(crate) fn read_header(r: &mut Reader<'_>, flags: u8) -> Result<Header> {
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
    let stats = RangeStats {
        live_keys: r.u64()?,
        live_bytes: r.u64()?,
        estimated: flags & FLAG_STATS_ESTIMATED != 0,
    };
    let tag = r.bytes()?.to_vec();
    Ok(Header {
        span,
        next_version,
        stats,
        tag,
    })
}

/// Bounds-checked reads from a chunk.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
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

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

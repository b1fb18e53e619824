//! An ordered index from range start keys to entries, built for floor lookups ("the last
//! range starting at or before this key") at hundreds of thousands of entries.
//!
//! A binary search over heap-allocated keys chases a pointer per probe: at 100,000 keys that
//! is about half a microsecond of cache misses (a `BTreeMap<Vec<u8>, _>` is no better). This
//! index is a two-level B+tree with prefix truncation, the way database B-trees compress
//! keys: entries sit in sorted chunks of at most [`CHUNK_CAP`]; each chunk keeps the prefix
//! all its keys share and, inline, the next 8 bytes of every key; the top level keeps the
//! prefix shared by the chunks' first keys and the next 8 bytes of each. A lookup compares
//! those fixed-width integers and reads a full key only when two of them tie, which is rare
//! for real key schemas and always correct. An insert or removal moves at most one chunk's
//! entries and one summary entry, so updates stay cheap at any size.
//!
//! The search is laid out for memory latency, which is what a lookup over 100,000 ranges
//! pays for. Every count is a search of fan-out 8 whose compares within a level are
//! independent (no branch on a coin toss, loads issued together). A chunk's integers live in
//! the chunks' own array, behind one cache line holding the chunk's prefix length and the
//! last integer of each block of 8 ([`ChunkParts`]): from the chunk's number, a lookup reads
//! that line, then one block's line while the entries that block can end on are prefetched,
//! two round trips to memory with no pointer loaded first.

use crate::prefetch::prefetch;
use std::cmp::Ordering;
use std::marker::PhantomData;
use std::ops::Deref;

/// What the index stores: anything that knows its start key.
pub(crate) trait Keyed {
    /// The entry's inclusive start key; it orders the index.
    fn start(&self) -> &[u8];

    /// `self.start().len()`, for entries that can say it without reading the key.
    fn start_len(&self) -> usize {
        self.start().len()
    }
}

/// The most entries one chunk holds before it splits in two.
pub(crate) const CHUNK_CAP: usize = 56;

/// The longest prefix a summary keeps, so that its length fits a chunk's `u32` copy.
const MAX_PREFIX: usize = u32::MAX as usize;

/// Chunks smaller than this try to merge with a neighbour after a removal.
const CHUNK_MIN: usize = CHUNK_CAP / 4;

/// A fixed-width, order-preserving summary of the bytes after a shared prefix: the first
/// bytes, big-endian, zero-padded. For keys `a < b` sharing their first `skip` bytes,
/// `at(a, skip) <= at(b, skip)`.
trait Part: Copy + Ord {
    /// How many bytes a part holds.
    const WIDTH: usize;

    /// The part of the bytes of `key` after its first `skip`.
    fn at(key: &[u8], skip: usize) -> Self;
}

impl Part for u64 {
    const WIDTH: usize = 8;

    #[inline]
    fn at(key: &[u8], skip: usize) -> Self {
        let suffix = key.get(skip..).unwrap_or_default();
        // One load when the bytes are there.
        if let Some(bytes) = suffix.first_chunk::<8>() {
            return u64::from_be_bytes(*bytes);
        }
        // A short suffix of a key of 8 bytes or more: load the key's last 8 bytes and shift
        // the suffix's to the top. No copy through a stack buffer (a call to `memcpy` and a
        // store-to-load stall on every lookup of a short key).
        let n = suffix.len();
        if let Some(tail) = key.last_chunk::<8>() {
            let shift = u32::try_from(8 * (8 - n)).unwrap_or(64);
            return u64::from_be_bytes(*tail).checked_shl(shift).unwrap_or(0);
        }
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(suffix);
        u64::from_be_bytes(buf)
    }
}

/// The length of the longest common prefix of `a` and `b`.
fn common_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The first index in `0..len` for which `pred` is false, `pred` being true then false.
#[inline]
fn partition(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// How many of the sorted `parts` are below `kp`, by a search of fan-out 8: each level
/// compares the last part of each of (at most 8) blocks and narrows to the first block that
/// is not wholly below, then the last block of at most 8 parts is counted. The compares of a
/// level are independent (their loads are fetched together, and no branch depends on them):
/// the top level's 1,800 parts at 100,000 ranges cost four rounds of loads, where a binary
/// search costs eleven dependent ones, half of them behind a mispredicted branch.
#[inline]
fn count_below<P: Part>(parts: &[P], kp: P) -> usize {
    const FAN: usize = 8;
    let (mut lo, mut hi) = (0, parts.len());
    let mut stride = FAN;
    while stride * FAN < hi {
        stride *= FAN;
    }
    while stride > 1 {
        let mut below = 0;
        let mut at = lo + stride - 1;
        while at < hi {
            below += usize::from(parts[at] < kp);
            at += stride;
        }
        lo += below * stride;
        hi = hi.min(lo + stride);
        stride /= FAN;
    }
    lo + parts[lo..hi]
        .iter()
        .map(|&p| usize::from(p < kp))
        .sum::<usize>()
}

/// Where a [`Summary`] keeps its parts: a vector (the top level, any length) or an array
/// inside the chunk ([`ChunkParts`]).
trait PartList<P: Part>: Default + Deref<Target = [P]> {
    fn clear(&mut self);
    fn push(&mut self, part: P);
    fn insert(&mut self, pos: usize, part: P);
    fn remove(&mut self, pos: usize);
    fn set(&mut self, pos: usize, part: P);

    /// How many of the parts are below `kp`. `warm` is told, as early as the list knows
    /// it, the first of the few positions (at most [`BLOCK`]) the answer is narrowed to.
    #[inline]
    fn count_below(&self, kp: P, warm: impl FnOnce(usize)) -> usize {
        let _ = warm;
        count_below(self, kp)
    }

    /// The length of the summary's `prefix`, which a list may keep a copy of, next to what
    /// a lookup reads first.
    #[inline]
    fn prefix_len(&self, prefix: &[u8]) -> usize {
        prefix.len()
    }

    /// Takes note that the summary's prefix is now `len` bytes long.
    fn prefix_changed(&mut self, _len: usize) {}
}

impl<P: Part> PartList<P> for Vec<P> {
    fn clear(&mut self) {
        Vec::clear(self);
    }

    fn push(&mut self, part: P) {
        Vec::push(self, part);
    }

    fn insert(&mut self, pos: usize, part: P) {
        Vec::insert(self, pos, part);
    }

    fn remove(&mut self, pos: usize) {
        Vec::remove(self, pos);
    }

    fn set(&mut self, pos: usize, part: P) {
        self[pos] = part;
    }
}

/// How many parts a [`ChunkParts`] block holds; one block's last part is one sample.
const BLOCK: usize = 8;

/// A chunk's parts, held in the chunk itself rather than in an allocation of their own,
/// behind one cache line holding everything a lookup reads first: the length of the prefix
/// and the last part of each full block of [`BLOCK`]. A lookup goes from the chunk's number
/// straight to that line, compares its samples to find the block, then compares that
/// block's line: two dependent cache lines per chunk searched, and no pointer to load first.
/// Room for [`CHUNK_CAP`] + 1 parts, the most a chunk holds (just before it splits).
#[repr(C, align(64))]
struct ChunkParts {
    /// `samples[j]` is `parts[BLOCK * j + BLOCK - 1]`, or `u64::MAX` where block `j` is not
    /// full, so the samples below a key count the full blocks below it. The last block, of
    /// the one part over [`CHUNK_CAP`], needs no sample: nothing comes after it.
    samples: [u64; CHUNK_CAP / BLOCK],
    /// A copy of the summary's prefix length (at most [`MAX_PREFIX`]).
    prefix_len: u32,
    len: u32,
    parts: [u64; CHUNK_CAP + 1],
}

// The samples, the prefix length and the length share the first cache line.
const _: () = assert!(CHUNK_CAP.is_multiple_of(BLOCK) && CHUNK_CAP / BLOCK * 8 + 8 <= 64);

impl Default for ChunkParts {
    fn default() -> Self {
        Self {
            samples: [u64::MAX; CHUNK_CAP / BLOCK],
            prefix_len: 0,
            len: 0,
            parts: [0; CHUNK_CAP + 1],
        }
    }
}

impl Deref for ChunkParts {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        &self.parts[..self.len as usize]
    }
}

impl ChunkParts {
    /// Records the length and recomputes the samples of the blocks from the one holding
    /// `from` on.
    fn resize(&mut self, len: usize, from: usize) {
        // At most CHUNK_CAP + 1.
        self.len = len as u32;
        for j in from / BLOCK..self.samples.len() {
            let last = BLOCK * j + BLOCK - 1;
            self.samples[j] = if last < len {
                self.parts[last]
            } else {
                u64::MAX
            };
        }
    }
}

impl PartList<u64> for ChunkParts {
    fn clear(&mut self) {
        self.resize(0, 0);
    }

    fn push(&mut self, part: u64) {
        let len = self.len();
        self.parts[len] = part;
        self.resize(len + 1, len);
    }

    fn insert(&mut self, pos: usize, part: u64) {
        let len = self.len();
        assert!(pos <= len, "insert position within the parts");
        self.parts.copy_within(pos..len, pos + 1);
        self.parts[pos] = part;
        self.resize(len + 1, pos);
    }

    fn remove(&mut self, pos: usize) {
        let len = self.len();
        assert!(pos < len, "removed position within the parts");
        self.parts.copy_within(pos + 1..len, pos);
        self.resize(len - 1, pos);
    }

    fn set(&mut self, pos: usize, part: u64) {
        assert!(pos < self.len(), "set position within the parts");
        self.parts[pos] = part;
        self.resize(self.len(), pos);
    }

    #[inline]
    fn count_below(&self, kp: u64, warm: impl FnOnce(usize)) -> usize {
        let full: usize = self.samples.iter().map(|&s| usize::from(s < kp)).sum();
        let lo = full * BLOCK;
        warm(lo);
        let hi = (self.len as usize).min(lo + BLOCK);
        lo + self.parts[lo..hi]
            .iter()
            .map(|&p| usize::from(p < kp))
            .sum::<usize>()
    }

    #[inline]
    fn prefix_len(&self, _prefix: &[u8]) -> usize {
        self.prefix_len as usize
    }

    fn prefix_changed(&mut self, len: usize) {
        // Prefixes are at most `MAX_PREFIX` long (see `Summary::rebuild`).
        self.prefix_len = u32::try_from(len).unwrap_or(u32::MAX);
    }
}

/// A sorted run of keys (held elsewhere, read through `key_at`) that all begin with
/// `prefix`, each summarised by the [`Part`] that follows it, kept in `L`. `prefix` is a
/// common prefix, not necessarily the longest: removals never shorten what the keys share.
///
/// One exception: an empty first key (the smallest key there is, the start of the first
/// range) is left out of the prefix, `first_exempt`. Otherwise it would empty the prefix of
/// its whole chunk, whose keys would then tie on their first 8 bytes whenever they share
/// them (`user/000…`) and need full comparisons, read through each entry. Only the index's
/// first chunk can hold it.
struct Summary<P, L> {
    prefix: Vec<u8>,
    parts: L,
    first_exempt: bool,
    _part: PhantomData<P>,
}

impl<P: Part, L: PartList<P>> Summary<P, L> {
    fn new() -> Self {
        Self {
            prefix: Vec::new(),
            parts: L::default(),
            first_exempt: false,
            _part: PhantomData,
        }
    }

    /// Recomputes everything from the `len` sorted keys, with the prefix the first key
    /// shares with `bound` (a key at or above the last one), or else with the last key.
    fn rebuild<'k, K: Keyed + 'k>(
        &mut self,
        len: usize,
        item_at: impl Fn(usize) -> &'k K,
        bound: Option<&[u8]>,
    ) {
        self.parts.clear();
        self.prefix.clear();
        self.parts.prefix_changed(0);
        // An empty first key shares nothing; the prefix is the other keys'.
        self.first_exempt = len > 1 && item_at(0).start().is_empty();
        if len == 0 {
            return;
        }
        let first = item_at(usize::from(self.first_exempt)).start();
        let bound = bound.unwrap_or_else(|| item_at(len - 1).start());
        // Any common prefix will do; one that fits in 32 bits lets a chunk keep its length in
        // its first cache line, whatever key lengths the cache is configured to accept.
        let shared = common_len(first, bound).min(MAX_PREFIX);
        self.prefix.extend_from_slice(&first[..shared]);
        let l = self.prefix.len();
        self.parts.prefix_changed(l);
        for i in 0..len {
            self.parts.push(P::at(item_at(i).start(), l));
        }
    }

    /// How many of the keys are at or before `key`.
    #[inline]
    fn count_at_or_before<'k, K: Keyed + 'k>(
        &self,
        key: &[u8],
        item_at: impl Fn(usize) -> &'k K,
        warm: impl FnOnce(usize),
    ) -> usize {
        let l = self.prefix.len();
        // Below every key that shares the prefix: at or after only an exempt empty key.
        let below_all = usize::from(self.first_exempt);
        let Some(head) = key.get(..l) else {
            // Shorter than the prefix: below every key if it is a prefix of it or less.
            return if key > &self.prefix[..] {
                self.parts.len()
            } else {
                below_all
            };
        };
        match head.cmp(&self.prefix) {
            Ordering::Less => below_all,
            Ordering::Greater => self.parts.len(),
            Ordering::Equal => self.count_sharing(key, item_at, warm),
        }
    }

    /// [`Summary::count_at_or_before`] for a `key` known to begin with the prefix (see
    /// [`Summary::below_exempt_only`] for a key that may not).
    #[inline]
    fn count_sharing<'k, K: Keyed + 'k>(
        &self,
        key: &[u8],
        item_at: impl Fn(usize) -> &'k K,
        warm: impl FnOnce(usize),
    ) -> usize {
        let prefix_len = self.parts.prefix_len(&self.prefix);
        let kp = P::at(key, prefix_len);
        let lo = self.parts.count_below(kp, warm);
        let parts = &self.parts[..];
        // Keys whose parts tie with the key's are told apart by full comparison. There is
        // rarely more than one; a long run is searched in halves rather than walked.
        let mut ties = 0;
        while ties < 4 && parts.get(lo + ties) == Some(&kp) {
            ties += 1;
        }
        if ties == 4 {
            ties = partition(parts.len() - lo, |i| parts[lo + i] <= kp);
        }
        // Keys no longer than the prefix plus a part are wholly in (prefix, part, length):
        // with equal parts, the shorter is the smaller. Longer ones need their bytes.
        let whole = prefix_len + P::WIDTH;
        lo + partition(ties, |i| {
            let item = item_at(lo + i);
            let len = item.start_len();
            if len <= whole && key.len() <= whole {
                len <= key.len()
            } else {
                item.start() <= key
            }
        })
    }

    /// Takes note of a key inserted at `pos` (already readable through `key_at`); a key
    /// outside the prefix rebuilds against `bound` (see [`Summary::rebuild`]).
    fn insert<'k, K: Keyed + 'k>(
        &mut self,
        pos: usize,
        len: usize,
        item_at: impl Fn(usize) -> &'k K,
        bound: Option<&[u8]>,
    ) {
        let key = item_at(pos).start();
        if !self.parts.is_empty() && key.starts_with(&self.prefix) {
            self.parts.insert(pos, P::at(key, self.prefix.len()));
        } else {
            self.rebuild(len, item_at, bound);
        }
    }

    /// Takes note of a new key at `pos`, in place of the old one.
    fn replace<'k, K: Keyed + 'k>(
        &mut self,
        pos: usize,
        len: usize,
        item_at: impl Fn(usize) -> &'k K,
    ) {
        let key = item_at(pos).start();
        if key.starts_with(&self.prefix) {
            self.parts.set(pos, P::at(key, self.prefix.len()));
        } else {
            self.rebuild(len, item_at, None);
        }
    }

    /// Whether `key`, known to lie between the first key and a key after the last that
    /// shares the prefix, lies below every key but an exempt empty first key (then 1 key is
    /// at or before it). Without an exemption, such a key shares the prefix: never.
    #[inline]
    fn below_exempt_only(&self, key: &[u8]) -> bool {
        self.first_exempt && !key.starts_with(&self.prefix)
    }

    /// Takes note of the removal of the key at `pos`.
    fn remove(&mut self, pos: usize) {
        self.parts.remove(pos);
        // Every remaining key shares the prefix.
        self.first_exempt &= pos != 0;
        if self.parts.is_empty() {
            self.prefix.clear();
            self.parts.prefix_changed(0);
        }
    }

    /// Checks the summary against the keys. For tests.
    #[cfg(test)]
    fn check<'k, K: Keyed + 'k>(&self, len: usize, item_at: impl Fn(usize) -> &'k K) {
        assert_eq!(self.parts.len(), len);
        for i in 0..len {
            let key = item_at(i).start();
            let exempt = i == 0 && self.first_exempt;
            assert!(key.starts_with(&self.prefix) || (exempt && key.is_empty()));
            assert!(self.parts[i] == P::at(key, self.prefix.len()));
        }
        assert_eq!(self.parts.prefix_len(&self.prefix), self.prefix.len());
    }
}

/// Where an entry sits: chunk, then position in the chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    chunk: usize,
    pos: usize,
}

/// A sorted run of entries. Its summary's prefix is shared by every key of the chunk and,
/// unless it is the last chunk, by the next chunk's first key: any key whose floor lies in
/// this chunk falls between those two, so it shares the prefix too, and the search skips
/// comparing it (no read of the prefix bytes at all).
struct Chunk<V> {
    summary: Summary<u64, ChunkParts>,
    values: Vec<V>,
}

impl<V: Keyed> Chunk<V> {
    fn first(&self) -> &V {
        &self.values[0]
    }

    fn head(&self) -> &[u8] {
        self.values[0].start()
    }

    /// Recomputes the summary, the prefix bounded by `next_head` (the next chunk's head).
    fn rebuild(&mut self, next_head: Option<&[u8]>) {
        let values = &self.values;
        self.summary
            .rebuild(values.len(), |i| &values[i], next_head);
    }
}

/// An empty chunk's entry vector, with room for the most entries a chunk ever holds (one
/// over [`CHUNK_CAP`], just before it splits): a chunk never reallocates, so its entries
/// stay in one compact allocation instead of a doubled one that is mostly empty.
fn chunk_vec<V>() -> Vec<V> {
    Vec::with_capacity(CHUNK_CAP + 1)
}

/// Entries ordered by start key, each start key at most once.
pub(crate) struct StartIndex<V> {
    /// Summarises the first keys of chunks `1..` (chunk 0's is compared directly).
    top: Summary<u64, Vec<u64>>,
    /// Non-empty sorted chunks, in key order.
    chunks: Vec<Chunk<V>>,
    len: usize,
}

impl<V: Keyed> Default for StartIndex<V> {
    fn default() -> Self {
        Self {
            top: Summary::new(),
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<V: Keyed> StartIndex<V> {
    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The entry at `slot`.
    pub(crate) fn get(&self, slot: Slot) -> &V {
        &self.chunks[slot.chunk].values[slot.pos]
    }

    /// The entry at `slot`, mutably. Its start key must not change.
    pub(crate) fn get_mut(&mut self, slot: Slot) -> &mut V {
        &mut self.chunks[slot.chunk].values[slot.pos]
    }

    /// The entry with the greatest start key at or before `key`.
    #[inline]
    pub(crate) fn floor(&self, key: &[u8]) -> Option<Slot> {
        let chunk = self.chunk_for(key)?;
        let pos = self.position(chunk, key);
        // The chunk's head is at or before `key`, so `pos >= 1`.
        Some(Slot {
            chunk,
            pos: pos - 1,
        })
    }

    /// How many entries of `chunk`, whose head is at or before `key`, start at or before it.
    #[inline]
    fn position(&self, chunk: usize, key: &[u8]) -> usize {
        // Only the first chunk can start with an exempt empty key (see [`Summary`]); the
        // test of `chunk` keeps the others' path free of it. A last chunk has no next head
        // to bound `key`, and deals with the exemption itself.
        if chunk == 0 && self.chunks.len() > 1 && self.chunks[0].summary.below_exempt_only(key) {
            return 1;
        }
        self.count_in_chunk(chunk, key)
    }

    /// [`StartIndex::position`] where the first key is not exempt, or `key` shares the
    /// prefix.
    #[inline]
    fn count_in_chunk(&self, chunk: usize, key: &[u8]) -> usize {
        let c = &self.chunks[chunk];
        let values = &c.values;
        let item_at = |i: usize| &values[i];
        // The count lands in `lo ..= lo + BLOCK`, so the entry found (the one before it) is
        // one of `lo - 1 .. lo + BLOCK`: their lines load while the block is compared.
        let warm = |lo: usize| {
            let first = lo.saturating_sub(1);
            prefetch(
                values
                    .get(first..(lo + BLOCK).min(values.len()))
                    .unwrap_or_default(),
            );
        };
        if chunk + 1 < self.chunks.len() {
            c.summary.count_sharing(key, item_at, warm)
        } else {
            c.summary.count_at_or_before(key, item_at, warm)
        }
    }

    /// The last chunk whose first entry starts at or before `key`.
    #[inline]
    fn chunk_for(&self, key: &[u8]) -> Option<usize> {
        let first = self.chunks.first()?;
        let chunks = &self.chunks;
        let later = self
            .top
            .count_at_or_before(key, |i| chunks[i + 1].first(), |_| {});
        if later > 0 {
            Some(later)
        } else {
            (first.head() <= key).then_some(0)
        }
    }

    /// The first key of the chunk after `chunk`, if any.
    #[cfg(test)]
    fn next_head(&self, chunk: usize) -> Option<&[u8]> {
        self.chunks.get(chunk + 1).map(Chunk::head)
    }

    /// Restores chunk `chunk`'s prefix rule after the next chunk's head changed.
    fn refit(&mut self, chunk: usize) {
        let (left, right) = self.chunks.split_at_mut(chunk + 1);
        let c = &mut left[chunk];
        let next_head = right.first().map(Chunk::head);
        if next_head.is_some_and(|h| !h.starts_with(&c.summary.prefix)) {
            c.rebuild(next_head);
        }
    }

    /// Rebuilds chunk `chunk`'s summary from scratch.
    fn rebuild_chunk(&mut self, chunk: usize) {
        let (left, right) = self.chunks.split_at_mut(chunk + 1);
        left[chunk].rebuild(right.first().map(Chunk::head));
    }

    /// Refreshes the summaries that depend on chunk `chunk`'s first key, after it changed.
    fn head_changed(&mut self, chunk: usize) {
        if chunk > 0 {
            let Self { top, chunks, .. } = self;
            top.replace(chunk - 1, chunks.len() - 1, |i| chunks[i + 1].first());
            self.refit(chunk - 1);
        }
    }

    /// The entry after `slot` in key order.
    pub(crate) fn next(&self, slot: Slot) -> Option<Slot> {
        if slot.pos + 1 < self.chunks[slot.chunk].values.len() {
            Some(Slot {
                chunk: slot.chunk,
                pos: slot.pos + 1,
            })
        } else if slot.chunk + 1 < self.chunks.len() {
            Some(Slot {
                chunk: slot.chunk + 1,
                pos: 0,
            })
        } else {
            None
        }
    }

    /// The entry before `slot` in key order.
    pub(crate) fn prev(&self, slot: Slot) -> Option<Slot> {
        if slot.pos > 0 {
            Some(Slot {
                chunk: slot.chunk,
                pos: slot.pos - 1,
            })
        } else if slot.chunk > 0 {
            let chunk = slot.chunk - 1;
            let pos = self.chunks[chunk].values.len() - 1;
            Some(Slot { chunk, pos })
        } else {
            None
        }
    }

    /// The first entry in key order.
    pub(crate) fn first(&self) -> Option<Slot> {
        (!self.chunks.is_empty()).then_some(Slot { chunk: 0, pos: 0 })
    }

    /// The `n`th entry in key order (0-based), found by walking the chunk lengths.
    pub(crate) fn nth(&self, mut n: usize) -> Option<Slot> {
        for (chunk, c) in self.chunks.iter().enumerate() {
            if n < c.values.len() {
                return Some(Slot { chunk, pos: n });
            }
            n -= c.values.len();
        }
        None
    }

    /// Every entry in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &V> {
        self.chunks.iter().flat_map(|c| c.values.iter())
    }

    /// Every entry in key order, mutably. Start keys must not change.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.chunks.iter_mut().flat_map(|c| c.values.iter_mut())
    }

    /// Adds `value`, returning the entry it replaces if one had the same start key.
    pub(crate) fn insert(&mut self, value: V) -> Option<V> {
        let (chunk, pos) = match self.chunk_for(value.start()) {
            Some(chunk) => {
                let pos = self.position(chunk, value.start());
                let slot = &mut self.chunks[chunk].values[pos - 1];
                if slot.start() == value.start() {
                    return Some(std::mem::replace(slot, value));
                }
                (chunk, pos)
            }
            None if self.chunks.is_empty() => {
                let mut c = Chunk {
                    summary: Summary::new(),
                    values: chunk_vec(),
                };
                c.values.push(value);
                c.rebuild(None);
                self.chunks.push(c);
                self.len = 1;
                return None;
            }
            // Before every entry: the front of chunk 0 (not in the top summary).
            None => (0, 0),
        };
        let (left, right) = self.chunks.split_at_mut(chunk + 1);
        let c = &mut left[chunk];
        c.values.insert(pos, value);
        let values = &c.values;
        let next_head = right.first().map(Chunk::head);
        c.summary
            .insert(pos, values.len(), |i| &values[i], next_head);
        self.len += 1;
        if pos == 0 {
            self.head_changed(chunk);
        }
        if self.chunks[chunk].values.len() > CHUNK_CAP {
            // Appending past the last entry (bulk loads in key order) leaves the full chunk
            // full, as database B-trees do for ascending keys; anywhere else splits evenly.
            let appended = chunk + 1 == self.chunks.len() && pos == CHUNK_CAP;
            let at = if appended { CHUNK_CAP } else { CHUNK_CAP / 2 };
            self.split_chunk(chunk, at);
        }
        None
    }

    /// Moves the entries of `chunk` from position `at` on into a new chunk after it.
    fn split_chunk(&mut self, chunk: usize, at: usize) {
        let c = &mut self.chunks[chunk];
        let mut values = chunk_vec();
        values.extend(c.values.drain(at..));
        let right = Chunk {
            summary: Summary::new(),
            values,
        };
        self.chunks.insert(chunk + 1, right);
        self.rebuild_chunk(chunk + 1);
        self.rebuild_chunk(chunk);
        let Self { top, chunks, .. } = self;
        top.insert(chunk, chunks.len() - 1, |i| chunks[i + 1].first(), None);
    }

    /// Removes and returns the entry starting exactly at `start`.
    pub(crate) fn remove(&mut self, start: &[u8]) -> Option<V> {
        let slot = self.floor(start)?;
        if self.get(slot).start() != start {
            return None;
        }
        Some(self.remove_at(slot))
    }

    /// Removes and returns the entry at `slot`.
    pub(crate) fn remove_at(&mut self, slot: Slot) -> V {
        let c = &mut self.chunks[slot.chunk];
        let value = c.values.remove(slot.pos);
        c.summary.remove(slot.pos);
        self.len -= 1;
        if c.values.is_empty() {
            self.remove_chunk(slot.chunk);
        } else {
            if slot.pos == 0 {
                self.head_changed(slot.chunk);
            }
            if self.chunks[slot.chunk].values.len() < CHUNK_MIN {
                self.absorb_small(slot.chunk);
            }
        }
        value
    }

    /// Removes chunk `chunk` (empty, or already moved into its left neighbour).
    fn remove_chunk(&mut self, chunk: usize) {
        self.chunks.remove(chunk);
        if !self.top.parts.is_empty() {
            // Chunk k > 0 is top entry k - 1; removing chunk 0 promotes chunk 1 to first,
            // whose head the top summary then no longer covers.
            self.top.remove(chunk.saturating_sub(1));
        }
        if chunk > 0 {
            // The left neighbour's next head is now the removed chunk's successor's.
            self.refit(chunk - 1);
        }
    }

    /// Merges the small chunk `chunk` into a neighbour when both fit in one chunk, so that
    /// removals cannot leave thousands of tiny chunks behind.
    fn absorb_small(&mut self, chunk: usize) {
        let fits = |a: usize, chunks: &[Chunk<V>]| {
            chunks[a].values.len() + chunks[a + 1].values.len() <= CHUNK_CAP
        };
        let left = if chunk + 1 < self.chunks.len() && fits(chunk, &self.chunks) {
            chunk
        } else if chunk > 0 && fits(chunk - 1, &self.chunks) {
            chunk - 1
        } else {
            return;
        };
        let moved = std::mem::take(&mut self.chunks[left + 1].values);
        self.chunks[left].values.extend(moved);
        self.remove_chunk(left + 1);
        self.rebuild_chunk(left);
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) {
        self.top = Summary::new();
        self.chunks.clear();
        self.len = 0;
    }

    /// Checks the structure's own invariants: sorted, unique starts, summaries in step and
    /// prefixes shared with the next chunk's head, chunk sizes in bounds. For tests.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let chunks = &self.chunks;
        self.top
            .check(chunks.len().saturating_sub(1), |i| chunks[i + 1].first());
        let mut total = 0;
        let mut previous: Option<&[u8]> = None;
        for (i, c) in chunks.iter().enumerate() {
            assert!(!c.values.is_empty() && c.values.len() <= CHUNK_CAP);
            c.summary.check(c.values.len(), |i| &c.values[i]);
            if let Some(next) = self.next_head(i) {
                assert!(next.starts_with(&c.summary.prefix));
            }
            for v in &c.values {
                if let Some(prev) = previous {
                    assert!(prev < v.start(), "starts out of order");
                }
                previous = Some(v.start());
            }
            total += c.values.len();
        }
        assert_eq!(total, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    impl Keyed for (Vec<u8>, u32) {
        fn start(&self) -> &[u8] {
            &self.0
        }
    }

    fn floor_of(index: &StartIndex<(Vec<u8>, u32)>, key: &[u8]) -> Option<u32> {
        index.floor(key).map(|s| index.get(s).1)
    }

    #[test]
    fn parts_preserve_order_including_padding() {
        let keys: [&[u8]; 7] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\x01",
            b"b",
            b"bcdefghijklmnopqrs",
        ];
        for w in keys.windows(2) {
            assert!(u64::at(w[0], 0) <= u64::at(w[1], 0));
        }
        assert_eq!(u64::at(b"a", 0), u64::at(b"a\0", 0));
        assert_eq!(common_len(b"user/1", b"user/2"), 5);
        assert_eq!(common_len(b"", b"x"), 0);
    }

    #[test]
    fn a_part_is_the_next_bytes_zero_padded_for_every_length_and_offset() {
        let key: Vec<u8> = (1..=20).collect();
        for len in 0..=key.len() {
            for skip in 0..=len + 2 {
                let suffix = key[..len].get(skip..).unwrap_or_default();
                let mut padded = [0u8; 8];
                let n = suffix.len().min(8);
                padded[..n].copy_from_slice(&suffix[..n]);
                assert_eq!(
                    u64::at(&key[..len], skip),
                    u64::from_be_bytes(padded),
                    "len {len} skip {skip}"
                );
            }
        }
    }

    #[test]
    fn count_below_agrees_with_a_linear_count_at_every_length() {
        for len in 0..=1100 {
            // Sorted with runs of equal parts, so ties straddle block boundaries.
            let parts: Vec<u64> = (0..len as u64).map(|i| i / 3 * 2).collect();
            let last = parts.last().copied().unwrap_or(0);
            for kp in [0, 1, 2, 3, last / 2, last / 2 + 1, last, last + 1, u64::MAX] {
                let linear = parts.iter().filter(|&&p| p < kp).count();
                assert_eq!(count_below(&parts, kp), linear, "len {len} kp {kp}");
            }
        }
    }

    #[test]
    fn chunk_parts_count_like_a_vector_through_every_edit() {
        let mut chunk = ChunkParts::default();
        let mut model: Vec<u64> = Vec::new();
        let check = |chunk: &ChunkParts, model: &Vec<u64>| {
            assert_eq!(&chunk[..], &model[..]);
            for kp in 0..=(2 * CHUNK_CAP as u64 + 3) {
                let warmed = std::cell::Cell::new(usize::MAX);
                let count = chunk.count_below(kp, |lo| warmed.set(lo));
                assert_eq!(count, model.count_below(kp, |_| {}), "kp {kp}");
                // The block warmed holds the answer's entry.
                assert!(
                    (warmed.get()..=warmed.get() + BLOCK).contains(&count),
                    "kp {kp}"
                );
            }
        };
        // Even parts, so odd keys fall between them; grow to the most a chunk holds.
        for i in 0..=CHUNK_CAP as u64 {
            chunk.push(2 * i);
            model.push(2 * i);
            check(&chunk, &model);
        }
        for pos in [CHUNK_CAP, 40, 7, 8, 0] {
            chunk.remove(pos);
            PartList::remove(&mut model, pos);
            check(&chunk, &model);
        }
        for pos in [0, 8, 15, 16, chunk.len()] {
            let part = if pos == 0 { 0 } else { model[pos - 1] };
            chunk.insert(pos, part);
            PartList::insert(&mut model, pos, part);
            check(&chunk, &model);
        }
        chunk.set(9, model[9] + 1);
        model[9] += 1;
        check(&chunk, &model);
        chunk.clear();
        model.clear();
        check(&chunk, &model);
    }

    #[test]
    fn an_empty_first_key_leaves_its_chunk_a_prefix() {
        let mut index = StartIndex::default();
        index.insert((Vec::new(), 0));
        for i in 1..200u32 {
            index.insert((format!("user/{:011}", i * 10).into_bytes(), i));
        }
        index.check();
        let first = &index.chunks[0];
        assert!(first.summary.first_exempt);
        assert!(first.summary.prefix.starts_with(b"user/000000"));
        for (key, floor) in [
            (&b""[..], 0),
            (b"a", 0),
            // Longer than the prefix without sharing it: its bytes past the prefix length
            // must not be compared.
            (b"a2345678901234567890", 0),
            (b"user/", 0),
            (b"user/00000000009", 0),
            (b"user/00000000010", 1),
            (b"user/00000000015", 1),
            (b"user/00000000550", 55),
            (b"user/1", 199),
            (b"zzz", 199),
        ] {
            assert_eq!(floor_of(&index, key), Some(floor), "{key:?}");
        }
        // Removing the empty key ends the exemption; putting it back restores it.
        index.remove(b"");
        index.check();
        assert!(!index.chunks[0].summary.first_exempt);
        assert_eq!(floor_of(&index, b"a"), None);
        index.insert((Vec::new(), 0));
        index.check();
        assert!(index.chunks[0].summary.first_exempt);
        assert_eq!(floor_of(&index, b"a"), Some(0));
    }

    #[test]
    fn floor_tells_apart_keys_with_equal_prefixes() {
        let mut index = StartIndex::default();
        let long = |tail: u8| {
            let mut k = b"b123456789abcdef".to_vec();
            k.push(tail);
            k
        };
        index.insert((b"a".to_vec(), 1));
        index.insert((b"a\0".to_vec(), 2));
        index.insert((long(5), 3));
        index.insert((long(9), 4));
        assert_eq!(floor_of(&index, b""), None);
        assert_eq!(floor_of(&index, b"a"), Some(1));
        assert_eq!(floor_of(&index, b"a\0"), Some(2));
        assert_eq!(floor_of(&index, b"a\0\0"), Some(2));
        assert_eq!(floor_of(&index, &long(4)), Some(2));
        assert_eq!(floor_of(&index, &long(7)), Some(3));
        assert_eq!(floor_of(&index, &long(200)), Some(4));
        index.check();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against a BTreeMap model: random inserts and removes over short keys from a small
        /// alphabet (so prefixes collide and chunks split and merge), floor of random keys.
        #[test]
        fn matches_an_ordered_map(
            ops in prop::collection::vec(
                (any::<bool>(), prop::collection::vec(0u8..3, 0..20)), 1..1500),
            probes in prop::collection::vec(prop::collection::vec(0u8..3, 0..20), 50),
        ) {
            let mut index = StartIndex::default();
            let mut model = BTreeMap::new();
            for (i, (add, key)) in ops.into_iter().enumerate() {
                if add {
                    let old = index.insert((key.clone(), i as u32)).map(|v| v.1);
                    prop_assert_eq!(old, model.insert(key, i as u32));
                } else {
                    let old = index.remove(&key).map(|v| v.1);
                    prop_assert_eq!(old, model.remove(&key));
                }
            }
            index.check();
            prop_assert_eq!(index.len(), model.len());
            for key in probes {
                let want = model.range(..=key.clone()).next_back().map(|(_, v)| *v);
                prop_assert_eq!(floor_of(&index, &key), want);
            }
            let order: Vec<u32> = index.iter().map(|v| v.1).collect();
            let want: Vec<u32> = model.values().copied().collect();
            prop_assert_eq!(order, want);
        }
    }

    #[test]
    fn walks_in_order_and_finds_the_nth() {
        let mut index = StartIndex::default();
        for i in (0..1000u32).rev() {
            index.insert((format!("k{i:05}").into_bytes(), i));
        }
        index.check();
        let mut slot = index.first();
        let mut seen = 0;
        while let Some(s) = slot {
            assert_eq!(index.get(s).1, seen);
            assert_eq!(index.nth(seen as usize), Some(s));
            seen += 1;
            slot = index.next(s);
        }
        assert_eq!(seen, 1000);
        for i in 0..1000u32 {
            assert_eq!(index.remove(format!("k{i:05}").as_bytes()).unwrap().1, i);
        }
        index.check();
        assert_eq!(index.len(), 0);
        assert_eq!(index.first(), None);
    }

    #[test]
    fn ascending_inserts_fill_chunks_and_never_reallocate_them() {
        let mut index = StartIndex::default();
        for i in 0..1000u32 {
            index.insert((format!("k{i:05}").into_bytes(), i));
        }
        index.check();
        // Appends leave every chunk but the last full.
        assert_eq!(index.chunks.len(), 1000usize.div_ceil(CHUNK_CAP));
        // Inserts in the middle split evenly and stay within the first allocation.
        for i in 0..1000u32 {
            index.insert((format!("k{i:05}x").into_bytes(), i));
        }
        index.check();
        assert_eq!(index.len(), 2000);
        for c in &index.chunks {
            assert_eq!(c.values.capacity(), CHUNK_CAP + 1);
        }
        assert_eq!(floor_of(&index, b"k00500y"), Some(500));
    }
}

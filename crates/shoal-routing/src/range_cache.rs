//! The routing cache: which range holds a key, at what generation, and who leads it.
//!
//! A client or gateway keeps one [`RangeCache`]. It answers [`RangeCache::lookup`] from
//! memory in O(log n), learns descriptors from range lookups ([`RangeCache::insert`],
//! [`RangeCache::resolve`]), and corrects itself from the errors replicas send back
//! ([`RangeCache::observe_error`]): a `NotLeader` hint moves the cached leader, a
//! `RangeKeyMismatch` replaces the stale descriptors with the fresher ones it carries. When
//! membership declares a node dead, [`RangeCache::evict_node`] takes it out of routing: it
//! is no longer a cached leader, a leader hint accepted, or one of the
//! [`RangeCache::live_replicas`]. The cached descriptors themselves are never edited: what
//! [`RangeCache::descriptor`] returns at a generation is what the authority sent at that
//! generation, and evictions are kept beside each entry (until a fresher descriptor
//! replaces it).
//!
//! Cached descriptors never overlap. A descriptor that overlaps cached ones replaces them
//! when its generation is at least theirs and is dropped as stale otherwise, so an old
//! answer arriving late cannot undo a split or merge the cache already knows about (ties go
//! to the newcomer, which has just come from the authority).
//!
//! Reads take a [`ShardedLock`]: each reading thread locks only its own shard, so readers on
//! different cores do not write to a shared cache line, and a lookup clones nothing shared
//! (a [`Route`] is a small `Copy` value). Writers lock every shard; they are rare (lookups
//! after misses, errors, membership changes), and each update, an error's included, is one
//! critical section.
//!
//! Misses are coalesced by [`RangeCache::resolve`]: concurrent misses on one key share one
//! range lookup, and a miss on another key of the same uncached gap waits for a lookup in
//! flight there (once), since its answer may cover both, before running its own.

use crate::miss_flight::{Flight, Gap, MissFlights};
use crate::start_index::{Keyed, Slot, StartIndex};
use crossbeam_utils::sync::ShardedLock;
use shoal_core::{
    DescriptorError, ErrorCode, Generation, LeaderHint, NodeId, RangeDescriptor, RangeId,
    ReplicaDescriptor, ReplicaRole,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

/// Limits of a [`RangeCache`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeCacheConfig {
    /// The longest key, in bytes, that a lookup accepts and that a cached descriptor's
    /// bounds may have. Default 4096, the storage engine's key limit.
    pub max_key_len: usize,
    /// The most descriptors held. Inserting beyond it evicts entries chosen at random (no
    /// bookkeeping on the read path). Default 1,048,576.
    pub capacity: usize,
}

impl Default for RangeCacheConfig {
    fn default() -> Self {
        Self {
            max_key_len: 4096,
            capacity: 1 << 20,
        }
    }
}

/// Where to send a request for a key: the range, its generation, and the cached leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The range holding the key.
    pub range: RangeId,
    /// The generation of the cached descriptor; a request carries it so that a replica can
    /// answer `RangeKeyMismatch` when the range has changed since.
    pub generation: Generation,
    /// The node believed to lead the range, or `None` when unknown (try the voters, see
    /// [`RangeCache::descriptor`]).
    pub leader: Option<NodeId>,
}

/// Why the cache refused an input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeCacheError {
    /// A key is longer than [`RangeCacheConfig::max_key_len`].
    #[error("key of {len} bytes is over the {max}-byte limit")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A descriptor failed validation.
    #[error("invalid descriptor: {0}")]
    InvalidDescriptor(#[from] DescriptorError),
}

/// What [`RangeCache::insert`] did with a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Cached, replacing this many overlapping older (or equal) descriptors.
    Inserted {
        /// How many cached descriptors it replaced.
        replaced: usize,
    },
    /// Dropped: a cached descriptor overlapping it has a higher generation.
    Stale {
        /// The higher generation found.
        newer: Generation,
    },
}

/// What a caller should do after [`RangeCache::observe_error`] has updated the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorAction {
    /// The cache now holds a better route: look the key up again and resend at once.
    Retry,
    /// The cached route was dropped: resolve the key again (a range lookup), then resend.
    Refresh,
    /// A transient failure that the cache cannot fix: back off, then resend.
    Backoff,
    /// Retrying cannot help; report the error.
    Fail,
}

/// Why [`RangeCache::resolve`] could not produce a route.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The key or a fetched descriptor was refused.
    #[error(transparent)]
    Refused(#[from] RangeCacheError),
    /// The range lookup failed. Shared by every caller whose miss it served.
    #[error("range lookup failed: {0}")]
    Fetch(Arc<dyn std::error::Error + Send + Sync>),
    /// The range lookup answered, but with no usable descriptor containing the key.
    #[error("the range lookup returned no descriptor containing the key")]
    NotCovered,
}

/// Counters of what the cache has done, for metrics. Read with [`RangeCache::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeCacheStats {
    /// Descriptors cached.
    pub inserted: u64,
    /// Descriptors dropped because a cached overlapping one was newer.
    pub stale_dropped: u64,
    /// Descriptors or keys refused as invalid or over the size limit.
    pub refused: u64,
    /// Entries evicted to stay within capacity.
    pub capacity_evictions: u64,
    /// Range lookups run by [`RangeCache::resolve`].
    pub fetches: u64,
    /// Misses that waited on another caller's range lookup (for the same key, or for
    /// another key of the same uncached gap, see [`RangeCache::resolve`]) instead of running
    /// their own at once.
    pub coalesced: u64,
}

#[derive(Default)]
struct Counters {
    inserted: AtomicU64,
    stale_dropped: AtomicU64,
    refused: AtomicU64,
    capacity_evictions: AtomicU64,
    fetches: AtomicU64,
    coalesced: AtomicU64,
    /// Write locks taken, so that tests can check an update is one critical section.
    #[cfg(test)]
    write_locks: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// One cached descriptor with the copies a lookup needs, so a hit touches one entry: 32
/// bytes, aligned to 32, so that an entry never straddles two cache lines (at 40 bytes, three
/// lookups in eight read two lines, and the entries take a quarter more cache).
#[repr(C, align(32))]
struct CachedRange {
    descriptor: Arc<RangeDescriptor>,
    range: RangeId,
    /// The cached leader, meaningful only with [`CachedRange::LEADER_KNOWN`] (an
    /// `Option<NodeId>` would take 16 bytes).
    leader_node: NodeId,
    /// The descriptor's generation when it fits in 32 bits ([`CachedRange::GENERATION_INLINE`]);
    /// a larger one, four billion changes into a range's life, is read from the descriptor.
    generation_low: u32,
    /// The start key's length, so that index ties between short keys need no key read;
    /// saturated, which only sends a longer key's tie to the full comparison.
    start_len: u16,
    /// [`CachedRange::LEADER_KNOWN`], [`CachedRange::OPEN_ENDED`],
    /// [`CachedRange::GENERATION_INLINE`].
    flags: u8,
}

impl Keyed for CachedRange {
    fn start(&self) -> &[u8] {
        self.descriptor.range.start()
    }

    fn start_len(&self) -> usize {
        usize::from(self.start_len)
    }
}

impl CachedRange {
    /// `leader_node` holds the cached leader.
    const LEADER_KNOWN: u8 = 1;
    /// The range is unbounded or ends exactly where the next cached one starts, so any key
    /// whose floor this entry is lies inside it: a hit needs no end-key comparison.
    const OPEN_ENDED: u8 = 2;
    /// `generation_low` is the whole generation.
    const GENERATION_INLINE: u8 = 4;

    fn new(descriptor: Arc<RangeDescriptor>, leader: Option<NodeId>) -> Self {
        let generation = u32::try_from(descriptor.generation.get()).ok();
        let mut entry = Self {
            range: descriptor.id,
            generation_low: generation.unwrap_or(0),
            start_len: u16::try_from(descriptor.range.start().len()).unwrap_or(u16::MAX),
            flags: if generation.is_some() {
                Self::GENERATION_INLINE
            } else {
                0
            },
            leader_node: NodeId::default(),
            descriptor,
        };
        entry.set_leader(leader);
        entry
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// The cached descriptor's generation.
    #[inline]
    fn generation(&self) -> Generation {
        if self.has(Self::GENERATION_INLINE) {
            Generation::new(u64::from(self.generation_low))
        } else {
            self.descriptor.generation
        }
    }

    /// The cached leader, if one is known.
    fn leader(&self) -> Option<NodeId> {
        self.has(Self::LEADER_KNOWN).then_some(self.leader_node)
    }

    /// Records the leader, or forgets it.
    fn set_leader(&mut self, leader: Option<NodeId>) {
        self.leader_node = leader.unwrap_or_default();
        self.set_flag(Self::LEADER_KNOWN, leader.is_some());
    }

    /// Whether `key`, whose floor this entry is, lies below the end.
    #[inline]
    fn holds(&self, key: &[u8]) -> bool {
        self.has(Self::OPEN_ENDED) || self.descriptor.range.end().is_above(key)
    }

    fn route(&self) -> Route {
        Route {
            range: self.range,
            generation: self.generation(),
            leader: self.leader(),
        }
    }
}

/// Nodes [`RangeCache::evict_node`] took out of one cached entry's replica set, kept beside
/// the entry so that its descriptor stays exactly as the authority sent it.
struct Evicted {
    /// The entry's descriptor. An entry cached later for the same range (a fresher
    /// descriptor) has another one and starts with nothing evicted.
    descriptor: Arc<RangeDescriptor>,
    /// The evicted nodes.
    nodes: Vec<NodeId>,
}

struct CacheState {
    index: StartIndex<CachedRange>,
    /// Evictions by range id, for the entries that have any (see [`Evicted`]). Kept out of
    /// [`CachedRange`], which a lookup reads and which has no byte to spare.
    evicted: HashMap<RangeId, Evicted>,
    /// xorshift state for choosing capacity evictions.
    rng: u64,
}

// Every lookup reads one entry: one cache line at most (see `CachedRange`).
const _: () = assert!(std::mem::size_of::<CachedRange>() == 32);

impl CacheState {
    /// The entry holding `key`, if any.
    #[inline]
    fn holding(&self, key: &[u8]) -> Option<Slot> {
        self.index
            .floor(key)
            .filter(|&slot| self.index.get(slot).holds(key))
    }

    /// Recomputes [`CachedRange::open_ended`] of the entry at `slot` from its successor.
    fn refresh_open_end(&mut self, slot: Slot) {
        let index = &self.index;
        let open = match index.get(slot).descriptor.range.end().as_key() {
            None => true,
            Some(end) => index
                .next(slot)
                .is_some_and(|n| index.get(n).start() == end),
        };
        self.index
            .get_mut(slot)
            .set_flag(CachedRange::OPEN_ENDED, open);
    }

    /// Adds `entry` (overlapping nothing cached) and refreshes its neighbours.
    fn insert(&mut self, entry: CachedRange) {
        let start = entry.start().to_vec();
        if let Some(replaced) = self.index.insert(entry) {
            self.forget_evictions(&replaced);
        }
        if let Some(slot) = self.index.floor(&start) {
            self.refresh_open_end(slot);
            if let Some(prev) = self.index.prev(slot) {
                self.refresh_open_end(prev);
            }
        }
    }

    /// Removes the entry at `slot`.
    fn remove(&mut self, slot: Slot) -> CachedRange {
        let removed = self.index.remove_at(slot);
        self.removed(removed.start());
        self.forget_evictions(&removed);
        removed
    }

    /// Removes the entry starting exactly at `start`, if any.
    fn remove_start(&mut self, start: &[u8]) -> Option<CachedRange> {
        let removed = self.index.remove(start)?;
        self.removed(start);
        self.forget_evictions(&removed);
        Some(removed)
    }

    /// Drops the evictions recorded for `removed`, an entry no longer cached.
    fn forget_evictions(&mut self, removed: &CachedRange) {
        let recorded = self
            .evicted
            .get(&removed.range)
            .is_some_and(|e| Arc::ptr_eq(&e.descriptor, &removed.descriptor));
        if recorded {
            self.evicted.remove(&removed.range);
        }
    }

    /// The nodes evicted from `entry`'s replica set.
    fn evicted_from(&self, entry: &CachedRange) -> &[NodeId] {
        match self.evicted.get(&entry.range) {
            Some(e) if Arc::ptr_eq(&e.descriptor, &entry.descriptor) => e.nodes.as_slice(),
            _ => &[],
        }
    }

    /// Whether `node` is a voter of the entry at `slot` and has not been evicted from it.
    fn is_live_voter(&self, slot: Slot, node: NodeId) -> bool {
        let entry = self.index.get(slot);
        entry.descriptor.role_of(node) == Some(ReplicaRole::Voter)
            && !self.evicted_from(entry).contains(&node)
    }

    /// The keys around `key` that no cached entry holds: from the end of the entry before
    /// it (or the first key) to the start of the entry after it (or no end). `None` when an
    /// entry holds `key`. For misses only: it allocates.
    fn gap(&self, key: &[u8]) -> Option<Gap> {
        let index = &self.index;
        let (start, next) = match index.floor(key) {
            Some(slot) => {
                let entry = index.get(slot);
                if entry.holds(key) {
                    return None;
                }
                // It does not hold `key`, so it has an end, at or below `key`.
                let end = entry.descriptor.range.end().as_key()?;
                (end.to_vec(), index.next(slot))
            }
            None => (Vec::new(), index.first()),
        };
        let end = next.map(|slot| index.get(slot).start().to_vec());
        Some(Gap { start, end })
    }

    /// After removing the entry that started at `start`: its predecessor no longer ends
    /// where a cached neighbour starts.
    fn removed(&mut self, start: &[u8]) {
        if let Some(prev) = self.index.floor(start) {
            self.refresh_open_end(prev);
        }
    }
}

/// The routing cache. Share it between threads behind an `Arc`.
///
/// ```
/// use shoal_core::{KeyRange, NodeId, RangeDescriptor, RangeId, ReplicaDescriptor};
/// use shoal_routing::{RangeCache, RangeCacheConfig};
///
/// let cache = RangeCache::new(RangeCacheConfig::default());
/// let voters = (1..=3).map(|n| ReplicaDescriptor::voter(NodeId::new(n))).collect();
/// let mut left = RangeDescriptor::new(RangeId::new(1), KeyRange::bounded("", "m")?, voters)?;
/// left.leader_hint = Some(NodeId::new(2));
/// cache.insert(left)?;
///
/// let route = cache.lookup(b"apple")?.expect("cached");
/// assert_eq!((route.range, route.leader), (RangeId::new(1), Some(NodeId::new(2))));
/// assert_eq!(cache.lookup(b"melon")?, None); // not cached: resolve it
///
/// cache.evict_node(NodeId::new(2)); // membership says n2 is dead
/// assert_eq!(cache.lookup(b"apple")?.unwrap().leader, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RangeCache {
    config: RangeCacheConfig,
    state: ShardedLock<CacheState>,
    flights: MissFlights,
    counters: Counters,
}

impl RangeCache {
    /// An empty cache.
    pub fn new(config: RangeCacheConfig) -> Self {
        Self {
            config,
            state: ShardedLock::new(CacheState {
                index: StartIndex::default(),
                evicted: HashMap::new(),
                rng: 0x9E37_79B9_7F4A_7C15,
            }),
            flights: MissFlights::default(),
            counters: Counters::default(),
        }
    }

    /// The limits it was built with.
    pub fn config(&self) -> &RangeCacheConfig {
        &self.config
    }

    fn read(&self) -> crossbeam_utils::sync::ShardedLockReadGuard<'_, CacheState> {
        // A panic mid-update leaves a cache with fewer entries, never overlapping ones:
        // still a valid cache, so poisoning is ignored.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> crossbeam_utils::sync::ShardedLockWriteGuard<'_, CacheState> {
        #[cfg(test)]
        bump(&self.counters.write_locks, 1);
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), RangeCacheError> {
        if key.len() > self.config.max_key_len {
            bump(&self.counters.refused, 1);
            return Err(RangeCacheError::KeyTooLarge {
                len: key.len(),
                max: self.config.max_key_len,
            });
        }
        Ok(())
    }

    /// The cached route for `key`, or `None` on a miss. O(log n), no allocation.
    #[inline]
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Route>, RangeCacheError> {
        self.check_key(key)?;
        let state = self.read();
        Ok(state.holding(key).map(|slot| state.index.get(slot).route()))
    }

    /// The cached descriptor holding `key`, exactly as the authority sent it: nodes
    /// [`RangeCache::evict_node`] took out of routing are still listed, and its
    /// `leader_hint` is the authority's, not the cached leader (see [`Route::leader`]). To
    /// choose another replica, use [`RangeCache::live_replicas`].
    pub fn descriptor(&self, key: &[u8]) -> Result<Option<Arc<RangeDescriptor>>, RangeCacheError> {
        self.check_key(key)?;
        let state = self.read();
        Ok(state
            .holding(key)
            .map(|slot| Arc::clone(&state.index.get(slot).descriptor)))
    }

    /// The replicas to try for `key`, for choosing another one when the leader is unknown or
    /// unreachable: those of the cached descriptor holding it, in its order, less the nodes
    /// [`RangeCache::evict_node`] took out. `None` on a miss.
    pub fn live_replicas(
        &self,
        key: &[u8],
    ) -> Result<Option<Vec<ReplicaDescriptor>>, RangeCacheError> {
        self.check_key(key)?;
        let state = self.read();
        Ok(state.holding(key).map(|slot| {
            let entry = state.index.get(slot);
            let evicted = state.evicted_from(entry);
            entry
                .descriptor
                .replicas
                .iter()
                .filter(|replica| !evicted.contains(&replica.node))
                .copied()
                .collect()
        }))
    }

    /// Every cached descriptor, in key order, exactly as the authority sent each (a copy of
    /// the cache's view, for inspection; see [`RangeCache::descriptor`]).
    pub fn descriptors(&self) -> Vec<Arc<RangeDescriptor>> {
        let state = self.read();
        state
            .index
            .iter()
            .map(|entry| Arc::clone(&entry.descriptor))
            .collect()
    }

    /// How many descriptors are cached.
    pub fn len(&self) -> usize {
        self.read().index.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> RangeCacheStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RangeCacheStats {
            inserted: get(&c.inserted),
            stale_dropped: get(&c.stale_dropped),
            refused: get(&c.refused),
            capacity_evictions: get(&c.capacity_evictions),
            fetches: get(&c.fetches),
            coalesced: get(&c.coalesced),
        }
    }

    fn check_descriptor(&self, descriptor: &RangeDescriptor) -> Result<(), RangeCacheError> {
        if let Err(e) = descriptor.validate() {
            bump(&self.counters.refused, 1);
            return Err(e.into());
        }
        self.check_key(descriptor.range.start())?;
        if let Some(end) = descriptor.range.end().as_key() {
            self.check_key(end)?;
        }
        Ok(())
    }

    /// Caches `descriptor`, replacing the overlapping ones it is at least as new as; see the
    /// module docs for the rule. An invalid descriptor, or one with a bound over the key
    /// limit, is refused and changes nothing.
    pub fn insert(&self, descriptor: RangeDescriptor) -> Result<InsertOutcome, RangeCacheError> {
        self.check_descriptor(&descriptor)?;
        let mut state = self.write();
        Ok(self.insert_locked(&mut state, Arc::new(descriptor)))
    }

    /// Caches each valid descriptor of `descriptors` as [`RangeCache::insert`] would, skipping
    /// (and counting) invalid ones, under one write lock. Returns how many were cached.
    pub fn insert_all(&self, descriptors: impl IntoIterator<Item = RangeDescriptor>) -> usize {
        let valid = self.valid_descriptors(descriptors);
        let mut state = self.write();
        self.insert_all_locked(&mut state, valid)
    }

    /// The descriptors that pass [`RangeCache::check_descriptor`]; checked before taking the
    /// write lock, since checking needs no cache state.
    fn valid_descriptors(
        &self,
        descriptors: impl IntoIterator<Item = RangeDescriptor>,
    ) -> Vec<RangeDescriptor> {
        descriptors
            .into_iter()
            .filter(|d| self.check_descriptor(d).is_ok())
            .collect()
    }

    /// Caches `valid` under the write lock already held. Returns how many were cached.
    fn insert_all_locked(&self, state: &mut CacheState, valid: Vec<RangeDescriptor>) -> usize {
        let mut cached = 0;
        for descriptor in valid {
            let outcome = self.insert_locked(state, Arc::new(descriptor));
            cached += usize::from(matches!(outcome, InsertOutcome::Inserted { .. }));
        }
        cached
    }

    fn insert_locked(
        &self,
        state: &mut CacheState,
        descriptor: Arc<RangeDescriptor>,
    ) -> InsertOutcome {
        let index = &state.index;
        let mut overlapping = Vec::new();
        let mut cursor = match index.floor(descriptor.range.start()) {
            Some(slot) if index.get(slot).descriptor.range.overlaps(&descriptor.range) => {
                Some(slot)
            }
            Some(slot) => index.next(slot),
            None => index.first(),
        };
        while let Some(slot) = cursor {
            let entry = index.get(slot);
            if !descriptor.range.end().is_above(entry.start()) {
                break;
            }
            if entry.generation() > descriptor.generation {
                bump(&self.counters.stale_dropped, 1);
                return InsertOutcome::Stale {
                    newer: entry.generation(),
                };
            }
            overlapping.push(entry.start().to_vec());
            cursor = index.next(slot);
        }
        let mut leader = descriptor.leader_hint;
        for start in &overlapping {
            if let Some(old) = state.remove_start(start) {
                let same_range = old.range == descriptor.id;
                if leader.is_none() && same_range {
                    leader = old
                        .leader()
                        .filter(|&n| descriptor.role_of(n) == Some(ReplicaRole::Voter));
                }
            }
        }
        let start = descriptor.range.start().to_vec();
        state.insert(CachedRange::new(descriptor, leader));
        bump(&self.counters.inserted, 1);
        self.enforce_capacity(state, &start);
        InsertOutcome::Inserted {
            replaced: overlapping.len(),
        }
    }

    /// Evicts random entries other than the one just inserted until within capacity.
    fn enforce_capacity(&self, state: &mut CacheState, keep: &[u8]) {
        while state.index.len() > self.config.capacity.max(1) {
            state.rng ^= state.rng << 13;
            state.rng ^= state.rng >> 7;
            state.rng ^= state.rng << 17;
            let n = (state.rng % state.index.len() as u64) as usize;
            let Some(slot) = state.index.nth(n) else {
                return;
            };
            if state.index.get(slot).start() == keep {
                continue;
            }
            state.remove(slot);
            bump(&self.counters.capacity_evictions, 1);
        }
    }

    /// Drops the cached descriptor holding `key`, if any. Returns whether one was dropped.
    pub fn evict(&self, key: &[u8]) -> bool {
        let mut state = self.write();
        Self::evict_locked(&mut state, key, None)
    }

    /// Drops the entry holding `key` if it is `only` (or any entry when `only` is `None`).
    fn evict_locked(state: &mut CacheState, key: &[u8], only: Option<RangeId>) -> bool {
        let Some(slot) = state.holding(key) else {
            return false;
        };
        if only.is_some_and(|id| id != state.index.get(slot).range) {
            return false;
        }
        state.remove(slot);
        true
    }

    /// Takes `node` out of routing for every cached range, as on a membership Dead event: it
    /// stops being the cached leader, a leader that [`RangeCache::set_leader`] or a
    /// `NotLeader` hint can name (a hint naming it drops the entry, as one naming a node
    /// outside the replica set does), and one of the [`RangeCache::live_replicas`].
    ///
    /// The descriptors are not edited: the replica set is the authority's, and only a new
    /// generation changes it, so [`RangeCache::descriptor`] and [`RangeCache::descriptors`]
    /// still list the node. The evictions last as long as the entry: a descriptor cached
    /// later for the range (from a lookup or an error) starts with none, as it comes from
    /// the authority.
    ///
    /// A range left with no live voter is dropped, so that the next request resolves it
    /// afresh (the cache cannot route to it, and only the authority can say whether its
    /// replicas have moved). Returns how many entries changed (leader forgotten, node
    /// evicted, or dropped). O(n) in the cache size.
    pub fn evict_node(&self, node: NodeId) -> usize {
        let mut guard = self.write();
        // Through a plain reference, so that the index and the evictions borrow apart.
        let state = &mut *guard;
        let mut changed = 0;
        let mut voterless = Vec::new();
        for entry in state.index.iter_mut() {
            let mut touched = false;
            if entry.leader() == Some(node) {
                entry.set_leader(None);
                touched = true;
            }
            if entry.descriptor.role_of(node).is_some() {
                let evicted = state.evicted.entry(entry.range).or_insert_with(|| Evicted {
                    descriptor: Arc::clone(&entry.descriptor),
                    nodes: Vec::new(),
                });
                if !Arc::ptr_eq(&evicted.descriptor, &entry.descriptor) {
                    // Left from an entry of the same range that has been replaced since.
                    *evicted = Evicted {
                        descriptor: Arc::clone(&entry.descriptor),
                        nodes: Vec::new(),
                    };
                }
                if !evicted.nodes.contains(&node) {
                    evicted.nodes.push(node);
                    touched = true;
                    let live_voter = entry.descriptor.replicas.iter().any(|replica| {
                        replica.role == ReplicaRole::Voter && !evicted.nodes.contains(&replica.node)
                    });
                    if !live_voter {
                        voterless.push(entry.start().to_vec());
                    }
                }
            }
            changed += usize::from(touched);
        }
        for start in voterless {
            state.remove_start(&start);
        }
        changed
    }

    /// Puts `node` back into routing after [`RangeCache::evict_node`] (membership says it is
    /// alive again): it is tried for every cached range that lists it. Ranges dropped when
    /// it left them without a live voter come back at their next lookup. Returns how many
    /// entries changed. O(evicted ranges).
    pub fn restore_node(&self, node: NodeId) -> usize {
        let mut state = self.write();
        let mut changed = 0;
        state.evicted.retain(|_, evicted| {
            let before = evicted.nodes.len();
            evicted.nodes.retain(|&n| n != node);
            changed += usize::from(evicted.nodes.len() != before);
            !evicted.nodes.is_empty()
        });
        changed
    }

    /// Records that `node` leads the range cached for `key`, if that is still `range` and
    /// the node is one of its voters, not evicted by [`RangeCache::evict_node`]. Returns
    /// whether the leader was recorded.
    pub fn set_leader(&self, key: &[u8], range: RangeId, node: NodeId) -> bool {
        let mut state = self.write();
        let Some(slot) = state.holding(key) else {
            return false;
        };
        let valid = state.index.get(slot).range == range && state.is_live_voter(slot, node);
        if valid {
            state.index.get_mut(slot).set_leader(Some(node));
        }
        valid
    }

    /// Updates the cache from the error a replica returned for a request routed to `route`
    /// for `key`, and says what to do next:
    ///
    /// - `NotLeader` with a hint naming a voter: the leader moves → [`ErrorAction::Retry`].
    ///   A hint naming a node outside the cached replica set (or one evicted as dead) means
    ///   the descriptor is stale: it is dropped → [`ErrorAction::Refresh`]. No hint: the
    ///   leader is forgotten → `Retry` (the caller tries another voter).
    /// - `RangeKeyMismatch`: the fresher descriptors replace the stale ones, and the routed
    ///   entry is dropped if nothing replaced it → `Retry` if the key is now covered, else
    ///   `Refresh`. All of it under one write lock, so no other update lands in between.
    /// - `RangeNotFound`: the routed entry is dropped → `Refresh`.
    /// - any other retriable code → [`ErrorAction::Backoff`]; the rest → [`ErrorAction::Fail`].
    pub fn observe_error(&self, key: &[u8], route: &Route, code: &ErrorCode) -> ErrorAction {
        match code {
            ErrorCode::NotLeader { hint } => self.on_not_leader(key, route, hint.as_ref()),
            ErrorCode::RangeKeyMismatch { descriptors } => {
                let valid = self.valid_descriptors(descriptors.iter().cloned());
                // One critical section: the routed entry is judged against exactly what
                // these descriptors left, not against what another writer did in between.
                let mut state = self.write();
                self.insert_all_locked(&mut state, valid);
                let covered = state.holding(key).map(|slot| {
                    let entry = state.index.get(slot);
                    (entry.range, entry.generation())
                });
                match covered {
                    Some(found) if found != (route.range, route.generation) => ErrorAction::Retry,
                    Some(_) => {
                        Self::evict_locked(&mut state, key, Some(route.range));
                        ErrorAction::Refresh
                    }
                    None => ErrorAction::Refresh,
                }
            }
            ErrorCode::RangeNotFound { .. } => {
                let mut state = self.write();
                Self::evict_locked(&mut state, key, Some(route.range));
                ErrorAction::Refresh
            }
            other if other.is_retriable() => ErrorAction::Backoff,
            _ => ErrorAction::Fail,
        }
    }

    fn on_not_leader(&self, key: &[u8], route: &Route, hint: Option<&LeaderHint>) -> ErrorAction {
        let mut state = self.write();
        let Some(slot) = state.holding(key) else {
            return ErrorAction::Refresh;
        };
        if state.index.get(slot).range != route.range {
            // Replaced meanwhile: route again with what is cached now.
            return ErrorAction::Retry;
        }
        match hint {
            Some(hint) if state.is_live_voter(slot, hint.node) => {
                state.index.get_mut(slot).set_leader(Some(hint.node));
                ErrorAction::Retry
            }
            Some(_) => {
                state.remove(slot);
                ErrorAction::Refresh
            }
            None => {
                let entry = state.index.get_mut(slot);
                if entry.leader().is_some() && entry.leader() == route.leader {
                    entry.set_leader(None);
                }
                ErrorAction::Retry
            }
        }
    }

    /// Drops everything cached.
    pub fn clear(&self) {
        let mut state = self.write();
        state.index.clear();
        state.evicted.clear();
    }

    /// The gap around `key` (see [`CacheState::gap`]), under a read lock of its own.
    fn gap(&self, key: &[u8]) -> Option<Gap> {
        self.read().gap(key)
    }

    /// The route for `key`: from the cache, or else from `fetch`, a range lookup that returns
    /// descriptors covering the key (typically a meta-range read; every descriptor it
    /// returns is cached, neighbours included).
    ///
    /// Misses are coalesced per range lookup, as far as the cache can tell before the answer:
    ///
    /// - Concurrent misses for the same key share one call of `fetch`: the first caller runs
    ///   it, the others wait for its result (its error too).
    /// - A miss on another key while a lookup runs for a key of the same gap (no cached range
    ///   holds a key between the two) waits for that lookup, since one range may hold both,
    ///   then looks in the cache again, and runs its own `fetch` only if the answer did not
    ///   cover its key. So a burst of cold keys of one range costs one lookup. A caller waits
    ///   like this at most once, so a miss waits for at most one other key's lookup before
    ///   its own; that lookup's error is not shared with it.
    ///
    /// If the caller running a lookup is cancelled, a waiting one takes over.
    pub async fn resolve<F, Fut, E>(&self, key: &[u8], fetch: F) -> Result<Route, ResolveError>
    where
        F: FnOnce(Vec<u8>) -> Fut,
        Fut: Future<Output = Result<Vec<RangeDescriptor>, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        // Whether this caller has waited on a lookup of another key already: it does so
        // only once, so that a miss the gap's lookups keep missing is not delayed further.
        let mut waited = false;
        loop {
            if let Some(route) = self.lookup(key)? {
                return Ok(route);
            }
            let gap = if waited { None } else { self.gap(key) };
            match self.flights.join(key, gap.as_ref()) {
                Flight::Lead(lead) => {
                    // Re-check: a flight may have landed between the miss and the join.
                    if let Some(route) = self.lookup(key)? {
                        lead.finish(Ok(route));
                        return Ok(route);
                    }
                    bump(&self.counters.fetches, 1);
                    let outcome = match fetch(key.to_vec()).await {
                        Ok(descriptors) => {
                            self.insert_all(descriptors);
                            self.lookup(key)?.ok_or(ResolveError::NotCovered)
                        }
                        Err(e) => Err(ResolveError::Fetch(Arc::new(e))),
                    };
                    lead.finish(outcome.clone());
                    return outcome;
                }
                Flight::Follow(wait) => {
                    bump(&self.counters.coalesced, 1);
                    if let Some(outcome) = wait.outcome().await {
                        return outcome;
                    }
                    // The leading caller was cancelled: look again, maybe lead.
                }
                Flight::Wait(wait) => {
                    bump(&self.counters.coalesced, 1);
                    waited = true;
                    // Its outcome is the other key's, finished or cancelled: whether it
                    // covered this key, the cache says.
                    wait.outcome().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::KeyRange;

    /// Range `id` over `[start, end)` (an empty `end` is unbounded) at `generation`, on
    /// voters 1..=3.
    fn desc(id: u64, start: &str, end: &str, generation: u64) -> RangeDescriptor {
        let range = if end.is_empty() {
            KeyRange::starting_at(start)
        } else {
            KeyRange::bounded(start, end).unwrap()
        };
        let voters = (1..=3)
            .map(|n| ReplicaDescriptor::voter(NodeId::new(n)))
            .collect();
        let mut d = RangeDescriptor::new(RangeId::new(id), range, voters).unwrap();
        d.generation = Generation::new(generation);
        d
    }

    #[test]
    fn a_range_key_mismatch_is_one_critical_section() {
        let cache = RangeCache::new(RangeCacheConfig::default());
        cache.insert(desc(1, "", "", 1)).unwrap();
        let route = cache.lookup(b"q").unwrap().unwrap();
        let locks = || cache.counters.write_locks.load(Ordering::Relaxed);
        let before = locks();
        let mismatch = ErrorCode::RangeKeyMismatch {
            descriptors: vec![desc(1, "", "m", 2), desc(2, "m", "", 2)],
        };
        assert_eq!(
            cache.observe_error(b"q", &route, &mismatch),
            ErrorAction::Retry
        );
        assert_eq!(locks() - before, 1, "one write lock for the whole update");
        assert_eq!(cache.lookup(b"q").unwrap().unwrap().range, RangeId::new(2));
        // Nothing new: the routed entry goes, still under one lock.
        let route = cache.lookup(b"q").unwrap().unwrap();
        let before = locks();
        let empty = ErrorCode::RangeKeyMismatch {
            descriptors: vec![],
        };
        assert_eq!(
            cache.observe_error(b"q", &route, &empty),
            ErrorAction::Refresh
        );
        assert_eq!(locks() - before, 1);
        assert_eq!(cache.lookup(b"q").unwrap(), None);
    }

    #[test]
    fn evictions_are_forgotten_with_their_entry() {
        let cache = RangeCache::new(RangeCacheConfig::default());
        cache.insert(desc(1, "", "m", 1)).unwrap();
        cache.insert(desc(2, "m", "", 1)).unwrap();
        assert_eq!(cache.evict_node(NodeId::new(1)), 2);
        assert_eq!(cache.live_replicas(b"a").unwrap().unwrap().len(), 2);
        assert_eq!(cache.restore_node(NodeId::new(1)), 2);
        assert_eq!(cache.live_replicas(b"a").unwrap().unwrap().len(), 3);
        assert_eq!(
            cache.restore_node(NodeId::new(1)),
            0,
            "nothing left to restore"
        );
        assert_eq!(cache.evict_node(NodeId::new(1)), 2);
        assert_eq!(cache.read().evicted.len(), 2);
        // A fresher descriptor replaces the entry: its evictions go with it.
        cache.insert(desc(1, "", "m", 2)).unwrap();
        assert_eq!(cache.read().evicted.len(), 1);
        assert_eq!(cache.live_replicas(b"a").unwrap().unwrap().len(), 3);
        assert_eq!(cache.live_replicas(b"x").unwrap().unwrap().len(), 2);
        assert!(cache.evict(b"x"));
        assert!(cache.read().evicted.is_empty());
        cache.evict_node(NodeId::new(2));
        cache.clear();
        assert!(cache.is_empty());
        assert!(cache.read().evicted.is_empty());
    }
}

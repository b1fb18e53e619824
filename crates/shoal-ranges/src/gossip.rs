//! The meta-range gossip merge: descriptor sets form a join-semilattice.
//!
//! Every node holds a [`DescriptorSet`] and gossips it (or deltas of it). Read the set as a
//! function from each key to the descriptor that wins there: of the descriptors covering the
//! key, the one with the highest [`precedence`] (generation first). Merging two sets takes,
//! key by key, the winner of both — a pointwise maximum, so merging is commutative,
//! associative and idempotent, and replicas that saw the same updates in any order, any
//! grouping and with any repetition hold the same set. The set stores exactly the
//! descriptors that win somewhere: a descriptor beaten over its whole span by newer ones is
//! dropped, one beaten over only part of its span stays (it is still the best knowledge of
//! the rest), so a merge of unrelated generations never loses a key's range.
//!
//! Because a merge is a join, any subset of a set is a valid delta and may be applied alone,
//! in any order: [`DescriptorSet::encode_chunks`] cuts a set into pieces that each fit a
//! membership broadcast.
//!
//! # Leader hints
//!
//! A leader hint is advisory: it changes without a new generation
//! ([`RangeTable::set_leader_hint`]), so two nodes can hold the same descriptor (same
//! generation, id, bounds and replicas) with different hints, and nothing in the descriptor
//! says which hint is newer. Ordering such copies by the hint itself would let a leader
//! change spread only when the new leader's id happens to be higher. So the hint takes no
//! part in [`precedence`]: copies that differ only in their hint are one descriptor to the
//! merge, which joins their hints on their own, each dated by a term (the Raft term in
//! which the hinted node leads the range's group; 0 when undated):
//!
//! - the hint of the higher term wins, whatever the node ids;
//! - at an equal term, equal hints stay and different ones leave no hint (`None`, "ask the
//!   range"): at term 0 that is two nodes that recorded different leaders with nothing to
//!   tell which is newer, and at a real term it is two leaders claimed for one term, which
//!   Raft rules out. Neither is trusted over the other, and `None` absorbs every further hint
//!   of that term, so the join is still commutative, associative and idempotent.
//!
//! Descriptors from a table or from [`DescriptorSet::from_descriptors`] are undated (term 0),
//! so a hint set on one node without a new generation converges to `None` where nodes
//! disagree, never to whichever id is larger; a leader spreads its own hint, dated by its
//! term, with [`DescriptorSet::leader_delta`], which beats every older one. A reader finds a
//! missing or stale leader by asking the range (a not-leader answer names the leader).
//!
//! # Cost
//!
//! The set keeps, beside its descriptors, its winner function as disjoint spans of the key
//! space in a B-tree. Merging a delta costs O((d + k) log n) for a delta of d descriptors
//! overlapping k spans of an n-descriptor set (a delta from one split, merge or replica
//! change overlaps one to three), and [`DescriptorSet::winner`] costs O(log n).
//!
//! # Chunks and large keys
//!
//! A chunk holds whole descriptors, so a descriptor whose encoding alone is over the chunk
//! limit fits no chunk: with membership's user broadcasts of 1,024 bytes, a bound of about
//! 1,000 bytes is enough (a table may allow keys up to 4 KiB). [`DescriptorSet::encode_chunks`]
//! refuses such a set whole ([`GossipError::DescriptorTooLarge`]);
//! [`DescriptorSet::encode_fitting_chunks`] chunks everything else and returns the oversized
//! descriptors apart, for the caller to send another way (a read of the meta range, or a
//! reliable stream), since membership's push-pull carries no user state. Dropping them from
//! the broadcast is safe: every chunk is a delta on its own, and a peer that lacks an
//! oversized descriptor keeps its older knowledge of those keys until it learns it.

use crate::table::{RangeTable, RangeTableError};
use shoal_core::codec::{self, CodecError};
use shoal_core::{DescriptorError, NodeId, RangeDescriptor, RangeEnd, ReplicaDescriptor};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// Which of two overlapping descriptors wins: the higher generation, then the higher range
/// id, then (for descriptors that agree on both, so that the order is total) their
/// contents: start, end, replicas. The leader hint takes no part (see the module docs):
/// equal exactly for descriptors that differ at most in their leader hint.
pub fn precedence(a: &RangeDescriptor, b: &RangeDescriptor) -> Ordering {
    let replica = |r: &ReplicaDescriptor| (r.node, r.role == shoal_core::ReplicaRole::Voter);
    a.generation
        .cmp(&b.generation)
        .then(a.id.cmp(&b.id))
        .then_with(|| a.range.start().cmp(b.range.start()))
        .then_with(|| a.range.end().cmp(b.range.end()))
        .then_with(|| {
            a.replicas
                .iter()
                .map(replica)
                .cmp(b.replicas.iter().map(replica))
        })
}

/// Why a set or a chunk was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// A descriptor failed validation.
    #[error("invalid descriptor: {0}")]
    Descriptor(#[from] DescriptorError),
    /// A descriptor bound is longer than the limit.
    #[error("key of {len} bytes is over the {max}-byte limit")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A single descriptor does not fit in one chunk.
    #[error("a descriptor of {size} bytes does not fit a {max}-byte chunk")]
    DescriptorTooLarge {
        /// Its encoded size.
        size: usize,
        /// The chunk limit.
        max: usize,
    },
    /// A chunk did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A leader hint's term is above [`MAX_HINT_TERM`], which no Raft group reaches.
    #[error("leader hint term {0} is above the highest valid term")]
    HintTermTooHigh(u64),
}

/// The highest term a leader hint may carry: 2^62, the bound Raft groups take terms up to
/// from peers (`shoal_consensus::MAX_TERM`). A hint above it is refused, so a forged hint at
/// `u64::MAX` cannot pin a wrong leader on every node until the next generation.
pub const MAX_HINT_TERM: u64 = 1 << 62;

/// A descriptor as the set orders it: by start key, then [`precedence`], so its leader hint
/// takes no part in the order (copies differing only in their hint are one key).
#[derive(Clone, Debug)]
struct Keyed(Arc<RangeDescriptor>);

impl Ord for Keyed {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .range
            .start()
            .cmp(other.0.range.start())
            .then_with(|| precedence(&self.0, &other.0))
    }
}

impl PartialOrd for Keyed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Keyed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Keyed {}

/// What the set keeps beside a stored descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// The term its leader hint dates from (0: undated).
    term: u64,
    /// How many spans it wins; it is dropped when that reaches 0.
    spans: usize,
}

/// A stretch of the key space, from its key in the set's `spans` up to `end`, where one
/// descriptor wins. Its `winner` is only compared (hints play no part there): the stored
/// descriptor, with its current hint, is the equal key of the set's `entries`.
#[derive(Clone, Debug)]
struct Span {
    end: RangeEnd,
    winner: Keyed,
}

/// A span being rebuilt by `DescriptorSet::insert`.
struct Piece {
    start: Vec<u8>,
    end: RangeEnd,
    winner: Keyed,
}

/// A leader hint with the term it dates from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hint {
    leader: Option<NodeId>,
    term: u64,
}

/// The join of two hints of one descriptor (see the module docs): the higher term wins; at
/// an equal term, hints that differ leave none. Never decided by comparing node ids.
fn join_hints(a: Hint, b: Hint) -> Hint {
    match a.term.cmp(&b.term) {
        Ordering::Greater => a,
        Ordering::Less => b,
        Ordering::Equal if a.leader == b.leader => a,
        Ordering::Equal => Hint {
            leader: None,
            term: a.term,
        },
    }
}

/// The descriptors that win somewhere, in canonical order (by start key, then precedence),
/// each with the term of its leader hint.
///
/// Two sets are equal when they hold the same descriptors (leader hints included) with the
/// same hint terms.
#[derive(Clone, Debug, Default)]
pub struct DescriptorSet {
    /// The stored descriptors, each with its hint term and span count.
    entries: BTreeMap<Keyed, Slot>,
    /// The winner function: disjoint, maximal spans (two neighbours never share a winner)
    /// keyed by their first key; keys no descriptor covers have no span.
    spans: BTreeMap<Vec<u8>, Span>,
}

impl PartialEq for DescriptorSet {
    fn eq(&self, other: &Self) -> bool {
        // The spans are a function of the stored descriptors, so only those are compared.
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((a, sa), (b, sb))| *a.0 == *b.0 && sa.term == sb.term)
    }
}

impl Eq for DescriptorSet {}

/// What [`DescriptorSet::encode_fitting_chunks`] made of a set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunks {
    /// The encoded chunks, each at most the limit and each a valid delta alone.
    pub chunks: Vec<Vec<u8>>,
    /// The descriptors whose encoding alone is over the limit, in canonical order: they fit
    /// no chunk and must reach peers another way (see the module docs).
    pub oversized: Vec<RangeDescriptor>,
}

/// Checks `d` as a set accepts it: valid, and no bound over `max_key_len` bytes.
fn check_descriptor(d: &RangeDescriptor, max_key_len: usize) -> Result<(), GossipError> {
    d.validate()?;
    let ends = d.range.end().as_key().map_or(0, <[u8]>::len);
    let len = d.range.start().len().max(ends);
    if len > max_key_len {
        return Err(GossipError::KeyTooLarge {
            len,
            max: max_key_len,
        });
    }
    Ok(())
}

impl DescriptorSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of `descriptors` (validated; those beaten everywhere are dropped), their
    /// leader hints undated (term 0). Bounds over `max_key_len` bytes are refused.
    pub fn from_descriptors(
        descriptors: impl IntoIterator<Item = RangeDescriptor>,
        max_key_len: usize,
    ) -> Result<Self, GossipError> {
        Self::from_descriptors_with_terms(descriptors.into_iter().map(|d| (d, 0)), max_key_len)
    }

    /// The set of `descriptors`, each with the term its leader hint dates from (0: undated;
    /// see the module docs, at most [`MAX_HINT_TERM`]). Validated like
    /// [`DescriptorSet::from_descriptors`]; nothing is kept unless every descriptor passes.
    pub fn from_descriptors_with_terms(
        descriptors: impl IntoIterator<Item = (RangeDescriptor, u64)>,
        max_key_len: usize,
    ) -> Result<Self, GossipError> {
        let descriptors: Vec<(RangeDescriptor, u64)> = descriptors.into_iter().collect();
        for (d, term) in &descriptors {
            check_descriptor(d, max_key_len)?;
            if *term > MAX_HINT_TERM {
                return Err(GossipError::HintTermTooHigh(*term));
            }
        }
        let mut set = Self::new();
        for (d, term) in descriptors {
            set.insert(Arc::new(d), term);
        }
        Ok(set)
    }

    /// The set a table's descriptors form (a table never overlaps, so all of them win), their
    /// leader hints undated.
    pub fn from_table(table: &RangeTable) -> Self {
        let mut set = Self::new();
        for d in table.descriptors() {
            set.insert(Arc::new(d.clone()), 0);
        }
        set
    }

    /// The one-descriptor delta by which a range's leader makes itself known: `descriptor`
    /// with `leader` as its hint, dated by `term`, the Raft term in which `leader` leads the
    /// range's group. Merged into a set holding the same descriptor, it replaces a hint of
    /// a lower term whatever the two nodes' ids. Refused when `leader` is not a voter of
    /// `descriptor` or a bound is over `max_key_len`.
    pub fn leader_delta(
        descriptor: &RangeDescriptor,
        leader: NodeId,
        term: u64,
        max_key_len: usize,
    ) -> Result<Self, GossipError> {
        let mut d = descriptor.clone();
        d.leader_hint = Some(leader);
        Self::from_descriptors_with_terms([(d, term)], max_key_len)
    }

    /// Merges `other` in. Returns whether this set changed. O((d + k) log n): see the
    /// module docs.
    pub fn merge(&mut self, other: &DescriptorSet) -> bool {
        let mut changed = false;
        for (k, slot) in &other.entries {
            // The descriptors are immutable and shared: a merge copies pointers, not keys.
            changed |= self.insert(Arc::clone(&k.0), slot.term);
        }
        changed
    }

    /// Joins one descriptor (already checked) into the set: its hint into a stored copy's,
    /// or its span into the winner function. Returns whether the set changed.
    fn insert(&mut self, descriptor: Arc<RangeDescriptor>, term: u64) -> bool {
        let theirs = Hint {
            leader: descriptor.leader_hint,
            term,
        };
        let incoming = Keyed(descriptor);
        let stored = self.entries.get_key_value(&incoming).map(|(k, slot)| {
            let ours = Hint {
                leader: k.0.leader_hint,
                term: slot.term,
            };
            (ours, slot.spans)
        });
        if let Some((ours, spans)) = stored {
            // The same descriptor but for its hint: it wins exactly where the stored copy
            // does, so only the hint can change.
            let joined = join_hints(ours, theirs);
            if joined == ours {
                return false;
            }
            let mut updated = RangeDescriptor::clone(&incoming.0);
            updated.leader_hint = joined.leader;
            // A map keeps its old key on insert, so the key (which carries the hint) is
            // replaced by removing it first. The spans still name the old copy, which
            // compares equal.
            self.entries.remove(&incoming);
            self.entries.insert(
                Keyed(Arc::new(updated)),
                Slot {
                    term: joined.term,
                    spans,
                },
            );
            return true;
        }

        let d = Arc::clone(&incoming.0);
        let start = d.range.start();
        let end = d.range.end();
        // The spans the descriptor overlaps: the one holding its start (which may begin
        // before it), then every one that begins inside it.
        let mut affected: Vec<Vec<u8>> = Vec::new();
        if let Some((key, _)) = self
            .spans
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .filter(|(_, span)| span.end.is_above(start))
        {
            affected.push(key.clone());
        }
        let upper = end.as_key().map_or(Bound::Unbounded, Bound::Excluded);
        affected.extend(
            self.spans
                .range::<[u8], _>((Bound::Excluded(start), upper))
                .map(|(key, _)| key.clone()),
        );

        // The spans that replace them, left to right: the parts outside the descriptor stay
        // with their winners; inside it, the descriptor takes every key nobody covered and
        // every span it beats.
        let mut pieces: Vec<Piece> = Vec::new();
        let mut wins = false;
        // The first key of the descriptor not placed yet; `None` once past its end.
        let mut cursor: Option<Vec<u8>> = Some(start.to_vec());
        for key in &affected {
            let Some(span) = self.spans.get(key) else {
                continue;
            };
            let from = key.as_slice().max(start);
            if let Some(c) = cursor.as_deref().filter(|&c| c < from) {
                pieces.push(Piece {
                    start: c.to_vec(),
                    end: RangeEnd::Key(from.to_vec()),
                    winner: incoming.clone(),
                });
                wins = true;
            }
            if key.as_slice() < start {
                pieces.push(Piece {
                    start: key.clone(),
                    end: RangeEnd::Key(start.to_vec()),
                    winner: span.winner.clone(),
                });
            }
            let to = std::cmp::min(&span.end, end).clone();
            let winner = if precedence(&d, &span.winner.0) == Ordering::Greater {
                wins = true;
                incoming.clone()
            } else {
                span.winner.clone()
            };
            pieces.push(Piece {
                start: from.to_vec(),
                end: to.clone(),
                winner,
            });
            if let Some(e) = end.as_key().filter(|&e| span.end.is_above(e)) {
                pieces.push(Piece {
                    start: e.to_vec(),
                    end: span.end.clone(),
                    winner: span.winner.clone(),
                });
            }
            cursor = to.as_key().map(<[u8]>::to_vec);
        }
        if let Some(c) = cursor.filter(|c| end.is_above(c)) {
            pieces.push(Piece {
                start: c,
                end: end.clone(),
                winner: incoming.clone(),
            });
            wins = true;
        }
        if !wins {
            // Beaten everywhere: the set is unchanged, and nothing was touched.
            return false;
        }

        // Neighbouring pieces with one winner become one span, so the spans stay maximal.
        let mut merged: Vec<Piece> = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match merged.last_mut() {
                Some(last) if last.winner == piece.winner => last.end = piece.end,
                _ => merged.push(piece),
            }
        }
        let mut losers: Vec<Keyed> = Vec::new();
        for key in &affected {
            if let Some(span) = self.spans.remove(key) {
                if let Some(slot) = self.entries.get_mut(&span.winner) {
                    slot.spans = slot.spans.saturating_sub(1);
                }
                losers.push(span.winner);
            }
        }
        for piece in merged {
            self.entries
                .entry(piece.winner.clone())
                .or_insert(Slot { term, spans: 0 })
                .spans += 1;
            self.spans.insert(
                piece.start,
                Span {
                    end: piece.end,
                    winner: piece.winner,
                },
            );
        }
        // A descriptor that no longer wins anywhere is dropped.
        for loser in losers {
            if self.entries.get(&loser).is_some_and(|slot| slot.spans == 0) {
                self.entries.remove(&loser);
            }
        }
        true
    }

    /// The descriptors, in canonical order.
    pub fn descriptors(&self) -> impl Iterator<Item = &RangeDescriptor> {
        self.entries.keys().map(|k| k.0.as_ref())
    }

    /// How many descriptors the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The descriptor that wins at `key`, if any covers it. O(log n).
    pub fn winner(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        let (_, span) = self
            .spans
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        if !span.end.is_above(key) {
            return None;
        }
        // The stored key, not the span's copy: it carries the current leader hint.
        self.entries
            .get_key_value(&span.winner)
            .map(|(k, _)| k.0.as_ref())
    }

    /// The set as a range table, when its descriptors cover the key space exactly once (no
    /// split or merge half-known). Hint terms are not kept.
    pub fn to_table(&self, max_key_len: usize) -> Result<RangeTable, RangeTableError> {
        RangeTable::new(self.descriptors().cloned().collect(), max_key_len)
    }

    /// Cuts the set into encoded chunks of at most `max_bytes` each; each chunk is a valid
    /// delta on its own (see the module docs). Refused whole, with
    /// [`GossipError::DescriptorTooLarge`], when a descriptor alone is over `max_bytes`;
    /// [`DescriptorSet::encode_fitting_chunks`] sends the rest.
    pub fn encode_chunks(&self, max_bytes: usize) -> Result<Vec<Vec<u8>>, GossipError> {
        self.chunk(max_bytes, |_, size| {
            Err(GossipError::DescriptorTooLarge {
                size,
                max: max_bytes,
            })
        })
    }

    /// Like [`DescriptorSet::encode_chunks`], but a descriptor alone over `max_bytes` is
    /// set apart in [`Chunks::oversized`] instead of refusing the set: the chunks still carry
    /// everything else, and the caller sends the oversized ones another way.
    pub fn encode_fitting_chunks(&self, max_bytes: usize) -> Result<Chunks, GossipError> {
        let mut oversized = Vec::new();
        let chunks = self.chunk(max_bytes, |d, _| {
            oversized.push(d.clone());
            Ok(())
        })?;
        Ok(Chunks { chunks, oversized })
    }

    /// The chunks of the set; a descriptor over `max_bytes` goes to `on_oversized` (with
    /// its encoded size) instead of a chunk.
    fn chunk(
        &self,
        max_bytes: usize,
        mut on_oversized: impl FnMut(&RangeDescriptor, usize) -> Result<(), GossipError>,
    ) -> Result<Vec<Vec<u8>>, GossipError> {
        let mut chunks = Vec::new();
        let mut current = Vec::new();
        for (k, slot) in &self.entries {
            // On the wire, each descriptor travels with its hint's term.
            let item = (k.0.as_ref(), slot.term);
            let size = codec::encode(&item)?.len();
            if size > max_bytes {
                on_oversized(k.0.as_ref(), size)?;
                continue;
            }
            if current.len() + size > max_bytes {
                chunks.push(std::mem::take(&mut current));
            }
            codec::encode_into(&item, &mut current, max_bytes)?;
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        Ok(chunks)
    }

    /// Decodes one chunk made by [`DescriptorSet::encode_chunks`], validating every
    /// descriptor and its bounds; a chunk with any bad part is refused whole.
    pub fn decode_chunk(bytes: &[u8], max_key_len: usize) -> Result<Self, GossipError> {
        let mut descriptors = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (item, used): ((RangeDescriptor, u64), usize) =
                codec::decode_prefix(&bytes[at..], bytes.len())?;
            descriptors.push(item);
            at += used.max(1);
        }
        Self::from_descriptors_with_terms(descriptors, max_key_len)
    }
}

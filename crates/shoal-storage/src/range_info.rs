//! What the engine tells about a hosted range.

use serde::{Deserialize, Serialize};
use shoal_core::{KeyRange, RangeId};

/// Live data in a range, kept exact by every apply (never recomputed by scanning, except
/// for the new right half of a counted split, and by [`crate::Engine::recount_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RangeStats {
    /// How many keys hold a value.
    pub live_keys: u64,
    /// The sum of their key and value lengths (the user's bytes, not the version).
    pub live_bytes: u64,
    /// The counts are an estimate: a split that did not count its halves
    /// ([`crate::SplitStats::Estimated`]) gave each half half of the whole, and applies
    /// since have kept the counts moving from there. Exact again after
    /// [`crate::Engine::recount_stats`] (or a snapshot, which counts what it carries).
    pub estimated: bool,
}

impl RangeStats {
    /// The stats of one entry.
    pub(crate) fn of_entry(key_len: usize, value_len: usize) -> Self {
        Self {
            live_keys: 1,
            live_bytes: (key_len + value_len) as u64,
            estimated: false,
        }
    }

    /// Adds `other`.
    pub(crate) fn add(&mut self, other: RangeStats) {
        self.live_keys += other.live_keys;
        self.live_bytes += other.live_bytes;
        self.estimated |= other.estimated;
    }

    /// Takes away `other`, which must be part of these stats.
    pub(crate) fn sub(&mut self, other: RangeStats) {
        self.live_keys = self.live_keys.saturating_sub(other.live_keys);
        self.live_bytes = self.live_bytes.saturating_sub(other.live_bytes);
        self.estimated |= other.estimated;
    }

    /// An estimate of half of these stats (each split half's share when nothing is counted).
    pub(crate) fn half_estimate(self) -> Self {
        Self {
            live_keys: self.live_keys / 2,
            live_bytes: self.live_bytes / 2,
            estimated: true,
        }
    }
}

/// Whether a range serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeStatus {
    /// Serving reads and writes.
    Active,
    /// Receiving a snapshot; invisible until the ingest finishes. A crash leaves it to be
    /// cleared at the next open.
    Ingesting,
    /// Holding a whole snapshot, checked, that does not serve until
    /// [`crate::Engine::install_staged`] (or goes with [`crate::Engine::discard_staged`]). A
    /// crash leaves it staged.
    Staged,
    /// Having its keys replaced by a staged snapshot's ([`crate::Engine::install_staged`]);
    /// its span is, meanwhile, the cover of the old and the new. A crash leaves the
    /// replacement to be finished at the next open.
    Swapping,
    /// Being removed; its keys are being deleted. A crash leaves it to be finished at the
    /// next open.
    Clearing,
}

/// A hosted range as the engine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeInfo {
    /// The range.
    pub id: RangeId,
    /// The keys it holds.
    pub span: KeyRange,
    /// Whether it serves.
    pub status: RangeStatus,
    /// The index of the last applied batch: replay the log from the next one.
    pub applied_index: u64,
    /// Live keys and bytes.
    pub stats: RangeStats,
    /// The application's metadata for the range ([`crate::WriteBatch::set_tag`]).
    pub tag: Vec<u8>,
}

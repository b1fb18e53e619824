//! The on-disk layout: two fjall keyspaces in one database (one journal, so a batch that
//! touches both commits atomically).
//!
//! - **`data`**: every hosted range's keys, each stored under the **bare user key**. A node's
//!   ranges never overlap (creating an overlapping range is refused), so the key alone says
//!   which range holds it. Splits and merges therefore move no data at all: they only
//!   rewrite range records. The value is the key's **version** (`u64`, big-endian) followed
//!   by the user's value bytes.
//! - **`meta`**: `format` → the layout version (`u32`, big-endian), checked at open;
//!   `range/<id as u64 big-endian>` → a [`RangeRecord`] (bincode): the range's span, status,
//!   **applied index**, next version and live key and byte counts; and
//!   `staged/<id as u64 big-endian>` → a [`StagedRecord`]: a snapshot received for a range
//!   this engine already hosts, kept aside until it is installed or discarded.
//! - **`staging`**: the keys of those snapshots, each under the range id (`u64`,
//!   big-endian) followed by the user key, valued as in `data`. Installing one replaces the
//!   range's keys in `data` with them (see `staging.rs`); a snapshot for a range not hosted
//!   yet is written straight to `data` instead, since nothing there needs keeping.
//!
//! Every apply writes its data changes and the range's updated record in one fjall batch,
//! so the applied index and the accounting can never disagree with the data, even after a
//! crash: the journal replays whole batches only, and the record is the last word on the
//! range. The record is rewritten on every batch (tens of bytes) rather than kept as
//! deltas, so recovery reads one record per range and scans nothing.

use crate::error::{Result, StorageError};
use crate::range_info::{RangeStats, RangeStatus};
use serde::{Deserialize, Serialize};
use shoal_core::{KeyRange, RangeId};

/// The keyspace holding user keys.
pub(crate) const DATA: &str = "data";
/// The keyspace holding range records and the format marker.
pub(crate) const META: &str = "meta";
/// The keyspace holding received snapshots of hosted ranges until they are installed.
pub(crate) const STAGING: &str = "staging";
/// The prefix of staged snapshot records in `meta`.
pub(crate) const STAGED_PREFIX: &[u8] = b"staged/";
/// The meta key of the layout version.
pub(crate) const FORMAT_KEY: &[u8] = b"format";
/// The layout version this code writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The prefix of range record keys in `meta`.
pub(crate) const RANGE_PREFIX: &[u8] = b"range/";
/// The bytes a stored value spends on its version.
pub(crate) const VERSION_LEN: usize = 8;

/// The meta key of `range`'s record.
pub(crate) fn range_key(range: RangeId) -> Vec<u8> {
    let mut key = Vec::with_capacity(RANGE_PREFIX.len() + 8);
    key.extend_from_slice(RANGE_PREFIX);
    key.extend_from_slice(&range.get().to_be_bytes());
    key
}

/// The meta key of `range`'s staged snapshot record.
pub(crate) fn staged_key(range: RangeId) -> Vec<u8> {
    let mut key = Vec::with_capacity(STAGED_PREFIX.len() + 8);
    key.extend_from_slice(STAGED_PREFIX);
    key.extend_from_slice(&range.get().to_be_bytes());
    key
}

/// The `staging` key of `key` in a snapshot staged for `range`.
pub(crate) fn staging_key(range: RangeId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&range.get().to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// A stored value: the version, then the user's bytes.
pub(crate) fn encode_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_LEN + value.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Splits a stored value into its version and the user's bytes.
pub(crate) fn decode_value(stored: &[u8]) -> Result<(u64, &[u8])> {
    let (version, value) = stored
        .split_first_chunk::<VERSION_LEN>()
        .ok_or_else(|| StorageError::Corrupt(format!("stored value of {} bytes", stored.len())))?;
    Ok((u64::from_be_bytes(*version), value))
}

/// What `meta` records about one range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RangeRecord {
    pub id: RangeId,
    pub span: KeyRange,
    pub status: RangeStatus,
    /// The index of the last applied batch.
    pub applied_index: u64,
    /// The version the next write to this range assigns, at most
    /// [`MAX_VERSION`](crate::MAX_VERSION)` + 1` (versions never repeat for a key:
    /// merges take the larger counter, snapshots carry it).
    pub next_version: u64,
    pub stats: RangeStats,
    /// The application's metadata for the range (a Raft store keeps the range's descriptor
    /// here), opaque to the engine, written atomically with applies and splits and carried
    /// by snapshots.
    pub tag: Vec<u8>,
}

impl RangeRecord {
    /// The encoded record.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        shoal_core::codec::encode(self).map_err(|e| StorageError::Corrupt(e.to_string()))
    }

    /// Decodes a record read from `meta`, up to `limit` bytes.
    pub(crate) fn decode(bytes: &[u8], limit: usize) -> Result<Self> {
        shoal_core::codec::decode(bytes, limit)
            .map_err(|e| StorageError::Corrupt(format!("range record: {e}")))
    }
}

/// A snapshot received for a range the engine already hosts, kept in `staging` until it is
/// installed in place of the range's contents or discarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StagedRecord {
    pub id: RangeId,
    /// The snapshot's span (it may differ from the hosted range's, after a split or merge
    /// the receiver has not applied).
    pub span: KeyRange,
    /// Every chunk arrived and checked: the snapshot may be installed. Until then a crash
    /// discards it at the next open.
    pub ready: bool,
    pub applied_index: u64,
    pub next_version: u64,
    pub stats: RangeStats,
    pub tag: Vec<u8>,
}

impl StagedRecord {
    /// The encoded record.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        shoal_core::codec::encode(self).map_err(|e| StorageError::Corrupt(e.to_string()))
    }

    /// Decodes a record read from `meta`, up to `limit` bytes.
    pub(crate) fn decode(bytes: &[u8], limit: usize) -> Result<Self> {
        shoal_core::codec::decode(bytes, limit)
            .map_err(|e| StorageError::Corrupt(format!("staged snapshot record: {e}")))
    }
}

//! A consistent, point-in-time view of one range.

use crate::error::{check_key_len, Result, StorageError};
use crate::layout::{RangeRecord, VERSION_LEN};
use crate::range_info::RangeStats;
use crate::read::{self, Entry, Scan, Versioned};
use fjall::{Keyspace, Readable, Snapshot};
use shoal_core::{KeyRange, RangeId};

/// Reads of one range at one point in time: batches applied after the view was taken are
/// not seen. Holding a view keeps the versions it reads from being compacted away, so drop
/// it when done.
pub struct RangeView {
    snapshot: Snapshot,
    data: Keyspace,
    record: RangeRecord,
    max_key_len: usize,
}

impl RangeView {
    pub(crate) fn new(
        snapshot: Snapshot,
        data: Keyspace,
        record: RangeRecord,
        max_key_len: usize,
    ) -> Self {
        Self {
            snapshot,
            data,
            record,
            max_key_len,
        }
    }

    /// The range.
    pub fn range(&self) -> RangeId {
        self.record.id
    }

    /// The range's span at this point.
    pub fn span(&self) -> &KeyRange {
        &self.record.span
    }

    /// The applied index at this point.
    pub fn applied_index(&self) -> u64 {
        self.record.applied_index
    }

    /// Live keys and bytes at this point.
    pub fn stats(&self) -> RangeStats {
        self.record.stats
    }

    pub(crate) fn record(&self) -> &RangeRecord {
        &self.record
    }

    /// The value and version of `key` at this point.
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>> {
        check_key_len(key, self.max_key_len)?;
        if !self.record.span.contains(key) {
            return Err(StorageError::KeyOutsideRange {
                range: self.record.id,
            });
        }
        read::versioned(self.snapshot.get(&self.data, key)?)
    }

    /// The entries `scan` asks for, at this point.
    pub fn scan(&self, scan: &Scan) -> Result<Vec<Entry>> {
        scan.check(self.max_key_len)?;
        let Some(bounds) = scan.bounds_within(&self.record.span) else {
            return Ok(Vec::new());
        };
        read::collect(self.iter(bounds), scan)
    }

    /// Every entry of the range at this point, in key order (unbounded count: for
    /// snapshot streams and split keys, which walk the whole range once).
    pub(crate) fn iter_all(&self) -> fjall::Iter {
        self.iter_span(&self.record.span)
    }

    /// Every entry of `span` (a part of the range) at this point, in key order.
    pub(crate) fn iter_span(&self, span: &KeyRange) -> fjall::Iter {
        let end = match span.end().as_key() {
            Some(end) => std::ops::Bound::Excluded(end.to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        self.iter((span.start().to_vec(), end))
    }

    fn iter(&self, (start, end): (Vec<u8>, std::ops::Bound<Vec<u8>>)) -> fjall::Iter {
        self.snapshot
            .range(&self.data, (std::ops::Bound::Included(start), end))
    }

    /// The key at the size median of the range: the first key at which the entries before
    /// it hold at least half the live bytes. Splitting there gives halves of about equal
    /// size. `None` if the range holds fewer than two keys. Reads the range's first half.
    pub fn split_key(&self) -> Result<Option<Vec<u8>>> {
        let half = self.record.stats.live_bytes / 2;
        let mut before = 0u64;
        let mut last = None;
        let mut count = 0usize;
        for guard in self.iter_all() {
            count += 1;
            let (key, stored) = guard.into_inner()?;
            if last.is_some() && before >= half {
                return Ok(Some(key.to_vec()));
            }
            let value_len = stored.len().saturating_sub(VERSION_LEN);
            before += (key.len() + value_len) as u64;
            last = Some(key);
        }
        // The last entry alone holds over half: split just before it (if it is not the
        // only one).
        Ok(last.filter(|_| count >= 2).map(|k| k.to_vec()))
    }
}

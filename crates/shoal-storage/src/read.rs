//! Reads: entries, scan requests, and the scan itself over any fjall read source.

use crate::error::{check_key_len, Result, StorageError};
use crate::layout::decode_value;
use shoal_core::{KeyRange, RangeEnd};
use std::ops::Bound;

/// A key's value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The version the last write gave the key.
    pub version: u64,
    /// The value.
    pub value: Vec<u8>,
}

/// One entry returned by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// The key's version.
    pub version: u64,
    /// The value.
    pub value: Vec<u8>,
}

/// A scan over part of one range: keys in `[start, end)` (each bound, when absent, is the
/// range's own), at most `limit` of them, ascending or descending. Bounds beyond the range
/// are narrowed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The inclusive lower bound, if narrower than the range's.
    pub start: Option<Vec<u8>>,
    /// The exclusive upper bound, if narrower than the range's.
    pub end: Option<Vec<u8>>,
    /// The most entries returned (at least 1).
    pub limit: usize,
    /// Descending order (from the end) instead of ascending.
    pub reverse: bool,
}

impl Scan {
    /// The whole range, ascending, at most `limit` entries.
    pub fn all(limit: usize) -> Self {
        Self {
            start: None,
            end: None,
            limit,
            reverse: false,
        }
    }

    /// From `start` (inclusive).
    pub fn from(mut self, start: impl Into<Vec<u8>>) -> Self {
        self.start = Some(start.into());
        self
    }

    /// Up to `end` (exclusive).
    pub fn to(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.end = Some(end.into());
        self
    }

    /// In descending order.
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }

    /// Checks the request on its own (`start <= end`, `limit > 0`, key sizes).
    pub(crate) fn check(&self, max_key_len: usize) -> Result<()> {
        for key in [&self.start, &self.end].into_iter().flatten() {
            check_key_len(key, max_key_len)?;
        }
        if let (Some(start), Some(end)) = (&self.start, &self.end) {
            if start > end {
                return Err(StorageError::InvalidScan("start is after end"));
            }
        }
        if self.limit == 0 {
            return Err(StorageError::InvalidScan("limit is zero"));
        }
        Ok(())
    }

    /// The request's bounds narrowed to `span`, or `None` if nothing is left.
    pub(crate) fn bounds_within(&self, span: &KeyRange) -> Option<(Vec<u8>, Bound<Vec<u8>>)> {
        let start = match &self.start {
            Some(s) if s.as_slice() > span.start() => s.clone(),
            _ => span.start().to_vec(),
        };
        let end = match (&self.end, span.end()) {
            (Some(e), RangeEnd::Key(k)) => Some(e.min(k).clone()),
            (Some(e), RangeEnd::Unbounded) => Some(e.clone()),
            (None, RangeEnd::Key(k)) => Some(k.clone()),
            (None, RangeEnd::Unbounded) => None,
        };
        match end {
            Some(end) if end <= start => None,
            Some(end) => Some((start, Bound::Excluded(end))),
            None => Some((start, Bound::Unbounded)),
        }
    }
}

/// Runs `scan` over the entries `iter` yields (already bounded), decoding versions.
pub(crate) fn collect(iter: fjall::Iter, scan: &Scan) -> Result<Vec<Entry>> {
    let mut out = Vec::with_capacity(scan.limit.min(1024));
    let mut push = |guard: fjall::Guard| -> Result<bool> {
        let (key, stored) = guard.into_inner()?;
        let (version, value) = decode_value(&stored)?;
        out.push(Entry {
            key: key.to_vec(),
            version,
            value: value.to_vec(),
        });
        Ok(out.len() < scan.limit)
    };
    if scan.reverse {
        for guard in iter.rev() {
            if !push(guard)? {
                break;
            }
        }
    } else {
        for guard in iter {
            if !push(guard)? {
                break;
            }
        }
    }
    Ok(out)
}

/// Decodes a stored value read by a point get.
pub(crate) fn versioned(stored: Option<fjall::Slice>) -> Result<Option<Versioned>> {
    stored
        .map(|s| {
            let (version, value) = decode_value(&s)?;
            Ok(Versioned {
                version,
                value: value.to_vec(),
            })
        })
        .transpose()
}

//! WAL records and their framing.
//!
//! A record on disk is `[payload length: u32 LE][CRC32C of the payload: u32 LE][payload]`,
//! the payload being the bincode encoding of a [`Record`]. A record is written whole or,
//! after a crash mid-write, found torn: too short for its header, a length past the end of
//! the file or over the limit, or a checksum that does not match.

use crate::entry::{Entry, LogIndex, Term};
use crate::snapshot::SnapshotMeta;
use crate::store::HardState;
use serde::{Deserialize, Serialize};
use shoal_core::GroupId;

/// Bytes before a record's payload: length and checksum.
pub(crate) const HEADER_BYTES: usize = 8;

/// One change to one group's log, in the order it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Record {
    /// Consecutive entries appended, replacing any held at or after the first one.
    Entries {
        /// The group.
        group: GroupId,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// A new hard state.
    HardState {
        /// The group.
        group: GroupId,
        /// The state.
        state: HardState,
    },
    /// Entries at or after `from` dropped.
    Truncate {
        /// The group.
        group: GroupId,
        /// The first dropped index.
        from: LogIndex,
    },
    /// A snapshot recorded and the log compacted through `through`, whose term is `term`.
    Compact {
        /// The group.
        group: GroupId,
        /// The snapshot.
        snapshot: SnapshotMeta,
        /// The last dropped index.
        through: LogIndex,
        /// Its term.
        term: Term,
    },
    /// The log replaced by a snapshot.
    InstallSnapshot {
        /// The group.
        group: GroupId,
        /// The snapshot.
        meta: SnapshotMeta,
    },
    /// A group's state apart from its entries, written at the start of every segment so that
    /// older segments are needed only for the entries they hold.
    Checkpoint {
        /// The group.
        group: GroupId,
        /// Its hard state.
        hard_state: HardState,
        /// Its latest snapshot.
        snapshot: SnapshotMeta,
        /// Index and term just before its first entry.
        base: (LogIndex, Term),
    },
    /// The group removed from this WAL.
    RemoveGroup {
        /// The group.
        group: GroupId,
    },
}

impl Record {
    /// The group the record is about.
    pub(crate) fn group(&self) -> GroupId {
        match self {
            Record::Entries { group, .. }
            | Record::HardState { group, .. }
            | Record::Truncate { group, .. }
            | Record::Compact { group, .. }
            | Record::InstallSnapshot { group, .. }
            | Record::Checkpoint { group, .. }
            | Record::RemoveGroup { group } => *group,
        }
    }
}

/// Appends `record`, framed, to `buf`; returns the framed length. Fails when the payload
/// would pass `max_payload`, leaving `buf` as it was. `scratch` is reused between calls.
pub(crate) fn encode(
    record: &Record,
    buf: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    max_payload: usize,
) -> Result<usize, String> {
    scratch.clear();
    let len =
        shoal_core::codec::encode_into(record, scratch, max_payload).map_err(|e| e.to_string())?;
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(scratch).to_le_bytes());
    buf.extend_from_slice(scratch);
    Ok(HEADER_BYTES + len)
}

/// Why the bytes at some offset are not a whole, valid record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes left than a header.
    #[error("{0} bytes left, too short for a record header")]
    ShortHeader(usize),
    /// A zero length (unwritten, zero-filled space) or one over the limit.
    #[error("record length {0} is zero or over the limit")]
    BadLength(u32),
    /// The length runs past the end of the segment.
    #[error("record of {len} bytes runs past the end ({left} bytes left)")]
    Truncated {
        /// The recorded length.
        len: u32,
        /// Payload bytes present.
        left: usize,
    },
    /// The payload's checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// The checksum matched but the payload is not a record.
    #[error("undecodable payload: {0}")]
    Decode(String),
}

/// Decodes the record at the front of `bytes`: the record and its framed length.
pub(crate) fn decode(bytes: &[u8], max_payload: usize) -> Result<(Record, usize), RecordError> {
    if bytes.len() < HEADER_BYTES {
        return Err(RecordError::ShortHeader(bytes.len()));
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len == 0 || len as usize > max_payload {
        return Err(RecordError::BadLength(len));
    }
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() < len as usize {
        return Err(RecordError::Truncated {
            len,
            left: payload.len(),
        });
    }
    let payload = &payload[..len as usize];
    if crc32c::crc32c(payload) != crc {
        return Err(RecordError::Checksum);
    }
    let record = shoal_core::codec::decode(payload, max_payload)
        .map_err(|e| RecordError::Decode(e.to_string()))?;
    Ok((record, HEADER_BYTES + len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryPayload;

    fn sample() -> Record {
        Record::Entries {
            group: GroupId::new(3),
            entries: vec![Entry {
                index: 5,
                term: 2,
                payload: EntryPayload::Command("abc".into()),
            }],
        }
    }

    #[test]
    fn a_record_round_trips_and_reports_its_length() {
        let mut buf = vec![9];
        let n = encode(&sample(), &mut buf, &mut Vec::new(), 1 << 20).unwrap();
        assert_eq!(buf.len(), 1 + n);
        assert_eq!(decode(&buf[1..], 1 << 20).unwrap(), (sample(), n));
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_detected() {
        let mut buf = Vec::new();
        let n = encode(&sample(), &mut buf, &mut Vec::new(), 1 << 20).unwrap();
        for cut in 0..n {
            assert!(decode(&buf[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        for i in 0..n {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad, 1 << 20).is_err(), "flip at {i}");
        }
        assert_eq!(decode(&[0; 16], 1 << 20), Err(RecordError::BadLength(0)));
    }

    #[test]
    fn an_oversized_record_is_refused_on_both_sides() {
        let mut buf = Vec::new();
        assert!(encode(&sample(), &mut buf, &mut Vec::new(), 4).is_err());
        assert!(buf.is_empty());
        let n = encode(&sample(), &mut buf, &mut Vec::new(), 1 << 20).unwrap();
        assert!(matches!(
            decode(&buf[..n], 4),
            Err(RecordError::BadLength(_))
        ));
    }
}

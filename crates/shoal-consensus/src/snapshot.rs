//! Snapshots: what a state machine hands Raft so the log before it can be dropped, and how a
//! lagging follower receives one in checksummed chunks.

use crate::entry::{LogIndex, Term};
use crate::membership::Membership;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes (0: no snapshot).
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The membership in force at `index`.
    pub membership: Membership,
    /// Length of the snapshot's bytes.
    pub size: u64,
    /// CRC32C of all the snapshot's bytes.
    pub checksum: u32,
}

/// A state-machine snapshot: its metadata and its bytes (which Raft treats as opaque).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The state machine's serialized state at `meta.index`.
    pub data: Bytes,
}

/// A state machine Raft replicates into: the application side of a group.
///
/// The core never calls it (it is sans-IO); drivers do, in this order per ready: install a
/// received snapshot with [`StateMachine::restore`], then [`StateMachine::apply`] every
/// committed entry in index order. [`StateMachine::snapshot`] is called when the core asks for
/// one ([`crate::Ready::snapshot_wanted`]): once
/// [`crate::RaftConfig::snapshot_after_entries`] entries were applied since the last snapshot
/// (a count of entries, not of bytes), or when a follower needs entries the log no longer
/// holds and no snapshot kept in memory covers them (none was taken here, or it was
/// released unused).
pub trait StateMachine {
    /// Applies one committed entry (every kind: commands, no-ops and membership entries, so
    /// the applied index can be tracked) and returns the answer for whoever proposed it (empty
    /// when there is nothing to say). Must be deterministic.
    fn apply(&mut self, entry: &crate::entry::Entry) -> Bytes;
    /// The index of the last entry applied.
    fn applied_index(&self) -> LogIndex;
    /// The state machine's state as bytes, at [`StateMachine::applied_index`].
    fn snapshot(&mut self) -> Bytes;
    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, snapshot: &Snapshot);
}

/// Why a received snapshot chunk was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk's bytes do not match its CRC.
    #[error("chunk checksum mismatch at offset {0}")]
    BadChunkChecksum(u64),
    /// The chunk starts elsewhere than where the received bytes end (a lost or repeated
    /// chunk); the sender resumes from the receiver's offset.
    #[error("chunk at {got} but {expected} bytes received")]
    OutOfOrder {
        /// Bytes held.
        expected: u64,
        /// The chunk's offset.
        got: u64,
    },
    /// The chunk runs past the declared size, or the declared size is over the limit.
    #[error("snapshot of {size} B over the limit or overrun")]
    TooLarge {
        /// The declared size.
        size: u64,
    },
    /// All bytes arrived but their CRC does not match the snapshot's checksum.
    #[error("snapshot checksum mismatch")]
    BadChecksum,
}

/// A snapshot being received: chunks are taken in order only, so a transfer interrupted by a
/// lost chunk, a leader change or a restart of the stream resumes from [`Self::received`].
#[derive(Debug)]
pub(crate) struct SnapshotReceiver {
    pub(crate) meta: SnapshotMeta,
    buf: BytesMut,
}

impl SnapshotReceiver {
    pub(crate) fn new(meta: SnapshotMeta) -> Self {
        Self {
            meta,
            buf: BytesMut::new(),
        }
    }

    pub(crate) fn received(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Takes one chunk. `Ok(Some(snapshot))` once the last byte arrived and the whole
    /// checksum verified.
    pub(crate) fn take(
        &mut self,
        offset: u64,
        data: &[u8],
        crc: u32,
        max_size: u64,
    ) -> Result<Option<Snapshot>, ChunkError> {
        let size = self.meta.size;
        if size > max_size || offset.saturating_add(data.len() as u64) > size {
            return Err(ChunkError::TooLarge { size });
        }
        if offset != self.received() {
            return Err(ChunkError::OutOfOrder {
                expected: self.received(),
                got: offset,
            });
        }
        if crc32c::crc32c(data) != crc {
            return Err(ChunkError::BadChunkChecksum(offset));
        }
        self.buf.extend_from_slice(data);
        if self.received() < size {
            return Ok(None);
        }
        let data = std::mem::take(&mut self.buf).freeze();
        if crc32c::crc32c(&data) != self.meta.checksum {
            return Err(ChunkError::BadChecksum);
        }
        Ok(Some(Snapshot {
            meta: self.meta.clone(),
            data,
        }))
    }
}

/// Whether two metas describe the same snapshot (so a partial transfer can resume).
pub(crate) fn same_snapshot(a: &SnapshotMeta, b: &SnapshotMeta) -> bool {
    a.index == b.index && a.term == b.term && a.size == b.size && a.checksum == b.checksum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_for(data: &[u8]) -> SnapshotMeta {
        SnapshotMeta {
            index: 7,
            term: 2,
            membership: Membership::default(),
            size: data.len() as u64,
            checksum: crc32c::crc32c(data),
        }
    }

    #[test]
    fn chunks_in_order_assemble_and_bad_ones_change_nothing() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut rx = SnapshotReceiver::new(meta_for(&data));
        let c = |r: std::ops::Range<usize>| crc32c::crc32c(&data[r]);
        assert_eq!(rx.take(0, &data[..40], c(0..40), 1 << 20), Ok(None));
        assert_eq!(
            rx.take(60, &data[60..], c(60..100), 1 << 20),
            Err(ChunkError::OutOfOrder {
                expected: 40,
                got: 60
            })
        );
        assert_eq!(
            rx.take(40, &data[40..60], 0xdead, 1 << 20),
            Err(ChunkError::BadChunkChecksum(40))
        );
        assert_eq!(rx.received(), 40);
        assert_eq!(rx.take(40, &data[40..60], c(40..60), 1 << 20), Ok(None));
        let snap = rx
            .take(60, &data[60..], c(60..100), 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(&snap.data[..], &data[..]);
    }

    #[test]
    fn oversize_and_wrong_total_checksum_are_refused() {
        let data = vec![1u8; 10];
        let mut rx = SnapshotReceiver::new(meta_for(&data));
        assert_eq!(
            rx.take(0, &data, crc32c::crc32c(&data), 5),
            Err(ChunkError::TooLarge { size: 10 })
        );
        let mut meta = meta_for(&data);
        meta.checksum ^= 1;
        let mut rx = SnapshotReceiver::new(meta);
        assert_eq!(
            rx.take(0, &data, crc32c::crc32c(&data), 100),
            Err(ChunkError::BadChecksum)
        );
    }
}

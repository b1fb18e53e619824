//! What the engine refuses, and why.

use shoal_core::RangeId;
use std::path::PathBuf;

/// Everything the storage engine can fail with. Each refusal of bad input is its own variant
/// and changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Another process (or another engine in this one) has the data directory open.
    #[error("data directory {path} is locked by another process")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The data directory holds something this engine cannot read: a damaged file, a record
    /// that does not decode, a layout from another version.
    #[error("corrupt or unreadable data: {0}")]
    Corrupt(String),
    /// An error from fjall, the LSM tree underneath (I/O failure, poisoned journal).
    #[error("storage engine: {0}")]
    Engine(fjall::Error),
    /// A key longer than the configured maximum.
    #[error("key of {len} bytes exceeds the maximum of {max}")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The empty key: it can be neither stored (the LSM tree underneath has no room for it)
    /// nor a split point.
    #[error("the empty key cannot be stored")]
    EmptyKey,
    /// A value longer than the configured maximum.
    #[error("value of {len} bytes exceeds the maximum of {max}")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A scan whose start lies after its end, or whose limit is zero.
    #[error("invalid scan: {0}")]
    InvalidScan(&'static str),
    /// No range with this id is hosted here.
    #[error("range {0} is not hosted by this engine")]
    RangeNotFound(RangeId),
    /// A range with this id is already hosted here.
    #[error("range {0} already exists")]
    RangeExists(RangeId),
    /// The new range's span overlaps a hosted range's.
    #[error("range {range} overlaps hosted range {existing}")]
    RangeOverlap {
        /// The range being created.
        range: RangeId,
        /// The hosted range it overlaps.
        existing: RangeId,
    },
    /// The range is hosted but not serving: a snapshot is being ingested into it, is staged
    /// in it, or is replacing its contents.
    #[error("range {0} is receiving or installing a snapshot and cannot serve yet")]
    RangeNotReady(RangeId),
    /// A snapshot for the range is already being received or is staged: install or discard
    /// it ([`crate::Engine::install_staged`], [`crate::Engine::discard_staged`]) first.
    #[error("a snapshot of range {0} is already being received or staged")]
    SnapshotInProgress(RangeId),
    /// No staged snapshot of the range to install or discard.
    #[error("no staged snapshot of range {0}")]
    NoStagedSnapshot(RangeId),
    /// A key outside the range's span.
    #[error("key is outside range {range}")]
    KeyOutsideRange {
        /// The range addressed.
        range: RangeId,
    },
    /// An apply whose index is not above the range's applied index (already applied).
    #[error("range {range}: index {index} is not above the applied index {applied}")]
    StaleApply {
        /// The range addressed.
        range: RangeId,
        /// The index offered.
        index: u64,
        /// The range's applied index.
        applied: u64,
    },
    /// The range has issued every version up to [`MAX_VERSION`](crate::MAX_VERSION); the
    /// write was refused and nothing changed.
    #[error("range {0} has no versions left to issue")]
    VersionsExhausted(RangeId),
    /// A split key not strictly inside the range, or a merge of ranges that do not touch.
    #[error("invalid split or merge: {0}")]
    InvalidSplitMerge(String),
    /// A snapshot stream that cannot be ingested: a bad checksum, a missing or repeated
    /// chunk, entries out of order or outside the span, totals that do not add up.
    #[error("bad snapshot stream: {0}")]
    BadSnapshot(String),
}

impl From<fjall::Error> for StorageError {
    fn from(e: fjall::Error) -> Self {
        match e {
            // A short or malformed file reads as these I/O kinds; other I/O is the disk's.
            fjall::Error::Io(ref io) | fjall::Error::Storage(fjall::LsmError::Io(ref io))
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                Self::Corrupt(e.to_string())
            }
            fjall::Error::Locked => Self::Locked {
                path: PathBuf::new(),
            },
            fjall::Error::Storage(fjall::LsmError::Io(_)) => Self::Engine(e),
            fjall::Error::Storage(_)
            | fjall::Error::JournalRecovery(_)
            | fjall::Error::InvalidVersion(_)
            | fjall::Error::Decompress(_)
            | fjall::Error::InvalidTrailer
            | fjall::Error::InvalidTag(_)
            | fjall::Error::Unrecoverable => Self::Corrupt(e.to_string()),
            other => Self::Engine(other),
        }
    }
}

impl StorageError {
    /// Whether this is a refusal of the input itself: the same request gets the same
    /// refusal from every engine with the same configuration and range, and nothing
    /// changed. A replicated state machine turns these into the same rejection on every
    /// replica; any other error is the engine's or the disk's own.
    pub fn is_refusal(&self) -> bool {
        match self {
            StorageError::KeyTooLarge { .. }
            | StorageError::ValueTooLarge { .. }
            | StorageError::EmptyKey
            | StorageError::InvalidScan(_)
            | StorageError::KeyOutsideRange { .. }
            | StorageError::VersionsExhausted(_)
            | StorageError::InvalidSplitMerge(_)
            | StorageError::RangeExists(_)
            | StorageError::RangeOverlap { .. } => true,
            StorageError::Locked { .. }
            | StorageError::Corrupt(_)
            | StorageError::Engine(_)
            | StorageError::RangeNotFound(_)
            | StorageError::RangeNotReady(_)
            | StorageError::SnapshotInProgress(_)
            | StorageError::NoStagedSnapshot(_)
            | StorageError::StaleApply { .. }
            | StorageError::BadSnapshot(_) => false,
        }
    }
}

/// Refuses a key to store: the empty key, or one longer than `max` bytes.
pub(crate) fn check_stored_key(key: &[u8], max: usize) -> Result<()> {
    if key.is_empty() {
        return Err(StorageError::EmptyKey);
    }
    check_key_len(key, max)
}

/// Refuses `key` if it is longer than `max` bytes (a bound or a key to read may be empty).
pub(crate) fn check_key_len(key: &[u8], max: usize) -> Result<()> {
    if key.len() > max {
        return Err(StorageError::KeyTooLarge {
            len: key.len(),
            max,
        });
    }
    Ok(())
}

/// A shorthand for results of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

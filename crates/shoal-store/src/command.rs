//! What a range's Raft log carries, and what applying an entry answers.
//!
//! Commands are the store's own serde types, encoded with shoal-core's codec. Applying one is
//! deterministic: every replica reaches the same answer. A command that cannot apply (a key
//! outside the range, a value over the limit, a split at a key the range does not hold) is a
//! deterministic rejection: it is applied as an empty batch, so the applied index advances
//! on every replica alike, and its proposer gets the reason.

use super::meta::{MetaAnswer, MetaOp};
use serde::{Deserialize, Serialize};
use shoal_core::{RangeDescriptor, RangeId};

/// A replicated command for one range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Writes, applied together with the range's applied index (all or none after a crash).
    /// Each sees the effects of the ones before it.
    Write(Vec<WriteOp>),
    /// Split the range at `at` (strictly inside it): the range keeps the keys below, a new
    /// range `right` (with the same replicas) takes the rest. `right` comes from the meta
    /// range's allocator, so no range ever had it.
    Split {
        /// The right half's first key.
        #[serde(with = "serde_bytes")]
        at: Vec<u8>,
        /// The right half's id.
        right: RangeId,
    },
    /// A change to the meta range (refused by every other range).
    Meta(MetaOp),
}

/// One write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Sets `key` to `new` (or removes it, with `None`) if `expect` holds.
    CompareAndSet {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// What must hold.
        expect: Expect,
        /// The new value, or `None` to delete.
        #[serde(with = "serde_bytes")]
        new: Option<Vec<u8>>,
    },
}

impl WriteOp {
    /// The key it writes.
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put { key, .. }
            | WriteOp::Delete { key }
            | WriteOp::CompareAndSet { key, .. } => key,
        }
    }
}

/// A compare-and-set's condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// The key holds no value.
    Absent,
    /// The key holds a value at this version.
    Version(u64),
    /// The key holds exactly this value.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// What became of one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// Written; the key's new version.
    Written {
        /// The version.
        version: u64,
    },
    /// Deleted (`existed`: whether there was a value).
    Deleted {
        /// Whether the key held a value.
        existed: bool,
    },
    /// A compare-and-set whose condition failed: the key holds another version.
    Mismatch {
        /// The version it holds.
        current_version: u64,
    },
    /// A compare-and-set on a key that holds no value (and the condition wanted one).
    Missing,
}

/// Why a command was rejected (deterministically, on every replica).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// A key is outside the range (it split since the proposer looked); here is the range as
    /// it is now.
    #[error("key outside the range (now {:?})", .0.range)]
    KeyOutsideRange(Box<RangeDescriptor>),
    /// A key or value over the limits.
    #[error("key or value too large: {0}")]
    TooLarge(String),
    /// The range has issued every version it may (see shoal-storage's `MAX_VERSION`).
    #[error("the range's versions are exhausted")]
    VersionsExhausted,
    /// A split that cannot happen: not strictly inside the range, an id in use, a membership
    /// change under way, the generation exhausted.
    #[error("invalid split: {0}")]
    InvalidSplit(String),
    /// A meta operation that cannot apply: sent to another range, or malformed.
    #[error("invalid meta operation: {0}")]
    InvalidMeta(String),
    /// Bytes that do not decode as a command (no honest proposer sends them).
    #[error("undecodable command")]
    Undecodable,
}

/// What applying an entry answers its proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The writes' outcomes, in order.
    Written(Vec<WriteOutcome>),
    /// The split happened: the range's two halves.
    Split {
        /// The range, now the left half.
        left: Box<RangeDescriptor>,
        /// The new right half.
        right: Box<RangeDescriptor>,
    },
    /// A meta operation's answer.
    Meta(MetaAnswer),
    /// The command was rejected; nothing changed but the applied index.
    Rejected(Rejection),
    /// Not a command (a no-op or membership entry).
    Nothing,
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::codec;

    /// Byte fields go on the wire as one length and the bytes, exactly as a plain
    /// `Vec<u8>` does with the codec: `serde_bytes` changes the speed, not the format.
    #[test]
    fn byte_fields_encode_like_plain_vectors() {
        #[derive(Serialize)]
        enum PlainOp {
            #[allow(dead_code)]
            Put { key: Vec<u8>, value: Vec<u8> },
        }
        let key = b"some key".to_vec();
        let value = vec![7u8; 300];
        let fast = codec::encode(&WriteOp::Put {
            key: key.clone(),
            value: value.clone(),
        })
        .unwrap();
        let plain = codec::encode(&PlainOp::Put { key, value }).unwrap();
        assert_eq!(fast, plain);
        let back: WriteOp = codec::decode(&plain, plain.len()).unwrap();
        assert_eq!(back.key(), b"some key");
    }
}

//! What a range's Raft log carries, and what applying an entry answers.
//!
//! Commands are the store's own serde types, encoded with shoal-core's codec; the writes in
//! them, and their outcomes, are shoal-storage's (the engine applies them as they are). Applying one is
//! deterministic: every replica reaches the same answer. A command that cannot apply (a key
//! outside the range, a value over the limit, a split at a key the range does not hold) is a
//! deterministic rejection: it is applied as an empty batch, so the applied index advances
//! on every replica alike, and its proposer gets the reason.

use super::meta::{MetaAnswer, MetaOp};
use serde::{Deserialize, Serialize};
use shoal_core::{RangeDescriptor, RangeId};
pub use shoal_storage::{Condition, WriteOp, WriteOutcome};

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
    /// Input the engine refuses on every replica (the empty key, say): the proposer should
    /// have refused it before proposing.
    #[error("refused by the engine: {0}")]
    Refused(String),
    /// Bytes that do not decode as a command (no honest proposer sends them).
    #[error("undecodable command")]
    Undecodable,
}

/// What applying an entry answers its proposer: the range machine's
/// [`shoal_consensus::StateMachine::Response`], handed to the proposer as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Not a command (a no-op or membership entry), or a proposal answered before it was
    /// applied (acks below a majority).
    #[default]
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

    /// The log's and node RPC's encoding of writes and their outcomes, pinned: replicas of
    /// different builds replay one another's entries.
    #[test]
    fn writes_and_outcomes_keep_their_encoding() {
        let command = Command::Write(vec![
            WriteOp::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            WriteOp::Delete { key: b"d".to_vec() },
            WriteOp::CompareAndSet {
                key: b"c".to_vec(),
                expect: Condition::Value(b"old".to_vec()),
                new: Some(b"new".to_vec()),
            },
            WriteOp::CompareAndSet {
                key: b"a".to_vec(),
                expect: Condition::Absent,
                new: None,
            },
            WriteOp::CompareAndSet {
                key: b"n".to_vec(),
                expect: Condition::Version(300),
                new: None,
            },
        ]);
        let applied = Applied::Written(vec![
            WriteOutcome::Written { version: 7 },
            WriteOutcome::Deleted { existed: true },
            WriteOutcome::Mismatch {
                current_version: 300,
            },
            WriteOutcome::Missing,
        ]);
        let hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(codec::encode(&command).unwrap()),
            "000500016b017601016402016302036f6c6401036e6577020161000002016e01fb2c0100"
        );
        assert_eq!(
            hex(codec::encode(&applied).unwrap()),
            "00040007010102fb2c0103"
        );
    }
}

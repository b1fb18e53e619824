//! A write batch for one range, and what each of its operations did. The operations and
//! outcomes are serde types: a replicated store carries them in its log and on the wire as
//! they are (byte fields as one length and the bytes, through `serde_bytes`).

use serde::{Deserialize, Serialize};

/// What a conditional write expects of the key's current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key does not exist.
    Absent,
    /// The key exists at exactly this version.
    Version(u64),
    /// The key exists with exactly this value.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key` (nothing happens if it is absent).
    Delete {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Sets (`Some`) or removes (`None`) `key` only if `expect` holds; otherwise leaves it.
    CompareAndSet {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// What the key must be now.
        expect: Condition,
        /// What it becomes: a value, or removed.
        #[serde(with = "serde_bytes")]
        new: Option<Vec<u8>>,
    },
}

impl WriteOp {
    /// The key the operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put { key, .. }
            | WriteOp::Delete { key }
            | WriteOp::CompareAndSet { key, .. } => key,
        }
    }
}

/// Operations on one range, applied in order (a later operation sees the earlier ones'
/// effects) and committed together with the range's applied index: after a crash either
/// all of them are there or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
    tag: Option<Vec<u8>>,
}

impl WriteBatch {
    /// An empty batch (applying it only advances the applied index).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `n` operations.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            ops: Vec::with_capacity(n),
            tag: None,
        }
    }

    /// Replaces the range's tag (the application's metadata for it, see
    /// [`crate::RangeInfo::tag`]) in the same commit as the operations. At most the
    /// engine's `max_value_len` bytes.
    pub fn set_tag(&mut self, tag: impl Into<Vec<u8>>) -> &mut Self {
        self.tag = Some(tag.into());
        self
    }

    /// The tag this batch sets, if any.
    pub fn tag(&self) -> Option<&[u8]> {
        self.tag.as_deref()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(WriteOp::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(WriteOp::Delete { key: key.into() });
        self
    }

    /// Adds a compare-and-set.
    pub fn compare_and_set(
        &mut self,
        key: impl Into<Vec<u8>>,
        expect: Condition,
        new: Option<Vec<u8>>,
    ) -> &mut Self {
        self.ops.push(WriteOp::CompareAndSet {
            key: key.into(),
            expect,
            new,
        });
        self
    }

    /// Adds any operation.
    pub fn push(&mut self, op: WriteOp) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// How many operations there are.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What one operation of an applied batch did, in the batch's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// The key now holds the new value at this version.
    Written {
        /// The key's new version.
        version: u64,
    },
    /// The key is now absent.
    Deleted {
        /// Whether it existed before.
        existed: bool,
    },
    /// The condition failed: the key exists at this version (and was left alone).
    Mismatch {
        /// The key's current version.
        current_version: u64,
    },
    /// The condition failed: the key does not exist (and was left alone).
    Missing,
}

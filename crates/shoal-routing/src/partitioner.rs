//! Subjects to shards: the key hash followed by jump hashing.

use crate::jump::jump_hash;
use crate::key_hash::key_hash;
use std::num::NonZeroU32;
use thiserror::Error;

/// What a [`Partitioner`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PartitionerError {
    /// A partitioner needs at least one shard.
    #[error("a partitioner needs at least one shard")]
    NoShards,
}

/// Maps a subject (any byte string: a key, a topic, a tenant) to one of `shards` shards.
///
/// The mapping is stable across processes and versions (see [`crate::key_hash()`]). Growing
/// from `n` to `m` shards moves only the subjects that land in the new shards, about
/// `(m - n) / m` of them; shrinking moves only those of the removed shards.
///
/// ```
/// use shoal_routing::Partitioner;
///
/// let mut p = Partitioner::new(8)?;
/// let before = p.shard_of(b"orders/1234");
/// assert!(before < 8);
/// p.set_shards(9)?;
/// let after = p.shard_of(b"orders/1234");
/// assert!(after == before || after == 8);
/// # Ok::<(), shoal_routing::PartitionerError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partitioner {
    shards: NonZeroU32,
}

impl Partitioner {
    /// A partitioner over `shards` shards.
    pub fn new(shards: u32) -> Result<Self, PartitionerError> {
        let shards = NonZeroU32::new(shards).ok_or(PartitionerError::NoShards)?;
        Ok(Self { shards })
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.shards.get()
    }

    /// Changes the number of shards (usually grows it).
    pub fn set_shards(&mut self, shards: u32) -> Result<(), PartitionerError> {
        self.shards = NonZeroU32::new(shards).ok_or(PartitionerError::NoShards)?;
        Ok(())
    }

    /// The shard of `subject`, in `0..shards()`.
    #[inline]
    pub fn shard_of(&self, subject: &[u8]) -> u32 {
        jump_hash(key_hash(subject), self.shards)
    }

    /// The shard of a subject whose [`crate::key_hash()`] is already known.
    #[inline]
    pub fn shard_of_hash(&self, hash: u64) -> u32 {
        jump_hash(hash, self.shards)
    }
}

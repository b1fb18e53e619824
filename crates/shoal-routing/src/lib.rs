//! Shoal's routing: where a key lives.
//!
//! - [`key_hash()`]: the fixed, documented 64-bit key hash (XXH3-64, seed 0) every placement
//!   starts from, stable across platforms and versions.
//! - [`jump_hash`] and [`Partitioner`]: jump consistent hashing, subject → one of N numbered
//!   shards, where N can grow and only the keys of new shards move.
//! - [`Rendezvous`]: weighted, zone-aware rendezvous hashing to choose R distinct replicas
//!   among named nodes, with minimal movement when nodes come and go.
//! - [`HashRing`]: a consistent-hash ring with virtual nodes, the baseline.
//! - [`RangeCache`]: the routing cache of range-partitioned data: key → range, generation
//!   and leader in O(log n) without reader contention, corrected by `NotLeader` and
//!   `RangeKeyMismatch` errors and by membership's Dead events (which take a node out of
//!   routing; cached descriptors stay as the authority sent them). Misses are coalesced per
//!   range lookup as far as the cache can tell before the answer: misses on one key share
//!   one lookup; a miss on another key of the same uncached gap waits, once, for the lookup
//!   in flight there and looks again before running its own (see [`RangeCache::resolve`]).
//!
//! ```
//! use shoal_core::NodeId;
//! use shoal_routing::{key_hash, Candidate, Partitioner, Rendezvous};
//!
//! // A subject to a shard.
//! let shards = Partitioner::new(64)?;
//! let shard = shards.shard_of(b"tenant/acme");
//! assert!(shard < 64);
//!
//! // A key to three replicas over two zones, a bigger node weighted double.
//! let hrw = Rendezvous::new(vec![
//!     Candidate::new(NodeId::new(1), 0),
//!     Candidate::new(NodeId::new(2), 0),
//!     Candidate::weighted(NodeId::new(3), 1, 2.0),
//!     Candidate::new(NodeId::new(4), 1),
//! ]);
//! let replicas = hrw.pick(key_hash(b"tenant/acme/orders/17"), 3);
//! assert_eq!(replicas.len(), 3);
//! # Ok::<(), shoal_routing::PartitionerError>(())
//! ```

#![warn(missing_docs)]

pub mod jump;
pub mod key_hash;
mod miss_flight;
pub mod partitioner;
mod prefetch;
pub mod range_cache;
pub mod rendezvous;
pub mod ring;
mod start_index;

pub use jump::jump_hash;
pub use key_hash::{key_hash, mix, node_hash};
pub use partitioner::{Partitioner, PartitionerError};
pub use range_cache::{
    ErrorAction, InsertOutcome, RangeCache, RangeCacheConfig, RangeCacheError, RangeCacheStats,
    ResolveError, Route,
};
pub use rendezvous::{Candidate, Rendezvous};
pub use ring::HashRing;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! Shoal's range metadata: the half of sharding that decides, without moving any data.
//!
//! - [`RangeTable`]: descriptors covering the key space with no gap and no overlap, checked
//!   on every change; splits, merges and replica changes bump generations.
//! - [`DescriptorSet`]: the meta-range gossip state, a join-semilattice (merge is
//!   commutative, associative, idempotent; the higher generation wins key by key, and leader
//!   hints, which are advisory, are joined apart by their Raft term), chunked for membership
//!   broadcasts.
//! - [`SplitMergePolicy`]: pure split and merge decisions from range sizes and load, with a
//!   [`SplitMergePolicy::validate`] that refuses thresholds without hysteresis.
//! - [`plan_placement`]: pure replica and leader moves that replace dead nodes and balance
//!   counts with minimal churn, never removing a replica of a node it does not know and never
//!   changing a range whose voters lack a live majority.
//!
//! Everything here is a pure function of its inputs, with no tokio, no engine and no I/O, so
//! it is tested exhaustively and runs in the simulator. The multi-raft store that carries
//! these decisions out is its own crate, `shoal-store`.
//!
//! ```
//! use shoal_core::{KeyRange, NodeId, RangeDescriptor, RangeId, ReplicaDescriptor};
//! use shoal_ranges::{DescriptorSet, RangeTable};
//!
//! let voters = (1..=3).map(|n| ReplicaDescriptor::voter(NodeId::new(n))).collect();
//! let all = RangeDescriptor::new(RangeId::new(1), KeyRange::full(), voters)?;
//! let mut table = RangeTable::new(vec![all], 4096)?;
//! let before = DescriptorSet::from_table(&table);
//! table.split(RangeId::new(1), b"m", RangeId::new(2))?;
//!
//! // A node that still holds the old view learns the split by merging the new one.
//! let mut view = before.clone();
//! view.merge(&DescriptorSet::from_table(&table));
//! assert_eq!(view.to_table(4096)?, table);
//! // Merging the stale view back changes nothing: the higher generation wins.
//! assert!(!view.merge(&before));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod gossip;
pub mod placement;
pub mod policy;
pub mod table;

pub use gossip::{precedence, Chunks, DescriptorSet, GossipError, MAX_HINT_TERM};
pub use placement::{plan_placement, NodeInfo, PlacementAction, PlacementConfig};
pub use policy::{ConfigError, Decision, InFlight, RangeStats, SplitMergePolicy, SplitReason};
pub use table::{RangeTable, RangeTableError};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

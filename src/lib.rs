//! # Shoal
//!
//! A toolkit for building clustered systems, published as layered crates that can be used
//! one at a time. This umbrella crate re-exports them under one roof, each behind a feature
//! of its name:
//!
//! | module | crate | what it is |
//! |---|---|---|
//! | [`core`] | `shoal-core` | ids, hybrid logical clock, key ranges, descriptors, error codes, envelope, codec |
//! | [`transport`] | `shoal-transport` | multiplexed TCP RPC, UDP datagrams, in-memory network, fault injection |
//! | [`sim`] | `shoal-sim` | deterministic simulator for sans-IO protocol cores |
//! | [`membership`] | `shoal-membership` | SWIM failure detection with Lifeguard, gossip, push-pull, encryption |
//! | [`routing`] | `shoal-routing` | stable key hash, jump hash, weighted zone-aware rendezvous, ring, range routing cache |
//! | [`ranges`] | `shoal-ranges` | range table, gossip merge, split/merge policy, placement |
//! | [`storage`] | `shoal-storage` | durable range-aware KV engine over fjall: atomic apply with the applied index, versions, snapshots |
//! | [`consensus`] | `shoal-consensus` | Raft as a sans-IO core: pre-vote, check-quorum, pipelined replication, ReadIndex and lease reads, joint consensus, transfer, chunked snapshots |
//! | [`store`] | `shoal-store` | the multi-raft range store: a node's ranges as Raft groups over one engine and one WAL, node RPC, the meta range, splits |
//! | [`merkle`] | `shoal-merkle` | BLAKE3 Merkle anti-entropy: trees bucketed by key hash, sans-IO sync sessions, consistency checks |
//!
//! ```
//! use shoal::core::{Hlc, NodeId, SystemClock};
//! use std::time::Duration;
//!
//! let mut hlc = Hlc::new(NodeId::new(1), SystemClock::new(), Duration::from_millis(500));
//! let (a, b) = (hlc.now(), hlc.now());
//! assert!(b > a);
//! ```

#![warn(missing_docs)]

pub use shoal_core as core;

#[cfg(feature = "consensus")]
pub use shoal_consensus as consensus;

#[cfg(feature = "membership")]
pub use shoal_membership as membership;

#[cfg(feature = "merkle")]
pub use shoal_merkle as merkle;

#[cfg(feature = "ranges")]
pub use shoal_ranges as ranges;

#[cfg(feature = "routing")]
pub use shoal_routing as routing;

#[cfg(feature = "sim")]
pub use shoal_sim as sim;

#[cfg(feature = "storage")]
pub use shoal_storage as storage;

#[cfg(feature = "store")]
pub use shoal_store as store;

#[cfg(feature = "transport")]
pub use shoal_transport as transport;

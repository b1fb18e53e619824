//! # shoal-merkle
//!
//! Anti-entropy with BLAKE3 Merkle trees: find what two replicas disagree on and send only
//! that. Used to catch up a lagging or new replica, to check that replicas agree, and on its
//! own for leaderless, gossip-replicated data (push each new item, repair by anti-entropy).
//!
//! Two replicas reconciling:
//!
//! ```
//! use shoal_core::{HlcTimestamp, NodeId};
//! use shoal_merkle::{
//!     ConflictRule, Item, MemStore, MerkleTree, Responder, Step, SyncConfig, SyncSession,
//!     TreeShape,
//! };
//!
//! let stamp = |ms, node| HlcTimestamp { physical_ms: ms, logical: 0, node: NodeId::new(node) };
//! let replica = || MemStore::new(ConflictRule::LastWriterWins, MerkleTree::new(TreeShape::default()));
//! let (mut a, mut b) = (replica(), replica());
//! for i in 0..1000u32 {
//!     let item = Item::new(format!("key-{i}"), "v1", stamp(1, 1));
//!     a.put(item.clone());
//!     b.put(item);
//! }
//! a.put(Item::new("key-7", "newer on a", stamp(2, 1)));
//! b.put(Item::new("only-on-b", "x", stamp(3, 2)));
//!
//! // A runs the session; B answers. Over a network each request and answer would be
//! // encoded with `encode()` and decoded with `decode()`.
//! let mut session = SyncSession::new(SyncConfig::default());
//! let mut peer = Responder::new(NodeId::new(2), SyncConfig::default());
//! let outcome = loop {
//!     match session.poll(&mut a) {
//!         Step::Send(request) => {
//!             let answer = peer.respond(&mut b, request);
//!             session.handle_response(&mut a, answer)?;
//!         }
//!         Step::Done(outcome) => break outcome,
//!     }
//! };
//! assert!(outcome.converged);
//! assert_eq!(b.get(b"key-7").unwrap().value, b"newer on a");
//! assert!(a.get(b"only-on-b").is_some());
//! assert_eq!(session.stats().items_taken + session.stats().items_pushed_accepted, 2);
//! # Ok::<(), shoal_merkle::SyncError>(())
//! ```
//!
//! - **Tree** ([`MerkleTree`]): keys bucketed by the top bits of a fixed key hash under a
//!   fixed [`TreeShape`], so two replicas' trees line up node for node; updates mark a bucket
//!   dirty and the root rehashes only what changed; trees cover a key range and split and
//!   merge with their ranges. The digest formulas are in the `digest` module and pinned by
//!   tests.
//! - **Sync** ([`SyncSession`] asks, [`Responder`] answers; both sans-IO): roots, then
//!   children of differing nodes level by level, then the entries of differing buckets,
//!   then fetch and push of the differing items; O(d log n) digests in O(log n) round trips,
//!   bounded memory, resumable. Digests are compared truncated while descending and in full
//!   at the end (see [`DigestWindow`]).
//! - **Conflicts** ([`ConflictRule`]): last writer wins by HLC timestamp with the node id as
//!   the tiebreak, or immutable content-addressed items.
//! - **Checks**: [`diverging_keys`] compares two trees taken at the same applied index;
//!   [`SyncSession::check`] does it with a remote replica without changing either, and
//!   reports every differing key whatever `digest_len` (it runs passes until the buckets it
//!   read account for the peer's full root, and says so in
//!   [`SyncOutcome::differing_complete`]). A [`Responder::read_only`] answers comparisons
//!   and fetches but refuses `Push` and `Gossip`, for replicas whose data is written only
//!   through a Raft log.
//! - **Bad input**: every answer is checked against the request it answers (kind, digest
//!   sizes, counts, ids asked for); items that were not asked for or fail their rule are
//!   refused and counted, never stored; a peer that answers one request badly more than
//!   [`SyncConfig::max_malformed_answers`] times ends the session. Requests over the
//!   responder's limits, and root exchanges for another tree shape or key range, are
//!   refused.

#![warn(missing_docs)]

mod config;
mod consistency;
mod digest;
mod error;
mod item;
mod message;
mod responder;
mod session;
mod shape;
mod store;
mod tree;

pub use config::SyncConfig;
pub use consistency::{diverging_keys, diverging_ranges, Divergence};
pub use digest::{key_hash, Digest, DigestWindow, DIGEST_LEN};
pub use error::{ConfigError, MerkleError, SyncError};
pub use item::{ConflictRule, Item, Refusal};
pub use message::{IdList, NodeList, SyncRequest, SyncResponse, MAX_FETCH, MAX_SYNC_MESSAGE_BYTES};
pub use responder::{Responder, ResponderStats};
pub use session::{SessionStats, Step, SyncOutcome, SyncSession};
pub use shape::{TreeShape, MAX_BUCKET_BITS};
pub use store::{ItemLimits, MemStore, SyncStore};
pub use tree::{Entry, MerkleTree};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

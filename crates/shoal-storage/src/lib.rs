//! Shoal's storage engine: a durable, range-aware ordered key-value store over
//! [fjall](https://docs.rs/fjall), an LSM tree, the way TiKV sits on RocksDB and
//! CockroachDB on Pebble. One engine per node holds every range replica the node hosts;
//! the multi-raft store applies committed entries to it, takes snapshots from it and
//! builds Merkle trees over it.
//!
//! ```
//! use shoal_core::{KeyRange, RangeId};
//! use shoal_storage::{Condition, Engine, EngineConfig, Scan, WriteBatch, WriteOutcome};
//!
//! # fn main() -> Result<(), shoal_storage::StorageError> {
//! let dir = tempfile::tempdir().unwrap();
//! let engine = Engine::open(dir.path(), EngineConfig::default())?;
//! let range = RangeId::new(1);
//! engine.create_range(range, KeyRange::full(), 0)?;
//!
//! // Log entry 1: two puts, committed with the applied index.
//! let mut batch = WriteBatch::new();
//! batch.put("apple", "red").put("pear", "green");
//! engine.apply(range, 1, &batch)?;
//!
//! // Entry 2: a compare-and-set on the version just read.
//! let apple = engine.get(range, b"apple")?.unwrap();
//! let mut cas = WriteBatch::new();
//! cas.compare_and_set("apple", Condition::Version(apple.version), Some(b"green".to_vec()));
//! assert!(matches!(engine.apply(range, 2, &cas)?[0], WriteOutcome::Written { .. }));
//!
//! let entries = engine.scan(range, &Scan::all(10).reverse())?;
//! assert_eq!(entries[0].key, b"pear");
//! assert_eq!(engine.range(range)?.applied_index, 2);
//!
//! // Split at the size median: metadata only, no data moves.
//! let at = engine.split_key(range)?.unwrap();
//! engine.split(range, &shoal_storage::SplitSpec {
//!     at, new_range: RangeId::new(2), index: 3, new_range_applied: 0, left_tag: None, right_tag: None,
//! })?;
//! assert_eq!(engine.ranges().len(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! - **Atomic apply** ([`Engine::apply`]): a batch of puts, deletes and compare-and-sets on
//!   one range commits together with the range's applied index and updated accounting;
//!   after a crash a batch is all there or not at all, and [`Engine::ranges`] reports each
//!   range's applied index for log replay.
//! - **Reads**: point gets, bounded scans forward or backward, and point-in-time
//!   [`RangeView`]s while writes continue.
//! - **Versions**: every write gives the key a new version, never reused for that key (not
//!   after a delete, a merge or a snapshot); [`Condition`] expects an absent key, a version
//!   or a value, and a missing key is its own outcome.
//! - **Accounting**: live keys and bytes per range, exact after restart; the split key at
//!   the size median; split and merge without moving data; whole-range removal.
//! - **Snapshots**: [`Engine::snapshot_stream`] out as checksummed chunks, [`Engine::ingest`]
//!   in, invisible until installed; a snapshot of a range already hosted replaces its
//!   contents atomically, also across a crash, and may be staged first (kept durable and
//!   invisible) so a Raft replica installs it only once its log agrees.
//! - **Durability**: see [`Durability`] for exactly what survives which crash.
//!
//! The on-disk layout is described in the `layout` module's source
//! (`crates/shoal-storage/src/layout.rs`) and in `docs/architecture.md`.

#![warn(missing_docs)]

mod batch;
mod config;
mod engine;
mod error;
mod ingest;
mod layout;
mod range_info;
mod read;
mod registry;
mod snapshot;
mod staging;
mod structure;
mod view;

pub use batch::{Condition, WriteBatch, WriteOp, WriteOutcome};
pub use config::{Durability, EngineConfig};
pub use engine::{Engine, MAX_VERSION};
pub use error::{Result, StorageError};
pub use ingest::Ingest;
pub use range_info::{RangeInfo, RangeStats, RangeStatus};
pub use read::{Entry, Scan, Versioned};
pub use snapshot::{snapshot_header, SnapshotStream, MAX_CHUNK_BYTES};
pub use staging::StagedSnapshot;
pub use structure::{SplitMode, SplitSpec, SplitStats};
pub use view::RangeView;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! # shoal-core
//!
//! The bottom layer of Shoal: the vocabulary every other crate shares, and nothing that does
//! I/O. Identifiers ([`NodeId`], [`RangeId`], ...), a hybrid logical clock ([`Hlc`]), key ranges
//! and range descriptors ([`KeyRange`], [`RangeDescriptor`]), wire error codes ([`ErrorCode`]),
//! the request and response envelope ([`RequestHeader`], [`ResponseHeader`]), the one
//! [`codec`] that turns them into bytes, and the [`Clock`] and [`Rng`] traits through which
//! protocol cores receive time and randomness instead of reaching for them.
//!
//! ```
//! use shoal_core::{codec, KeyRange, RangeDescriptor, RangeId, ReplicaDescriptor, NodeId};
//!
//! let range = RangeDescriptor::new(
//!     RangeId::new(1),
//!     KeyRange::full(),
//!     vec![ReplicaDescriptor::voter(NodeId::new(1)), ReplicaDescriptor::voter(NodeId::new(2))],
//! )?;
//! let (left, right) = range.split(b"m", RangeId::new(2))?;
//! assert!(left.contains_key(b"apple") && right.contains_key(b"zebra"));
//!
//! // Everything that crosses the wire goes through one codec, with a size limit.
//! let bytes = codec::encode(&right)?;
//! let back: RangeDescriptor = codec::decode(&bytes, 64 * 1024)?;
//! assert_eq!(back, right);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod codec;
pub mod descriptor;
pub mod envelope;
pub mod error;
pub mod hlc;
pub mod id;
pub mod key_range;
pub mod rng;
pub mod time;

pub use descriptor::{DescriptorError, RangeDescriptor, ReplicaDescriptor, ReplicaRole};
pub use envelope::{MethodId, RequestHeader, ResponseHeader, PROTOCOL_VERSION};
pub use error::{Error, ErrorCode, LeaderHint};
pub use hlc::{Hlc, HlcError, HlcTimestamp};
pub use id::{CorrelationId, Generation, GroupId, NodeId, RangeId};
pub use key_range::{EscapedKey, KeyRange, KeyRangeError, RangeEnd};
pub use rng::{DetRng, Rng};
pub use time::{Clock, Instant, ManualClock, SystemClock};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

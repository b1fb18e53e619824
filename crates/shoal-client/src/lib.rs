//! # shoal-client
//!
//! The Rust client of Shoal's HTTP API: what a program that uses a Shoal cluster embeds (as
//! etcd's users embed `clientv3`). Typed gets, puts, deletes, compare-and-sets and scans
//! (page by page), with conditions, `acks` and `consistency`, over one or more gateways.
//!
//! Every error says what a caller may do next ([`Error::is_definite`]): an operation that
//! certainly did not happen may be retried; one whose outcome is unknown
//! ([`Error::OutcomeUnknown`]) must be read back first. The client retries by itself only
//! what is safe: reads anywhere, and writes that certainly were not carried out (no
//! gateway reached, or a 503), on another gateway. A gateway that does not answer within
//! [`ClientConfig::attempt_timeout`] (stopped, cut off) is passed over for a while, and one
//! with a request waiting longer than [`ClientConfig::stalled_after`] gets no new ones while
//! others answer, so one paused node does not hold up every request. HTTPS with the certificates to trust, and a
//! bearer token, are settings.
//!
//! The JSON bodies ([`bodies`]) and the key encoding ([`encode_bytes`]) are the gateway's
//! own: it serves the same types (with the `openapi` feature, which describes them in its
//! OpenAPI document).
//!
//! ```no_run
//! use shoal_client::{Client, ClientConfig, Condition, Expect, ScanRequest, Swap, WriteOptions};
//!
//! # async fn demo() -> Result<(), shoal_client::Error> {
//! let client = Client::new(ClientConfig::new([
//!     "http://127.0.0.1:8401",
//!     "http://127.0.0.1:8402",
//! ]))?;
//! let version = client.put(b"colour", "blue").await?;
//! let read = client.get(b"colour").await?.expect("just written");
//! assert_eq!((read.value.as_slice(), read.version), (&b"blue"[..], version));
//!
//! // Only over the version read: a concurrent writer makes this a ConditionFailed.
//! let only_over = WriteOptions { condition: Some(Condition::Version(version)), ..Default::default() };
//! client.put_with(b"colour", "green", only_over).await?;
//! assert_eq!(
//!     client.compare_and_set(b"colour", Expect::Value(b"blue".to_vec()), None).await?,
//!     Swap::Mismatch
//! );
//! for entry in client.scan(ScanRequest::prefix("col")).collect().await? {
//!     println!("{:?} = {:?} (v{})", entry.key, entry.value, entry.version);
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod bodies;
mod client;
mod endpoint;
mod error;
mod health;
mod keys;

pub use client::{
    error_from, key_path, Acks, Client, ClientConfig, Condition, Consistency, Entry, Expect,
    PutOutcome, Scan, ScanRequest, Swap, Versioned, WriteOptions,
};
pub use endpoint::Answer;
pub use error::Error;
pub use hyper::Method;
pub use keys::{decode_key, encode_bytes, KeyError};

/// The response header that carries a key's version.
pub const VERSION_HEADER: &str = "x-shoal-version";

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

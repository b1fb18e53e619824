//! # shoal-transport
//!
//! How Shoal nodes talk, one layer above `shoal-core`:
//!
//! - **RPC over TCP** ([`RpcServer`], [`RpcClient`]): `u32` big-endian length-prefixed frames
//!   capped before allocation (16 MiB by default), many requests multiplexed on one connection
//!   by correlation id, per-request timeouts, a bound on requests in flight per connection, a
//!   connection pool that reconnects with exponential backoff and jitter, a version handshake,
//!   and graceful shutdown that drains requests in flight.
//! - **Typed services** ([`Rpc`], [`Router`]): declare a method with serde request and response
//!   types, register an async handler.
//! - **Datagrams over UDP** ([`UdpTransport`]) for gossip and probes, capped at 1400 bytes.
//! - **An in-memory network** (`MemoryNetwork`, behind the `memory` feature) implementing
//!   the same traits ([`RpcTransport`], [`DatagramTransport`]) on `shoal-sim`'s network model.
//! - **Fault injection** ([`FaultFilter`]): drop or delay traffic to or from chosen peers, off
//!   unless enabled, so multi-process tests can partition real nodes without root.
//!
//! ```
//! use shoal_core::NodeId;
//! use shoal_transport::{Router, Rpc, RpcClient, RpcServer, RpcTransportExt, TransportConfig};
//!
//! struct Greet;
//! impl Rpc for Greet {
//!     const NAME: &'static str = "example.greet";
//!     type Request = String;
//!     type Response = String;
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut router = Router::new();
//! router.register::<Greet, _, _>(|ctx, name| async move {
//!     Ok(format!("hello {name}, from a handler called by {}", ctx.source))
//! })?;
//! let config = TransportConfig::local();
//! let server = RpcServer::bind("127.0.0.1:0".parse()?, NodeId::new(1), router, config.clone()).await?;
//!
//! let client = RpcClient::new(NodeId::new(2), None, config)?;
//! let timeout = std::time::Duration::from_secs(5);
//! let reply = client
//!     .call::<Greet>(server.local_addr(), &"shoal".to_string(), timeout)
//!     .await?;
//! assert_eq!(reply, "hello shoal, from a handler called by n2");
//!
//! server.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

#![warn(missing_docs)]

mod client;
mod config;
mod connection;
mod datagram;
mod error;
mod fault;
mod frame;
mod handshake;
mod lock;
#[cfg(feature = "memory")]
mod memory;
mod server;
mod service;
mod stats;
mod transport;
mod wire;
mod writer;

#[cfg(test)]
mod bad_input_tests;

pub use client::RpcClient;
pub use config::{ConfigError, TransportConfig, MAX_FRAME_CEILING};
pub use datagram::{UdpTransport, DATAGRAM_HEADER_BYTES};
pub use error::TransportError;
pub use fault::{Direction, FaultAction, FaultFilter, Verdict};
pub use frame::{read_frame, FrameError, LENGTH_PREFIX_BYTES};
#[cfg(feature = "memory")]
pub use memory::{MemoryEndpoint, MemoryNetwork};
pub use server::RpcServer;
pub use service::{BoxFuture, RegisterError, RequestContext, Router, Rpc};
pub use stats::{StatsSnapshot, TransportStats};
pub use transport::{Datagram, DatagramTransport, RpcTransport, RpcTransportExt};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

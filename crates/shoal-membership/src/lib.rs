//! # shoal-membership
//!
//! Cluster membership and failure detection: SWIM (Das, Gupta & Motivala, 2002) with the
//! Lifeguard extensions (Dadgar et al., 2017), feature for feature with hashicorp/memberlist.
//!
//! * [`Swim`] is the protocol as a sans-IO state machine: it takes `now`, datagrams,
//!   reliable-channel messages and timers, and returns [`Output`]s (datagrams to send,
//!   reliable exchanges to run, timers to set, [`MemberEvent`]s). It never reads a clock,
//!   sleeps or opens a socket, so it runs in `shoal-sim` at thousands of nodes.
//! * [`driver`] (feature `tokio`, on by default) runs it over UDP datagrams and
//!   shoal-transport TCP.
//! * [`sim`] adapts it to `shoal-sim` for deterministic tests and the `swim_sim` benchmark.
//!
//! What it does: randomized round-robin probing with indirect probes through
//! `indirect_checks` members and a TCP fallback; suspicion with incarnation numbers and
//! refutation; piggybacked dissemination limited to `retransmit_mult × ceil(log10(n+1))`
//! transmissions, freshest first; periodic gossip; push-pull full-state sync; joining
//! through seeds with retries and backoff; graceful leave; dead-node reclaim; reaping of dead
//! members. Lifeguard: the local health multiplier, dynamic suspicion timeouts, nacks and
//! the buddy system. Versioned, bounded metadata; user broadcasts; a cluster label; and
//! AES-256-GCM encryption with a rotating [`Keyring`].
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal_membership::driver::{MembershipNode, NodeOptions};
//! use shoal_membership::MembershipConfig;
//! use shoal_core::NodeId;
//!
//! let options = NodeOptions::new(NodeId::new(1), "127.0.0.1:7946".parse()?, MembershipConfig::lan());
//! let node = MembershipNode::start(options).await?;
//! let mut events = node.subscribe();
//! node.join(vec!["127.0.0.1:7947".parse()?]).await?;
//! while let Ok(event) = events.recv().await {
//!     println!("{:?} {} at {}", event.kind, event.id, event.addr);
//! }
//! node.leave().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod awareness;
mod broadcast;
pub mod config;
#[cfg(feature = "tokio")]
pub mod driver;
pub mod event;
pub mod keyring;
pub mod member;
pub mod message;
pub mod output;
mod packet;
mod probe;
#[cfg(test)]
mod rule_tests;
mod rules;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stats;
mod suspicion;
mod swim;
mod sync;
mod table;

pub use config::{ConfigError, MembershipConfig};
pub use event::{MemberEvent, MemberEventKind, UserMessage};
pub use keyring::{Keyring, KeyringError};
pub use member::{Member, MemberState};
pub use output::{Output, RequestId, Timer};
pub use packet::PacketError;
pub use stats::MembershipStats;
pub use swim::{Swim, SwimError};
pub use sync::MAX_RELIABLE_BYTES;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

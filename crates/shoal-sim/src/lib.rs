//! # shoal-sim
//!
//! A deterministic simulator for Shoal's sans-IO protocol cores, in the spirit of
//! FoundationDB's simulation and TigerBeetle's VOPR. A [`Simulation`] owns a set of
//! [`Node`]s, a virtual clock, an event queue and a [`NetworkModel`] with per-link latency,
//! loss, duplication and reordering, symmetric and one-way partitions, and node crash,
//! restart and pause. Everything random is drawn from one seed, so a seed replays a run
//! exactly; [`SimError`] prints the seed to replay with.
//!
//! ```
//! use shoal_core::{Instant, NodeId};
//! use shoal_sim::{Node, Outputs, SimConfig, Simulation};
//! use std::time::Duration;
//!
//! /// Each node pings the next one every 10 ms and counts the pings it receives.
//! struct Pinger { me: u64, peers: u64, received: u64 }
//!
//! impl Node for Pinger {
//!     type Message = ();
//!     type Timer = ();
//!     fn on_start(&mut self, _now: Instant, out: &mut Outputs<(), ()>) {
//!         out.set_timer(Duration::from_millis(10), ());
//!     }
//!     fn on_message(&mut self, _now: Instant, _from: NodeId, _msg: (), _out: &mut Outputs<(), ()>) {
//!         self.received += 1;
//!     }
//!     fn on_timer(&mut self, _now: Instant, _timer: (), out: &mut Outputs<(), ()>) {
//!         out.send(NodeId::new((self.me + 1) % self.peers), ());
//!         out.set_timer(Duration::from_millis(10), ());
//!     }
//! }
//!
//! let mut sim = Simulation::new(42, SimConfig::default());
//! for me in 0..3 {
//!     sim.add_node(NodeId::new(me), Pinger { me, peers: 3, received: 0 });
//! }
//! sim.run_for(Duration::from_secs(1), |sim| {
//!     // Invariants are checked after every step; an Err stops the run and names the seed.
//!     let total: u64 = sim.nodes().map(|(_, n, _)| n.received).sum();
//!     if total > 300 { Err(format!("too many pings: {total}")) } else { Ok(()) }
//! })?;
//! assert!(sim.node(NodeId::new(1)).unwrap().received >= 98);
//! # Ok::<(), shoal_sim::SimError>(())
//! ```

#![warn(missing_docs)]

mod clock;
mod latency;
pub mod linearizability;
mod mutation;
mod network;
mod node;
mod seed;
mod simulation;
mod trace;

pub use clock::SimClock;
pub use latency::Latency;
pub use mutation::Mutator;
pub use network::{DropReason, Fate, LinkConfig, NetworkModel};
pub use node::{Node, Outputs};
pub use seed::{parse_seed, seed_from_env_or, seeds_from_env_or, EXPLORE_ENV, SEED_ENV};
pub use simulation::{NodeStatus, SimConfig, SimError, SimStats, Simulation};
pub use trace::{Trace, TraceKind};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

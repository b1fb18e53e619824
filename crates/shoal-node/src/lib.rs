//! # shoal-node
//!
//! The pieces of the `shoal` binary, thin on purpose: a [`node::Node`] is a range store
//! (shoal-store) with its embedded HTTP gateway (shoal-gateway), or a standalone gateway;
//! [`dev::DevCluster`] runs a local cluster of them in one process. The command-line client
//! speaks the HTTP API through shoal-client.

#![warn(missing_docs)]

pub mod certs;
pub mod config;
pub mod dev;
pub mod node;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

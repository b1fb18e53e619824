//! # shoal-node
//!
//! The pieces of the `shoal` binary, thin on purpose: a [`node::Node`] is a range store
//! (shoal-store) with its embedded HTTP gateway (shoal-gateway); [`dev::DevCluster`] runs a
//! local cluster of them in one process; [`client`] speaks the HTTP API for the
//! command-line client.

#![warn(missing_docs)]

pub mod certs;
pub mod client;
pub mod config;
pub mod dev;
pub mod node;

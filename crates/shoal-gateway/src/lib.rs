//! # shoal-gateway
//!
//! Shoal's stateless HTTP gateway: every request is routed to the leader of the range that
//! holds its key ([`KvRouter`]) and answered in HTTP ([`routes`]; the API is listed in the
//! `http` module's docs). It reaches the cluster through a narrow [`Backend`]:
//!
//! - embedded in a data node, the node's [`shoal_store::Store`]: ranges are looked up in
//!   its own ranges, gossip and the meta range, and a request for a range this node leads
//!   goes straight to the store, with no socket and no encoding;
//! - standalone, a [`shoal_store::Topology`]: membership, descriptor gossip and the node RPC
//!   client, with no engine, no WAL and no files.
//!
//! Writes are retried only when they certainly did not take effect; a write whose outcome
//! cannot be known is a 504 that says so, never a status claiming it failed.

#![warn(missing_docs)]

mod backend;
mod errors;
mod http;
mod metrics;
mod router;
mod security;
mod tls;

pub use backend::Backend;
pub use errors::ApiError;
pub use http::{openapi, parse_origin, routes, GatewayConfig, MAX_KEY_BYTES};
pub use metrics::Metrics;
pub use router::{KvRouter, ATTEMPT_TIMEOUT};
pub use shoal_client::{bodies, decode_key, encode_bytes, KeyError, VERSION_HEADER};
pub use tls::{server_config, TlsError, TlsListener};

/// Where the gateway takes connections: plain TCP, or TCP with TLS.
pub enum HttpListener {
    /// HTTP.
    Plain(tokio::net::TcpListener),
    /// HTTPS.
    Tls(TlsListener),
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes the requests in
/// flight and returns.
pub async fn serve(
    listener: HttpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match listener {
        HttpListener::Plain(listener) => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        HttpListener::Tls(listener) => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! The RPC client: a pool of multiplexed connections, one per peer, reconnecting with
//! exponential backoff and jitter.

use crate::config::{ConfigError, TransportConfig};
use crate::connection::Connection;
use crate::fault::FaultFilter;
use crate::handshake::Hello;
use crate::lock::lock;
use crate::stats::TransportStats;
use crate::transport::RpcTransport;
use async_trait::async_trait;
use shoal_core::{DetRng, Error, ErrorCode, MethodId, NodeId, Rng};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Calls methods on peers over TCP. Cheap to clone; clones share the pool.
///
/// Each peer gets one connection carrying every concurrent request. A failed connect puts the
/// peer in backoff (exponential from `reconnect_backoff_base` to `reconnect_backoff_max`, with
/// jitter so a recovering peer is not stampeded); calls during backoff fail fast with
/// `Unavailable` instead of queueing.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    hello: Hello,
    config: TransportConfig,
    stats: Arc<TransportStats>,
    fault: FaultFilter,
    peers: Mutex<HashMap<SocketAddr, Arc<Peer>>>,
    rng: Mutex<DetRng>,
    closed: AtomicBool,
}

/// One peer's connection and reconnect state.
struct Peer {
    /// The live connection, read without waiting.
    current: Mutex<Option<Arc<Connection>>>,
    /// Serialises connect attempts, so concurrent callers share one.
    connecting: tokio::sync::Mutex<Backoff>,
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl RpcClient {
    /// A client for node `local`, with its own statistics and a disabled fault filter.
    ///
    /// `listen_addr` is the address this node's own server listens on, told to every peer in
    /// the handshake so that their fault rules (and their view of who is calling) name this
    /// node by the address its server is known by; `None` for a client that serves nothing.
    /// Typed calls go through [`RpcTransportExt::call`](crate::RpcTransportExt::call).
    pub fn new(
        local: NodeId,
        listen_addr: Option<SocketAddr>,
        config: TransportConfig,
    ) -> Result<Self, ConfigError> {
        let stats = Arc::new(TransportStats::default());
        let fault = FaultFilter::with_stats(Arc::clone(&stats));
        Self::with_parts(local, listen_addr, config, stats, fault)
    }

    /// A client that shares statistics and fault rules with a server, and tells peers the
    /// address it listens on (`listen_addr`), so their fault rules can name it.
    pub fn with_parts(
        local: NodeId,
        listen_addr: Option<SocketAddr>,
        config: TransportConfig,
        stats: Arc<TransportStats>,
        fault: FaultFilter,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(ClientInner {
                hello: Hello {
                    node: local,
                    listen_addr,
                },
                config,
                stats,
                fault,
                peers: Mutex::new(HashMap::new()),
                rng: Mutex::new(DetRng::from_entropy()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// Counters shared by this client's connections.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.inner.stats
    }

    /// The fault-injection filter applied to this client's traffic.
    pub fn fault_filter(&self) -> &FaultFilter {
        &self.inner.fault
    }

    /// The node id the peer at `peer` announced, if connected.
    pub fn connected_node(&self, peer: SocketAddr) -> Option<NodeId> {
        let peer = self.lock_peers().get(&peer).cloned()?;
        let current = lock(&peer.current);
        current.as_ref().map(|c| c.remote_node())
    }

    /// Forgets `peer`: drops its connection (calls in flight on it still finish) and its
    /// reconnect backoff. Call it when a peer leaves the cluster for good, so the pool holds
    /// only peers still in use.
    pub fn forget_peer(&self, peer: SocketAddr) {
        let removed = self.lock_peers().remove(&peer);
        if let Some(removed) = removed {
            lock(&removed.current).take();
        }
    }

    /// Stops taking new calls, waits up to the drain timeout for calls in flight, and closes
    /// every connection.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let peers: Vec<Arc<Peer>> = self.lock_peers().drain().map(|(_, p)| p).collect();
        for peer in peers {
            let connection = lock(&peer.current).take();
            if let Some(connection) = connection {
                connection.drain(self.inner.config.drain_timeout).await;
            }
        }
    }

    async fn call_bytes(
        &self,
        peer: SocketAddr,
        method: MethodId,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let deadline = Instant::now() + timeout;
        // Nothing has been sent until a connection exists: failing to reach the peer is
        // definite (`Unreachable`), so a router may send even a write elsewhere. Other
        // refusals (another protocol version, this client shutting down) keep their codes.
        let connection = match tokio::time::timeout_at(deadline, self.connection(peer)).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) if matches!(e.code, ErrorCode::Unavailable | ErrorCode::Timeout) => {
                return Err(Error::new(ErrorCode::Unreachable, e.message))
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::new(
                    ErrorCode::Unreachable,
                    format!("connecting to {peer} took longer than {timeout:?}"),
                ))
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        connection.call(method, body, remaining).await
    }

    /// A live connection to `peer`, opening one if needed (respecting backoff).
    async fn connection(&self, addr: SocketAddr) -> Result<Arc<Connection>, Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorCode::ShuttingDown, "client is shut down"));
        }
        let peer = {
            let mut peers = self.lock_peers();
            Arc::clone(peers.entry(addr).or_insert_with(|| {
                Arc::new(Peer {
                    current: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(Backoff::default()),
                })
            }))
        };
        if let Some(live) = Self::live(&peer) {
            return Ok(live);
        }
        let mut backoff = peer.connecting.lock().await;
        // Someone else may have connected while we waited for the lock.
        if let Some(live) = Self::live(&peer) {
            return Ok(live);
        }
        if let Some(retry_at) = backoff.retry_at {
            let now = Instant::now();
            if now < retry_at {
                return Err(Error::new(
                    ErrorCode::Unavailable,
                    format!(
                        "{addr} is unreachable; next connect attempt in {:?}",
                        retry_at - now
                    ),
                ));
            }
        }
        let opened = Connection::open(
            addr,
            &self.inner.hello,
            &self.inner.config,
            Arc::clone(&self.inner.stats),
            self.inner.fault.clone(),
        )
        .await;
        match opened {
            Ok(connection) => {
                *backoff = Backoff::default();
                let connection = Arc::new(connection);
                *lock(&peer.current) = Some(Arc::clone(&connection));
                Ok(connection)
            }
            Err(error) => {
                backoff.failures = backoff.failures.saturating_add(1);
                let delay = self.backoff_delay(backoff.failures);
                backoff.retry_at = Some(Instant::now() + delay);
                tracing::debug!(%addr, failures = backoff.failures, ?delay, %error, "connect failed");
                Err(error)
            }
        }
    }

    fn live(peer: &Peer) -> Option<Arc<Connection>> {
        let mut current = lock(&peer.current);
        match current.as_ref() {
            Some(c) if !c.is_retired() => Some(Arc::clone(c)),
            Some(_) => {
                // Dropping our reference lets in-flight calls finish on the old connection.
                *current = None;
                None
            }
            None => None,
        }
    }

    /// `base × 2^(failures-1)`, capped, then "equal jitter": uniform in `[d/2, d]`.
    fn backoff_delay(&self, failures: u32) -> Duration {
        let config = &self.inner.config;
        let exp = config
            .reconnect_backoff_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let capped = exp.min(config.reconnect_backoff_max);
        lock(&self.inner.rng).duration_between(capped / 2, capped)
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Peer>>> {
        lock(&self.inner.peers)
    }
}

#[async_trait]
impl RpcTransport for RpcClient {
    async fn call_raw(
        &self,
        peer: SocketAddr,
        method: MethodId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        self.call_bytes(peer, method, &body, timeout).await
    }

    fn local_node(&self) -> NodeId {
        self.inner.hello.node
    }

    fn max_frame_bytes(&self) -> usize {
        self.inner.config.max_frame_bytes
    }
}

//! An in-memory network implementing the same traits as TCP and UDP, on shoal-sim's network
//! model: per-link latency, loss, duplication, reordering and partitions, with tokio timers.
//!
//! Upper layers test their real async code without sockets. Run tests on a current-thread
//! runtime with paused time (`#[tokio::test(start_paused = true)]`) and a fixed seed, and the
//! network's choices repeat from run to run.
//!
//! The network applies a [`TransportConfig`]'s caps as TCP and UDP do: a request or response
//! is framed as on a socket and refused with `TooLarge` when over `max_frame_bytes`, and a
//! datagram over `max_datagram_bytes` (header included) is refused, so a test over memory
//! cannot pass what a socket would refuse.

use crate::config::TransportConfig;
use crate::frame::LENGTH_PREFIX_BYTES;
use crate::lock::lock;
use crate::service::{RequestContext, Router};
use crate::transport::{Datagram, DatagramTransport, RpcTransport};
use crate::wire::{self, Incoming};
use async_trait::async_trait;
use shoal_core::{
    CorrelationId, DetRng, Error, ErrorCode, MethodId, NodeId, RequestHeader, PROTOCOL_VERSION,
};
use shoal_sim::{Fate, LinkConfig, NetworkModel};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Datagrams queued at an endpoint before further ones are dropped (a full socket buffer).
const DATAGRAM_QUEUE: usize = 4096;

/// A simulated network joining [`MemoryEndpoint`]s. Cloning shares it.
#[derive(Clone)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<NetState>>,
}

struct NetState {
    model: NetworkModel<SocketAddr>,
    rng: DetRng,
    endpoints: HashMap<SocketAddr, EndpointEntry>,
    max_frame_bytes: usize,
    max_datagram_payload: usize,
}

struct EndpointEntry {
    router: Arc<Router>,
    datagrams: mpsc::Sender<Datagram>,
}

impl MemoryNetwork {
    /// A network whose links all behave like `link`, drawing randomness from `seed`, with
    /// the default [`TransportConfig`]'s frame and datagram caps.
    pub fn new(seed: u64, link: LinkConfig) -> Self {
        Self::with_config(seed, link, &TransportConfig::default())
    }

    /// A network like [`MemoryNetwork::new`] with `config`'s `max_frame_bytes` and
    /// `max_datagram_bytes`, the caps the TCP and UDP transports would apply.
    pub fn with_config(seed: u64, link: LinkConfig, config: &TransportConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(NetState {
                model: NetworkModel::new(link),
                rng: DetRng::from_seed(seed),
                endpoints: HashMap::new(),
                max_frame_bytes: config.max_frame_bytes,
                max_datagram_payload: config
                    .max_datagram_bytes
                    .saturating_sub(crate::datagram::DATAGRAM_HEADER_BYTES),
            })),
        }
    }

    /// Attaches an endpoint at `addr` for `node`, serving `router`. Replaces any endpoint
    /// already there (a restarted node).
    pub fn endpoint(&self, addr: SocketAddr, node: NodeId, router: Router) -> MemoryEndpoint {
        let (tx, rx) = mpsc::channel(DATAGRAM_QUEUE);
        self.state().endpoints.insert(
            addr,
            EndpointEntry {
                router: Arc::new(router),
                datagrams: tx,
            },
        );
        MemoryEndpoint {
            net: self.clone(),
            addr,
            node,
            datagrams: tokio::sync::Mutex::new(rx),
        }
    }

    /// Detaches the endpoint at `addr`, as if its process died: calls to it fail, datagrams
    /// to it vanish.
    pub fn remove(&self, addr: SocketAddr) {
        self.state().endpoints.remove(&addr);
    }

    /// Changes the network model: links, partitions, healing.
    pub fn with_model<R>(&self, f: impl FnOnce(&mut NetworkModel<SocketAddr>) -> R) -> R {
        f(&mut self.state().model)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NetState> {
        lock(&self.inner)
    }

    fn fate(&self, from: SocketAddr, to: SocketAddr) -> Fate {
        let mut state = self.state();
        let NetState { model, rng, .. } = &mut *state;
        model.fate(from, to, rng)
    }
}

/// One node's attachment to a [`MemoryNetwork`]: an [`RpcTransport`] and a
/// [`DatagramTransport`].
pub struct MemoryEndpoint {
    net: MemoryNetwork,
    addr: SocketAddr,
    node: NodeId,
    datagrams: tokio::sync::Mutex<mpsc::Receiver<Datagram>>,
}

impl MemoryEndpoint {
    /// The address this endpoint is attached at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A request's or response's delay across the network, or `None` if it is lost (the
    /// caller then waits for its timeout, as on a real network). RPC rides a reliable stream,
    /// so a duplicated message arrives once, at its first copy's time.
    fn cross(&self, from: SocketAddr, to: SocketAddr) -> Option<Duration> {
        match self.net.fate(from, to) {
            Fate::Dropped(_) => None,
            Fate::Delivered(delay) | Fate::Duplicated(delay, _) => Some(delay),
        }
    }

    async fn exchange(
        &self,
        peer: SocketAddr,
        method: MethodId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let max_frame_bytes = self.net.state().max_frame_bytes;
        let id = CorrelationId::new(0);
        let header = RequestHeader {
            version: PROTOCOL_VERSION,
            correlation_id: id,
            source: self.node,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            method,
        };
        // Framed as TCP would frame it, so a request over the cap is refused as there.
        wire::request_frame(&header, &body, max_frame_bytes)?;
        let Some(delay) = self.cross(self.addr, peer) else {
            return std::future::pending().await;
        };
        tokio::time::sleep(delay).await;
        let router = {
            let state = self.net.state();
            match state.endpoints.get(&peer) {
                Some(entry) => Arc::clone(&entry.router),
                None => {
                    return Err(Error::new(
                        ErrorCode::Unavailable,
                        format!("no endpoint at {peer}"),
                    ))
                }
            }
        };
        let ctx = RequestContext {
            source: self.node,
            peer: self.addr,
            timeout,
        };
        let result = router
            .dispatch(ctx, method, &body, wire::response_prefix(id))
            .await;
        // The response frame a TCP server would send: over the cap, it becomes `TooLarge`.
        let frame = wire::finish_response(id, result, max_frame_bytes);
        let result = match wire::parse(&frame[LENGTH_PREFIX_BYTES..]) {
            Ok(Incoming::Response(header, body)) => header.into_result().map(|()| body.to_vec()),
            _ => Err(Error::new(
                ErrorCode::Internal,
                "invariant: a response frame parses",
            )),
        };
        let Some(delay) = self.cross(peer, self.addr) else {
            return std::future::pending().await;
        };
        tokio::time::sleep(delay).await;
        result
    }
}

#[async_trait]
impl RpcTransport for MemoryEndpoint {
    async fn call_raw(
        &self,
        peer: SocketAddr,
        method: MethodId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        match tokio::time::timeout(timeout, self.exchange(peer, method, body, timeout)).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorCode::Timeout,
                format!("no response from {peer} within {timeout:?}"),
            )),
        }
    }

    fn local_node(&self) -> NodeId {
        self.node
    }

    fn max_frame_bytes(&self) -> usize {
        self.net.state().max_frame_bytes
    }
}

#[async_trait]
impl DatagramTransport for MemoryEndpoint {
    async fn send_to(&self, to: SocketAddr, payload: &[u8]) -> Result<(), Error> {
        let max = self.max_payload();
        if payload.len() > max {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!(
                    "datagram payload of {} bytes is over the {max}-byte cap",
                    payload.len()
                ),
            ));
        }
        let delays = match self.net.fate(self.addr, to) {
            Fate::Dropped(_) => return Ok(()),
            Fate::Delivered(d) => vec![d],
            Fate::Duplicated(a, b) => vec![a, b],
        };
        let Some(queue) = self
            .net
            .state()
            .endpoints
            .get(&to)
            .map(|e| e.datagrams.clone())
        else {
            return Ok(());
        };
        for delay in delays {
            let datagram = Datagram {
                from: self.addr,
                source: self.node,
                payload: payload.to_vec(),
            };
            let queue = queue.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                // A full queue drops the datagram, like a full socket buffer.
                let _ = queue.try_send(datagram);
            });
        }
        Ok(())
    }

    async fn recv(&self) -> Result<Datagram, Error> {
        self.datagrams
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| Error::new(ErrorCode::Unavailable, "endpoint detached"))
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn max_payload(&self) -> usize {
        self.net.state().max_datagram_payload
    }
}

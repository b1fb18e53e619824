//! The traits upper layers program against, so they run unchanged over TCP and UDP or over
//! the in-memory network.

use crate::service::Rpc;
use async_trait::async_trait;
use shoal_core::{codec, Error, MethodId, NodeId};
use std::net::SocketAddr;
use std::time::Duration;

/// Request/response calls to peers by address.
#[async_trait]
pub trait RpcTransport: Send + Sync {
    /// Sends an encoded request for `method` to `peer` and waits up to `timeout` for the
    /// encoded response.
    async fn call_raw(
        &self,
        peer: SocketAddr,
        method: MethodId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error>;

    /// This node's id, sent with every request.
    fn local_node(&self) -> NodeId;

    /// The largest request frame this transport sends, in bytes, so callers that batch can
    /// stay under it. Unbounded unless the transport says otherwise.
    fn max_frame_bytes(&self) -> usize {
        usize::MAX
    }
}

/// Typed calls on any [`RpcTransport`].
#[async_trait]
pub trait RpcTransportExt: RpcTransport {
    /// Calls `R` on `peer` with `request`, waiting up to `timeout`.
    async fn call<R: Rpc>(
        &self,
        peer: SocketAddr,
        request: &R::Request,
        timeout: Duration,
    ) -> Result<R::Response, Error>
    where
        R::Request: Sync,
    {
        let body = codec::encode(request)?;
        let response = self.call_raw(peer, R::METHOD, body, timeout).await?;
        Ok(codec::decode(&response, response.len())?)
    }
}

impl<T: RpcTransport + ?Sized> RpcTransportExt for T {}

/// One received datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The address it came from.
    pub from: SocketAddr,
    /// The node that sent it, from its envelope.
    pub source: NodeId,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Unreliable, unordered, size-capped messages: what SWIM probes and gossip ride on.
#[async_trait]
pub trait DatagramTransport: Send + Sync {
    /// Sends `payload` to `to`. Success means handed to the network, not delivered. A payload
    /// over [`DatagramTransport::max_payload`] is refused with `TooLarge`.
    async fn send_to(&self, to: SocketAddr, payload: &[u8]) -> Result<(), Error>;

    /// Waits for the next well-formed datagram. Malformed ones are dropped and counted.
    async fn recv(&self) -> Result<Datagram, Error>;

    /// The address datagrams to this node are sent to.
    fn local_addr(&self) -> SocketAddr;

    /// The largest payload `send_to` accepts.
    fn max_payload(&self) -> usize;
}

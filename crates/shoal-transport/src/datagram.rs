//! Unreliable datagrams over UDP, with the envelope's version and source in a fixed header.
//!
//! ```text
//! | "SD" | version: u16 BE | source node: u64 BE | payload ... |    ≤ max_datagram_bytes
//! ```
//!
//! A fixed binary header (rather than a codec-encoded one) keeps the overhead at 12 bytes and
//! lets any version recognise and count another version's packets.

use crate::config::TransportConfig;
use crate::error::TransportError;
use crate::fault::{Direction, FaultFilter, Verdict};
use crate::stats::{bump, TransportStats};
use crate::transport::{Datagram, DatagramTransport};
use async_trait::async_trait;
use shoal_core::{Error, ErrorCode, NodeId, PROTOCOL_VERSION};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;

const MAGIC: [u8; 2] = *b"SD";
/// Bytes of header in front of every datagram's payload.
pub const DATAGRAM_HEADER_BYTES: usize = 12;

/// A UDP socket speaking Shoal's datagram envelope.
pub struct UdpTransport {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    node: NodeId,
    max_datagram_bytes: usize,
    stats: Arc<TransportStats>,
    fault: FaultFilter,
    /// The receive buffer, allocated once: `recv` is often raced in a `select!` loop and
    /// dropped unfinished, and must not allocate each time it is called again.
    recv_buf: tokio::sync::Mutex<Vec<u8>>,
}

impl UdpTransport {
    /// Binds `addr` for node `node`, with fresh statistics and a disabled fault filter.
    pub async fn bind(
        addr: SocketAddr,
        node: NodeId,
        config: &TransportConfig,
    ) -> Result<Self, TransportError> {
        let stats = Arc::new(TransportStats::default());
        let fault = FaultFilter::with_stats(Arc::clone(&stats));
        Self::bind_with(addr, node, config, stats, fault).await
    }

    /// Like [`UdpTransport::bind`], sharing statistics and fault rules.
    pub async fn bind_with(
        addr: SocketAddr,
        node: NodeId,
        config: &TransportConfig,
        stats: Arc<TransportStats>,
        fault: FaultFilter,
    ) -> Result<Self, TransportError> {
        config.validate()?;
        let socket = UdpSocket::bind(addr).await?;
        let local_addr = socket.local_addr()?;
        Ok(Self {
            socket: Arc::new(socket),
            local_addr,
            node,
            max_datagram_bytes: config.max_datagram_bytes,
            stats,
            fault,
            // One byte more than the cap, so an oversized packet is seen as such, not
            // truncated.
            recv_buf: tokio::sync::Mutex::new(vec![0u8; config.max_datagram_bytes + 1]),
        })
    }

    /// Counters for this socket.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// The fault-injection filter applied to this socket.
    pub fn fault_filter(&self) -> &FaultFilter {
        &self.fault
    }

    fn encode(&self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        if payload.len() > self.max_payload() {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!(
                    "datagram payload of {} bytes is over the {}-byte cap",
                    payload.len(),
                    self.max_payload()
                ),
            ));
        }
        let mut packet = Vec::with_capacity(DATAGRAM_HEADER_BYTES + payload.len());
        packet.extend_from_slice(&MAGIC);
        packet.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        packet.extend_from_slice(&self.node.get().to_be_bytes());
        packet.extend_from_slice(payload);
        Ok(packet)
    }
}

/// Parses a packet's header; `None` for anything that is not a datagram of our version.
fn decode(packet: &[u8]) -> Option<(NodeId, &[u8])> {
    if packet.len() < DATAGRAM_HEADER_BYTES || packet[..2] != MAGIC {
        return None;
    }
    let version = u16::from_be_bytes([packet[2], packet[3]]);
    if version != PROTOCOL_VERSION {
        return None;
    }
    let mut node = [0u8; 8];
    node.copy_from_slice(&packet[4..DATAGRAM_HEADER_BYTES]);
    Some((
        NodeId::new(u64::from_be_bytes(node)),
        &packet[DATAGRAM_HEADER_BYTES..],
    ))
}

#[async_trait]
impl DatagramTransport for UdpTransport {
    async fn send_to(&self, to: SocketAddr, payload: &[u8]) -> Result<(), Error> {
        let packet = self.encode(payload)?;
        match self.fault.check(to, Direction::Outbound) {
            Verdict::Pass => {}
            Verdict::Drop => return Ok(()),
            Verdict::Delay(d) => {
                // Deliver later without holding up the sender, like a slow link.
                let socket = Arc::clone(&self.socket);
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = socket.send_to(&packet, to).await;
                });
                return Ok(());
            }
        }
        self.socket.send_to(&packet, to).await.map_err(|e| {
            Error::new(
                ErrorCode::Unavailable,
                format!("datagram to {to} failed: {e}"),
            )
        })?;
        Ok(())
    }

    async fn recv(&self) -> Result<Datagram, Error> {
        let mut buf = self.recv_buf.lock().await;
        loop {
            let (len, from) = match self.socket.recv_from(&mut buf).await {
                Ok(received) => received,
                // On some platforms an ICMP "port unreachable" from an earlier send surfaces
                // here; it says nothing about this socket, so keep receiving.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
                Err(e) => {
                    return Err(Error::new(
                        ErrorCode::Unavailable,
                        format!("udp receive failed: {e}"),
                    ))
                }
            };
            if len > self.max_datagram_bytes {
                bump(&self.stats.datagrams_dropped);
                tracing::debug!(%from, len, "oversized datagram dropped");
                continue;
            }
            let Some((source, payload)) = decode(&buf[..len]) else {
                bump(&self.stats.datagrams_dropped);
                tracing::debug!(%from, len, "malformed datagram dropped");
                continue;
            };
            match self.fault.check(from, Direction::Inbound) {
                Verdict::Pass => {}
                Verdict::Drop => continue,
                // Delaying receipt would block later packets too; treat a receive-side delay
                // as a sleep before handing this one over, which is what a slow link does.
                Verdict::Delay(d) => tokio::time::sleep(d).await,
            }
            return Ok(Datagram {
                from,
                source,
                payload: payload.to_vec(),
            });
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn max_payload(&self) -> usize {
        self.max_datagram_bytes - DATAGRAM_HEADER_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked() {
        assert!(decode(b"SD").is_none());
        assert!(decode(b"XX\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01").is_none());
        let mut other_version = b"SD\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01".to_vec();
        other_version[3] = (PROTOCOL_VERSION + 1) as u8;
        assert!(decode(&other_version).is_none());
        let mut ok = b"SD".to_vec();
        ok.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        ok.extend_from_slice(&7u64.to_be_bytes());
        ok.extend_from_slice(b"hi");
        assert_eq!(decode(&ok), Some((NodeId::new(7), &b"hi"[..])));
    }
}

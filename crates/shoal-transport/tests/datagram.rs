//! UDP datagrams through the public API.

use shoal_core::{ErrorCode, NodeId, PROTOCOL_VERSION};
use shoal_transport::{
    DatagramTransport, Direction, FaultAction, TransportConfig, UdpTransport, DATAGRAM_HEADER_BYTES,
};
use std::net::SocketAddr;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

async fn socket(id: u64) -> UdpTransport {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    UdpTransport::bind(addr, NodeId::new(id), &TransportConfig::local())
        .await
        .unwrap()
}

async fn recv(t: &UdpTransport) -> shoal_transport::Datagram {
    tokio::time::timeout(LONG, t.recv())
        .await
        .expect("a datagram arrives")
        .unwrap()
}

#[tokio::test]
async fn datagrams_carry_their_source() {
    let (a, b) = (socket(1).await, socket(2).await);
    a.send_to(b.local_addr(), b"probe").await.unwrap();
    let got = recv(&b).await;
    assert_eq!(got.payload, b"probe");
    assert_eq!(got.source, NodeId::new(1));
    assert_eq!(got.from, a.local_addr());
}

#[tokio::test]
async fn payloads_over_the_cap_are_refused() {
    let (a, b) = (socket(1).await, socket(2).await);
    assert_eq!(a.max_payload(), 1400 - DATAGRAM_HEADER_BYTES);
    let err = a
        .send_to(b.local_addr(), &vec![0u8; a.max_payload() + 1])
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
    a.send_to(b.local_addr(), &vec![7u8; a.max_payload()])
        .await
        .unwrap();
    assert_eq!(recv(&b).await.payload.len(), a.max_payload());
}

#[tokio::test]
async fn malformed_wrong_version_and_oversized_packets_are_dropped_and_counted() {
    let b = socket(2).await;
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    raw.send_to(b"garbage", b.local_addr()).await.unwrap();
    let mut wrong_version = b"SD".to_vec();
    wrong_version.extend_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    wrong_version.extend_from_slice(&5u64.to_be_bytes());
    raw.send_to(&wrong_version, b.local_addr()).await.unwrap();
    let mut oversized = b"SD".to_vec();
    oversized.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    oversized.extend_from_slice(&5u64.to_be_bytes());
    oversized.extend_from_slice(&[0u8; 2000]);
    raw.send_to(&oversized, b.local_addr()).await.unwrap();
    let mut good = b"SD".to_vec();
    good.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    good.extend_from_slice(&5u64.to_be_bytes());
    good.extend_from_slice(b"ok");
    raw.send_to(&good, b.local_addr()).await.unwrap();
    let got = recv(&b).await;
    assert_eq!(got.payload, b"ok");
    assert_eq!(got.source, NodeId::new(5));
    assert_eq!(b.stats().snapshot().datagrams_dropped, 3);
}

#[tokio::test]
async fn a_one_way_fault_blocks_only_one_direction() {
    let (a, b) = (socket(1).await, socket(2).await);
    a.fault_filter()
        .add_rule(b.local_addr(), Direction::Outbound, FaultAction::Drop);
    a.send_to(b.local_addr(), b"lost").await.unwrap();
    b.send_to(a.local_addr(), b"arrives").await.unwrap();
    assert_eq!(recv(&a).await.payload, b"arrives");
    a.fault_filter().clear();
    a.send_to(b.local_addr(), b"after heal").await.unwrap();
    // The dropped one never arrives: the first datagram B sees is the one after the heal.
    assert_eq!(recv(&b).await.payload, b"after heal");
    assert_eq!(a.stats().snapshot().fault_dropped, 1);
}

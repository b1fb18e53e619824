//! The in-memory network: same traits as TCP/UDP, faults from shoal-sim's model.

use shoal_core::{ErrorCode, NodeId};
use shoal_sim::{Latency, LinkConfig};
use shoal_transport::{DatagramTransport, MemoryNetwork, Router, Rpc, RpcTransportExt};
use std::net::SocketAddr;
use std::time::Duration;

struct Echo;
impl Rpc for Echo {
    const NAME: &'static str = "test.echo";
    type Request = u32;
    type Response = u32;
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7000))
}

fn echo_router() -> Router {
    let mut router = Router::new();
    router
        .register::<Echo, _, _>(|_, x| async move { Ok(x) })
        .unwrap();
    router
}

fn lan() -> LinkConfig {
    LinkConfig::reliable(Latency::Uniform {
        min: Duration::from_millis(1),
        max: Duration::from_millis(5),
    })
}

const TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn calls_cross_the_simulated_network_with_its_latency() {
    let net = MemoryNetwork::new(1, lan());
    let a = net.endpoint(addr(1), NodeId::new(1), Router::new());
    let _b = net.endpoint(addr(2), NodeId::new(2), echo_router());
    let started = tokio::time::Instant::now();
    assert_eq!(a.call::<Echo>(addr(2), &41, TIMEOUT).await.unwrap(), 41);
    let rtt = started.elapsed();
    assert!(
        rtt >= Duration::from_millis(2) && rtt <= Duration::from_millis(10),
        "{rtt:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn partitions_time_calls_out_until_healed() {
    let net = MemoryNetwork::new(2, lan());
    let a = net.endpoint(addr(1), NodeId::new(1), Router::new());
    let _b = net.endpoint(addr(2), NodeId::new(2), echo_router());
    net.with_model(|m| m.partition(&[addr(1)], &[addr(2)]));
    let err = a.call::<Echo>(addr(2), &1, TIMEOUT).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout);
    net.with_model(|m| m.heal());
    assert_eq!(a.call::<Echo>(addr(2), &2, TIMEOUT).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_removed_endpoint_is_unavailable() {
    let net = MemoryNetwork::new(3, lan());
    let a = net.endpoint(addr(1), NodeId::new(1), Router::new());
    let _b = net.endpoint(addr(2), NodeId::new(2), echo_router());
    net.remove(addr(2));
    let err = a.call::<Echo>(addr(2), &1, TIMEOUT).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
}

#[tokio::test(start_paused = true)]
async fn datagrams_are_lost_at_the_links_rate() {
    let lossy = LinkConfig { loss: 0.3, ..lan() };
    let net = MemoryNetwork::new(4, lossy);
    let a = net.endpoint(addr(1), NodeId::new(1), Router::new());
    let b = net.endpoint(addr(2), NodeId::new(2), Router::new());
    for i in 0..1000u32 {
        a.send_to(addr(2), &i.to_be_bytes()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut received = 0;
    while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(1), b.recv()).await {
        assert_eq!(d.source, NodeId::new(1));
        received += 1;
    }
    assert!(
        (600..800).contains(&received),
        "received {received} of 1000"
    );
    let err = a.send_to(addr(2), &vec![0; 2000]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
}

/// Sends a burst over a reordering link and returns the arrival order.
async fn arrival_order(seed: u64) -> Vec<u32> {
    let link = LinkConfig {
        reorder: 0.5,
        reorder_window: Duration::from_millis(20),
        ..lan()
    };
    let net = MemoryNetwork::new(seed, link);
    let a = net.endpoint(addr(1), NodeId::new(1), Router::new());
    let b = net.endpoint(addr(2), NodeId::new(2), Router::new());
    for i in 0..50u32 {
        a.send_to(addr(2), &i.to_be_bytes()).await.unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..50 {
        let d = b.recv().await.unwrap();
        order.push(u32::from_be_bytes(d.payload.try_into().unwrap()));
    }
    order
}

#[tokio::test(start_paused = true)]
async fn reordering_is_real_and_repeats_by_seed() {
    let first = arrival_order(5).await;
    let again = arrival_order(5).await;
    let other = arrival_order(6).await;
    assert_ne!(first, (0..50).collect::<Vec<_>>(), "no reordering");
    assert_eq!(first, again, "same seed, different order");
    assert_ne!(first, other);
}

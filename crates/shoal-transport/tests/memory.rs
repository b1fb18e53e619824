//! The in-memory network: same traits as TCP/UDP, faults from shoal-sim's model.

use shoal_core::{ErrorCode, NodeId};
use shoal_sim::{Latency, LinkConfig};
use shoal_transport::{
    DatagramTransport, MemoryNetwork, Router, Rpc, RpcTransport, RpcTransportExt,
};
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

struct Blob;
impl Rpc for Blob {
    const NAME: &'static str = "test.blob";
    type Request = usize;
    type Response = Vec<u8>;
}

/// Regression: the in-memory network applied no frame cap and a fixed datagram cap, so a
/// test over it passed messages TCP and UDP would refuse. It now applies the config's caps.
#[tokio::test(start_paused = true)]
async fn the_configs_frame_and_datagram_caps_apply_in_memory_as_on_sockets() {
    let config = shoal_transport::TransportConfig {
        max_frame_bytes: 4096,
        max_datagram_bytes: 600,
        ..shoal_transport::TransportConfig::local()
    };
    let net = MemoryNetwork::with_config(1, lan(), &config);
    let mut router = echo_router();
    router
        .register::<Blob, _, _>(|_, len| async move { Ok(vec![7u8; len]) })
        .unwrap();
    let a = net.endpoint(addr(1), NodeId::new(1), Router::new());
    let _b = net.endpoint(addr(2), NodeId::new(2), router);
    // A request over the frame cap is refused before it is sent.
    let big = vec![0u8; 5000];
    let err = a
        .call_raw(addr(2), Echo::METHOD, big, TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge, "{err}");
    // A response over the cap reaches the caller as TooLarge, as from a TCP server.
    let err = a.call::<Blob>(addr(2), &5000, TIMEOUT).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge, "{err}");
    assert_eq!(
        a.call::<Blob>(addr(2), &3000, TIMEOUT).await.unwrap().len(),
        3000
    );
    // Datagrams: the config's cap, header included.
    let max = a.max_payload();
    assert_eq!(max, 600 - 12);
    assert!(a.send_to(addr(2), &vec![0u8; max]).await.is_ok());
    let err = a.send_to(addr(2), &vec![0u8; max + 1]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
}

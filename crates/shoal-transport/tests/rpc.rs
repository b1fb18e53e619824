//! RPC over real loopback sockets, through the public API.

use shoal_core::{Error, ErrorCode, NodeId};
use shoal_transport::{
    Direction, FaultAction, FaultFilter, Router, Rpc, RpcClient, RpcServer, RpcTransport,
    RpcTransportExt, TransportConfig, TransportStats,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Echo;
impl Rpc for Echo {
    const NAME: &'static str = "test.echo";
    type Request = Vec<u8>;
    type Response = Vec<u8>;
}

struct Sleep;
impl Rpc for Sleep {
    const NAME: &'static str = "test.sleep";
    /// Milliseconds to sleep.
    type Request = u64;
    type Response = u64;
}

struct Fail;
impl Rpc for Fail {
    const NAME: &'static str = "test.fail";
    type Request = ();
    type Response = ();
}

struct Unregistered;
impl Rpc for Unregistered {
    const NAME: &'static str = "test.unregistered";
    type Request = ();
    type Response = ();
}

const LONG: Duration = Duration::from_secs(30);

fn router() -> Router {
    let mut router = Router::new();
    router
        .register::<Echo, _, _>(|_, body| async move { Ok(body) })
        .unwrap()
        .register::<Sleep, _, _>(|_, ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        })
        .unwrap()
        .register::<Fail, _, _>(|_, ()| async move {
            Err(Error::new(
                ErrorCode::NotEnoughReplicas,
                "only 1 of 3 alive",
            ))
        })
        .unwrap();
    router
}

async fn server_at(addr: SocketAddr) -> RpcServer {
    RpcServer::bind(addr, NodeId::new(1), router(), TransportConfig::local())
        .await
        .unwrap()
}

async fn server() -> RpcServer {
    server_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

fn client() -> RpcClient {
    RpcClient::new(NodeId::new(2), None, TransportConfig::local()).unwrap()
}

#[tokio::test]
async fn calls_round_trip_and_report_the_peer() {
    let server = server().await;
    let client = client();
    let reply = client
        .call::<Echo>(server.local_addr(), &b"ping".to_vec(), LONG)
        .await
        .unwrap();
    assert_eq!(reply, b"ping");
    assert_eq!(
        client.connected_node(server.local_addr()),
        Some(NodeId::new(1))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_calls_share_one_connection() {
    let server = server().await;
    let client = client();
    let addr = server.local_addr();
    let calls: Vec<_> = (0..200u32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let body = i.to_be_bytes().to_vec();
                let reply = client.call::<Echo>(addr, &body, LONG).await.unwrap();
                assert_eq!(reply, body, "response matched to the wrong request");
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(server.stats().snapshot().connections_opened, 1);
    assert_eq!(client.stats().snapshot().connections_opened, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn responses_may_complete_out_of_order() {
    let server = server().await;
    let client = client();
    let addr = server.local_addr();
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<Sleep>(addr, &300, LONG).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fast_started = Instant::now();
    assert_eq!(client.call::<Sleep>(addr, &0, LONG).await.unwrap(), 0);
    assert!(!slow.is_finished() || fast_started.elapsed() < Duration::from_millis(300));
    assert_eq!(slow.await.unwrap().unwrap(), 300);
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_handler_times_out_the_call_and_the_server_drops_the_work() {
    let server = server().await;
    let client = client();
    let err = client
        .call::<Sleep>(server.local_addr(), &10_000, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert!(err.is_retriable());
    // The server enforces the caller's deadline too, so the handler does not run on.
    let stats = Arc::clone(server.stats());
    wait_for("handler timeout counted", || {
        stats.snapshot().handler_timeouts == 1
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn handler_errors_and_unknown_methods_reach_the_caller() {
    let server = server().await;
    let client = client();
    let err = client
        .call::<Fail>(server.local_addr(), &(), LONG)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotEnoughReplicas);
    assert_eq!(err.message, "only 1 of 3 alive");
    let err = client
        .call::<Unregistered>(server.local_addr(), &(), LONG)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownMethod);
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_request_is_refused_locally() {
    let server = server().await;
    let config = TransportConfig {
        max_frame_bytes: 1024,
        ..TransportConfig::local()
    };
    let client = RpcClient::new(NodeId::new(2), None, config).unwrap();
    let err = client
        .call::<Echo>(server.local_addr(), &vec![0u8; 4096], LONG)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge, "{err}");
    // The connection is still good for normal calls.
    assert_eq!(
        client
            .call::<Echo>(server.local_addr(), &vec![1], LONG)
            .await
            .unwrap(),
        vec![1]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_peer_fails_fast_and_backs_off() {
    // Bind then drop a listener to find a port nobody listens on.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let config = TransportConfig {
        reconnect_backoff_base: Duration::from_secs(60),
        reconnect_backoff_max: Duration::from_secs(60),
        ..TransportConfig::local()
    };
    let client = RpcClient::new(NodeId::new(2), None, config).unwrap();
    // Nothing was sent: the failure says so (`Unreachable`, definite), both when the connect
    // is refused and while it backs off.
    let err = client.call::<Echo>(addr, &vec![], LONG).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unreachable, "{err}");
    let err = client.call::<Echo>(addr, &vec![], LONG).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unreachable, "{err}");
    assert!(err.message.contains("next connect attempt"), "{err}");
    assert_eq!(
        client.stats().snapshot().connect_failures,
        1,
        "backoff skipped the connect"
    );
}

#[tokio::test]
async fn the_client_reconnects_after_the_server_restarts() {
    let first = server().await;
    let addr = first.local_addr();
    let client = client();
    assert!(client.call::<Echo>(addr, &vec![1], LONG).await.is_ok());
    first.shutdown().await;
    // Until a new server is up, calls fail with a retriable error.
    let err = client.call::<Echo>(addr, &vec![2], LONG).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    let second = server_at(addr).await;
    let deadline = Instant::now() + LONG;
    loop {
        match client.call::<Echo>(addr, &vec![3], LONG).await {
            Ok(reply) => {
                assert_eq!(reply, vec![3]);
                break;
            }
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("did not reconnect: {e}"),
        }
    }
    second.shutdown().await;
}

#[tokio::test]
async fn a_forgotten_peer_loses_its_connection_and_backoff() {
    let server = server().await;
    let client = client();
    let addr = server.local_addr();
    client.call::<Echo>(addr, &vec![1], LONG).await.unwrap();
    assert_eq!(client.connected_node(addr), Some(NodeId::new(1)));
    client.forget_peer(addr);
    assert_eq!(client.connected_node(addr), None);
    // Calling again simply reconnects.
    client.call::<Echo>(addr, &vec![2], LONG).await.unwrap();
    assert_eq!(client.stats().snapshot().connections_opened, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_answers_requests_in_flight() {
    let server = server().await;
    let client = client();
    let addr = server.local_addr();
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<Sleep>(addr, &300, LONG).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown().await;
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        300,
        "in-flight request was dropped"
    );
    let err = client.call::<Echo>(addr, &vec![], LONG).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
}

#[tokio::test]
async fn client_shutdown_waits_for_its_calls_and_then_refuses_new_ones() {
    let server = server().await;
    let client = client();
    let addr = server.local_addr();
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<Sleep>(addr, &200, LONG).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.shutdown().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    let err = client.call::<Echo>(addr, &vec![], LONG).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ShuttingDown);
    server.shutdown().await;
}

/// Two nodes, each a server plus a client sharing one fault filter, as a real node would be.
struct TestNode {
    server: RpcServer,
    client: RpcClient,
    fault: FaultFilter,
}

async fn test_node(id: u64) -> TestNode {
    let stats = Arc::new(TransportStats::default());
    let fault = FaultFilter::with_stats(Arc::clone(&stats));
    let config = TransportConfig::local();
    let server = RpcServer::bind_with(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        NodeId::new(id),
        router(),
        config.clone(),
        Arc::clone(&stats),
        fault.clone(),
    )
    .await
    .unwrap();
    let client = RpcClient::with_parts(
        NodeId::new(id),
        Some(server.local_addr()),
        config,
        stats,
        fault.clone(),
    )
    .unwrap();
    TestNode {
        server,
        client,
        fault,
    }
}

#[tokio::test]
async fn the_fault_filter_cuts_traffic_from_a_peer_until_cleared() {
    let a = test_node(1).await;
    let b = test_node(2).await;
    let (a_addr, b_addr) = (a.server.local_addr(), b.server.local_addr());
    let short = Duration::from_millis(200);
    assert!(a.client.call::<Echo>(b_addr, &vec![1], short).await.is_ok());

    // B drops everything arriving from A. A's requests never reach B; B's requests reach A
    // but A's responses are dropped on arrival, so RPC fails both ways, as over a real
    // one-way partition. (Datagram tests show the other direction flowing.)
    b.fault
        .add_rule(a_addr, Direction::Inbound, FaultAction::Drop);
    let err = a
        .client
        .call::<Echo>(b_addr, &vec![2], short)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout);
    let err = b
        .client
        .call::<Echo>(a_addr, &vec![3], short)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout);
    assert_eq!(b.server.stats().snapshot().fault_dropped, 2);

    b.fault.clear();
    assert!(a.client.call::<Echo>(b_addr, &vec![4], LONG).await.is_ok());
    a.server.shutdown().await;
    b.server.shutdown().await;
}

#[tokio::test]
async fn the_fault_filter_delays_traffic() {
    let a = test_node(1).await;
    let b = test_node(2).await;
    let b_addr = b.server.local_addr();
    a.fault.add_rule(
        b_addr,
        Direction::Outbound,
        FaultAction::Delay(Duration::from_millis(150)),
    );
    let started = Instant::now();
    a.client.call::<Echo>(b_addr, &vec![1], LONG).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(a.client.stats().snapshot().fault_delayed, 1);
    a.server.shutdown().await;
    b.server.shutdown().await;
}

#[tokio::test]
async fn the_transport_trait_gives_typed_calls() {
    let server = server().await;
    let client = client();
    let transport: &dyn RpcTransport = &client;
    let reply = transport
        .call::<Echo>(server.local_addr(), &b"via trait".to_vec(), LONG)
        .await
        .unwrap();
    assert_eq!(reply, b"via trait");
    assert_eq!(transport.local_node(), NodeId::new(2));
    server.shutdown().await;
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

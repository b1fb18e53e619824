//! Every kind of bad input the foundation issue names, sent over real sockets: each gets a
//! clear error, closes at most the offending connection, leaks nothing and never panics.

use crate::frame::{begin_frame, finish_frame, read_frame};
use crate::handshake::{hello_frame, Hello};
use crate::wire::{self, Incoming};
use crate::{Router, Rpc, RpcClient, RpcServer, RpcTransportExt, TransportConfig};
use shoal_core::{
    codec, CorrelationId, ErrorCode, MethodId, NodeId, RequestHeader, ResponseHeader,
    PROTOCOL_VERSION,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Echo;
impl Rpc for Echo {
    const NAME: &'static str = "test.echo";
    type Request = Vec<u8>;
    type Response = Vec<u8>;
}

/// Blocks until released, to hold requests in flight.
struct Hold;
impl Rpc for Hold {
    const NAME: &'static str = "test.hold";
    type Request = ();
    type Response = ();
}

const LONG: Duration = Duration::from_secs(30);

fn config() -> TransportConfig {
    TransportConfig {
        max_frame_bytes: 4096,
        max_in_flight_per_connection: 4,
        frame_stall_timeout: Duration::from_millis(300),
        ..TransportConfig::local()
    }
}

async fn server(release: Arc<tokio::sync::Semaphore>) -> RpcServer {
    let mut router = Router::new();
    router
        .register::<Echo, _, _>(|_, body| async move { Ok(body) })
        .unwrap();
    router
        .register::<Hold, _, _>(move |_, ()| {
            let release = Arc::clone(&release);
            async move {
                let _ = release.acquire().await.map(|p| p.forget());
                Ok(())
            }
        })
        .unwrap();
    RpcServer::bind(localhost(), NodeId::new(1), router, config())
        .await
        .unwrap()
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A raw connection that has completed the handshake.
async fn raw_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let hello = Hello {
        node: NodeId::new(99),
        listen_addr: None,
    };
    stream
        .write_all(&hello_frame(PROTOCOL_VERSION, &hello))
        .await
        .unwrap();
    let reply = read_frame(&mut stream, 1024, LONG).await.unwrap().unwrap();
    assert_eq!(&reply[..4], b"SHOL");
    stream
}

fn request(id: u64, method: MethodId, version: u16, body: &[u8]) -> Vec<u8> {
    request_from(NodeId::new(99), id, method, version, body)
}

fn request_from(source: NodeId, id: u64, method: MethodId, version: u16, body: &[u8]) -> Vec<u8> {
    let header = RequestHeader {
        version,
        correlation_id: CorrelationId::new(id),
        source,
        timeout_ms: 10_000,
        method,
    };
    wire::request_frame(&header, body, 1 << 20).unwrap()
}

async fn read_response(stream: &mut TcpStream) -> (ResponseHeader, Vec<u8>) {
    let payload = read_frame(stream, 1 << 20, LONG)
        .await
        .unwrap()
        .expect("a response");
    match wire::parse(&payload).unwrap() {
        Incoming::Response(header, body) => (header, body.to_vec()),
        other => panic!("expected a response, got {other:?}"),
    }
}

/// Reads until the server closes the connection.
async fn expect_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(LONG, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("server did not close the connection"),
        }
    }
}

/// Polls `f` until it holds, for at most 30 s: the server notices closures asynchronously.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..3_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// The server still answers a well-behaved client.
async fn still_serves(addr: SocketAddr) {
    let client = RpcClient::new(NodeId::new(2), None, config()).unwrap();
    let reply = client
        .call::<Echo>(addr, &b"ok".to_vec(), LONG)
        .await
        .unwrap();
    assert_eq!(reply, b"ok");
    client.shutdown().await;
}

#[tokio::test]
async fn a_length_prefix_over_the_cap_closes_only_that_connection() {
    let server = server(Arc::new(tokio::sync::Semaphore::new(0))).await;
    let mut bad = raw_connection(server.local_addr()).await;
    bad.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    expect_closed(&mut bad).await;
    assert_eq!(server.stats().snapshot().frames_too_large, 1);
    still_serves(server.local_addr()).await;
    eventually("connections released", || server.open_connections() == 0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_truncated_frame_closes_only_that_connection() {
    let server = server(Arc::new(tokio::sync::Semaphore::new(0))).await;
    let mut bad = raw_connection(server.local_addr()).await;
    let frame = request(
        1,
        Echo::METHOD,
        PROTOCOL_VERSION,
        &codec::encode(&vec![1u8; 50]).unwrap(),
    );
    bad.write_all(&frame[..frame.len() - 10]).await.unwrap();
    bad.shutdown().await.unwrap();
    expect_closed(&mut bad).await;
    eventually("truncation counted", || {
        server.stats().snapshot().truncated_frames == 1
    })
    .await;
    still_serves(server.local_addr()).await;
    server.shutdown().await;
}

/// Regression: a request's header `source` was passed to handlers as is, whatever node the
/// connection's handshake announced, so one connection could speak for any node.
#[tokio::test]
async fn a_request_naming_another_source_than_its_connection_is_refused() {
    let server = server(Arc::new(tokio::sync::Semaphore::new(0))).await;
    let mut conn = raw_connection(server.local_addr()).await; // announced n99
    let body = codec::encode(&b"spoof".to_vec()).unwrap();
    let spoofed = request_from(NodeId::new(1), 1, Echo::METHOD, PROTOCOL_VERSION, &body);
    conn.write_all(&spoofed).await.unwrap();
    let (header, _) = read_response(&mut conn).await;
    assert_eq!(header.code, Some(ErrorCode::InvalidRequest), "{header:?}");
    assert_eq!(server.stats().snapshot().spoofed_sources, 1);
    // The same connection, naming itself, is served.
    conn.write_all(&request(2, Echo::METHOD, PROTOCOL_VERSION, &body))
        .await
        .unwrap();
    let (header, reply) = read_response(&mut conn).await;
    assert_eq!(header.code, None);
    assert_eq!(codec::decode::<Vec<u8>>(&reply, 64).unwrap(), b"spoof");
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_after_the_handshake_closes_the_connection() {
    let server = server(Arc::new(tokio::sync::Semaphore::new(0))).await;
    let mut bad = raw_connection(server.local_addr()).await;
    let mut frame = Vec::new();
    let start = begin_frame(&mut frame);
    frame.extend_from_slice(b"\x07not a shoal frame at all");
    finish_frame(&mut frame, start, 4096).unwrap();
    bad.write_all(&frame).await.unwrap();
    expect_closed(&mut bad).await;
    assert_eq!(server.stats().snapshot().corrupt_frames, 1);
    still_serves(server.local_addr()).await;
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_refused() {
    let server = server(Arc::new(tokio::sync::Semaphore::new(0))).await;
    let mut bad = TcpStream::connect(server.local_addr()).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    expect_closed(&mut bad).await;
    eventually("refusal counted", || {
        server.stats().snapshot().handshake_failures == 1
    })
    .await;
    still_serves(server.local_addr()).await;
    eventually("connections released", || server.open_connections() == 0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_undecodable_request_body_gets_a_corrupt_message_error_and_the_connection_lives() {
    let server = server(Arc::new(tokio::sync::Semaphore::new(0))).await;
    let mut stream = raw_connection(server.local_addr()).await;
    stream
        .write_all(&request(5, Echo::METHOD, PROTOCOL_VERSION, &[0xff, 0xff]))
        .await
        .unwrap();
    let (header, _) = read_response(&mut stream).await;
    assert_eq!(header.correlation_id, CorrelationId::new(5));
    assert_eq!(header.code, Some(ErrorCode::CorruptMessage));
    let body = codec::encode(&b"fine".to_vec()).unwrap();
    stream
        .write_all(&request(6, Echo::METHOD, PROTOCOL_VERSION, &body))
        .await
        .unwrap();
    let (header, body) = read_response(&mut stream).await;
    assert_eq!(header.code, None);
    assert_eq!(codec::decode::<Vec<u8>>(&body, 64).unwrap(), b"fine");
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_on_another_version_is_refused_at_the_handshake() {
    let server = server(Arc::new(tokio::sync::Semaphore::new(0))).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let hello = Hello {
        node: NodeId::new(9),
        listen_addr: None,
    };
    stream
        .write_all(&hello_frame(PROTOCOL_VERSION + 1, &hello))
        .await
        .unwrap();
    let reply = read_frame(&mut stream, 1024, LONG).await.unwrap().unwrap();
    assert_eq!(&reply[..4], b"SHOL");
    assert_eq!(u16::from_be_bytes([reply[4], reply[5]]), PROTOCOL_VERSION);
    assert_eq!(reply[6], 1, "status: version refused");
    expect_closed(&mut stream).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_header_of_another_version_gets_unsupported_version() {
    let server = server(Arc::new(tokio::sync::Semaphore::new(0))).await;
    let mut stream = raw_connection(server.local_addr()).await;
    let body = codec::encode(&b"x".to_vec()).unwrap();
    stream
        .write_all(&request(3, Echo::METHOD, PROTOCOL_VERSION + 7, &body))
        .await
        .unwrap();
    let (header, _) = read_response(&mut stream).await;
    assert_eq!(
        header.code,
        Some(ErrorCode::UnsupportedVersion {
            supported: PROTOCOL_VERSION
        })
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_on_another_version_gives_the_client_unsupported_version_not_a_hang() {
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let _hello = read_frame(&mut stream, 1024, LONG).await.unwrap();
        let mut reply = Vec::new();
        let start = begin_frame(&mut reply);
        reply.extend_from_slice(b"SHOL");
        reply.extend_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
        reply.push(1);
        finish_frame(&mut reply, start, 1024).unwrap();
        stream.write_all(&reply).await.unwrap();
    });
    let client = RpcClient::new(NodeId::new(2), None, config()).unwrap();
    let err = client.call::<Echo>(addr, &vec![], LONG).await.unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::UnsupportedVersion {
            supported: PROTOCOL_VERSION + 1
        }
    );
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn a_response_with_an_unknown_correlation_id_is_dropped_and_counted() {
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let result = crate::handshake::server_handshake(&mut stream, NodeId::new(1), LONG).await;
        result.unwrap();
        let payload = read_frame(&mut stream, 1 << 20, LONG)
            .await
            .unwrap()
            .unwrap();
        let Incoming::Request(header, body) = wire::parse(&payload).unwrap() else {
            panic!("expected a request");
        };
        let body = body.to_vec();
        // First a response nobody asked for, then the real one.
        let mut bogus = wire::response_prefix(CorrelationId::new(424_242));
        bogus.extend_from_slice(&body);
        let bogus = wire::finish_response(CorrelationId::new(424_242), Ok(bogus), 1 << 20);
        let mut real = wire::response_prefix(header.correlation_id);
        real.extend_from_slice(&body);
        let real = wire::finish_response(header.correlation_id, Ok(real), 1 << 20);
        stream.write_all(&bogus).await.unwrap();
        stream.write_all(&real).await.unwrap();
        let _ = read_frame(&mut stream, 1 << 20, LONG).await;
    });
    let client = RpcClient::new(NodeId::new(2), None, config()).unwrap();
    let reply = client
        .call::<Echo>(addr, &b"mine".to_vec(), LONG)
        .await
        .unwrap();
    assert_eq!(reply, b"mine");
    assert_eq!(client.stats().snapshot().unknown_responses, 1);
}

#[tokio::test]
async fn a_client_that_stalls_mid_frame_is_disconnected() {
    let server = server(Arc::new(tokio::sync::Semaphore::new(0))).await;
    let mut bad = raw_connection(server.local_addr()).await;
    bad.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    expect_closed(&mut bad).await;
    assert_eq!(server.stats().snapshot().stalled_frames, 1);
    still_serves(server.local_addr()).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_that_stalls_mid_frame_fails_the_call_before_its_timeout() {
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let result = crate::handshake::server_handshake(&mut stream, NodeId::new(1), LONG).await;
        result.unwrap();
        let _request = read_frame(&mut stream, 1 << 20, LONG).await.unwrap();
        stream.write_all(&[0, 0, 0, 50, 2]).await.unwrap();
        let _ = done_rx.await;
    });
    let client = RpcClient::new(NodeId::new(2), None, config()).unwrap();
    let started = std::time::Instant::now();
    let err = client.call::<Echo>(addr, &vec![], LONG).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    assert!(started.elapsed() < LONG);
    assert_eq!(client.stats().snapshot().stalled_frames, 1);
    drop(done_tx);
}

#[tokio::test]
async fn a_flood_beyond_the_in_flight_bound_gets_overloaded_errors() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let server = server(Arc::clone(&release)).await;
    let mut stream = raw_connection(server.local_addr()).await;
    let body = codec::encode(&()).unwrap();
    let mut flood = Vec::new();
    for id in 1..=10 {
        flood.extend(request(id, Hold::METHOD, PROTOCOL_VERSION, &body));
    }
    stream.write_all(&flood).await.unwrap();
    // The bound is 4: six requests are refused at once, and answered while four wait.
    for _ in 0..6 {
        let (header, _) = read_response(&mut stream).await;
        assert_eq!(header.code, Some(ErrorCode::Overloaded));
        assert!(header.code.as_ref().unwrap().is_retriable());
    }
    release.add_permits(4);
    for _ in 0..4 {
        let (header, _) = read_response(&mut stream).await;
        assert_eq!(header.code, None);
    }
    assert_eq!(server.stats().snapshot().overloaded_rejections, 6);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_over_its_in_flight_bound_waits_then_times_out() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let server = server(Arc::clone(&release)).await;
    let client = RpcClient::new(NodeId::new(2), None, config()).unwrap();
    let addr = server.local_addr();
    let held: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call::<Hold>(addr, &(), LONG).await })
        })
        .collect();
    eventually("four requests in flight", || {
        server.stats().snapshot().connections_opened == 1
    })
    .await;
    // Wait until the four are really queued at the server before the fifth tries.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = client
        .call::<Hold>(addr, &(), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert_eq!(
        server.stats().snapshot().overloaded_rejections,
        0,
        "the client held back"
    );
    release.add_permits(4);
    for call in held {
        call.await.unwrap().unwrap();
    }
    server.shutdown().await;
}

/// Valid frame payloads (after the length prefix) of every kind: requests with small and
/// empty bodies, a success response, error responses with and without descriptors, GOAWAY.
fn frame_corpus() -> Vec<Vec<u8>> {
    use shoal_core::{KeyRange, RangeDescriptor, RangeId, ReplicaDescriptor};
    let strip = |frame: Vec<u8>| frame[crate::frame::LENGTH_PREFIX_BYTES..].to_vec();
    let body = codec::encode(&b"a request body".to_vec()).unwrap();
    let descriptor = RangeDescriptor::new(
        RangeId::new(7),
        KeyRange::full(),
        vec![ReplicaDescriptor::voter(NodeId::new(1))],
    )
    .unwrap();
    let mismatch = shoal_core::Error::new(
        ErrorCode::RangeKeyMismatch {
            descriptors: vec![descriptor],
        },
        "stale",
    );
    let mut ok = wire::response_prefix(CorrelationId::new(3));
    ok.extend_from_slice(&body);
    vec![
        strip(request(1, Echo::METHOD, PROTOCOL_VERSION, &body)),
        strip(request(u64::MAX, Hold::METHOD, PROTOCOL_VERSION, &[])),
        strip(wire::finish_response(
            CorrelationId::new(3),
            Ok(ok),
            1 << 20,
        )),
        strip(wire::error_frame(CorrelationId::new(4), mismatch)),
        strip(wire::error_frame(
            CorrelationId::new(5),
            shoal_core::Error::new(ErrorCode::Overloaded, "busy"),
        )),
        strip(wire::goaway_frame()),
    ]
}

/// Random bytes and mutations of every frame kind parse to a result, never a panic
/// (overflow checks are on in tests), on fixed seeds.
#[test]
fn random_and_mutated_frames_parse_to_results() {
    let corpus = frame_corpus();
    let mut parsed = 0;
    for seed in shoal_sim::seeds_from_env_or(0x5EED_0201, 4) {
        let mut mutator = shoal_sim::Mutator::new(seed);
        for _ in 0..20_000 {
            let input = mutator.next_input(&corpus);
            parsed += usize::from(wire::parse(&input).is_ok());
        }
    }
    assert!(
        parsed > 1000,
        "only {parsed} mutated frames parsed: the mutations are too wild"
    );
}

/// A server fed mutated frames and handshakes over real TCP answers or closes each
/// connection, never falls over, and still serves a well-behaved client afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_fed_mutated_frames_and_handshakes_keeps_serving() {
    let server = server(Arc::new(tokio::sync::Semaphore::new(1 << 20))).await;
    let addr = server.local_addr();
    let corpus = frame_corpus();
    let hellos = vec![hello_frame(
        PROTOCOL_VERSION,
        &Hello {
            node: NodeId::new(99),
            listen_addr: Some(addr),
        },
    )];
    let mut mutator = shoal_sim::Mutator::new(shoal_sim::seed_from_env_or(0x5EED_0202));
    for connection in 0..60 {
        let mut stream = if connection % 4 == 0 {
            // A mutated handshake: the server refuses it or shakes hands.
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let hello = mutator.next_input(&hellos);
            let _ = stream.write_all(&hello).await;
            stream
        } else {
            raw_connection(addr).await
        };
        for _ in 0..20 {
            let payload = mutator.next_input(&corpus);
            let mut frame = Vec::new();
            let start = begin_frame(&mut frame);
            frame.extend_from_slice(&payload);
            finish_frame(&mut frame, start, usize::MAX).unwrap();
            if stream.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = stream.shutdown().await;
    }
    still_serves(addr).await;
    eventually("connections released", || server.open_connections() == 0).await;
    server.shutdown().await;
}

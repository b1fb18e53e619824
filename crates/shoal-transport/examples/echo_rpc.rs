//! Typed RPC and datagrams on loopback: a server with two methods, a client calling them (one
//! call failing in its handler), a fault rule that drops the client's requests, a UDP
//! datagram, and a graceful shutdown. Everything binds 127.0.0.1, port 0.
//!
//! Run it with `cargo run -p shoal-transport --example echo_rpc`.

use shoal_core::{Error, ErrorCode, NodeId};
use shoal_transport::{
    DatagramTransport, Direction, FaultAction, Router, Rpc, RpcClient, RpcServer, RpcTransportExt,
    TransportConfig, UdpTransport,
};
use std::net::SocketAddr;
use std::time::Duration;

/// Sends bytes back unchanged.
struct Echo;
impl Rpc for Echo {
    const NAME: &'static str = "example.echo";
    type Request = Vec<u8>;
    type Response = Vec<u8>;
}

/// Integer division; dividing by zero is the caller's mistake.
struct Divide;
impl Rpc for Divide {
    const NAME: &'static str = "example.divide";
    type Request = (u64, u64);
    type Response = u64;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let (config, timeout) = (TransportConfig::local(), Duration::from_secs(2));
    let mut router = Router::new();
    router
        .register::<Echo, _, _>(|_ctx, bytes| async move { Ok(bytes) })?
        .register::<Divide, _, _>(|_ctx, (a, b)| async move {
            if b == 0 {
                return Err(Error::new(ErrorCode::InvalidRequest, "division by zero"));
            }
            Ok(a / b)
        })?;
    let server = RpcServer::bind(loopback, NodeId::new(1), router, config.clone()).await?;
    let addr = server.local_addr();
    println!("1. server n1 listens on {addr}");

    let client = RpcClient::new(NodeId::new(2), None, config.clone())?;
    let ping = b"ping".to_vec();
    let echoed = client.call::<Echo>(addr, &ping, timeout).await?;
    let echoed = String::from_utf8_lossy(&echoed);
    let quotient = client.call::<Divide>(addr, &(84, 2), timeout).await?;
    println!("2. n2 called echo({echoed:?}) and divide(84, 2) = {quotient}");
    if let Err(e) = client.call::<Divide>(addr, &(1, 0), timeout).await {
        let retriable = e.is_retriable();
        println!("3. divide(1, 0) failed in the handler: {e} (retriable: {retriable})");
    }

    let filter = client.fault_filter();
    filter.add_rule(addr, Direction::Outbound, FaultAction::Drop);
    let short = Duration::from_millis(200);
    if let Err(e) = client.call::<Echo>(addr, &b"lost".to_vec(), short).await {
        println!("4. with a drop rule on {addr}, the call ends with: {e}");
    }
    filter.clear();
    let stats = client.stats().snapshot();
    let (dropped, timeouts) = (stats.fault_dropped, stats.call_timeouts);
    println!("   the client counted {dropped} dropped request(s) and {timeouts} time-out(s)");

    let a = UdpTransport::bind(loopback, NodeId::new(1), &config).await?;
    let b = UdpTransport::bind(loopback, NodeId::new(2), &config).await?;
    a.send_to(b.local_addr(), b"gossip").await?;
    let datagram = tokio::time::timeout(timeout, b.recv()).await??;
    let (text, source) = (String::from_utf8_lossy(&datagram.payload), datagram.source);
    println!("5. n2's UDP socket received {text:?}, sent by {source}");

    client.shutdown().await;
    server.shutdown().await;
    println!("6. client and server shut down, draining what was in flight");
    Ok(())
}

//! In-process multi-node test: five nodes on loopback, each a server and a client sharing one
//! fault filter (as a real node wires them), talking all-to-all, then with one node cut off
//! by the fault filter, then healed.

use shoal::core::{ErrorCode, NodeId};
use shoal::transport::{
    Direction, FaultAction, FaultFilter, Router, Rpc, RpcClient, RpcServer, RpcTransportExt,
    TransportConfig, TransportStats,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Ask a node who it is and how many times it has been asked.
struct Whoami;
impl Rpc for Whoami {
    const NAME: &'static str = "cluster.whoami";
    type Request = ();
    type Response = (NodeId, u64);
}

struct Node {
    id: NodeId,
    server: RpcServer,
    client: RpcClient,
    fault: FaultFilter,
}

async fn start(id: u64) -> Node {
    let id = NodeId::new(id);
    let asked = Arc::new(AtomicU64::new(0));
    let mut router = Router::new();
    router
        .register::<Whoami, _, _>(move |_, ()| {
            let n = asked.fetch_add(1, Ordering::Relaxed) + 1;
            async move { Ok((id, n)) }
        })
        .unwrap();
    let stats = Arc::new(TransportStats::default());
    let fault = FaultFilter::with_stats(Arc::clone(&stats));
    let config = TransportConfig::local();
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = RpcServer::bind_with(
        addr,
        id,
        router,
        config.clone(),
        Arc::clone(&stats),
        fault.clone(),
    )
    .await
    .unwrap();
    let client =
        RpcClient::with_parts(id, Some(server.local_addr()), config, stats, fault.clone()).unwrap();
    Node {
        id,
        server,
        client,
        fault,
    }
}

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_talk_all_to_all_and_survive_an_isolated_member() {
    let mut nodes = Vec::new();
    for id in 1..=5 {
        nodes.push(start(id).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.server.local_addr()).collect();

    for from in &nodes {
        for (to, addr) in nodes.iter().zip(&addrs) {
            let (who, _) = from.client.call::<Whoami>(*addr, &(), LONG).await.unwrap();
            assert_eq!(who, to.id);
        }
    }

    // Cut node 5 off: everyone drops its traffic, and it drops theirs.
    let isolated = &nodes[4];
    for node in &nodes[..4] {
        node.fault
            .add_rule(addrs[4], Direction::Both, FaultAction::Drop);
        isolated
            .fault
            .add_rule(node.server.local_addr(), Direction::Both, FaultAction::Drop);
    }
    for node in &nodes[..4] {
        let err = node
            .client
            .call::<Whoami>(addrs[4], &(), SHORT)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Timeout);
        for addr in &addrs[..4] {
            node.client.call::<Whoami>(*addr, &(), LONG).await.unwrap();
        }
    }
    let err = isolated
        .client
        .call::<Whoami>(addrs[0], &(), SHORT)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout);

    for node in &nodes {
        node.fault.clear();
    }
    for node in &nodes {
        let (who, asked) = node
            .client
            .call::<Whoami>(addrs[4], &(), LONG)
            .await
            .unwrap();
        assert_eq!(who, NodeId::new(5));
        assert!(asked >= 6);
    }

    for node in nodes {
        node.client.shutdown().await;
        node.server.shutdown().await;
    }
}

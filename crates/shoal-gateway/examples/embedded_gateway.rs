//! A gateway over a one-node store, in this process: the store is opened in a temporary
//! directory and made a cluster of one, the gateway serves HTTP on a free loopback port, and
//! shoal-client talks to it as any program would. Run with
//! `cargo run -p shoal-gateway --example embedded_gateway`.

use shoal_client::{Client, ScanRequest};
use shoal_core::NodeId;
use shoal_gateway::{routes, GatewayConfig, HttpListener, KvRouter};
use shoal_store::{Store, StoreConfig};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let node = NodeId::new(1);
    let store = Store::open(StoreConfig::local(node, dir.path())).await?;
    store.bootstrap(&[node]).await?;

    // The gateway reaches the store through its Backend: requests for ranges this node
    // leads go straight to the store, with no socket in between.
    let app = routes(KvRouter::new(store.clone()), GatewayConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(shoal_gateway::serve(
        HttpListener::Plain(listener),
        app,
        async move {
            let _ = stopped.await;
        },
    ));
    println!("the gateway serves {url} (its API: {url}/v1/openapi.json)");

    let client = Client::connect(&url)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(client.get_raw("/ready").await, Ok(a) if a.status == 200) {
        if Instant::now() > deadline {
            return Err("the gateway never became ready".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (key, value) in [("colour", "blue"), ("count", "3"), ("city", "Lyon")] {
        let version = client.put(key.as_bytes(), value).await?;
        println!("PUT /v1/kv/{key} = {value:?}: version {version}");
    }
    let entries = client.scan(ScanRequest::prefix("c")).collect().await?;
    for entry in entries {
        println!(
            "scan: {} = {}",
            String::from_utf8_lossy(&entry.key),
            String::from_utf8_lossy(&entry.value)
        );
    }
    let _ = stop.send(());
    serving.await??;
    store.shutdown().await;
    Ok(())
}

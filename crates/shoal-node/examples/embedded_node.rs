//! A whole Shoal node embedded in a program: a one-node cluster (range store and HTTP
//! gateway) in a temporary directory on free loopback ports, used through shoal-client,
//! then stopped in order. Run with `cargo run -p shoal-node --example embedded_node`.

use shoal_client::Client;
use shoal_core::NodeId;
use shoal_node::node::{Node, NodeSettings};
use std::time::{Duration, Instant};

/// Timings for one machine (heartbeats every 50 ms, elections after 500 ms), keeping the
/// node's own addresses.
fn local(config: &mut shoal_store::StoreConfig) {
    let preset = shoal_store::StoreConfig::local(config.node, config.data_dir.clone());
    config.raft = preset.raft;
    config.transport = preset.transport;
    config.membership = preset.membership;
    config.leave_timeout = preset.leave_timeout;
    config.handover_timeout = preset.handover_timeout;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let ports = shoal_node::dev::free_ports(2)?;
    let id = NodeId::new(1);
    let mut settings = NodeSettings::new(id, dir.path().to_path_buf(), ports[0], ports[1]);
    // The founding voters: this node alone.
    settings.bootstrap = vec![id];
    settings.tune = local;
    let node = Node::start(settings).await?;
    println!("node {id} serves {} (node RPC at {})", node.url(), ports[0]);

    let client = Client::connect(&node.url())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(client.get_raw("/ready").await, Ok(a) if a.status == 200) {
        if Instant::now() > deadline {
            return Err("the node never became ready".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let version = client.put(b"greeting", "hello").await?;
    let read = client.get(b"greeting").await?.ok_or("no value")?;
    println!(
        "greeting = {:?} (version {version})",
        String::from_utf8_lossy(&read.value)
    );
    let members: serde_json::Value = client.get_json("/v1/cluster/members").await?;
    println!("members: {members}");

    // Stops taking requests, finishes those in flight, leaves the cluster, flushes.
    node.shutdown().await;
    println!("stopped");
    Ok(())
}

//! One node's store, in this process: opened in a temporary directory, made a cluster of
//! one, written and read through `Store::serve` (what a node RPC runs, without the socket),
//! and split in two. Run with `cargo run -p shoal-store --example one_node`.

use shoal_core::NodeId;
use shoal_store::{KvOp, KvRequest, KvResponse, Store, StoreConfig, FIRST_RANGE};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let node = NodeId::new(1);
    let store = Store::open(StoreConfig::local(node, dir.path())).await?;
    println!(
        "node {node} listens for node RPC, Raft and gossip at {}",
        store.addr()
    );

    // A cluster of one: the meta range (the system's keys) and the first user range.
    let [meta, first] = store.bootstrap(&[node]).await?;
    println!(
        "bootstrapped {} (the meta range) and {} (every user key)",
        meta.id, first.id
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.leader(FIRST_RANGE) != Some(node) {
        if Instant::now() > deadline {
            return Err("range 1 elected no leader".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Requests name the range and the generation of its descriptor the sender knows.
    let range = store
        .lookup(b"greeting")
        .await?
        .into_iter()
        .max_by_key(|d| d.generation)
        .ok_or("no range holds the key")?;
    let request = |op| KvRequest {
        range: range.id,
        generation: range.generation,
        op,
    };
    let written = store
        .serve(
            request(KvOp::put("greeting", "hello")),
            Duration::from_secs(5),
        )
        .await?;
    println!("put greeting=hello: {written:?}");
    if let KvResponse::Value(Some(read)) = store
        .serve(request(KvOp::get("greeting")), Duration::from_secs(5))
        .await?
    {
        let value = String::from_utf8_lossy(&read.value);
        println!("get greeting: {value:?} at version {}", read.version);
    }

    // A split is a command in the range's own log: no data moves.
    let (left, right) = store.split(FIRST_RANGE, Some(b"m".to_vec())).await?;
    println!(
        "split: {} now ends at {:?}, {} starts there",
        left.id,
        String::from_utf8_lossy(left.range.end().as_key().unwrap_or_default()),
        right.id
    );
    store.shutdown().await;
    Ok(())
}

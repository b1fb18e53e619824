//! shoal-client against a running cluster: puts, reads, a conditional write, a
//! compare-and-set, a scan and a delete, each with what it answered. Start a cluster first
//! (`cargo run --release -p shoal-node -- dev` prints its gateways' URLs), then run
//! `cargo run -p shoal-client --example kv -- URL [URL...]`.

use shoal_client::{
    Client, ClientConfig, Condition, Error, Expect, ScanRequest, Swap, WriteOptions,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() {
        eprintln!("usage: kv URL [URL...]   (the gateways `shoal dev` printed)");
        std::process::exit(2);
    }
    // Every gateway serves every request; the client fails over between them.
    let client = Client::new(ClientConfig::new(urls))?;

    let version = client.put(b"example/colour", "blue").await?;
    println!("put example/colour = blue: version {version}");
    let read = client.get(b"example/colour").await?;
    println!("get example/colour: {read:?}");

    // Only over the version read: had someone written in between, nothing would change.
    let only_over = WriteOptions {
        condition: Some(Condition::Version(version)),
        ..WriteOptions::default()
    };
    match client.put_with(b"example/colour", "green", only_over).await {
        Ok(outcome) => println!("conditional put: {outcome:?}"),
        Err(Error::ConditionFailed { message }) => println!("someone was first: {message}"),
        Err(e) => return Err(e),
    }

    // A compare-and-set answers whether its expectation held.
    let swap = client
        .compare_and_set(
            b"example/colour",
            Expect::Value(b"blue".to_vec()),
            Some(b"red".to_vec()),
        )
        .await?;
    println!("cas blue -> red: {swap:?}");
    assert_eq!(swap, Swap::Mismatch, "it is green by now");

    for i in 0..5 {
        client
            .put(format!("example/n{i}").as_bytes(), i.to_string())
            .await?;
    }
    let mut request = ScanRequest::prefix("example/");
    request.page_size = Some(2);
    let mut scan = client.scan(request);
    while let Some(page) = scan.next_page().await? {
        let keys: Vec<String> = page
            .iter()
            .map(|e| String::from_utf8_lossy(&e.key).into_owned())
            .collect();
        println!("a page: {keys:?}");
    }

    // An error says whether the operation certainly did not happen.
    match client.delete(b"example/colour").await {
        Ok(existed) => println!("deleted example/colour (it existed: {existed})"),
        Err(e) if e.is_definite() => println!("not deleted, safe to retry: {e}"),
        Err(e) => println!("may or may not be deleted; read it back: {e}"),
    }
    Ok(())
}

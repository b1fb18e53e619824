//! `shoal dev` as a user runs it: a real `shoal` process starts a local cluster, serves the
//! HTTP API and the CLI, stops cleanly on SIGTERM (exit 0), and a second run picks up the
//! same data at the same address; `shoal dev --tls` serves HTTPS that the CLI trusts with
//! the certificate it made.

use shoal_client::{key_path, Client, ClientConfig, Method};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `shoal dev` on `dir` with `args`; returns the child and its gateway URL once it
/// serves.
fn start_dev(dir: &std::path::Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("dev")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("shoal starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(at) = line.find("gateway http") {
                let _ = tx.send(line[at + "gateway ".len()..].trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("shoal dev printed its gateway within 2 minutes");
    (child, url)
}

/// Sends SIGTERM and waits for the exit status.
fn stop(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shoal did not stop within a minute of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_dev_serves_stops_cleanly_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = start_dev(dir.path(), &["--nodes", "3"]);
    let gateway = gateway(&url);
    let put = gateway
        .request(Method::PUT, &key_path("greeting"), &[], b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    // The CLI, against the same cluster.
    let cli = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["kv", "--url", &url, "get", "greeting"])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), "hello");
    let status = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "--url", &url, "status", "--json"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");
    assert!(!status["ranges"].as_array().unwrap().is_empty(), "{status}");
    let split = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["range", "--url", &url, "split", "1", "--at", "m"])
        .output()
        .unwrap();
    assert!(
        split.status.success(),
        "{}",
        String::from_utf8_lossy(&split.stderr)
    );
    assert!(stop(child).success(), "SIGTERM stops with exit 0");

    let (child, again) = start_dev(dir.path(), &["--nodes", "3"]);
    assert_eq!(again, url, "the same address on a second run");
    let got = gateway
        .request(Method::GET, &key_path("greeting"), &[], Vec::new())
        .await
        .unwrap();
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello"[..]));
    assert!(stop(child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_dev_tls_serves_https_with_the_certificate_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = start_dev(dir.path(), &["--nodes", "1", "--tls"]);
    assert!(url.starts_with("https://"), "{url}");
    let cert = dir.path().join("tls").join("cert.pem");
    let mut config = ClientConfig::new([url.as_str()]);
    config.ca_cert_pem = Some(std::fs::read(&cert).unwrap());
    let gateway = Client::new(config).unwrap();
    let put = gateway
        .request(Method::PUT, &key_path("secret"), &[], b"s3cr3t".to_vec())
        .await
        .unwrap();
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    // Plain HTTP to the HTTPS port gets no answer; the CLI trusts the certificate given.
    let mut config = ClientConfig::new([url.replace("https://", "http://")]);
    config.request_timeout = Duration::from_secs(3);
    let plain = Client::new(config).unwrap();
    assert!(plain.get_raw("/health").await.is_err());
    let cli = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["kv", "--url", &url, "--ca-cert"])
        .arg(&cert)
        .args(["get", "secret"])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), "s3cr3t");
    // Without the certificate, the CLI refuses to talk HTTPS.
    let untrusted = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["kv", "--url", &url, "get", "secret"])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    assert!(stop(child).success());
}

/// A client of one gateway, for the test's requests (each up to 30 s: a test machine may be
/// slow).
fn gateway(url: &str) -> Client {
    let mut config = ClientConfig::new([url]);
    config.attempt_timeout = Duration::from_secs(30);
    config.request_timeout = Duration::from_secs(30);
    Client::new(config).unwrap()
}

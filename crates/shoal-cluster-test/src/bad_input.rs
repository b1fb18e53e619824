//! Bad requests, sent once the faults have healed, straight over TCP to a node's gateway:
//! malformed HTTP, a bad percent-encoding, an unknown parameter, an oversized key and
//! value, malformed JSON. Each must be refused with a 4xx, and nothing may change: the
//! keys they aim at stay absent, a key that holds a value keeps it, and the ranges stay
//! as they were.

use shoal_client::Client;
use shoal_client::Method;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The key that holds a value the bad requests aim at.
const HELD: &str = "bad-input-held";
/// Its value.
const HELD_VALUE: &[u8] = b"original";

/// Sends `request` (a whole HTTP/1.1 request) on a fresh connection and returns the
/// answer's status code, reading at most 64 KiB within 10 s.
async fn raw(addr: SocketAddr, request: &[u8]) -> Result<u16, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        // The server may answer and close before reading everything: keep what it said.
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while answer.len() < 64 << 10 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let line = String::from_utf8_lossy(&answer);
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("no HTTP answer (got {:?})", line.lines().next()))?;
        Ok::<u16, String>(status)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

/// A request with a body and `Connection: close`.
fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Sends every bad request to the gateway at `http` (`gateway` is a client of it); returns what went wrong (empty: every
/// request was refused and nothing changed).
pub async fn check(http: SocketAddr, gateway: &Client) -> Vec<String> {
    let mut problems = Vec::new();
    let get = |path: String| {
        let gateway = gateway.clone();
        async move {
            gateway
                .request_within(Method::GET, &path, &[], Vec::new(), Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string())
        }
    };
    let held_path = format!("/v1/kv/{HELD}");
    let put = gateway
        .request_within(
            Method::PUT,
            &held_path,
            &[],
            HELD_VALUE.to_vec(),
            Duration::from_secs(10),
        )
        .await;
    if !put.as_ref().is_ok_and(|a| a.status == 200) {
        let put = put.map(|a| (a.status, String::from_utf8_lossy(&a.body).into_owned()));
        return vec![format!("bad input: could not write {HELD} first: {put:?}")];
    }
    let ranges_before = spans(get("/v1/ranges".into()).await);

    let long_key = "k".repeat(5000);
    let big_value = vec![b'v'; 2 << 20];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a request line that is not HTTP",
            b"GARBAGE\r\n\r\n".to_vec(),
        ),
        (
            "a Content-Length that is not a number",
            b"PUT /v1/kv/bad-input-1 HTTP/1.1\r\nHost: shoal\r\nContent-Length: ten\r\n\r\nx"
                .to_vec(),
        ),
        (
            "a bad percent-encoding",
            request("PUT", "/v1/kv/bad-input-%ZZ", b"x"),
        ),
        (
            "an unknown parameter",
            request("PUT", "/v1/kv/bad-input-2?frobnicate=1", b"x"),
        ),
        (
            "an unknown parameter on a held key",
            request("PUT", &format!("{held_path}?frobnicate=1"), b"changed"),
        ),
        (
            "an unknown acks level",
            request("PUT", "/v1/kv/bad-input-3?acks=sometimes", b"x"),
        ),
        (
            "a key over 4 KiB",
            request("PUT", &format!("/v1/kv/{long_key}"), b"x"),
        ),
        (
            "a value over 1 MiB",
            request("PUT", "/v1/kv/bad-input-4", &big_value),
        ),
        (
            "malformed JSON in a compare-and-set",
            request("POST", &format!("{held_path}/cas"), b"{\"expect\": "),
        ),
        (
            "a compare-and-set with no value",
            request(
                "POST",
                &format!("{held_path}/cas"),
                b"{\"expect\":\"absent\"}",
            ),
        ),
        (
            "a compare-and-set with an unknown field",
            request(
                "POST",
                "/v1/kv/bad-input-5/cas",
                b"{\"expect\":\"absent\",\"value\":\"x\",\"also\":1}",
            ),
        ),
        (
            "a scan limit of 0",
            request("GET", "/v1/kv?prefix=bad-input&limit=0", b""),
        ),
        (
            "a split of a range that is not a number",
            request("POST", "/v1/admin/ranges/first/split", b""),
        ),
        (
            "a split at a key of bad JSON",
            request("POST", "/v1/admin/ranges/1/split", b"{\"at\": 7}"),
        ),
    ];
    for (what, bytes) in &cases {
        match raw(http, bytes).await {
            Ok(status) if (400..500).contains(&status) => {}
            Ok(status) => problems.push(format!("bad input: {what} was answered {status}")),
            Err(e) => problems.push(format!("bad input: {what}: {e}")),
        }
    }

    // Nothing changed.
    for n in 1..=5 {
        match get(format!("/v1/kv/bad-input-{n}")).await {
            Ok(a) if a.status == 404 => {}
            other => problems.push(format!(
                "bad input: bad-input-{n} should hold nothing: {:?}",
                other.map(|a| (a.status, String::from_utf8_lossy(&a.body).into_owned()))
            )),
        }
    }
    match get(held_path.clone()).await {
        Ok(a) if a.status == 200 && a.body == HELD_VALUE => {}
        other => problems.push(format!(
            "bad input: {HELD} changed: {:?}",
            other.map(|a| (a.status, String::from_utf8_lossy(&a.body).into_owned()))
        )),
    }
    let ranges_after = spans(get("/v1/ranges".into()).await);
    if ranges_before.is_none() || ranges_before != ranges_after {
        problems.push("bad input: the ranges changed (or could not be listed)".into());
    }
    problems
}

/// The ranges' ids, bounds and generations from a `/v1/ranges` answer (not their
/// leaders, which may move on their own).
fn spans(answer: Result<shoal_client::Answer, String>) -> Option<Vec<serde_json::Value>> {
    let answer = answer.ok().filter(|a| a.status == 200)?;
    let ranges: Vec<serde_json::Value> = serde_json::from_slice(&answer.body).ok()?;
    Some(
        ranges
            .iter()
            .map(|r| serde_json::json!([r["id"], r["start"], r["end"], r["generation"]]))
            .collect(),
    )
}

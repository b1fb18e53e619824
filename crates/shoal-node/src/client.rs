//! The command-line client: key-value commands against a gateway's HTTP API.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shoal_gateway::{encode_bytes, VERSION_HEADER};
use std::time::Duration;

/// How long one CLI request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP answer: status, version header, body.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `X-Shoal-Version` header, if any.
    pub version: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

/// Sends one request to `url`.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Answer, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;
    let response = tokio::time::timeout(TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("no answer from {url} within {TIMEOUT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let version = response
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Answer {
        status,
        version,
        body,
    })
}

/// The status of a GET of `url`.
pub async fn get_status(url: &str) -> Result<u16, String> {
    Ok(request(Method::GET, url, &[], Vec::new()).await?.status)
}

/// The URL of `key` under gateway `base`.
pub fn key_url(base: &str, key: &str) -> String {
    format!(
        "{}/v1/kv/{}",
        base.trim_end_matches('/'),
        encode_bytes(key.as_bytes())
    )
}

//! Split storms: several forced splits in quick succession, at keys the clients are using,
//! through a node's admin route (`POST /v1/admin/ranges/{id}/split`). Each split changes a
//! range's descriptor under the clients' feet: routing caches go stale, leaders of the new
//! halves are elected, requests in flight are retried or refused.

use hyper::Method;
use shoal_core::{DetRng, Rng};
use shoal_gateway::{decode_key, encode_bytes};
use shoal_node::client::Gateway;
use std::time::{Duration, Instant};

/// What a storm did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Storm {
    /// Splits asked for.
    pub asked: u64,
    /// Splits done.
    pub done: u64,
}

/// A range as `/v1/ranges` lists it: its id and its keys (`end` `None`: to the end).
#[derive(Debug)]
struct Span {
    id: u64,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

async fn spans(gateway: &Gateway) -> Option<Vec<Span>> {
    let answer = gateway
        .send(
            Method::GET,
            "/v1/ranges",
            &[],
            Vec::new(),
            Duration::from_secs(5),
        )
        .await
        .ok()
        .filter(|a| a.status == 200)?;
    let ranges: Vec<serde_json::Value> = serde_json::from_slice(&answer.body).ok()?;
    let decode = |v: &serde_json::Value| -> Option<Vec<u8>> {
        match v.as_str()? {
            "" => Some(Vec::new()),
            text => decode_key(text).ok(),
        }
    };
    ranges
        .iter()
        .map(|r| {
            Some(Span {
                id: r["id"].as_u64()?,
                start: decode(&r["start"])?,
                end: match &r["end"] {
                    serde_json::Value::Null => None,
                    end => Some(decode(end)?),
                },
            })
        })
        .collect()
}

/// Splits ranges at keys drawn from `candidates` until `until`, a split about every 300
/// ms, each at a key strictly inside its range (keys already at a range's start are
/// skipped).
pub async fn storm(
    gateway: &Gateway,
    candidates: &[String],
    rng: &mut DetRng,
    until: Instant,
) -> Storm {
    let mut storm = Storm::default();
    while Instant::now() < until && !candidates.is_empty() {
        let key = candidates[rng.below(candidates.len() as u64) as usize].as_bytes();
        if let Some(spans) = spans(gateway).await {
            let inside = spans.iter().find(|s| {
                s.start.as_slice() < key && s.end.as_ref().is_none_or(|e| key < e.as_slice())
            });
            if let Some(span) = inside {
                storm.asked += 1;
                let body = serde_json::json!({ "at": encode_bytes(key) });
                let split = gateway
                    .send(
                        Method::POST,
                        &format!("/v1/admin/ranges/{}/split", span.id),
                        &[],
                        body.to_string().into_bytes(),
                        Duration::from_secs(5),
                    )
                    .await;
                storm.done += u64::from(split.is_ok_and(|a| a.status == 200));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    storm
}

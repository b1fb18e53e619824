//! After the faults heal: every range's replicas must hold the same data. Each replica's own
//! node digests it (`GET /v1/ranges/{id}/digests`: a Merkle root over every key's version
//! and value, at its applied index); the check waits until the replicas of each range stand
//! at one applied index, and then requires one root.

use serde::Serialize;
use shoal_client::Client;
use shoal_client::Method;
use std::time::{Duration, Instant};

/// One range's replicas as last seen.
#[derive(Debug, Clone, Serialize)]
pub struct RangeCheck {
    /// The range.
    pub range: u64,
    /// Whether they agreed at one applied index.
    pub equal: bool,
    /// Each replica's digest as last seen: node, applied index, root, keys (or the error
    /// its node's gateway reported).
    pub replicas: Vec<serde_json::Value>,
}

async fn get(gateway: &Client, path: &str) -> Option<serde_json::Value> {
    let answer = gateway
        .request_within(Method::GET, path, &[], Vec::new(), Duration::from_secs(5))
        .await
        .ok()?;
    (answer.status == 200)
        .then(|| serde_json::from_slice(&answer.body).ok())
        .flatten()
}

/// Checks every range, waiting up to `within` for each to settle.
pub async fn check(gateway: &Client, within: Duration) -> Result<Vec<RangeCheck>, String> {
    let deadline = Instant::now() + within;
    let ranges = loop {
        if let Some(ranges) = get(gateway, "/v1/ranges").await {
            break ranges;
        }
        if Instant::now() >= deadline {
            return Err("the ranges could not be listed".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids: Vec<u64> = ranges
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    let mut checks = Vec::new();
    for id in ids {
        let mut last = Vec::new();
        let equal = loop {
            if let Some(digests) = get(gateway, &format!("/v1/ranges/{id}/digests")).await {
                let replicas: Vec<serde_json::Value> =
                    digests["replicas"].as_array().cloned().unwrap_or_default();
                last = replicas.clone();
                let answered =
                    !replicas.is_empty() && replicas.iter().all(|r| r["error"].is_null());
                let applied = replicas.first().map(|r| r["applied"].clone());
                // At one applied index, the roots settle it either way.
                if answered
                    && replicas
                        .iter()
                        .all(|r| Some(&r["applied"]) == applied.as_ref())
                {
                    break digests["equal"] == true;
                }
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        checks.push(RangeCheck {
            range: id,
            equal,
            replicas: last,
        });
    }
    Ok(checks)
}

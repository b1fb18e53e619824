//! Split storms: several forced splits in quick succession, at keys the clients are using,
//! through a node's admin route (`POST /v1/admin/ranges/{id}/split`). Each split changes a
//! range's descriptor under the clients' feet: routing caches go stale, leaders of the new
//! halves are elected, requests in flight are retried or refused.

use shoal_client::encode_bytes;
use shoal_client::Client;
use shoal_client::Method;
use shoal_core::{DetRng, Rng};
use std::time::{Duration, Instant};

/// What a storm did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Storm {
    /// Splits asked for.
    pub asked: u64,
    /// Splits done.
    pub done: u64,
}

/// Splits ranges at keys drawn from `candidates` until `until`, a split about every 300
/// ms, each at a key strictly inside its range (keys already at a range's start are
/// skipped).
pub async fn storm(
    gateway: &Client,
    candidates: &[String],
    rng: &mut DetRng,
    until: Instant,
) -> Storm {
    let mut storm = Storm::default();
    while Instant::now() < until && !candidates.is_empty() {
        let key = candidates[rng.below(candidates.len() as u64) as usize].as_bytes();
        // Each request is bounded by what is left of the storm (at least a second).
        let timeout = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        if let Some(ranges) = crate::ranges::list(gateway, timeout).await {
            let inside = ranges
                .iter()
                .find(|r| r.holds(key) && r.start.as_slice() < key);
            if let Some(span) = inside {
                storm.asked += 1;
                let body = serde_json::json!({ "at": encode_bytes(key) });
                let split = gateway
                    .request_within(
                        Method::POST,
                        &format!("/v1/admin/ranges/{}/split", span.id),
                        &[],
                        body.to_string().into_bytes(),
                        timeout,
                    )
                    .await;
                storm.done += u64::from(split.is_ok_and(|a| a.status == 200));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    storm
}

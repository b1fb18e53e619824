//! The ranges as a node's gateway lists them (`GET /v1/ranges`): their ids, key bounds and
//! leaders, for the nemesis (which range holds a key, who leads it).

use shoal_client::decode_key;
use shoal_client::Client;
use shoal_client::Method;
use std::time::Duration;

/// One range: its id, its keys (`end` `None`: to the end of the key space) and its leader
/// as the listing node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeBounds {
    /// The range.
    pub id: u64,
    /// Its first key.
    pub start: Vec<u8>,
    /// The first key after it.
    pub end: Option<Vec<u8>>,
    /// Its leader, if known.
    pub leader: Option<u64>,
}

impl RangeBounds {
    /// Whether `key` is in the range.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.start.as_slice() <= key && self.end.as_ref().is_none_or(|e| key < e.as_slice())
    }
}

/// The ranges `gateway` lists, or `None` if it does not answer within `timeout` or the
/// answer is malformed.
pub async fn list(gateway: &Client, timeout: Duration) -> Option<Vec<RangeBounds>> {
    let answer = gateway
        .request_within(Method::GET, "/v1/ranges", &[], Vec::new(), timeout)
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
            Some(RangeBounds {
                id: r["id"].as_u64()?,
                start: decode(&r["start"])?,
                end: match &r["end"] {
                    serde_json::Value::Null => None,
                    end => Some(decode(end)?),
                },
                leader: r["leader"].as_u64(),
            })
        })
        .collect()
}

//! The set workload: clients add unique elements (each a fresh key, `s<client>-<n>`,
//! written with its operation's id, recorded as a `write`); after the faults heal and the
//! clients have stopped, linearizable scans (a page at a time) read the whole set back. Then, as Jepsen's set checker does:
//!
//! - an add acknowledged (`ok`) but absent is **lost**;
//! - an element present that was never added is **unexpected**;
//! - an add that certainly failed (`fail`) but is present was applied after all;
//! - an `info` add may be either.
//!
//! The final scan is also recorded as a read of every added key (invoked before the scan,
//! completed after it), so the linearizability check sees each element's write and read.

use crate::history::Recorder;
use crate::workload::{classify, parse_id, send, Clients, Pace, Tally, FINAL_PROCESS};
use hyper::Method;
use shoal_core::{DetRng, Rng};
use shoal_gateway::{decode_key, encode_bytes};
use shoal_node::client::Gateway;
use shoal_sim::linearizability::{Outcome, RegisterOp};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Where the set's keys live.
const PREFIX: &str = "s";

/// Element `n` of client `process`.
fn element(process: u64, n: u64) -> String {
    format!("{PREFIX}{process:04}-{n:07}")
}

/// Where split storms split: between the clients' elements, and every 500 elements within
/// each client's.
pub fn split_keys(clients: u64) -> Vec<String> {
    (0..clients)
        .flat_map(|p| (0..20).map(move |k| element(p, k * 500)))
        .skip(1)
        .collect()
}

/// One client: adds a fresh element every `interval`, each through a random gateway.
pub async fn client(process: u64, seed: u64, shared: &Clients) {
    let mut rng = DetRng::from_seed(seed);
    let mut pace = Pace::new(shared.interval);
    let mut n = 0;
    while std::time::Instant::now() < shared.until {
        let key = element(process, n);
        n += 1;
        let gateway = &shared.gateways[rng.below(shared.gateways.len() as u64) as usize];
        let (id, op) = shared
            .recorder
            .invoke_with(process, &key, RegisterOp::Write);
        let sent = send(gateway, &key, op, &|v| v.to_string()).await;
        let outcome = classify(op, sent, &|_| None);
        shared.recorder.complete(id, process, &key, op, outcome);
        shared.tally.count(outcome);
        pace.wait().await;
    }
}

/// What the final read found.
#[derive(Debug, Default, serde::Serialize)]
pub struct SetCheck {
    /// Elements read back.
    pub present: u64,
    /// Acknowledged adds absent (their keys, the first 20).
    pub lost: Vec<String>,
    /// How many acknowledged adds were absent.
    pub lost_count: u64,
    /// Elements present that no client added (the first 20).
    pub unexpected: Vec<String>,
    /// Adds that certainly failed, present after all (the first 20).
    pub failed_but_present: Vec<String>,
    /// Whether the final scan was read whole.
    pub read: bool,
}

/// Reads the whole set with a linearizable scan (pages through any gateway that answers),
/// records it as a read of each added key, and compares it with the adds.
pub async fn final_check(gateways: &[Gateway], recorder: &Recorder, tally: &Tally) -> SetCheck {
    // Every add, by key: its id and how it ended.
    let adds: HashMap<String, (u64, Outcome)> = recorder.writes();
    let mut keys: Vec<&String> = adds.keys().collect();
    keys.sort();
    let reads: Vec<(u64, RegisterOp)> = keys
        .iter()
        .map(|key| recorder.invoke_with(FINAL_PROCESS, key, |_| RegisterOp::Read))
        .collect();
    let scanned = scan(gateways).await;
    let mut check = SetCheck {
        read: scanned.is_some(),
        ..SetCheck::default()
    };
    let found = scanned.unwrap_or_default();
    for ((id, op), key) in reads.into_iter().zip(&keys) {
        let outcome = match (&found, found.get(*key)) {
            // Not a value any client wrote: keep it, so the check fails loudly.
            (_, Some(value)) => Outcome::Read(Some(parse_id(value).unwrap_or(u64::MAX))),
            _ if check.read => Outcome::Read(None),
            _ => Outcome::Failed,
        };
        recorder.complete(id, FINAL_PROCESS, key, op, outcome);
        tally.count(outcome);
    }
    if !check.read {
        return check;
    }
    check.present = found.len() as u64;
    for (key, (_, outcome)) in &adds {
        let present = found.contains_key(key);
        match outcome {
            Outcome::Written if !present => {
                check.lost_count += 1;
                if check.lost.len() < 20 {
                    check.lost.push(key.clone());
                }
            }
            Outcome::Failed if present && check.failed_but_present.len() < 20 => {
                check.failed_but_present.push(key.clone())
            }
            _ => {}
        }
    }
    for key in found.keys() {
        if !adds.contains_key(key) && check.unexpected.len() < 20 {
            check.unexpected.push(key.clone());
        }
    }
    check.lost.sort();
    check.failed_but_present.sort();
    check
}

/// Every key under the set's prefix and its value, read page by page with linearizable
/// scans (each page through any gateway that answers); `None` if some page could not be
/// read.
async fn scan(gateways: &[Gateway]) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut found = BTreeMap::new();
    let mut continuation: Option<String> = None;
    loop {
        let mut path = format!(
            "/v1/kv?prefix={}&limit=1000&consistency=linearizable",
            encode_bytes(PREFIX.as_bytes())
        );
        if let Some(c) = &continuation {
            // The page gives it percent-encoded, as a query value wants it.
            path.push_str(&format!("&continuation={c}"));
        }
        let mut page = None;
        for attempt in 0..gateways.len() * 3 {
            let answer = gateways[attempt % gateways.len()]
                .send(Method::GET, &path, &[], Vec::new(), Duration::from_secs(10))
                .await;
            if let Some(answer) = answer.ok().filter(|a| a.status == 200) {
                page = serde_json::from_slice::<serde_json::Value>(&answer.body).ok();
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let page = page?;
        for entry in page["entries"].as_array()? {
            let key = decode_key(entry["key"].as_str()?).ok()?;
            let value = decode_value(entry["value"].as_str()?)?;
            found.insert(String::from_utf8(key).ok()?, value);
        }
        match page["continuation"].as_str() {
            Some(c) => continuation = Some(c.to_owned()),
            None => return Some(found),
        }
    }
}

/// A percent-encoded value (which, unlike a key, may be empty).
fn decode_value(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() {
        Some(Vec::new())
    } else {
        decode_key(text).ok()
    }
}

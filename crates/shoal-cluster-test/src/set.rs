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
use shoal_client::{Client, ScanRequest};
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

/// One client: adds a fresh element every `interval`, each through the next gateway that
/// answers.
pub async fn client(process: u64, _seed: u64, shared: &Clients) {
    let mut pace = Pace::new(shared.interval);
    let mut n = 0;
    while std::time::Instant::now() < shared.until {
        let key = element(process, n);
        n += 1;
        let (id, op) = shared
            .recorder
            .invoke_with(process, &key, RegisterOp::Write);
        let sent = send(&shared.client, &key, op, &|v| v.to_string()).await;
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
pub async fn final_check(client: &Client, recorder: &Recorder, tally: &Tally) -> SetCheck {
    // Every add, by key: its id and how it ended.
    let adds: HashMap<String, (u64, Outcome)> = recorder.writes();
    let mut keys: Vec<&String> = adds.keys().collect();
    keys.sort();
    let reads: Vec<(u64, RegisterOp)> = keys
        .iter()
        .map(|key| recorder.invoke_with(FINAL_PROCESS, key, |_| RegisterOp::Read))
        .collect();
    let scanned = scan(client).await;
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
/// scans (each page through any gateway that answers, a few tries); `None` if some page
/// could not be read.
async fn scan(client: &Client) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut found = BTreeMap::new();
    let mut request = ScanRequest::prefix(PREFIX);
    request.page_size = Some(1000);
    let mut scan = client.scan(request);
    loop {
        let mut page = None;
        for _ in 0..3 {
            // A failed page leaves the scan where it was: asking again resumes it.
            match scan.next_page().await {
                Ok(next) => {
                    page = Some(next);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        match page? {
            Some(entries) => {
                for entry in entries {
                    found.insert(String::from_utf8(entry.key).ok()?, entry.value);
                }
            }
            None => return Some(found),
        }
    }
}

//! The bank workload: banks of five accounts starting at 100 each; clients read banks and
//! transfer money between two accounts of a bank by compare-and-set. Shoal has no
//! transactions across keys, so a bank's accounts live in one key (`bank<b>`, the value
//! `<writer id>:<b0>,<b1>,...`), and the banks spread over the ranges (split storms split
//! between them). Checked:
//!
//! - every read of a bank, during the run and at the end, shows the starting total and
//!   five accounts (a torn, lost or doubled transfer shows as a wrong total);
//! - each bank's history of reads and compare-and-sets is linearizable (the writer ids
//!   make it a register history), so a transfer applied twice, or over a stale balance,
//!   is caught even when the total happens to hold.

use crate::history::Recorder;
use crate::workload::{classify, final_read, send, Clients, Pace, Reply, Tally, SETUP_PROCESS};
use shoal_client::Client;
use shoal_core::{DetRng, Rng};
use shoal_sim::linearizability::{Outcome, RegisterOp};
use std::sync::Mutex;

/// Accounts per bank.
const ACCOUNTS: usize = 5;
/// Each account's starting balance.
const START: u64 = 100;

/// Banks for `keys` keys: one per four, at least one.
pub fn banks(keys: u64) -> u64 {
    keys.div_ceil(4).max(1)
}

/// Bank `b`'s key.
pub fn bank_key(b: u64) -> String {
    format!("bank{b}")
}

/// Where split storms split: at each bank's key, and just after it (so that storms can
/// go on giving each bank a range of its own, and then splitting empty ranges off).
pub fn split_keys(keys: u64) -> Vec<String> {
    (0..banks(keys))
        .flat_map(|b| [bank_key(b), format!("{}~", bank_key(b))])
        .collect()
}

/// A bank's value: who wrote it, then the balances.
fn spell(id: u64, balances: &[u64]) -> String {
    let balances: Vec<String> = balances.iter().map(u64::to_string).collect();
    format!("{id}:{}", balances.join(","))
}

/// The writer's id of a bank's value.
fn writer(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    text.split_once(':')?.0.parse().ok()
}

/// The balances of a bank's value, if it is well formed with the starting total; else
/// what is wrong with it.
fn balances(body: &[u8]) -> Result<Vec<u64>, String> {
    let text = String::from_utf8_lossy(body);
    let (_, rest) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not a bank"))?;
    let balances: Vec<u64> = rest
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{text:?} is not a bank"))?;
    let total: u64 = balances.iter().sum();
    if balances.len() != ACCOUNTS || total != ACCOUNTS as u64 * START {
        return Err(format!(
            "{text:?} has {} accounts totalling {total} (expected {ACCOUNTS} totalling {})",
            balances.len(),
            ACCOUNTS as u64 * START
        ));
    }
    Ok(balances)
}

/// Opens every bank (writes its starting balances), through any gateway that answers.
pub async fn setup(
    client: &Client,
    keys: u64,
    recorder: &Recorder,
    tally: &Tally,
) -> Result<(), String> {
    for b in 0..banks(keys) {
        let key = bank_key(b);
        let mut written = false;
        for _ in 0..5 {
            let (id, op) = recorder.invoke_with(SETUP_PROCESS, &key, RegisterOp::Write);
            let text = |v: u64| spell(v, &[START; ACCOUNTS]);
            let sent = send(client, &key, op, &text).await;
            let outcome = classify(op, sent, &writer);
            recorder.complete(id, SETUP_PROCESS, &key, op, outcome);
            tally.count(outcome);
            if outcome == Outcome::Written {
                written = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        if !written {
            return Err(format!("could not open {key}"));
        }
    }
    Ok(())
}

/// Records a bad read.
fn note(violations: &Mutex<Vec<String>>, key: &str, problem: String) {
    let mut v = violations.lock().unwrap_or_else(|p| p.into_inner());
    if v.len() < 100 {
        v.push(format!("{key}: {problem}"));
    }
}

/// One client: reads a random bank, or transfers between two of its accounts by
/// compare-and-set over the balances it last read.
pub async fn client(process: u64, seed: u64, shared: &Clients) {
    let mut rng = DetRng::from_seed(seed);
    let mut pace = Pace::new(shared.interval);
    let count = banks(shared.keys);
    // What this client last read of each bank: the writer's id and the balances.
    let mut seen: Vec<Option<(u64, Vec<u64>)>> = vec![None; count as usize];
    while std::time::Instant::now() < shared.until {
        let b = rng.below(count) as usize;
        let key = bank_key(b as u64);
        let transfer = seen[b].clone().filter(|_| rng.chance(0.6));
        match transfer {
            None => {
                let (id, op) = shared
                    .recorder
                    .invoke_with(process, &key, |_| RegisterOp::Read);
                let sent = send(&shared.client, &key, op, &|v| v.to_string()).await;
                let body = match &sent {
                    Ok(Reply::Value(Some(value))) => Some(value.clone()),
                    _ => None,
                };
                let outcome = classify(op, sent, &writer);
                shared.recorder.complete(id, process, &key, op, outcome);
                shared.tally.count(outcome);
                if let (Outcome::Read(Some(writer)), Some(body)) = (outcome, body) {
                    match balances(&body) {
                        Ok(balances) => seen[b] = Some((writer, balances)),
                        Err(problem) => note(&shared.violations, &key, problem),
                    }
                }
            }
            Some((from_id, old)) => {
                let rich: Vec<usize> = (0..ACCOUNTS).filter(|&i| old[i] > 0).collect();
                let from = rich[rng.below(rich.len() as u64) as usize];
                let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                let amount = 1 + rng.below(old[from].min(10));
                let mut new = old.clone();
                new[from] -= amount;
                new[to] += amount;
                let (id, op) = shared
                    .recorder
                    .invoke_with(process, &key, |id| RegisterOp::Cas {
                        expected: Some(from_id),
                        new: Some(id),
                    });
                let text = |v: u64| {
                    if v == from_id {
                        spell(v, &old)
                    } else {
                        spell(v, &new)
                    }
                };
                let sent = send(&shared.client, &key, op, &text).await;
                let outcome = classify(op, sent, &writer);
                shared.recorder.complete(id, process, &key, op, outcome);
                shared.tally.count(outcome);
                seen[b] = match outcome {
                    Outcome::Swapped(true) => Some((id, new)),
                    // Stale, or unknown: read again before the next transfer.
                    _ => None,
                };
            }
        }
        pace.wait().await;
    }
}

/// Reads every bank at the end and checks its total; returns how many banks could not be
/// read.
pub async fn final_check(
    client: &Client,
    keys: u64,
    recorder: &Recorder,
    tally: &Tally,
    violations: &Mutex<Vec<String>>,
) -> u64 {
    let mut unread = 0;
    for b in 0..banks(keys) {
        let key = bank_key(b);
        match final_read(client, &key, recorder, tally, &writer).await {
            Some(body) if body.is_empty() => {
                note(violations, &key, "the bank is gone".into());
            }
            Some(body) => {
                if let Err(problem) = balances(&body) {
                    note(violations, &key, problem);
                }
            }
            None => unread += 1,
        }
    }
    unread
}

#[cfg(test)]
mod tests {
    use super::{balances, spell, writer};

    #[test]
    fn banks_are_spelled_and_checked() {
        let text = spell(42, &[100, 90, 110, 100, 100]);
        assert_eq!(text, "42:100,90,110,100,100");
        assert_eq!(writer(text.as_bytes()), Some(42));
        assert_eq!(balances(text.as_bytes()), Ok(vec![100, 90, 110, 100, 100]));
        assert!(balances(b"42:100,90,100,100,100").is_err(), "money lost");
        assert!(balances(b"42:100,100,100,100").is_err(), "an account gone");
        assert!(balances(b"42:100,x,100,100,100").is_err());
        assert!(balances(b"garbage").is_err());
        assert_eq!(writer(b"garbage"), None);
    }
}

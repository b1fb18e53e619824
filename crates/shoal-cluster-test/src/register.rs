//! The register workload: clients read, write and compare-and-set a few keys through the
//! nodes' gateways in turn; every key's history must be linearizable. Written values are
//! the writing operation's id, so a read names the write it saw.

use crate::workload::{classify, parse_id, send, Clients, Pace};
use shoal_core::{DetRng, Rng};
use shoal_sim::linearizability::{Outcome, RegisterOp, Value};
use std::time::Instant;

/// Register `k`'s key.
pub fn key_name(k: u64) -> String {
    format!("r{k}")
}

/// The register workload's keys.
pub fn keys(keys: u64) -> Vec<String> {
    (0..keys).map(key_name).collect()
}

/// One client: until `until`, an operation every `interval` (or as fast as answers
/// come), each through the next gateway that answers.
pub async fn client(process: u64, seed: u64, shared: &Clients) {
    let Clients {
        client,
        keys,
        interval,
        until,
        recorder,
        tally,
        ..
    } = shared;
    let (keys, until) = (*keys, *until);
    let mut pace = Pace::new(*interval);
    let mut rng = DetRng::from_seed(seed);
    // The last value this client saw per key: what its compare-and-sets expect.
    let mut seen: Vec<Value> = vec![None; keys as usize];
    while Instant::now() < until {
        let k = rng.below(keys);
        let key = key_name(k);
        let op = match rng.below(10) {
            0..=4 => RegisterOp::Read,
            5..=7 => RegisterOp::Write(0),
            _ => RegisterOp::Cas {
                expected: seen[k as usize],
                new: Some(0),
            },
        };
        // Written values are the operation's id: unique, so a read names its write.
        let id_op = |id: u64| match op {
            RegisterOp::Write(_) => RegisterOp::Write(id),
            RegisterOp::Cas { expected, .. } => RegisterOp::Cas {
                expected,
                new: Some(id),
            },
            other => other,
        };
        let (id, op) = recorder.invoke_with(process, &key, id_op);
        let sent = send(client, &key, op, &|v| v.to_string()).await;
        let outcome = classify(op, sent, &|body| parse_id(body));
        recorder.complete(id, process, &key, op, outcome);
        tally.count(outcome);
        match (op, outcome) {
            (_, Outcome::Read(v)) => seen[k as usize] = v,
            (RegisterOp::Write(v), Outcome::Written) => seen[k as usize] = Some(v),
            (RegisterOp::Cas { new, .. }, Outcome::Swapped(true)) => seen[k as usize] = new,
            _ => {}
        }
        pace.wait().await;
    }
}

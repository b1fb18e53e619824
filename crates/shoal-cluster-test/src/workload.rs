//! The register workload: clients read, write and compare-and-set a few keys through random
//! nodes' gateways, recording each operation. Errors are classified as Jepsen's etcd client
//! does: `fail` only when the operation certainly did not take effect, `info` (unknown)
//! whenever it may have; when in doubt, `info`.

use crate::history::Recorder;
use hyper::Method;
use shoal_core::{DetRng, Rng};
use shoal_node::client::{key_path, Answer, Gateway, SendError};
use shoal_sim::linearizability::{Outcome, RegisterOp, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client waits for one answer, as Jepsen's etcd client does: a paused node's
/// gateway holds its clients this long (the gateway's own deadline is 10 s, so a slow
/// answer from a live gateway can also end as unknown).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Operations by how they ended, for the progress line.
#[derive(Default)]
pub struct Tally {
    /// Completed.
    pub ok: AtomicU64,
    /// Certainly not applied.
    pub fail: AtomicU64,
    /// Unknown.
    pub info: AtomicU64,
}

impl Tally {
    fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Failed => &self.fail,
            Outcome::Unknown => &self.info,
            _ => &self.ok,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Register `k`'s key.
pub fn key_name(k: u64) -> String {
    format!("r{k}")
}

/// What every client shares.
pub struct Clients {
    /// Every node's gateway.
    pub gateways: Vec<Gateway>,
    /// Registers.
    pub keys: u64,
    /// Each client's time between operations.
    pub interval: Duration,
    /// When the clients stop.
    pub until: Instant,
    /// The history.
    pub recorder: Arc<Recorder>,
    /// The counts.
    pub tally: Arc<Tally>,
}

/// One client: until `until`, an operation every `interval` (or as fast as answers come),
/// each through a random node's gateway.
pub async fn client(process: u64, seed: u64, shared: Arc<Clients>) {
    let Clients {
        gateways,
        keys,
        interval,
        until,
        recorder,
        tally,
    } = &*shared;
    let (keys, interval, until) = (*keys, *interval, *until);
    let mut rng = DetRng::from_seed(seed);
    // The last value this client saw per key: what its compare-and-sets expect.
    let mut seen: Vec<Value> = vec![None; keys as usize];
    let mut next = Instant::now();
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
        let gateway = &gateways[rng.below(gateways.len() as u64) as usize];
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
        let outcome = perform(gateway, &key, op).await;
        recorder.complete(id, process, &key, op, outcome);
        tally.count(outcome);
        match (op, outcome) {
            (_, Outcome::Read(v)) => seen[k as usize] = v,
            (RegisterOp::Write(v), Outcome::Written) => seen[k as usize] = Some(v),
            (RegisterOp::Cas { new, .. }, Outcome::Swapped(true)) => seen[k as usize] = new,
            _ => {}
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        } else {
            next = now;
        }
    }
}

/// Reads every key once the faults have healed (through each node in turn until one
/// answers), so that the history ends with what the cluster holds. Returns how many keys
/// could not be read.
pub async fn final_reads(
    gateways: &[Gateway],
    keys: u64,
    recorder: &Recorder,
    tally: &Tally,
) -> u64 {
    let process = u64::MAX;
    let mut unread = 0;
    for k in 0..keys {
        let mut read = false;
        let key = key_name(k);
        for attempt in 0..gateways.len() * 3 {
            let (id, op) = recorder.invoke_with(process, &key, |_| RegisterOp::Read);
            let outcome = perform(&gateways[attempt % gateways.len()], &key, op).await;
            recorder.complete(id, process, &key, op, outcome);
            tally.count(outcome);
            if matches!(outcome, Outcome::Read(_)) {
                read = true;
                break;
            }
        }
        unread += u64::from(!read);
    }
    unread
}

/// Sends `op` on `key` and says how it ended.
async fn perform(gateway: &Gateway, key: &str, op: RegisterOp) -> Outcome {
    let path = key_path(key);
    let sent = match op {
        RegisterOp::Read => {
            gateway
                .send(Method::GET, &path, &[], Vec::new(), CLIENT_TIMEOUT)
                .await
        }
        RegisterOp::Write(v) => {
            gateway
                .send(
                    Method::PUT,
                    &path,
                    &[],
                    v.to_string().into_bytes(),
                    CLIENT_TIMEOUT,
                )
                .await
        }
        RegisterOp::Cas { expected, new } => {
            let expect = match expected {
                Some(v) => serde_json::json!({ "value": v.to_string() }),
                None => serde_json::json!("absent"),
            };
            let body = serde_json::json!({
                "expect": expect,
                "value": new.map(|v| v.to_string()),
            });
            gateway
                .send(
                    Method::POST,
                    &format!("{path}/cas"),
                    &[],
                    body.to_string().into_bytes(),
                    CLIENT_TIMEOUT,
                )
                .await
        }
        RegisterOp::Delete => unreachable!("the register workload does not delete"),
    };
    classify(op, sent)
}

/// An answer (or its absence) as an outcome.
fn classify(op: RegisterOp, sent: Result<Answer, SendError>) -> Outcome {
    let read = matches!(op, RegisterOp::Read);
    let answer = match sent {
        Ok(answer) => answer,
        // A read changes nothing: one that got no answer may as well have failed.
        Err(_) if read => return Outcome::Failed,
        Err(SendError::NotSent(_)) => return Outcome::Failed,
        Err(SendError::Lost(_)) => return Outcome::Unknown,
    };
    match (op, answer.status) {
        (RegisterOp::Read, 200) => match std::str::from_utf8(&answer.body)
            .ok()
            .and_then(|b| b.parse::<u64>().ok())
        {
            Some(v) => Outcome::Read(Some(v)),
            // Not a value any client wrote: keep it, so the check fails loudly.
            None => Outcome::Read(Some(u64::MAX)),
        },
        (RegisterOp::Read, 404) => Outcome::Read(None),
        (RegisterOp::Read, _) => Outcome::Failed,
        (RegisterOp::Write(_), 200) => Outcome::Written,
        (RegisterOp::Cas { .. }, 200) => Outcome::Swapped(true),
        (RegisterOp::Cas { .. }, 409) => Outcome::Swapped(false),
        // The gateway's definite refusals: not carried out.
        (_, 400 | 401 | 403 | 404 | 409 | 413 | 503) => Outcome::Failed,
        // 504 says the outcome is unknown; anything else unexpected counts as unknown too.
        _ => Outcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::classify;
    use shoal_node::client::{Answer, SendError};
    use shoal_sim::linearizability::{Outcome, RegisterOp};

    fn answer(status: u16, body: &str) -> Result<Answer, SendError> {
        Ok(Answer {
            status,
            version: None,
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn errors_are_definite_only_when_certain() {
        let write = RegisterOp::Write(1);
        let cas = RegisterOp::Cas {
            expected: None,
            new: Some(1),
        };
        assert_eq!(classify(write, answer(200, "")), Outcome::Written);
        assert_eq!(classify(write, answer(503, "")), Outcome::Failed);
        assert_eq!(classify(write, answer(504, "")), Outcome::Unknown);
        assert_eq!(classify(write, answer(500, "")), Outcome::Unknown);
        assert_eq!(
            classify(write, Err(SendError::NotSent("refused".into()))),
            Outcome::Failed
        );
        assert_eq!(
            classify(write, Err(SendError::Lost("timeout".into()))),
            Outcome::Unknown
        );
        assert_eq!(classify(cas, answer(409, "")), Outcome::Swapped(false));
        assert_eq!(classify(cas, answer(200, "")), Outcome::Swapped(true));
        let read = RegisterOp::Read;
        assert_eq!(classify(read, answer(200, "17")), Outcome::Read(Some(17)));
        assert_eq!(classify(read, answer(404, "")), Outcome::Read(None));
        assert_eq!(
            classify(read, Err(SendError::Lost("timeout".into()))),
            Outcome::Failed
        );
    }
}

//! What the clients do, and how an answer becomes an outcome. Every workload sends its
//! operations through random nodes' gateways and records each; errors are classified as
//! Jepsen's etcd client does: `fail` only when the operation certainly did not take effect,
//! `info` (unknown) whenever it may have; when in doubt, `info`.
//!
//! The workloads are [`crate::register`], [`crate::set`] and [`crate::bank`].

use crate::history::Recorder;
use hyper::Method;
use shoal_gateway::encode_bytes;
use shoal_node::client::{key_path, Answer, Gateway, SendError};
use shoal_sim::linearizability::{Outcome, RegisterOp};
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
    /// Counts one outcome.
    pub fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Failed => &self.fail,
            Outcome::Unknown => &self.info,
            _ => &self.ok,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every client shares.
pub struct Clients {
    /// The workload.
    pub workload: crate::options::Workload,
    /// Violations a workload finds as it goes (a bank read whose total is wrong).
    pub violations: Arc<std::sync::Mutex<Vec<String>>>,
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

/// Keeps a client to its rate: an operation every `interval`, or as fast as answers come
/// when they are slower.
pub struct Pace {
    next: Instant,
    interval: Duration,
}

impl Pace {
    /// Operations every `interval` from now.
    pub fn new(interval: Duration) -> Self {
        Self {
            next: Instant::now(),
            interval,
        }
    }

    /// Waits for the next operation's turn.
    pub async fn wait(&mut self) {
        self.next += self.interval;
        let now = Instant::now();
        if self.next > now {
            tokio::time::sleep(self.next - now).await;
        } else {
            self.next = now;
        }
    }
}

/// One client of the run's workload, until the clients' end.
pub async fn client(process: u64, seed: u64, shared: Arc<Clients>) {
    match shared.workload {
        crate::options::Workload::Register => crate::register::client(process, seed, &shared).await,
        crate::options::Workload::Set => crate::set::client(process, seed, &shared).await,
        crate::options::Workload::Bank => crate::bank::client(process, seed, &shared).await,
    }
}

/// A register's (or a set element's) value: the id of the operation that wrote it, in
/// decimal.
pub fn parse_id(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body).ok()?.parse().ok()
}

/// The process id of the final reads.
pub const FINAL_PROCESS: u64 = u64::MAX;
/// The process id of a workload's setup writes (the bank's opening balances); it and
/// [`FINAL_PROCESS`] are the only ids at or above it.
pub const SETUP_PROCESS: u64 = u64::MAX - 1;

/// Reads `key` once the faults have healed, through each node in turn until one answers,
/// so that the history ends with what the cluster holds; returns the body read (`None`
/// when no node could answer; an absent key is `Some` of an empty body).
pub async fn final_read(
    gateways: &[Gateway],
    key: &str,
    recorder: &Recorder,
    tally: &Tally,
    parse: &(dyn Fn(&[u8]) -> Option<u64> + Sync),
) -> Option<Vec<u8>> {
    for attempt in 0..gateways.len() * 3 {
        let (id, op) = recorder.invoke_with(FINAL_PROCESS, key, |_| RegisterOp::Read);
        let sent = send(&gateways[attempt % gateways.len()], key, op, &|v| {
            v.to_string()
        })
        .await;
        let body = match &sent {
            Ok(answer) if answer.status == 200 => Some(answer.body.clone()),
            Ok(answer) if answer.status == 404 => Some(Vec::new()),
            _ => None,
        };
        let outcome = classify(op, sent, parse);
        recorder.complete(id, FINAL_PROCESS, key, op, outcome);
        tally.count(outcome);
        if matches!(outcome, Outcome::Read(_)) {
            return body;
        }
    }
    None
}

/// Sends `op` on `key`, the values written spelled by `text` (a register's value is its
/// writer's id; a bank's carries the balances too).
pub async fn send(
    gateway: &Gateway,
    key: &str,
    op: RegisterOp,
    text: &(dyn Fn(u64) -> String + Sync),
) -> Result<Answer, SendError> {
    let path = key_path(key);
    match op {
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
                    text(v).into_bytes(),
                    CLIENT_TIMEOUT,
                )
                .await
        }
        RegisterOp::Cas { expected, new } => {
            let expect = match expected {
                Some(v) => serde_json::json!({ "value": encode_bytes(text(v).as_bytes()) }),
                None => serde_json::json!("absent"),
            };
            let body = serde_json::json!({
                "expect": expect,
                "value": new.map(|v| encode_bytes(text(v).as_bytes())),
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
        RegisterOp::Delete => unreachable!("no workload deletes"),
    }
}

/// An answer (or its absence) as an outcome; `parse` reads the writer's id from a value.
pub fn classify(
    op: RegisterOp,
    sent: Result<Answer, SendError>,
    parse: &(dyn Fn(&[u8]) -> Option<u64> + Sync),
) -> Outcome {
    let read = matches!(op, RegisterOp::Read);
    let answer = match sent {
        Ok(answer) => answer,
        // A read changes nothing: one that got no answer may as well have failed.
        Err(_) if read => return Outcome::Failed,
        Err(SendError::NotSent(_)) => return Outcome::Failed,
        Err(SendError::Lost(_)) => return Outcome::Unknown,
    };
    match (op, answer.status) {
        (RegisterOp::Read, 200) => match parse(&answer.body) {
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
    use super::{classify, parse_id};
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
        assert_eq!(
            classify(write, answer(200, ""), &parse_id),
            Outcome::Written
        );
        assert_eq!(classify(write, answer(503, ""), &parse_id), Outcome::Failed);
        assert_eq!(
            classify(write, answer(504, ""), &parse_id),
            Outcome::Unknown
        );
        assert_eq!(
            classify(write, answer(500, ""), &parse_id),
            Outcome::Unknown
        );
        assert_eq!(
            classify(write, Err(SendError::NotSent("refused".into())), &parse_id),
            Outcome::Failed
        );
        assert_eq!(
            classify(write, Err(SendError::Lost("timeout".into())), &parse_id),
            Outcome::Unknown
        );
        assert_eq!(
            classify(cas, answer(409, ""), &parse_id),
            Outcome::Swapped(false)
        );
        assert_eq!(
            classify(cas, answer(200, ""), &parse_id),
            Outcome::Swapped(true)
        );
        let read = RegisterOp::Read;
        assert_eq!(
            classify(read, answer(200, "17"), &parse_id),
            Outcome::Read(Some(17))
        );
        assert_eq!(
            classify(read, answer(404, ""), &parse_id),
            Outcome::Read(None)
        );
        assert_eq!(
            classify(read, Err(SendError::Lost("timeout".into())), &parse_id),
            Outcome::Failed
        );
    }
}

//! What the clients do, and how an answer becomes an outcome. Every workload sends its
//! operations through one shared shoal-client over every node's gateway (in rotation,
//! passing over those that stop answering) and records each; errors are classified as
//! Jepsen's etcd client does: `fail` only when the operation certainly did not take effect,
//! `info` (unknown) whenever it may have; when in doubt, `info`.
//!
//! The workloads are [`crate::register`], [`crate::set`] and [`crate::bank`].

use crate::history::Recorder;
use shoal_client::{Client, ClientConfig, Error, Expect, Swap};
use shoal_sim::linearizability::{Outcome, RegisterOp};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client waits for one gateway's answer, as Jepsen's etcd client does (the
/// gateway's own deadline is 10 s, so a slow answer from a live gateway can also end as
/// unknown). A gateway that does not answer in time is passed over for a while by every
/// client (they share one [`Client`]), so a paused node holds up one operation, not all.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one operation may take, every attempt included: a read fails over to the other
/// gateways, and a write refused as unavailable (certainly not done) is sent again.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an operation may wait for its gateway before the clients send new ones to the
/// others, and a read goes to another gateway too: answers take a few milliseconds here, so
/// a wait this long most likely means a stopped node (or an election, which every gateway
/// waits out alike). Set low because at the clients' rate every client has sent to a paused
/// node within a fraction of a second: a wait longer than this leaves them all stuck there.
const STALLED_AFTER: Duration = Duration::from_millis(20);

/// The workload's client: every node's gateway, in rotation, shared by all the clients.
pub fn workload_client(urls: Vec<String>) -> Result<Client, String> {
    let mut config = ClientConfig::new(urls);
    config.attempt_timeout = ATTEMPT_TIMEOUT;
    config.request_timeout = OPERATION_TIMEOUT;
    config.stalled_after = STALLED_AFTER;
    Client::new(config).map_err(|e| e.to_string())
}

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
    /// The client of every node's gateway.
    pub client: Client,
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

/// Reads `key` once the faults have healed, through any gateway that answers (a few
/// tries), so that the history ends with what the cluster holds; returns the value read
/// (`None` when no gateway could answer; an absent key is `Some` of an empty value).
pub async fn final_read(
    client: &Client,
    key: &str,
    recorder: &Recorder,
    tally: &Tally,
    parse: &(dyn Fn(&[u8]) -> Option<u64> + Sync),
) -> Option<Vec<u8>> {
    for _ in 0..3 {
        let (id, op) = recorder.invoke_with(FINAL_PROCESS, key, |_| RegisterOp::Read);
        let sent = send(client, key, op, &|v| v.to_string()).await;
        let body = match &sent {
            Ok(Reply::Value(value)) => Some(value.clone().unwrap_or_default()),
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

/// What an operation got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A read's value (`None`: the key has none).
    Value(Option<Vec<u8>>),
    /// A write done.
    Written,
    /// A compare-and-set done (`true`) or whose expectation failed (`false`).
    Swapped(bool),
}

/// Sends `op` on `key`, the values written spelled by `text` (a register's value is its
/// writer's id; a bank's carries the balances too).
pub async fn send(
    client: &Client,
    key: &str,
    op: RegisterOp,
    text: &(dyn Fn(u64) -> String + Sync),
) -> Result<Reply, Error> {
    let key = key.as_bytes();
    match op {
        RegisterOp::Read => Ok(Reply::Value(client.get(key).await?.map(|v| v.value))),
        RegisterOp::Write(v) => {
            client.put(key, text(v)).await?;
            Ok(Reply::Written)
        }
        RegisterOp::Cas { expected, new } => {
            let expect = match expected {
                Some(v) => Expect::Value(text(v).into_bytes()),
                None => Expect::Absent,
            };
            let swap = client
                .compare_and_set(key, expect, new.map(|v| text(v).into_bytes()))
                .await?;
            Ok(Reply::Swapped(swap != Swap::Mismatch))
        }
        RegisterOp::Delete => unreachable!("no workload deletes"),
    }
}

/// An answer (or its absence) as an outcome; `parse` reads the writer's id from a value.
pub fn classify(
    op: RegisterOp,
    sent: Result<Reply, Error>,
    parse: &(dyn Fn(&[u8]) -> Option<u64> + Sync),
) -> Outcome {
    match sent {
        Ok(Reply::Value(Some(value))) => match parse(&value) {
            Some(v) => Outcome::Read(Some(v)),
            // Not a value any client wrote: keep it, so the check fails loudly.
            None => Outcome::Read(Some(u64::MAX)),
        },
        Ok(Reply::Value(None)) => Outcome::Read(None),
        Ok(Reply::Written) => Outcome::Written,
        Ok(Reply::Swapped(done)) => Outcome::Swapped(done),
        // A read changes nothing: one that got no answer may as well have failed.
        Err(_) if matches!(op, RegisterOp::Read) => Outcome::Failed,
        // The client's definite refusals: not carried out.
        Err(e) if e.is_definite() => Outcome::Failed,
        // It may have happened: when in doubt, unknown.
        Err(_) => Outcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::{classify, parse_id, Reply};
    use shoal_client::Error;
    use shoal_sim::linearizability::{Outcome, RegisterOp};

    fn refused(retriable: bool) -> Result<Reply, Error> {
        Err(Error::Refused {
            status: Some(503),
            code: "unavailable".into(),
            message: String::new(),
            retriable,
        })
    }

    fn unknown() -> Result<Reply, Error> {
        Err(Error::OutcomeUnknown {
            message: "timeout".into(),
        })
    }

    #[test]
    fn errors_are_definite_only_when_certain() {
        let write = RegisterOp::Write(1);
        let cas = RegisterOp::Cas {
            expected: None,
            new: Some(1),
        };
        let classify = |op, sent| classify(op, sent, &parse_id);
        assert_eq!(classify(write, Ok(Reply::Written)), Outcome::Written);
        assert_eq!(classify(write, refused(true)), Outcome::Failed);
        assert_eq!(classify(write, refused(false)), Outcome::Failed);
        assert_eq!(classify(write, unknown()), Outcome::Unknown);
        let protocol = Err(Error::Protocol {
            message: "garbled".into(),
        });
        assert_eq!(classify(write, protocol), Outcome::Unknown);
        assert_eq!(
            classify(cas, Ok(Reply::Swapped(false))),
            Outcome::Swapped(false)
        );
        assert_eq!(
            classify(cas, Ok(Reply::Swapped(true))),
            Outcome::Swapped(true)
        );
        let read = RegisterOp::Read;
        assert_eq!(
            classify(read, Ok(Reply::Value(Some(b"17".to_vec())))),
            Outcome::Read(Some(17))
        );
        assert_eq!(classify(read, Ok(Reply::Value(None))), Outcome::Read(None));
        assert_eq!(classify(read, unknown()), Outcome::Failed);
    }
}

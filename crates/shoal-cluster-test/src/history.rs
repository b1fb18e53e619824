//! The history: every operation's invocation and completion as the clients saw them, in
//! real-time order, with monotonic timestamps. Written as JSON lines (for any outside
//! checker) and kept as a shoal-sim register history (for the linearizability check).

use serde::Serialize;
use shoal_sim::linearizability::{History, Outcome, RegisterOp};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// One line of `history.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The client.
    pub process: u64,
    /// `invoke`, `ok`, `fail` (certainly not applied) or `info` (may have been).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `read`, `write` or `cas`.
    pub f: &'static str,
    /// The register.
    pub key: String,
    /// For an invocation: the value written, or `[expected, new]` of a cas; for an ok: the
    /// value read, or whether a cas swapped.
    pub value: serde_json::Value,
    /// Nanoseconds since the run began.
    pub time: u64,
    /// The operation's id (its invocation and completion share it).
    pub id: u64,
}

/// Records events under one lock, so that their order is real-time order.
pub struct Recorder {
    start: Instant,
    inner: Mutex<Recorded>,
}

struct Recorded {
    events: Vec<Event>,
    history: History,
    next_id: u64,
}

/// What the recorder holds at the end.
pub struct Recording {
    /// Every event, in order.
    pub events: Vec<Event>,
    /// The same as a register history.
    pub history: History,
}

fn op_name(op: RegisterOp) -> (&'static str, serde_json::Value) {
    match op {
        RegisterOp::Read => ("read", serde_json::Value::Null),
        RegisterOp::Write(v) => ("write", v.into()),
        RegisterOp::Delete => ("delete", serde_json::Value::Null),
        RegisterOp::Cas { expected, new } => ("cas", serde_json::json!([expected, new])),
    }
}

impl Recorder {
    /// An empty history; time starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            inner: Mutex::new(Recorded {
                events: Vec::new(),
                history: History::new(None),
                next_id: 0,
            }),
        }
    }

    /// Records that `process` invokes `make(id)` on `key` (the operation may depend on its
    /// id: written values are ids); returns the id and the operation.
    pub fn invoke_with(
        &self,
        process: u64,
        key: &str,
        make: impl FnOnce(u64) -> RegisterOp,
    ) -> (u64, RegisterOp) {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = r.next_id;
        r.next_id += 1;
        let op = make(id);
        r.history
            .invoke(id, process, key, op)
            .expect("ids are fresh");
        let (f, value) = op_name(op);
        let time = self.start.elapsed().as_nanos() as u64;
        r.events.push(Event {
            process,
            kind: "invoke",
            f,
            key: key.to_owned(),
            value,
            time,
            id,
        });
        (id, op)
    }

    /// Records how operation `id` (of `process`, `op` on `key`) ended.
    pub fn complete(&self, id: u64, process: u64, key: &str, op: RegisterOp, outcome: Outcome) {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        r.history
            .complete(id, outcome)
            .expect("an outcome that fits its operation, once");
        let (f, _) = op_name(op);
        let (kind, value) = match outcome {
            Outcome::Read(v) => ("ok", serde_json::json!(v)),
            Outcome::Written => ("ok", serde_json::Value::Null),
            Outcome::Swapped(swapped) => ("ok", swapped.into()),
            Outcome::Failed => ("fail", serde_json::Value::Null),
            Outcome::Unknown => ("info", serde_json::Value::Null),
        };
        let time = self.start.elapsed().as_nanos() as u64;
        r.events.push(Event {
            process,
            kind,
            f,
            key: key.to_owned(),
            value,
            time,
            id,
        });
    }

    /// Every write so far, by key (the last, if a key was written more than once): its id
    /// and how it ended (`Unknown` while pending). The set workload's adds are writes of
    /// fresh keys.
    pub fn writes(&self) -> HashMap<String, (u64, Outcome)> {
        let r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut adds = HashMap::new();
        let mut keys = HashMap::new();
        for e in &r.events {
            match (e.kind, e.f) {
                ("invoke", "write") => {
                    keys.insert(e.id, e.key.clone());
                    adds.insert(e.key.clone(), (e.id, Outcome::Unknown));
                }
                (kind, "write") => {
                    if let Some(key) = keys.get(&e.id) {
                        let outcome = match kind {
                            "ok" => Outcome::Written,
                            "fail" => Outcome::Failed,
                            _ => Outcome::Unknown,
                        };
                        adds.insert(key.clone(), (e.id, outcome));
                    }
                }
                _ => {}
            }
        }
        adds
    }

    /// Everything recorded.
    pub fn finish(self) -> Recording {
        let r = self.inner.into_inner().unwrap_or_else(|p| p.into_inner());
        Recording {
            events: r.events,
            history: r.history,
        }
    }
}

/// One operation, its invocation and completion paired up (for the report).
#[derive(Debug, Clone, Serialize)]
pub struct OpRecord {
    /// Its id.
    pub id: u64,
    /// The client.
    pub process: u64,
    /// `read`, `write`, `cas`.
    pub f: &'static str,
    /// The key.
    pub key: String,
    /// What it was invoked with.
    pub value: serde_json::Value,
    /// When it was invoked, ns since the run began.
    pub invoked: u64,
    /// When it completed, if it did.
    pub completed: Option<u64>,
    /// `ok`, `fail`, `info`, or `pending` (never completed).
    pub outcome: &'static str,
    /// What it returned (a read's value, whether a cas swapped).
    pub result: serde_json::Value,
}

/// Pairs every invocation with its completion, in invocation order.
pub fn operations(events: &[Event]) -> Vec<OpRecord> {
    let mut ops: Vec<OpRecord> = Vec::new();
    let mut at: HashMap<u64, usize> = HashMap::new();
    for e in events {
        if e.kind == "invoke" {
            at.insert(e.id, ops.len());
            ops.push(OpRecord {
                id: e.id,
                process: e.process,
                f: e.f,
                key: e.key.clone(),
                value: e.value.clone(),
                invoked: e.time,
                completed: None,
                outcome: "pending",
                result: serde_json::Value::Null,
            });
        } else if let Some(&i) = at.get(&e.id) {
            ops[i].completed = Some(e.time);
            ops[i].outcome = e.kind;
            ops[i].result = e.value.clone();
        }
    }
    ops
}

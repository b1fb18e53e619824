//! The run's figures: operations by outcome, latency, the longest time with no successful
//! operation, the faults, the checks' verdicts; written as `summary.json` and a table.

use crate::history::{Event, OpRecord};
use crate::nemesis::FaultEvent;
use crate::replicas::RangeCheck;
use serde::Serialize;
use std::collections::HashMap;

/// `summary.json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The seed (replays the clients' choices and the fault schedule).
    pub seed: u64,
    /// Data nodes.
    pub nodes: u64,
    /// The workload.
    pub workload: &'static str,
    /// Operations invoked.
    pub ops: u64,
    /// Completed.
    pub ok: u64,
    /// Certainly not applied.
    pub fail: u64,
    /// Unknown outcome.
    pub info: u64,
    /// Acknowledged adds lost (the set workload). The register and bank workloads fold
    /// this into `linearizable` (a lost write makes a later read impossible to linearize),
    /// so it is `null` there.
    pub lost: Option<u64>,
    /// The set workload's final read, compared with the adds.
    pub set: Option<crate::set::SetCheck>,
    /// What the workload's own checks and the bad-input checks found wrong (a bank total
    /// changed, an add lost, a bad request that was not refused or changed something).
    pub violations: Vec<String>,
    /// Whether every key's history has a linearization (`null`: the checker gave up).
    pub linearizable: Option<bool>,
    /// The key whose history has none, if any.
    pub violation_key: Option<String>,
    /// That key's violation, narrowed to a small window (see [`ViolationWindow`]).
    pub violation: Option<ViolationWindow>,
    /// Whether every range's replicas held the same data at the end (one Merkle root at
    /// one applied index).
    pub replicas_equal: bool,
    /// Keys the final reads could not read (a run that reads none has checked nothing).
    pub unread_keys: u64,
    /// The longest time with no successful operation, in milliseconds.
    pub longest_unavailable_ms: u64,
    /// Latency of successful operations.
    pub latency_p50_ms: f64,
    /// Latency of successful operations.
    pub latency_p99_ms: f64,
    /// The faults, in order.
    pub nemesis: Vec<FaultEvent>,
    /// Whether the faults asked for took effect (each kind at least once).
    pub carried_out: bool,
    /// Nodes that did not exit 0 on SIGTERM at the end.
    pub unclean_exits: Vec<u64>,
    /// Every range's replica check.
    pub ranges: Vec<RangeCheck>,
}

/// Why a key has no linearization, in a few operations: the shortest prefix of its
/// history that has none ends when `last` completes, and `concurrent` are the operations
/// overlapping it (shoal-sim's `explain`).
#[derive(Debug, Serialize)]
pub struct ViolationWindow {
    /// The key.
    pub key: String,
    /// Operations in the shortest prefix with no linearization.
    pub prefix_ops: usize,
    /// The key's operations the checker considered (failed ones and unanswered reads,
    /// which constrain nothing, left out).
    pub key_ops: usize,
    /// The operation whose outcome no order fits.
    pub last: OpRecord,
    /// The operations concurrent with it.
    pub concurrent: Vec<OpRecord>,
    /// The last few operations of the key that completed before it was invoked: the
    /// state it should have seen.
    pub before: Vec<OpRecord>,
}

impl ViolationWindow {
    /// Every operation of the window (those before it, the concurrent ones and the last),
    /// in invocation order.
    pub fn rows(&self) -> Vec<&OpRecord> {
        let mut rows: Vec<&OpRecord> = self.before.iter().chain(&self.concurrent).collect();
        rows.push(&self.last);
        rows.sort_by_key(|o| o.invoked);
        rows.dedup_by_key(|o| o.id);
        rows
    }
}

/// Operations of the window's key that completed before `last` was invoked, the latest
/// `count` of them, in completion order.
pub fn preceding(ops: &[OpRecord], key: &str, last: &OpRecord, count: usize) -> Vec<OpRecord> {
    let mut before: Vec<&OpRecord> = ops
        .iter()
        .filter(|o| o.key == key && o.outcome != "fail")
        .filter(|o| o.completed.is_some_and(|c| c < last.invoked))
        .collect();
    before.sort_by_key(|o| o.completed);
    before
        .iter()
        .skip(before.len().saturating_sub(count))
        .map(|&o| o.clone())
        .collect()
}

/// Counts, latency and availability from the events.
pub struct Figures {
    /// Invocations.
    pub ops: u64,
    /// Completed.
    pub ok: u64,
    /// Certainly not applied.
    pub fail: u64,
    /// Unknown.
    pub info: u64,
    /// Median latency of successes, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of successes, ms.
    pub p99_ms: f64,
    /// Longest gap with no success, ms (from the first invocation to the last completion).
    pub longest_unavailable_ms: u64,
    /// Writes and compare-and-sets that swapped, acknowledged to clients (setup writes
    /// left out): a run with none has shown nothing.
    pub acknowledged_writes: u64,
}

/// Figures of `events`: the counts include the setup writes and final reads; latency and
/// availability are the clients' alone.
pub fn figures(events: &[Event]) -> Figures {
    let mut invoked: HashMap<u64, u64> = HashMap::new();
    let (mut ops, mut ok, mut fail, mut info) = (0, 0, 0, 0);
    let mut acknowledged_writes = 0;
    let mut latencies = Vec::new();
    let mut successes = Vec::new();
    for e in events {
        match e.kind {
            "invoke" => {
                ops += 1;
                invoked.insert(e.id, e.time);
            }
            "ok" => {
                ok += 1;
                // The final reads and setup writes are not the clients' traffic: their
                // latency (a whole scan, say) and timing would skew the figures.
                if e.process < crate::workload::SETUP_PROCESS {
                    let wrote = e.f == "write" || (e.f == "cas" && e.value == true);
                    acknowledged_writes += u64::from(wrote);
                    successes.push(e.time);
                    if let Some(&at) = invoked.get(&e.id) {
                        latencies.push(e.time.saturating_sub(at));
                    }
                }
            }
            "fail" => fail += 1,
            _ => info += 1,
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p) as usize;
        latencies[i] as f64 / 1e6
    };
    let clients = || {
        events
            .iter()
            .filter(|e| e.process < crate::workload::SETUP_PROCESS)
    };
    let first = clients().next().map_or(0, |e| e.time);
    let last = clients().next_back().map_or(0, |e| e.time);
    let mut longest = 0;
    let mut previous = first;
    for &t in successes.iter().chain(std::iter::once(&last)) {
        longest = longest.max(t.saturating_sub(previous));
        previous = t;
    }
    Figures {
        ops,
        ok,
        fail,
        info,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        longest_unavailable_ms: longest / 1_000_000,
        acknowledged_writes,
    }
}

/// The summary as a table for the terminal.
pub fn table(s: &Summary) -> String {
    let verdict = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "unknown (checker gave up)",
    };
    let mut faults: HashMap<&str, usize> = HashMap::new();
    for f in &s.nemesis {
        *faults.entry(f.fault).or_default() += 1;
    }
    let mut faults: Vec<String> = faults.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    faults.sort();
    [
        format!("seed                    {}", s.seed),
        format!("nodes / workload        {} / {}", s.nodes, s.workload),
        format!(
            "operations              {} (ok {}, fail {}, info {})",
            s.ops, s.ok, s.fail, s.info
        ),
        format!(
            "latency p50 / p99       {:.2} ms / {:.2} ms",
            s.latency_p50_ms, s.latency_p99_ms
        ),
        format!("longest unavailable     {} ms", s.longest_unavailable_ms),
        format!(
            "faults                  {}",
            if faults.is_empty() {
                "none".into()
            } else {
                faults.join(", ")
            }
        ),
        format!(
            "faults took effect      {}",
            if s.carried_out {
                "yes"
            } else {
                "NO: the run was not carried out"
            }
        ),
        format!("linearizable            {}", verdict(s.linearizable)),
        format!(
            "lost                    {}",
            s.lost
                .map_or("n/a (in the linearizability check)".into(), |l| l
                    .to_string())
        ),
        format!(
            "other violations        {}",
            if s.violations.is_empty() {
                "none".to_string()
            } else {
                format!("{}: {}", s.violations.len(), s.violations.join("; "))
            }
        ),
        format!(
            "replicas equal (Merkle) {}",
            if s.replicas_equal { "yes" } else { "NO" }
        ),
        format!(
            "final reads             {}",
            if s.unread_keys == 0 {
                "every key".to_string()
            } else {
                format!("NO: {} keys unread", s.unread_keys)
            }
        ),
        format!(
            "clean exits             {}",
            if s.unclean_exits.is_empty() {
                "yes".into()
            } else {
                format!("NO: {:?}", s.unclean_exits)
            }
        ),
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::figures;
    use crate::history::Event;

    fn event(kind: &'static str, id: u64, ms: u64) -> Event {
        Event {
            process: 0,
            kind,
            f: "read",
            key: "r0".into(),
            value: serde_json::Value::Null,
            time: ms * 1_000_000,
            id,
        }
    }

    #[test]
    fn the_longest_gap_without_success_is_measured() {
        let events = vec![
            event("invoke", 0, 0),
            event("ok", 0, 10),
            event("invoke", 1, 20),
            event("fail", 1, 30),
            event("invoke", 2, 40),
            event("info", 2, 500),
            event("invoke", 3, 600),
            event("ok", 3, 700),
        ];
        let f = figures(&events);
        assert_eq!((f.ops, f.ok, f.fail, f.info), (4, 2, 1, 1));
        assert_eq!(f.longest_unavailable_ms, 690);
        assert_eq!(f.acknowledged_writes, 0, "reads acknowledge no write");
        assert_eq!(f.p50_ms, 10.0);
    }
}

//! `cargo xtask cluster-test`: starts real `shoal` processes on loopback, runs clients over
//! the HTTP API (the register, set or bank workload) while a nemesis kills, pauses and
//! partitions nodes and splits ranges on a schedule drawn from the seed, records the
//! history, and checks it: every key's operations linearizable (shoal-sim's checker; an
//! `info` write may or may not have happened), no acknowledged add lost (set), every
//! bank's total kept (bank), every range's replicas equal after the faults heal, bad
//! requests refused with nothing changed. Writes `history.jsonl`, `history.txt`
//! (shoal-sim's format, for `check_history`), `summary.json`, `report.html` and every
//! node's log under `--out`; exits non-zero on a violation, or when the faults asked for
//! never took effect.

#![warn(missing_docs)]

mod bad_input;
mod bank;
mod cluster;
mod history;
mod html;
mod nemesis;
mod options;
mod partition;
mod ranges;
mod register;
mod replicas;
mod report;
mod set;
mod split_storm;
mod workload;

use clap::Parser;
use cluster::Cluster;
use history::Recorder;
use options::{Fault, Options, Workload};
use shoal_sim::linearizability::{check, explain, Verdict};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Search steps the checker may spend per key.
const CHECK_BUDGET: u64 = 50_000_000;

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    let outcome = tokio::select! {
        outcome = run(options) => outcome,
        _ = tokio::signal::ctrl_c() => {
            // Tasks may still hold the cluster: end every node here, paused ones included.
            cluster::kill_all();
            eprintln!("\ncluster-test: interrupted; every node killed");
            return ExitCode::from(130);
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cluster-test: {e}");
            ExitCode::from(2)
        }
    }
}

/// The whole run; `Ok(false)` when a check failed or the faults never took effect.
async fn run(options: Options) -> Result<bool, String> {
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| format!("target/cluster-test/{seed}").into());
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    // Each fault takes up to 11 s with its gap, more when a node is slow to answer: a
    // shorter run may miss a kind, and then it
    // was not carried out.
    let needed = Duration::from_secs(16 * options.nemesis.len() as u64 + 1);
    if options.duration < needed {
        eprintln!(
            "cluster-test: warning: {:?} may be too short for every fault asked for (allow {needed:?})",
            options.duration
        );
    }
    eprintln!(
        "cluster-test: seed {seed}, {} nodes, {:?}, faults {:?}, output in {}",
        options.nodes,
        options.duration,
        options.nemesis,
        out.display()
    );

    let mut extra: Vec<String> = options
        .broken
        .iter()
        .map(|b| b.flag().to_string())
        .collect();
    if options.nemesis.contains(&Fault::Partition) {
        extra.push(cluster::FAULT_INJECTION.into());
    }
    if let Some(broken) = options.broken {
        eprintln!("cluster-test: nodes broken on purpose ({broken:?}): this run must fail");
    }
    let cluster = Cluster::start(&options.shoal, &out.join("nodes"), options.nodes, extra).await?;
    let first_gateway = cluster.nodes[0].gateway();
    let client = workload::workload_client(cluster.nodes.iter().map(|n| n.url()).collect())?;
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let recorder = Arc::new(Recorder::new());
    let tally = Arc::new(workload::Tally::default());
    if options.workload == Workload::Bank {
        bank::setup(&client, options.keys, &recorder, &tally).await?;
    }
    let violations = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start = Instant::now();
    let until = start + options.duration;

    let interval = Duration::from_secs_f64(options.clients as f64 / options.rate.max(1) as f64);
    let shared = Arc::new(workload::Clients {
        workload: options.workload,
        violations: violations.clone(),
        client: client.clone(),
        keys: options.keys,
        interval,
        until,
        recorder: recorder.clone(),
        tally: tally.clone(),
    });
    let clients: Vec<_> = (0..options.clients)
        .map(|p| {
            let seed = seed.wrapping_add(p.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            tokio::spawn(workload::client(p, seed, shared.clone()))
        })
        .collect();
    let current = nemesis::Current::default();
    let split_keys = match options.workload {
        Workload::Register => register::keys(options.keys),
        Workload::Set => set::split_keys(options.clients),
        Workload::Bank => bank::split_keys(options.keys),
    };
    let nemesis = tokio::spawn(nemesis::run(
        cluster.clone(),
        nemesis::Plan {
            kinds: options.nemesis.clone(),
            seed,
            keys: split_keys,
            start,
            until,
        },
        current.clone(),
    ));
    // The progress line: rewritten in place on a terminal, a line every 5 s otherwise.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut tick = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        if !terminal && !tick.is_multiple_of(5) {
            continue;
        }
        let fault = current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "none".into());
        let line = format!(
            "{:>4}s  ok {:>6}  fail {:>5}  info {:>5}  fault: {fault:<12}",
            start.elapsed().as_secs(),
            tally.ok.load(Ordering::Relaxed),
            tally.fail.load(Ordering::Relaxed),
            tally.info.load(Ordering::Relaxed),
        );
        if terminal {
            eprint!("\r{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    }
    eprintln!();
    // A failure from here on still leaves the history and the summary behind.
    let mut problem = None;
    let faults = match nemesis.await {
        Ok(Ok(faults)) => faults,
        Ok(Err(e)) => {
            problem = Some(format!("the nemesis: {e}"));
            Vec::new()
        }
        Err(e) => {
            problem = Some(format!("the nemesis stopped: {e}"));
            Vec::new()
        }
    };
    for client in clients {
        client.await.map_err(|e| format!("a client stopped: {e}"))?;
    }
    drop(shared);

    eprintln!("cluster-test: healing, then final reads and the replica check");
    let mut set_check = None;
    let mut bad_input = None;
    // (The guard must not outlive the statement: the arms lock the cluster again.)
    let healed = cluster.lock().await.heal().await;
    let (unread, ranges) = match healed {
        Ok(()) => {
            let unread = match options.workload {
                Workload::Register => {
                    let mut unread = 0;
                    for key in register::keys(options.keys) {
                        let parse = workload::parse_id;
                        let read = workload::final_read(&client, &key, &recorder, &tally, &parse);
                        unread += u64::from(read.await.is_none());
                    }
                    unread
                }
                Workload::Set => {
                    let check = set::final_check(&client, &recorder, &tally).await;
                    let unread = u64::from(!check.read);
                    set_check = Some(check);
                    unread
                }
                Workload::Bank => {
                    bank::final_check(&client, options.keys, &recorder, &tally, &violations).await
                }
            };
            let http = cluster.lock().await.nodes[0].http;
            bad_input = Some(bad_input::check(http, &first_gateway).await);
            let ranges = replicas::check(&first_gateway, Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| {
                    problem = Some(format!("the replica check: {e}"));
                    Vec::new()
                });
            (unread, ranges)
        }
        Err(e) => {
            problem = Some(format!("healing: {e}"));
            (options.keys, Vec::new())
        }
    };
    let unclean_exits = {
        let mut cluster = cluster.lock().await;
        tokio::task::block_in_place(|| cluster.stop())
    };

    let recording = Arc::try_unwrap(recorder)
        .map_err(|_| "a client still holds the history")?
        .finish();
    write_history(&out, &recording)?;
    let verdict = check(&recording.history, CHECK_BUDGET);
    let (linearizable, violation_key) = match &verdict {
        Verdict::Linearizable => (Some(true), None),
        Verdict::NotLinearizable { key, .. } => (Some(false), Some(key.clone())),
        Verdict::Unknown { key } => (None, Some(key.clone())),
    };
    let ops = history::operations(&recording.events);
    let violation = match &verdict {
        Verdict::NotLinearizable { key, operations } => {
            explain(&recording.history, key, CHECK_BUDGET).map(|e| {
                let by_id = |id: u64| ops.iter().find(|o| o.id == id).cloned();
                let last = by_id(e.last).expect("the checker's operations are the history's");
                report::ViolationWindow {
                    key: e.key.clone(),
                    prefix_ops: e.prefix.len(),
                    key_ops: operations.len(),
                    before: report::preceding(&ops, key, &last, 4),
                    concurrent: e.concurrent.iter().filter_map(|&id| by_id(id)).collect(),
                    last,
                }
            })
        }
        _ => None,
    };
    let figures = report::figures(&recording.events);
    let carried_out = options.nemesis.iter().all(|kind| {
        faults
            .iter()
            .any(|f| f.fault == kind.name() && f.took_effect)
    });
    let mut violations = violations.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(check) = &set_check {
        if check.lost_count > 0 {
            violations.push(format!(
                "{} acknowledged adds lost, among them {:?}",
                check.lost_count, check.lost
            ));
        }
        if !check.unexpected.is_empty() {
            violations.push(format!("never added: {:?}", check.unexpected));
        }
        if !check.failed_but_present.is_empty() {
            violations.push(format!(
                "adds that failed are present: {:?}",
                check.failed_but_present
            ));
        }
    }
    let bad_input = bad_input.unwrap_or_default();
    violations.extend(bad_input.iter().cloned());
    let summary = report::Summary {
        seed,
        nodes: options.nodes,
        workload: options.workload.name(),
        ops: figures.ops,
        ok: figures.ok,
        fail: figures.fail,
        info: figures.info,
        lost: set_check.as_ref().map(|c| c.lost_count),
        set: set_check,
        violations,
        linearizable,
        violation_key,
        violation,
        replicas_equal: !ranges.is_empty() && ranges.iter().all(|r| r.equal),
        unread_keys: unread,
        longest_unavailable_ms: figures.longest_unavailable_ms,
        latency_p50_ms: figures.p50_ms,
        latency_p99_ms: figures.p99_ms,
        nemesis: faults,
        carried_out,
        unclean_exits,
        ranges,
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(out.join("summary.json"), &json).map_err(|e| e.to_string())?;
    let table = report::table(&summary);
    println!("{table}");
    let page = html::render(&summary, &table, &ops)?;
    std::fs::write(out.join("report.html"), page).map_err(|e| e.to_string())?;
    if let Some(window) = &summary.violation {
        println!(
            "key {} has no linearization: the shortest broken prefix has {} of its {} operations, \
             ending when operation {} (*) completed; {} operations were concurrent with it, \
             the {} before it are the last that completed before it began:",
            window.key,
            window.prefix_ops,
            window.key_ops,
            window.last.id,
            window.concurrent.len(),
            window.before.len()
        );
        let rows = window.rows();
        for o in rows {
            println!(
                "  {}{:>8} process {:>3}  {} {} {}  -> {} {}",
                if o.id == window.last.id { "*" } else { " " },
                o.id,
                o.process,
                o.f,
                o.key,
                o.value,
                o.outcome,
                o.result
            );
        }
    } else if let Verdict::NotLinearizable { key, operations } = &verdict {
        println!(
            "key {key} has no linearization; its {} operations are in {}",
            operations.len(),
            out.join("history.jsonl").display()
        );
    }
    println!("report: {}", out.join("report.html").display());
    // A run that checked nothing (no write acknowledged to a client, keys never read at
    // the end) does not pass.
    let violated = summary.linearizable == Some(false) || !summary.violations.is_empty();
    let passed = !violated
        && summary.linearizable == Some(true)
        && summary.replicas_equal
        && summary.carried_out
        && summary.unclean_exits.is_empty()
        && figures.acknowledged_writes > 0
        && summary.unread_keys == 0;
    if let Some(problem) = problem {
        let problem = format!(
            "{problem}; the history and the summary are in {}",
            out.display()
        );
        // A violation found is the verdict (exit 1), whatever else went wrong.
        if !violated {
            return Err(problem);
        }
        eprintln!("cluster-test: {problem}");
    }
    println!(
        "{}",
        serde_json::json!({
            "passed": passed, "seed": seed, "ops": summary.ops, "ok": summary.ok,
            "fail": summary.fail, "info": summary.info, "lost": summary.lost,
            "linearizable": summary.linearizable, "violations": summary.violations.len(),
            "longest_unavailable_ms": summary.longest_unavailable_ms,
            "latency_p50_ms": summary.latency_p50_ms, "latency_p99_ms": summary.latency_p99_ms,
        })
    );
    Ok(passed)
}

/// `history.jsonl` (one event per line) and `history.txt` (shoal-sim's register format).
fn write_history(out: &std::path::Path, recording: &history::Recording) -> Result<(), String> {
    let mut lines = String::new();
    for event in &recording.events {
        lines.push_str(&serde_json::to_string(event).map_err(|e| e.to_string())?);
        lines.push('\n');
    }
    std::fs::write(out.join("history.jsonl"), lines).map_err(|e| e.to_string())?;
    std::fs::write(out.join("history.txt"), recording.history.to_text()).map_err(|e| e.to_string())
}

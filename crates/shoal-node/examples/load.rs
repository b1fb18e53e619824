//! The load generator: closed-loop HTTP clients against a Shoal gateway, run as
//! `cargo xtask load --url URL [--conns 64] [--duration 10s] [--op put|get]
//! [--value-bytes 256] [--keys 1000]`.
//!
//! Each of `--conns` clients sends one request at a time, on its own connection, for
//! `--duration`: puts of `--value-bytes`-byte values, or gets (the keys are written once
//! first). Keys are drawn from `--keys` distinct ones. It reports its own CPU use (from
//! `/proc/self/stat`, in the kernel's 100 Hz ticks), since on one machine the generator
//! competes with the cluster for the processor. The last line is one JSON object: `rps`,
//! `p50_ms`, `p99_ms`, `errors`, `cpu_percent`, and the settings.

use shoal_client::{Client, ClientConfig};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Settings {
    url: String,
    conns: usize,
    duration: Duration,
    put: bool,
    value_bytes: usize,
    keys: u64,
}

fn parse_duration(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    let secs = text.strip_suffix('s').unwrap_or(text);
    secs.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
}

fn settings() -> Result<Settings, String> {
    let mut s = Settings {
        url: String::new(),
        conns: 64,
        duration: Duration::from_secs(10),
        put: true,
        value_bytes: 256,
        keys: 1000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => s.url = value()?.trim_end_matches('/').to_string(),
            "--conns" => {
                s.conns = value()?
                    .parse()
                    .ok()
                    .filter(|c| (1..=4096).contains(c))
                    .ok_or("--conns is 1 to 4096")?
            }
            "--duration" => {
                s.duration = parse_duration(&value()?).ok_or("--duration like 10s or 500ms")?
            }
            "--op" => {
                s.put = match value()?.as_str() {
                    "put" => true,
                    "get" => false,
                    other => return Err(format!("--op put or get, not {other}")),
                }
            }
            "--value-bytes" => {
                s.value_bytes = value()?
                    .parse()
                    .ok()
                    .filter(|b| *b <= 1 << 20)
                    .ok_or("--value-bytes is at most 1 MiB")?
            }
            "--keys" => {
                s.keys = value()?
                    .parse()
                    .ok()
                    .filter(|k| *k >= 1)
                    .ok_or("--keys is at least 1")?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if s.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(s)
}

/// The process's CPU time so far (user and system), from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn key(i: u64) -> Vec<u8> {
    format!("load-{i:08}").into_bytes()
}

#[tokio::main]
async fn main() -> ExitCode {
    let s = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Each request within one attempt's time (5 s): a failure is counted, not retried past
    // it (shoal-client still retries, within that time, what certainly was not done: a
    // 503 or a connection that could not be made).
    let mut config = ClientConfig::new([s.url.as_str()]);
    config.request_timeout = config.attempt_timeout;
    let client = match Client::new(config) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let value = vec![b'v'; s.value_bytes];
    if !s.put {
        // The keys the gets read, written once.
        for i in 0..s.keys {
            if let Err(e) = client.put(&key(i), value.clone()).await {
                eprintln!("load: writing the keys to read: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..s.conns {
        // A client each: its own connection, kept open between requests.
        let Ok(client) = Client::new(client.config().clone()) else {
            return ExitCode::FAILURE;
        };
        let stop = stop.clone();
        let (keys, put, value) = (s.keys, s.put, value.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut next = (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            while !stop.load(Ordering::Relaxed) {
                next ^= next << 13;
                next ^= next >> 7;
                next ^= next << 17;
                let target = key(next % keys);
                let sent = Instant::now();
                let result = if put {
                    client.put(&target, value.clone()).await.map(|_| ())
                } else {
                    client.get(&target).await.map(|_| ())
                };
                match result {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(s.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    let cpu_percent = match (cpu_before, cpu_time()) {
        (Some(before), Some(after)) => {
            (after.saturating_sub(before)).as_secs_f64() / elapsed.as_secs_f64() * 100.0
        }
        _ => f64::NAN,
    };
    latencies.sort_unstable();
    let percentile = |p: usize| {
        latencies
            .get(latencies.len().saturating_sub(1) * p / 100)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let rps = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{{\"op\":\"{}\",\"conns\":{},\"duration_s\":{:.1},\"value_bytes\":{},\"rps\":{rps:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"errors\":{errors},\"cpu_percent\":{cpu_percent:.0}}}",
        if s.put { "put" } else { "get" },
        s.conns,
        elapsed.as_secs_f64(),
        s.value_bytes,
        percentile(50),
        percentile(99),
    );
    ExitCode::SUCCESS
}

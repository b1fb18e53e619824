//! What a run does: its flags.

use std::path::PathBuf;
use std::time::Duration;

/// `cargo xtask cluster-test` runs real `shoal` processes under faults and checks what the
/// clients saw.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "cluster-test", about)]
pub struct Options {
    /// Data nodes, all founding voters (3 to 9).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(3..=9))]
    pub nodes: u64,
    /// How long the clients run (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// What the clients do: register (reads, writes and compare-and-sets on a few keys),
    /// set (adds of unique elements, read back at the end), bank (transfers between
    /// accounts; the total never changes).
    #[arg(long, default_value = "register")]
    pub workload: Workload,
    /// Faults, comma-separated: kill (kill -9, then restart), pause (SIGSTOP, then
    /// SIGCONT), partition (cut nodes' traffic, then heal), split (a storm of forced range
    /// splits).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,partition,split"
    )]
    pub nemesis: Vec<Fault>,
    /// The seed of the clients' choices and the fault schedule (default: from the clock;
    /// printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Operations per second, all clients together.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Keys (registers).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub keys: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub clients: u64,
    /// Where the history, the summary and every node's data and log go (default
    /// target/cluster-test/SEED; its `nodes/` is emptied first). Through `cargo xtask`, a
    /// relative path is taken from the workspace's root.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The `shoal` binary to run.
    #[arg(long, default_value = "target/release/shoal")]
    pub shoal: PathBuf,
    /// Runs nodes broken on purpose, to show that the checks catch it (needs a `shoal`
    /// built with the `unsafe-test-switches` feature; `cargo xtask cluster-test` builds one
    /// when this is given). The run must then fail.
    #[arg(long)]
    pub broken: Option<Broken>,
}

/// A deliberate defect.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Linearizable reads skip the read barrier: a deposed leader answers from stale state.
    SkipReadBarrier,
}

impl Broken {
    /// The `shoal start` flag that switches it on.
    pub fn flag(self) -> &'static str {
        match self {
            Broken::SkipReadBarrier => "--unsafe-skip-read-barrier",
        }
    }
}

/// A client workload.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Reads, writes and compare-and-sets of a few registers, checked for linearizability.
    Register,
    /// Adds of unique elements (a key each), then a final read of them all: no
    /// acknowledged add lost, nothing present that was never added or certainly failed.
    Set,
    /// Transfers by compare-and-set between accounts, read concurrently: every read's
    /// total is the starting total, and each bank's history is linearizable.
    Bank,
}

impl Workload {
    /// Its name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Bank => "bank",
        }
    }
}

/// A kind of fault.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// kill -9 a node (a range's leader half the time), restart it a few seconds later.
    Kill,
    /// SIGSTOP a node, SIGCONT it a few seconds later.
    Pause,
    /// Cut a minority from a majority, isolate range 1's leader, or cut one node's traffic
    /// one way; heal a few seconds later.
    Partition,
    /// Split ranges at the clients' keys, several times a second, for a few seconds.
    Split,
}

impl Fault {
    /// Its name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Split => "split",
        }
    }
}

/// `90s`, `2m`, `500ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (like 30s, 2m, 500ms)");
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("0s").is_err());
    }
}

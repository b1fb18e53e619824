//! Checks a register history file for linearizability.
//!
//! `cargo run --release -p shoal-sim --example check_history -- HISTORY [--budget STEPS]`
//!
//! The format is described in `shoal_sim::linearizability` (one event per line). Exits 0
//! when linearizable, 1 when not, 2 when the search budget ran out or the file is bad.

use shoal_sim::linearizability::{check, History, Verdict};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: check_history HISTORY [--budget STEPS]");
        std::process::exit(2);
    };
    let budget = args
        .iter()
        .position(|a| a == "--budget")
        .and_then(|i| args.get(i + 1))
        .and_then(|b| b.parse().ok())
        .unwrap_or(100_000_000);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let history = match History::parse(&text) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let start = std::time::Instant::now();
    let verdict = check(&history, budget);
    println!(
        "{} operations, {:?} in {:.1} s",
        history.operations().len(),
        verdict,
        start.elapsed().as_secs_f64()
    );
    std::process::exit(match verdict {
        Verdict::Linearizable => 0,
        Verdict::NotLinearizable { .. } => 1,
        Verdict::Unknown { .. } => 2,
    });
}

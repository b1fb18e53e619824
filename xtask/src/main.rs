//! Developer tasks for the Shoal workspace, run as `cargo xtask <task>`.
//!
//! - `cargo xtask ci`: what CI runs (`.ci/run`): format check, clippy with `-D warnings`,
//!   and the test suite.
//! - `cargo xtask bench [ARGS]`: the transport benchmark (`rpc_bench`) in release mode; extra
//!   arguments go to it (e.g. `--json`, `--seconds 5`).
//! - `cargo xtask codec-bench`: the criterion benches for the wire envelope.
//! - `cargo xtask load --url URL [--conns 64] [--duration 10s] [--op put|get]
//!   [--value-bytes 256] [--keys 1000]`: the HTTP load generator (shoal-node's `load`
//!   example) in release mode, against a running gateway; the last line is one JSON object.
//! - `cargo xtask cluster-test [--nodes 5] [--duration 60s] [--workload register]
//!   [--nemesis kill,pause] [--seed N] [--rate 500] [--keys 20] [--clients 10] [--out DIR]
//!   [--broken skip-read-barrier]`: builds `shoal` in release mode and runs the
//!   `shoal-cluster-test` program against real processes (exit status non-zero on a
//!   violation, when a fault kind asked for never happened, or when nothing was checked). With
//!   `--broken skip-read-barrier` it builds `shoal` with the `unsafe-test-switches` feature
//!   (in `target/broken`) and runs nodes broken on purpose: the run must fail.

#![warn(missing_docs)]

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    let result = match task.as_deref() {
        Some("ci") => run(Command::new("bash").arg(".ci/run")),
        Some("bench") => run(cargo()
            .args([
                "run",
                "--release",
                "-p",
                "shoal-transport",
                "--example",
                "rpc_bench",
                "--",
            ])
            .args(&rest)),
        Some("codec-bench") => run(cargo().args(["bench", "-p", "shoal", "--bench", "codec"])),
        Some("load") => run(cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "shoal-node",
                "--example",
                "load",
                "--",
            ])
            .args(&rest)),
        Some("cluster-test") => {
            // A run with nodes broken on purpose uses a build with the test switches, kept
            // apart so that the normal build stays as it is.
            let broken = rest
                .iter()
                .any(|a| a == "--broken" || a.starts_with("--broken="));
            let target = if broken {
                target_dir().join("broken")
            } else {
                target_dir()
            };
            let mut build = cargo();
            build.args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "shoal-node",
                "--bin",
                "shoal",
            ]);
            if broken {
                build
                    .args([
                        "--features",
                        "shoal-node/unsafe-test-switches",
                        "--target-dir",
                    ])
                    .arg(&target);
            }
            run(&mut build).and_then(|()| {
                let mut test = cargo();
                test.args([
                    "run",
                    "--release",
                    "--quiet",
                    "-p",
                    "shoal-cluster-test",
                    "--",
                ]);
                // The binary just built, unless the caller names another.
                if !rest
                    .iter()
                    .any(|a| a == "--shoal" || a.starts_with("--shoal="))
                {
                    test.arg("--shoal")
                        .arg(target.join("release").join("shoal"));
                }
                run(test.args(&rest))
            })
        }
        Some("help") | Some("--help") | Some("-h") | None => {
            print_help();
            return if task.is_none() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
        Some(other) => Err(format!("unknown task {other:?}; try `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    eprintln!(
        "usage: cargo xtask <task>\n\n\
         tasks:\n  \
         ci            format check, clippy -D warnings, tests (what CI runs)\n  \
         bench [ARGS]  transport benchmark rpc_bench in release mode (ARGS go to it)\n  \
         codec-bench   criterion benches for the wire envelope\n  \
         load ARGS     HTTP load generator against a gateway (--url URL [--conns 64]\n                \
         [--duration 10s] [--op put|get] [--value-bytes 256] [--keys 1000])\n  \
         cluster-test  real shoal processes under faults, history checked ([--nodes 5]\n                \
         [--duration 60s] [--nemesis kill,pause] [--seed N] [--rate 500] [--keys 20]\n                \
         [--clients 10] [--out DIR] [--shoal PATH] [--broken skip-read-barrier])"
    );
}

/// `cargo`, run from the workspace root whatever the current directory.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Where cargo puts builds: `CARGO_TARGET_DIR` if set (relative to the workspace), else
/// `target/` in the workspace.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

fn run(command: &mut Command) -> Result<(), String> {
    command.current_dir(workspace_root());
    let status = command
        .status()
        .map_err(|e| format!("could not start {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}

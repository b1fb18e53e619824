//! The nemesis: faults on a schedule drawn from the seed, one at a time, each healed before
//! the next, the kinds taking turns: kill -9 then restart, SIGSTOP then SIGCONT. Half the time the target is the
//! leader of the first user range, which is where faults hurt most.

use crate::cluster::Cluster;
use crate::options::Fault;
use hyper::Method;
use serde::Serialize;
use shoal_core::{DetRng, Rng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// One fault, as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    /// `kill` or `pause`.
    pub fault: &'static str,
    /// The node.
    pub node: u64,
    /// Whether the node led range 1 when it was hit.
    pub leader: bool,
    /// When it began, in milliseconds since the run began.
    pub start_ms: u64,
    /// When it was healed.
    pub end_ms: u64,
}

/// The fault under way, for the progress line.
pub type Current = Arc<std::sync::Mutex<Option<String>>>;

/// Runs faults from `kinds` until `until`, each lasting 2 to 5 s with 3 to 6 s between
/// them; returns what was done. `start` is the run's start, for the timestamps.
pub async fn run(
    cluster: Arc<Mutex<Cluster>>,
    kinds: Vec<Fault>,
    seed: u64,
    start: Instant,
    until: Instant,
    current: Current,
) -> Result<Vec<FaultEvent>, String> {
    let mut rng = DetRng::from_seed(seed ^ 0x6e65_6d65_7369_7321);
    let mut done = Vec::new();
    if kinds.is_empty() {
        return Ok(done);
    }
    let ms = |at: Instant| at.duration_since(start).as_millis() as u64;
    // The kinds take turns from a seeded starting point, so that a run long enough for as
    // many faults as kinds has each kind at least once.
    let first = rng.below(kinds.len() as u64) as usize;
    let mut turn = 0usize;
    loop {
        let gap = Duration::from_millis(3_000 + rng.below(3_000));
        let length = Duration::from_millis(2_000 + rng.below(3_000));
        if Instant::now() + gap + length >= until {
            return Ok(done);
        }
        tokio::time::sleep(gap).await;
        let fault = kinds[(first + turn) % kinds.len()];
        turn += 1;
        let aim_at_leader = rng.chance(0.5);
        let pick = rng.below(u64::MAX);
        let (target, leader) = {
            let cluster = cluster.lock().await;
            let count = cluster.nodes.len();
            let leader = if aim_at_leader {
                leader_of_first_range(&cluster).await
            } else {
                None
            };
            match leader.and_then(|id| cluster.nodes.iter().position(|n| n.id == id)) {
                Some(i) => (i, true),
                None => ((pick % count as u64) as usize, false),
            }
        };
        let began = Instant::now();
        let node = {
            let mut cluster = cluster.lock().await;
            match fault {
                Fault::Kill => cluster.kill(target)?,
                Fault::Pause => cluster.signal_pause(target, true)?,
            }
            cluster.nodes[target].id
        };
        *current.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("{} n{node}", fault.name()));
        tokio::time::sleep(length).await;
        {
            let mut cluster = cluster.lock().await;
            match fault {
                Fault::Kill => cluster.restart(target)?,
                Fault::Pause => cluster.signal_pause(target, false)?,
            }
        }
        *current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        done.push(FaultEvent {
            fault: fault.name(),
            node,
            leader,
            start_ms: ms(began),
            end_ms: ms(Instant::now()),
        });
    }
}

/// The leader of range 1, as some running node's gateway reports it.
async fn leader_of_first_range(cluster: &Cluster) -> Option<u64> {
    for node in cluster
        .nodes
        .iter()
        .filter(|n| n.is_running() && !n.is_paused())
    {
        let answer = node
            .gateway()
            .send(
                Method::GET,
                "/v1/ranges/1",
                &[],
                Vec::new(),
                Duration::from_secs(2),
            )
            .await;
        if let Some(answer) = answer.ok().filter(|a| a.status == 200) {
            let range: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
            if let Some(leader) = range["leader"].as_u64() {
                return Some(leader);
            }
        }
    }
    None
}

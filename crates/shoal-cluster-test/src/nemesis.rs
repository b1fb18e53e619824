//! The nemesis: faults on a schedule drawn from the seed, one at a time, each healed before
//! the next, the kinds taking turns: kill -9 then restart, SIGSTOP then SIGCONT, network
//! partitions (see [`crate::partition`]) then heal, split storms (see
//! [`crate::split_storm`]). Half the kills and pauses hit the leader of the range holding
//! a key the clients use (drawn from the seed), which is where faults hurt most. A fault
//! that cannot be carried out (a node's fault route does not answer) is recorded as not
//! having taken effect, and the run goes on.

use crate::cluster::Cluster;
use crate::options::Fault;
use crate::partition;
use serde::Serialize;
use shoal_core::{DetRng, Rng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// One fault, as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    /// `kill`, `pause`, `partition` or `split`.
    pub fault: &'static str,
    /// The nodes it hit: killed, paused, on a partition's small side (none for a split
    /// storm).
    pub nodes: Vec<u64>,
    /// Whether it was aimed at the leader of a client key's range.
    pub leader: bool,
    /// What exactly (the partition's sides and what it dropped, the splits done, or what
    /// went wrong).
    pub detail: String,
    /// Whether it took effect: a process was killed or stopped; a partition dropped
    /// messages and a node on one side found one on the other unreachable; a split was
    /// done.
    pub took_effect: bool,
    /// For a partition: whether it cut both ways (a majority from a minority, a node from
    /// everyone), not one node's traffic one way.
    pub clean_cut: bool,
    /// When it began, in milliseconds since the run began.
    pub start_ms: u64,
    /// When it was healed.
    pub end_ms: u64,
}

/// The fault under way, for the progress line.
pub type Current = Arc<std::sync::Mutex<Option<String>>>;

/// What the nemesis works with.
pub struct Plan {
    /// The kinds of fault.
    pub kinds: Vec<Fault>,
    /// The seed of the schedule.
    pub seed: u64,
    /// Keys the clients use: where split storms split, and whose ranges' leaders faults
    /// aim at.
    pub keys: Vec<String>,
    /// The run's start, for timestamps.
    pub start: Instant,
    /// When the last fault must be healed.
    pub until: Instant,
}

/// Runs faults until `plan.until`, each lasting 2 to 5 s with 3 to 6 s between them;
/// returns what was done.
pub async fn run(
    cluster: Arc<Mutex<Cluster>>,
    plan: Plan,
    current: Current,
) -> Result<Vec<FaultEvent>, String> {
    let Plan {
        kinds,
        seed,
        keys,
        start,
        until,
    } = plan;
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
    let mut partitions = 0;
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
        let aim_key = keys
            .get(rng.below(keys.len().max(1) as u64) as usize)
            .cloned()
            .unwrap_or_default();
        let (count, leader) = {
            let cluster = cluster.lock().await;
            let leader = leader_of(&cluster, aim_key.as_bytes())
                .await
                .and_then(|id| cluster.nodes.iter().position(|n| n.id == id));
            (cluster.nodes.len(), leader)
        };
        let (target, on_leader) = match leader.filter(|_| aim_at_leader) {
            Some(i) => (i, true),
            None => ((pick % count as u64) as usize, false),
        };
        let began = Instant::now();
        let set = |text: Option<String>| {
            *current.lock().unwrap_or_else(|p| p.into_inner()) = text;
        };
        let event = match fault {
            Fault::Kill | Fault::Pause => {
                let node = {
                    let mut cluster = cluster.lock().await;
                    match fault {
                        Fault::Kill => cluster.kill(target)?,
                        _ => cluster.signal_pause(target, true)?,
                    }
                    cluster.nodes[target].id
                };
                set(Some(format!("{} n{node}", fault.name())));
                tokio::time::sleep(length).await;
                {
                    let mut cluster = cluster.lock().await;
                    match fault {
                        Fault::Kill => cluster.restart(target)?,
                        _ => cluster.signal_pause(target, false)?,
                    }
                }
                FaultEvent {
                    fault: fault.name(),
                    nodes: vec![node],
                    leader: on_leader,
                    detail: String::new(),
                    took_effect: true,
                    clean_cut: false,
                    start_ms: 0,
                    end_ms: 0,
                }
            }
            Fault::Partition => {
                let cut = partition::plan(&mut rng, partitions, count, leader);
                partitions += 1;
                set(Some(format!("partition: {}", cut.detail)));
                let cluster = cluster.lock().await;
                let (outcome, hit) = partition(&cluster, &cut, length).await;
                FaultEvent {
                    fault: fault.name(),
                    nodes: hit,
                    leader: cut.detail.starts_with("isolate leader"),
                    detail: match &outcome {
                        Ok((dropped, cut_seen)) => format!(
                            "{}; {dropped} messages dropped; {}",
                            cut.detail,
                            if *cut_seen {
                                "the cut was seen over node RPC"
                            } else {
                                "the cut was NOT seen over node RPC"
                            }
                        ),
                        Err(e) => format!("{}; not carried out: {e}", cut.detail),
                    },
                    took_effect: matches!(outcome, Ok((dropped, true)) if dropped > 0),
                    clean_cut: cut.is_clean_cut(),
                    start_ms: 0,
                    end_ms: 0,
                }
            }
            Fault::Split => {
                set(Some("split storm".into()));
                let gateway = cluster.lock().await.nodes[target].gateway();
                let storm =
                    crate::split_storm::storm(&gateway, &keys, &mut rng, Instant::now() + length)
                        .await;
                FaultEvent {
                    fault: fault.name(),
                    nodes: Vec::new(),
                    leader: false,
                    detail: format!("{} of {} splits done", storm.done, storm.asked),
                    took_effect: storm.done > 0,
                    clean_cut: false,
                    start_ms: 0,
                    end_ms: 0,
                }
            }
        };
        set(None);
        done.push(FaultEvent {
            start_ms: ms(began),
            end_ms: ms(Instant::now()),
            ..event
        });
    }
}

/// Puts partition `cut` in place for `length`, checks that it cuts node RPC (a node on one
/// side finds a node of the other unreachable), and heals it, every rule cleared even
/// when something failed. Returns the messages dropped and whether the cut was seen, or
/// why it could not be put in place; and the ids of the nodes on the small side.
async fn partition(
    cluster: &Cluster,
    cut: &partition::Partition,
    length: Duration,
) -> (Result<(u64, bool), String>, Vec<u64>) {
    let hit = cut.hit.iter().map(|&i| cluster.nodes[i].id).collect();
    let began = Instant::now();
    let mut before = 0;
    let mut failed = None;
    for (i, rules) in cut.rules.iter().enumerate() {
        match cluster.set_faults(i, rules).await {
            Ok(dropped) => before += dropped,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // From a node that cuts one on the small side: is that node now unreachable?
    let seen = match (failed.is_none(), cut.hit.first()) {
        (true, Some(&b)) => match cut.rules[b].first() {
            Some(&(a, _)) => cluster.reaches(a, b).await == Some(false),
            None => false,
        },
        _ => false,
    };
    tokio::time::sleep(length.saturating_sub(began.elapsed())).await;
    let mut after = 0;
    for i in 0..cut.rules.len() {
        match cluster.clear_faults(i).await {
            Ok(dropped) => after += dropped,
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    let outcome = match failed {
        Some(e) => Err(e),
        None => Ok((after.saturating_sub(before), seen)),
    };
    (outcome, hit)
}

/// The leader of the range holding `key`, as some running node's gateway lists it.
async fn leader_of(cluster: &Cluster, key: &[u8]) -> Option<u64> {
    for node in cluster
        .nodes
        .iter()
        .filter(|n| n.is_running() && !n.is_paused())
    {
        if let Some(ranges) = crate::ranges::list(&node.gateway(), Duration::from_secs(2)).await {
            if let Some(leader) = ranges.iter().find(|r| r.holds(key)).and_then(|r| r.leader) {
                return Some(leader);
            }
        }
    }
    None
}

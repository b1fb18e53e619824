//! Handing a stopping node's leaderships to caught-up followers, so that its ranges keep
//! serving without waiting out an election timeout (the follower is told to campaign at
//! once, and wins the next term) (as CockroachDB's drain moves leases
//! before a node stops).

use super::node::Inner;
use shoal_consensus::ReplicaState;
use shoal_core::{NodeId, RangeId};
use shoal_membership::MemberState;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// How often the hand-over looks whether the ranges it handed over have a new leader.
const POLL: Duration = Duration::from_millis(10);

/// What [`super::Store::hand_over_leaderships`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandOver {
    /// The ranges this node led when it started.
    pub led: usize,
    /// Those now led by another node.
    pub moved: usize,
}

/// The follower to hand `range` to: a voter that membership holds alive and the leader
/// replicates to in step, the least behind first (the transfer brings it up to date before
/// it campaigns).
async fn successor(inner: &Inner, range: RangeId, alive: &HashSet<NodeId>) -> Option<NodeId> {
    let status = inner.groups.driver().status(range.into()).await.ok()?;
    status
        .replicas
        .iter()
        .filter(|r| !r.learner && r.state == ReplicaState::Replicate && alive.contains(&r.node))
        .min_by_key(|r| (r.lag_entries, r.lag))
        .map(|r| r.node)
}

/// Asks each range this node leads to hand its leadership over, then waits (at most
/// `timeout`) until another node leads each of them. A range with no caught-up follower,
/// or whose transfer is abandoned, stays led here; it elects a leader once this node is
/// gone.
pub(crate) async fn hand_over(inner: &Inner, timeout: Duration) -> HandOver {
    let deadline = Instant::now() + timeout;
    let led: Vec<RangeId> = inner
        .groups
        .descriptors()
        .iter()
        .map(|d| d.id)
        .filter(|&range| inner.leads(range))
        .collect();
    let alive: HashSet<NodeId> = match inner.topology.inner.members.members().await {
        Ok(members) => members
            .into_iter()
            .filter(|m| m.state == MemberState::Alive && m.id != inner.id)
            .map(|m| m.id)
            .collect(),
        Err(_) => HashSet::new(),
    };
    let mut moving = Vec::with_capacity(led.len());
    for &range in &led {
        let Some(target) = successor(inner, range, &alive).await else {
            continue;
        };
        match inner
            .groups
            .driver()
            .transfer_leader(range.into(), target)
            .await
        {
            Ok(()) => moving.push(range),
            Err(e) => tracing::debug!(%range, %target, error = %e, "leadership not handed over"),
        }
    }
    let is_moved = |range: &RangeId| matches!(inner.leader_of(*range), Some(l) if l != inner.id);
    while !moving.iter().all(is_moved) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let moved = led.iter().filter(|r| is_moved(r)).count();
    HandOver {
        led: led.len(),
        moved,
    }
}

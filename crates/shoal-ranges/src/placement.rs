//! Replica placement: a pure plan of replica additions, removals and leader moves.
//!
//! What placement knows of a node comes from the [`NodeInfo`] list: alive, dead, or, for a
//! node that hosts a replica but is missing from the list, **unknown**. A missing node is a
//! partial view, not a death: its replicas are neither removed nor replaced, they count
//! toward the replication factor, and it is never chosen to host or lead.
//!
//! In priority order, within a per-round budget that the plan never exceeds:
//!
//! 1. **Repair.** A replica on a dead node is replaced: a new replica is added on the best
//!    live node, then the dead one removed (removed alone when the range is full without it
//!    or no live node can take it). A range short of the replication factor gains a
//!    replica; one with more live replicas than the factor loses the most redundant (same
//!    zone as another, most loaded node). A range whose leader hint is missing, on a dead
//!    node or not a voter (or on the replica being removed) gets, in the same step, a live
//!    voter that leads the fewest ranges. One replica is added and one removed per range
//!    per round; the rest waits for the next round.
//! 2. **Balance.** While the most loaded live node (replicas per unit of capacity) would stay
//!    at least as loaded as the least loaded one after giving it a replica, one replica
//!    moves between them. Each move strictly narrows the spread, so a balanced cluster gets
//!    an empty plan (no churn), and a new node receives only its share. Leaders spread the
//!    same way among each range's voters.
//!
//! **Quorum.** Adding or removing a replica is a Raft configuration change, which commits
//! only with a majority of the range's voters, and a leader needs one too. So a range gets
//! no action at all unless a majority of its voters is known alive (unknown nodes do not
//! count), and a replica is removed only when the voters left without it (not counting the
//! replica added in the same step, a learner until it catches up) still have a known-live
//! majority. A range that has lost its majority needs recovery, not placement.
//!
//! "Best node" for a new replica: a zone the range does not use yet, then the lowest load,
//! then the lowest id (deterministic).
//!
//! **One step per range per round.** A range takes part in at most one step (its repair,
//! one balance move, or one leader move), and a step holds at most one addition, one leader
//! transfer and one removal, adjacent in the plan, so the executor never sees two
//! conflicting changes for one range. A step runs safest first (addition, then leader
//! transfer, then removal): when the budget cannot hold a whole repair step, the part that
//! fits is planned, and a balance move is planned whole or not at all.

use crate::table::RangeTable;
use shoal_core::{NodeId, RangeDescriptor, RangeId, ReplicaRole};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What placement knows of a node. A node missing from the list given to [`plan_placement`]
/// is unknown, not dead (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// The node.
    pub id: NodeId,
    /// Its failure domain (rack, zone): replicas of a range spread over zones first.
    pub zone: u32,
    /// Its relative capacity (> 0): a node of capacity 2 is given twice the replicas.
    pub capacity: f64,
    /// Whether membership considers it alive.
    pub alive: bool,
}

/// Limits of one placement round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementConfig {
    /// Replicas per range. Default 3.
    pub replication_factor: usize,
    /// The most actions one round proposes. Default 64.
    pub max_actions: usize,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            replication_factor: 3,
            max_actions: 64,
        }
    }
}

/// One proposed change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementAction {
    /// Add a replica of `range` on `node` (as a learner, promoted once caught up).
    AddReplica {
        /// The range.
        range: RangeId,
        /// The node to host it.
        node: NodeId,
    },
    /// Remove `range`'s replica on `node`.
    RemoveReplica {
        /// The range.
        range: RangeId,
        /// The node that hosts it.
        node: NodeId,
    },
    /// Move `range`'s leadership to the voter on `to`.
    TransferLeader {
        /// The range.
        range: RangeId,
        /// The new leader.
        to: NodeId,
    },
}

/// Planning state: loads as they will be once the planned actions are done.
struct Plan<'a> {
    nodes: BTreeMap<NodeId, &'a NodeInfo>,
    replicas: HashMap<NodeId, usize>,
    leaders: HashMap<NodeId, usize>,
    touched: HashSet<RangeId>,
    actions: Vec<PlacementAction>,
    budget: usize,
}

impl Plan<'_> {
    /// Whether `node` is in the list and alive.
    fn alive(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.alive)
    }

    /// Whether `node` is in the list and dead. A node missing from the list is neither
    /// alive nor dead: unknown.
    fn dead(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| !n.alive)
    }

    fn zone(&self, node: NodeId) -> Option<u32> {
        self.nodes.get(&node).map(|n| n.zone)
    }

    fn load(&self, node: NodeId, extra: isize) -> f64 {
        let count = self.replicas.get(&node).copied().unwrap_or(0) as isize + extra;
        let capacity = self.nodes.get(&node).map_or(1.0, |n| n.capacity.max(1e-9));
        count as f64 / capacity
    }

    /// How many more actions the budget allows.
    fn room(&self) -> usize {
        self.budget.saturating_sub(self.actions.len())
    }

    /// Whether more than half of `voters` is known alive: what a range needs to commit a
    /// configuration change or to have a leader. Unknown nodes do not count.
    fn live_majority(&self, voters: impl Iterator<Item = NodeId>) -> bool {
        let (mut total, mut live) = (0usize, 0usize);
        for v in voters {
            total += 1;
            live += usize::from(self.alive(v));
        }
        live * 2 > total
    }

    /// Adds `step`, every action for range `d` this round, and marks `d` touched. Refused
    /// (nothing added) when it is empty or the budget cannot hold all of it.
    fn commit(&mut self, d: &RangeDescriptor, step: &[PlacementAction]) -> bool {
        if step.is_empty() || step.len() > self.room() {
            return false;
        }
        for &action in step {
            match action {
                PlacementAction::AddReplica { node, .. } => {
                    *self.replicas.entry(node).or_default() += 1;
                }
                PlacementAction::RemoveReplica { node, .. } => {
                    let c = self.replicas.entry(node).or_default();
                    *c = c.saturating_sub(1);
                }
                PlacementAction::TransferLeader { to, .. } => {
                    if let Some(from) = d.leader_hint {
                        if let Some(c) = self.leaders.get_mut(&from) {
                            *c = c.saturating_sub(1);
                        }
                    }
                    *self.leaders.entry(to).or_default() += 1;
                }
            }
            self.actions.push(action);
        }
        self.touched.insert(d.id);
        true
    }

    /// The best live node for a new replica of a range now on `current`.
    fn best_new_home(&self, current: &[NodeId]) -> Option<NodeId> {
        let used: HashSet<u32> = current.iter().filter_map(|&n| self.zone(n)).collect();
        self.nodes
            .values()
            .filter(|n| n.alive && !current.contains(&n.id))
            .min_by(|a, b| {
                let key = |n: &NodeInfo| (used.contains(&n.zone), self.load(n.id, 0));
                let (za, la) = key(a);
                let (zb, lb) = key(b);
                za.cmp(&zb).then(la.total_cmp(&lb)).then(a.id.cmp(&b.id))
            })
            .map(|n| n.id)
    }

    /// The replica whose removal costs least: one sharing a zone with another replica,
    /// then the most loaded node.
    fn most_redundant(&self, current: &[NodeId]) -> Option<NodeId> {
        current.iter().copied().max_by(|&a, &b| {
            let shared = |n: NodeId| {
                current
                    .iter()
                    .filter(|&&m| m != n && self.zone(m) == self.zone(n))
                    .count()
                    > 0
            };
            shared(a)
                .cmp(&shared(b))
                .then(self.load(a, 0).total_cmp(&self.load(b, 0)))
                .then(b.cmp(&a))
        })
    }

    /// The live voter of `d` (other than `except`) leading the fewest ranges.
    fn least_leading_voter(&self, d: &RangeDescriptor, except: Option<NodeId>) -> Option<NodeId> {
        d.voters()
            .filter(|&n| self.alive(n) && Some(n) != except)
            .min_by_key(|&n| (self.leaders.get(&n).copied().unwrap_or(0), n))
    }
}

/// The actions that repair and balance `table` over `nodes`; see the module docs. Nodes of
/// `table` missing from `nodes` are unknown: none of their replicas is removed.
pub fn plan_placement(
    table: &RangeTable,
    nodes: &[NodeInfo],
    config: &PlacementConfig,
) -> Vec<PlacementAction> {
    let mut plan = Plan {
        nodes: nodes.iter().map(|n| (n.id, n)).collect(),
        replicas: HashMap::new(),
        leaders: HashMap::new(),
        touched: HashSet::new(),
        actions: Vec::new(),
        budget: config.max_actions,
    };
    for d in table.descriptors() {
        for r in &d.replicas {
            *plan.replicas.entry(r.node).or_default() += 1;
        }
        if let Some(l) = d.leader_hint {
            *plan.leaders.entry(l).or_default() += 1;
        }
    }
    for d in table.descriptors() {
        if plan.room() == 0 {
            break;
        }
        let mut step = repair(&plan, d, config.replication_factor);
        // A repair step runs safest first, so the part that fits is a step of its own.
        step.truncate(plan.room());
        plan.commit(d, &step);
    }
    balance_replicas(&mut plan, table);
    balance_leaders(&mut plan, table);
    plan.actions
}

/// The repair step of `d`: at most an addition, then a leader transfer, then a removal
/// (see the module docs). Empty when the range is healthy, or when its voters lack a
/// known-live majority, since Raft could not commit the change.
fn repair(plan: &Plan<'_>, d: &RangeDescriptor, factor: usize) -> Vec<PlacementAction> {
    let mut step = Vec::new();
    if !plan.live_majority(d.voters()) {
        return step;
    }
    // Every replica not known dead may be serving; an unknown one counts toward the factor,
    // so a partial view plans neither its removal nor its replacement.
    let serving: Vec<NodeId> = d
        .replicas
        .iter()
        .map(|r| r.node)
        .filter(|&n| !plan.dead(n))
        .collect();
    let live: Vec<NodeId> = serving.iter().copied().filter(|&n| plan.alive(n)).collect();
    if serving.len() < factor {
        if let Some(node) = plan.best_new_home(&serving) {
            step.push(PlacementAction::AddReplica { range: d.id, node });
        }
    }
    // One removal: a dead replica (a voter first, as it weighs on the quorum), else the
    // most redundant live one of a range over the factor.
    let dead = d
        .replicas
        .iter()
        .filter(|r| plan.dead(r.node))
        .min_by_key(|r| r.role != ReplicaRole::Voter)
        .map(|r| r.node);
    let remove = if dead.is_some() {
        dead
    } else if live.len() > factor {
        plan.most_redundant(&live)
    } else {
        None
    };
    // The voters left must still have a live majority; the replica just added does not
    // count, as it is a learner until it catches up.
    let remove = remove.filter(|&n| plan.live_majority(d.voters().filter(|&v| v != n)));
    let leader_ok = d.leader_hint.is_some_and(|l| {
        !plan.dead(l) && d.role_of(l) == Some(ReplicaRole::Voter) && Some(l) != remove
    });
    if !leader_ok {
        if let Some(to) = plan.least_leading_voter(d, remove) {
            step.push(PlacementAction::TransferLeader { range: d.id, to });
        }
    }
    if let Some(node) = remove {
        step.push(PlacementAction::RemoveReplica { range: d.id, node });
    }
    step
}

/// Moves replicas from the most to the least loaded live node while that narrows the spread.
fn balance_replicas(plan: &mut Plan<'_>, table: &RangeTable) {
    loop {
        let live: Vec<NodeId> = plan
            .nodes
            .values()
            .filter(|n| n.alive)
            .map(|n| n.id)
            .collect();
        let by_load =
            |a: &NodeId, b: &NodeId| plan.load(*a, 0).total_cmp(&plan.load(*b, 0)).then(a.cmp(b));
        let from = live.iter().copied().max_by(|a, b| by_load(a, b));
        let to = live.iter().copied().min_by(|a, b| by_load(a, b));
        let (Some(from), Some(to)) = (from, to) else {
            return;
        };
        // Only a move after which `from` is still at least as loaded as `to` narrows the spread.
        if from == to || plan.load(from, -1) < plan.load(to, 1) {
            return;
        }
        let candidate = table.descriptors().find(|d| {
            if plan.touched.contains(&d.id) || d.role_of(from).is_none() || d.role_of(to).is_some()
            {
                return false;
            }
            // A move is a configuration change: the range needs a live majority now, and
            // still once `from` has left (before `to` is promoted).
            if !plan.live_majority(d.voters())
                || !plan.live_majority(d.voters().filter(|&v| v != from))
            {
                return false;
            }
            let others: Vec<u32> = d
                .replicas
                .iter()
                .filter(|r| r.node != from)
                .filter_map(|r| plan.zone(r.node))
                .collect();
            // A leader is moved only with a voter to hand its leadership to.
            if d.leader_hint == Some(from) && plan.least_leading_voter(d, Some(from)).is_none() {
                return false;
            }
            let to_zone = plan.zone(to);
            // Never make zone spread worse.
            to_zone == plan.zone(from) || !to_zone.is_some_and(|z| others.contains(&z))
        });
        let Some(d) = candidate else {
            return;
        };
        // In the module's order: addition, then leader transfer, then removal.
        let mut step = Vec::with_capacity(3);
        step.push(PlacementAction::AddReplica {
            range: d.id,
            node: to,
        });
        if d.leader_hint == Some(from) {
            if let Some(next) = plan.least_leading_voter(d, Some(from)) {
                step.push(PlacementAction::TransferLeader {
                    range: d.id,
                    to: next,
                });
            }
        }
        step.push(PlacementAction::RemoveReplica {
            range: d.id,
            node: from,
        });
        // The whole move or none; a budget too small for it ends balancing.
        if !plan.commit(d, &step) {
            return;
        }
    }
}

/// Moves leadership from the node leading the most ranges to a voter leading at least two
/// fewer, while the budget lasts.
fn balance_leaders(plan: &mut Plan<'_>, table: &RangeTable) {
    while plan.room() > 0 {
        let mut moved = false;
        for d in table.descriptors() {
            let Some(leader) = d.leader_hint else {
                continue;
            };
            if plan.touched.contains(&d.id)
                || !plan.alive(leader)
                || !plan.live_majority(d.voters())
            {
                continue;
            }
            let count = |n: NodeId| plan.leaders.get(&n).copied().unwrap_or(0);
            let Some(to) = plan.least_leading_voter(d, Some(leader)) else {
                continue;
            };
            if count(leader) >= count(to) + 2 {
                moved = plan.commit(d, &[PlacementAction::TransferLeader { range: d.id, to }]);
                break;
            }
        }
        if !moved {
            return;
        }
    }
}

//! Replica placement: a pure plan of replica additions, removals and leader moves.
//!
//! In priority order, within a per-round budget:
//!
//! 1. **Repair.** A replica on a dead or unknown node is replaced: a new replica is added on
//!    the best live node, then the dead one removed. A range short of the replication factor
//!    gains replicas; one over it loses the most redundant (same zone as another, most
//!    loaded node).
//! 2. **Leaders.** A range whose leader is unknown, dead or not a voter gets a live voter
//!    that leads the fewest ranges.
//! 3. **Balance.** While the most loaded live node (replicas per unit of capacity) would stay
//!    at least as loaded as the least loaded one after giving it a replica, one replica
//!    moves between them. Each move strictly narrows the spread, so a balanced cluster gets
//!    an empty plan (no churn), and a new node receives only its share. Leaders spread the
//!    same way among each range's voters.
//!
//! "Best node" for a new replica: a zone the range does not use yet, then the lowest load,
//! then the lowest id (deterministic). Each range is touched at most once per round, so the
//! executor never sees two conflicting changes for one range.

use crate::table::RangeTable;
use shoal_core::{NodeId, RangeDescriptor, RangeId};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What placement knows of a node.
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
    fn alive(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.alive)
    }

    fn zone(&self, node: NodeId) -> Option<u32> {
        self.nodes.get(&node).map(|n| n.zone)
    }

    fn load(&self, node: NodeId, extra: isize) -> f64 {
        let count = self.replicas.get(&node).copied().unwrap_or(0) as isize + extra;
        let capacity = self.nodes.get(&node).map_or(1.0, |n| n.capacity.max(1e-9));
        count as f64 / capacity
    }

    fn room(&self, wanted: usize) -> bool {
        self.actions.len() + wanted <= self.budget
    }

    fn push(&mut self, action: PlacementAction) {
        match action {
            PlacementAction::AddReplica { node, .. } => {
                *self.replicas.entry(node).or_default() += 1;
            }
            PlacementAction::RemoveReplica { node, .. } => {
                let c = self.replicas.entry(node).or_default();
                *c = c.saturating_sub(1);
            }
            PlacementAction::TransferLeader { .. } => {}
        }
        self.actions.push(action);
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

    fn move_leader(&mut self, range: RangeId, from: Option<NodeId>, to: NodeId) {
        if let Some(from) = from {
            if let Some(c) = self.leaders.get_mut(&from) {
                *c = c.saturating_sub(1);
            }
        }
        *self.leaders.entry(to).or_default() += 1;
        self.actions
            .push(PlacementAction::TransferLeader { range, to });
    }
}

/// The actions that repair and balance `table` over `nodes`; see the module docs.
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
        repair(&mut plan, d, config.replication_factor);
    }
    for d in table.descriptors() {
        if !plan.room(1) {
            break;
        }
        let leader_ok = d
            .leader_hint
            .is_some_and(|l| plan.alive(l) && d.role_of(l) == Some(shoal_core::ReplicaRole::Voter));
        if !leader_ok {
            if let Some(to) = plan.least_leading_voter(d, None) {
                plan.move_leader(d.id, d.leader_hint, to);
            }
        }
    }
    balance_replicas(&mut plan, table);
    balance_leaders(&mut plan, table);
    plan.actions
}

/// Replaces dead replicas and fixes the replica count of `d`.
fn repair(plan: &mut Plan<'_>, d: &RangeDescriptor, factor: usize) {
    let mut live: Vec<NodeId> = d
        .replicas
        .iter()
        .map(|r| r.node)
        .filter(|&n| plan.alive(n))
        .collect();
    let dead: Vec<NodeId> = d
        .replicas
        .iter()
        .map(|r| r.node)
        .filter(|&n| !plan.alive(n))
        .collect();
    let mut changed = false;
    while live.len() < factor && plan.room(1) {
        let Some(node) = plan.best_new_home(&live) else {
            break;
        };
        plan.push(PlacementAction::AddReplica { range: d.id, node });
        live.push(node);
        changed = true;
    }
    for node in dead {
        if !plan.room(1) {
            break;
        }
        plan.push(PlacementAction::RemoveReplica { range: d.id, node });
        changed = true;
    }
    while live.len() > factor && plan.room(1) {
        let Some(node) = plan.most_redundant(&live) else {
            break;
        };
        plan.push(PlacementAction::RemoveReplica { range: d.id, node });
        live.retain(|&n| n != node);
        changed = true;
    }
    if changed {
        plan.touched.insert(d.id);
    }
}

/// Moves replicas from the most to the least loaded live node while that narrows the spread.
fn balance_replicas(plan: &mut Plan<'_>, table: &RangeTable) {
    while plan.room(2) {
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
            let others: Vec<u32> = d
                .replicas
                .iter()
                .filter(|r| r.node != from)
                .filter_map(|r| plan.zone(r.node))
                .collect();
            let to_zone = plan.zone(to);
            // Never make zone spread worse.
            to_zone == plan.zone(from) || !to_zone.is_some_and(|z| others.contains(&z))
        });
        let Some(d) = candidate else {
            return;
        };
        plan.touched.insert(d.id);
        if d.leader_hint == Some(from) {
            if let Some(next) = plan.least_leading_voter(d, Some(from)) {
                plan.move_leader(d.id, Some(from), next);
            }
        }
        plan.push(PlacementAction::AddReplica {
            range: d.id,
            node: to,
        });
        plan.push(PlacementAction::RemoveReplica {
            range: d.id,
            node: from,
        });
    }
}

/// Moves leadership from the node leading the most ranges to a voter leading at least two
/// fewer, while the budget lasts.
fn balance_leaders(plan: &mut Plan<'_>, table: &RangeTable) {
    while plan.room(1) {
        let mut moved = false;
        for d in table.descriptors() {
            let Some(leader) = d.leader_hint else {
                continue;
            };
            if plan.touched.contains(&d.id) || !plan.alive(leader) {
                continue;
            }
            let count = |n: NodeId| plan.leaders.get(&n).copied().unwrap_or(0);
            let Some(to) = plan.least_leading_voter(d, Some(leader)) else {
                continue;
            };
            if count(leader) >= count(to) + 2 {
                plan.touched.insert(d.id);
                plan.move_leader(d.id, Some(leader), to);
                moved = true;
                break;
            }
        }
        if !moved {
            return;
        }
    }
}

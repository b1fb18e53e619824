//! The simulator: virtual time, an event queue, the network model, and node faults.

use crate::clock::SimClock;
use crate::network::{Fate, LinkConfig, NetworkModel};
use crate::node::{Node, Outputs};
use crate::trace::{Trace, TraceKind};
use shoal_core::{DetRng, Instant, NodeId};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How a simulation is set up.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How every link behaves unless overridden through [`Simulation::network_mut`].
    pub link: LinkConfig,
    /// What the virtual wall clock reads at time zero, in milliseconds since the Unix epoch.
    pub wall_start_ms: u64,
    /// Keep every event as a readable line (costly; for debugging one seed).
    pub full_trace: bool,
    /// A run stops with an error after this many steps, so a livelock cannot hang a test.
    pub max_steps: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            link: LinkConfig::default(),
            // 2026-01-01T00:00:00Z: realistic epoch milliseconds for hybrid logical clocks.
            wall_start_ms: 1_767_225_600_000,
            full_trace: false,
            max_steps: 100_000_000,
        }
    }
}

/// Whether a node is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Running: receives messages and timers.
    Up,
    /// Frozen (like SIGSTOP): messages and timers for it wait until it resumes.
    Paused,
    /// Down: messages to it are lost, its pending timers are discarded.
    Crashed,
}

/// A run that went wrong: an invariant failed or the step limit was hit. Its `Display` says
/// how to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimError {
    /// The run's seed.
    pub seed: u64,
    /// Virtual time of the failure.
    pub at: Instant,
    /// Steps taken before the failure.
    pub step: u64,
    /// What failed.
    pub message: String,
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation failed at {:?} (step {}): {}; replay with {}={}",
            self.at,
            self.step,
            self.message,
            crate::seed::SEED_ENV,
            self.seed
        )
    }
}

impl std::error::Error for SimError {}

/// Counters over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Steps taken (events processed).
    pub steps: u64,
    /// Messages delivered to a running node.
    pub delivered: u64,
    /// Messages lost on a link or blocked by a partition.
    pub dropped: u64,
    /// Messages that arrived at a crashed node.
    pub dropped_at_crashed: u64,
    /// Extra copies delivered by link duplication.
    pub duplicated: u64,
    /// Timers fired.
    pub timers_fired: u64,
    /// Timers discarded because their node crashed after setting them.
    pub timers_discarded: u64,
}

enum Event<N: Node> {
    Deliver {
        from: NodeId,
        to: NodeId,
        message: N::Message,
    },
    Timer {
        node: NodeId,
        epoch: u64,
        timer: N::Timer,
    },
}

impl<N: Node> Event<N> {
    fn target(&self) -> NodeId {
        match self {
            Event::Deliver { to, .. } => *to,
            Event::Timer { node, .. } => *node,
        }
    }
}

struct Scheduled<N: Node> {
    at: Instant,
    seq: u64,
    event: Event<N>,
}

impl<N: Node> PartialEq for Scheduled<N> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<N: Node> Eq for Scheduled<N> {}
impl<N: Node> PartialOrd for Scheduled<N> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<N: Node> Ord for Scheduled<N> {
    /// Reversed, so the max-heap pops the earliest event; ties go to the one scheduled first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Slot<N: Node> {
    node: N,
    status: NodeStatus,
    /// Bumped on every crash; timers from an earlier epoch are discarded.
    epoch: u64,
    /// Events that arrived while paused, in arrival order.
    held: Vec<Event<N>>,
}

/// A deterministic simulation of a cluster of `N` nodes.
///
/// All randomness comes from the seed, all time is virtual, and events at the same instant
/// are processed in the order they were scheduled, so one seed always produces one trace.
pub struct Simulation<N: Node> {
    seed: u64,
    config: SimConfig,
    now: Instant,
    clock: Arc<SimClock>,
    /// Drives the network model only, so tests drawing from [`Simulation::rng`] do not shift
    /// the network's choices.
    net_rng: DetRng,
    test_rng: DetRng,
    node_rng: DetRng,
    network: NetworkModel<NodeId>,
    nodes: BTreeMap<NodeId, Slot<N>>,
    queue: BinaryHeap<Scheduled<N>>,
    next_seq: u64,
    trace: Trace,
    stats: SimStats,
}

impl<N: Node> Simulation<N> {
    /// An empty simulation seeded with `seed`.
    pub fn new(seed: u64, config: SimConfig) -> Self {
        let mut root = DetRng::from_seed(seed);
        tracing::debug!(seed, "shoal-sim: new simulation");
        Self {
            seed,
            now: Instant::ZERO,
            clock: Arc::new(SimClock::new(config.wall_start_ms)),
            net_rng: root.fork(),
            test_rng: root.fork(),
            node_rng: root.fork(),
            network: NetworkModel::new(config.link),
            nodes: BTreeMap::new(),
            queue: BinaryHeap::new(),
            next_seq: 0,
            trace: Trace::new(config.full_trace),
            stats: SimStats::default(),
            config,
        }
    }

    /// The seed this run replays from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The virtual clock, for components that hold a [`shoal_core::Clock`].
    pub fn clock(&self) -> Arc<SimClock> {
        Arc::clone(&self.clock)
    }

    /// Randomness for the test's own choices (which node to crash, what to propose). A stream
    /// separate from the network's.
    pub fn rng(&mut self) -> &mut DetRng {
        &mut self.test_rng
    }

    /// A fresh generator derived from the seed, to give a new node its own randomness.
    pub fn fork_rng(&mut self) -> DetRng {
        self.node_rng.fork()
    }

    /// The network model: change links, partition, heal.
    pub fn network_mut(&mut self) -> &mut NetworkModel<NodeId> {
        &mut self.network
    }

    /// The trace so far.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// Adds a node and starts it now.
    ///
    /// # Panics
    /// If `id` is already in the simulation (a test bug, not an input).
    pub fn add_node(&mut self, id: NodeId, node: N) {
        let previous = self.nodes.insert(
            id,
            Slot {
                node,
                status: NodeStatus::Up,
                epoch: 0,
                held: Vec::new(),
            },
        );
        assert!(
            previous.is_none(),
            "node {id} added to the simulation twice"
        );
        self.start(id);
    }

    /// The node with `id`.
    pub fn node(&self, id: NodeId) -> Option<&N> {
        self.nodes.get(&id).map(|s| &s.node)
    }

    /// The node with `id`, mutably (to inspect or seed its state; use [`Simulation::act`] to
    /// make it produce outputs).
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut N> {
        self.nodes.get_mut(&id).map(|s| &mut s.node)
    }

    /// Every node with its id and status, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &N, NodeStatus)> + '_ {
        self.nodes.iter().map(|(id, s)| (*id, &s.node, s.status))
    }

    /// The ids of every node, in order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Whether `id` is up, paused or crashed.
    pub fn status(&self, id: NodeId) -> Option<NodeStatus> {
        self.nodes.get(&id).map(|s| s.status)
    }

    /// Runs `f` on a running node from outside (a client request, an operator command), and
    /// schedules what it outputs. Returns `None`, without calling `f`, if the node is missing or
    /// not up.
    pub fn act<R>(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut N, Instant, &mut Outputs<N::Message, N::Timer>) -> R,
    ) -> Option<R> {
        let now = self.now;
        let slot = self.nodes.get_mut(&id)?;
        if slot.status != NodeStatus::Up {
            return None;
        }
        let mut out = Outputs::default();
        let result = f(&mut slot.node, now, &mut out);
        self.trace
            .record(now, TraceKind::Act, id, None, String::new);
        self.schedule_outputs(id, out);
        Some(result)
    }

    /// Crashes a node: it loses its volatile state (see [`Node::on_crash`]), its timers are
    /// discarded and messages to it are lost until it restarts.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(slot) = self.nodes.get_mut(&id) {
            if slot.status == NodeStatus::Crashed {
                return;
            }
            slot.status = NodeStatus::Crashed;
            slot.epoch += 1;
            slot.held.clear();
            slot.node.on_crash();
            self.trace
                .record(self.now, TraceKind::Crash, id, None, String::new);
        }
    }

    /// Restarts a crashed node (it runs [`Node::on_start`] again). No effect on a running or
    /// paused node.
    pub fn restart(&mut self, id: NodeId) {
        if self.status(id) == Some(NodeStatus::Crashed) {
            if let Some(slot) = self.nodes.get_mut(&id) {
                slot.status = NodeStatus::Up;
            }
            self.start(id);
        }
    }

    /// Freezes a running node: messages and timers for it wait until [`Simulation::resume`].
    pub fn pause(&mut self, id: NodeId) {
        if let Some(slot) = self.nodes.get_mut(&id) {
            if slot.status == NodeStatus::Up {
                slot.status = NodeStatus::Paused;
                self.trace
                    .record(self.now, TraceKind::Pause, id, None, String::new);
            }
        }
    }

    /// Unfreezes a paused node; whatever arrived meanwhile is handled now, in arrival order.
    pub fn resume(&mut self, id: NodeId) {
        let Some(slot) = self.nodes.get_mut(&id) else {
            return;
        };
        if slot.status != NodeStatus::Paused {
            return;
        }
        slot.status = NodeStatus::Up;
        let held = std::mem::take(&mut slot.held);
        self.trace
            .record(self.now, TraceKind::Resume, id, None, String::new);
        for event in held {
            self.push(self.now, event);
        }
    }

    /// Processes the next event, advancing time to it. Returns `false` when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(Scheduled { at, event, .. }) = self.queue.pop() else {
            return false;
        };
        self.advance_to(at);
        self.stats.steps += 1;
        let target = event.target();
        let Some(slot) = self.nodes.get_mut(&target) else {
            return true;
        };
        match slot.status {
            NodeStatus::Paused => {
                slot.held.push(event);
                return true;
            }
            NodeStatus::Crashed => {
                match event {
                    Event::Deliver { from, to, .. } => {
                        self.stats.dropped_at_crashed += 1;
                        self.trace.record(
                            at,
                            TraceKind::DropAtCrashed,
                            to,
                            Some(from),
                            String::new,
                        );
                    }
                    Event::Timer { .. } => self.stats.timers_discarded += 1,
                }
                return true;
            }
            NodeStatus::Up => {}
        }
        let mut out = Outputs::default();
        match event {
            Event::Deliver { from, to, message } => {
                self.stats.delivered += 1;
                let detail = || format!("{message:?}");
                self.trace
                    .record(at, TraceKind::Deliver, to, Some(from), detail);
                slot.node.on_message(at, from, message, &mut out);
            }
            Event::Timer { node, epoch, timer } => {
                if epoch != slot.epoch {
                    self.stats.timers_discarded += 1;
                    return true;
                }
                self.stats.timers_fired += 1;
                let detail = || format!("{timer:?}");
                self.trace.record(at, TraceKind::Timer, node, None, detail);
                slot.node.on_timer(at, timer, &mut out);
            }
        }
        self.schedule_outputs(target, out);
        true
    }

    /// Runs until virtual time `deadline` (events after it stay queued), calling `invariant`
    /// after every step. Stops at the first violation, or when the step limit is reached.
    pub fn run_until(
        &mut self,
        deadline: Instant,
        mut invariant: impl FnMut(&Self) -> Result<(), String>,
    ) -> Result<(), SimError> {
        while self.queue.peek().is_some_and(|next| next.at <= deadline) {
            if self.stats.steps >= self.config.max_steps {
                return Err(self.error(format!(
                    "step limit of {} reached (a livelock?)",
                    self.config.max_steps
                )));
            }
            self.step();
            invariant(self).map_err(|message| self.error(message))?;
        }
        self.advance_to(deadline);
        Ok(())
    }

    /// Runs for `duration` of virtual time from now; see [`Simulation::run_until`].
    pub fn run_for(
        &mut self,
        duration: Duration,
        invariant: impl FnMut(&Self) -> Result<(), String>,
    ) -> Result<(), SimError> {
        self.run_until(self.now + duration, invariant)
    }

    /// Builds a [`SimError`] at the current time, e.g. for a check made between runs.
    pub fn error(&self, message: impl Into<String>) -> SimError {
        SimError {
            seed: self.seed,
            at: self.now,
            step: self.stats.steps,
            message: message.into(),
        }
    }

    /// Events waiting in the queue.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    fn advance_to(&mut self, at: Instant) {
        if at > self.now {
            self.now = at;
            self.clock.set(at);
        }
    }

    fn start(&mut self, id: NodeId) {
        let now = self.now;
        let Some(slot) = self.nodes.get_mut(&id) else {
            return;
        };
        let mut out = Outputs::default();
        slot.node.on_start(now, &mut out);
        self.trace
            .record(now, TraceKind::Start, id, None, String::new);
        self.schedule_outputs(id, out);
    }

    fn schedule_outputs(&mut self, from: NodeId, out: Outputs<N::Message, N::Timer>) {
        let epoch = self.nodes.get(&from).map_or(0, |s| s.epoch);
        for (after, timer) in out.timers {
            let at = self.now + after;
            self.push(
                at,
                Event::Timer {
                    node: from,
                    epoch,
                    timer,
                },
            );
        }
        for (to, message) in out.sends {
            match self.network.fate(from, to, &mut self.net_rng) {
                Fate::Dropped(reason) => {
                    self.stats.dropped += 1;
                    let detail = || format!("{reason:?} {message:?}");
                    self.trace
                        .record(self.now, TraceKind::Drop, to, Some(from), detail);
                }
                Fate::Delivered(delay) => {
                    self.push(self.now + delay, Event::Deliver { from, to, message });
                }
                Fate::Duplicated(first, second) => {
                    self.stats.duplicated += 1;
                    let copy = message.clone();
                    self.push(self.now + first, Event::Deliver { from, to, message });
                    let event = Event::Deliver {
                        from,
                        to,
                        message: copy,
                    };
                    self.push(self.now + second, event);
                }
            }
        }
    }

    fn push(&mut self, at: Instant, event: Event<N>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Scheduled { at, seq, event });
    }
}

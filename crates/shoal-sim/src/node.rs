//! The contract between the simulator and a protocol core.

use shoal_core::{Instant, NodeId};
use std::fmt::Debug;
use std::time::Duration;

/// A sans-IO protocol state machine the simulator can drive.
///
/// Every entry point receives the current virtual time and an [`Outputs`] to fill with
/// messages to send and timers to set. A node never sleeps, spawns or reads a clock. Timers
/// cannot be cancelled: a node that no longer wants one ignores it when it fires (tag timers
/// with a generation or token for that).
pub trait Node {
    /// What nodes send each other.
    type Message: Clone + Debug;
    /// What a timer carries back when it fires.
    type Timer: Clone + Debug;

    /// The node starts, for the first time or after a crash.
    fn on_start(&mut self, now: Instant, out: &mut Outputs<Self::Message, Self::Timer>);

    /// A message from `from` arrives.
    fn on_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: Self::Message,
        out: &mut Outputs<Self::Message, Self::Timer>,
    );

    /// A timer set earlier fires.
    fn on_timer(
        &mut self,
        now: Instant,
        timer: Self::Timer,
        out: &mut Outputs<Self::Message, Self::Timer>,
    );

    /// The node crashes: forget everything a real process would lose, keep what it would find
    /// on disk. The default keeps everything, which suits nodes with no volatile state.
    fn on_crash(&mut self) {}
}

/// Effects requested by a node during one call: messages to send and timers to set.
#[derive(Debug)]
pub struct Outputs<M, T> {
    pub(crate) sends: Vec<(NodeId, M)>,
    pub(crate) timers: Vec<(Duration, T)>,
}

impl<M, T> Default for Outputs<M, T> {
    fn default() -> Self {
        Self {
            sends: Vec::new(),
            timers: Vec::new(),
        }
    }
}

impl<M, T> Outputs<M, T> {
    /// Sends `message` to `to` over the simulated network (which may drop, delay or
    /// duplicate it).
    pub fn send(&mut self, to: NodeId, message: M) {
        self.sends.push((to, message));
    }

    /// Fires `timer` after `after` of virtual time, unless the node crashes first.
    pub fn set_timer(&mut self, after: Duration, timer: T) {
        self.timers.push((after, timer));
    }

    /// The messages requested so far.
    pub fn sends(&self) -> &[(NodeId, M)] {
        &self.sends
    }

    /// The timers requested so far.
    pub fn timers(&self) -> &[(Duration, T)] {
        &self.timers
    }

    /// Whether nothing was requested.
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.timers.is_empty()
    }
}

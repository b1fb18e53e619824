//! A record of what a simulation did, for replay checks and debugging.
//!
//! Every event feeds a 64-bit digest (cheap, always on), so two runs can be compared in O(1)
//! memory. With full tracing on, each event is also kept as a line that includes the message
//! or timer, which is what you read when a seed fails.

use shoal_core::{Instant, NodeId};
use std::fmt;

/// What kind of step happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TraceKind {
    /// A node started or restarted.
    Start = 1,
    /// A message reached a node.
    Deliver = 2,
    /// A timer fired.
    Timer = 3,
    /// A message was lost or blocked by a partition.
    Drop = 4,
    /// A message arrived at a crashed node.
    DropAtCrashed = 5,
    /// A node crashed.
    Crash = 6,
    /// A node was paused.
    Pause = 7,
    /// A node was resumed.
    Resume = 8,
    /// A test acted on a node from outside.
    Act = 9,
}

/// The trace of one run.
#[derive(Clone, Debug)]
pub struct Trace {
    digest: u64,
    events: u64,
    lines: Option<Vec<String>>,
}

impl Trace {
    pub(crate) fn new(keep_lines: bool) -> Self {
        Self {
            digest: 0xcbf2_9ce4_8422_2325,
            events: 0,
            lines: keep_lines.then(Vec::new),
        }
    }

    /// Records one event. `detail` is only called when lines are kept.
    pub(crate) fn record(
        &mut self,
        at: Instant,
        kind: TraceKind,
        node: NodeId,
        peer: Option<NodeId>,
        detail: impl FnOnce() -> String,
    ) {
        self.events += 1;
        for word in [
            at.as_nanos(),
            kind as u64,
            node.get(),
            peer.map_or(u64::MAX, NodeId::get),
        ] {
            self.digest = mix(self.digest ^ word);
        }
        if let Some(lines) = &mut self.lines {
            let peer = peer.map(|p| format!(" {p}")).unwrap_or_default();
            lines.push(format!("{at:?} {kind:?} {node}{peer} {}", detail()));
        }
    }

    /// A digest of every event so far: equal digests mean (with overwhelming probability)
    /// identical schedules.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// How many events were recorded.
    pub fn len(&self) -> u64 {
        self.events
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The events as lines, if full tracing was enabled.
    pub fn lines(&self) -> Option<&[String]> {
        self.lines.as_deref()
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.lines {
            Some(lines) => lines.iter().try_for_each(|l| writeln!(f, "{l}")),
            None => write!(f, "{} events, digest {:016x}", self.events, self.digest),
        }
    }
}

/// SplitMix64's finaliser: a cheap, well-distributed 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

//! A hybrid logical clock (Kulkarni et al., 2014), as used by CockroachDB and stemedb.
//!
//! A timestamp is wall-clock milliseconds plus a logical counter plus the issuing node, so
//! timestamps are totally ordered, stay close to real time, and never go backwards even when
//! the wall clock does. A remote timestamp further ahead of the local wall clock than the
//! configured maximum offset is refused: accepting it would drag every clock in the cluster
//! forward by a misconfigured peer's error.

use crate::id::NodeId;
use crate::time::Clock;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// One reading of a hybrid logical clock. Ordered by physical time, then the logical counter,
/// then the node id, which makes the order total across the cluster.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct HlcTimestamp {
    /// Wall-clock milliseconds since the Unix epoch (the largest seen, not necessarily local).
    pub physical_ms: u64,
    /// Orders events that share `physical_ms`.
    pub logical: u32,
    /// The node that issued the timestamp; breaks ties between nodes.
    pub node: NodeId,
}

impl fmt::Debug for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.physical_ms, self.logical, self.node)
    }
}

impl fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a remote timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HlcError {
    /// The remote clock is further ahead of ours than the maximum offset allows.
    #[error(
        "remote timestamp {remote_ms} ms is {ahead_ms} ms ahead of the local wall clock \
         ({local_ms} ms), beyond the maximum offset of {max_offset_ms} ms"
    )]
    ClockOffsetExceeded {
        /// The remote physical time.
        remote_ms: u64,
        /// Our wall clock when the timestamp arrived.
        local_ms: u64,
        /// How far ahead the remote was.
        ahead_ms: u64,
        /// The configured bound.
        max_offset_ms: u64,
    },
}

/// A hybrid logical clock for one node.
///
/// Not internally synchronised: wrap it in a mutex to share it between tasks.
///
/// ```
/// use shoal_core::{Hlc, ManualClock, NodeId};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(1_000);
/// let mut hlc = Hlc::new(NodeId::new(1), &clock, Duration::from_millis(500));
/// let a = hlc.now();
/// clock.set_wall_ms(900); // the wall clock steps back...
/// let b = hlc.now();
/// assert!(b > a); // ...the HLC does not.
/// ```
#[derive(Debug)]
pub struct Hlc<C> {
    clock: C,
    node: NodeId,
    max_offset_ms: u64,
    physical_ms: u64,
    logical: u32,
}

impl<C: Clock> Hlc<C> {
    /// A clock for `node` reading physical time from `clock`, refusing remote timestamps more
    /// than `max_offset` ahead of it (rounded down to whole milliseconds).
    pub fn new(node: NodeId, clock: C, max_offset: Duration) -> Self {
        Self {
            clock,
            node,
            max_offset_ms: u64::try_from(max_offset.as_millis()).unwrap_or(u64::MAX),
            physical_ms: 0,
            logical: 0,
        }
    }

    /// The configured maximum offset.
    pub fn max_offset(&self) -> Duration {
        Duration::from_millis(self.max_offset_ms)
    }

    /// The latest timestamp issued or observed, without advancing the clock.
    pub fn last(&self) -> HlcTimestamp {
        self.stamp()
    }

    /// A new timestamp, greater than every timestamp this clock issued or accepted before.
    pub fn now(&mut self) -> HlcTimestamp {
        let wall = self.clock.wall_ms();
        if wall > self.physical_ms {
            self.physical_ms = wall;
            self.logical = 0;
        } else {
            self.tick_logical();
        }
        self.stamp()
    }

    /// Merges a timestamp received from a peer and returns a new local timestamp greater than
    /// both it and everything issued before. Refused, with the clock untouched, when `remote`
    /// is more than the maximum offset ahead of the local wall clock.
    pub fn update(&mut self, remote: HlcTimestamp) -> Result<HlcTimestamp, HlcError> {
        let wall = self.clock.wall_ms();
        if remote.physical_ms > wall.saturating_add(self.max_offset_ms) {
            return Err(HlcError::ClockOffsetExceeded {
                remote_ms: remote.physical_ms,
                local_ms: wall,
                ahead_ms: remote.physical_ms - wall,
                max_offset_ms: self.max_offset_ms,
            });
        }
        let physical = wall.max(self.physical_ms).max(remote.physical_ms);
        let base = match (physical == self.physical_ms, physical == remote.physical_ms) {
            (true, true) => Some(self.logical.max(remote.logical)),
            (true, false) => Some(self.logical),
            (false, true) => Some(remote.logical),
            (false, false) => None,
        };
        self.physical_ms = physical;
        match base {
            Some(logical) => {
                self.logical = logical;
                self.tick_logical();
            }
            None => self.logical = 0,
        }
        Ok(self.stamp())
    }

    /// Advances the logical counter; on overflow borrows a millisecond from the future rather
    /// than wrapping, so monotonicity holds even for 2^32 events in one millisecond.
    fn tick_logical(&mut self) {
        match self.logical.checked_add(1) {
            Some(next) => self.logical = next,
            None => {
                self.physical_ms = self.physical_ms.saturating_add(1);
                self.logical = 0;
            }
        }
    }

    fn stamp(&self) -> HlcTimestamp {
        HlcTimestamp {
            physical_ms: self.physical_ms,
            logical: self.logical,
            node: self.node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    fn ts(physical_ms: u64, logical: u32, node: u64) -> HlcTimestamp {
        HlcTimestamp {
            physical_ms,
            logical,
            node: NodeId::new(node),
        }
    }

    #[test]
    fn now_follows_the_wall_clock_when_it_advances() {
        let clock = ManualClock::new(100);
        let mut hlc = Hlc::new(NodeId::new(1), &clock, Duration::from_millis(50));
        assert_eq!(hlc.now(), ts(100, 0, 1));
        assert_eq!(hlc.now(), ts(100, 1, 1));
        clock.set_wall_ms(105);
        assert_eq!(hlc.now(), ts(105, 0, 1));
    }

    #[test]
    fn now_is_monotonic_when_the_wall_clock_steps_back() {
        let clock = ManualClock::new(1_000);
        let mut hlc = Hlc::new(NodeId::new(1), &clock, Duration::from_millis(50));
        let before = hlc.now();
        clock.set_wall_ms(10);
        let after = hlc.now();
        assert!(after > before);
        assert_eq!(after, ts(1_000, 1, 1));
    }

    #[test]
    fn update_moves_past_a_remote_timestamp_within_the_offset() {
        let clock = ManualClock::new(1_000);
        let mut hlc = Hlc::new(NodeId::new(1), &clock, Duration::from_millis(50));
        let merged = hlc.update(ts(1_040, 7, 2)).unwrap();
        assert_eq!(merged, ts(1_040, 8, 1));
        assert!(hlc.now() > merged);
    }

    #[test]
    fn update_with_equal_physical_takes_the_larger_logical() {
        let clock = ManualClock::new(1_000);
        let mut hlc = Hlc::new(NodeId::new(1), &clock, Duration::from_millis(50));
        hlc.now();
        hlc.now(); // local (1000, 1)
        assert_eq!(hlc.update(ts(1_000, 5, 2)).unwrap(), ts(1_000, 6, 1));
        assert_eq!(hlc.update(ts(1_000, 2, 2)).unwrap(), ts(1_000, 7, 1));
    }

    #[test]
    fn update_from_the_past_still_advances() {
        let clock = ManualClock::new(1_000);
        let mut hlc = Hlc::new(NodeId::new(1), &clock, Duration::from_millis(50));
        let a = hlc.now();
        let b = hlc.update(ts(3, 0, 2)).unwrap();
        assert!(b > a);
    }

    #[test]
    fn update_refuses_a_remote_too_far_ahead_and_leaves_the_clock_alone() {
        let clock = ManualClock::new(1_000);
        let mut hlc = Hlc::new(NodeId::new(1), &clock, Duration::from_millis(50));
        let before = hlc.now();
        let err = hlc.update(ts(1_051, 0, 2)).unwrap_err();
        assert_eq!(
            err,
            HlcError::ClockOffsetExceeded {
                remote_ms: 1_051,
                local_ms: 1_000,
                ahead_ms: 51,
                max_offset_ms: 50
            }
        );
        assert_eq!(hlc.last(), before);
        // Exactly at the bound is accepted.
        assert!(hlc.update(ts(1_050, 0, 2)).is_ok());
    }

    #[test]
    fn logical_overflow_borrows_a_millisecond_instead_of_wrapping() {
        let clock = ManualClock::new(1_000);
        let mut hlc = Hlc::new(NodeId::new(1), &clock, Duration::from_millis(50));
        let near_max = hlc.update(ts(1_000, u32::MAX - 1, 2)).unwrap();
        assert_eq!(near_max, ts(1_000, u32::MAX, 1));
        let next = hlc.now();
        assert!(next > near_max);
        assert_eq!(next, ts(1_001, 0, 1));
    }

    #[test]
    fn order_is_total_with_the_node_as_tiebreak() {
        assert!(ts(1, 0, 2) > ts(1, 0, 1));
        assert!(ts(1, 1, 1) > ts(1, 0, 9));
        assert!(ts(2, 0, 1) > ts(1, 9, 9));
    }
}

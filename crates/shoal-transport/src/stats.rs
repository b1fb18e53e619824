//! Counters for everything the transport refuses, drops or retries, so bad input is visible.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters, shared by a transport's tasks.
        #[derive(Debug, Default)]
        pub struct TransportStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`TransportStats`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl TransportStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Connections established (client) or accepted and handshaken (server).
    connections_opened,
    /// Connect attempts that failed or timed out.
    connect_failures,
    /// Handshakes refused: bad magic, wrong version, timeout.
    handshake_failures,
    /// Frames whose length prefix was over the cap; the connection was closed.
    frames_too_large,
    /// Frames that did not decode; the connection was closed.
    corrupt_frames,
    /// Connections closed because a peer stalled mid-frame.
    stalled_frames,
    /// Connections that ended mid-frame.
    truncated_frames,
    /// Responses whose correlation id matched no pending request (late or bogus).
    unknown_responses,
    /// Requests refused because their header named another source than the node their
    /// connection's handshake announced.
    spoofed_sources,
    /// Requests refused because the connection's in-flight bound was reached.
    overloaded_rejections,
    /// Responses dropped because the client stopped reading or the connection broke.
    unsent_responses,
    /// Requests whose handler outran the caller's deadline.
    handler_timeouts,
    /// Calls that timed out waiting for a response.
    call_timeouts,
    /// Messages dropped by the fault-injection filter.
    fault_dropped,
    /// Messages delayed by the fault-injection filter.
    fault_delayed,
    /// Datagrams dropped on receipt: malformed, wrong version, or oversized.
    datagrams_dropped,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts a failed frame read under the matching counter.
pub(crate) fn count_frame_error(stats: &TransportStats, error: &crate::frame::FrameError) {
    use crate::frame::FrameError;
    match error {
        FrameError::TooLarge { .. } => bump(&stats.frames_too_large),
        FrameError::Truncated => bump(&stats.truncated_frames),
        FrameError::Stalled(_) => bump(&stats.stalled_frames),
        FrameError::Io(_) => {}
    }
}

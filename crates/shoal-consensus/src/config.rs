//! Tunables of a Raft group, each with its unit and default.

use crate::entry::ENTRY_OVERHEAD;
use crate::message::MESSAGE_OVERHEAD;
use std::time::Duration;

/// Configuration of one Raft group. [`RaftConfig::default`] suits a LAN;
/// [`RaftConfig::validate`] refuses inconsistent settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// How often a leader sends heartbeats. Default 100 ms.
    pub heartbeat_interval: Duration,
    /// The base election timeout: a follower that hears no leader for a random time in
    /// `[election_timeout, 2 × election_timeout)` campaigns. Also the check-quorum period and
    /// the leader lease. Default 1 s.
    pub election_timeout: Duration,
    /// Campaign with a pre-vote first, so a node returning from a partition does not raise
    /// the term and depose a healthy leader. Default true.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for an election timeout, and
    /// followers ignore votes while their leader is live (leader stickiness). Required for
    /// lease reads. Default true.
    pub check_quorum: bool,
    /// The bound on clock-rate drift between nodes over one election timeout: a lease lasts
    /// `election_timeout - max_clock_drift` from the moment a quorum's acknowledged heartbeat
    /// was sent. Default 100 ms (10% of the default timeout).
    pub max_clock_drift: Duration,
    /// The most entry bytes in one append message (at least one entry is always sent).
    /// Default 1 MiB.
    pub max_append_bytes: u64,
    /// The most appends in flight to one follower. Default 256.
    pub max_inflight_msgs: usize,
    /// The most entry bytes in flight to one follower. Default 32 MiB.
    pub max_inflight_bytes: u64,
    /// The most bytes of appended but uncommitted entries before proposals are refused as
    /// overloaded. Default 64 MiB.
    pub max_uncommitted_bytes: u64,
    /// The largest proposal accepted; larger is refused as too large. Default 8 MiB.
    pub max_proposal_bytes: u64,
    /// The most committed entry bytes handed out for applying in one ready. Default 64 MiB.
    pub max_apply_bytes: u64,
    /// A learner is promoted only when at most this many entries behind the leader's commit
    /// index. Default 1000.
    pub promote_max_lag: u64,
    /// Ask the state machine to persist its state, and compact the log behind it, once this
    /// many entries were applied since the last time. Default 100,000.
    pub snapshot_after_entries: u64,
    /// Entries kept before a new snapshot's index when compacting, so followers that lag a
    /// little catch up from the log rather than a snapshot. Default 1,000.
    pub compaction_trailing_entries: u64,
    /// Let an idle group go quiet (CockroachDB's quiescence, TiKV's hibernation): a leader
    /// with nothing in flight, every follower holding its whole log, tells them so
    /// ([`crate::MessageBody::Quiesce`]) and stops heartbeating; they stop their election
    /// timers. Any proposal, read, change or message wakes it. A quiet follower does not
    /// notice its leader's death by itself: the driver must call
    /// [`crate::Raft::peer_down`] when a failure detector (membership) says a node is
    /// down. Default false.
    pub quiesce: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_secs(1),
            pre_vote: true,
            check_quorum: true,
            max_clock_drift: Duration::from_millis(100),
            max_append_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 << 20,
            max_uncommitted_bytes: 64 << 20,
            max_proposal_bytes: 8 << 20,
            max_apply_bytes: 64 << 20,
            promote_max_lag: 1000,
            snapshot_after_entries: 100_000,
            compaction_trailing_entries: 1000,
            quiesce: false,
        }
    }
}

/// Members a snapshot chunk's metadata is allowed for in [`RaftConfig::max_message_bytes`]
/// (8 bytes each, as [`crate::MessageBody::approx_size`] counts them): every membership that
/// decodes.
const MEMBERS_ALLOWED: u64 = crate::membership::MAX_MEMBERSHIP_ENTRIES as u64;

/// A setting that makes no sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft config: {0}")]
pub struct ConfigError(pub &'static str);

impl RaftConfig {
    /// The largest [`crate::MessageBody::approx_size`] of any message a replica with these
    /// settings sends: an append of `max_append_bytes`, or of one entry of
    /// `max_proposal_bytes` when that is larger (an append always carries at least one
    /// entry), or a snapshot's metadata (for up to 4096 members). A driver's transport must
    /// carry single messages this large.
    pub fn max_message_bytes(&self) -> u64 {
        let append = self
            .max_append_bytes
            .max(self.max_proposal_bytes.saturating_add(ENTRY_OVERHEAD));
        append
            .max(8 * MEMBERS_ALLOWED)
            .saturating_add(MESSAGE_OVERHEAD)
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError("heartbeat_interval must be above zero"));
        }
        if self.election_timeout < self.heartbeat_interval * 2 {
            return Err(ConfigError(
                "election_timeout must be at least twice heartbeat_interval",
            ));
        }
        if self.max_clock_drift >= self.election_timeout {
            return Err(ConfigError(
                "max_clock_drift must be below election_timeout",
            ));
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError("in-flight limits must be at least 1"));
        }
        if self.max_append_bytes == 0 {
            return Err(ConfigError("message sizes must be above zero"));
        }
        if self.max_proposal_bytes > self.max_uncommitted_bytes {
            return Err(ConfigError(
                "max_proposal_bytes must not exceed max_uncommitted_bytes",
            ));
        }
        if self.snapshot_after_entries == 0 {
            return Err(ConfigError("snapshot_after_entries must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_settings_are_named() {
        assert_eq!(RaftConfig::default().validate(), Ok(()));
        let bad = RaftConfig {
            election_timeout: Duration::from_millis(150),
            ..RaftConfig::default()
        };
        assert!(bad.validate().unwrap_err().0.contains("twice"));
    }

    #[test]
    fn the_largest_message_is_a_whole_proposal_or_an_append_plus_overhead() {
        let config = RaftConfig::default();
        // By default a single 8 MiB proposal is the largest thing one append can carry.
        assert_eq!(
            config.max_message_bytes(),
            (8 << 20) + ENTRY_OVERHEAD + MESSAGE_OVERHEAD
        );
        let wide = RaftConfig {
            max_append_bytes: 10 << 20,
            ..RaftConfig::default()
        };
        assert_eq!(wide.max_message_bytes(), (10 << 20) + MESSAGE_OVERHEAD);
    }
}

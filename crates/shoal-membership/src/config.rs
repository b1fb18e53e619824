//! Tuning knobs, with memberlist's LAN, WAN and local presets.

use crate::keyring::Keyring;
use std::time::Duration;
use thiserror::Error;

/// The most bytes one member takes in a push-pull besides its metadata: id and incarnation
/// (varints, up to 10 bytes each), an IPv6 socket address with its tag (up to 24), its state
/// and the metadata's length prefix (up to 4).
pub const WIRE_MEMBER_MAX_OVERHEAD_BYTES: usize = 48;

/// A push-pull's bytes besides its members: the packet header with the longest cluster
/// label, encryption's nonce and tag, and the message's own framing.
const PUSH_PULL_OVERHEAD_BYTES: usize = 1024;

/// Largest cluster label, in bytes: it travels in every packet's header.
pub const MAX_LABEL_BYTES: usize = 64;

/// How a membership node probes, gossips and decides.
///
/// Durations are virtual or real time depending on the driver. The defaults are
/// [`MembershipConfig::lan`], which matches hashicorp/memberlist's `DefaultLANConfig`.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// Cluster label, carried in every packet and push-pull. Packets with another label are
    /// dropped and counted, so two clusters sharing addresses never merge. Empty by default;
    /// at most [`MAX_LABEL_BYTES`].
    pub label: String,
    /// Time between failure-detection probes of one member. Default 1 s.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others to probe indirectly. Should be
    /// about the network's 99th-percentile round trip. Default 500 ms.
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly when a direct probe times out. Default 3.
    pub indirect_checks: usize,
    /// Time between gossip rounds, which push queued updates. Default 200 ms.
    pub gossip_interval: Duration,
    /// Members sent to in each gossip round. Default 3.
    pub gossip_nodes: usize,
    /// How long a member that is dead or left still receives gossip (so it can learn it
    /// was declared dead and refute). Default 30 s.
    pub gossip_to_the_dead_time: Duration,
    /// Each update is retransmitted `retransmit_mult × ceil(log10(n + 1))` times. Default 4.
    pub retransmit_mult: u32,
    /// Minimum suspicion timeout is `suspicion_mult × max(1, log10(n)) × probe_interval`.
    /// Default 4.
    pub suspicion_mult: u32,
    /// Lifeguard: the suspicion timeout starts at this multiple of the minimum and shrinks
    /// towards the minimum as independent confirmations arrive. 1 turns dynamic suspicion
    /// off. Default 6.
    pub suspicion_max_timeout_mult: u32,
    /// Time between full-state push-pull syncs with one random member; scaled up for
    /// clusters above 32 members, like memberlist. Zero turns periodic push-pull off.
    /// Default 30 s.
    pub push_pull_interval: Duration,
    /// Timeout for one push-pull or TCP fallback ping exchange. Default 10 s.
    pub reliable_timeout: Duration,
    /// Lifeguard: the local health multiplier's ceiling. Probe interval and timeout are
    /// stretched by up to this factor while this node looks unhealthy. 1 turns it off.
    /// Default 8.
    pub awareness_max_multiplier: u32,
    /// Lifeguard: a probe to a suspect carries the suspicion, so it can refute at once.
    /// Default on.
    pub buddy_system: bool,
    /// Ask the member probed over TCP as well when UDP probes fail. Default on.
    pub tcp_fallback_ping: bool,
    /// After this long dead or left, a member's id may come back from another address
    /// (reported as `Reclaimed`). Zero means never. Default 0 (memberlist's default).
    pub dead_node_reclaim_time: Duration,
    /// Dead members are forgotten after this long, so state stays bounded. Until then they
    /// are candidates for reconnection, which is what heals a partition. Must be at least
    /// `gossip_to_the_dead_time`. Default 1 h.
    pub dead_retention: Duration,
    /// Members that left are forgotten after this long. Must be at least
    /// `gossip_to_the_dead_time`. Default 60 s.
    pub left_retention: Duration,
    /// Every this often, try a push-pull with one random dead member: after a partition
    /// heals, that is how the two sides find each other again (each thinks the other dead,
    /// so probes and gossip no longer cross). Zero turns it off. Default 30 s (Serf's
    /// reconnect interval).
    pub reconnect_interval: Duration,
    /// Largest node metadata, in bytes; larger is refused. Default 512.
    pub max_meta_bytes: usize,
    /// Most members (this node included, dead and left ones until reaped) the table holds;
    /// news of further unknown members is refused and counted, so a peer cannot make the
    /// table grow without bound. Default 20,000.
    ///
    /// A push-pull carries every member in one reliable message of at most
    /// [`MAX_RELIABLE_BYTES`](crate::MAX_RELIABLE_BYTES) (16 MiB), each member taking up to
    /// [`WIRE_MEMBER_MAX_OVERHEAD_BYTES`] plus its metadata, so
    /// [`validate`](Self::validate) refuses a `max_members` × (`max_meta_bytes` + overhead) that
    /// could not be synced. The default fits 20,000 members with 512-byte metadata (11 MiB).
    pub max_members: usize,
    /// Largest packet the core builds, before the transport's own header. Default 1388
    /// (1400 B datagrams minus shoal-transport's 12-byte header).
    pub max_packet_bytes: usize,
    /// Largest user broadcast, in bytes; must fit in a packet. Default 1024.
    pub max_user_broadcast_bytes: usize,
    /// User broadcasts waiting to be sent; more is refused. Default 1024.
    pub user_broadcast_queue_limit: usize,
    /// Join: first retry delay after every seed failed. Doubles up to `join_max_backoff`.
    /// Default 1 s.
    pub join_initial_backoff: Duration,
    /// Join: longest delay between attempts. Default 30 s.
    pub join_max_backoff: Duration,
    /// Join: attempts before giving up with [`SwimError::JoinFailed`](crate::SwimError);
    /// 0 retries forever. Default 10: about three minutes with the default backoff (1 s
    /// doubling to 30 s), so a join through seeds that never answer returns an error instead
    /// of waiting forever.
    pub join_max_attempts: u32,
    /// Gossip encryption with AES-256-GCM; `None` sends plaintext. Default `None`.
    pub keyring: Option<Keyring>,
    /// Accept plaintext packets while encryption is on (for rolling it out). Default off.
    pub accept_plaintext: bool,
    /// Largest number of indirect probes relayed for others at once; more are refused.
    /// Default 1024.
    pub max_pending_relays: usize,
}

impl MembershipConfig {
    /// memberlist's `DefaultLANConfig`: probe 1 s, timeout 500 ms, gossip 200 ms to 3,
    /// suspicion multiplier 4 (max ×6), retransmit multiplier 4, push-pull 30 s, 3 indirect
    /// checks, awareness up to ×8.
    pub fn lan() -> Self {
        Self {
            label: String::new(),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead_time: Duration::from_secs(30),
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            push_pull_interval: Duration::from_secs(30),
            reliable_timeout: Duration::from_secs(10),
            awareness_max_multiplier: 8,
            buddy_system: true,
            tcp_fallback_ping: true,
            dead_node_reclaim_time: Duration::ZERO,
            dead_retention: Duration::from_secs(3600),
            left_retention: Duration::from_secs(60),
            reconnect_interval: Duration::from_secs(30),
            max_meta_bytes: 512,
            max_members: 20_000,
            max_packet_bytes: 1388,
            max_user_broadcast_bytes: 1024,
            user_broadcast_queue_limit: 1024,
            join_initial_backoff: Duration::from_secs(1),
            join_max_backoff: Duration::from_secs(30),
            join_max_attempts: 10,
            keyring: None,
            accept_plaintext: false,
            max_pending_relays: 1024,
        }
    }

    /// memberlist's `DefaultWANConfig`: slower probes (5 s, timeout 3 s), gossip every
    /// 500 ms to 4, suspicion multiplier 6, push-pull 60 s.
    pub fn wan() -> Self {
        Self {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            gossip_to_the_dead_time: Duration::from_secs(60),
            suspicion_mult: 6,
            push_pull_interval: Duration::from_secs(60),
            left_retention: Duration::from_secs(120),
            ..Self::lan()
        }
    }

    /// memberlist's `DefaultLocalConfig`, for one machine: probe 1 s, timeout 200 ms,
    /// gossip 100 ms, suspicion multiplier 3, push-pull 15 s, retransmit multiplier 2.
    pub fn local() -> Self {
        Self {
            probe_timeout: Duration::from_millis(200),
            gossip_interval: Duration::from_millis(100),
            gossip_to_the_dead_time: Duration::from_secs(15),
            suspicion_mult: 3,
            retransmit_mult: 2,
            push_pull_interval: Duration::from_secs(15),
            reliable_timeout: Duration::from_secs(5),
            left_retention: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(10),
            ..Self::lan()
        }
    }

    /// Turns the three Lifeguard extensions off (awareness, dynamic suspicion, buddy
    /// system): plain SWIM with suspicion, as a baseline.
    pub fn without_lifeguard(mut self) -> Self {
        self.awareness_max_multiplier = 1;
        self.suspicion_max_timeout_mult = 1;
        self.buddy_system = false;
        self
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError(what.to_string()));
        if self.label.len() > MAX_LABEL_BYTES {
            return invalid("label is longer than 64 bytes");
        }
        if self.probe_interval.is_zero() || self.probe_timeout.is_zero() {
            return invalid("probe_interval and probe_timeout must be positive");
        }
        if self.probe_timeout >= self.probe_interval {
            return invalid("probe_timeout must be shorter than probe_interval");
        }
        if self.gossip_interval.is_zero() {
            return invalid("gossip_interval must be positive");
        }
        if self.retransmit_mult == 0 || self.suspicion_mult == 0 {
            return invalid("retransmit_mult and suspicion_mult must be at least 1");
        }
        if self.suspicion_max_timeout_mult == 0 || self.awareness_max_multiplier == 0 {
            return invalid(
                "suspicion_max_timeout_mult and awareness_max_multiplier must be at least 1",
            );
        }
        if self.reliable_timeout.is_zero() {
            return invalid("reliable_timeout must be positive");
        }
        if self.dead_retention < self.gossip_to_the_dead_time
            || self.left_retention < self.gossip_to_the_dead_time
        {
            return invalid(
                "dead_retention and left_retention must be at least gossip_to_the_dead_time",
            );
        }
        if self.max_members < 2 {
            return invalid("max_members must be at least 2");
        }
        let full_state = self
            .max_members
            .saturating_mul(
                self.max_meta_bytes
                    .saturating_add(WIRE_MEMBER_MAX_OVERHEAD_BYTES),
            )
            .saturating_add(PUSH_PULL_OVERHEAD_BYTES);
        if full_state > crate::MAX_RELIABLE_BYTES {
            return invalid(
                "max_members × (max_meta_bytes + member overhead) does not fit in one push-pull \
                 (16 MiB): a full member table could never be synced",
            );
        }
        if self.max_packet_bytes < 512 {
            return invalid("max_packet_bytes must be at least 512");
        }
        // Room for the header, a ping and one full-size alive message.
        if self.max_meta_bytes.saturating_add(MAX_LABEL_BYTES + 256) > self.max_packet_bytes {
            return invalid("max_meta_bytes leaves no room in a packet for an alive message");
        }
        if self
            .max_user_broadcast_bytes
            .saturating_add(MAX_LABEL_BYTES + 64)
            > self.max_packet_bytes
        {
            return invalid("max_user_broadcast_bytes does not fit in a packet");
        }
        if self.join_initial_backoff.is_zero() || self.join_max_backoff < self.join_initial_backoff
        {
            return invalid("join backoff must be positive and max ≥ initial");
        }
        if self.max_pending_relays == 0 {
            return invalid("max_pending_relays must be at least 1");
        }
        Ok(())
    }
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self::lan()
    }
}

/// A setting, or a combination of settings, that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid membership config: {0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for config in [
            MembershipConfig::lan(),
            MembershipConfig::wan(),
            MembershipConfig::local(),
            MembershipConfig::lan().without_lifeguard(),
        ] {
            config.validate().unwrap();
        }
    }

    #[test]
    fn lan_matches_memberlist() {
        let c = MembershipConfig::lan();
        assert_eq!(c.probe_interval, Duration::from_secs(1));
        assert_eq!(c.probe_timeout, Duration::from_millis(500));
        assert_eq!(c.gossip_interval, Duration::from_millis(200));
        assert_eq!((c.gossip_nodes, c.indirect_checks), (3, 3));
        assert_eq!((c.suspicion_mult, c.suspicion_max_timeout_mult), (4, 6));
        assert_eq!((c.retransmit_mult, c.awareness_max_multiplier), (4, 8));
        assert_eq!(c.push_pull_interval, Duration::from_secs(30));
    }

    #[test]
    fn nonsense_is_refused() {
        let mut c = MembershipConfig::lan();
        c.probe_timeout = c.probe_interval;
        assert!(c.validate().is_err());
        let mut c = MembershipConfig::lan();
        c.label = "x".repeat(65);
        assert!(c.validate().is_err());
        let mut c = MembershipConfig::lan();
        c.max_meta_bytes = 2000;
        assert!(c.validate().is_err());
        let mut c = MembershipConfig::lan();
        c.dead_retention = Duration::from_secs(1);
        assert!(c.validate().is_err());
    }

    /// Regression: the defaults allowed 100,000 members of 512-byte metadata (about 56 MB of
    /// push-pull state) while a push-pull is capped at 16 MiB, so a full table could never
    /// be synced.
    #[test]
    fn a_member_table_that_no_push_pull_could_carry_is_refused() {
        let mut c = MembershipConfig::lan();
        c.max_members = 100_000;
        assert!(c.validate().is_err());
        c.max_meta_bytes = 64;
        c.validate().unwrap();
        // Absurd sizes are refused, not overflowed (overflow checks are on in release).
        let mut c = MembershipConfig::lan();
        c.max_meta_bytes = usize::MAX;
        assert!(c.validate().is_err());
        let mut c = MembershipConfig::lan();
        c.max_user_broadcast_bytes = usize::MAX;
        assert!(c.validate().is_err());
    }

    /// The overhead the check assumes holds for the worst member: largest ids, an IPv6
    /// address, full metadata.
    #[test]
    fn a_full_table_of_worst_case_members_fits_the_bound_the_check_assumes() {
        use crate::member::{MemberState, WireMember};
        use crate::message::{PushPull, ReliableRequest};
        let c = MembershipConfig::lan();
        let member = WireMember {
            id: shoal_core::NodeId::new(u64::MAX),
            addr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                .parse()
                .unwrap(),
            incarnation: u64::MAX,
            state: MemberState::Suspect,
            meta: vec![0xFF; c.max_meta_bytes],
        };
        let one = shoal_core::codec::encode(&member).unwrap().len();
        assert!(
            one <= c.max_meta_bytes + WIRE_MEMBER_MAX_OVERHEAD_BYTES,
            "{one}"
        );
        let request = ReliableRequest::PushPull(PushPull {
            join: true,
            members: vec![member; c.max_members],
        });
        let mut buf = Vec::new();
        let all = shoal_core::codec::encode_into(&request, &mut buf, crate::MAX_RELIABLE_BYTES);
        assert!(all.is_ok(), "a full default table must fit one push-pull");
    }
}

//! Counters a membership node keeps: what it sent, and everything it refused.

/// Counters since the node started. Every dropped or refused input is counted in exactly one
/// of the `*_refused` / `packets_*` fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Datagrams handed to the transport.
    pub packets_sent: u64,
    /// Bytes in those datagrams (envelope included).
    pub bytes_sent: u64,
    /// Datagrams received, good or bad.
    pub packets_received: u64,
    /// Bytes received in datagrams.
    pub bytes_received: u64,
    /// Reliable requests sent (push-pull, TCP ping).
    pub reliable_sent: u64,
    /// Bytes in reliable requests and responses this node sent.
    pub reliable_bytes_sent: u64,
    /// Packets that did not parse (bad header, truncated, bad message encoding, oversized).
    pub packets_malformed: u64,
    /// Packets from another cluster label.
    pub packets_wrong_label: u64,
    /// Packets no key could decrypt, or encrypted while this node has no keyring.
    pub packets_decrypt_failed: u64,
    /// Plaintext packets refused because encryption is required.
    pub packets_unencrypted: u64,
    /// Alive news above [`MAX_INCARNATION`](crate::member::MAX_INCARNATION), or suspect or
    /// dead news at or above it, which no honest member reaches.
    pub incarnations_refused: u64,
    /// Updates older than what this node knows (replayed or stale incarnations).
    pub stale_updates: u64,
    /// Alive messages refused because another live member holds that address, or the member
    /// is live at another address.
    pub address_conflicts: u64,
    /// Metadata over `max_meta_bytes`, refused locally or from a peer.
    pub meta_too_large: u64,
    /// Probes addressed to another node id.
    pub misdirected_pings: u64,
    /// Indirect probe requests refused because too many were pending.
    pub relays_refused: u64,
    /// New members refused because the table held `max_members`.
    pub members_refused: u64,
    /// Acks that matched no outstanding probe (late or forged).
    pub unexpected_acks: u64,
    /// Acks to last-chance probes of suspects (expected; only a refutation clears the
    /// suspicion, so they change nothing).
    pub last_chance_acks: u64,
    /// Probes started.
    pub probes: u64,
    /// Probes that ended without an ack.
    pub probe_failures: u64,
    /// Suspicions this node raised from its own failed probes.
    pub suspicions_raised: u64,
    /// Times this node raised its incarnation to refute a suspicion or death.
    pub refutations: u64,
    /// User broadcasts delivered to the application (each once).
    pub user_messages_received: u64,
    /// Others' user broadcasts not relayed on because the queue was full.
    pub user_messages_dropped: u64,
}

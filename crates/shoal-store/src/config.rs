//! How a store runs.

use super::topology::TopologyConfig;
use shoal_consensus::driver::DriverConfig;
use shoal_consensus::{RaftConfig, ReadMode, WalConfig};
use shoal_core::NodeId;
use shoal_membership::MembershipConfig;
use shoal_ranges::SplitMergePolicy;
use shoal_storage::EngineConfig;
use shoal_transport::TransportConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options for [`super::Store::open`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This node's id, unique in the cluster.
    pub node: NodeId,
    /// Where the engine (`engine/`) and the WAL (`wal/`) live.
    pub data_dir: PathBuf,
    /// The one address the node listens on for node RPC, Raft traffic and snapshots
    /// (port 0: any free port; see [`super::Store::addr`]).
    pub listen: SocketAddr,
    /// Every range's Raft settings.
    pub raft: RaftConfig,
    /// The Raft driver's settings.
    pub driver: DriverConfig,
    /// The engine's settings (key and value limits, durability, cache). The store's default
    /// durability is [`shoal_storage::Durability::Buffered`]: the Raft log is the durable
    /// record of every applied write, the engine is synced before the log is compacted past
    /// what it holds, and structural changes (splits, snapshot installs, bootstrap) are
    /// synced writes of their own; a crash that loses buffered batches only makes the range
    /// replay them from the log.
    pub engine: EngineConfig,
    /// The WAL's settings (its segment size: the WAL holds a few segments, see
    /// [`StoreConfig::log_compaction_interval`]).
    pub wal: WalConfig,
    /// How often the groups whose entries keep WAL segments older than the current one on
    /// disk are asked to compact their logs through what the engine has synced (quiet ranges
    /// included: their few entries would otherwise keep the oldest segment, and every one
    /// after it, for ever). A leader keeps what a lagging follower needs, up to
    /// [`RaftConfig::compaction_trailing_entries`]. So the WAL holds about two segments
    /// ([`WalConfig::segment_bytes`]) plus lagging followers' tails. Default 10 s; zero
    /// turns it off (logs are then compacted only every
    /// [`RaftConfig::snapshot_after_entries`]).
    pub log_compaction_interval: Duration,
    /// The transport's settings.
    pub transport: TransportConfig,
    /// Membership (SWIM) settings: gossip runs over UDP on the listener's port number.
    pub membership: MembershipConfig,
    /// The address peers reach this node at, if not the bound one (behind NAT, or bound to
    /// 0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// How long [`super::Store::shutdown`] waits for the node's leave notice to go out.
    /// Default 5 s.
    pub leave_timeout: Duration,
    /// How long [`super::Store::shutdown`] waits for the leaderships it hands to caught-up
    /// followers to move (see [`super::Store::hand_over_leaderships`]). Default 5 s; zero
    /// hands nothing over (the ranges elect leaders once the node is gone).
    pub handover_timeout: Duration,
    /// How soon the store joins again through the seeds it joined through that no live
    /// member is known at (so that losing the one seed that answered a join does not leave
    /// the node knowing nobody); while seeds stay missing the wait doubles, up to 30 s.
    /// Default 2 s; zero turns it off.
    pub rejoin_interval: Duration,
    /// How linearizable reads confirm leadership: [`ReadMode::Safe`] (a heartbeat round per
    /// batch of reads, the default) or [`ReadMode::Lease`] (none while the leader's lease
    /// holds; relies on bounded clock drift, see [`ReadMode`]).
    pub read_mode: ReadMode,
    /// Target bytes per snapshot chunk. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// How long a request may take when the caller's RPC gave a longer deadline (or none).
    /// Default 10 s.
    pub request_timeout: Duration,
    /// When ranges this node leads split (their size against
    /// [`SplitMergePolicy::split_bytes`], 64 MiB by default; configurable down to kilobytes
    /// for tests). Merges are not carried out yet.
    pub split_policy: SplitMergePolicy,
    /// How often the ranges this node leads are checked against the policy. Default 1 s.
    pub split_check_interval: Duration,
    /// How often the engine's buffered writes are synced in the background (see
    /// [`StoreConfig::engine`]), so that the syncs a split or a log compaction needs find
    /// little to write: a sync holds up every apply on the node while it runs. Default
    /// 100 ms; zero turns it off.
    pub engine_sync_interval: Duration,
    /// This node's failure domain (a rack, a zone), registered in the meta range for
    /// placement. Default none. At most 128 bytes.
    pub zone: Option<String>,
    /// BREAKS LINEARIZABILITY, on purpose: linearizable reads (the meta range's too) skip
    /// the read barrier, so whichever replica is asked answers from its own state: a
    /// deposed leader that has not heard of its successor, or a lagging follower.
    /// Only with the `unsafe-test-switches` feature, to prove that `cargo xtask
    /// cluster-test` catches a store that does this. Default off.
    #[cfg(feature = "unsafe-test-switches")]
    pub unsafe_skip_read_barrier: bool,
}

impl StoreConfig {
    /// A preset for clusters on one machine (tests, examples, a laptop): any free loopback
    /// port, Raft heartbeats every 50 ms and elections after 500 ms (clocks on one machine
    /// drift by at most 50 ms), the transport's and membership's local presets
    /// ([`TransportConfig::local`], [`MembershipConfig::local`]), a 300 ms leave notice, no
    /// leadership hand-over on shutdown (a local cluster usually stops whole), and 64 KiB
    /// snapshot chunks. Everything else is as [`StoreConfig::new`] has it.
    pub fn local(node: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        let mut config = StoreConfig::new(node, data_dir, SocketAddr::from(([127, 0, 0, 1], 0)));
        config.raft.heartbeat_interval = Duration::from_millis(50);
        config.raft.election_timeout = Duration::from_millis(500);
        config.raft.max_clock_drift = Duration::from_millis(50);
        config.transport = TransportConfig::local();
        config.membership = MembershipConfig::local();
        config.leave_timeout = Duration::from_millis(300);
        config.handover_timeout = Duration::ZERO;
        config.snapshot_chunk_bytes = 64 << 10;
        config
    }

    /// The settings of this node's [`super::Topology`]: its listener, membership and
    /// gossip.
    pub fn topology(&self) -> TopologyConfig {
        TopologyConfig {
            node: self.node,
            listen: self.listen,
            advertise: self.advertise,
            transport: self.transport.clone(),
            membership: self.membership.clone(),
            leave_timeout: self.leave_timeout,
            rejoin_interval: self.rejoin_interval,
            request_timeout: self.request_timeout,
            max_key_len: self.engine.max_key_len,
        }
    }

    /// Defaults for node `node` over `data_dir`, listening on `listen`.
    pub fn new(node: NodeId, data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        StoreConfig {
            node,
            data_dir: data_dir.into(),
            listen,
            raft: RaftConfig {
                quiesce: true,
                ..RaftConfig::default()
            },
            driver: DriverConfig::default(),
            engine: EngineConfig {
                durability: shoal_storage::Durability::Buffered,
                ..EngineConfig::default()
            },
            wal: WalConfig::default(),
            log_compaction_interval: Duration::from_secs(10),
            transport: TransportConfig::default(),
            membership: MembershipConfig::default(),
            advertise: None,
            leave_timeout: Duration::from_secs(5),
            handover_timeout: Duration::from_secs(5),
            rejoin_interval: Duration::from_secs(2),
            #[cfg(feature = "unsafe-test-switches")]
            unsafe_skip_read_barrier: false,
            read_mode: ReadMode::Safe,
            snapshot_chunk_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
            split_policy: SplitMergePolicy::default(),
            split_check_interval: Duration::from_secs(1),
            zone: None,
            engine_sync_interval: Duration::from_millis(100),
        }
    }
}

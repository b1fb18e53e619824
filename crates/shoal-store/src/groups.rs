//! A node's range groups as one part with one owner: the engine that holds their data, the
//! WAL that holds their logs, the Raft driver that runs them, the descriptors their machines
//! applied and the channel their machines report on. The rest of the store asks this part
//! (for a descriptor, a leader, the driver to propose through) rather than reaching into its
//! state; only this part starts groups.

use super::config::StoreConfig;
use super::events::{RangeEvents, SplitDone};
use super::hosting::{self, GroupOpener, Resume};
use super::machine::RangeMachine;
use super::node::StoreError;
use super::shared::Shared;
use shoal_consensus::driver::RaftDriver;
use shoal_consensus::{Membership, RaftConfig, Wal, WalDiskUsage, WalStats};
use shoal_core::{Clock, Generation, KeyRange, NodeId, RangeDescriptor, RangeId};
use shoal_storage::{Durability, Engine};
use std::sync::Arc;

/// Every Raft group a node hosts, with the engine, WAL and driver they run on.
pub(crate) struct RangeGroups {
    id: NodeId,
    raft: RaftConfig,
    chunk_bytes: usize,
    engine: Arc<Engine>,
    wal: Wal,
    driver: RaftDriver<RangeMachine>,
    shared: Arc<Shared>,
    events: RangeEvents,
    /// Replicas destroyed here, with the generation of the descriptor that left this node
    /// out: a replica of the range is created again only for a newer generation (one that
    /// adds this node back), never for the stale messages or gossip of the old one.
    tombstones: std::sync::Mutex<std::collections::HashMap<RangeId, Generation>>,
}

/// Runs `work` on the blocking pool, a panic there reported as a corrupt store.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Corrupt(format!("a storage task panicked: {e}")))?
}

impl RangeGroups {
    /// The groups of node `config.node`, none started yet ([`RangeGroups::resume`] starts
    /// those the engine holds).
    pub(crate) fn new(
        config: &StoreConfig,
        engine: Arc<Engine>,
        wal: Wal,
        driver: RaftDriver<RangeMachine>,
        events: RangeEvents,
    ) -> RangeGroups {
        RangeGroups {
            id: config.node,
            raft: config.raft.clone(),
            chunk_bytes: config.snapshot_chunk_bytes,
            engine,
            wal,
            driver,
            shared: Arc::new(Shared::default()),
            events,
            tombstones: Default::default(),
        }
    }

    /// The engine that holds every hosted range's data.
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The driver that runs the groups (proposals, reads, status, leadership).
    pub(crate) fn driver(&self) -> &RaftDriver<RangeMachine> {
        &self.driver
    }

    /// The WAL's counters.
    pub(crate) fn wal_stats(&self) -> WalStats {
        self.wal.stats()
    }

    /// What the WAL takes on disk now.
    pub(crate) fn wal_disk_usage(&self) -> WalDiskUsage {
        self.wal.disk_usage()
    }

    /// A hosted range's descriptor as applied here.
    pub(crate) fn descriptor(&self, range: RangeId) -> Option<RangeDescriptor> {
        self.shared.descriptor(range)
    }

    /// Every hosted range's descriptor as applied here.
    pub(crate) fn descriptors(&self) -> Vec<RangeDescriptor> {
        self.shared.descriptors()
    }

    /// The descriptors of the hosted ranges this node leads (filtered before they are
    /// copied: a size check over thousands of ranges copies only its own).
    pub(crate) fn led_descriptors(&self) -> Vec<RangeDescriptor> {
        self.shared.descriptors_where(|d| {
            self.driver.leader(d.id.into()).and_then(|l| l.id) == Some(self.id)
        })
    }

    /// Counts changes to the hosted ranges' descriptors (see [`Shared::version`]).
    pub(crate) fn descriptors_version(&self) -> u64 {
        self.shared.version()
    }

    /// The hosted range that holds `key`, if any.
    pub(crate) fn hosted_range_for(&self, key: &[u8]) -> Option<RangeDescriptor> {
        self.shared.range_for(key)
    }

    /// Resolves when a hosted range's descriptor is new or changed (at most one wake-up is
    /// stored while nobody waits).
    pub(crate) async fn descriptors_changed(&self) {
        self.shared.changed.notified().await
    }

    /// The leader of a hosted range as this node sees it (no round trip through the driver).
    pub(crate) fn leader_of(&self, range: RangeId) -> Option<NodeId> {
        self.driver.leader(range.into()).and_then(|l| l.id)
    }

    /// Whether this node leads a hosted range.
    pub(crate) fn leads(&self, range: RangeId) -> bool {
        self.leader_of(range) == Some(self.id)
    }

    /// What opening a group needs (see [`GroupOpener`]).
    fn opener(&self) -> GroupOpener<'_> {
        GroupOpener {
            id: self.id,
            raft: &self.raft,
            engine: &self.engine,
            wal: &self.wal,
            shared: &self.shared,
            events: &self.events,
            chunk_bytes: self.chunk_bytes,
        }
    }

    /// Resumes every range the engine hosts (see [`hosting::recover`]).
    pub(crate) async fn resume(&self) -> Result<(), StoreError> {
        let (engine, wal) = (self.engine.clone(), self.wal.clone());
        for group in blocking(move || hosting::recover(&engine, &wal)).await? {
            match group {
                Resume::Range {
                    id,
                    span,
                    descriptor,
                } => self.host_range(id, span, descriptor, None).await?,
                Resume::Uninitialized(id) => self.host_uninitialized(id).await?,
            }
        }
        // Split halves whose exact count a restart cut short are counted now, paced, off
        // every group's path.
        let estimated: Vec<RangeId> = self
            .engine
            .ranges()
            .into_iter()
            .filter(|r| r.stats.estimated)
            .map(|r| r.id)
            .collect();
        if !estimated.is_empty() {
            let engine = self.engine.clone();
            tokio::task::spawn_blocking(move || hosting::recount(&engine, &estimated, true));
        }
        Ok(())
    }

    /// Creates the meta range and the first user range here (see
    /// [`super::Store::bootstrap`]) and starts their groups; the first of `voters`
    /// campaigns at once.
    pub(crate) async fn bootstrap(
        &self,
        voters: &[NodeId],
        splits: Vec<Vec<u8>>,
    ) -> Result<Vec<RangeDescriptor>, StoreError> {
        let (engine, wal) = (self.engine.clone(), self.wal.clone());
        let founding = voters.to_vec();
        let (descriptors, membership) =
            blocking(move || hosting::bootstrap(&engine, &wal, &founding, &splits)).await?;
        for descriptor in &descriptors {
            self.host_range(
                descriptor.id,
                descriptor.range.clone(),
                Some(descriptor.clone()),
                Some(membership.clone()),
            )
            .await?;
            if voters.first() == Some(&self.id) {
                self.driver
                    .campaign(descriptor.id.into())
                    .await
                    .map_err(|e| StoreError::Raft(e.to_string()))?;
            }
        }
        Ok(descriptors)
    }

    /// Starts the group of a range the engine hosts (see [`GroupOpener::open_range`]).
    async fn host_range(
        &self,
        range: RangeId,
        span: KeyRange,
        descriptor: Option<RangeDescriptor>,
        membership: Option<Membership>,
    ) -> Result<(), StoreError> {
        let now = self.driver.clock().now();
        let (raft, machine) = self
            .opener()
            .open_range(range, span, descriptor, membership, now)?;
        self.driver
            .add_group(raft, machine)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))
    }

    /// Whether a replica of the range `descriptor` describes may be created here: not if
    /// this node destroyed one at that generation or a later one.
    pub(crate) fn may_recreate(&self, descriptor: &RangeDescriptor) -> bool {
        self.tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&descriptor.id)
            .is_none_or(|&gone| descriptor.generation > gone)
    }

    /// Destroys this node's replica of `range`, which the range's descriptor at
    /// `generation` leaves out: its group leaves the driver (it no longer ticks, campaigns
    /// or serves), its keys leave the engine (its span is free for another range), its log
    /// leaves the WAL, and a tombstone keeps it from being created again for that
    /// generation. The engine goes first: a crash before the log goes leaves a log with no
    /// data, which starts as a replica waiting for a snapshot and is found removed again.
    pub(crate) async fn destroy(
        &self,
        range: RangeId,
        generation: Generation,
    ) -> Result<(), StoreError> {
        self.tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(range)
            .and_modify(|g| *g = (*g).max(generation))
            .or_insert(generation);
        match self.driver.remove_group(range.into()).await {
            Ok(_) => {}
            Err(shoal_consensus::driver::DriverError::Host(
                shoal_consensus::HostError::UnknownGroup(_),
            )) => {}
            Err(e) => return Err(StoreError::Raft(e.to_string())),
        }
        self.shared.remove_descriptor(range);
        let (engine, wal) = (self.engine.clone(), self.wal.clone());
        blocking(move || {
            match engine.remove_range(range) {
                Ok(()) | Err(shoal_storage::StorageError::RangeNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            wal.remove_group(range.into())?;
            wal.sync()?;
            Ok(())
        })
        .await
    }

    /// Starts a replica of `range` that holds no data yet and waits for a snapshot (see
    /// [`GroupOpener::open_uninitialized`]).
    pub(crate) async fn host_uninitialized(&self, range: RangeId) -> Result<(), StoreError> {
        let now = self.driver.clock().now();
        let (raft, machine) = self.opener().open_uninitialized(range, now)?;
        self.driver
            .add_group(raft, machine)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))
    }

    /// Starts the group of a split's right half as this node applies the split; the
    /// parent's leader campaigns for it at once rather than after an election timeout.
    pub(crate) async fn start_split_half(&self, split: SplitDone) -> Result<(), StoreError> {
        let SplitDone {
            parent,
            right,
            membership,
        } = split;
        let range = right.id;
        let (engine, wal) = (self.engine.clone(), self.wal.clone());
        let log_membership = membership.clone();
        blocking(move || hosting::start_split_half(&engine, &wal, range, log_membership)).await?;
        let span = right.range.clone();
        self.host_range(range, span, Some(right), Some(membership))
            .await?;
        if self.leads(parent) {
            let _ = self.driver.campaign(range.into()).await;
        }
        // The split estimated both halves' stats: count them, off every group's path.
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || hosting::recount_halves(&engine, parent, range, true));
        Ok(())
    }

    /// Makes every write the engine buffered durable, on the blocking pool.
    pub(crate) async fn sync_engine(&self) -> Result<(), StoreError> {
        let engine = self.engine.clone();
        blocking(move || Ok(engine.persist(Durability::Sync)?)).await
    }

    /// Asks every group whose entries keep a WAL segment older than the current one on disk
    /// to compact its log as far as it may (see [`shoal_consensus::Raft::request_compaction`]),
    /// after one sync of the engine, so that each group's own persist finds nothing left to
    /// write inside the driver's round. Returns how many groups had anything to compact.
    pub(crate) async fn compact_logs(&self) -> Result<usize, StoreError> {
        let groups = self.wal.groups_in_old_segments();
        if groups.is_empty() {
            return Ok(0);
        }
        self.sync_engine().await?;
        self.driver
            .compact_logs(groups)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))
    }

    /// Stops every group (the engine and WAL close when the last handle goes).
    pub(crate) async fn shutdown(&self) {
        self.driver.shutdown().await;
    }
}

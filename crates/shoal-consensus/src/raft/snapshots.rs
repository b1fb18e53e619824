//! Snapshots (§7): taking them and compacting the log, streaming them to followers that
//! need compacted entries in checksummed, resumable chunks, and installing them.

use super::Raft;
use crate::entry::LogIndex;
use crate::message::{AppendResult, MessageBody};
use crate::progress::{ReplicaState, SnapshotSend};
use crate::snapshot::{same_snapshot, ChunkError, Snapshot, SnapshotMeta, SnapshotReceiver};
use crate::store::LogStore;
use bytes::Bytes;
use shoal_core::NodeId;

impl<S: LogStore> Raft<S> {
    /// The state machine took a snapshot after applying everything handed out so far (at
    /// [`Raft::applied_index`]). The core keeps it to send to followers that need it, and the
    /// next ready asks the driver to record it and compact the log.
    pub fn snapshot_taken(&mut self, data: Bytes) {
        let index = self.log.applied;
        let Ok(term) = self.log.term(index) else {
            tracing::warn!(id = %self.id, index, "snapshot at a compacted index; ignored");
            return;
        };
        let meta = SnapshotMeta {
            index,
            term,
            membership: self.membership_at(index),
            size: data.len() as u64,
            checksum: crc32c::crc32c(&data),
        };
        self.snapshot_wanted = false;
        if index <= self.snapshot_index && self.latest_snapshot.is_some() {
            return;
        }
        let through = index
            .saturating_sub(self.config.compaction_trailing_entries)
            .min(self.log.persisted);
        self.snapshot_index = index;
        let keep_from = self
            .membership_history
            .iter()
            .rposition(|(i, _)| *i <= index)
            .unwrap_or(0);
        self.membership_history.drain(..keep_from);
        self.compact = Some((meta.clone(), through));
        self.latest_snapshot = Some(Snapshot { meta, data });
        self.latest_snapshot_used = self.now;
    }

    /// Drops the latest snapshot's bytes once unused for an election timeout: a follower
    /// that needs one shows up within a heartbeat or two, and holding every group's snapshot
    /// for good would keep a second copy of a node's data in memory. Transfers under way keep
    /// their own reference; a later need asks the driver for a fresh snapshot.
    pub(super) fn release_idle_snapshot(&mut self) {
        if self.latest_snapshot.is_some()
            && self
                .now
                .saturating_duration_since(self.latest_snapshot_used)
                >= self.config.election_timeout
        {
            tracing::debug!(id = %self.id, "released an unused snapshot");
            self.latest_snapshot = None;
        }
    }

    /// `peer` needs entries the log no longer holds: stream it the latest snapshot, or ask
    /// the driver for one that covers them.
    pub(super) fn send_snapshot(&mut self, peer: NodeId) {
        let needed = self.log.first_index().saturating_sub(1);
        let snapshot = match &self.latest_snapshot {
            Some(s) if s.meta.index >= needed => s.clone(),
            _ => {
                self.snapshot_wanted = true;
                return;
            }
        };
        self.latest_snapshot_used = self.now;
        let now = self.now;
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        tracing::info!(id = %self.id, %peer, index = snapshot.meta.index, size = snapshot.meta.size, "sending a snapshot");
        pr.become_snapshot(SnapshotSend {
            index: snapshot.meta.index,
            total: snapshot.meta.size,
            sent: 0,
            acked: 0,
            last_ack: now,
            snapshot,
        });
        self.send_snapshot_chunks(peer, true);
    }

    /// Sends chunks up to the in-flight window. `first`: send even an empty snapshot's
    /// single, empty chunk.
    fn send_snapshot_chunks(&mut self, peer: NodeId, first: bool) {
        let chunk = self.config.snapshot_chunk_bytes;
        let window = chunk.saturating_mul(self.config.snapshot_inflight_chunks);
        let mut chunks = Vec::new();
        {
            let Some(send) = self
                .progress
                .get_mut(&peer)
                .and_then(|p| p.snapshot.as_mut())
            else {
                return;
            };
            let mut force = first || (send.total == 0 && send.sent == 0);
            while force || (send.sent < send.total && send.sent - send.acked < window) {
                force = false;
                let end = (send.sent + chunk).min(send.total);
                let data = send.snapshot.data.slice(send.sent as usize..end as usize);
                chunks.push((send.snapshot.meta.clone(), send.sent, data));
                send.sent = end;
            }
        }
        for (meta, offset, data) in chunks {
            let crc = crc32c::crc32c(&data);
            self.send(
                peer,
                MessageBody::Snapshot {
                    meta,
                    offset,
                    data,
                    crc,
                },
            );
        }
    }

    /// Restarts transfers that made no progress for an election timeout (chunks lost).
    pub(super) fn resend_stalled_snapshots(&mut self) {
        let now = self.now;
        let timeout = self.config.election_timeout;
        let mut stalled = Vec::new();
        for (&peer, pr) in self.progress.iter_mut() {
            if let Some(send) = pr.snapshot.as_mut() {
                if now >= send.last_ack + timeout {
                    send.sent = send.acked;
                    send.last_ack = now;
                    stalled.push(peer);
                }
            }
        }
        for peer in stalled {
            self.send_snapshot_chunks(peer, true);
        }
    }

    pub(super) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        received: u64,
    ) {
        let now = self.now;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if pr.state != ReplicaState::Snapshot {
            return;
        }
        let Some(send) = pr.snapshot.as_mut() else {
            return;
        };
        if send.index != index {
            return;
        }
        let progressed = received > send.acked;
        if progressed {
            send.last_ack = now;
        }
        // A follower cannot hold more than was sent: a larger claim is clamped.
        send.acked = received.min(send.sent);
        if !progressed && send.acked < send.sent {
            // No progress while chunks are out: one was lost or the follower started over.
            // Resume from what it holds.
            send.sent = send.acked;
        }
        self.send_snapshot_chunks(from, false);
    }

    /// A chunk of a snapshot from the leader.
    pub(super) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
        crc: u32,
    ) {
        // `meta.index` is at most MAX_INDEX (`Raft::step` drops larger ones), so the log's
        // `index + 1` after installing it cannot overflow.
        //
        // A snapshot the log already covers is not installed: installing it would drop the
        // entries after it, which this replica may have acknowledged (the leader counts them
        // in its match index and commits with them). If the log holds the snapshot's last
        // entry, everything up to it is committed: take that instead (Raft §7).
        if meta.index > self.log.committed && self.log.matches(meta.index, meta.term) {
            self.commit_to(meta.index);
        }
        let committed = self.log.committed;
        if meta.index <= committed {
            self.receiver = None;
            self.send(
                from,
                MessageBody::AppendResponse {
                    result: AppendResult::Accepted {
                        match_index: committed,
                    },
                    sent_at: 0,
                },
            );
            return;
        }
        let index = meta.index;
        if !self
            .receiver
            .as_ref()
            .is_some_and(|r| same_snapshot(&r.meta, &meta))
        {
            self.receiver = Some(SnapshotReceiver::new(meta));
        }
        let receiver = self.receiver.as_mut().expect("set above");
        match receiver.take(offset, data, crc, self.config.max_snapshot_bytes) {
            Ok(None) | Err(ChunkError::OutOfOrder { .. }) => {
                let received = receiver.received();
                self.send(from, MessageBody::SnapshotResponse { index, received });
            }
            Ok(Some(snapshot)) => {
                self.receiver = None;
                self.install_snapshot(snapshot);
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        result: AppendResult::Accepted { match_index: index },
                        sent_at: 0,
                    },
                );
            }
            Err(error) => {
                self.stats.bad_snapshot_chunks += 1;
                tracing::warn!(id = %self.id, %from, %error, "refused a snapshot chunk");
                let received = match error {
                    ChunkError::BadChunkChecksum(_) => receiver.received(),
                    _ => {
                        self.receiver = None;
                        0
                    }
                };
                self.send(from, MessageBody::SnapshotResponse { index, received });
            }
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = &snapshot.meta;
        tracing::info!(id = %self.id, index = meta.index, term = meta.term, size = meta.size, "installing a snapshot");
        self.membership = meta.membership.clone();
        self.membership_history = vec![(meta.index, meta.membership.clone())];
        self.pending_memberships.clear();
        self.snapshot_index = meta.index;
        self.log.restore(snapshot);
    }
}

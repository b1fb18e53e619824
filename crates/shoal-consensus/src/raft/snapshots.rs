//! Snapshots (§7): compacting the log behind a durable state machine, asking the driver to
//! stream a snapshot to followers that need compacted entries, and installing one received.
//! The data itself never passes through the core (see [`crate::snapshot`]).

use super::Raft;
use crate::entry::LogIndex;
use crate::message::{AppendResult, Message, MessageBody};
use crate::progress::{ReplicaState, SnapshotSend};
use crate::snapshot::SnapshotMeta;
use crate::store::LogStore;
use shoal_core::NodeId;

impl<S: LogStore> Raft<S> {
    /// The state machine made its state durable through `index` (at most
    /// [`Raft::applied_index`]; in answer to [`crate::Ready::snapshot_wanted`]). It becomes
    /// the group's snapshot point: the next ready records it and compacts the log through it
    /// (less [`crate::RaftConfig::compaction_trailing_entries`], so followers that lag a
    /// little catch up from the log).
    pub fn snapshot_taken(&mut self, index: LogIndex) {
        self.snapshot_wanted = false;
        let requested = std::mem::take(&mut self.compaction_requested);
        let index = index.min(self.log.applied);
        // The same point again is worth it only to drop entries kept behind it.
        if index < self.snapshot_index || (index == self.snapshot_index && !requested) {
            return;
        }
        let Some(meta) = self.snapshot_meta(index) else {
            tracing::warn!(id = %self.id, index, "snapshot at a compacted index; ignored");
            return;
        };
        let through = self.compaction_point(index, requested);
        if through < self.log.first_index() && index == self.snapshot_index {
            return;
        }
        self.snapshot_index = index;
        let keep_from = self
            .membership_history
            .iter()
            .rposition(|(i, _)| *i <= index)
            .unwrap_or(0);
        self.membership_history.drain(..keep_from);
        self.compact = Some((meta, through));
    }

    /// Asks for the log to be compacted as far as it may be, now: the state machine is
    /// asked to persist ([`crate::Ready::snapshot_wanted`]) even if few entries were applied
    /// since the last snapshot. A driver asks this of groups whose entries keep old WAL
    /// segments on disk (a quiet range's few entries would otherwise do so for ever).
    /// Returns whether there is anything to compact.
    pub fn request_compaction(&mut self) -> bool {
        let durable = self.log.applied.min(self.log.persisted);
        if self.log.first_index() > durable {
            return false;
        }
        self.snapshot_wanted = true;
        self.compaction_requested = true;
        true
    }

    /// Where to compact the log through once the state machine is durable through `index`.
    /// A leader keeps what its followers still need, but never more than
    /// [`crate::RaftConfig::compaction_trailing_entries`] (a follower further behind is sent
    /// a snapshot). A follower keeps that many trailing entries too (useful should it lead),
    /// unless the compaction was requested ([`Raft::request_compaction`]). Never past what
    /// the log has persisted.
    fn compaction_point(&self, index: LogIndex, requested: bool) -> LogIndex {
        let trailing = index.saturating_sub(self.config.compaction_trailing_entries);
        let floor = if self.role == super::Role::Leader {
            let needed = self
                .progress
                .iter()
                .filter(|(&node, _)| node != self.id)
                .map(|(_, pr)| pr.match_index)
                .min()
                .unwrap_or(index);
            needed.max(trailing)
        } else if requested {
            index
        } else {
            trailing
        };
        floor.min(index).min(self.log.persisted)
    }

    /// The metadata of a snapshot of the state machine at `index` (the index a
    /// [`crate::SnapshotSource`] reports): its term and the membership in force there.
    /// `None` when the log no longer knows the term, or `index` is past what was applied.
    pub fn snapshot_meta(&self, index: LogIndex) -> Option<SnapshotMeta> {
        if index > self.log.applied || index < self.snapshot_index {
            return None;
        }
        let term = self.log.term(index).ok()?;
        Some(SnapshotMeta {
            index,
            term,
            membership: self.membership_at(index),
        })
    }

    /// The [`MessageBody::Snapshot`] to deliver to `to` once a snapshot's data reached it:
    /// from this replica, in its current term.
    pub fn snapshot_message(&self, to: NodeId, meta: SnapshotMeta) -> Message {
        Message {
            group: self.group,
            from: self.id,
            to,
            term: self.term,
            config_index: self.membership_index(),
            body: MessageBody::Snapshot { meta },
        }
    }

    /// The received snapshot accepted and waiting to be persisted, if any: its data must be
    /// kept for the state machine until a ready hands it over ([`crate::Ready::snapshot`]).
    pub fn pending_snapshot(&self) -> Option<&SnapshotMeta> {
        self.log.pending_snapshot()
    }

    /// How streaming a snapshot to `peer` went (asked for by [`crate::Ready::send_snapshots`]):
    /// `Ok(index)` once the follower has received the snapshot at `index` whole, `Err(())`
    /// when the transfer failed. Either way the leader goes back to probing the follower
    /// after its next heartbeat answer: it then either continues from the log or asks for
    /// another snapshot. Every request must be answered, or the follower waits for ever.
    pub fn report_snapshot(&mut self, peer: NodeId, result: Result<LogIndex, ()>) {
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        if pr.state != ReplicaState::Snapshot {
            return;
        }
        match result {
            Ok(index) => {
                tracing::debug!(id = %self.id, %peer, index, "snapshot sent");
                pr.become_probe();
                pr.next_index = pr.next_index.max(index + 1);
            }
            Err(()) => {
                tracing::info!(id = %self.id, %peer, "snapshot transfer failed; will retry");
                pr.become_probe();
            }
        }
        // Wait for the follower to answer a heartbeat before probing again.
        pr.probe_sent = true;
    }

    /// `peer` needs entries the log no longer holds: ask the driver to stream it one.
    pub(super) fn send_snapshot(&mut self, peer: NodeId) {
        let now = self.now;
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        if pr.state == ReplicaState::Snapshot {
            return;
        }
        tracing::info!(id = %self.id, %peer, first_index = self.log.first_index(), "follower needs a snapshot");
        pr.become_snapshot(SnapshotSend { since: now });
        self.send_snapshots.push(peer);
    }

    /// A snapshot from the leader, whose data the driver has received and kept aside.
    pub(super) fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
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
        self.install_snapshot(meta);
        // Sent once the ready that installs it is persisted (a follower's messages wait for
        // its disk), and the host installs the data in the state machine before that.
        self.send(
            from,
            MessageBody::AppendResponse {
                result: AppendResult::Accepted { match_index: index },
                sent_at: 0,
            },
        );
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) {
        tracing::info!(id = %self.id, index = meta.index, term = meta.term, "installing a snapshot");
        self.membership = meta.membership.clone();
        self.membership_history = vec![(meta.index, meta.membership.clone())];
        self.pending_memberships.clear();
        self.snapshot_index = meta.index;
        self.log.restore(meta);
    }
}

//! Sending Raft messages: per-peer queues, each drained by one task, batches split under
//! the RPC size limit and merged up to it.

use super::{DriverConfig, Peers, RaftBatch};
use crate::message::Message;
use crate::multi::batch_by_node;
use shoal_core::NodeId;
use shoal_transport::{RpcTransport, RpcTransportExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Per-peer send queues, each drained by one task.
pub(super) struct Outbound {
    pub(super) transport: Arc<dyn RpcTransport>,
    pub(super) peers: Peers,
    pub(super) queues: HashMap<NodeId, mpsc::Sender<Vec<Message>>>,
    pub(super) config: DriverConfig,
    /// Where sender tasks are spawned (rounds run on the blocking pool).
    pub(super) runtime: tokio::runtime::Handle,
}

impl Outbound {
    pub(super) fn send(&mut self, messages: impl IntoIterator<Item = Message>) {
        let max_bytes = self.config.max_rpc_bytes;
        for (to, batch) in batch_by_node(messages) {
            let queue = self.queues.entry(to).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.config.peer_queue.max(1));
                self.runtime.spawn(peer_sender(
                    to,
                    rx,
                    self.transport.clone(),
                    self.peers.clone(),
                    self.config.send_timeout,
                    max_bytes,
                ));
                tx
            });
            for rpc in split_batch(batch, max_bytes) {
                if queue.try_send(rpc).is_err() {
                    tracing::debug!(peer = %to, "the peer's send queue is full; dropped Raft messages");
                }
            }
        }
    }
}

/// The approximate encoded size of `messages` (see [`crate::MessageBody::approx_size`]).
fn batch_bytes(messages: &[Message]) -> u64 {
    messages.iter().map(|m| m.body.approx_size()).sum()
}

/// Splits one peer's messages, in order, into batches of at most `max_bytes` each: one
/// round's appends to a follower may add up to more than a transport frame holds, and an RPC
/// over it is refused whole, every time it is retried. A single message over `max_bytes`
/// cannot be sent at all; it is dropped with an error (`RaftDriver::add_group` refuses
/// groups whose configuration allows one, so only a snapshot chunk of a group of thousands
/// of members, or a bug, gets here).
fn split_batch(messages: Vec<Message>, max_bytes: u64) -> Vec<Vec<Message>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    for m in messages {
        let size = m.body.approx_size();
        if size > max_bytes {
            tracing::error!(group = %m.group, peer = %m.to, kind = m.body.name(), size, max_bytes, "a Raft message is larger than one RPC may be; dropped");
            continue;
        }
        if !batch.is_empty() && bytes + size > max_bytes {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(m);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// Sends queued batches to one peer, one RPC at a time, merging what queued meanwhile while
/// the RPC stays within `max_bytes` (each queued batch already does, see [`split_batch`]).
async fn peer_sender(
    to: NodeId,
    mut rx: mpsc::Receiver<Vec<Message>>,
    transport: Arc<dyn RpcTransport>,
    peers: Peers,
    timeout: Duration,
    max_bytes: u64,
) {
    // A queued batch taken while merging that did not fit: it starts the next RPC.
    let mut next: Option<Vec<Message>> = None;
    loop {
        let mut batch = match next.take() {
            Some(batch) => batch,
            None => match rx.recv().await {
                Some(batch) => batch,
                None => return,
            },
        };
        let mut bytes = batch_bytes(&batch);
        while let Ok(more) = rx.try_recv() {
            let more_bytes = batch_bytes(&more);
            if bytes + more_bytes > max_bytes {
                next = Some(more);
                break;
            }
            bytes += more_bytes;
            batch.extend(more);
        }
        let addr = peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&to)
            .copied();
        let Some(addr) = addr else {
            tracing::debug!(peer = %to, "no address for the peer; dropped Raft messages");
            continue;
        };
        if let Err(e) = transport.call::<RaftBatch>(addr, &batch, timeout).await {
            tracing::debug!(peer = %to, error = %e, "sending Raft messages failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, EntryPayload};
    use crate::message::MessageBody;
    use shoal_core::GroupId;

    /// An append to n2 carrying one command of `len` bytes.
    fn append(len: usize) -> Message {
        Message {
            group: GroupId::new(1),
            from: NodeId::new(1),
            to: NodeId::new(2),
            term: 1,
            config_index: 1,
            body: MessageBody::Append {
                prev_index: 1,
                prev_term: 1,
                entries: vec![Entry {
                    index: 2,
                    term: 1,
                    payload: EntryPayload::Command(vec![0; len].into()),
                }],
                commit: 1,
                sent_at: 0,
            },
        }
    }

    #[test]
    fn a_large_round_is_split_in_order_and_no_batch_passes_the_limit() {
        const MIB: usize = 1 << 20;
        // 32 MiB of 1 MiB appends, as a follower may be sent in one round.
        let messages: Vec<Message> = (0..32).map(|_| append(MIB)).collect();
        let max = 12 << 20;
        let batches = split_batch(messages.clone(), max);
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| batch_bytes(b) <= max));
        assert_eq!(batches.concat(), messages, "nothing lost or reordered");
        // Small rounds stay one batch; a message over the limit on its own is dropped.
        assert_eq!(split_batch(vec![append(10), append(10)], max).len(), 1);
        let split = split_batch(vec![append(10), append(13 << 20), append(10)], max);
        assert_eq!(split, vec![vec![append(10), append(10)]]);
        assert!(split_batch(Vec::new(), max).is_empty());
    }

    #[test]
    fn the_default_rpc_limit_carries_the_default_groups_largest_message() {
        let config = DriverConfig::default();
        assert!(crate::RaftConfig::default().max_message_bytes() <= config.max_rpc_bytes);
        // With a quarter of the transport's default 16 MiB frame to spare.
        assert!(config.max_rpc_bytes <= 12 << 20);
    }
}

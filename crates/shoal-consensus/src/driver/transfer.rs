//! Snapshot transfers beside Raft traffic: the leader streams a state machine's snapshot
//! source to the follower as [`SnapshotChunk`] RPCs, one chunk in flight; the follower writes
//! each chunk into its state machine's sink on the blocking pool and hands the whole to its
//! host with the snapshot's Raft message.

use super::{Command, DriverConfig, InboundChunk, Peers};
use crate::entry::LogIndex;
use crate::message::{Message, MessageBody};
use crate::snapshot::{SnapshotMeta, SnapshotSink, SnapshotSource, StateMachine};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_core::{GroupId, NodeId};
use shoal_transport::{Rpc, RpcTransport, RpcTransportExt};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The RPC that carries a snapshot's data, one chunk per call, in order.
pub struct SnapshotChunk;

impl Rpc for SnapshotChunk {
    const NAME: &'static str = "shoal.raft.snapshot_chunk";
    type Request = ChunkRequest;
    type Response = ChunkAnswer;
}

/// One chunk of a snapshot transfer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The [`MessageBody::Snapshot`] the transfer ends with (its sender, group, term and
    /// metadata identify the transfer).
    pub message: Message,
    /// The chunk's place in the transfer, from 0.
    pub seq: u32,
    /// Whether it is the last chunk.
    pub last: bool,
    /// The chunk.
    pub data: Bytes,
}

/// The receiver's answer to a chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkAnswer {
    /// Taken; send the next.
    Continue,
    /// The last chunk was taken and the snapshot handed to the group.
    Done,
    /// The transfer failed (and is forgotten): start over.
    Refused(String),
}

/// Streams one snapshot to its follower, a chunk at a time, and reports how it went.
pub(super) async fn send_snapshot<M: StateMachine + Send + 'static>(
    group: GroupId,
    message: Message,
    source: M::Source,
    transport: Arc<dyn RpcTransport>,
    peers: Peers,
    config: DriverConfig,
    commands: mpsc::Sender<Command<M>>,
) {
    let peer = message.to;
    let result = stream_snapshot(message, source, transport, peers, &config).await;
    if let Err(error) = &result {
        tracing::info!(%group, %peer, %error, "snapshot transfer failed");
    }
    let result = result.map_err(|_| ());
    let _ = commands
        .send(Command::ReportSnapshot {
            group,
            peer,
            result,
        })
        .await;
}

/// Reads the next chunk on the blocking pool (a source over a durable store reads disk).
async fn next_chunk<S: SnapshotSource + 'static>(
    mut source: S,
) -> Result<(S, Option<Bytes>), String> {
    let (source, chunk) = tokio::task::spawn_blocking(move || {
        let chunk = source.next_chunk();
        (source, chunk)
    })
    .await
    .map_err(|e| format!("snapshot reader panicked: {e}"))?;
    Ok((source, chunk.map_err(|e| e.to_string())?))
}

async fn stream_snapshot<S: SnapshotSource + 'static>(
    message: Message,
    source: S,
    transport: Arc<dyn RpcTransport>,
    peers: Peers,
    config: &DriverConfig,
) -> Result<LogIndex, String> {
    let peer = message.to;
    let index = source.index();
    let (mut source, first) = next_chunk(source).await?;
    let mut chunk = first.ok_or("a snapshot without chunks")?;
    for seq in 0u32.. {
        // One chunk ahead, to mark the last.
        let (next_source, next) = next_chunk(source).await?;
        source = next_source;
        if chunk.len() as u64 > config.max_rpc_bytes {
            return Err(format!(
                "a chunk of {} B over max_rpc_bytes ({} B)",
                chunk.len(),
                config.max_rpc_bytes
            ));
        }
        let addr = peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .copied()
            .ok_or("no address for the peer")?;
        let request = ChunkRequest {
            message: message.clone(),
            seq,
            last: next.is_none(),
            data: chunk,
        };
        let answer = transport
            .call::<SnapshotChunk>(addr, &request, config.send_timeout)
            .await
            .map_err(|e| e.to_string())?;
        match (answer, next) {
            (ChunkAnswer::Continue, Some(next)) => chunk = next,
            (ChunkAnswer::Done, None) => return Ok(index),
            (ChunkAnswer::Refused(why), _) => return Err(format!("refused: {why}")),
            (answer, _) => return Err(format!("unexpected answer {answer:?}")),
        }
    }
    Err("a snapshot of more than 2^32 chunks".into())
}

/// A transfer being received.
struct Incoming<K> {
    from: NodeId,
    meta: SnapshotMeta,
    next_seq: u32,
    sink: Option<K>,
    /// When its latest chunk arrived.
    last_chunk: std::time::Instant,
}

/// A transfer no chunk arrived for in this long is dropped (its sender gave up or died),
/// with what it held.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Receives every snapshot transfer to this node, one chunk at a time: the first chunk opens
/// a sink from the group's state machine, each chunk is written on the blocking pool, and
/// the last hands the whole to the host. A new transfer for a group replaces an unfinished
/// one.
pub(super) async fn receive_snapshots<M: StateMachine + Send + 'static>(
    mut chunks: mpsc::Receiver<InboundChunk>,
    commands: mpsc::Sender<Command<M>>,
) {
    let mut incoming: HashMap<GroupId, Incoming<M::Sink>> = HashMap::new();
    while let Some(chunk) = chunks.recv().await {
        let abandoned: Vec<GroupId> = incoming
            .iter()
            .filter(|(_, t)| t.last_chunk.elapsed() >= ABANDONED_AFTER)
            .map(|(&g, _)| g)
            .collect();
        for group in abandoned {
            if let Some(transfer) = incoming.remove(&group) {
                discard_off_runtime(transfer.sink);
            }
        }
        let answer = receive_chunk(&mut incoming, chunk.source, chunk.request, &commands).await;
        let answer = answer.unwrap_or_else(ChunkAnswer::Refused);
        let _ = chunk.reply.send(answer);
    }
}

/// Drops a sink (which discards what it holds, possibly writing) off the runtime.
fn discard_off_runtime<K: Send + 'static>(sink: Option<K>) {
    if let Some(sink) = sink {
        tokio::task::spawn_blocking(move || drop(sink));
    }
}

async fn receive_chunk<M: StateMachine + Send + 'static>(
    incoming: &mut HashMap<GroupId, Incoming<M::Sink>>,
    source: NodeId,
    request: ChunkRequest,
    commands: &mpsc::Sender<Command<M>>,
) -> Result<ChunkAnswer, String> {
    let MessageBody::Snapshot { meta } = &request.message.body else {
        return Err("not a snapshot transfer".into());
    };
    let group = request.message.group;
    if request.seq == 0 {
        if let Some(old) = incoming.remove(&group) {
            discard_off_runtime(old.sink);
        }
        let (reply, rx) = oneshot::channel();
        commands
            .send(Command::ReceiveSnapshot {
                group,
                meta: meta.clone(),
                reply,
            })
            .await
            .map_err(|_| "the Raft driver has stopped")?;
        let sink = rx
            .await
            .map_err(|_| "the Raft driver has stopped")?
            .map_err(|e| e.to_string())?;
        incoming.insert(
            group,
            Incoming {
                from: source,
                meta: meta.clone(),
                next_seq: 0,
                sink: Some(sink),
                last_chunk: std::time::Instant::now(),
            },
        );
    }
    let Some(transfer) = incoming.get_mut(&group) else {
        return Err("no transfer under way for the group".into());
    };
    if transfer.from != source || transfer.meta != *meta || transfer.next_seq != request.seq {
        let old = incoming.remove(&group).and_then(|t| t.sink);
        discard_off_runtime(old);
        return Err(format!(
            "chunk {} does not continue the transfer under way",
            request.seq
        ));
    }
    let Some(mut sink) = transfer.sink.take() else {
        incoming.remove(&group);
        return Err("the transfer's sink is gone".into());
    };
    let (data, last) = (request.data, request.last);
    let written = tokio::task::spawn_blocking(move || {
        sink.write(&data)?;
        if last {
            sink.finish().map(Err)
        } else {
            Ok(Ok(sink))
        }
    })
    .await
    .map_err(|e| format!("snapshot writer panicked: {e}"))?;
    match written {
        Ok(Ok(sink)) => {
            transfer.sink = Some(sink);
            transfer.next_seq += 1;
            transfer.last_chunk = std::time::Instant::now();
            Ok(ChunkAnswer::Continue)
        }
        Ok(Err(staged)) => {
            incoming.remove(&group);
            commands
                .send(Command::SnapshotReceived {
                    message: request.message,
                    staged,
                })
                .await
                .map_err(|_| "the Raft driver has stopped")?;
            Ok(ChunkAnswer::Done)
        }
        Err(error) => {
            incoming.remove(&group);
            Err(error.to_string())
        }
    }
}

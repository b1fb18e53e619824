//! A node's side of the meta range: finding its leader, asking it, and keeping this node's
//! part of it current (the node's registration, and the descriptors of the ranges it leads).

use super::api::{MetaRequest, MetaResponse, MetaRpc};
use super::meta::{MetaAnswer, MetaOp, NodeRecord, MAX_RECORD, META_RANGE};
use super::node::Inner;
use super::topology::TopologyInner;
use shoal_core::{Error, ErrorCode, Generation, NodeId, RangeDescriptor, RangeId};
use shoal_transport::RpcTransportExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often [`upkeep`] looks for descriptors to record even when nothing woke it (a node
/// that just became a range's leader records it then).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How many upkeep wakes apart the store bindings are read again.
const BINDINGS_EVERY: u64 = 5;

/// Where meta requests start from: this node's topology, and its store when it has one
/// (which knows the meta range's leader first-hand if it hosts a replica, and answers
/// locally when it leads).
#[derive(Clone, Copy)]
pub(crate) struct MetaPath<'a> {
    pub(crate) topology: &'a TopologyInner,
    pub(crate) local: Option<&'a Inner>,
}

/// Where to ask the meta range next, after `attempt` failed tries: its leader as this node
/// knows it, else its voters in turn, else (a node that knows nothing of it yet) every known
/// peer in turn, each of which names the leader or hosts no replica.
fn guess(path: MetaPath<'_>, attempt: usize) -> Option<NodeId> {
    if let Some(inner) = path.local {
        if inner.groups.descriptor(META_RANGE).is_some() {
            if let Some(leader) = inner.leader_of(META_RANGE) {
                if attempt == 0 {
                    return Some(leader);
                }
            }
        }
    }
    let topology = path.topology;
    let known = topology
        .known_ranges()
        .descriptors()
        .find(|d| d.id == META_RANGE)
        .cloned();
    if let Some(meta) = known {
        if attempt == 0 {
            if let Some(hint) = meta.leader_hint {
                return Some(hint);
            }
        }
        let voters: Vec<NodeId> = meta.voters().collect();
        if !voters.is_empty() {
            return Some(voters[attempt % voters.len()]);
        }
    }
    // Not this node itself without its store: it hosts no replica to answer from.
    let peers: Vec<NodeId> = topology
        .peers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .copied()
        .filter(|&node| path.local.is_some() || node != topology.id)
        .collect();
    (!peers.is_empty()).then(|| peers[attempt % peers.len()])
}

/// Sends `request` to the meta range's leader, following `NotLeader` hints and retrying,
/// with backoff, errors that say the request was not served (no leader or replica there, a
/// timeout, overload, shutdown), within `timeout`. A timeout may hide a change that applied;
/// retrying it is harmless, since changes are idempotent (recording, registering) or cost
/// only a gap (an allocation). An unknown outcome reported by the leader is returned.
pub(crate) async fn call(
    path: MetaPath<'_>,
    request: MetaRequest,
    timeout: Duration,
) -> Result<MetaResponse, Error> {
    let topology = path.topology;
    let deadline = Instant::now() + timeout;
    let mut hinted: Option<NodeId> = None;
    let mut attempt = 0usize;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let node = hinted.take().or_else(|| guess(path, attempt));
        let local = path.local.filter(|inner| Some(inner.id) == node);
        let result = match (node, local) {
            (Some(_), Some(inner)) => {
                super::service::answer_meta(inner, request.clone(), remaining).await
            }
            (Some(node), None) => {
                let addr = topology
                    .peers
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&node)
                    .copied();
                match addr {
                    Some(addr) => {
                        topology
                            .client
                            .call::<MetaRpc>(addr, &request, remaining)
                            .await
                    }
                    None => Err(Error::new(
                        ErrorCode::Unavailable,
                        format!("no address for {node}"),
                    )),
                }
            }
            (None, _) => Err(Error::new(
                ErrorCode::Unavailable,
                "no replica of the meta range is known",
            )),
        };
        let error = match result {
            Ok(response) => return Ok(response),
            Err(e) => e,
        };
        match &error.code {
            ErrorCode::NotLeader { hint } => {
                if let Some(hint) = hint {
                    if let Some(addr) = hint.addr {
                        topology
                            .peers
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(hint.node)
                            .or_insert(addr);
                    }
                    hinted = Some(hint.node).filter(|&n| Some(n) != node);
                }
            }
            ErrorCode::Unavailable
            | ErrorCode::Unreachable
            | ErrorCode::Timeout
            | ErrorCode::RangeNotFound { .. }
            | ErrorCode::ShuttingDown
            | ErrorCode::Overloaded => {}
            _ => return Err(error),
        }
        if Instant::now() >= deadline {
            return Err(error);
        }
        attempt += 1;
        // A hint is followed at once, the first time; nodes that keep naming each other
        // (an election under way) are backed off from like any other failure.
        if hinted.is_none() || attempt > 2 {
            let backoff = Duration::from_millis(10 << attempt.min(5));
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }
}

/// Applies `op` in the meta range.
pub(crate) async fn apply(path: MetaPath<'_>, op: MetaOp) -> Result<MetaAnswer, Error> {
    let limit = path.topology.request_limit();
    match call(path, MetaRequest::Apply(op), limit).await? {
        MetaResponse::Applied(answer) => Ok(answer),
        other => Err(unexpected(&other)),
    }
}

/// A new range id, never handed out before.
pub(crate) async fn allocate_range_id(path: MetaPath<'_>) -> Result<RangeId, Error> {
    match apply(path, MetaOp::AllocateRangeIds { count: 1 }).await? {
        MetaAnswer::Allocated { first } => Ok(first),
        other => Err(Error::new(
            ErrorCode::Internal,
            format!("an allocation answered {other:?}"),
        )),
    }
}

/// The recorded descriptor holding `key`, from the meta range, within `timeout`.
pub(crate) async fn lookup(
    path: MetaPath<'_>,
    key: &[u8],
    timeout: Duration,
) -> Result<Option<RangeDescriptor>, Error> {
    match call(path, MetaRequest::Lookup { key: key.to_vec() }, timeout).await? {
        MetaResponse::Descriptor(found) => Ok(found),
        other => Err(unexpected(&other)),
    }
}

/// Every recorded descriptor.
pub(crate) async fn descriptors(path: MetaPath<'_>) -> Result<Vec<RangeDescriptor>, Error> {
    let limit = path.topology.request_limit();
    match call(path, MetaRequest::Descriptors, limit).await? {
        MetaResponse::Descriptors(found) => Ok(found),
        other => Err(unexpected(&other)),
    }
}

/// Every node's store binding.
pub(crate) async fn bindings(path: MetaPath<'_>) -> Result<Vec<(NodeId, u64)>, Error> {
    let limit = path.topology.request_limit();
    match call(path, MetaRequest::Bindings, limit).await? {
        MetaResponse::Bindings(found) => Ok(found),
        other => Err(unexpected(&other)),
    }
}

/// Binds this node to its store in the meta range (see `identity.rs`): admitted, or refused
/// (for good: logged as an error) when the node id belongs to another store. `Ok(false)`
/// while the meta range cannot be reached.
async fn bind_store(inner: &Inner) -> Result<bool, Error> {
    let identity = &inner.identity;
    let op = MetaOp::BindStore {
        node: inner.id,
        store: identity.store(),
        cluster: identity
            .cluster()
            .unwrap_or_else(super::identity::random_u64),
    };
    match apply(inner.meta_path(), op).await? {
        MetaAnswer::Bound { cluster } => {
            if let Err(e) = identity.bound(cluster) {
                tracing::error!(node = %inner.id, error = %e, "this store is not the cluster's");
            }
            Ok(true)
        }
        MetaAnswer::BoundElsewhere { store } => {
            let why = format!(
                "node {} belongs to store {store:016x}, and this data directory is store {:016x}: \
                 the node's data is gone. This store hosts nothing and the other nodes refuse \
                 its Raft traffic; remove node {} from its ranges and start this machine under a \
                 new node id",
                inner.id,
                identity.store(),
                inner.id
            );
            tracing::error!(node = %inner.id, "{why}");
            identity.refuse(why);
            Ok(true)
        }
        other => Err(Error::new(
            ErrorCode::Internal,
            format!("a store binding answered {other:?}"),
        )),
    }
}

/// Every registered node.
pub(crate) async fn nodes(path: MetaPath<'_>) -> Result<Vec<NodeRecord>, Error> {
    let limit = path.topology.request_limit();
    match call(path, MetaRequest::Nodes, limit).await? {
        MetaResponse::Nodes(found) => Ok(found),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(response: &MetaResponse) -> Error {
    Error::new(
        ErrorCode::Internal,
        format!("the meta range answered {response:?}"),
    )
}

/// Keeps this node's part of the meta range current: registers the node until that
/// succeeds, and records the descriptor of every range this node leads whenever its
/// generation is one this node has not recorded. Woken when a hosted descriptor changes and
/// every [`UPKEEP_INTERVAL`]; a failed record is tried again at the next wake. A batch the
/// meta range refuses is recorded one descriptor at a time, so one bad descriptor (which is
/// logged and not tried again) cannot hold back the rest.
pub(crate) async fn upkeep(inner: Arc<Inner>) {
    let mut recorded: HashMap<RangeId, Generation> = HashMap::new();
    let mut registered = false;
    let mut bound = false;
    let mut ticks: u64 = 0;
    let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = inner.groups.descriptors_changed() => {}
        }
        ticks += 1;
        if !bound {
            match bind_store(&inner).await {
                Ok(done) => bound = done,
                Err(e) => {
                    tracing::debug!(node = %inner.id, error = %e, "store not bound in the meta range yet")
                }
            }
        }
        // The bindings other nodes' traffic is checked against, read again every few wakes.
        if ticks % BINDINGS_EVERY == 1 {
            if let Ok(found) = bindings(inner.meta_path()).await {
                inner.topology.inner.set_bindings(found);
            }
        }
        // A refused store does not overwrite the record of the node whose id it carries.
        if !registered && bound && inner.identity.may_host() {
            let record = NodeRecord {
                id: inner.id,
                addr: inner.topology.addr(),
                zone: inner.config.zone.clone(),
            };
            match apply(inner.meta_path(), MetaOp::RegisterNode(record)).await {
                Ok(_) => registered = true,
                Err(e) => {
                    tracing::debug!(node = %inner.id, error = %e, "not registered in the meta range yet")
                }
            }
        }
        let due: Vec<RangeDescriptor> = inner
            .groups
            .descriptors()
            .into_iter()
            .filter(|d| recorded.get(&d.id) != Some(&d.generation))
            .filter(|d| inner.leads(d.id))
            .take(MAX_RECORD)
            .collect();
        if due.is_empty() {
            continue;
        }
        match apply(inner.meta_path(), MetaOp::Record(due.clone())).await {
            Ok(_) => {
                for d in due {
                    recorded.insert(d.id, d.generation);
                }
            }
            Err(e) if e.code == ErrorCode::InvalidRequest => {
                for d in due {
                    match apply(inner.meta_path(), MetaOp::Record(vec![d.clone()])).await {
                        Ok(_) => {}
                        Err(e) if e.code == ErrorCode::InvalidRequest => {
                            tracing::error!(node = %inner.id, range = %d.id, error = %e, "the meta range refuses this range's descriptor");
                        }
                        Err(_) => continue,
                    }
                    recorded.insert(d.id, d.generation);
                }
            }
            Err(e) => {
                tracing::debug!(node = %inner.id, error = %e, "could not record descriptors in the meta range")
            }
        }
    }
}

//! A node's side of the meta range: finding its leader, asking it, and keeping this node's
//! part of it current (the node's registration, and the descriptors of the ranges it leads).

use super::api::{MetaRequest, MetaResponse, MetaRpc};
use super::meta::{MetaAnswer, MetaOp, NodeRecord, MAX_RECORD, META_RANGE};
use super::node::{Inner, DEFAULT_DEADLINE};
use shoal_core::{Error, ErrorCode, Generation, NodeId, RangeDescriptor, RangeId};
use shoal_transport::RpcTransportExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often [`upkeep`] looks for descriptors to record even when nothing woke it (a node
/// that just became a range's leader records it then).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Where to ask the meta range next, after `attempt` failed tries: its leader as this node
/// knows it, else its voters in turn, else (a node that knows nothing of it yet) every known
/// peer in turn, each of which names the leader or hosts no replica.
fn guess(inner: &Inner, attempt: usize) -> Option<NodeId> {
    if inner.shared.descriptor(META_RANGE).is_some() {
        if let Some(leader) = inner.driver.leader(META_RANGE).and_then(|l| l.id) {
            if attempt == 0 {
                return Some(leader);
            }
        }
    }
    let known = inner
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
    let peers: Vec<NodeId> = inner
        .peers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .copied()
        .collect();
    (!peers.is_empty()).then(|| peers[attempt % peers.len()])
}

/// Sends `request` to the meta range's leader, following `NotLeader` hints and retrying
/// errors worth retrying with backoff, within the store's request timeout. Changes are
/// idempotent or harmless to repeat (recording, registering; an allocation repeated after an
/// unknown outcome only leaves a gap), so an unknown outcome is returned, not retried.
pub(crate) async fn call(inner: &Inner, request: MetaRequest) -> Result<MetaResponse, Error> {
    let limit = if inner.config.request_timeout.is_zero() {
        DEFAULT_DEADLINE
    } else {
        inner.config.request_timeout
    };
    let deadline = Instant::now() + limit;
    let mut hinted: Option<NodeId> = None;
    let mut attempt = 0usize;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let node = hinted.take().or_else(|| guess(inner, attempt));
        let result = match node {
            Some(node) if node == inner.id => {
                super::service::answer_meta(inner, request.clone(), remaining).await
            }
            Some(node) => {
                let addr = inner
                    .peers
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&node)
                    .copied();
                match addr {
                    Some(addr) => {
                        inner
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
            None => Err(Error::new(
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
                        inner
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
        if hinted.is_none() {
            let backoff = Duration::from_millis(10 << attempt.min(5));
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }
}

/// Applies `op` in the meta range.
pub(crate) async fn apply(inner: &Inner, op: MetaOp) -> Result<MetaAnswer, Error> {
    match call(inner, MetaRequest::Apply(op)).await? {
        MetaResponse::Applied(answer) => Ok(answer),
        other => Err(unexpected(&other)),
    }
}

/// A new range id, never handed out before.
pub(crate) async fn allocate_range_id(inner: &Inner) -> Result<RangeId, Error> {
    match apply(inner, MetaOp::AllocateRangeIds { count: 1 }).await? {
        MetaAnswer::Allocated { first } => Ok(first),
        other => Err(Error::new(
            ErrorCode::Internal,
            format!("an allocation answered {other:?}"),
        )),
    }
}

/// The recorded descriptor holding `key`, from the meta range.
pub(crate) async fn lookup(inner: &Inner, key: &[u8]) -> Result<Option<RangeDescriptor>, Error> {
    match call(inner, MetaRequest::Lookup { key: key.to_vec() }).await? {
        MetaResponse::Descriptor(found) => Ok(found),
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
/// every [`UPKEEP_INTERVAL`]; a failed record is tried again at the next wake.
pub(crate) async fn upkeep(inner: Arc<Inner>) {
    let mut recorded: HashMap<RangeId, Generation> = HashMap::new();
    let mut registered = false;
    let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = inner.shared.changed.notified() => {}
        }
        if !registered {
            let record = NodeRecord {
                id: inner.id,
                addr: inner.addr,
                zone: inner.config.zone.clone(),
            };
            match apply(&inner, MetaOp::RegisterNode(record)).await {
                Ok(_) => registered = true,
                Err(e) => {
                    tracing::debug!(node = %inner.id, error = %e, "not registered in the meta range yet")
                }
            }
        }
        let due: Vec<RangeDescriptor> = inner
            .shared
            .descriptors()
            .into_iter()
            .filter(|d| recorded.get(&d.id) != Some(&d.generation))
            .filter(|d| inner.driver.leader(d.id).and_then(|l| l.id) == Some(inner.id))
            .take(MAX_RECORD)
            .collect();
        if due.is_empty() {
            continue;
        }
        match apply(&inner, MetaOp::Record(due.clone())).await {
            Ok(_) => {
                for d in due {
                    recorded.insert(d.id, d.generation);
                }
            }
            Err(e) => {
                tracing::debug!(node = %inner.id, error = %e, "could not record descriptors in the meta range")
            }
        }
    }
}

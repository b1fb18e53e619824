//! Sends a key-value operation to the leader of the range holding its key, as a gateway
//! must: it finds the range in shoal-routing's [`RangeCache`] (asking its [`Backend`] on a
//! miss, coalesced), goes to the cached leader or else the range's voters in turn (straight
//! to the store when that is this process's own node), follows
//! `NotLeader` hints, replaces descriptors on `RangeKeyMismatch`, and backs off on transient
//! errors, all within the request's deadline.
//!
//! A write is retried only when it certainly did not take effect: refused before it was
//! proposed (`NotLeader`, `RangeKeyMismatch`, `RangeNotFound`, `Overloaded`,
//! `ShuttingDown`), refused as malformed (`TooLarge`, `InvalidRequest`, `UnknownMethod`,
//! `UnsupportedVersion`), or never sent (`Unreachable`). Any other failure after it left
//! (`Timeout`, `Unavailable`, `OutcomeUnknown`, an answer that does not decode, an internal
//! error) is an unknown outcome, never a failure; when in doubt, unknown.
//!
//! Everything, range lookups included, happens within the request's deadline; a write is
//! not sent with less than [`MIN_WRITE_TIME`] left, so that running out of time before it
//! left stays a certain failure.

use crate::backend::Backend;
use shoal_consensus::ConfChange;
use shoal_core::{Error, ErrorCode, NodeId, RangeDescriptor, RangeId};
use shoal_membership::{MemberEvent, MemberEventKind};
use shoal_routing::{ErrorAction, RangeCache, RangeCacheConfig};
use shoal_store::{
    ChangeReplicasRequest, ChangeReplicasRpc, DigestRpc, KvOp, KvRequest, KvResponse, KvRpc,
    RangeDigest, RangeReport, SplitRequest, SplitResponse, SplitRpc, StatusRpc, StoreError,
};
use shoal_transport::{Rpc, RpcClient, RpcTransportExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a retry waits, however many came before.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// The longest one attempt of a request waits for its node's answer. A leader cut off by a
/// partition, or stopped, must not hold requests to their deadline while the other
/// replicas elect a new one (about an election timeout): a read then tries another
/// replica, a write answers that its outcome is unknown.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The least time left for which a write is still sent.
pub const MIN_WRITE_TIME: Duration = Duration::from_millis(20);

/// Routes operations to range leaders. Cheap to clone.
#[derive(Clone)]
pub struct KvRouter {
    backend: Arc<dyn Backend>,
    client: Arc<RpcClient>,
    cache: Arc<RangeCache>,
}

/// Why a lookup failed, for the cache's miss coalescing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LookupError(String);

impl KvRouter {
    /// A router that looks ranges up through `backend` (a data node's store, which answers
    /// from its own ranges, gossip or the meta range; or a standalone gateway's topology)
    /// and sends requests with its client, or straight to the store for ranges a data node
    /// leads itself. Nodes membership declares dead or gone are evicted from its cache as
    /// it hears of them, so requests go to the other replicas at once, and restored when
    /// they come back (a task follows membership for as long as the router or the backend
    /// lasts; call from within a tokio runtime).
    pub fn new(backend: impl Backend) -> Self {
        let client = backend.client();
        let cache = Arc::new(RangeCache::new(RangeCacheConfig::default()));
        tokio::spawn(evict_failed_nodes(
            Arc::downgrade(&cache),
            backend.subscribe_members(),
        ));
        Self {
            backend: Arc::new(backend),
            client,
            cache,
        }
    }

    /// What this router looks ranges up through.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The range cache (for status and tests).
    pub fn cache(&self) -> &RangeCache {
        &self.cache
    }

    /// Sends `op` for `key` to its range's leader until it succeeds, fails for good, or
    /// `deadline` passes (the last error then), each attempt waiting at most
    /// [`ATTEMPT_TIMEOUT`]. A write that may have taken effect fails with
    /// [`ErrorCode::OutcomeUnknown`].
    pub async fn send(&self, key: &[u8], op: KvOp, deadline: Instant) -> Result<KvResponse, Error> {
        let write = matches!(op, KvOp::Write { .. });
        let mut attempt: u32 = 0;
        let mut last = Error::new(
            ErrorCode::Unavailable,
            "no attempt made before the deadline",
        );
        loop {
            if Instant::now() >= deadline {
                return Err(last);
            }
            let backend = self.backend.clone();
            let lookup = self.cache.resolve(key, move |k| async move {
                backend
                    .lookup(&k)
                    .await
                    .map_err(|e| LookupError(e.to_string()))
            });
            // A lookup cut short here is taken over by another caller waiting for it.
            let resolved = match tokio::time::timeout_at(deadline.into(), lookup).await {
                Ok(resolved) => resolved,
                Err(_) => return Err(last),
            };
            let route = match resolved {
                Ok(route) => route,
                Err(shoal_routing::ResolveError::Refused(
                    e @ shoal_routing::RangeCacheError::KeyTooLarge { .. },
                )) => return Err(Error::new(ErrorCode::TooLarge, e.to_string())),
                Err(e) => {
                    last = Error::new(ErrorCode::Unavailable, format!("range lookup: {e}"));
                    attempt += 1;
                    backoff(attempt, deadline).await;
                    continue;
                }
            };
            let Some(node) = route.leader.or_else(|| self.voter(key, attempt)) else {
                last = Error::new(ErrorCode::Unavailable, "the range has no voters");
                attempt += 1;
                backoff(attempt, deadline).await;
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || (write && remaining < MIN_WRITE_TIME) {
                return Err(last);
            }
            let request = KvRequest {
                range: route.range,
                generation: route.generation,
                op: op.clone(),
            };
            let attempt_timeout = remaining.min(ATTEMPT_TIMEOUT);
            let answer = match self.local(node) {
                // This process's own store: no socket, no encoding.
                Some(store) => {
                    tokio::time::timeout(attempt_timeout, store.serve(request, attempt_timeout))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::new(ErrorCode::Timeout, "no answer in time"))
                        })
                }
                None => match self.backend.peer_addr(node) {
                    Some(addr) => {
                        self.client
                            .call::<KvRpc>(addr, &request, attempt_timeout)
                            .await
                    }
                    None => {
                        last = Error::new(ErrorCode::Unreachable, format!("no address for {node}"));
                        self.cache
                            .observe_error(key, &route, &ErrorCode::NotLeader { hint: None });
                        attempt += 1;
                        backoff(attempt, deadline).await;
                        continue;
                    }
                },
            };
            let error = match answer {
                Ok(response) => {
                    // Only a write proves the node leads (a stale read is served by any
                    // replica).
                    if route.leader.is_none() && write {
                        self.cache.set_leader(key, route.range, node);
                    }
                    return Ok(response);
                }
                Err(e) => e,
            };
            if write && may_have_applied(&error.code) {
                return Err(Error::new(
                    ErrorCode::OutcomeUnknown,
                    format!("the write may or may not have been applied: {error}"),
                ));
            }
            attempt += 1;
            let action = match &error.code {
                // Nothing reached the node, or it did not answer in time (cut off,
                // stopped): try another replica.
                ErrorCode::Unreachable | ErrorCode::Timeout => {
                    self.cache
                        .observe_error(key, &route, &ErrorCode::NotLeader { hint: None });
                    ErrorAction::Backoff
                }
                code => self.cache.observe_error(key, &route, code),
            };
            last = error;
            match action {
                ErrorAction::Retry | ErrorAction::Refresh if attempt < 3 => {}
                ErrorAction::Retry | ErrorAction::Refresh | ErrorAction::Backoff => {
                    backoff(attempt, deadline).await
                }
                ErrorAction::Fail => return Err(last),
            }
        }
    }

    /// Splits range `range` (at `at`, or its size median) through its leader: the node
    /// this store believes leads it, else each recorded voter, following `NotLeader` hints,
    /// until `deadline`.
    pub async fn split(
        &self,
        range: RangeId,
        at: Option<Vec<u8>>,
        deadline: Instant,
    ) -> Result<SplitResponse, Error> {
        self.to_leader::<SplitRpc>(range, &SplitRequest { range, at }, deadline)
            .await
    }

    /// Changes range `range`'s replicas through its leader (found as for
    /// [`KvRouter::split`]); the range's descriptor after the change (`None` if the leader removed itself).
    /// A change is not idempotent (a repeated add is refused as `AlreadyMember`), so only
    /// refusals before it was proposed are retried.
    pub async fn change_replicas(
        &self,
        range: RangeId,
        change: ConfChange,
        deadline: Instant,
    ) -> Result<Option<RangeDescriptor>, Error> {
        let request = ChangeReplicasRequest { range, change };
        self.to_leader::<ChangeReplicasRpc>(range, &request, deadline)
            .await
    }

    /// Sends an administrative request about `range` to its leader: the node this store
    /// believes leads it, else each voter the meta range records, following `NotLeader`
    /// hints and backing off on refusals made before proposal, until `deadline`. An error
    /// after the request may have been proposed is [`ErrorCode::OutcomeUnknown`].
    async fn to_leader<R: Rpc>(
        &self,
        range: RangeId,
        request: &R::Request,
        deadline: Instant,
    ) -> Result<R::Response, Error>
    where
        R::Request: Sync,
    {
        let descriptor = self.recorded(range).await?;
        let voters: Vec<NodeId> = descriptor.voters().collect();
        let mut next = self.backend.leader(range);
        let mut last = Error::new(ErrorCode::Unavailable, "no replica answered");
        for attempt in 0..voters.len().max(1) * 4 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let node = match next.take() {
                Some(node) => node,
                None => voters[attempt % voters.len().max(1)],
            };
            let Some(addr) = self.backend.peer_addr(node) else {
                continue;
            };
            match self.client.call::<R>(addr, request, remaining).await {
                Ok(done) => return Ok(done),
                Err(e) => {
                    let transient = e.code.is_retriable() || e.code == ErrorCode::Unreachable;
                    if let ErrorCode::NotLeader { hint: Some(hint) } = &e.code {
                        next = Some(hint.node);
                    } else if may_have_applied(&e.code) {
                        // Perhaps done: not to be repeated, and not to be called a failure.
                        return Err(Error::new(
                            ErrorCode::OutcomeUnknown,
                            format!("it may or may not have happened: {e}"),
                        ));
                    } else if !transient {
                        return Err(e);
                    }
                    last = e;
                    backoff(attempt as u32 + 1, deadline).await;
                }
            }
        }
        Err(last)
    }

    /// Range `range` at its newest known generation (the meta range's record joined with
    /// what this member heard; `RangeNotFound` if neither knows it).
    pub async fn recorded(&self, range: RangeId) -> Result<RangeDescriptor, Error> {
        let descriptors = self.backend.ranges().await.map_err(request_error)?;
        descriptors
            .into_iter()
            .find(|d| d.id == range)
            .ok_or_else(|| Error::new(ErrorCode::RangeNotFound { range }, "no such range"))
    }

    /// Range `range` as recorded, and what each of its replicas' nodes reports about it
    /// (asked at once; a node that does not answer by `deadline` has its error instead).
    pub async fn range_reports(
        &self,
        range: RangeId,
        deadline: Instant,
    ) -> Result<(RangeDescriptor, Vec<(NodeId, Result<RangeReport, Error>)>), Error> {
        self.ask_replicas(range, deadline, |node| async move {
            let status = if let Some(store) = self.local(node) {
                store.report(Some(range)).await
            } else {
                self.call::<StatusRpc>(node, &Some(range), deadline).await?
            };
            status
                .ranges
                .into_iter()
                .next()
                .ok_or_else(|| Error::new(ErrorCode::RangeNotFound { range }, "not hosted there"))
        })
        .await
    }

    /// Range `range` as recorded, and each replica's digest (a Merkle root at its applied
    /// index, built by its own node: the replicas hold the same data when the roots at one
    /// index agree). A node that does not answer by `deadline` has its error instead.
    pub async fn range_digests(
        &self,
        range: RangeId,
        deadline: Instant,
    ) -> Result<(RangeDescriptor, Vec<(NodeId, Result<RangeDigest, Error>)>), Error> {
        self.ask_replicas(range, deadline, |node| async move {
            if let Some(store) = self.local(node) {
                store.replica_digest(range).await
            } else {
                self.call::<DigestRpc>(node, &range, deadline).await
            }
        })
        .await
    }

    /// Range `range` as recorded, and `ask(node)` for each of its replicas' nodes, all at
    /// once.
    async fn ask_replicas<T, F>(
        &self,
        range: RangeId,
        deadline: Instant,
        ask: impl Fn(NodeId) -> F,
    ) -> Result<(RangeDescriptor, Vec<(NodeId, Result<T, Error>)>), Error>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        let descriptor = self.recorded(range).await?;
        let asking = descriptor.replicas.iter().map(|replica| async {
            let answer = tokio::time::timeout_at(deadline.into(), ask(replica.node))
                .await
                .unwrap_or_else(|_| Err(Error::new(ErrorCode::Timeout, "no answer in time")));
            (replica.node, answer)
        });
        let answers = futures_util::future::join_all(asking).await;
        Ok((descriptor, answers))
    }

    /// Calls `node` (by its known address) with `request`, by `deadline`.
    async fn call<R: shoal_transport::Rpc<Request: Sync>>(
        &self,
        node: NodeId,
        request: &R::Request,
        deadline: Instant,
    ) -> Result<R::Response, Error> {
        let addr = self
            .backend
            .peer_addr(node)
            .ok_or_else(|| Error::new(ErrorCode::Unreachable, "no known address"))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.client.call::<R>(addr, request, remaining).await
    }

    /// This process's own store, if `node` is this data node.
    fn local(&self, node: NodeId) -> Option<&shoal_store::Store> {
        self.backend.local().filter(|store| store.id() == node)
    }

    /// The `attempt`-th voter of the cached range holding `key`, in turn, less the nodes
    /// evicted as failed.
    fn voter(&self, key: &[u8], attempt: u32) -> Option<NodeId> {
        let replicas = self.cache.live_replicas(key).ok().flatten()?;
        let voters: Vec<NodeId> = replicas
            .iter()
            .filter(|r| r.role == shoal_core::ReplicaRole::Voter)
            .map(|r| r.node)
            .collect();
        (!voters.is_empty()).then(|| voters[attempt as usize % voters.len()])
    }
}

/// Evicts each node membership declares dead or gone from `cache` (its leaderships are
/// forgotten, and it is not tried), and puts it back when membership sees it again, until
/// the cache or the event stream ends.
async fn evict_failed_nodes(
    cache: std::sync::Weak<RangeCache>,
    mut events: tokio::sync::broadcast::Receiver<MemberEvent>,
) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(cache) = cache.upgrade() else {
            return;
        };
        match event.kind {
            MemberEventKind::Dead | MemberEventKind::Left => {
                let changed = cache.evict_node(event.id);
                tracing::debug!(node = %event.id, changed, "evicted a failed node from the range cache");
            }
            MemberEventKind::Joined | MemberEventKind::AliveAgain | MemberEventKind::Reclaimed => {
                let changed = cache.restore_node(event.id);
                tracing::debug!(node = %event.id, changed, "a node is back in the range cache");
            }
            MemberEventKind::Suspect | MemberEventKind::Updated => {}
        }
    }
}

/// A store failure as a request's error: the store's own code, else `Unavailable`.
pub(crate) fn request_error(e: StoreError) -> Error {
    match e {
        StoreError::Request(e) => e,
        e => Error::new(ErrorCode::Unavailable, e.to_string()),
    }
}

/// Whether a write that failed with `code` may still have taken effect: unless the code
/// says it was refused before it was proposed, or never sent, it may have.
fn may_have_applied(code: &ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::NotLeader { .. }
            | ErrorCode::RangeKeyMismatch { .. }
            | ErrorCode::RangeNotFound { .. }
            | ErrorCode::Overloaded
            | ErrorCode::ShuttingDown
            | ErrorCode::Unreachable
            | ErrorCode::TooLarge
            | ErrorCode::InvalidRequest
            | ErrorCode::UnknownMethod
            | ErrorCode::UnsupportedVersion { .. }
    )
}

/// Sleeps before retry `attempt` (exponential from 5 ms, at most [`MAX_BACKOFF`]), never past
/// `deadline`.
async fn backoff(attempt: u32, deadline: Instant) {
    let wait = Duration::from_millis(5 << attempt.min(6)).min(MAX_BACKOFF);
    let wait = wait.min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(wait).await;
}

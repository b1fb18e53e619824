//! The node RPC handlers (see [`super::api`]).

use super::api::{
    Acks, ChangeReplicasRpc, Consistency, KvEntry, KvOp, KvRequest, KvResponse, KvRpc, LookupRpc,
    MetaRequest, MetaResponse, MetaRpc, SplitResponse, SplitRpc, Versioned, MAX_SCAN_LIMIT,
};
use super::command::{Applied, Command, Condition, Rejection, WriteOp};
use super::compare::CompareRpc;
use super::meta::{self, is_system_key, META_RANGE, SYSTEM_KEY_PREFIX};
use super::node::{Inner, StoreError};
use super::topology::leader_hint;
use shoal_consensus::driver::{DriverError, Peers};
use shoal_consensus::{ConfChangeError, HostError, ProposeError, ReadError, Wait};
use shoal_core::{codec, Error, ErrorCode, RangeDescriptor, RangeEnd, RangeId};
use shoal_storage::{Scan, StorageError};
use shoal_transport::{RegisterError, RequestContext, Router};
use std::sync::Arc;
use std::time::Duration;

/// Registers the store's handlers on the node's router. The store exists by now: its
/// listener is served only once they are registered.
pub(crate) fn register(router: &mut Router, inner: Arc<Inner>) -> Result<(), RegisterError> {
    let kv = inner.clone();
    router.register::<KvRpc, _, _>(move |ctx, request| {
        let inner = kv.clone();
        async move {
            let timeout = deadline(inner.request_limit(), &ctx);
            handle_kv(&inner, request, timeout).await
        }
    })?;
    let lookup = inner.clone();
    router.register::<LookupRpc, _, _>(move |ctx, request| {
        let inner = lookup.clone();
        async move {
            let timeout = deadline(inner.request_limit(), &ctx);
            inner.lookup(&request.key, timeout).await
        }
    })?;
    let meta = inner.clone();
    router.register::<MetaRpc, _, _>(move |ctx, request| {
        let inner = meta.clone();
        async move {
            let timeout = deadline(inner.request_limit(), &ctx);
            if matches!(request, MetaRequest::Apply(_)) {
                only_members(&inner, ctx.source, "change the meta range")?;
            }
            answer_meta(&inner, request, timeout).await
        }
    })?;
    let status = inner.clone();
    router.register::<super::status::StatusRpc, _, _>(move |_ctx, range| {
        let inner = status.clone();
        async move { Ok(super::status::report(&inner, range).await) }
    })?;
    let compare = inner.clone();
    router.register::<CompareRpc, _, _>(move |ctx, request| {
        let inner = compare.clone();
        async move { super::compare::answer(&inner, ctx.source, request).await }
    })?;
    let digest = inner.clone();
    router.register::<super::compare::DigestRpc, _, _>(move |_ctx, range| {
        let inner = digest.clone();
        async move { super::compare::digest(&inner, range).await }
    })?;
    let replicas = inner.clone();
    router.register::<ChangeReplicasRpc, _, _>(move |ctx, request| {
        let inner = replicas.clone();
        async move {
            only_members(&inner, ctx.source, "change a range's replicas")?;
            if let shoal_consensus::ConfChange::AddNode { node, .. } = &request.change {
                if !inner.is_member(*node) {
                    return Err(Error::new(
                        ErrorCode::InvalidRequest,
                        format!("{node} is not one of the cluster's nodes"),
                    ));
                }
            }
            inner.change_replicas(request.range, request.change).await?;
            Ok(inner.groups.descriptor(request.range))
        }
    })?;
    router.register::<SplitRpc, _, _>(move |ctx, request| {
        let inner = inner.clone();
        async move {
            only_members(&inner, ctx.source, "split a range")?;
            match inner.split(request.range, request.at).await {
                Ok((left, right)) => Ok(SplitResponse { left, right }),
                Err(StoreError::Request(e)) => Err(e),
                Err(e) => Err(Error::new(ErrorCode::Internal, e.to_string())),
            }
        }
    })?;
    Ok(())
}

/// Refuses a caller that does not claim to be one of the cluster's nodes (the claim is the
/// transport handshake's: see the security notes in `docs/operations.md`).
fn only_members(inner: &Inner, caller: shoal_core::NodeId, what: &str) -> Result<(), Error> {
    if inner.is_member(caller) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::InvalidRequest,
            format!("only the cluster's nodes {what}"),
        ))
    }
}

/// How long a request may take: the caller's deadline, less a margin for the answer to get
/// back, within `limit` (the node's own).
pub(crate) fn deadline(limit: Duration, ctx: &RequestContext) -> Duration {
    let caller = ctx.timeout.saturating_sub(ctx.timeout / 10);
    if caller.is_zero() {
        limit
    } else {
        caller.min(limit)
    }
}

fn mismatch(descriptors: Vec<RangeDescriptor>, why: &str) -> Error {
    Error::new(ErrorCode::RangeKeyMismatch { descriptors }, why)
}

/// Refuses the empty key (which no range can store), keys over the engine's limit, and keys
/// outside `descriptor`.
fn check_keys<'k>(
    inner: &Inner,
    descriptor: &RangeDescriptor,
    keys: impl Iterator<Item = &'k [u8]>,
) -> Result<(), Error> {
    let max_key = inner.config.engine.max_key_len;
    for key in keys {
        if key.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidRequest,
                "the empty key is not a key",
            ));
        }
        if key.len() > max_key {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!("key of {} bytes over the limit of {max_key}", key.len()),
            ));
        }
        if !descriptor.contains_key(key) {
            let fresher = inner.descriptors_for(key);
            return Err(mismatch(fresher, "a key outside the range"));
        }
    }
    Ok(())
}

/// Serves one key-value request for a range hosted here, within `timeout` (what [`KvRpc`]
/// runs, and what [`super::Store::serve`] runs in-process).
pub(crate) async fn handle_kv(
    inner: &Arc<Inner>,
    request: KvRequest,
    timeout: Duration,
) -> Result<KvResponse, Error> {
    let range = request.range;
    if range == META_RANGE {
        return Err(Error::new(
            ErrorCode::InvalidRequest,
            "the meta range holds the system's keys: read it with MetaRpc",
        ));
    }
    let descriptor = inner.groups.descriptor(range).ok_or_else(|| {
        Error::new(
            ErrorCode::RangeNotFound { range },
            "no replica of the range here",
        )
    })?;
    if request.generation < descriptor.generation {
        return Err(mismatch(
            vec![descriptor],
            "the request's descriptor is older than the range's",
        ));
    }
    match request.op {
        KvOp::Get { key, consistency } => {
            check_keys(inner, &descriptor, std::iter::once(key.as_slice()))?;
            read_barrier(inner, range, consistency, timeout).await?;
            let value = inner
                .groups
                .engine()
                .get(range, &key)
                .map_err(|e| storage_error(inner, range, &key, e))?;
            Ok(KvResponse::Value(value.map(|v| Versioned {
                version: v.version,
                value: v.value,
            })))
        }
        KvOp::Scan {
            start,
            end,
            limit,
            reverse,
            consistency,
        } => {
            scan(
                inner,
                &descriptor,
                start,
                end,
                limit,
                reverse,
                consistency,
                timeout,
            )
            .await
        }
        KvOp::Write { ops, acks } => write(inner, &descriptor, ops, acks, timeout).await,
    }
}

/// Waits until this replica may answer a read of `consistency`: for a linearizable read, a
/// read barrier shared with the other reads of the range that arrive meanwhile (see
/// [`super::read_barriers`]).
async fn read_barrier(
    inner: &Inner,
    range: RangeId,
    consistency: Consistency,
    timeout: Duration,
) -> Result<(), Error> {
    if consistency == Consistency::Stale {
        return Ok(());
    }
    #[cfg(feature = "unsafe-test-switches")]
    if inner.config.unsafe_skip_read_barrier {
        return Ok(());
    }
    let driver = inner.groups.driver().clone();
    let peers = inner.topology.inner.peers.clone();
    let mode = inner.config.read_mode;
    let limit = inner.request_limit();
    inner
        .read_barriers
        .wait(range, timeout, move || {
            let driver = driver.clone();
            let peers = peers.clone();
            async move {
                driver
                    .read_index_within(range.into(), mode, limit)
                    .await
                    .map(|_| ())
                    .map_err(|e| read_error(&peers, e))
            }
        })
        .await
}

#[allow(clippy::too_many_arguments)]
async fn scan(
    inner: &Arc<Inner>,
    descriptor: &RangeDescriptor,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    limit: u32,
    reverse: bool,
    consistency: Consistency,
    timeout: Duration,
) -> Result<KvResponse, Error> {
    if limit == 0 || limit > MAX_SCAN_LIMIT {
        return Err(Error::new(
            ErrorCode::InvalidRequest,
            format!("a scan limit must be 1..={MAX_SCAN_LIMIT}"),
        ));
    }
    if end.as_ref().is_some_and(|end| *end < start) {
        return Err(Error::new(
            ErrorCode::InvalidRequest,
            "the scan's start is after its end",
        ));
    }
    let max_key = inner.config.engine.max_key_len;
    if start.len() > max_key || end.as_ref().is_some_and(|e| e.len() > max_key) {
        return Err(Error::new(
            ErrorCode::TooLarge,
            "a scan bound over the key limit",
        ));
    }
    // A scan stays in the user key space: it never runs on into the meta range, and a
    // reverse scan with no end starts from the last user range.
    let user_end = vec![SYSTEM_KEY_PREFIX];
    let end = Some(end.map_or(user_end.clone(), |e| e.min(user_end)));
    let range = descriptor.id;
    read_barrier(inner, range, consistency, timeout).await?;
    // The range as it is now, at one point in time: it may have split while the read waited
    // for its barrier, so its span comes from the view, not from the request's descriptor.
    let engine = inner.groups.engine().clone();
    let view = tokio::task::spawn_blocking(move || engine.view(range))
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| storage_error(inner, range, &start, e))?;
    let span = view.span().clone();
    // A forward scan is answered by the range holding `start`; a reverse one by the range
    // holding the keys just below `end`. This range answers its part and says where to go on.
    let holds_start = span.contains(&start);
    let holds_top = match &end {
        Some(end) => {
            span.start() < end.as_slice()
                && !matches!(span.end(), RangeEnd::Key(e) if e.as_slice() < end.as_slice())
        }
        None => *span.end() == RangeEnd::Unbounded,
    };
    if !(if reverse { holds_top } else { holds_start }) {
        let key = if reverse {
            end.clone().unwrap_or_default()
        } else {
            start.clone()
        };
        let fresher = inner.descriptors_for(&key);
        return Err(mismatch(fresher, "the scan does not begin in this range"));
    }
    let lo = start.clone().max(span.start().to_vec());
    let hi = match (&end, span.end()) {
        (Some(end), RangeEnd::Key(range_end)) => Some(end.clone().min(range_end.clone())),
        (Some(end), RangeEnd::Unbounded) => Some(end.clone()),
        (None, RangeEnd::Key(range_end)) => Some(range_end.clone()),
        (None, RangeEnd::Unbounded) => None,
    };
    // One entry more than asked for, forward: its key is where the next page starts (a key
    // of the longest length has no successor to name instead).
    let fetch = if reverse { limit } else { limit + 1 } as usize;
    let mut request = Scan::all(fetch).from(lo);
    if let Some(hi) = &hi {
        request = request.to(hi.clone());
    }
    if reverse {
        request = request.reverse();
    }
    let mut found = tokio::task::spawn_blocking(move || view.scan(&request))
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| storage_error(inner, range, &start, e))?;
    let resume = if reverse {
        if found.len() == limit as usize {
            // Continue below the last key returned: it becomes the exclusive end.
            found.last().map(|e| e.key.clone())
        } else {
            // Continue in the range before this one, if the scan reaches below it.
            (span.start() > start.as_slice()).then(|| span.start().to_vec())
        }
    } else if found.len() > limit as usize {
        found.pop().map(|e| e.key)
    } else {
        // Continue in the next range, if the scan reaches past this one.
        match (span.end(), &end) {
            (RangeEnd::Key(range_end), Some(end)) if range_end < end => Some(range_end.clone()),
            (RangeEnd::Key(range_end), None) => Some(range_end.clone()),
            _ => None,
        }
    };
    Ok(KvResponse::Entries {
        entries: found
            .into_iter()
            .map(|e| KvEntry {
                key: e.key,
                version: e.version,
                value: e.value,
            })
            .collect(),
        resume,
    })
}

async fn write(
    inner: &Arc<Inner>,
    descriptor: &RangeDescriptor,
    ops: Vec<WriteOp>,
    acks: Acks,
    timeout: Duration,
) -> Result<KvResponse, Error> {
    if ops.is_empty() {
        return Err(Error::new(ErrorCode::InvalidRequest, "no writes"));
    }
    if ops.iter().any(|op| is_system_key(op.key())) {
        return Err(Error::new(
            ErrorCode::InvalidRequest,
            "keys from 0xff on belong to the system: only the store writes them",
        ));
    }
    check_keys(inner, descriptor, ops.iter().map(WriteOp::key))?;
    let max_value = inner.config.engine.max_value_len;
    for op in &ops {
        let value = match op {
            WriteOp::Put { value, .. }
            | WriteOp::CompareAndSet {
                new: Some(value), ..
            } => Some(value),
            _ => None,
        };
        let expected = match op {
            WriteOp::CompareAndSet {
                expect: Condition::Value(v),
                ..
            } => Some(v),
            _ => None,
        };
        for v in value.into_iter().chain(expected) {
            if v.len() > max_value {
                return Err(Error::new(
                    ErrorCode::TooLarge,
                    format!("value of {} bytes over the limit of {max_value}", v.len()),
                ));
            }
        }
    }
    let range = descriptor.id;
    // Only the leader takes writes: say who it is without queueing behind the driver.
    let leader = inner.leader_of(range);
    if leader != Some(inner.id) {
        return Err(Error::new(
            ErrorCode::NotLeader {
                hint: inner.leader_hint(leader),
            },
            "not the leader",
        ));
    }
    let data: bytes::Bytes = codec::encode(&Command::Write(ops))
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
        .into();
    match acks {
        Acks::Majority => {
            let applied = inner
                .groups
                .driver()
                .propose_within(range.into(), data, Wait::Applied, timeout)
                .await
                .map_err(|e| write_error(inner, e))?;
            match applied {
                Applied::Written(outcomes) => Ok(KvResponse::Written(outcomes)),
                Applied::Rejected(rejection) => Err(rejection_error(rejection)),
                other => Err(Error::new(
                    ErrorCode::Internal,
                    format!("a write answered {other:?}"),
                )),
            }
        }
        Acks::Leader => {
            inner
                .groups
                .driver()
                .propose_within(range.into(), data, Wait::Persisted, timeout)
                .await
                .map_err(|e| write_error(inner, e))?;
            Ok(KvResponse::Accepted)
        }
        Acks::None => {
            inner
                .groups
                .driver()
                .propose_within(range.into(), data, Wait::Appended, timeout)
                .await
                .map_err(|e| write_error(inner, e))?;
            Ok(KvResponse::Accepted)
        }
    }
}

/// A deterministic rejection as the router's error.
fn rejection_error(rejection: Rejection) -> Error {
    let message = rejection.to_string();
    match rejection {
        Rejection::KeyOutsideRange(descriptor) => mismatch(vec![*descriptor], &message),
        Rejection::TooLarge(_) => Error::new(ErrorCode::TooLarge, message),
        Rejection::VersionsExhausted
        | Rejection::InvalidSplit(_)
        | Rejection::InvalidMeta(_)
        | Rejection::Refused(_)
        | Rejection::Undecodable => Error::new(ErrorCode::InvalidRequest, message),
    }
}

/// A failed proposal as the router's error. Anything that may have taken effect is
/// [`ErrorCode::OutcomeUnknown`], never a failure.
pub(crate) fn write_error(inner: &Inner, error: DriverError) -> Error {
    let message = error.to_string();
    let code = match error {
        DriverError::Host(HostError::Propose(ProposeError::NotLeader { leader })) => {
            ErrorCode::NotLeader {
                hint: inner.leader_hint(leader),
            }
        }
        DriverError::Host(HostError::Propose(ProposeError::TransferInProgress { to })) => {
            ErrorCode::NotLeader {
                hint: inner.leader_hint(Some(to)),
            }
        }
        DriverError::Host(HostError::Propose(ProposeError::TooLarge { .. })) => ErrorCode::TooLarge,
        DriverError::Host(HostError::Propose(ProposeError::Overloaded)) => ErrorCode::Overloaded,
        // Busy with another change: refused before it was proposed, worth retrying.
        DriverError::Host(HostError::Propose(ProposeError::ConfChange(
            ConfChangeError::ChangePending | ConfChangeError::InJointConfig,
        ))) => ErrorCode::Overloaded,
        DriverError::Host(HostError::Propose(ProposeError::ConfChange(_))) => {
            ErrorCode::InvalidRequest
        }
        DriverError::Host(HostError::UnknownGroup(group)) => ErrorCode::RangeNotFound {
            range: group.into(),
        },
        // Definitely not applied: another entry took its place, or the group is down.
        DriverError::Host(HostError::Dropped | HostError::GroupFailed { .. }) => {
            ErrorCode::Unavailable
        }
        DriverError::Host(HostError::Indeterminate) | DriverError::TimedOut => {
            ErrorCode::OutcomeUnknown
        }
        DriverError::Stopped => ErrorCode::ShuttingDown,
        _ => ErrorCode::Internal,
    };
    Error::new(code, message)
}

/// A failed read barrier as the router's error.
fn read_error(peers: &Peers, error: DriverError) -> Error {
    let message = error.to_string();
    let code = match error {
        DriverError::Host(HostError::Read(ReadError::NotLeader { leader })) => {
            ErrorCode::NotLeader {
                hint: leader_hint(peers, leader),
            }
        }
        DriverError::Host(HostError::Read(_) | HostError::GroupFailed { .. }) => {
            ErrorCode::Unavailable
        }
        DriverError::Host(HostError::UnknownGroup(group)) => ErrorCode::RangeNotFound {
            range: group.into(),
        },
        DriverError::TimedOut => ErrorCode::Timeout,
        DriverError::Stopped => ErrorCode::ShuttingDown,
        _ => ErrorCode::Internal,
    };
    Error::new(code, message)
}

/// A storage error while serving a read.
fn storage_error(inner: &Inner, range: RangeId, key: &[u8], error: StorageError) -> Error {
    match error {
        StorageError::KeyOutsideRange { .. } => {
            mismatch(inner.descriptors_for(key), "the range split since")
        }
        StorageError::RangeNotFound(_) => Error::new(
            ErrorCode::RangeNotFound { range },
            "no replica of the range here",
        ),
        StorageError::RangeNotReady(_) => {
            Error::new(ErrorCode::Unavailable, "the range is installing a snapshot")
        }
        StorageError::KeyTooLarge { .. } | StorageError::ValueTooLarge { .. } => {
            Error::new(ErrorCode::TooLarge, error.to_string())
        }
        StorageError::InvalidScan(_) => Error::new(ErrorCode::InvalidRequest, error.to_string()),
        e => Error::new(ErrorCode::Internal, e.to_string()),
    }
}

/// Serves a meta range request on this node: only its leader answers (others say who leads);
/// changes are proposed in its group, reads wait for a read barrier (linearizable).
pub(crate) async fn answer_meta(
    inner: &Inner,
    request: MetaRequest,
    timeout: Duration,
) -> Result<MetaResponse, Error> {
    if inner.groups.descriptor(META_RANGE).is_none() {
        return Err(Error::new(
            ErrorCode::RangeNotFound { range: META_RANGE },
            "no replica of the meta range here",
        ));
    }
    let leader = inner.leader_of(META_RANGE);
    if leader != Some(inner.id) {
        return Err(Error::new(
            ErrorCode::NotLeader {
                hint: inner.leader_hint(leader),
            },
            "not the meta range's leader",
        ));
    }
    let op = match request {
        MetaRequest::Apply(op) => {
            // Refused before it is logged, not only as it applies.
            meta::check(&op).map_err(rejection_error)?;
            op
        }
        MetaRequest::Lookup { key } => {
            return read_meta(inner, timeout, move |engine| {
                meta::read_descriptors(engine, META_RANGE)
                    .map(|set| MetaResponse::Descriptor(set.winner(&key).cloned()))
            })
            .await
        }
        MetaRequest::Descriptors => {
            return read_meta(inner, timeout, |engine| {
                meta::read_descriptors(engine, META_RANGE)
                    .map(|set| MetaResponse::Descriptors(set.descriptors().cloned().collect()))
            })
            .await
        }
        MetaRequest::Nodes => {
            return read_meta(inner, timeout, |engine| {
                meta::read_nodes(engine, META_RANGE).map(MetaResponse::Nodes)
            })
            .await
        }
        MetaRequest::Bindings => {
            return read_meta(inner, timeout, |engine| {
                meta::read_bindings(engine, META_RANGE).map(MetaResponse::Bindings)
            })
            .await
        }
    };
    let data: bytes::Bytes = codec::encode(&Command::Meta(op))
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
        .into();
    let applied = inner
        .groups
        .driver()
        .propose_within(META_RANGE.into(), data, Wait::Applied, timeout)
        .await
        .map_err(|e| write_error(inner, e))?;
    match applied {
        Applied::Meta(answer) => Ok(MetaResponse::Applied(answer)),
        Applied::Rejected(rejection) => Err(rejection_error(rejection)),
        other => Err(Error::new(
            ErrorCode::Internal,
            format!("a meta operation answered {other:?}"),
        )),
    }
}

/// Reads the meta range after a linearizable read barrier, off the runtime threads.
async fn read_meta(
    inner: &Inner,
    timeout: Duration,
    read: impl FnOnce(&shoal_storage::Engine) -> Result<MetaResponse, meta::MetaReadError>
        + Send
        + 'static,
) -> Result<MetaResponse, Error> {
    read_barrier(inner, META_RANGE, Consistency::Linearizable, timeout).await?;
    let engine = inner.groups.engine().clone();
    let internal = |e: String| Error::new(ErrorCode::Internal, e);
    tokio::task::spawn_blocking(move || read(&engine))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))
}

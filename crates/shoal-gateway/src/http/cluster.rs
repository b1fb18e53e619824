//! The cluster routes: members, ranges and their replicas' state, splits and replica
//! changes, metrics, health and readiness.

use super::params::{decode_bytes, query, user_key};
use super::App;
use crate::errors::ApiError;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shoal_client::bodies::{
    ErrorBody, Member, Range, RangeDigests, RangeStatus, Replica, ReplicaChange, ReplicaDigest,
    ReplicaStatus, ReplicasChanged, SplitDone, SplitRequest, Status,
};
use shoal_client::encode_bytes;
use shoal_consensus::{ConfChange, LearnerKind};
use shoal_core::{ErrorCode, NodeId, RangeDescriptor, RangeId};
use shoal_membership::MemberState;
use shoal_store::{Consistency, KvOp, StoreError, GATEWAY_META};
use std::time::{Duration, Instant};

/// A store failure as an answer.
fn store_error(e: StoreError) -> ApiError {
    crate::router::request_error(e).into()
}

/// A debug-printed enum variant as the API's lowercase name (`PreCandidate`:
/// `pre_candidate`).
fn snake(variant: impl std::fmt::Debug) -> String {
    let mut name = String::new();
    for (i, c) in format!("{variant:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// The members as this node's membership sees them.
#[utoipa::path(
    get,
    path = "/v1/cluster/members",
    tag = "cluster",
    responses((status = 200, description = "Every member, this node included.", body = Vec<Member>))
)]
pub(super) async fn members(State(app): State<App>) -> Result<Json<Vec<Member>>, ApiError> {
    let members = app.router.backend().members().await.map_err(store_error)?;
    Ok(Json(
        members
            .iter()
            .map(|m| Member {
                id: m.id.get(),
                addr: m.addr.to_string(),
                state: snake(m.state),
                incarnation: m.incarnation,
                role: if m.meta == GATEWAY_META {
                    "gateway"
                } else {
                    "data"
                }
                .into(),
            })
            .collect(),
    ))
}

/// A range's record, with the leader given.
fn range_body(d: &RangeDescriptor, leader: Option<u64>) -> Range {
    Range {
        id: d.id.get(),
        start: encode_bytes(d.range.start()),
        end: d.range.end().as_key().map(encode_bytes),
        generation: d.generation.get(),
        replicas: d
            .replicas
            .iter()
            .map(|r| Replica {
                node: r.node.get(),
                role: snake(r.role),
            })
            .collect(),
        leader,
    }
}

/// Every range the meta range records.
#[utoipa::path(
    get,
    path = "/v1/ranges",
    tag = "cluster",
    responses(
        (status = 200, description = "Every range once (its newest generation), by id; `leader` where this node knows it.", body = Vec<Range>),
        (status = 503, description = "The meta range cannot be read now.", body = ErrorBody),
    )
)]
pub(super) async fn ranges(State(app): State<App>) -> Result<Json<Vec<Range>>, ApiError> {
    let backend = app.router.backend();
    let descriptors = backend.ranges().await.map_err(store_error)?;
    Ok(Json(
        descriptors
            .iter()
            .map(|d| range_body(d, backend.leader(d.id).map(|n| n.get())))
            .collect(),
    ))
}

/// A range id from the path.
fn range_id(id: &str) -> Result<RangeId, ApiError> {
    id.parse()
        .map(RangeId::new)
        .map_err(|_| ApiError::bad_request("a range id is a number"))
}

/// A 404 for a range the meta range does not record; other errors as usual.
fn range_error(e: shoal_core::Error) -> ApiError {
    if matches!(e.code, ErrorCode::RangeNotFound { .. }) {
        return ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: e.to_string(),
        };
    }
    e.into()
}

/// Each replica of a range digested by its own node: a Merkle root at its applied index.
/// Replicas at one applied index with one root hold the same data. Building a digest reads
/// the whole replica: this is for checks (the cluster test), not for monitoring.
#[utoipa::path(
    get,
    path = "/v1/ranges/{id}/digests",
    tag = "cluster",
    params(("id" = u64, Path, description = "The range's id.")),
    responses(
        (status = 200, description = "Each replica's digest; a replica whose node did not answer says why.", body = RangeDigests),
        (status = 404, description = "No such range.", body = ErrorBody),
        (status = 400, description = "Malformed.", body = ErrorBody),
    )
)]
pub(super) async fn range_digests(
    State(app): State<App>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<RangeDigests>, ApiError> {
    query(&raw, &[])?;
    let id = range_id(&id)?;
    let (descriptor, digests) = app
        .router
        .range_digests(id, app.deadline())
        .await
        .map_err(range_error)?;
    let replicas: Vec<ReplicaDigest> = digests
        .into_iter()
        .map(|(node, digest)| match digest {
            Ok(d) => ReplicaDigest {
                node: node.get(),
                applied: Some(d.applied),
                root: Some(d.root.iter().map(|b| format!("{b:02x}")).collect()),
                keys: Some(d.keys),
                error: None,
            },
            Err(e) => ReplicaDigest {
                node: node.get(),
                error: Some(e.to_string()),
                ..ReplicaDigest::default()
            },
        })
        .collect();
    let first = replicas.first().map(|r| (r.applied, r.root.clone()));
    let equal = replicas
        .iter()
        .all(|r| r.error.is_none() && Some((r.applied, r.root.clone())) == first);
    Ok(Json(RangeDigests {
        id: descriptor.id.get(),
        generation: descriptor.generation.get(),
        equal,
        replicas,
    }))
}

/// One range with each replica's role, indexes and lag, asked of the replicas' nodes.
#[utoipa::path(
    get,
    path = "/v1/ranges/{id}",
    tag = "cluster",
    params(("id" = u64, Path, description = "The range's id.")),
    responses(
        (status = 200, description = "The range; a replica whose node did not answer says why.", body = RangeStatus),
        (status = 404, description = "No such range.", body = ErrorBody),
        (status = 400, description = "Malformed.", body = ErrorBody),
    )
)]
pub(super) async fn range_status(
    State(app): State<App>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<RangeStatus>, ApiError> {
    query(&raw, &[])?;
    let id = range_id(&id)?;
    // Status is quick to answer: a node that takes longer is reported unreachable.
    let deadline = Instant::now() + Duration::from_secs(2).min(app.config.request_timeout);
    let (descriptor, reports) = app
        .router
        .range_reports(id, deadline)
        .await
        .map_err(range_error)?;
    let leading = reports
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter(|r| r.leader.is_some())
        .max_by_key(|r| r.term);
    let leader = leading.and_then(|r| r.leader);
    // The leader's view of each follower's lag.
    let followers = reports
        .iter()
        .find(|(node, _)| Some(*node) == leader)
        .and_then(|(_, r)| r.as_ref().ok())
        .map(|r| r.followers.clone())
        .unwrap_or_default();
    let replicas = descriptor
        .replicas
        .iter()
        .zip(&reports)
        .map(|(replica, (_, report))| {
            let mut status = ReplicaStatus {
                node: replica.node.get(),
                role: snake(replica.role),
                ..ReplicaStatus::default()
            };
            match report {
                Ok(r) => {
                    status.reachable = true;
                    status.raft_role = Some(snake(r.role));
                    status.term = Some(r.term);
                    status.commit = Some(r.commit);
                    status.applied = Some(r.applied);
                    status.last_index = Some(r.last_index);
                    status.keys = Some(r.keys);
                    status.bytes = Some(r.bytes);
                }
                Err(e) => status.error = Some(e.to_string()),
            }
            if let Some(f) = followers.iter().find(|f| f.node == replica.node) {
                status.lag_entries = Some(f.lag_entries);
                status.lag_ms = Some(f.lag.as_millis() as u64);
                status.replication = Some(snake(f.state));
            }
            status
        })
        .collect();
    Ok(Json(RangeStatus {
        id: descriptor.id.get(),
        start: encode_bytes(descriptor.range.start()),
        end: descriptor.range.end().as_key().map(encode_bytes),
        generation: descriptor.generation.get(),
        leader: leader.map(|n| n.get()),
        replicas,
    }))
}

/// Splits a range through its leader.
#[utoipa::path(
    post,
    path = "/v1/admin/ranges/{id}/split",
    tag = "admin",
    params(("id" = u64, Path, description = "The range's id.")),
    request_body(content = Option<SplitRequest>, description = "Where; an empty body splits at the size median."),
    responses(
        (status = 200, description = "Split.", body = SplitDone),
        (status = 404, description = "No such range.", body = ErrorBody),
        (status = 400, description = "Malformed, or `at` not strictly inside the range.", body = ErrorBody),
        (status = 503, description = "The range has no leader for now; nothing changed.", body = ErrorBody),
        (status = 504, description = "The outcome is unknown: look at the ranges before trying again.", body = ErrorBody),
    )
)]
pub(super) async fn split_range(
    State(app): State<App>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<SplitDone>, ApiError> {
    query(&raw, &[])?;
    let id = range_id(&id)?;
    let at = if body.is_empty() {
        None
    } else {
        let body: SplitRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not a split: {e}")))?;
        body.at
            .map(|at| decode_bytes(&at))
            .transpose()?
            .map(user_key)
            .transpose()?
    };
    let done = app
        .router
        .split(id, at, app.deadline())
        .await
        .map_err(range_error)?;
    Ok(Json(SplitDone {
        left: range_body(&done.left, None),
        right: range_body(&done.right, None),
    }))
}

/// Changes a range's replicas through its leader: add a learner, promote it once caught
/// up (see the range's `lag_entries`), remove a replica.
#[utoipa::path(
    post,
    path = "/v1/admin/ranges/{id}/replicas",
    tag = "admin",
    params(("id" = u64, Path, description = "The range's id.")),
    request_body = ReplicaChange,
    responses(
        (status = 200, description = "Committed and applied by the leader.", body = ReplicasChanged),
        (status = 404, description = "No such range.", body = ErrorBody),
        (status = 400, description = "Malformed, or refused (already a member, not caught up, a change pending).", body = ErrorBody),
        (status = 503, description = "The range has no leader for now; nothing changed.", body = ErrorBody),
        (status = 504, description = "The outcome is unknown: look at the range before trying again.", body = ErrorBody),
    )
)]
pub(super) async fn change_replicas(
    State(app): State<App>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<ReplicasChanged>, ApiError> {
    query(&raw, &[])?;
    let id = range_id(&id)?;
    let change: ReplicaChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a replica change: {e}")))?;
    let node = |n: u64| {
        if n == 0 {
            Err(ApiError::bad_request("node ids start at 1"))
        } else {
            Ok(NodeId::new(n))
        }
    };
    if let ReplicaChange::AddLearner(n) = change {
        // Only a live data node can host it: a learner elsewhere would never catch up.
        let members = app.router.backend().members().await.map_err(store_error)?;
        let hosts = members
            .iter()
            .any(|m| m.id.get() == n && m.state == MemberState::Alive && m.meta != GATEWAY_META);
        if !hosts {
            return Err(ApiError::bad_request(format!(
                "node {n} is not a live data node of the cluster"
            )));
        }
    }
    let change = match change {
        ReplicaChange::AddLearner(n) => ConfChange::AddNode {
            node: node(n)?,
            kind: LearnerKind::Promotable,
        },
        ReplicaChange::Promote(n) => ConfChange::PromoteLearner(node(n)?),
        ReplicaChange::Remove(n) => ConfChange::RemoveNode(node(n)?),
    };
    let descriptor = app
        .router
        .change_replicas(id, change, app.deadline())
        .await
        .map_err(range_error)?;
    Ok(Json(ReplicasChanged {
        range: descriptor.map(|d| range_body(&d, None)),
    }))
}

/// The node's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Requests by route, method and status; Raft, membership, WAL and storage figures.",
        body = String, content_type = "application/openmetrics-text"))
)]
pub(super) async fn metrics_text(State(app): State<App>) -> Response {
    crate::metrics::serve(&app.metrics, app.router.backend()).await
}

/// Whether the process is alive (needs no token).
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "Alive.", body = Status))
)]
pub(super) async fn health() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// Whether the node can route requests (it reaches the range of the first user key).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = Status),
        (status = 503, description = "Not yet (joining, or no leader known).", body = ErrorBody),
    )
)]
pub(super) async fn ready(State(app): State<App>) -> Response {
    let deadline = Instant::now() + Duration::from_secs(2);
    let probe = KvOp::Get {
        key: vec![0],
        consistency: Consistency::Stale,
    };
    match app.router.send(&[0], probe, deadline).await {
        Ok(_) => Json(Status {
            status: "ready".into(),
        })
        .into_response(),
        Err(e) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: e.to_string(),
        }
        .into_response(),
    }
}

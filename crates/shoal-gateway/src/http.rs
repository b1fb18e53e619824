//! The HTTP API (axum):
//!
//! - `PUT /v1/kv/{key}`: the body is the value (raw bytes). `?acks=majority|leader|none`.
//!   `If-Match: <version>` writes only over that version, `If-None-Match: *` only if the key
//!   has no value (409 otherwise). Answers `{"version": N}` (acks majority, 200) or
//!   `{"accepted": true}` (202).
//! - `GET /v1/kv/{key}`: the value as raw bytes, its version in `X-Shoal-Version`; 404 if
//!   none. `?consistency=linearizable|stale`.
//! - `DELETE /v1/kv/{key}`: 204, or 404 if there was no value. `?acks=`. `If-Match:
//!   <version>` deletes only that version (409 otherwise).
//! - `POST /v1/kv/{key}/cas`: `{"expect": {"version": N} | {"value": "..."} | "absent",
//!   "value": "..." | null}` (both fields required; `null` deletes); `{"version": N}` or
//!   `{"deleted": existed}`, 409 if the expectation failed.
//!
//! A conditional write (`If-Match`, `If-None-Match`, or a compare-and-set) needs `acks=
//! majority` (the default): only then is its outcome known to answer 409 or not.
//! - `GET /v1/kv?prefix=...` or `?start=...&end=...`, with `limit` (1 to 10,000, default
//!   100), `consistency` and `continuation`, in key order: `{"entries": [{"key", "value",
//!   "version"}], "continuation": "..." | null}` (pass the continuation back to go on; a
//!   page also ends early once its keys and values pass 4 MiB).
//! - `GET /v1/cluster/members`: the members as this node's membership sees them (`id`,
//!   `addr`, `state`: alive, suspect, dead or left, `incarnation`).
//! - `GET /v1/ranges`: every range the meta range records (`id`, `start`, `end`,
//!   `generation`, `replicas` with their roles, and `leader` where this node knows it).
//! - `POST /v1/admin/ranges/{id}/split`: splits a range at `{"at": "..."}` (a key strictly
//!   inside it), or at its size median with no body; answers `{"left": ..., "right": ...}`.
//! - `GET /metrics`: requests by route, method and status (counts, latency histograms),
//!   and the node's store (ranges, leaderships, Raft terms and indexes, members by state,
//!   WAL and engine figures), in the Prometheus text format.
//! - `GET /health`: the process is alive. `GET /ready`: the node can route requests (it
//!   knows the range of the first user key).
//!
//! Keys in paths and query values are percent-encoded and binary-safe; keys and values in
//! JSON bodies are percent-encoded strings too. Unknown query parameters, bad encodings
//! and malformed JSON are 400s; a key over 4 KiB or a value over 1 MiB is a 413; nothing is
//! written for any of them.

use crate::errors::ApiError;
use crate::keys::{decode_key, encode_bytes};
use crate::metrics::Metrics;
use crate::router::KvRouter;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use shoal_ranges::store::{
    Acks, Consistency, Expect, KvOp, KvResponse, StoreError, WriteOp, WriteOutcome, MAX_SCAN_LIMIT,
    SYSTEM_KEY_PREFIX,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The version header of a read.
pub const VERSION_HEADER: &str = "x-shoal-version";

/// The longest key, in bytes (the store's limit).
pub const MAX_KEY_BYTES: usize = 4096;

/// A scan page ends once its keys and values pass this many bytes (each range's part is
/// still whole, so a page may pass it by one part).
const SCAN_PAGE_BYTES: usize = 4 << 20;

/// The default number of entries a scan returns.
const DEFAULT_SCAN_LIMIT: u32 = 100;

/// How the gateway serves.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// How long a request may take, routing and retries included. Default 10 s.
    pub request_timeout: Duration,
    /// The largest request body accepted (a value, or a compare-and-set's JSON). Default
    /// 4 MiB: a 1 MiB value percent-encoded in JSON fits; the store refuses values over
    /// 1 MiB itself.
    pub max_body_bytes: usize,
    /// Origins whose pages may call the gateway from a browser (CORS), each exactly
    /// `scheme://host[:port]` (see [`parse_origin`]). Default none: preflights are refused
    /// and no CORS headers are sent.
    pub cors_origins: Vec<HeaderValue>,
    /// If set, every route but `/health` needs `Authorization: Bearer <token>` (401
    /// otherwise). Default none.
    pub auth_token: Option<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 4 << 20,
            cors_origins: Vec::new(),
            auth_token: None,
        }
    }
}

/// An origin for [`GatewayConfig::cors_origins`]: `http://` or `https://`, a host, an
/// optional port, nothing else (no path, no wildcard).
pub fn parse_origin(origin: &str) -> Result<HeaderValue, String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("origin {origin:?} must start with http:// or https://"))?;
    let valid = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !valid {
        return Err(format!(
            "origin {origin:?} must be scheme://host[:port] (no path, no wildcard)"
        ));
    }
    HeaderValue::from_str(origin).map_err(|e| format!("origin {origin:?}: {e}"))
}

#[derive(Clone)]
struct App {
    router: KvRouter,
    config: GatewayConfig,
    metrics: Arc<Metrics>,
}

/// The gateway's HTTP routes over `router`.
pub fn routes(router: KvRouter, config: GatewayConfig) -> Router {
    let limit = config.max_body_bytes;
    let metrics = Arc::new(Metrics::new());
    let origins: Arc<[HeaderValue]> = config.cors_origins.clone().into();
    let token: Option<Arc<str>> = config.auth_token.as_deref().map(Arc::from);
    let app = Router::new()
        .route("/v1/kv/{key}", get(get_key).put(put_key).delete(delete_key))
        .route("/v1/kv/{key}/cas", post(cas_key))
        .route("/v1/kv", get(scan))
        .route("/v1/cluster/members", get(members))
        .route("/v1/ranges", get(ranges))
        .route("/v1/admin/ranges/{id}/split", post(split_range))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route_layer(axum::middleware::from_fn_with_state(
            metrics.clone(),
            crate::metrics::track,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(App {
            router,
            config,
            metrics,
        });
    // Outermost first: foreign preflights are refused, allowed ones answered by the CORS
    // layer, and only then is the token asked for.
    let app = match token {
        Some(token) => app.layer(axum::middleware::from_fn_with_state(
            token,
            crate::security::require_token,
        )),
        None => app,
    };
    let app = if origins.is_empty() {
        app
    } else {
        app.layer(crate::security::cors(&origins))
    };
    app.layer(axum::middleware::from_fn_with_state(
        origins,
        crate::security::refuse_foreign_preflight,
    ))
}

impl App {
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout
    }
}

/// The query's parameters, still percent-encoded, refusing any not in `allowed` and any
/// repeated.
fn query<'q>(
    raw: &'q Option<String>,
    allowed: &[&str],
) -> Result<HashMap<&'q str, &'q str>, ApiError> {
    let mut params = HashMap::new();
    for pair in raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&name) {
            return Err(ApiError::bad_request(format!("unknown parameter {name:?}")));
        }
        if params.insert(name, value).is_some() {
            return Err(ApiError::bad_request(format!(
                "parameter {name:?} repeated"
            )));
        }
    }
    Ok(params)
}

/// A query value decoded as text.
fn text(value: &str) -> Result<String, ApiError> {
    let bytes = decode_key(value).map_err(|e| ApiError::bad_request(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| ApiError::bad_request("a parameter is not UTF-8"))
}

/// The key in the request's path (`/v1/kv/{key}`, or `/v1/kv/{key}/cas`), decoded from the
/// raw path: a framework's decoded parameters would have to be UTF-8, and keys need not be.
fn path_key(uri: &Uri) -> Result<Vec<u8>, ApiError> {
    let raw = uri
        .path()
        .strip_prefix("/v1/kv/")
        .ok_or_else(|| ApiError::bad_request("no key in the path"))?;
    let raw = raw.strip_suffix("/cas").unwrap_or(raw);
    user_key(decode_key(raw).map_err(|e| ApiError::bad_request(e.to_string()))?)
}

/// Refuses keys over the store's limit and keys in the system's part of the key space.
fn user_key(key: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            message: format!(
                "a key of {} bytes is over the limit of {MAX_KEY_BYTES}",
                key.len()
            ),
        });
    }
    if key.first() == Some(&SYSTEM_KEY_PREFIX) {
        return Err(ApiError::bad_request(
            "keys starting with byte 0xff are reserved for the system",
        ));
    }
    Ok(key)
}

fn consistency(params: &HashMap<&str, &str>) -> Result<Consistency, ApiError> {
    match params.get("consistency").copied() {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("stale") => Ok(Consistency::Stale),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency must be linearizable or stale, not {other:?}"
        ))),
    }
}

fn acks(params: &HashMap<&str, &str>) -> Result<Acks, ApiError> {
    match params.get("acks").copied() {
        None | Some("majority") => Ok(Acks::Majority),
        Some("leader") => Ok(Acks::Leader),
        Some("none") => Ok(Acks::None),
        Some(other) => Err(ApiError::bad_request(format!(
            "acks must be majority, leader or none, not {other:?}"
        ))),
    }
}

/// A store failure as an answer.
fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Request(e) => e.into(),
        e => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: e.to_string(),
        },
    }
}

async fn members(State(app): State<App>) -> Result<Response, ApiError> {
    let members = app.router.store().members().await.map_err(store_error)?;
    let body: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id.get(),
                "addr": m.addr.to_string(),
                "state": format!("{:?}", m.state).to_lowercase(),
                "incarnation": m.incarnation,
            })
        })
        .collect();
    Ok(Json(body).into_response())
}

async fn ranges(State(app): State<App>) -> Result<Response, ApiError> {
    let store = app.router.store();
    let descriptors = store.meta_descriptors().await.map_err(store_error)?;
    let body: Vec<serde_json::Value> = descriptors
        .iter()
        .map(|d| {
            let mut json = range_json(d);
            json["leader"] = serde_json::json!(store.leader(d.id).map(|n| n.get()));
            json
        })
        .collect();
    Ok(Json(body).into_response())
}

/// A range as JSON.
fn range_json(d: &shoal_core::RangeDescriptor) -> serde_json::Value {
    serde_json::json!({
        "id": d.id.get(),
        "start": encode_bytes(d.range.start()),
        "end": d.range.end().as_key().map(encode_bytes),
        "generation": d.generation.get(),
        "replicas": d.replicas.iter().map(|r| serde_json::json!({
            "node": r.node.get(),
            "role": format!("{:?}", r.role).to_lowercase(),
        })).collect::<Vec<_>>(),
    })
}

/// A split's body: where, or nothing for the size median.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitBody {
    at: Option<String>,
}

async fn split_range(
    State(app): State<App>,
    axum::extract::Path(id): axum::extract::Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    query(&raw, &[])?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("a range id is a number"))?;
    let at = if body.is_empty() {
        None
    } else {
        let body: SplitBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not a split: {e}")))?;
        body.at
            .map(|at| decode_key(&at).map_err(|e| ApiError::bad_request(e.to_string())))
            .transpose()?
            .map(user_key)
            .transpose()?
    };
    let done = match app
        .router
        .split(shoal_core::RangeId::new(id), at, app.deadline())
        .await
    {
        Ok(done) => done,
        Err(e) if matches!(e.code, shoal_core::ErrorCode::RangeNotFound { .. }) => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: e.to_string(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Json(serde_json::json!({
        "left": range_json(&done.left),
        "right": range_json(&done.right),
    }))
    .into_response())
}

async fn metrics_text(State(app): State<App>) -> Response {
    crate::metrics::serve(app.metrics.clone(), app.router.store().clone()).await
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(app): State<App>) -> Response {
    let deadline = Instant::now() + Duration::from_secs(2);
    let probe = KvOp::Get {
        key: vec![0],
        consistency: Consistency::Stale,
    };
    match app.router.send(&[0], probe, deadline).await {
        Ok(_) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: e.to_string(),
        }
        .into_response(),
    }
}

async fn get_key(
    State(app): State<App>,
    uri: Uri,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let key = path_key(&uri)?;
    let q = query(&raw, &["consistency"])?;
    let op = KvOp::Get {
        key: key.clone(),
        consistency: consistency(&q)?,
    };
    match app.router.send(&key, op, app.deadline()).await? {
        KvResponse::Value(Some(v)) => {
            let mut response = v.value.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(VERSION_HEADER, HeaderValue::from(v.version));
            Ok(response)
        }
        KvResponse::Value(None) => Err(ApiError::not_found()),
        other => Err(unexpected(&other)),
    }
}

/// The condition a conditional write's headers ask for.
fn condition(headers: &HeaderMap) -> Result<Option<Expect>, ApiError> {
    let if_match = headers.get(header::IF_MATCH);
    let if_none_match = headers.get(header::IF_NONE_MATCH);
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("If-Match and If-None-Match together")),
        (Some(v), None) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::bad_request("If-Match is not text"))?;
            let version = text
                .trim()
                .trim_matches('"')
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request("If-Match must be a version number"))?;
            Ok(Some(Expect::Version(version)))
        }
        (None, Some(v)) if v.as_bytes() == b"*" => Ok(Some(Expect::Absent)),
        (None, Some(_)) => Err(ApiError::bad_request("If-None-Match must be *")),
        (None, None) => Ok(None),
    }
}

async fn put_key(
    State(app): State<App>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = path_key(&uri)?;
    let q = query(&raw, &["acks"])?;
    let acks = acks(&q)?;
    let value = body.to_vec();
    let condition = condition(&headers)?;
    conditional_needs_majority(condition.is_some(), acks)?;
    let op = match condition {
        None => WriteOp::Put {
            key: key.clone(),
            value,
        },
        Some(expect) => WriteOp::CompareAndSet {
            key: key.clone(),
            expect,
            new: Some(value),
        },
    };
    write(&app, key, op, acks, Answer::Put).await
}

async fn delete_key(
    State(app): State<App>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = path_key(&uri)?;
    let q = query(&raw, &["acks"])?;
    let acks = acks(&q)?;
    let op = match condition(&headers)? {
        None => WriteOp::Delete { key: key.clone() },
        Some(Expect::Absent) => {
            return Err(ApiError::bad_request(
                "If-None-Match: * on a delete deletes nothing",
            ))
        }
        Some(expect) => {
            conditional_needs_majority(true, acks)?;
            WriteOp::CompareAndSet {
                key: key.clone(),
                expect,
                new: None,
            }
        }
    };
    write(&app, key, op, acks, Answer::Delete).await
}

/// Refuses a conditional write with weaker acks than majority: its outcome would not be
/// known in time to answer whether the condition held.
fn conditional_needs_majority(conditional: bool, acks: Acks) -> Result<(), ApiError> {
    if conditional && acks != Acks::Majority {
        return Err(ApiError::bad_request(
            "a conditional write needs acks=majority to say whether its condition held",
        ));
    }
    Ok(())
}

/// A compare-and-set's body. `value` is required: a string sets it, `null` deletes (a
/// missing field is a malformed request, never a delete).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    expect: CasExpect,
    value: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum CasExpect {
    Version(u64),
    Value(String),
    Absent,
}

async fn cas_key(
    State(app): State<App>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = path_key(&uri)?;
    let q = query(&raw, &["acks"])?;
    let acks = acks(&q)?;
    let body: CasBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a compare-and-set: {e}")))?;
    let bytes = |s: &str| decode_bytes(s);
    let expect = match body.expect {
        CasExpect::Version(v) => Expect::Version(v),
        CasExpect::Value(v) => Expect::Value(bytes(&v)?),
        CasExpect::Absent => Expect::Absent,
    };
    let new = match &body.value {
        serde_json::Value::Null => None,
        serde_json::Value::String(v) => Some(bytes(v)?),
        _ => return Err(ApiError::bad_request("value must be a string or null")),
    };
    conditional_needs_majority(true, acks)?;
    let op = WriteOp::CompareAndSet {
        key: key.clone(),
        expect,
        new,
    };
    write(&app, key, op, acks, Answer::Cas).await
}

/// How a write's outcome is answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `PUT`: the new version.
    Put,
    /// `DELETE`: 204, or 404 if there was nothing.
    Delete,
    /// Compare-and-set: the new version, or `{"deleted": existed}`.
    Cas,
}

/// A percent-encoded JSON string as bytes (empty allowed).
fn decode_bytes(s: &str) -> Result<Vec<u8>, ApiError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    decode_key(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn write(
    app: &App,
    key: Vec<u8>,
    op: WriteOp,
    acks: Acks,
    answer: Answer,
) -> Result<Response, ApiError> {
    let kv = KvOp::Write {
        ops: vec![op],
        acks,
    };
    match app.router.send(&key, kv, app.deadline()).await? {
        KvResponse::Accepted => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "accepted": true })),
        )
            .into_response()),
        KvResponse::Written(outcomes) => match outcomes.first() {
            Some(WriteOutcome::Written { version }) => {
                Ok(Json(serde_json::json!({ "version": version })).into_response())
            }
            Some(&WriteOutcome::Deleted { existed }) if answer == Answer::Cas => {
                Ok(Json(serde_json::json!({ "deleted": existed })).into_response())
            }
            Some(WriteOutcome::Deleted { existed: true }) => {
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            Some(WriteOutcome::Deleted { existed: false }) => Err(ApiError::not_found()),
            Some(WriteOutcome::Mismatch { current_version }) => Err(ApiError::condition_failed(
                format!("the key is at version {current_version}"),
            )),
            Some(WriteOutcome::Missing) => {
                Err(ApiError::condition_failed("the key holds no value"))
            }
            None => Err(unexpected(&KvResponse::Written(outcomes))),
        },
        other => Err(unexpected(&other)),
    }
}

async fn scan(State(app): State<App>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q = query(
        &raw,
        &[
            "prefix",
            "start",
            "end",
            "limit",
            "consistency",
            "continuation",
        ],
    )?;
    // Scan bounds may be empty (the start of the key space).
    let key = |name: &str| -> Result<Option<Vec<u8>>, ApiError> {
        q.get(name)
            .map(|v| {
                let key = decode_bytes(v).map_err(|e| ApiError {
                    message: format!("{name}: {}", e.message),
                    ..e
                })?;
                user_key(key)
            })
            .transpose()
    };
    let (mut start, end) = match (key("prefix")?, key("start")?, key("end")?) {
        (Some(prefix), None, None) => {
            let end = prefix_end(&prefix);
            (prefix, end)
        }
        (None, start, end) => (start.unwrap_or_default(), end),
        _ => {
            return Err(ApiError::bad_request(
                "give a prefix, or a start and an end, not both",
            ))
        }
    };
    let limit = match q.get("limit") {
        None => DEFAULT_SCAN_LIMIT,
        Some(v) => text(v)?
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_SCAN_LIMIT).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_SCAN_LIMIT}")))?,
    };
    let consistency = consistency(&q)?;
    if let Some(continuation) = key("continuation")? {
        let inside = continuation >= start && end.as_ref().is_none_or(|e| continuation <= *e);
        if !inside {
            return Err(ApiError::bad_request(
                "the continuation is outside the scan's bounds",
            ));
        }
        start = continuation;
    }
    if end.as_ref().is_some_and(|e| *e < start) {
        return Err(ApiError::bad_request("the scan's start is after its end"));
    }
    let deadline = app.deadline();
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    let mut continuation = None;
    // Walk the ranges in key order until `limit` entries or the end.
    loop {
        let wanted = limit - entries.len() as u32;
        let op = KvOp::Scan {
            start: start.clone(),
            end: end.clone(),
            limit: wanted,
            reverse: false,
            consistency,
        };
        let answer = app.router.send(&start, op, deadline).await?;
        let KvResponse::Entries {
            entries: found,
            resume,
        } = answer
        else {
            return Err(unexpected(&answer));
        };
        bytes += found
            .iter()
            .map(|e| e.key.len() + e.value.len())
            .sum::<usize>();
        entries.extend(found);
        match resume {
            None => break,
            Some(next) => {
                start = next;
                if entries.len() as u32 >= limit || bytes >= SCAN_PAGE_BYTES {
                    continuation = Some(start.clone());
                    break;
                }
            }
        }
    }
    let body = serde_json::json!({
        "entries": entries.iter().map(|e| serde_json::json!({
            "key": encode_bytes(&e.key),
            "value": encode_bytes(&e.value),
            "version": e.version,
        })).collect::<Vec<_>>(),
        "continuation": continuation.map(|c| encode_bytes(&c)),
    });
    Ok(Json(body).into_response())
}

/// The first key after every key starting with `prefix` (`None`: no such key, the prefix
/// is all 0xff bytes or empty).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn unexpected(response: &KvResponse) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message: format!("the store answered {response:?}"),
    }
}

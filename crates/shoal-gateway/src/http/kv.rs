//! The key-value routes: one key (`/v1/kv/{key}`), its compare-and-set, and scans.

use super::params::{
    acks, condition, conditional_needs_majority, consistency, decode_bytes, path_key, prefix_end,
    query, text, user_key,
};
use super::{App, SCAN_PAGE_BYTES};
use crate::errors::ApiError;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shoal_client::bodies::{
    Accepted, CasExpect, CasRequest, Deleted, Entry, ErrorBody, ScanPage, Written,
};
use shoal_client::encode_bytes;
use shoal_client::VERSION_HEADER;
use shoal_store::{Acks, Condition, KvOp, KvResponse, WriteOp, WriteOutcome, MAX_SCAN_LIMIT};

/// The default number of entries a scan returns.
const DEFAULT_SCAN_LIMIT: u32 = 100;

/// Reads a key.
#[utoipa::path(
    get,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded (binary-safe)."),
        ("consistency" = Option<String>, Query,
            description = "`linearizable` (the default: the leader, after a read barrier) or `stale` (any replica, possibly behind)."),
    ),
    responses(
        (status = 200, description = "The value, raw; its version in `X-Shoal-Version`.",
            body = Vec<u8>, content_type = "application/octet-stream",
            headers(("x-shoal-version" = u64, description = "The value's version."))),
        (status = 404, description = "No value.", body = ErrorBody),
        (status = 400, description = "Malformed.", body = ErrorBody),
        (status = 503, description = "No leader or quorum for now; `Retry-After`.", body = ErrorBody),
    )
)]
pub(super) async fn get_key(
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

/// Writes a key; the body is the value, raw.
#[utoipa::path(
    put,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded (binary-safe)."),
        ("acks" = Option<String>, Query,
            description = "`majority` (the default: committed), `leader` (in the leader's log) or `none` (sent)."),
        ("If-Match" = Option<u64>, Header, description = "Write only over this version (needs acks=majority)."),
        ("If-None-Match" = Option<String>, Header, description = "`*`: write only if the key has no value (needs acks=majority)."),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value (at most 1 MiB)."),
    responses(
        (status = 200, description = "Committed.", body = Written),
        (status = 202, description = "Accepted (acks=leader or none).", body = Accepted),
        (status = 409, description = "The condition did not hold; nothing written.", body = ErrorBody),
        (status = 413, description = "The key (over 4 KiB) or value is too large.", body = ErrorBody),
        (status = 400, description = "Malformed.", body = ErrorBody),
        (status = 503, description = "Certainly not written; retry after `Retry-After`.", body = ErrorBody),
        (status = 504, description = "The outcome is unknown: the write may or may not have happened.", body = ErrorBody),
    )
)]
pub(super) async fn put_key(
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

/// Deletes a key.
#[utoipa::path(
    delete,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded (binary-safe)."),
        ("acks" = Option<String>, Query, description = "`majority` (the default), `leader` or `none`."),
        ("If-Match" = Option<u64>, Header, description = "Delete only this version (needs acks=majority)."),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 202, description = "Accepted (acks=leader or none).", body = Accepted),
        (status = 404, description = "There was no value.", body = ErrorBody),
        (status = 409, description = "The condition did not hold; nothing deleted.", body = ErrorBody),
        (status = 400, description = "Malformed.", body = ErrorBody),
        (status = 503, description = "Certainly not deleted; retry after `Retry-After`.", body = ErrorBody),
        (status = 504, description = "The outcome is unknown.", body = ErrorBody),
    )
)]
pub(super) async fn delete_key(
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
        Some(Condition::Absent) => {
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

/// Sets or deletes a key only if it holds what is expected.
#[utoipa::path(
    post,
    path = "/v1/kv/{key}/cas",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded (binary-safe)."),
        ("acks" = Option<String>, Query, description = "Only `majority` (the default): the outcome must be known."),
    ),
    request_body = CasRequest,
    responses(
        (status = 200, description = "Set (the new version) or deleted (whether there was a value).", body = Written),
        (status = 409, description = "The expectation failed; nothing written.", body = ErrorBody),
        (status = 400, description = "Malformed.", body = ErrorBody),
        (status = 413, description = "Too large.", body = ErrorBody),
        (status = 503, description = "Certainly not written; retry after `Retry-After`.", body = ErrorBody),
        (status = 504, description = "The outcome is unknown.", body = ErrorBody),
    )
)]
pub(super) async fn cas_key(
    State(app): State<App>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = path_key(&uri)?;
    let q = query(&raw, &["acks"])?;
    let acks = acks(&q)?;
    let body: CasRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a compare-and-set: {e}")))?;
    let expect = match body.expect {
        CasExpect::Version(v) => Condition::Version(v),
        CasExpect::Value(v) => Condition::Value(decode_bytes(&v)?),
        CasExpect::Absent => Condition::Absent,
    };
    let new = match &body.value {
        serde_json::Value::Null => None,
        serde_json::Value::String(v) => Some(decode_bytes(v)?),
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
        KvResponse::Accepted => {
            Ok((StatusCode::ACCEPTED, Json(Accepted { accepted: true })).into_response())
        }
        KvResponse::Written(outcomes) => match outcomes.first() {
            Some(&WriteOutcome::Written { version }) => {
                Ok(Json(Written { version }).into_response())
            }
            Some(&WriteOutcome::Deleted { existed }) if answer == Answer::Cas => {
                Ok(Json(Deleted { deleted: existed }).into_response())
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

/// Lists keys in order: those with a prefix, or those from `start` to `end`.
#[utoipa::path(
    get,
    path = "/v1/kv",
    tag = "kv",
    params(
        ("prefix" = Option<String>, Query, description = "Keys starting with this (percent-encoded); not with start or end."),
        ("start" = Option<String>, Query, description = "The first key (percent-encoded; default the first)."),
        ("end" = Option<String>, Query, description = "The first key after the scan (percent-encoded; default the last)."),
        ("limit" = Option<u32>, Query, description = "At most this many entries, 1 to 10,000 (default 100); a page also ends once it passes 4 MiB."),
        ("consistency" = Option<String>, Query, description = "`linearizable` (the default) or `stale`."),
        ("continuation" = Option<String>, Query, description = "The previous page's continuation."),
    ),
    responses(
        (status = 200, description = "A page.", body = ScanPage),
        (status = 400, description = "Malformed.", body = ErrorBody),
        (status = 503, description = "A range has no leader or quorum for now.", body = ErrorBody),
    )
)]
pub(super) async fn scan(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
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
    let page = ScanPage {
        entries: entries
            .iter()
            .map(|e| Entry {
                key: encode_bytes(&e.key),
                value: encode_bytes(&e.value),
                version: e.version,
            })
            .collect(),
        continuation: continuation.map(|c| encode_bytes(&c)),
    };
    Ok(Json(page).into_response())
}

/// A store answer the operation cannot have: a bug, said as one.
pub(super) fn unexpected(response: &KvResponse) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message: format!("the store answered {response:?}"),
    }
}

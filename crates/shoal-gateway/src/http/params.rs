//! Reading a request: query parameters (refusing unknown and repeated ones), keys from the
//! raw path, and the conditions and options the API takes.

use super::MAX_KEY_BYTES;
use crate::errors::ApiError;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use shoal_client::decode_key;
use shoal_store::{Acks, Condition, Consistency, SYSTEM_KEY_PREFIX};
use std::collections::HashMap;

/// The query's parameters, still percent-encoded, refusing any not in `allowed` and any
/// repeated.
pub(super) fn query<'q>(
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
pub(super) fn text(value: &str) -> Result<String, ApiError> {
    let bytes = decode_key(value).map_err(|e| ApiError::bad_request(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| ApiError::bad_request("a parameter is not UTF-8"))
}

/// The key in the request's path (`/v1/kv/{key}`, or `/v1/kv/{key}/cas`), decoded from the
/// raw path: a framework's decoded parameters would have to be UTF-8, and keys need not be.
pub(super) fn path_key(uri: &Uri) -> Result<Vec<u8>, ApiError> {
    let raw = uri
        .path()
        .strip_prefix("/v1/kv/")
        .ok_or_else(|| ApiError::bad_request("no key in the path"))?;
    let raw = raw.strip_suffix("/cas").unwrap_or(raw);
    user_key(decode_key(raw).map_err(|e| ApiError::bad_request(e.to_string()))?)
}

/// Refuses keys over the store's limit and keys in the system's part of the key space.
pub(super) fn user_key(key: Vec<u8>) -> Result<Vec<u8>, ApiError> {
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

pub(super) fn consistency(params: &HashMap<&str, &str>) -> Result<Consistency, ApiError> {
    match params.get("consistency").copied() {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("stale") => Ok(Consistency::Stale),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency must be linearizable or stale, not {other:?}"
        ))),
    }
}

pub(super) fn acks(params: &HashMap<&str, &str>) -> Result<Acks, ApiError> {
    match params.get("acks").copied() {
        None | Some("majority") => Ok(Acks::Majority),
        Some("leader") => Ok(Acks::Leader),
        Some("none") => Ok(Acks::None),
        Some(other) => Err(ApiError::bad_request(format!(
            "acks must be majority, leader or none, not {other:?}"
        ))),
    }
}

/// The condition a conditional write's headers ask for.
pub(super) fn condition(headers: &HeaderMap) -> Result<Option<Condition>, ApiError> {
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
            Ok(Some(Condition::Version(version)))
        }
        (None, Some(v)) if v.as_bytes() == b"*" => Ok(Some(Condition::Absent)),
        (None, Some(_)) => Err(ApiError::bad_request("If-None-Match must be *")),
        (None, None) => Ok(None),
    }
}

/// Refuses a conditional write with weaker acks than majority: its outcome would not be
/// known in time to answer whether the condition held.
pub(super) fn conditional_needs_majority(conditional: bool, acks: Acks) -> Result<(), ApiError> {
    if conditional && acks != Acks::Majority {
        return Err(ApiError::bad_request(
            "a conditional write needs acks=majority to say whether its condition held",
        ));
    }
    Ok(())
}

/// A percent-encoded JSON string as bytes (empty allowed).
pub(super) fn decode_bytes(s: &str) -> Result<Vec<u8>, ApiError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    decode_key(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The first key after every key starting with `prefix` (`None`: no such key, the prefix
/// is all 0xff bytes or empty).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

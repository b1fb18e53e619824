//! Fault injection over HTTP, for tests that partition real processes (`cargo xtask
//! cluster-test`): `GET`, `PUT` and `DELETE /v1/admin/faults` read, replace and clear the
//! rules of the node's transport fault filter (see `Store::fault_filter`), which cut or
//! delay Raft, RPC and gossip traffic with chosen peers.
//!
//! `GET /v1/admin/faults?probe=ADDR` also sends one node RPC to the node at `ADDR` and
//! says whether it was answered: a test's proof that a partition cuts what it should.
//!
//! The routes answer only on a gateway built with [`GatewayConfig::fault_injection`]; on
//! any other they are a 404 `fault_injection_disabled`, and nothing changes. They are left
//! out of the OpenAPI document: they are a test harness, not part of the API.
//!
//! [`GatewayConfig::fault_injection`]: super::GatewayConfig::fault_injection

use super::params::{decode_bytes, query};
use super::App;
use crate::errors::ApiError;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shoal_core::{ErrorCode, RangeId};
use shoal_store::StatusRpc;
use shoal_transport::{Direction, FaultAction, RpcTransportExt};
use std::net::SocketAddr;
use std::time::Duration;

/// The most rules one request may set (a peer has two directions; clusters are far smaller).
const MAX_RULES: usize = 1024;

/// The longest delay a rule may ask for.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// One rule, as sent and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The peer's node address (where it listens for Raft, RPC and gossip).
    pub peer: SocketAddr,
    /// `inbound` (traffic from the peer), `outbound` (to it) or `both`.
    pub direction: String,
    /// `drop`, or `delay` (with `delay_ms`).
    pub action: String,
    /// How long `delay` holds messages back, in milliseconds (at most 60,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// The rules to put in place, replacing every earlier one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRules {
    /// The rules (an empty list heals).
    pub rules: Vec<FaultRule>,
}

/// The filter's state.
#[derive(Debug, Serialize)]
pub struct FaultState {
    /// The rules in force, one per peer and direction.
    pub rules: Vec<FaultRule>,
    /// Messages the filter has dropped since the node started.
    pub dropped: u64,
    /// Messages it has delayed since the node started.
    pub delayed: u64,
    /// With `?probe=ADDR`: whether a node RPC to that address was answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
}

/// One node RPC (a status request) to a peer, through the fault filter like any other.
#[derive(Debug, Serialize)]
pub struct Probe {
    /// The address asked.
    pub peer: SocketAddr,
    /// Whether it answered within the probe's timeout.
    pub reachable: bool,
    /// Why not, if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long a probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Refuses unless the gateway was built with fault injection on.
fn enabled(app: &App) -> Result<(), ApiError> {
    if app.config.fault_injection {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "fault_injection_disabled",
            message: "fault injection is off on this node (start it with --fault-injection)".into(),
        })
    }
}

fn state(app: &App) -> FaultState {
    let backend = app.router.backend();
    let stats = backend.transport_stats();
    let rules = backend
        .fault_filter()
        .rules()
        .into_iter()
        .map(|(peer, direction, action)| FaultRule {
            peer,
            direction: match direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
                Direction::Both => "both",
            }
            .into(),
            action: match action {
                FaultAction::Drop => "drop".into(),
                FaultAction::Delay(_) => "delay".into(),
            },
            delay_ms: match action {
                FaultAction::Drop => None,
                FaultAction::Delay(d) => Some(d.as_millis() as u64),
            },
        })
        .collect();
    FaultState {
        rules,
        dropped: stats.fault_dropped,
        delayed: stats.fault_delayed,
        probe: None,
    }
}

/// A rule checked and converted, or why it is refused.
fn parse(rule: &FaultRule) -> Result<(SocketAddr, Direction, FaultAction), ApiError> {
    let direction = match rule.direction.as_str() {
        "inbound" => Direction::Inbound,
        "outbound" => Direction::Outbound,
        "both" => Direction::Both,
        other => {
            return Err(ApiError::bad_request(format!(
                "direction {other:?} is not inbound, outbound or both"
            )))
        }
    };
    let action = match (rule.action.as_str(), rule.delay_ms) {
        ("drop", None) => FaultAction::Drop,
        ("delay", Some(ms)) if Duration::from_millis(ms) <= MAX_DELAY => {
            FaultAction::Delay(Duration::from_millis(ms))
        }
        ("delay", Some(ms)) => {
            return Err(ApiError::bad_request(format!(
                "a delay of {ms} ms is over the limit of {} ms",
                MAX_DELAY.as_millis()
            )))
        }
        ("delay", None) => return Err(ApiError::bad_request("a delay needs delay_ms")),
        ("drop", Some(_)) => return Err(ApiError::bad_request("a drop takes no delay_ms")),
        (other, _) => {
            return Err(ApiError::bad_request(format!(
                "action {other:?} is not drop or delay"
            )))
        }
    };
    Ok((rule.peer, direction, action))
}

/// `GET /v1/admin/faults`: the rules in force and what they have done; with
/// `?probe=ADDR`, also whether a node RPC to the node listening at `ADDR` is answered now
/// (what a partition's test wants to see cut).
pub(super) async fn get_faults(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
) -> Result<Json<FaultState>, ApiError> {
    enabled(&app)?;
    let params = query(&raw, &["probe"])?;
    let probe = match params.get("probe") {
        Some(addr) => {
            let peer: SocketAddr = decode_bytes(addr)
                .ok()
                .and_then(|a| String::from_utf8(a).ok())
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| ApiError::bad_request("probe is not an address (host:port)"))?;
            let asked = app
                .router
                .backend()
                .client()
                .call::<StatusRpc>(peer, &Some(RangeId::new(0)), PROBE_TIMEOUT)
                .await;
            // Any answer from the peer, an error included (a gateway member has no status
            // to give), means it was reached.
            let reachable = match &asked {
                Ok(_) => true,
                Err(e) => !matches!(e.code, ErrorCode::Unreachable | ErrorCode::Timeout),
            };
            Some(Probe {
                peer,
                reachable,
                error: asked.err().map(|e| e.to_string()),
            })
        }
        None => None,
    };
    Ok(Json(FaultState {
        probe,
        ..state(&app)
    }))
}

/// `PUT /v1/admin/faults`: replaces every rule with the body's (all checked first: a bad
/// rule changes nothing).
pub(super) async fn put_faults(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<FaultState>, ApiError> {
    enabled(&app)?;
    query(&raw, &[])?;
    let body: FaultRules = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a list of rules: {e}")))?;
    if body.rules.len() > MAX_RULES {
        return Err(ApiError::bad_request(format!(
            "{} rules are over the limit of {MAX_RULES}",
            body.rules.len()
        )));
    }
    let rules = body
        .rules
        .iter()
        .map(parse)
        .collect::<Result<Vec<_>, _>>()?;
    app.router.backend().fault_filter().replace(&rules);
    tracing::warn!(rules = body.rules.len(), "fault rules replaced");
    Ok(Json(state(&app)))
}

/// `DELETE /v1/admin/faults`: removes every rule (traffic flows again).
pub(super) async fn delete_faults(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
) -> Result<Json<FaultState>, ApiError> {
    enabled(&app)?;
    query(&raw, &[])?;
    app.router.backend().fault_filter().clear();
    tracing::warn!("fault rules cleared");
    Ok(Json(state(&app)))
}

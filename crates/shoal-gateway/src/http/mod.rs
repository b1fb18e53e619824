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
//! - `GET /v1/ranges/{id}`: one range with each replica's Raft role, term, commit and
//!   applied index, and lag behind the leader, asked of the replicas' nodes.
//! - `GET /v1/ranges/{id}/digests`: each replica's Merkle root at its applied index, built
//!   by its own node, and whether they all agree (`equal`).
//! - `POST /v1/admin/ranges/{id}/split`: splits a range at `{"at": "..."}` (a key strictly
//!   inside it), or at its size median with no body; answers `{"left": ..., "right": ...}`.
//! - `POST /v1/admin/ranges/{id}/replicas`: `{"add_learner": N}`, `{"promote": N}` or
//!   `{"remove": N}`, through the range's leader; answers `{"range": ...}`.
//! - `GET /metrics`: requests by route, method and status (counts, latency histograms),
//!   and the node's store (ranges, leaderships, Raft terms and indexes, members by state,
//!   WAL and engine figures), in the Prometheus text format.
//! - `GET /health`: the process is alive. `GET /ready`: the node can route requests (it
//!   knows the range of the first user key).
//! - `GET`, `PUT`, `DELETE /v1/admin/faults`: the transport fault rules, only on a gateway
//!   built with [`GatewayConfig::fault_injection`] (404 otherwise).
//! - `GET /v1/openapi.json`: the OpenAPI 3 document of all of the above, generated from the
//!   handlers' annotations (the same ones that register the routes).
//!
//! CORS is closed unless [`GatewayConfig::cors_origins`] lists origins; with
//! [`GatewayConfig::auth_token`], every route but `/health` needs the bearer token.
//!
//! Keys in paths and query values are percent-encoded and binary-safe; keys and values in
//! JSON bodies are percent-encoded strings too. Unknown query parameters, bad encodings
//! and malformed JSON are 400s; a key over 4 KiB or a value over 1 MiB is a 413; nothing is
//! written for any of them.

mod cluster;
mod faults;
mod kv;
mod params;

use crate::metrics::Metrics;
use crate::router::KvRouter;
use axum::http::HeaderValue;
use axum::Router;
use std::sync::Arc;
use std::time::{Duration, Instant};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The longest key, in bytes (the store's limit).
pub const MAX_KEY_BYTES: usize = 4096;

/// A scan page ends once its keys and values pass this many bytes (each range's part is
/// still whole, so a page may pass it by one part).
const SCAN_PAGE_BYTES: usize = 4 << 20;

/// The document's frame; the paths and schemas come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Shoal gateway",
        description = "The HTTP API of Shoal, a replicated, range-partitioned, linearizable key-value store. Keys in paths and query values are percent-encoded and binary-safe.",
    ),
    tags(
        (name = "kv", description = "Keys and values."),
        (name = "cluster", description = "Members and ranges."),
        (name = "admin", description = "Range administration."),
        (name = "operations", description = "Health, readiness, metrics."),
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Declares the optional bearer token.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes with their OpenAPI document (paths and schemas from the handlers).
fn api() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(kv::get_key, kv::put_key, kv::delete_key))
        .routes(routes!(kv::cas_key))
        .routes(routes!(kv::scan))
        .routes(routes!(cluster::members))
        .routes(routes!(cluster::ranges))
        .routes(routes!(cluster::range_status))
        .routes(routes!(cluster::range_digests))
        .routes(routes!(cluster::split_range))
        .routes(routes!(cluster::change_replicas))
        .routes(routes!(cluster::health))
        .routes(routes!(cluster::ready))
        .routes(routes!(cluster::metrics_text))
}

/// The gateway's OpenAPI 3 document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// How the gateway serves.
#[derive(Clone)]
pub struct GatewayConfig {
    /// How long a request may take, routing and retries included. Default 10 s.
    pub request_timeout: Duration,
    /// The largest request body accepted (a value, or a compare-and-set's JSON). Default
    /// 4 MiB: a 1 MiB value percent-encoded in JSON fits; the store refuses values over
    /// 1 MiB itself.
    pub max_body_bytes: usize,
    /// Origins whose pages may call the gateway from a browser (CORS), each exactly
    /// `scheme://host[:port]` (see [`parse_origin`]). Default none: every request that
    /// carries an `Origin` header (a browser's, from a web page) is refused with 403, and no
    /// CORS headers are sent.
    pub cors_origins: Vec<HeaderValue>,
    /// If set, every route but `/health` needs `Authorization: Bearer <token>` (401
    /// otherwise). Default none.
    pub auth_token: Option<String>,
    /// Whether `GET`, `PUT` and `DELETE /v1/admin/faults` may read, set and clear the rules
    /// of the node's transport fault filter (cutting or delaying its traffic with chosen
    /// peers; `?probe=ADDR` sends one node RPC to a peer): for fault-injection tests only,
    /// never in production. Default off, when the routes answer 404.
    pub fault_injection: bool,
}

/// Shows everything but the token (which a log line must never carry).
impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("request_timeout", &self.request_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("cors_origins", &self.cors_origins)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("fault_injection", &self.fault_injection)
            .finish()
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 4 << 20,
            cors_origins: Vec::new(),
            auth_token: None,
            fault_injection: false,
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
    let (api, document) = api().split_for_parts();
    // Serialized once; every request gets the same bytes.
    let document = axum::body::Bytes::from(document.to_json().unwrap_or_default());
    let app = api
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document,
                    )
                }
            }),
        )
        .route(
            "/v1/admin/faults",
            axum::routing::get(faults::get_faults)
                .put(faults::put_faults)
                .delete(faults::delete_faults),
        )
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
    // Outermost first: requests from unlisted origins are refused, allowed preflights
    // answered by the CORS layer, and only then is the token asked for.
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
        crate::security::refuse_foreign_origins,
    ))
}

impl App {
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout
    }
}

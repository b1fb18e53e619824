//! `/metrics`: the gateway's requests (counts and latency histograms by route, method and
//! status) and the node's store (ranges, leaderships, Raft terms and indexes per range,
//! members by state, WAL and engine figures), in the Prometheus (OpenMetrics) text format.
//! Store figures are read when scraped.

use crate::backend::Backend;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

/// A request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

/// A range's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RangeLabels {
    range: String,
}

/// A membership state's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The gateway's metrics and the registry they are encoded from.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    ranges: Gauge,
    leaderships: Gauge,
    terms: Family<RangeLabels, Gauge>,
    commits: Family<RangeLabels, Gauge>,
    applied: Family<RangeLabels, Gauge>,
    range_bytes: Family<RangeLabels, Gauge>,
    members: Family<StateLabels, Gauge>,
    wal_syncs: Gauge,
    wal_bytes: Gauge,
    wal_segments: Gauge,
    engine_disk_bytes: Gauge,
    replica_mismatches: Gauge,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to about 3.3 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered and at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shoal");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        let m = Metrics {
            requests: requests.clone(),
            latency: latency.clone(),
            ranges: Gauge::default(),
            leaderships: Gauge::default(),
            terms: Family::default(),
            commits: Family::default(),
            applied: Family::default(),
            range_bytes: Family::default(),
            members: Family::default(),
            wal_syncs: Gauge::default(),
            wal_bytes: Gauge::default(),
            wal_segments: Gauge::default(),
            engine_disk_bytes: Gauge::default(),
            replica_mismatches: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests answered", requests);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency,
        );
        registry.register("ranges", "Ranges hosted by this node", m.ranges.clone());
        registry.register(
            "leaderships",
            "Ranges this node leads",
            m.leaderships.clone(),
        );
        registry.register("raft_term", "Raft term per hosted range", m.terms.clone());
        registry.register(
            "raft_commit_index",
            "Raft commit index per hosted range",
            m.commits.clone(),
        );
        registry.register(
            "raft_applied_index",
            "Raft applied index per hosted range",
            m.applied.clone(),
        );
        registry.register(
            "range_live_bytes",
            "Live keys' and values' bytes per hosted range",
            m.range_bytes.clone(),
        );
        registry.register(
            "members",
            "Members by state, as this node sees them",
            m.members.clone(),
        );
        registry.register("wal_syncs", "WAL syncs so far", m.wal_syncs.clone());
        registry.register("wal_bytes", "WAL bytes on disk", m.wal_bytes.clone());
        registry.register(
            "wal_segments",
            "WAL segment files on disk",
            m.wal_segments.clone(),
        );
        registry.register(
            "engine_disk_bytes",
            "Storage engine bytes on disk",
            m.engine_disk_bytes.clone(),
        );
        registry.register(
            "replica_mismatches",
            "Replica comparisons that found two replicas differing at one applied index",
            m.replica_mismatches.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts an answered request.
    fn observe(&self, route: String, method: String, status: u16, seconds: f64) {
        let labels = RequestLabels {
            route,
            method,
            status: status.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// The metrics as text, with the store's figures read now.
    async fn render(&self, backend: &dyn Backend) -> String {
        // Ranges that left since the last scrape are dropped, not left at stale values.
        for family in [&self.terms, &self.commits, &self.applied, &self.range_bytes] {
            family.clear();
        }
        // A standalone gateway hosts nothing: its store figures stay zero.
        if let Some(store) = backend.local() {
            let status = store.report(None).await;
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.ranges.set(gauge(status.hosted as u64));
            self.leaderships.set(gauge(status.leaderships as u64));
            self.wal_syncs.set(gauge(status.wal_syncs));
            self.wal_bytes.set(gauge(status.wal_bytes));
            self.wal_segments.set(gauge(status.wal_segments as u64));
            self.engine_disk_bytes.set(gauge(status.engine_disk_bytes));
            self.replica_mismatches
                .set(gauge(status.replica_mismatches));
            for r in &status.ranges {
                let labels = RangeLabels {
                    range: r.descriptor.id.get().to_string(),
                };
                self.terms.get_or_create(&labels).set(gauge(r.term));
                self.commits.get_or_create(&labels).set(gauge(r.commit));
                self.applied.get_or_create(&labels).set(gauge(r.applied));
                self.range_bytes.get_or_create(&labels).set(gauge(r.bytes));
            }
        }
        self.members.clear();
        if let Ok(members) = backend.members().await {
            for m in members {
                let labels = StateLabels {
                    state: format!("{:?}", m.state).to_lowercase(),
                };
                self.members.get_or_create(&labels).inc();
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Middleware counting every routed request by route, method and status.
pub(crate) async fn track(
    State(metrics): State<Arc<Metrics>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe(
        route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub(crate) async fn serve(metrics: &Metrics, backend: &dyn Backend) -> Response {
    let text = metrics.render(backend).await;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

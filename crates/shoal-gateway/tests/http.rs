//! The HTTP API end to end: three stores on loopback TCP with real engines in temp dirs, a
//! gateway embedded in one of them, requests over HTTP.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shoal_core::NodeId;
use shoal_gateway::{encode_bytes, routes, Backend, GatewayConfig, KvRouter, VERSION_HEADER};
use shoal_store::{Store, StoreConfig, Topology, TopologyConfig, FIRST_RANGE};
use shoal_transport::{Direction, FaultAction};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Cluster {
    stores: Vec<Store>,
    _dirs: Vec<tempfile::TempDir>,
    url: String,
    http: HttpClient,
    /// The client library, pointed at the gateway.
    client: shoal_client::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The bearer token every request presents, if the gateway wants one.
    token: Option<String>,
    /// The gateway's router (its range cache).
    router: KvRouter,
}

fn config(id: u64, dir: &std::path::Path) -> StoreConfig {
    StoreConfig::local(NodeId::new(id), dir)
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(GatewayConfig::default()).await
    }

    async fn start_with(gateway: GatewayConfig) -> Cluster {
        let token = gateway.auth_token.clone();
        let mut stores = Vec::new();
        let mut dirs = Vec::new();
        for id in 1..=3 {
            let dir = tempfile::tempdir().unwrap();
            stores.push(Store::open(config(id, dir.path())).await.unwrap());
            dirs.push(dir);
        }
        let first = stores[0].addr();
        for store in &stores[1..] {
            store.join(vec![first]).await.unwrap();
        }
        let voters: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
        for store in &stores {
            store.bootstrap(&voters).await.unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let router = KvRouter::new(stores[0].clone());
        let app = routes(router.clone(), gateway);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(shoal_gateway::serve(
            shoal_gateway::HttpListener::Plain(listener),
            app,
            async move {
                let _ = stopped.await;
            },
        ));
        let cluster = Cluster {
            stores,
            _dirs: dirs,
            url: format!("http://{addr}"),
            http: Client::builder(TokioExecutor::new()).build_http(),
            client: shoal_client::Client::connect(&format!("http://{addr}")).unwrap(),
            stop: Some(stop),
            token,
            router,
        };
        // Ready once it can route (every store knows the others, a leader exists).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _, _) = cluster.call(Method::GET, "/ready", &[], &[]).await;
            if status == StatusCode::OK {
                break;
            }
            assert!(Instant::now() < deadline, "the gateway never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster
    }

    /// Sends a request with the cluster's token (if any); returns the status, the version
    /// header and the body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (StatusCode, Option<u64>, Vec<u8>) {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all = headers.to_vec();
        if let Some(bearer) = &bearer {
            all.push(("authorization", bearer));
        }
        send(&self.client, method, path, &all, body).await
    }

    /// Sends exactly the request given, with hyper rather than the client library (which
    /// hands its callers no response headers): returns what [`Cluster::call`] does, and
    /// the response's headers, for the tests of CORS and of the token guard.
    async fn call_bare(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> ((StatusCode, Option<u64>, Vec<u8>), hyper::HeaderMap) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body.to_vec()))).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.http.request(request))
            .await
            .expect("an answer in time")
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let version = headers
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        ((status, version, body), headers)
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        body: &[u8],
    ) -> (StatusCode, serde_json::Value) {
        let (status, _, body) = self.call(method, path, &[], body).await;
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for store in &self.stores {
            store.shutdown().await;
        }
    }
}

/// Splits the range holding `at` there, on whichever store leads it.
async fn split_at(cluster: &Cluster, at: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for store in &cluster.stores {
            let Ok(found) = store.lookup(at).await else {
                continue;
            };
            let Some(range) = found.first() else { continue };
            if range.range.start() == at {
                return;
            }
            if store.leader(range.id) == Some(store.id())
                && store.split(range.id, Some(at.to_vec())).await.is_ok()
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the range did not split");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_written_read_conditioned_scanned_and_deleted_over_http() {
    let cluster = Cluster::start().await;
    // Put, then get with its version.
    let (status, body) = cluster.json(Method::PUT, "/v1/kv/apple", b"red").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let version = body["version"].as_u64().unwrap();
    let (status, got_version, value) = cluster.call(Method::GET, "/v1/kv/apple", &[], &[]).await;
    assert_eq!(
        (status, got_version, value.as_slice()),
        (StatusCode::OK, Some(version), &b"red"[..])
    );
    let (status, _, _) = cluster
        .call(Method::GET, "/v1/kv/apple?consistency=stale", &[], &[])
        .await;
    assert_eq!(status, StatusCode::OK);

    // Binary-safe keys and values.
    let key: Vec<u8> = vec![0, 1, b'/', 0xfe, b' '];
    let path = format!("/v1/kv/{}", encode_bytes(&key));
    let value: Vec<u8> = (0..=255u8).collect();
    let (status, _, answer) = cluster.call(Method::PUT, &path, &[], &value).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&answer)
    );
    let (_, _, got) = cluster.call(Method::GET, &path, &[], &[]).await;
    assert_eq!(got, value);

    // Conditional writes: by version, create-only; a failed condition is a 409.
    let stale = format!("{}", version + 1000);
    let (status, _, _) = cluster
        .call(Method::PUT, "/v1/kv/apple", &[("if-match", &stale)], b"x")
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let current = format!("{version}");
    let (status, _, _) = cluster
        .call(
            Method::PUT,
            "/v1/kv/apple",
            &[("if-match", &current)],
            b"green",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = cluster
        .call(Method::PUT, "/v1/kv/apple", &[("if-none-match", "*")], b"x")
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = cluster
        .call(
            Method::PUT,
            "/v1/kv/pear",
            &[("if-none-match", "*")],
            b"new",
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Compare-and-set by value, then a delete through it.
    let (status, body) = cluster
        .json(
            Method::POST,
            "/v1/kv/apple/cas",
            br#"{"expect":{"value":"green"},"value":"yellow"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = cluster
        .json(
            Method::POST,
            "/v1/kv/apple/cas",
            br#"{"expect":{"value":"green"},"value":"x"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, _, value) = cluster.call(Method::GET, "/v1/kv/apple", &[], &[]).await;
    assert_eq!(value, b"yellow");

    // Writes with weaker acks are accepted.
    let (status, _) = cluster
        .json(Method::PUT, "/v1/kv/plum?acks=leader", b"p")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Scans: by prefix, paged with the continuation, across a range boundary.
    for i in 0..25 {
        let (status, _) = cluster
            .json(Method::PUT, &format!("/v1/kv/item{i:02}"), b"v")
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    split_at(&cluster, b"item13").await;
    let mut seen = Vec::new();
    let mut path = "/v1/kv?prefix=item&limit=10".to_string();
    for _ in 0..10 {
        let (status, body) = cluster.json(Method::GET, &path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for e in body["entries"].as_array().unwrap() {
            seen.push(e["key"].as_str().unwrap().to_string());
        }
        match body["continuation"].as_str() {
            Some(c) => path = format!("/v1/kv?prefix=item&limit=10&continuation={c}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("item{i:02}")).collect();
    assert_eq!(seen, expected);

    // A delete through a compare-and-set says whether there was a value.
    let (status, body) = cluster
        .json(
            Method::POST,
            "/v1/kv/apple/cas",
            br#"{"expect":{"value":"yellow"},"value":null}"#,
        )
        .await;
    assert_eq!(
        (status, body["deleted"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    // A conditional delete: only over the version named.
    let (_, body) = cluster.json(Method::PUT, "/v1/kv/fig", b"f").await;
    let fig = body["version"].as_u64().unwrap();
    let wrong = format!("{}", fig + 1);
    let (status, _, _) = cluster
        .call(Method::DELETE, "/v1/kv/fig", &[("if-match", &wrong)], &[])
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let right = format!("{fig}");
    let (status, _, _) = cluster
        .call(Method::DELETE, "/v1/kv/fig", &[("if-match", &right)], &[])
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Deletes: 204, then 404.
    let (status, _, _) = cluster.call(Method::DELETE, "/v1/kv/pear", &[], &[]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = cluster.call(Method::DELETE, "/v1/kv/pear", &[], &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = cluster.call(Method::GET, "/v1/kv/pear", &[], &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An operator's split, over HTTP: the first user range at "b".
    let (status, body) = cluster
        .json(Method::POST, "/v1/admin/ranges/1/split", br#"{"at":"b"}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["right"]["start"], "b", "{body}");
    let (status, _) = cluster
        .json(
            Method::POST,
            "/v1/admin/ranges/99999/split",
            br#"{"at":"q"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, value) = cluster.call(Method::GET, "/v1/kv/plum", &[], &[]).await;
    assert_eq!(value, b"p", "keys stay readable across the split");

    // The cluster as the gateway's node sees it.
    let (status, body) = cluster.json(Method::GET, "/v1/cluster/members", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let members = body.as_array().unwrap();
    assert_eq!(members.len(), 3, "{body}");
    assert!(members.iter().all(|m| m["state"] == "alive"), "{body}");
    let (status, body) = cluster.json(Method::GET, "/v1/ranges", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ranges = body.as_array().unwrap();
    // The meta range, the first user range and the split's right half, once recorded;
    // each once, even while the meta range still holds the parent's older generation.
    assert!(ranges.len() >= 2, "{body}");
    let mut ids: Vec<u64> = ranges.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), ranges.len(), "{body}");
    assert!(
        ranges
            .iter()
            .all(|r| r["replicas"].as_array().unwrap().len() == 3),
        "{body}"
    );
    // One range in detail: every replica answers, one leads, the others' lag is known.
    let (status, body) = cluster.json(Method::GET, "/v1/ranges/1", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let replicas = body["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 3, "{body}");
    assert!(replicas.iter().all(|r| r["reachable"] == true), "{body}");
    let leader = body["leader"].as_u64().expect("a leader");
    for r in replicas {
        assert!(r["applied"].as_u64().unwrap() > 0, "{body}");
        if r["node"].as_u64() == Some(leader) {
            assert_eq!(r["raft_role"], "leader", "{body}");
        } else {
            assert_eq!(r["raft_role"], "follower", "{body}");
            assert!(r["lag_entries"].is_u64(), "{body}");
        }
    }
    // Digests: each replica's Merkle root, equal once they stand at one applied index.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = cluster.json(Method::GET, "/v1/ranges/1/digests", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let replicas = body["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3, "{body}");
        if body["equal"] == true {
            assert!(replicas
                .iter()
                .all(|r| r["root"].as_str().unwrap().len() == 64));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas never agreed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = cluster.json(Method::GET, "/v1/ranges/99999", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = cluster
        .json(Method::GET, "/v1/ranges/99999/digests", &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = cluster.json(Method::GET, "/v1/ranges/x", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The OpenAPI document lists every route the gateway serves, with its schemas.
    let (status, doc) = cluster.json(Method::GET, "/v1/openapi.json", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for (path, method) in [
        ("/v1/kv/{key}", "get"),
        ("/v1/kv/{key}", "put"),
        ("/v1/kv/{key}", "delete"),
        ("/v1/kv/{key}/cas", "post"),
        ("/v1/kv", "get"),
        ("/v1/cluster/members", "get"),
        ("/v1/ranges", "get"),
        ("/v1/ranges/{id}", "get"),
        ("/v1/ranges/{id}/digests", "get"),
        ("/v1/admin/ranges/{id}/split", "post"),
        ("/v1/admin/ranges/{id}/replicas", "post"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "no {method} {path}");
    }
    for schema in [
        "ScanPage",
        "CasRequest",
        "RangeStatus",
        "ErrorBody",
        "Written",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no {schema}"
        );
    }

    // Metrics: the requests above, and the store's figures.
    let (status, _, text) = cluster.call(Method::GET, "/metrics", &[], &[]).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text).unwrap();
    for expected in [
        "shoal_http_requests_total{route=\"/v1/kv/{key}\",method=\"PUT\",status=\"200\"}",
        "shoal_http_request_duration_seconds_bucket",
        "shoal_ranges ",
        "shoal_raft_applied_index{range=\"1\"}",
        "shoal_members{state=\"alive\"} 3",
        "shoal_wal_syncs ",
    ] {
        assert!(text.contains(expected), "no {expected} in\n{text}");
    }
    let (status, body) = cluster.json(Method::GET, "/health", &[]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    cluster.shutdown().await;
}

/// A malformed request: method, path, headers, body, and the status it must get.
type Case = (
    Method,
    String,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
    StatusCode,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_change_nothing() {
    let cluster = Cluster::start().await;
    let (status, _) = cluster.json(Method::PUT, "/v1/kv/kept", b"before").await;
    assert_eq!(status, StatusCode::OK);
    let long_key = "k".repeat(5000);
    let cases: Vec<Case> = vec![
        (
            Method::PUT,
            "/v1/kv/bad%zzkey".into(),
            vec![],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/kv/kept?colour=blue".into(),
            vec![],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/kv/kept?acks=some".into(),
            vec![],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/kv/kept".into(),
            vec![("if-match", "seven")],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/kv/kept".into(),
            vec![("if-none-match", "abc")],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/kv/kept/cas".into(),
            vec![],
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/kv/kept/cas".into(),
            vec![],
            br#"{"expect":"absent","value":"x","extra":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            format!("/v1/kv/{long_key}"),
            vec![],
            b"v".to_vec(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::PUT,
            "/v1/kv/kept".into(),
            vec![],
            vec![0u8; (1 << 20) + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::PUT,
            "/v1/kv/%FFsystem".into(),
            vec![],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/kv?start=b&end=a".into(),
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/kv?limit=0".into(),
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/kv?prefix=a&start=b".into(),
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/admin/ranges/1/replicas".into(),
            vec![],
            br#"{"add_learner": 0}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/admin/ranges/1/replicas".into(),
            vec![],
            br#"{"grow": 4}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/admin/ranges/1/replicas".into(),
            vec![],
            br#"{"add_learner": 2}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/admin/ranges/1/replicas".into(),
            vec![],
            br#"{"add_learner": 77}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/admin/ranges/424242/replicas".into(),
            vec![],
            br#"{"remove": 2}"#.to_vec(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, headers, body, expected) in cases {
        let (status, _, answer) = cluster.call(method.clone(), &path, &headers, &body).await;
        assert_eq!(
            status,
            expected,
            "{method} {}: {}",
            &path[..path.len().min(60)],
            String::from_utf8_lossy(&answer)
        );
    }
    // Nothing changed.
    let (status, _, value) = cluster.call(Method::GET, "/v1/kv/kept", &[], &[]).await;
    assert_eq!((status, value.as_slice()), (StatusCode::OK, &b"before"[..]));
    let (status, _, _) = cluster
        .call(Method::GET, &format!("/v1/kv/{long_key}"), &[], &[])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    cluster.shutdown().await;
}

/// CORS is closed unless origins are listed: a preflight from an unlisted origin is refused
/// (403), a listed one is answered with its origin and no credentials. With a token, every
/// route but /health needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_and_the_bearer_token_guard_the_api() {
    let gateway = GatewayConfig {
        cors_origins: vec![shoal_gateway::parse_origin("https://app.example.com").unwrap()],
        auth_token: Some("s3cret-token".into()),
        ..GatewayConfig::default()
    };
    let cluster = Cluster::start_with(gateway).await;
    let preflight = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "authorization"),
        ]
    };
    let ((status, _, _), headers) = cluster
        .call_bare(
            Method::OPTIONS,
            "/v1/kv/k",
            &preflight("https://evil.example"),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get("access-control-allow-origin").is_none());
    let ((status, _, _), headers) = cluster
        .call_bare(
            Method::OPTIONS,
            "/v1/kv/k",
            &preflight("https://app.example.com"),
            &[],
        )
        .await;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        headers.get("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    assert!(headers.get("access-control-allow-credentials").is_none());

    // A page of an unlisted origin cannot send a plain request either (a form's POST).
    let ((status, _, _), _) = cluster
        .call_bare(
            Method::POST,
            "/v1/admin/ranges/1/split",
            &[
                ("origin", "https://evil.example"),
                ("authorization", "Bearer s3cret-token"),
            ],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = cluster
        .call(
            Method::PUT,
            "/v1/kv/from-page",
            &[("origin", "https://app.example.com")],
            b"ok",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a listed origin's page may write");
    // The scheme's name is case-insensitive.
    let ((status, _, _), _) = cluster
        .call_bare(
            Method::GET,
            "/v1/kv/from-page",
            &[("authorization", "bearer s3cret-token")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The token: missing or wrong is a 401 that writes nothing; /health needs none.
    let ((status, _, _), headers) = cluster
        .call_bare(Method::PUT, "/v1/kv/guarded", &[], b"x")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
    let wrong = [("authorization", "Bearer s3cret-tokem")];
    let ((status, _, _), _) = cluster
        .call_bare(Method::PUT, "/v1/kv/guarded", &wrong, b"x")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for path in ["/metrics", "/v1/ranges", "/ready"] {
        let ((status, _, _), _) = cluster.call_bare(Method::GET, path, &[], &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let ((status, _, _), _) = cluster.call_bare(Method::GET, "/health", &[], &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = cluster.call(Method::GET, "/v1/kv/guarded", &[], &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was written");
    let (status, _, _) = cluster.call(Method::PUT, "/v1/kv/guarded", &[], b"x").await;
    assert_eq!(status, StatusCode::OK);
    cluster.shutdown().await;
}

/// Serves a gateway over `backend` on a free port; returns its URL.
async fn serve_gateway(backend: impl Backend, config: GatewayConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes(KvRouter::new(backend), config);
    tokio::spawn(shoal_gateway::serve(
        shoal_gateway::HttpListener::Plain(listener),
        app,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// A write the leader proposed but could not commit (both followers gone) before the
/// request's deadline may still commit later: it is a 504 that says the outcome is unknown,
/// never a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_outcome_is_unknown_is_a_504_that_says_so() {
    let cluster = Cluster::start().await;
    let (status, _, _) = cluster.call(Method::PUT, "/v1/kv/warm", &[], b"1").await;
    assert_eq!(status, StatusCode::OK);
    let leader = cluster.stores[0].leader(shoal_store::FIRST_RANGE).unwrap();
    let leader_store = cluster
        .stores
        .iter()
        .find(|s| s.id() == leader)
        .unwrap()
        .clone();
    let url = serve_gateway(
        leader_store,
        GatewayConfig {
            request_timeout: Duration::from_millis(300),
            ..GatewayConfig::default()
        },
    )
    .await;
    for store in cluster.stores.iter().filter(|s| s.id() != leader) {
        store.crash().await;
    }
    let (status, _, body) = request_to(&url, Method::PUT, "/v1/kv/doubtful", &[], b"maybe").await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"], "outcome_unknown", "{body}");
    cluster.shutdown().await;
}

/// A node membership declares dead is evicted from the gateway's range cache: its
/// leaderships are forgotten and requests go to the other replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_evicted_from_the_gateways_routes() {
    let cluster = Cluster::start().await;
    let (status, _, _) = cluster.call(Method::PUT, "/v1/kv/route", &[], b"1").await;
    assert_eq!(status, StatusCode::OK);
    let gone = cluster.stores[2].id();
    cluster.stores[2].crash().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = cluster.router.cache().live_replicas(b"route").unwrap();
        if live.is_some_and(|replicas| replicas.iter().all(|r| r.node != gone)) {
            break;
        }
        assert!(Instant::now() < deadline, "node {gone} was never evicted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, body) = cluster.call(Method::PUT, "/v1/kv/route", &[], b"2").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    cluster.shutdown().await;
}

/// `/v1/admin/faults` is a 404 unless fault injection is on; with it on, rules are
/// checked as a whole (a bad one changes nothing), listed, take effect on the node's
/// traffic (drops are counted), and are cleared by DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rules_exist_only_with_fault_injection_on() {
    let off = Cluster::start().await;
    let (status, _, body) = off
        .call(
            Method::PUT,
            "/v1/admin/faults",
            &[],
            br#"{"rules":[{"peer":"127.0.0.1:1","direction":"both","action":"drop"}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("fault_injection_disabled"));
    assert!(off.stores[0].fault_filter().rules().is_empty());
    drop(off);

    let cluster = Cluster::start_with(GatewayConfig {
        fault_injection: true,
        ..GatewayConfig::default()
    })
    .await;
    let peers: Vec<String> = cluster.stores[1..]
        .iter()
        .map(|s| s.addr().to_string())
        .collect();
    let rules = |direction: &str, extra: &str| {
        format!(
            r#"{{"rules":[{{"peer":"{}","direction":"{direction}","action":"drop"{extra}}},{{"peer":"{}","direction":"both","action":"drop"}}]}}"#,
            peers[0], peers[1]
        )
    };
    for bad in [
        rules("sideways", ""),
        rules("both", r#","delay_ms":5"#),
        r#"{"rules":[{"peer":"nowhere","direction":"both","action":"drop"}]}"#.into(),
        r#"{"rules":[],"extra":1}"#.into(),
    ] {
        let (status, _, _) = cluster
            .call(Method::PUT, "/v1/admin/faults", &[], bad.as_bytes())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(cluster.stores[0].fault_filter().rules().is_empty(), "{bad}");
    }
    let (status, _, body) = cluster
        .call(
            Method::PUT,
            "/v1/admin/faults",
            &[],
            rules("both", "").as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["rules"].as_array().unwrap().len(), 4, "{listed}");
    // Gossip probes the cut-off peers within moments: their messages are dropped.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, body) = cluster
            .call(Method::GET, "/v1/admin/faults", &[], &[])
            .await;
        let state: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if state["dropped"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing was dropped: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A probe over node RPC finds the cut-off peer unreachable, and reachable once healed.
    let probe = format!("/v1/admin/faults?probe={}", peers[0]);
    let (_, _, body) = cluster.call(Method::GET, &probe, &[], &[]).await;
    let state: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(state["probe"]["reachable"], false, "{state}");
    let (status, _, body) = cluster
        .call(Method::DELETE, "/v1/admin/faults", &[], &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let state: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(state["rules"].as_array().unwrap().is_empty(), "{state}");
    assert!(cluster.stores[0].fault_filter().rules().is_empty());
    let (_, _, body) = cluster.call(Method::GET, &probe, &[], &[]).await;
    let state: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(state["probe"]["reachable"], true, "{state}");
    let (status, _, _) = cluster
        .call(Method::GET, "/v1/admin/faults?probe=nowhere", &[], &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Sends one request to the gateway at `url` with the client library (the one parser of
/// the gateway's answers); returns the status, the version header and the body.
async fn request_to(
    url: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, Option<u64>, Vec<u8>) {
    let client = shoal_client::Client::connect(url).unwrap();
    send(&client, method, path, headers, body).await
}

/// Sends one request through `client` (no retries beyond what it does for any request),
/// within 30 s.
async fn send(
    client: &shoal_client::Client,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, Option<u64>, Vec<u8>) {
    let headers: Vec<(&str, String)> = headers.iter().map(|(n, v)| (*n, v.to_string())).collect();
    let answer = client
        .request_within(
            method,
            path,
            &headers,
            body.to_vec(),
            Duration::from_secs(30),
        )
        .await
        .expect("an answer in time");
    (
        StatusCode::from_u16(answer.status).unwrap(),
        answer.version,
        answer.body,
    )
}

/// A gateway at a URL.
struct GatewayAt {
    client: shoal_client::Client,
}

impl GatewayAt {
    fn new(url: &str) -> GatewayAt {
        GatewayAt {
            client: shoal_client::Client::connect(url).unwrap(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (StatusCode, Option<u64>, Vec<u8>) {
        send(&self.client, method, path, headers, body).await
    }
}

/// A gateway embedded in a data node serves the ranges that node leads through the node's
/// own store, with no TCP call to itself. The node's own address is cut off outbound, so a
/// request it sent itself over TCP would be dropped (and counted), and the write would
/// time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_to_a_range_this_node_leads_makes_no_tcp_call_to_itself() {
    let cluster = Cluster::start().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let leader = cluster
            .stores
            .iter()
            .find(|s| s.leader(FIRST_RANGE) == Some(s.id()));
        if let Some(leader) = leader {
            break leader.clone();
        }
        assert!(Instant::now() < deadline, "range 1 never had a leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let term = leader.status(FIRST_RANGE).await.unwrap().term;
    leader
        .fault_filter()
        .add_rule(leader.addr(), Direction::Outbound, FaultAction::Drop);
    let url = serve_gateway(leader.clone(), GatewayConfig::default()).await;
    for i in 0..50 {
        let path = format!("/v1/kv/local-{i}");
        let value = format!("v{i}");
        let (status, _, body) = request_to(&url, Method::PUT, &path, &[], value.as_bytes()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let (status, _, body) = request_to(&url, Method::GET, &path, &[], &[]).await;
        assert_eq!((status, body), (StatusCode::OK, value.into_bytes()));
    }
    assert_eq!(leader.transport_stats().fault_dropped, 0);
    // The node led the range throughout: every request was its own to serve.
    assert_eq!(leader.leader(FIRST_RANGE), Some(leader.id()));
    assert_eq!(leader.status(FIRST_RANGE).await.unwrap().term, term);
    leader.fault_filter().clear();
    cluster.shutdown().await;
}

/// A standalone gateway (a topology: membership, gossip and the RPC client, nothing on
/// disk) joins a three-node cluster and serves every key-value route, and the cluster
/// routes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_gateway_serves_every_kv_route() {
    let cluster = Cluster::start().await;
    let topology = Topology::open(TopologyConfig::local(NodeId::new(9)))
        .await
        .unwrap();
    topology.join(vec![cluster.stores[1].addr()]).await.unwrap();
    let url = serve_gateway(topology.clone(), GatewayConfig::default()).await;
    let gateway = GatewayAt::new(&url);
    // Ready once it can route (gossip or the meta range told it where range 1 is).
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.call(Method::GET, "/ready", &[], &[]).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Put, get (both consistencies), conditional puts.
    let (status, _, _) = gateway
        .call(Method::PUT, "/v1/kv/pear", &[], b"green")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, version, body) = gateway.call(Method::GET, "/v1/kv/pear", &[], &[]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"green"[..]));
    let version = version.expect("a version").to_string();
    let (status, _, body) = gateway
        .call(Method::GET, "/v1/kv/pear?consistency=stale", &[], &[])
        .await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"green"[..]));
    let (status, _, _) = gateway
        .call(Method::PUT, "/v1/kv/pear", &[("if-match", "999999")], b"x")
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = gateway
        .call(
            Method::PUT,
            "/v1/kv/pear",
            &[("if-match", &version)],
            b"yellow",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = gateway
        .call(Method::PUT, "/v1/kv/plum", &[("if-none-match", "*")], b"p")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = gateway
        .call(Method::PUT, "/v1/kv/plum", &[("if-none-match", "*")], b"q")
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = gateway
        .call(Method::PUT, "/v1/kv/quince?acks=leader", &[], b"q")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Compare-and-set.
    let (status, _, _) = gateway
        .call(
            Method::POST,
            "/v1/kv/pear/cas",
            &[],
            br#"{"expect":{"value":"yellow"},"value":"ripe"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = gateway
        .call(
            Method::POST,
            "/v1/kv/pear/cas",
            &[],
            br#"{"expect":"absent","value":"again"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Scans, across a split the gateway learns of by gossip or a mismatch.
    split_at(&cluster, b"pf").await;
    let (status, _, body) = gateway.call(Method::GET, "/v1/kv?prefix=p", &[], &[]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let keys: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["pear", "plum"], "{page}");
    let (status, _, body) = gateway
        .call(Method::GET, "/v1/kv?start=a&end=z&limit=1", &[], &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 1, "{page}");
    assert!(page["continuation"].is_string(), "{page}");
    // Deletes, conditional and not.
    let (status, _, _) = gateway
        .call(
            Method::DELETE,
            "/v1/kv/plum",
            &[("if-match", "999999")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = gateway.call(Method::DELETE, "/v1/kv/plum", &[], &[]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = gateway.call(Method::GET, "/v1/kv/plum", &[], &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // What it wrote, the data nodes' gateway reads.
    let (status, _, body) = cluster.call(Method::GET, "/v1/kv/pear", &[], &[]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ripe"[..]));
    // It lists the members (itself a gateway) and the ranges, and hosts none.
    let (status, _, body) = gateway
        .call(Method::GET, "/v1/cluster/members", &[], &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let members: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == 9 && m["role"] == "gateway"),
        "{members}"
    );
    let (status, _, body) = gateway.call(Method::GET, "/v1/ranges", &[], &[]).await;
    assert_eq!(status, StatusCode::OK);
    let ranges: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(ranges.as_array().unwrap().len() >= 3, "{ranges}");
    let (status, _, body) = gateway.call(Method::GET, "/metrics", &[], &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("shoal_ranges 0"));
    topology.shutdown().await;
    cluster.shutdown().await;
}

/// shoal-client against a real gateway: every typed operation, and failover. The first
/// gateway it knows accepts connections and never answers, as a paused node's does: a write
/// sent there is an unknown outcome, never a failure; the gateway is then passed over, and
/// every later operation goes to the live one without touching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_fails_over_and_its_operations_do_what_they_say() {
    use shoal_client::{
        Client, ClientConfig, Condition, Error, Expect, PutOutcome, ScanRequest, Swap, WriteOptions,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let cluster = Cluster::start().await;
    // A gateway that takes connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counting = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            counting.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let mut config = ClientConfig::new([silent_url, cluster.url.clone()]);
    config.attempt_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(20);
    config.avoid_for = Duration::from_secs(600);
    let client = Client::new(config).unwrap();
    // The first attempt goes to the silent gateway: the write may have happened.
    let first = client.put(b"fruit", "apple").await.unwrap_err();
    assert!(matches!(first, Error::OutcomeUnknown { .. }), "{first}");
    assert!(!first.is_definite());
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // From now on the live gateway serves everything.
    let v1 = client.put(b"fruit", "banana").await.unwrap();
    let read = client.get(b"fruit").await.unwrap().unwrap();
    assert_eq!((read.value.as_slice(), read.version), (&b"banana"[..], v1));
    let stale = client
        .get_with(b"fruit", shoal_client::Consistency::Stale)
        .await
        .unwrap();
    assert!(stale.is_some());
    assert_eq!(client.get(b"nothing").await.unwrap(), None);
    let over = |version| WriteOptions {
        condition: Some(Condition::Version(version)),
        ..WriteOptions::default()
    };
    let wrong = client.put_with(b"fruit", "x", over(v1 + 1000)).await;
    assert!(
        matches!(wrong, Err(Error::ConditionFailed { .. })),
        "{wrong:?}"
    );
    let PutOutcome::Written { version: v2 } =
        client.put_with(b"fruit", "cherry", over(v1)).await.unwrap()
    else {
        panic!("a majority write is written");
    };
    assert!(v2 > v1);
    let absent = WriteOptions {
        condition: Some(Condition::Absent),
        ..WriteOptions::default()
    };
    assert!(client.put_with(b"fresh", "1", absent).await.is_ok());
    assert!(client.put_with(b"fresh", "2", absent).await.is_err());
    let leader_acked = WriteOptions {
        acks: shoal_client::Acks::Leader,
        condition: None,
    };
    assert_eq!(
        client.put_with(b"quick", "q", leader_acked).await.unwrap(),
        PutOutcome::Accepted
    );
    // Compare-and-set: a mismatch changes nothing; a match sets, or deletes.
    let miss = client
        .compare_and_set(
            b"fruit",
            Expect::Value(b"apple".to_vec()),
            Some(b"x".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(miss, Swap::Mismatch);
    let set = client
        .compare_and_set(
            b"fruit",
            Expect::Value(b"cherry".to_vec()),
            Some(b"date".to_vec()),
        )
        .await
        .unwrap();
    assert!(matches!(set, Swap::Set { .. }), "{set:?}");
    let gone = client
        .compare_and_set(b"fresh", Expect::Absent, None)
        .await
        .unwrap();
    assert_eq!(gone, Swap::Mismatch);
    assert_eq!(
        client
            .compare_and_set(b"fresh", Expect::Value(b"1".to_vec()), None)
            .await
            .unwrap(),
        Swap::Deleted { existed: true }
    );
    // Deletes say whether there was a value.
    assert!(client.delete(b"quick").await.unwrap());
    assert!(!client.delete(b"quick").await.unwrap());
    // Scans page through a split, binary keys and empty values included.
    for i in 0..25u8 {
        client.put(&[b'p', i, 0xfe], Vec::new()).await.unwrap();
    }
    split_at(&cluster, &[b'p', 12]).await;
    let mut request = ScanRequest::prefix(b"p".to_vec());
    request.page_size = Some(4);
    let mut scan = client.scan(request);
    let mut pages = 0;
    let mut keys = Vec::new();
    while let Some(page) = scan.next_page().await.unwrap() {
        pages += 1;
        assert!(page.len() <= 4);
        keys.extend(page.into_iter().map(|e| {
            assert!(e.value.is_empty());
            e.key
        }));
    }
    let expected: Vec<Vec<u8>> = (0..25u8).map(|i| vec![b'p', i, 0xfe]).collect();
    assert_eq!(keys, expected);
    assert!(pages >= 7, "{pages} pages");
    // Not once more to the silent gateway.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Raw routes, through the same failover.
    // The split's right half is listed once the answering node has heard of it (gossip,
    // or its own replica applying the split), before the meta range records it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ranges: serde_json::Value = client.get_json("/v1/ranges").await.unwrap();
        if ranges.as_array().unwrap().len() >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{ranges}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

/// A paused gateway still takes connections, so a request to it just waits. Once one has
/// waited longer than `stalled_after`, the client sends new requests to the other gateways:
/// while the first is still waiting, others complete through the live gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sends_around_a_gateway_that_stopped_answering() {
    use shoal_client::{Client, ClientConfig};
    let cluster = Cluster::start().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let mut config = ClientConfig::new([silent_url, cluster.url.clone()]);
    config.attempt_timeout = Duration::from_secs(60);
    config.request_timeout = Duration::from_secs(60);
    config.stalled_after = Duration::from_millis(100);
    let client = Client::new(config).unwrap();
    // The first request goes to the silent gateway and waits there.
    let stuck = tokio::spawn({
        let client = client.clone();
        async move { client.put(b"stuck", "?").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..20 {
        let key = format!("around-{i}");
        client.put(key.as_bytes(), "v").await.unwrap();
        assert!(client.get(key.as_bytes()).await.unwrap().is_some());
    }
    assert!(!stuck.is_finished(), "the first request still waits");
    stuck.abort();
    cluster.shutdown().await;
}

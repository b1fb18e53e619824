//! Three real `shoal start` processes on loopback (free ports, temp dirs), used through the
//! HTTP API and the CLI: kill -9 the leader of a range and requests keep succeeding once a
//! new leader is elected; the killed node restarts and catches up; a node stopped with
//! SIGTERM hands its leaderships over before it leaves and exits 0; a CORS preflight from an
//! origin not listed is refused; malformed requests get 4xx and change nothing; a standalone
//! `shoal gateway` routes requests without hosting a range.

use shoal_client::{key_path, Answer, Client, ClientConfig, Method};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The origin the cluster allows.
const ALLOWED_ORIGIN: &str = "https://app.example.com";

struct Proc {
    id: u64,
    listen: SocketAddr,
    http: SocketAddr,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// A standalone gateway (`shoal gateway`) rather than a data node.
    gateway_only: bool,
    /// One of the founding nodes (started with `--bootstrap 1,2,3`).
    founding: bool,
}

struct Cluster {
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
}

impl Proc {
    fn spawn(&mut self, peers: &[SocketAddr]) {
        let join: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
        if self.gateway_only {
            // It keeps nothing on disk: run it in an empty directory of its own, its
            // temporary directory there too, which the test checks stays empty.
            std::fs::create_dir_all(&self.data).unwrap();
            command
                .arg("gateway")
                .current_dir(&self.data)
                .env("TMPDIR", &self.data);
        } else {
            command.arg("start").arg("--data-dir").arg(&self.data);
            if self.founding {
                command.args(["--bootstrap", "1,2,3"]);
            }
        }
        let child = command
            .args(["--id", &self.id.to_string()])
            .args(["--listen", &self.listen.to_string()])
            .args(["--http", &self.http.to_string()])
            .args(["--join", &join.join(",")])
            .args(["--cors-origins", ALLOWED_ORIGIN])
            .env(
                "RUST_LOG",
                std::env::var("SHOAL_TEST_LOG").unwrap_or("info".into()),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("shoal starts");
        self.child = Some(child);
    }

    fn gateway(&self) -> Client {
        gateway(&format!("http://{}", self.http))
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Cluster {
    /// Starts one more process (a data node, or a gateway) joining through the others.
    async fn add(&mut self, gateway_only: bool) -> usize {
        let ports = shoal_node::dev::free_ports(2).unwrap();
        let id = self.procs.len() as u64 + 1;
        let mut proc = Proc {
            id,
            listen: ports[0],
            http: ports[1],
            data: self.dir.path().join(format!("node-{id}")),
            log: self.dir.path().join(format!("node-{id}.log")),
            child: None,
            gateway_only,
            founding: false,
        };
        let seeds: Vec<SocketAddr> = self.procs.iter().map(|p| p.listen).collect();
        proc.spawn(&seeds);
        self.procs.push(proc);
        let i = self.procs.len() - 1;
        self.wait_ready(&self.procs[i]).await;
        i
    }

    async fn start(dir: tempfile::TempDir) -> Cluster {
        let ports = shoal_node::dev::free_ports(6).unwrap();
        let mut procs: Vec<Proc> = (0..3)
            .map(|i| Proc {
                id: i as u64 + 1,
                listen: ports[2 * i],
                http: ports[2 * i + 1],
                data: dir.path().join(format!("node-{}", i + 1)),
                log: dir.path().join(format!("node-{}.log", i + 1)),
                child: None,
                gateway_only: false,
                founding: true,
            })
            .collect();
        let listens: Vec<SocketAddr> = procs.iter().map(|p| p.listen).collect();
        for p in &mut procs {
            let peers: Vec<SocketAddr> =
                listens.iter().copied().filter(|l| *l != p.listen).collect();
            p.spawn(&peers);
        }
        let cluster = Cluster { procs, dir };
        for p in &cluster.procs {
            cluster.wait_ready(p).await;
        }
        cluster
    }

    async fn wait_ready(&self, p: &Proc) {
        let gateway = p.gateway();
        wait_for(&format!("node {} to be ready", p.id), || async {
            matches!(gateway.get_raw("/ready").await, Ok(a) if a.status == 200).then_some(())
        })
        .await;
    }

    /// Range `id` as node `via` reports it.
    async fn range(&self, via: usize, id: u64) -> Option<serde_json::Value> {
        let answer = self.procs[via]
            .gateway()
            .request(Method::GET, &format!("/v1/ranges/{id}"), &[], Vec::new())
            .await
            .ok()?;
        (answer.status == 200).then(|| serde_json::from_slice(&answer.body).ok())?
    }

    /// The leader of range `id` as node `via` reports it.
    async fn leader(&self, via: usize, id: u64) -> Option<u64> {
        self.range(via, id).await?["leader"].as_u64()
    }

    fn index_of(&self, id: u64) -> usize {
        (id - 1) as usize
    }

    fn kill(&mut self, i: usize) {
        let mut child = self.procs[i].child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn restart(&mut self, i: usize) {
        let peers: Vec<SocketAddr> = self
            .procs
            .iter()
            .filter(|p| p.id != self.procs[i].id)
            .map(|p| p.listen)
            .collect();
        self.procs[i].spawn(&peers);
    }

    /// SIGTERM, then the exit status.
    async fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut child = self.procs[i].child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node did not stop within a minute of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What each node logged, for the failure's report.
            for p in &self.procs {
                let logs = p.logs();
                let lines: Vec<&str> = logs.lines().collect();
                eprintln!("---- node {} (last 400 lines of {}):", p.id, lines.len());
                for line in &lines[lines.len().saturating_sub(400)..] {
                    eprintln!("{line}");
                }
            }
        }
        for p in &mut self.procs {
            if let Some(mut child) = p.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Waits for `check`, for at most 60 s.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put(gateway: &Client, key: &str, value: &str) -> Answer {
    gateway
        .request(Method::PUT, &key_path(key), &[], value.as_bytes().to_vec())
        .await
        .unwrap()
}

async fn get(gateway: &Client, key: &str) -> Answer {
    gateway
        .request(Method::GET, &key_path(key), &[], Vec::new())
        .await
        .unwrap()
}

fn shoal_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_survive_kill_restart_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir).await;
    let g1 = cluster.procs[0].gateway();
    for i in 0..20 {
        let answer = put(&g1, &format!("k{i:02}"), "v1").await;
        assert_eq!(answer.status, 200, "{}", text(&answer.body));
    }

    // kill -9 the leader of the first user range; once another leads, requests succeed.
    let leader = wait_for("a leader of range 1", || cluster.leader(0, 1)).await;
    let killed = cluster.index_of(leader);
    cluster.kill(killed);
    let survivor = (killed + 1) % 3;
    wait_for("a new leader of range 1", || async {
        cluster.leader(survivor, 1).await.filter(|&l| l != leader)
    })
    .await;
    let g = cluster.procs[survivor].gateway();
    for i in 0..20 {
        let answer = put(&g, &format!("k{i:02}"), "v2").await;
        assert_eq!(
            answer.status,
            200,
            "put after re-election: {}",
            text(&answer.body)
        );
    }
    for i in 0..20 {
        let answer = get(&g, &format!("k{i:02}")).await;
        assert_eq!((answer.status, text(&answer.body)), (200, "v2".into()));
    }

    // The killed node restarts and catches up: its replica applies what the others did.
    cluster.restart(killed);
    cluster.wait_ready(&cluster.procs[killed]).await;
    wait_for("the restarted replica to catch up", || async {
        let range = cluster.range(survivor, 1).await?;
        let replicas = range["replicas"].as_array()?;
        let applied: Vec<u64> = replicas
            .iter()
            .filter_map(|r| r["applied"].as_u64())
            .collect();
        (applied.len() == 3 && applied.iter().all(|a| *a == applied[0])).then_some(())
    })
    .await;
    let restarted = cluster.procs[killed].gateway();
    let answer = restarted
        .request(
            Method::GET,
            &format!("{}?consistency=stale", key_path("k19")),
            &[],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!((answer.status, text(&answer.body)), (200, "v2".into()));

    // SIGTERM the current leader: it hands its leaderships over, then exits 0.
    let leader = wait_for("a leader of range 1", || cluster.leader(survivor, 1)).await;
    let stopping = cluster.index_of(leader);
    let status = cluster.terminate(stopping).await;
    assert!(status.success(), "exit status {status:?}");
    let logs = cluster.procs[stopping].logs();
    let handed = logs
        .lines()
        .rev()
        .find(|l| l.contains("leaderships handed over"))
        .unwrap_or_else(|| panic!("no hand-over in the logs:\n{logs}"));
    let figure = |name: &str| -> u64 {
        let at = handed.find(&format!("{name}=")).expect(name) + name.len() + 1;
        handed[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(figure("led") >= 1, "{handed}");
    assert_eq!(figure("moved"), figure("led"), "{handed}");
    let other = (0..3)
        .find(|&i| i != stopping && cluster.procs[i].child.is_some())
        .unwrap();
    let g = cluster.procs[other].gateway();
    let answer = put(&g, "after-sigterm", "ok").await;
    assert_eq!(answer.status, 200, "{}", text(&answer.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_bad_requests_and_foreign_origins_and_the_cli_works() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir).await;
    let g = cluster.procs[1].gateway();
    let url = g.config().endpoints[0].clone();
    assert_eq!(put(&g, "stable", "before").await.status, 200);

    // CORS: a preflight from an origin not listed is refused; the listed one is answered.
    let preflight = |origin: &str| {
        vec![
            ("origin", origin.to_string()),
            ("access-control-request-method", "PUT".to_string()),
        ]
    };
    let refused = g
        .request(
            Method::OPTIONS,
            &key_path("stable"),
            &preflight("https://evil.example"),
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 403);
    let allowed = g
        .request(
            Method::OPTIONS,
            &key_path("stable"),
            &preflight(ALLOWED_ORIGIN),
            Vec::new(),
        )
        .await
        .unwrap();
    assert!((200..300).contains(&allowed.status), "{}", allowed.status);

    // Malformed requests: 4xx, and nothing written.
    let big_key = "k".repeat(5000);
    let cases: Vec<(Method, String, Vec<u8>, u16)> = vec![
        (Method::PUT, "/v1/kv/stable%zz".into(), b"x".to_vec(), 400),
        (
            Method::PUT,
            "/v1/kv/stable?durability=high".into(),
            b"x".to_vec(),
            400,
        ),
        (Method::PUT, format!("/v1/kv/{big_key}"), b"x".to_vec(), 413),
        (
            Method::PUT,
            "/v1/kv/stable".into(),
            vec![b'v'; (1 << 20) + 1],
            413,
        ),
        (
            Method::POST,
            "/v1/kv/stable/cas".into(),
            b"{\"expect\": ".to_vec(),
            400,
        ),
        (
            Method::POST,
            "/v1/kv/stable/cas".into(),
            br#"{"expect":"absent"}"#.to_vec(),
            400,
        ),
        (
            Method::GET,
            "/v1/kv?prefix=a&start=b".into(),
            Vec::new(),
            400,
        ),
        (Method::PUT, "/v1/kv/%FFsystem".into(), b"x".to_vec(), 400),
    ];
    for (method, path, body, expected) in cases {
        let answer = g.request(method.clone(), &path, &[], body).await.unwrap();
        assert_eq!(
            answer.status,
            expected,
            "{method} {path}: {}",
            text(&answer.body)
        );
    }
    let answer = get(&g, "stable").await;
    assert_eq!((answer.status, text(&answer.body)), (200, "before".into()));
    let scan = g
        .request(Method::GET, "/v1/kv?prefix=&limit=100", &[], Vec::new())
        .await
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&scan.body).unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 1, "{page}");

    // The CLI against the same cluster.
    let out = shoal_cli(&["kv", "--url", &url, "put", "fruit", "apple"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = shoal_cli(&["kv", "--url", &url, "get", "fruit"]);
    assert_eq!(text(&out.stdout).trim(), "apple");
    let version: u64 = text(&out.stderr)
        .trim()
        .strip_prefix("version ")
        .and_then(|v| v.parse().ok())
        .expect("the version on standard error");
    let wrong = (version + 1000).to_string();
    let out = shoal_cli(&[
        "kv",
        "--url",
        &url,
        "cas",
        "fruit",
        "pear",
        "--expect-version",
        &wrong,
    ]);
    assert_eq!(out.status.code(), Some(1), "a failed expectation exits 1");
    let out = shoal_cli(&[
        "kv",
        "--url",
        &url,
        "cas",
        "fruit",
        "pear",
        "--expect-value",
        "apple",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = shoal_cli(&["kv", "--url", &url, "scan", "--prefix", "f"]);
    assert_eq!(text(&out.stdout).trim(), "fruit\tpear");
    let out = shoal_cli(&["range", "--url", &url, "split", "1", "--at", "m"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The status table: three members alive, and the three ranges (the split's right half
    // once its leader has recorded it in the meta range), each with a leader.
    let table = wait_for("cluster status to list three led ranges", || async {
        let out = shoal_cli(&["cluster", "--url", &url, "status"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let table = text(&out.stdout);
        let rows: Vec<&str> = table
            .lines()
            .skip_while(|l| !l.starts_with("RANGE"))
            .skip(1)
            .collect();
        let led = |row: &&str| {
            row.split_whitespace()
                .nth(4)
                .is_some_and(|leader| leader.parse::<u64>().is_ok())
        };
        (rows.len() >= 3 && rows.iter().all(led)).then_some(table)
    })
    .await;
    assert_eq!(table.matches("alive").count(), 3, "{table}");
    let out = shoal_cli(&["kv", "--url", &url, "del", "fruit"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(get(&g, "fruit").await.status, 404);

    // A standalone gateway joins as a member that hosts nothing, and routes requests.
    let mut cluster = cluster;
    let standalone = cluster.add(true).await;
    assert_eq!(cluster.procs[standalone].id, 4);
    let sg = cluster.procs[3].gateway();
    assert_eq!(put(&sg, "via-gateway", "routed").await.status, 200);
    let answer = get(&g, "via-gateway").await;
    assert_eq!((answer.status, text(&answer.body)), (200, "routed".into()));
    let members = sg
        .request(Method::GET, "/v1/cluster/members", &[], Vec::new())
        .await
        .unwrap();
    let members: serde_json::Value = serde_json::from_slice(&members.body).unwrap();
    let roles: Vec<(u64, String)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(roles.contains(&(4, "gateway".into())), "{members}");
    assert_eq!(
        roles.iter().filter(|(_, r)| r == "data").count(),
        3,
        "{members}"
    );
    // It wrote nothing where it ran, nor in its temporary directory.
    let written: Vec<_> = std::fs::read_dir(&cluster.procs[standalone].data)
        .unwrap()
        .collect();
    assert!(written.is_empty(), "the gateway wrote {written:?}");
    // It cannot be given a replica: it would never catch up.
    let out = shoal_cli(&["range", "--url", &url, "add-replica", "1", "4"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a live data node"),
        "{}",
        text(&out.stderr)
    );
    let range = cluster
        .range(3, 1)
        .await
        .expect("range 1 through the gateway");
    assert!(
        range["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["node"] != 4),
        "{range}"
    );
}

/// A fourth node joins; a range gets a replica on it (a learner, caught up by snapshot, then
/// promoted) and loses one elsewhere, through the CLI; the data stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_to_a_new_node_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir).await;
    let g = cluster.procs[1].gateway();
    let url = g.config().endpoints[0].clone();
    for i in 0..30 {
        assert_eq!(put(&g, &format!("m{i:02}"), "x").await.status, 200);
    }
    let added = cluster.add(false).await;
    assert_eq!(cluster.procs[added].id, 4);
    let out = shoal_cli(&["range", "--url", &url, "add-replica", "1", "4"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = shoal_cli(&["range", "--url", &url, "remove-replica", "1", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let range = wait_for("range 1 on nodes 2, 3 and 4, caught up", || async {
        let range = cluster.range(1, 1).await?;
        let replicas = range["replicas"].as_array()?;
        let nodes: Vec<u64> = replicas.iter().filter_map(|r| r["node"].as_u64()).collect();
        let keys: Vec<u64> = replicas.iter().filter_map(|r| r["keys"].as_u64()).collect();
        let voters = replicas.iter().all(|r| r["role"] == "voter");
        (nodes == [2, 3, 4] && voters && keys == [30, 30, 30]).then_some(range)
    })
    .await;
    assert!(range["leader"].as_u64().is_some_and(|l| l != 1), "{range}");
    for i in 0..30 {
        let answer = get(&g, &format!("m{i:02}")).await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(put(&g, "m-after", "y").await.status, 200);
}

/// A client of one gateway, for the test's requests (each up to 30 s: a test machine may be
/// slow).
fn gateway(url: &str) -> Client {
    let mut config = ClientConfig::new([url]);
    config.attempt_timeout = Duration::from_secs(30);
    config.request_timeout = Duration::from_secs(30);
    Client::new(config).unwrap()
}

//! `shoal`: run a node, a local development cluster, or talk to a cluster's gateway.

use clap::{Parser, Subcommand};
use shoal_client::Method;
use shoal_client::{Client, ClientConfig, Consistency, Expect, ScanRequest, Swap};
use shoal_node::config::{FileConfig, Role, StartArgs};
use shoal_node::dev::{DevCluster, DevOptions};
use shoal_node::node::Node;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Shoal: a replicated, range-partitioned, linearizable key-value store.
#[derive(Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    /// Logs as JSON lines instead of text (levels by RUST_LOG; by default Shoal's at info,
    /// its dependencies' at warn).
    #[arg(long, global = true, env = "SHOAL_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one node: its range store and its HTTP gateway.
    Start(StartArgs),
    /// Runs a standalone HTTP gateway: it joins the cluster's membership to learn where
    /// ranges are, and hosts none and keeps no files (the flags of start; --join needed, no
    /// --data-dir).
    Gateway(StartArgs),
    /// Runs a local cluster in this process, on free loopback ports, until Ctrl-C. Running
    /// it again picks up the same data.
    Dev {
        /// How many nodes (1 to 9; a directory keeps the count it was created with).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
        nodes: u64,
        /// Where the cluster keeps its data.
        #[arg(long, default_value = "./shoal-data")]
        dir: PathBuf,
        /// Serves HTTPS with a self-signed certificate made once in DIR/tls/ (clients trust
        /// DIR/tls/cert.pem).
        #[arg(long)]
        tls: bool,
    },
    /// The cluster as a gateway sees it: members and ranges.
    Cluster {
        #[command(flatten)]
        gateway: GatewayArg,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Range administration through a gateway.
    Range {
        #[command(flatten)]
        gateway: GatewayArg,
        #[command(subcommand)]
        command: RangeCommand,
    },
    /// Key-value commands against a gateway.
    Kv {
        #[command(flatten)]
        gateway: GatewayArg,
        #[command(subcommand)]
        command: KvCommand,
    },
}

/// Which gateway a client command talks to.
#[derive(clap::Args)]
struct GatewayArg {
    /// The gateway.
    #[arg(
        long,
        env = "SHOAL_URL",
        default_value = "http://127.0.0.1:8400",
        global = true
    )]
    url: String,
    /// The gateway's bearer token, if it needs one.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// For an https:// URL: the PEM certificate(s) to trust (a dev cluster's
    /// DIR/tls/cert.pem, or the CA that signed the gateway's certificate).
    #[arg(long, env = "SHOAL_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
}

impl GatewayArg {
    /// A client of the gateway, with its token and the certificates to trust.
    fn client(&self) -> Result<Client, String> {
        let mut config = ClientConfig::new([self.url.as_str()]);
        config.token = self.token.clone();
        // One gateway: an answer may be slow (a split, a range electing), not lost.
        config.attempt_timeout = Duration::from_secs(30);
        config.request_timeout = Duration::from_secs(30);
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            config.ca_cert_pem = Some(pem);
        }
        Client::new(config).map_err(|e| format!("{}: {e}", self.url))
    }
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members and their states, then ranges with their replicas and leaders.
    Status {
        /// Prints the gateway's JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RangeCommand {
    /// Splits a range at a key (strictly inside it), or at its size median.
    Split {
        /// The range's id (see `shoal cluster status`).
        id: u64,
        /// The right half's first key.
        #[arg(long)]
        at: Option<String>,
    },
    /// Adds a replica of a range on a node: a learner first, promoted to voter once it has
    /// caught up.
    AddReplica {
        /// The range's id.
        id: u64,
        /// The node to place it on (a member of the cluster).
        node: u64,
        /// How long to wait for the learner to catch up, in seconds.
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Removes a range's replica from a node (a voter through a joint configuration).
    RemoveReplica {
        /// The range's id.
        id: u64,
        /// The node.
        node: u64,
    },
}

#[derive(Subcommand)]
enum KvCommand {
    /// Sets a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Prints a key's value (and its version on standard error).
    Get {
        /// The key.
        key: String,
        /// Any replica may answer, possibly behind.
        #[arg(long)]
        stale: bool,
    },
    /// Deletes a key.
    Del {
        /// The key.
        key: String,
    },
    /// Sets (or with --delete, deletes) a key only if it is at a version, holds a value,
    /// or (with neither) has no value; exits 1 if the expectation failed.
    Cas {
        /// The key.
        key: String,
        /// The new value (omit with --delete).
        value: Option<String>,
        /// Expect the key at this version.
        #[arg(long, conflicts_with = "expect_value")]
        expect_version: Option<u64>,
        /// Expect the key to hold this value.
        #[arg(long)]
        expect_value: Option<String>,
        /// Delete the key instead of setting it.
        #[arg(long, conflicts_with = "value")]
        delete: bool,
    },
    /// Lists keys with a prefix.
    Scan {
        /// The prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colours only on a terminal: logs sent to a file or a collector stay plain text.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Listens for Ctrl-C or SIGTERM from now on: the returned receiver resolves at the first;
/// a second one exits at once.
fn stop_signal() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        wait_signal().await;
        tracing::info!("stopping (again to exit at once)");
        let _ = tx.send(());
        wait_signal().await;
        std::process::exit(130);
    });
    rx
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Log levels when `RUST_LOG` is not set: Shoal's own at info; its dependencies' (the
/// storage engine's per-flush lines, say) only at warn, which is what an operator needs.
const DEFAULT_LOG_FILTER: &str = "warn,shoal=info,shoal_core=info,shoal_transport=info,\
shoal_membership=info,shoal_routing=info,shoal_ranges=info,shoal_merkle=info,\
shoal_consensus=info,shoal_storage=info,shoal_store=info,shoal_client=info,\
shoal_gateway=info,shoal_node=info";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Start(args) => run_node(args, Role::Data, cli.log_json).await,
        Command::Gateway(args) => run_node(args, Role::Gateway, cli.log_json).await,
        Command::Dev { nodes, dir, tls } => {
            init_logs(cli.log_json);
            let mut stop = stop_signal();
            // Every node stops at once: none waits long for the others' acknowledgements,
            // and none hands leaderships to nodes that are stopping too.
            let quick_leave = |config: &mut shoal_store::StoreConfig| {
                config.leave_timeout = Duration::from_secs(1);
                config.handover_timeout = Duration::ZERO;
            };
            let options = DevOptions {
                nodes,
                tls,
                ready_within: Duration::from_secs(60),
                tune: quick_leave,
            };
            let starting = DevCluster::start(&dir, options);
            let cluster = tokio::select! {
                started = starting => match started {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        eprintln!("shoal dev: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                _ = &mut stop => return ExitCode::SUCCESS,
            };
            let url = cluster.url();
            println!(
                "\nShoal is running: {} nodes, data in {}",
                cluster.nodes.len(),
                dir.display()
            );
            for (i, node) in cluster.nodes.iter().enumerate() {
                println!("  node {}: gateway {}", i + 1, node.url());
            }
            let (curl, cli) = match &cluster.tls {
                Some(files) => (
                    format!("curl --cacert {} ", files.cert.display()),
                    format!("--ca-cert {} ", files.cert.display()),
                ),
                None => ("curl ".to_string(), String::new()),
            };
            println!("\nTry:\n  {curl}-X PUT --data-binary hello {url}/v1/kv/greeting\n  {curl}{url}/v1/kv/greeting");
            println!("  cargo run --release -p shoal-node -- kv --url {url} {cli}get greeting\n\nCtrl-C stops the cluster.");
            let _ = stop.await;
            cluster.shutdown().await;
            ExitCode::SUCCESS
        }
        Command::Cluster {
            gateway,
            command: ClusterCommand::Status { json },
        } => match cluster_status(&gateway, json).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shoal cluster status: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Range { gateway, command } => match range(&gateway, command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shoal range: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Kv { gateway, command } => match kv(&gateway, command).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("shoal kv: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `shoal start` and `shoal gateway`: runs a node of `role` until a signal.
async fn run_node(args: StartArgs, role: Role, log_json: bool) -> ExitCode {
    init_logs(log_json);
    let command = match role {
        Role::Data => "shoal start",
        Role::Gateway => "shoal gateway",
    };
    let file = match args.config.as_deref().map(FileConfig::read).transpose() {
        Ok(file) => file.unwrap_or_default(),
        Err(e) => {
            eprintln!("{command}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = match args.resolve_as(file, role) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{command}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stop = stop_signal();
    let node = tokio::select! {
        started = Node::start(settings) => match started {
            Ok(node) => node,
            Err(e) => {
                eprintln!("{command}: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ = &mut stop => return ExitCode::SUCCESS,
    };
    let _ = stop.await;
    node.shutdown().await;
    ExitCode::SUCCESS
}

/// A JSON answer from `path` of the gateway.
async fn get_json(client: &Client, path: &str) -> Result<serde_json::Value, String> {
    client
        .get_json(path)
        .await
        .map_err(|e| format!("{path}: {e}"))
}

/// How far behind its leader (in entries) a learner may be when `add-replica` promotes it
/// (Raft refuses promotions further behind than its own limit, 1,000 by default).
const PROMOTE_LAG: u64 = 100;

/// A POST of `body` to `path`; the answer's JSON, or the gateway's error.
async fn post_json(
    client: &Client,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let answer = client
        .request(Method::POST, path, &[], body)
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    if answer.status != 200 {
        return Err(format!(
            "{path}: {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    answer.json().map_err(|e| format!("{path}: {e}"))
}

/// `shoal range ...`.
async fn range(gateway: &GatewayArg, command: RangeCommand) -> Result<(), String> {
    let gateway = gateway.client()?;
    match command {
        RangeCommand::Split { id, at } => {
            let body = at.map_or(
                serde_json::Value::Null,
                |at| serde_json::json!({ "at": shoal_client::encode_bytes(at.as_bytes()) }),
            );
            let done = post_json(&gateway, &format!("/v1/admin/ranges/{id}/split"), body).await?;
            println!("{done}");
        }
        RangeCommand::AddReplica { id, node, wait } => {
            let path = format!("/v1/admin/ranges/{id}/replicas");
            post_json(&gateway, &path, serde_json::json!({ "add_learner": node })).await?;
            eprintln!("learner added on node {node}; waiting for it to catch up");
            let deadline = std::time::Instant::now() + Duration::from_secs(wait);
            let mut last = String::from("its lag is not known yet");
            loop {
                // A failed poll or a refused promotion (not caught up after all, another
                // change pending) is tried again until the deadline.
                let status = get_json(&gateway, &format!("/v1/ranges/{id}")).await;
                let lag = status.as_ref().ok().and_then(|s| {
                    s["replicas"]
                        .as_array()?
                        .iter()
                        .find(|r| r["node"] == node)?["lag_entries"]
                        .as_u64()
                });
                let voter = status.as_ref().ok().is_some_and(|s| {
                    s["replicas"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|r| r["node"] == node && r["role"] == "voter")
                });
                if voter {
                    // Promoted (by an attempt whose answer was lost, say).
                    println!("{}", status.unwrap_or_default());
                    break;
                }
                match (status, lag) {
                    (Err(e), _) => last = e,
                    (Ok(_), Some(lag)) if lag <= PROMOTE_LAG => {
                        let promote = serde_json::json!({ "promote": node });
                        match post_json(&gateway, &path, promote).await {
                            Ok(done) => {
                                println!("{done}");
                                break;
                            }
                            Err(e) => last = e,
                        }
                    }
                    (Ok(_), Some(lag)) => last = format!("{lag} entries behind"),
                    (Ok(_), None) => {}
                }
                if std::time::Instant::now() >= deadline {
                    return Err(format!(
                        "node {node}'s learner was not promoted within {wait} s ({last}); it \
                         stays a learner (promote it later, or remove it)"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        RangeCommand::RemoveReplica { id, node } => {
            let path = format!("/v1/admin/ranges/{id}/replicas");
            let done = post_json(&gateway, &path, serde_json::json!({ "remove": node })).await?;
            println!("{done}");
        }
    }
    Ok(())
}

/// Ranges whose replicas' lag `cluster status` asks for, one request each.
const STATUS_DETAIL_RANGES: usize = 64;

async fn cluster_status(gateway: &GatewayArg, json: bool) -> Result<(), String> {
    let gateway = gateway.client()?;
    let members = get_json(&gateway, "/v1/cluster/members").await?;
    let mut ranges = get_json(&gateway, "/v1/ranges").await?;
    if let Some(list) = ranges.as_array_mut() {
        list.sort_by_key(|r| r["id"].as_u64());
    }
    // Each range's replicas as their nodes report them (roles, lag), for the first ones.
    let mut details = Vec::new();
    for r in ranges
        .as_array()
        .into_iter()
        .flatten()
        .take(STATUS_DETAIL_RANGES)
    {
        let path = format!("/v1/ranges/{}", r["id"]);
        details.push(
            get_json(&gateway, &path)
                .await
                .unwrap_or(serde_json::Value::Null),
        );
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "members": members, "ranges": details })
        );
        return Ok(());
    }
    println!("{:<6} {:<22} {:<8} ROLE", "NODE", "ADDRESS", "STATE");
    for m in members.as_array().into_iter().flatten() {
        println!(
            "{:<6} {:<22} {:<8} {}",
            m["id"].to_string(),
            m["addr"].as_str().unwrap_or_default(),
            m["state"].as_str().unwrap_or_default(),
            m["role"].as_str().unwrap_or_default()
        );
    }
    println!();
    println!(
        "{:<6} {:<16} {:<16} {:<6} {:<8} REPLICAS (node:raft role:lag in entries)",
        "RANGE", "START", "END", "GEN", "LEADER"
    );
    for (i, r) in ranges.as_array().into_iter().flatten().enumerate() {
        let detail = details.get(i).filter(|d| d.is_object());
        let replicas: Vec<String> = match detail {
            Some(d) => d["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let role = match p["raft_role"].as_str() {
                        Some(role) => role.to_string(),
                        None => "unreachable".to_string(),
                    };
                    let lag = p["lag_entries"]
                        .as_u64()
                        .map_or(String::new(), |l| format!(":{l}"));
                    let learner = if p["role"] == "learner" {
                        "(learner)"
                    } else {
                        ""
                    };
                    format!("{}{learner}:{role}{lag}", p["node"])
                })
                .collect(),
            None => r["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}:{}", p["node"], p["role"].as_str().unwrap_or_default()))
                .collect(),
        };
        let leader = detail
            .map_or(&r["leader"], |d| &d["leader"])
            .as_u64()
            .map_or("?".to_string(), |l| l.to_string());
        let start = r["start"].as_str().unwrap_or_default();
        println!(
            "{:<6} {:<16} {:<16} {:<6} {:<8} {}",
            r["id"].to_string(),
            if start.is_empty() { "(start)" } else { start },
            r["end"].as_str().unwrap_or("(end)"),
            r["generation"].to_string(),
            leader,
            replicas.join(" ")
        );
    }
    Ok(())
}

/// Runs a key-value command; `false` when a compare-and-set's expectation failed.
async fn kv(gateway: &GatewayArg, command: KvCommand) -> Result<bool, String> {
    let client = gateway.client()?;
    let failed = |e: shoal_client::Error| e.to_string();
    match command {
        KvCommand::Put { key, value } => {
            let version = client.put(key.as_bytes(), value).await.map_err(failed)?;
            println!("{}", serde_json::json!({ "version": version }));
        }
        KvCommand::Get { key, stale } => {
            let consistency = if stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            let read = client
                .get_with(key.as_bytes(), consistency)
                .await
                .map_err(failed)?
                .ok_or_else(|| format!("{key}: no value"))?;
            use std::io::Write;
            std::io::stdout()
                .write_all(&read.value)
                .map_err(|e| e.to_string())?;
            println!();
            eprintln!("version {}", read.version);
        }
        KvCommand::Del { key } => {
            if !client.delete(key.as_bytes()).await.map_err(failed)? {
                return Err(format!("{key}: no value"));
            }
        }
        KvCommand::Cas {
            key,
            value,
            expect_version,
            expect_value,
            delete,
        } => {
            let expect = match (expect_version, expect_value) {
                (Some(v), _) => Expect::Version(v),
                (None, Some(v)) => Expect::Value(v.into_bytes()),
                (None, None) => Expect::Absent,
            };
            let new = match (value, delete) {
                (Some(v), false) => Some(v.into_bytes()),
                (None, true) => None,
                _ => return Err("give a value, or --delete".into()),
            };
            match client
                .compare_and_set(key.as_bytes(), expect, new)
                .await
                .map_err(failed)?
            {
                Swap::Set { version } => println!("{}", serde_json::json!({ "version": version })),
                Swap::Deleted { existed } => {
                    println!("{}", serde_json::json!({ "deleted": existed }))
                }
                Swap::Mismatch => {
                    eprintln!("{key}: the expectation failed; nothing changed");
                    return Ok(false);
                }
            }
        }
        KvCommand::Scan { prefix, limit } => {
            let mut request = ScanRequest::prefix(prefix);
            request.page_size = Some(limit.clamp(1, 10_000));
            let mut scan = client.scan(request);
            let mut left = limit as usize;
            while left > 0 {
                let Some(page) = scan.next_page().await.map_err(failed)? else {
                    break;
                };
                for entry in page.into_iter().take(left) {
                    println!(
                        "{}\t{}",
                        shoal_client::encode_bytes(&entry.key),
                        shoal_client::encode_bytes(&entry.value)
                    );
                    left -= 1;
                }
            }
        }
    }
    Ok(true)
}

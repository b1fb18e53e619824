//! `shoal`: run a node, a local development cluster, or talk to a cluster's gateway.

use clap::{Parser, Subcommand};
use hyper::Method;
use shoal_core::NodeId;
use shoal_node::client::{key_url, request};
use shoal_node::dev::DevCluster;
use shoal_node::node::{Node, NodeSettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Shoal: a replicated, range-partitioned, linearizable key-value store.
#[derive(Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    /// Logs as JSON lines instead of text (levels by RUST_LOG, default info).
    #[arg(long, global = true, env = "SHOAL_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one node: its range store and its HTTP gateway.
    Start {
        /// This node's id, unique in the cluster.
        #[arg(long, env = "SHOAL_ID")]
        id: u64,
        /// Where the node keeps its data.
        #[arg(long, env = "SHOAL_DATA_DIR")]
        data_dir: PathBuf,
        /// Node RPC, Raft and gossip (UDP on the same port number).
        #[arg(long, env = "SHOAL_LISTEN", default_value = "127.0.0.1:7400")]
        listen: SocketAddr,
        /// The HTTP gateway.
        #[arg(long, env = "SHOAL_HTTP", default_value = "127.0.0.1:8400")]
        http: SocketAddr,
        /// Members to join through, comma-separated.
        #[arg(long, env = "SHOAL_JOIN", value_delimiter = ',')]
        join: Vec<SocketAddr>,
        /// Creates the cluster with these founding voters (node ids, comma-separated; this
        /// node among them) if this node has not done so before.
        #[arg(long, env = "SHOAL_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<u64>,
    },
    /// Runs a local cluster in this process, on free loopback ports, until Ctrl-C. Running
    /// it again picks up the same data.
    Dev {
        /// How many nodes (1 to 9; a directory keeps the count it was created with).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
        nodes: u64,
        /// Where the cluster keeps its data.
        #[arg(long, default_value = "./shoal-data")]
        dir: PathBuf,
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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Start {
            id,
            data_dir,
            listen,
            http,
            join,
            bootstrap,
        } => {
            init_logs(cli.log_json);
            let mut stop = stop_signal();
            let settings = NodeSettings {
                id: NodeId::new(id),
                data_dir,
                listen,
                http,
                join,
                bootstrap: bootstrap.into_iter().map(NodeId::new).collect(),
                tune: |_| {},
            };
            let node = tokio::select! {
                started = Node::start(settings) => match started {
                    Ok(node) => node,
                    Err(e) => {
                        eprintln!("shoal: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                _ = &mut stop => return ExitCode::SUCCESS,
            };
            let _ = stop.await;
            node.shutdown().await;
            ExitCode::SUCCESS
        }
        Command::Dev { nodes, dir } => {
            init_logs(cli.log_json);
            let mut stop = stop_signal();
            // Every node stops at once: none waits long for the others' acknowledgements,
            // and none hands leaderships to nodes that are stopping too.
            let quick_leave = |config: &mut shoal_ranges::store::StoreConfig| {
                config.leave_timeout = Duration::from_secs(1);
                config.handover_timeout = Duration::ZERO;
            };
            let starting = DevCluster::start(&dir, nodes, quick_leave, Duration::from_secs(60));
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
                println!("  node {}: gateway http://{}", i + 1, node.http_addr());
            }
            println!("\nTry:\n  curl -X PUT --data-binary hello {url}/v1/kv/greeting\n  curl {url}/v1/kv/greeting");
            println!("  cargo run --release -p shoal-node -- kv --url {url} get greeting\n\nCtrl-C stops the cluster.");
            let _ = stop.await;
            cluster.shutdown().await;
            ExitCode::SUCCESS
        }
        Command::Cluster {
            gateway,
            command: ClusterCommand::Status { json },
        } => match cluster_status(&gateway.url, json).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shoal cluster status: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Range {
            gateway,
            command: RangeCommand::Split { id, at },
        } => {
            let url = gateway.url;
            let body = at.map_or(Vec::new(), |at| {
                serde_json::json!({ "at": shoal_gateway::encode_bytes(at.as_bytes()) })
                    .to_string()
                    .into_bytes()
            });
            let target = format!("{}/v1/admin/ranges/{id}/split", url.trim_end_matches('/'));
            match request(Method::POST, &target, &[], body).await {
                Ok(answer) if answer.status == 200 => {
                    println!("{}", String::from_utf8_lossy(&answer.body));
                    ExitCode::SUCCESS
                }
                Ok(answer) => {
                    eprintln!(
                        "shoal range split: {}: {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    );
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("shoal range split: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Kv { gateway, command } => match kv(&gateway.url, command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("shoal kv: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A JSON answer from `path` under gateway `url`.
async fn get_json(url: &str, path: &str) -> Result<serde_json::Value, String> {
    let answer = request(
        Method::GET,
        &format!("{}{path}", url.trim_end_matches('/')),
        &[],
        Vec::new(),
    )
    .await?;
    if answer.status != 200 {
        return Err(format!(
            "{path}: {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    serde_json::from_slice(&answer.body).map_err(|e| format!("{path}: {e}"))
}

async fn cluster_status(url: &str, json: bool) -> Result<(), String> {
    let members = get_json(url, "/v1/cluster/members").await?;
    let ranges = get_json(url, "/v1/ranges").await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "members": members, "ranges": ranges })
        );
        return Ok(());
    }
    println!("{:<6} {:<22} {:<8}", "NODE", "ADDRESS", "STATE");
    for m in members.as_array().into_iter().flatten() {
        println!(
            "{:<6} {:<22} {:<8}",
            m["id"].to_string(),
            m["addr"].as_str().unwrap_or_default(),
            m["state"].as_str().unwrap_or_default()
        );
    }
    println!();
    println!(
        "{:<22} {:<16} {:<16} {:<6} {:<8} REPLICAS",
        "RANGE", "START", "END", "GEN", "LEADER"
    );
    for r in ranges.as_array().into_iter().flatten() {
        let replicas: Vec<String> = r["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}:{}", p["node"], p["role"].as_str().unwrap_or_default()))
            .collect();
        let leader = r["leader"]
            .as_u64()
            .map_or("?".to_string(), |l| l.to_string());
        let start = r["start"].as_str().unwrap_or_default();
        println!(
            "{:<22} {:<16} {:<16} {:<6} {:<8} {}",
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

async fn kv(url: &str, command: KvCommand) -> Result<(), String> {
    let answer = match &command {
        KvCommand::Put { key, value } => {
            request(
                Method::PUT,
                &key_url(url, key),
                &[],
                value.clone().into_bytes(),
            )
            .await?
        }
        KvCommand::Get { key, stale } => {
            let mut target = key_url(url, key);
            if *stale {
                target.push_str("?consistency=stale");
            }
            request(Method::GET, &target, &[], Vec::new()).await?
        }
        KvCommand::Del { key } => {
            request(Method::DELETE, &key_url(url, key), &[], Vec::new()).await?
        }
        KvCommand::Scan { prefix, limit } => {
            let target = format!(
                "{}/v1/kv?prefix={}&limit={limit}",
                url.trim_end_matches('/'),
                shoal_gateway::encode_bytes(prefix.as_bytes())
            );
            request(Method::GET, &target, &[], Vec::new()).await?
        }
    };
    if !(200..300).contains(&answer.status) {
        return Err(format!(
            "{}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    match command {
        KvCommand::Get { .. } => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&answer.body)
                .map_err(|e| e.to_string())?;
            println!();
            if let Some(version) = answer.version {
                eprintln!("version {version}");
            }
        }
        KvCommand::Scan { .. } => {
            let body: serde_json::Value =
                serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
            for entry in body["entries"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{}",
                    entry["key"].as_str().unwrap_or_default(),
                    entry["value"].as_str().unwrap_or_default()
                );
            }
        }
        KvCommand::Put { .. } | KvCommand::Del { .. } => {
            println!("{}", String::from_utf8_lossy(&answer.body));
        }
    }
    Ok(())
}

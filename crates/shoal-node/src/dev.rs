//! `shoal dev`: a local cluster in one process. Each node keeps its data under
//! `DIR/node-N`; the ports chosen the first time (free loopback ports) are kept in
//! `DIR/cluster.json`, so running it again picks up the same data at the same addresses.

use crate::node::{Node, NodeSettings, TlsFiles};
use serde::{Deserialize, Serialize};
use shoal_client::{Client, ClientConfig};
use shoal_core::NodeId;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where each node of a dev cluster listens, kept between runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevLayout {
    /// One entry per node, node `i + 1` at index `i`.
    pub nodes: Vec<DevNode>,
    /// The cluster was bootstrapped and served once. Until then every start bootstraps
    /// (a store that already did refuses, harmlessly), so a first run cut short recovers.
    #[serde(default)]
    pub bootstrapped: bool,
}

/// One dev node's addresses.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevNode {
    /// Node RPC, Raft and gossip.
    pub listen: SocketAddr,
    /// The HTTP gateway.
    pub http: SocketAddr,
}

/// Free loopback ports, `count` of them, distinct: each is held until all are chosen (and
/// free for UDP too, which gossip uses on the same port number). They are released before
/// the nodes bind them, so another program could take one in between; the dev cluster then
/// fails to start and says which address was taken. They are drawn from below the
/// system's range of ephemeral ports, so that a node restarted on its port does not find it
/// taken by some process's outgoing connection.
pub fn free_ports(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    let (low, high) = below_ephemeral();
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    let mut held = Vec::new();
    let mut tries = 0;
    while held.len() < count {
        tries += 1;
        // xorshift: spread tries over the range (two runs at once rarely collide).
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = if tries <= 10_000 {
            low + (state % u64::from(high - low)) as u16
        } else {
            0 // the range is crowded: any free port
        };
        let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        let addr = listener.local_addr()?;
        if held.iter().any(|(_, _, a)| *a == addr) {
            continue;
        }
        if let Ok(udp) = std::net::UdpSocket::bind(addr) {
            held.push((listener, udp, addr));
        }
    }
    Ok(held.into_iter().map(|(_, _, addr)| addr).collect())
}

/// Ports to draw from: 10,000 below the start of the system's ephemeral range (Linux's
/// `ip_local_port_range`, 32768 by default), and never below 1024.
fn below_ephemeral() -> (u16, u16) {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = start.max(2048);
    let low = high.saturating_sub(10_000).max(1024);
    (low, high)
}

/// Writes the layout to `path` atomically (a temporary file, then a rename).
fn save(path: &Path, layout: &DevLayout) -> std::io::Result<()> {
    let temp = path.with_extension("json.tmp");
    std::fs::write(
        &temp,
        serde_json::to_vec_pretty(layout).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&temp, path)
}

/// The layout in `dir` (which must have `nodes` nodes), or a new one of `nodes` nodes on
/// free ports.
fn layout(dir: &Path, nodes: u64) -> std::io::Result<DevLayout> {
    let path = dir.join("cluster.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let layout: DevLayout = serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            if layout.nodes.len() as u64 != nodes || layout.nodes.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{} holds a cluster of {} nodes, not {nodes}",
                    dir.display(),
                    layout.nodes.len()
                )));
            }
            Ok(layout)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ports = free_ports(2 * nodes as usize)?;
            let layout = DevLayout {
                nodes: ports
                    .chunks(2)
                    .map(|pair| DevNode {
                        listen: pair[0],
                        http: pair[1],
                    })
                    .collect(),
                bootstrapped: false,
            };
            std::fs::create_dir_all(dir)?;
            save(&path, &layout)?;
            Ok(layout)
        }
        Err(e) => Err(e),
    }
}

/// A running dev cluster.
pub struct DevCluster {
    /// Its nodes, node 1 first.
    pub nodes: Vec<Node>,
    /// The certificate its gateways serve, with `--tls`.
    pub tls: Option<TlsFiles>,
}

/// How to run a dev cluster.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// How many nodes (a directory keeps the count it was created with).
    pub nodes: u64,
    /// Serve HTTPS with a self-signed certificate kept in `DIR/tls/`.
    pub tls: bool,
    /// How long to wait for every gateway to serve.
    pub ready_within: Duration,
    /// Store settings beyond the defaults.
    pub tune: fn(&mut shoal_store::StoreConfig),
}

impl DevCluster {
    /// Starts (or restarts) the cluster of `nodes` nodes in `dir`; waits until its gateway
    /// serves, or `ready_within` passes.
    pub async fn start(dir: &Path, options: DevOptions) -> Result<DevCluster, String> {
        if options.nodes == 0 {
            return Err("a cluster needs at least one node".into());
        }
        let mut layout = layout(dir, options.nodes).map_err(|e| e.to_string())?;
        let tls = if options.tls {
            Some(crate::certs::dev_certificate(dir)?)
        } else {
            None
        };
        let fresh = !layout.bootstrapped;
        let voters: Vec<NodeId> = (1..=layout.nodes.len() as u64).map(NodeId::new).collect();
        let mut started = Vec::new();
        for (i, addrs) in layout.nodes.iter().enumerate() {
            let id = NodeId::new(i as u64 + 1);
            let mut settings = NodeSettings::new(id, node_dir(dir, id), addrs.listen, addrs.http);
            settings.join = layout.nodes.iter().take(i).map(|n| n.listen).collect();
            // Every founding node bootstraps with the same voters until the cluster has
            // served once.
            if fresh {
                settings.bootstrap = voters.clone();
            }
            settings.tls = tls.clone();
            settings.tune = options.tune;
            match Node::start(settings).await {
                Ok(node) => started.push(node),
                Err(e) => {
                    for node in started {
                        node.shutdown().await;
                    }
                    return Err(format!("node {id}: {e}"));
                }
            }
        }
        // The earlier nodes learn the later ones through gossip; on a restart, everyone
        // re-joins through the first.
        if let Some(first) = layout.nodes.first() {
            for node in started.iter().skip(1) {
                if let Some(store) = node.store() {
                    let _ = store.join(vec![first.listen]).await;
                }
            }
        }
        let cluster = DevCluster {
            nodes: started,
            tls,
        };
        if let Err(e) = cluster.wait_ready(options.ready_within).await {
            cluster.shutdown().await;
            return Err(e);
        }
        if fresh {
            layout.bootstrapped = true;
            save(&dir.join("cluster.json"), &layout).map_err(|e| e.to_string())?;
        }
        Ok(cluster)
    }

    /// The first node's gateway URL.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// A client of node `i`'s gateway (trusting the cluster's certificate with `--tls`).
    pub fn gateway(&self, i: usize) -> Result<Client, String> {
        let mut config = ClientConfig::new([self.nodes[i].url()]);
        if let Some(tls) = &self.tls {
            let pem =
                std::fs::read(&tls.cert).map_err(|e| format!("{}: {e}", tls.cert.display()))?;
            config.ca_cert_pem = Some(pem);
        }
        Client::new(config).map_err(|e| e.to_string())
    }

    async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let gateways = (0..self.nodes.len())
            .map(|i| self.gateway(i))
            .collect::<Result<Vec<_>, _>>()?;
        loop {
            let mut ready = true;
            for gateway in &gateways {
                if !matches!(gateway.get_raw("/ready").await, Ok(a) if a.status == 200) {
                    ready = false;
                    break;
                }
            }
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the cluster did not become ready within {within:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every node at once (each stops its gateway, then leaves the cluster and closes
    /// its store), so that none waits on peers already gone.
    pub async fn shutdown(self) {
        let stopping: Vec<_> = self
            .nodes
            .into_iter()
            .map(|node| tokio::spawn(node.shutdown()))
            .collect();
        for task in stopping {
            let _ = task.await;
        }
    }
}

/// Node `id`'s data directory under `dir`.
pub fn node_dir(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{}", id.get()))
}

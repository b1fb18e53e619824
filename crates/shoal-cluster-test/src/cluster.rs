//! The cluster under test: real `shoal start` processes on loopback, each with its own data
//! directory and log, that the nemesis kills, restarts, pauses and resumes.

use shoal_client::Client;
use shoal_client::Method;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Every node process running, so that an interrupted run can kill them all (see
/// [`kill_all`]): tasks may still hold the cluster when the run is abandoned.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn register(pid: u32) {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
}

fn unregister(pid: u32) {
    RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|&p| p != pid);
}

/// kill -9 every node process still running (for an interrupted run: a SIGKILL also ends a
/// process stopped by SIGSTOP).
pub fn kill_all() {
    for pid in RUNNING.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// The `shoal start` flag that lets the run cut nodes' traffic (partitions).
pub const FAULT_INJECTION: &str = "--fault-injection";

/// One node's process and addresses.
pub struct Node {
    /// Its id (from 1).
    pub id: u64,
    /// Node RPC, Raft and gossip.
    pub listen: SocketAddr,
    /// Its gateway.
    pub http: SocketAddr,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// Every node.
pub struct Cluster {
    /// The nodes, node 1 first.
    pub nodes: Vec<Node>,
    shoal: PathBuf,
    /// Extra `shoal start` flags (a deliberate defect's switch).
    extra: Vec<String>,
}

impl Node {
    /// A client of its gateway alone (fault routes and checks are about this node).
    pub fn gateway(&self) -> Client {
        Client::connect(&self.url()).expect("a valid URL")
    }

    /// Its gateway's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Whether its process runs (started, not killed; maybe paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is stopped by SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

impl Cluster {
    /// Starts `count` nodes (all founding voters) under `dir` (emptied first: a run starts
    /// from no data), each logging to `dir/node-N.log`, and waits until every gateway is
    /// ready.
    /// `extra` flags go to every `shoal start`.
    pub async fn start(
        shoal: &Path,
        dir: &Path,
        count: u64,
        extra: Vec<String>,
    ) -> Result<Cluster, String> {
        if !shoal.is_file() {
            return Err(format!(
                "{} is not there: build it with cargo build --release -p shoal-node",
                shoal.display()
            ));
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ports = shoal_node::dev::free_ports(2 * count as usize).map_err(|e| e.to_string())?;
        let mut cluster = Cluster {
            nodes: (0..count as usize)
                .map(|i| Node {
                    id: i as u64 + 1,
                    listen: ports[2 * i],
                    http: ports[2 * i + 1],
                    data: dir.join(format!("node-{}", i + 1)),
                    log: dir.join(format!("node-{}.log", i + 1)),
                    child: None,
                    paused: false,
                })
                .collect(),
            shoal: shoal.to_path_buf(),
            extra,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ready(i, Duration::from_secs(120)).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let founders: Vec<String> = self.nodes.iter().map(|n| n.id.to_string()).collect();
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.id != self.nodes[i].id)
            .map(|n| n.listen.to_string())
            .collect();
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.shoal);
        // Only the flags below configure the nodes: no SHOAL_* setting of the caller's shell
        // (a token, a config file) leaks in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SHOAL_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("start")
            .args(["--id", &node.id.to_string()])
            .arg("--data-dir")
            .arg(&node.data)
            .args(["--listen", &node.listen.to_string()])
            .args(["--http", &node.http.to_string()])
            .args(["--join", &seeds.join(",")])
            .args(["--bootstrap", &founders.join(",")])
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting node {}: {e}", node.id))?;
        register(child.id());
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Waits until node `i`'s gateway answers `/ready` (failing at once if its process
    /// exited).
    pub async fn wait_ready(&mut self, i: usize, within: Duration) -> Result<(), String> {
        let gateway = self.nodes[i].gateway();
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.nodes[i].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    unregister(child.id());
                    self.nodes[i].child = None;
                    return Err(format!(
                        "node {} exited ({status}) while starting; see {}",
                        self.nodes[i].id,
                        self.nodes[i].log.display()
                    ));
                }
            }
            let ready = gateway
                .request_within(
                    Method::GET,
                    "/ready",
                    &[],
                    Vec::new(),
                    Duration::from_secs(2),
                )
                .await
                .is_ok_and(|a| a.status == 200);
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {} was not ready within {within:?}; see its log",
                    self.nodes[i].id
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// kill -9 node `i` (paused or not: SIGKILL ends a stopped process too).
    pub fn kill(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let mut child = node.child.take().ok_or("not running")?;
        child.kill().map_err(|e| e.to_string())?;
        child.wait().map_err(|e| e.to_string())?;
        unregister(child.id());
        node.paused = false;
        Ok(())
    }

    /// Starts node `i` again on its data.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.nodes[i].child.is_some() {
            return Err("already running".into());
        }
        self.spawn(i)
    }

    /// SIGSTOP (`pause`) or SIGCONT node `i`.
    pub fn signal_pause(&mut self, i: usize, pause: bool) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let pid = node.child.as_ref().ok_or("not running")?.id();
        let signal = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("kill {signal} {pid} failed"));
        }
        node.paused = pause;
        Ok(())
    }

    /// Whether the nodes run with `--fault-injection` (their transport fault rules can be
    /// set).
    pub fn fault_injection(&self) -> bool {
        self.extra.iter().any(|f| f == FAULT_INJECTION)
    }

    /// Replaces node `i`'s transport fault rules: traffic with each listed peer (by node
    /// index) is dropped in that direction (`inbound`, `outbound` or `both`). Returns how
    /// many messages its rules had dropped before.
    pub async fn set_faults(&self, i: usize, drops: &[(usize, &str)]) -> Result<u64, String> {
        let rules: Vec<serde_json::Value> = drops
            .iter()
            .map(|&(peer, direction)| {
                serde_json::json!({
                    "peer": self.nodes[peer].listen.to_string(),
                    "direction": direction,
                    "action": "drop",
                })
            })
            .collect();
        let body = serde_json::json!({ "rules": rules })
            .to_string()
            .into_bytes();
        self.faults_request(i, Method::PUT, body).await
    }

    /// Clears node `i`'s fault rules; returns how many messages they had dropped since the
    /// node started.
    pub async fn clear_faults(&self, i: usize) -> Result<u64, String> {
        self.faults_request(i, Method::DELETE, Vec::new()).await
    }

    /// Sends a request to node `i`'s `/v1/admin/faults` (a few tries: the node may be busy
    /// electing); returns the `dropped` count it answers.
    async fn faults_request(&self, i: usize, method: Method, body: Vec<u8>) -> Result<u64, String> {
        let gateway = self.nodes[i].gateway();
        let mut last = String::new();
        for _ in 0..5 {
            match gateway
                .request_within(
                    method.clone(),
                    "/v1/admin/faults",
                    &[],
                    body.clone(),
                    Duration::from_secs(5),
                )
                .await
            {
                Ok(answer) if answer.status == 200 => {
                    let state: serde_json::Value =
                        serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
                    return Ok(state["dropped"].as_u64().unwrap_or(0));
                }
                Ok(answer) => {
                    return Err(format!(
                        "node {}: /v1/admin/faults answered {}: {}",
                        self.nodes[i].id,
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    ))
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!(
            "node {}: /v1/admin/faults: {last}",
            self.nodes[i].id
        ))
    }

    /// Whether node `from` reaches node `to` over node RPC now: `from` sends `to` one
    /// request through its fault filter (`GET /v1/admin/faults?probe=`). `None` if `from`
    /// did not answer.
    pub async fn reaches(&self, from: usize, to: usize) -> Option<bool> {
        let path = format!("/v1/admin/faults?probe={}", self.nodes[to].listen);
        let answer = self.nodes[from]
            .gateway()
            .request_within(Method::GET, &path, &[], Vec::new(), Duration::from_secs(10))
            .await
            .ok()
            .filter(|a| a.status == 200)?;
        let state: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
        state["probe"]["reachable"].as_bool()
    }

    /// Ends every fault: resumes paused nodes, clears every fault rule of the nodes that ran
    /// through (a restarted node starts with none), restarts killed ones, and waits until
    /// every gateway is ready.
    pub async fn heal(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.signal_pause(i, false)?;
            }
            if self.fault_injection() && self.nodes[i].child.is_some() {
                if let Err(e) = self.clear_faults(i).await {
                    problems.push(e);
                }
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.restart(i)?;
            }
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i, Duration::from_secs(120)).await?;
        }
        // A node whose rules could not be cleared at first is ready now, or the run ended.
        if !problems.is_empty() {
            for i in 0..self.nodes.len() {
                self.clear_faults(i).await?;
            }
        }
        Ok(())
    }

    /// Stops every node with SIGTERM (each exits 0 after handing over and flushing), or
    /// kills what has not stopped within a minute. Returns the nodes that did not exit 0.
    pub fn stop(&mut self) -> Vec<u64> {
        let mut unclean = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                if node.paused {
                    let _ = Command::new("kill")
                        .args(["-CONT", &child.id().to_string()])
                        .status();
                }
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            unregister(child.id());
            if !status.is_some_and(|s| s.success()) {
                unclean.push(node.id);
            }
        }
        unclean
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
                unregister(child.id());
            }
        }
    }
}

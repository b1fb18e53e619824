//! What idle ranges cost: three stores in one process over loopback TCP (each with its WAL
//! and fjall engine in a temp dir) founded with many ranges (`Store::bootstrap_split`),
//! left idle, measured, then one range written while the rest stay idle.
//!
//! `cargo run --release -p shoal-store --example idle_bench -- [--ranges 1000,5000,10000]
//! [--idle 10] [--awake-baseline]`
//!
//! For each count of ranges (three replicas each, one on every store): the time to found
//! them and elect every leader, then, once at most 1% of replicas are awake (or after 30 s),
//! over `--idle` seconds: the CPU the process used (from `/proc/self/stat`) per store (one
//! store is one node), the Raft messages each node took in per second, the WAL syncs per
//! second, resident memory and that divided by the replicas (an upper bound per replica:
//! the process's fixed memory is in it); then the p99 of 500 sequential puts to one range
//! among the idle ones, through the node RPC service. With `--awake-baseline` the
//! first count is measured again with quiescence off, in the same run: the cost before it.
//!
//! The last line is one JSON object: `idle_cores_1k`, `idle_cores_5k`, `idle_cores_10k` (a
//! node's cores: the process's divided by three) and the rest per count.

use shoal_core::{ErrorCode, NodeId, RangeId};
use shoal_store::{KvOp, KvRequest, KvResponse, KvRpc, Store, StoreConfig, FIRST_RANGE};
use shoal_transport::{RpcClient, RpcTransportExt, TransportConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const NODES: u64 = 3;
const PUTS: usize = 500;

fn n(raw: u64) -> NodeId {
    NodeId::new(raw)
}

/// The process's user and system CPU time so far, from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

/// Resident memory of the process, from `/proc/self/statm`, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

struct Cluster {
    stores: Vec<Store>,
    addrs: Vec<SocketAddr>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Three stores founded with `ranges` user ranges (split at `r00000001`, …).
    async fn start(ranges: usize, quiesce: bool) -> Cluster {
        let mut stores = Vec::new();
        let mut dirs = Vec::new();
        for i in 1..=NODES {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut config = StoreConfig::new(n(i), dir.path(), "127.0.0.1:0".parse().unwrap());
            config.transport = TransportConfig::local();
            config.raft.quiesce = quiesce;
            stores.push(Store::open(config).await.expect("open a store"));
            dirs.push(dir);
        }
        let addrs: Vec<SocketAddr> = stores.iter().map(Store::addr).collect();
        for store in &stores {
            for (i, addr) in addrs.iter().enumerate() {
                store.set_peer(n(i as u64 + 1), *addr);
            }
        }
        let voters: Vec<NodeId> = (1..=NODES).map(n).collect();
        let splits: Vec<Vec<u8>> = (1..ranges)
            .map(|i| format!("r{i:08}").into_bytes())
            .collect();
        let started = Instant::now();
        // The founders bootstrap at once, as `shoal start --bootstrap` on each machine does.
        let founding: Vec<_> = stores
            .iter()
            .map(|store| {
                let (store, voters, splits) = (store.clone(), voters.clone(), splits.clone());
                tokio::spawn(async move { store.bootstrap_split(&voters, splits).await })
            })
            .collect();
        for founded in founding {
            founded.await.expect("a bootstrap task").expect("bootstrap");
        }
        eprintln!(
            "  {ranges} ranges founded on {NODES} stores in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Cluster {
            stores,
            addrs,
            _dirs: dirs,
        }
    }

    fn range_ids(ranges: usize) -> impl Iterator<Item = RangeId> {
        (0..ranges as u64).map(|i| RangeId::new(FIRST_RANGE.get() + i))
    }

    /// Waits until node 1 knows a leader for every range.
    async fn wait_for_leaders(&self, ranges: usize) {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut last_report = Instant::now();
        loop {
            let missing = Self::range_ids(ranges)
                .filter(|&r| self.stores[0].leader(r).is_none())
                .count();
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} ranges without a leader"
            );
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("  waiting for leaders: {missing} of {ranges} ranges have none yet");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Replicas awake on all nodes together.
    async fn awake(&self, ranges: usize) -> usize {
        let mut quiet = 0;
        for store in &self.stores {
            quiet += store.quiet_ranges().await.unwrap_or(0);
        }
        (ranges + 1) * NODES as usize - quiet
    }

    fn messages(&self) -> u64 {
        self.stores.iter().map(Store::raft_messages_received).sum()
    }

    fn syncs(&self) -> u64 {
        self.stores.iter().map(Store::wal_syncs).sum()
    }

    /// Stops every store at once (no hand-over: the run is over).
    async fn stop(self) {
        for store in &self.stores {
            store.crash().await;
        }
    }
}

/// `PUTS` sequential puts to `range` through its leader's node RPC; the p99 in ms.
async fn put_p99_ms(cluster: &Cluster, range: RangeId, key_prefix: &[u8]) -> f64 {
    let client = RpcClient::new(n(100), None, TransportConfig::local()).expect("a client");
    let generation = cluster.stores[0]
        .descriptors()
        .into_iter()
        .find(|d| d.id == range)
        .expect("node 1 hosts every range")
        .generation;
    let mut latencies = Vec::with_capacity(PUTS);
    for i in 0..PUTS {
        let mut key = key_prefix.to_vec();
        key.extend_from_slice(format!("/{i:06}").as_bytes());
        loop {
            let leader = cluster.stores[0].leader(range).unwrap_or(n(1));
            let request = KvRequest {
                range,
                generation,
                op: KvOp::put(key.clone(), vec![7u8; 256]),
            };
            let sent = Instant::now();
            match client
                .call::<KvRpc>(
                    cluster.addrs[(leader.get() - 1) as usize],
                    &request,
                    Duration::from_secs(10),
                )
                .await
            {
                Ok(KvResponse::Written(_)) => {
                    latencies.push(sent.elapsed());
                    break;
                }
                Ok(other) => panic!("unexpected answer {other:?}"),
                Err(e)
                    if matches!(e.code, ErrorCode::NotLeader { .. } | ErrorCode::Unavailable) =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("a put failed: {e}"),
            }
        }
    }
    latencies.sort_unstable();
    latencies[(latencies.len() - 1) * 99 / 100].as_secs_f64() * 1e3
}

/// What one count of ranges measured.
struct Figures {
    ranges: usize,
    quiesce: bool,
    found_s: f64,
    awake: usize,
    cores_per_node: f64,
    messages_per_s_per_node: f64,
    syncs_per_s_per_node: f64,
    rss_mb: f64,
    rss_per_range_kb: f64,
    put_p99_ms: f64,
}

async fn measure(ranges: usize, quiesce: bool, idle: Duration) -> Figures {
    let started = Instant::now();
    let cluster = Cluster::start(ranges, quiesce).await;
    cluster.wait_for_leaders(ranges).await;
    let found_s = started.elapsed().as_secs_f64();
    // Let the ranges settle (and, with quiescence, go quiet).
    let settle = Instant::now() + Duration::from_secs(30);
    tokio::time::sleep(Duration::from_secs(3)).await;
    while quiesce
        && cluster.awake(ranges).await > (ranges * NODES as usize) / 100
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (cpu0, msgs0, syncs0, t0) = (
        cpu_time(),
        cluster.messages(),
        cluster.syncs(),
        Instant::now(),
    );
    tokio::time::sleep(idle).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let messages = cluster.messages() - msgs0;
    let syncs = cluster.syncs() - syncs0;
    let awake = cluster.awake(ranges).await;
    let rss = rss_bytes();
    // One range in the middle, written while the others stay idle.
    let range = RangeId::new(FIRST_RANGE.get() + ranges as u64 / 2);
    let prefix = format!("r{:08}", ranges / 2).into_bytes();
    let put_p99_ms = put_p99_ms(&cluster, range, &prefix).await;
    cluster.stop().await;
    let per_node = NODES as f64;
    Figures {
        ranges,
        quiesce,
        found_s,
        awake,
        cores_per_node: cpu / elapsed / per_node,
        messages_per_s_per_node: messages as f64 / elapsed / per_node,
        syncs_per_s_per_node: syncs as f64 / elapsed / per_node,
        rss_mb: rss as f64 / (1 << 20) as f64,
        rss_per_range_kb: rss as f64 / 1024.0 / ((ranges + 1) as f64 * per_node),
        put_p99_ms,
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let counts: Vec<usize> = arg("--ranges")
        .unwrap_or_else(|| "1000,5000,10000".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("--ranges: counts separated by commas")
        })
        .collect();
    let idle = Duration::from_secs(
        arg("--idle")
            .map(|s| s.parse().expect("--idle: seconds"))
            .unwrap_or(10),
    );
    let baseline = std::env::args().any(|a| a == "--awake-baseline");
    let mut runs = Vec::new();
    if baseline {
        runs.push((counts[0], false));
    }
    runs.extend(counts.iter().map(|&c| (c, true)));
    let mut all = Vec::new();
    for (ranges, quiesce) in runs {
        let f = measure(ranges, quiesce, idle).await;
        println!(
            "{} ranges, quiescence {}: founded and led in {:.1} s; idle: {:.3} cores per node, {:.0} Raft messages/s per node, {:.1} WAL syncs/s per node, {} of {} replicas awake; RSS {:.0} MB ({:.1} KiB per replica); put p99 among them {:.2} ms",
            f.ranges,
            if f.quiesce { "on" } else { "off" },
            f.found_s,
            f.cores_per_node,
            f.messages_per_s_per_node,
            f.syncs_per_s_per_node,
            f.awake,
            (f.ranges + 1) * NODES as usize,
            f.rss_mb,
            f.rss_per_range_kb,
            f.put_p99_ms,
        );
        all.push(f);
    }
    let mut json = Vec::new();
    for f in &all {
        let name = if f.ranges % 1000 == 0 {
            format!("{}k", f.ranges / 1000)
        } else {
            f.ranges.to_string()
        };
        let suffix = if f.quiesce {
            String::new()
        } else {
            "_awake".to_string()
        };
        json.push(format!(
            "\"idle_cores_{name}{suffix}\":{:.4}",
            f.cores_per_node
        ));
        json.push(format!(
            "\"messages_per_s_{name}{suffix}\":{:.1}",
            f.messages_per_s_per_node
        ));
        json.push(format!(
            "\"wal_syncs_per_s_{name}{suffix}\":{:.2}",
            f.syncs_per_s_per_node
        ));
        json.push(format!("\"awake_replicas_{name}{suffix}\":{}", f.awake));
        json.push(format!("\"rss_mb_{name}{suffix}\":{:.1}", f.rss_mb));
        json.push(format!(
            "\"rss_kib_per_replica_{name}{suffix}\":{:.2}",
            f.rss_per_range_kb
        ));
        json.push(format!("\"put_p99_ms_{name}{suffix}\":{:.2}", f.put_p99_ms));
        json.push(format!("\"found_s_{name}{suffix}\":{:.1}", f.found_s));
    }
    println!("{{{}}}", json.join(","));
}

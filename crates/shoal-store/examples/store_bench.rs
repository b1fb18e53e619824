//! Range store benchmark: three stores in one process over loopback TCP, each with its WAL
//! (fsynced per round, group commit) and its fjall engine in a temp dir, driven by 64
//! closed-loop clients through the node RPC service over TCP, as the gateway will.
//!
//! `cargo run --release -p shoal-store --example store_bench -- --json`
//!
//! Phases, each `PHASE` long after a warm-up:
//! 1. puts: 16-byte random keys, 256-byte values, `acks = majority`, to the range's leader;
//! 2. gets: linearizable (ReadIndex) gets of keys written in phase 1;
//! 3. puts while a range splits: the key space is first split in two at `0x80`, then the
//!    lower range splits at its size median while half the clients write to each (so a
//!    range held up cannot starve the other of clients): `split_pause_ms`
//!    is the longest gap between completed writes to the splitting range from the split's
//!    start until a second after it ends, `other_range_pause_ms` the same for the other range
//!    (clients re-route on `RangeKeyMismatch` and `NotLeader` as a gateway does);
//! 4. the baseline: the same put load through an RPC that proposes to a Raft group whose
//!    state machine only counts (same WAL, same driver, same transport), so the store's own
//!    cost (commands, fjall, the KV service) shows as the difference.
//!
//! With `--lease`, linearizable reads use the leader's lease (`ReadMode::Lease`) instead of
//! a ReadIndex heartbeat round.
//!
//! The last line is one JSON object.

use bytes::Bytes;
use shoal_consensus::counting::CountingMachine;
use shoal_consensus::driver::{DriverConfig, Peers, RaftDriver, RaftInbox};
use shoal_consensus::{LogStore, Membership, Raft, RaftConfig, Wal, WalConfig};
use shoal_core::{Clock, ErrorCode, GroupId, NodeId, RangeDescriptor, RangeId};
use shoal_store::{
    Consistency, KvOp, KvRequest, KvResponse, KvRpc, LookupRequest, LookupRpc, Store, StoreConfig,
    FIRST_RANGE,
};
use shoal_transport::{Router, Rpc, RpcClient, RpcServer, RpcTransportExt, TransportConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;
const PHASE: Duration = Duration::from_secs(5);
const WARMUP: Duration = Duration::from_secs(1);
const VALUE_BYTES: usize = 256;

fn n(raw: u64) -> NodeId {
    NodeId::new(raw)
}

/// A tiny xorshift generator per client: keys need no quality, only spread. Keys are user
/// keys: below `0xff`, where the system's keys begin.
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> Vec<u8> {
        let mut key = Vec::with_capacity(16);
        for _ in 0..2 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            key.extend_from_slice(&self.0.to_be_bytes());
        }
        key[0] %= shoal_store::SYSTEM_KEY_PREFIX;
        key
    }
}

/// What the clients of one phase measured.
#[derive(Default)]
struct Measured {
    latencies: Vec<Duration>,
    /// When each operation completed, with its key's first byte, for pauses per range.
    completions: Vec<(Instant, u8)>,
    errors: u64,
}

impl Measured {
    fn merge(&mut self, other: Measured) {
        self.latencies.extend(other.latencies);
        self.completions.extend(other.completions);
        self.errors += other.errors;
    }

    /// The longest gap between completions of operations whose key starts with a byte in
    /// `first_bytes`, from `from` until `until`.
    fn longest_pause(
        &self,
        first_bytes: std::ops::Range<u8>,
        from: Instant,
        until: Instant,
    ) -> Duration {
        let mut times: Vec<Instant> = self
            .completions
            .iter()
            .filter(|(t, b)| first_bytes.contains(b) && *t > from && *t <= until)
            .map(|&(t, _)| t)
            .collect();
        times.sort_unstable();
        let mut previous = from;
        let mut pause = Duration::ZERO;
        for t in times {
            pause = pause.max(t - previous);
            previous = t;
        }
        pause
    }

    fn rate(&self, elapsed: Duration) -> f64 {
        self.latencies.len() as f64 / elapsed.as_secs_f64()
    }

    fn percentile_ms(&mut self, p: usize) -> f64 {
        self.latencies.sort_unstable();
        self.latencies
            .get(self.latencies.len().saturating_sub(1) * p / 100)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

/// Routes a key the way a gateway does: cached descriptors, corrected by errors.
struct Route {
    descriptors: Vec<RangeDescriptor>,
    leaders: Vec<(RangeId, NodeId)>,
}

impl Route {
    fn for_key(&self, key: &[u8]) -> Option<(RangeDescriptor, Option<NodeId>)> {
        let d = self
            .descriptors
            .iter()
            .filter(|d| d.contains_key(key))
            .max_by_key(|d| d.generation)?
            .clone();
        let leader = self
            .leaders
            .iter()
            .find(|(r, _)| *r == d.id)
            .map(|&(_, l)| l);
        Some((d, leader))
    }

    fn learn(&mut self, error: &shoal_core::Error, range: RangeId) {
        match &error.code {
            ErrorCode::NotLeader { hint } => {
                self.leaders.retain(|(r, _)| *r != range);
                if let Some(h) = hint {
                    self.leaders.push((range, h.node));
                }
            }
            ErrorCode::RangeKeyMismatch { descriptors } => {
                for d in descriptors {
                    self.descriptors.retain(|old| old.id != d.id);
                    self.descriptors.push(d.clone());
                }
            }
            _ => {}
        }
    }
}

struct Cluster {
    stores: Vec<Store>,
    addrs: Vec<SocketAddr>,
    client: Arc<RpcClient>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(lease: bool) -> Cluster {
        let mut stores = Vec::new();
        let mut dirs = Vec::new();
        for i in 1..=3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut config = StoreConfig::new(n(i), dir.path(), "127.0.0.1:0".parse().unwrap());
            config.transport = TransportConfig::local();
            if lease {
                config.read_mode = shoal_consensus::ReadMode::Lease;
            }
            stores.push(Store::open(config).await.expect("open a store"));
            dirs.push(dir);
        }
        let addrs: Vec<SocketAddr> = stores.iter().map(Store::addr).collect();
        for store in &stores {
            for (i, addr) in addrs.iter().enumerate() {
                store.set_peer(n(i as u64 + 1), *addr);
            }
        }
        let voters: Vec<NodeId> = (1..=3).map(n).collect();
        for store in &stores {
            store.bootstrap(&voters).await.expect("bootstrap");
        }
        let client =
            Arc::new(RpcClient::new(n(100), None, TransportConfig::local()).expect("a client"));
        let cluster = Cluster {
            stores,
            addrs,
            client,
            _dirs: dirs,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.stores[0].leader(FIRST_RANGE).is_none() {
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster
    }

    /// The descriptors node 1 holds for `key`.
    async fn lookup(&self, key: &[u8]) -> Vec<RangeDescriptor> {
        let request = LookupRequest { key: key.to_vec() };
        self.client
            .call::<LookupRpc>(self.addrs[0], &request, Duration::from_secs(5))
            .await
            .unwrap_or_default()
    }

    async fn route(&self) -> Route {
        let descriptors = self.lookup(b"").await;
        let leaders = descriptors
            .iter()
            .filter_map(|d| Some((d.id, self.stores[0].leader(d.id)?)))
            .collect();
        Route {
            descriptors,
            leaders,
        }
    }
}

/// Which keys a phase's clients write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spread {
    /// Every client writes anywhere in the user key space.
    Uniform,
    /// Even clients write keys below `0x80`, odd ones the rest, so that a range a split holds
    /// up cannot starve the other of clients.
    Halves,
}

/// One client: puts (or gets of `written`) until `stop`, re-routing on errors. `half`:
/// which half of the key space it writes, if it keeps to one.
#[allow(clippy::too_many_arguments)]
async fn client(
    cluster: Arc<Cluster>,
    mut route: Route,
    seed: u64,
    get: bool,
    half: Option<bool>,
    written: Arc<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    start_measuring: Instant,
) -> (Measured, Vec<Vec<u8>>) {
    let mut keys = Keys(seed | 1);
    let mut measured = Measured::default();
    let mut mine = Vec::new();
    let mut pick = seed as usize;
    while !stop.load(Ordering::Relaxed) {
        let key = if get {
            pick = pick
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            written[(pick >> 17) % written.len()].clone()
        } else {
            let mut key = keys.next();
            match half {
                Some(false) => key[0] %= 0x80,
                Some(true) => key[0] = 0x80 + key[0] % 0x7f,
                None => {}
            }
            key
        };
        let op = if get {
            KvOp::Get {
                key: key.clone(),
                consistency: Consistency::Linearizable,
            }
        } else {
            KvOp::put(key.clone(), vec![7u8; VALUE_BYTES])
        };
        loop {
            let Some((descriptor, leader)) = route.for_key(&key) else {
                let found = cluster.lookup(&key).await;
                if found.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                route.descriptors.extend(found);
                continue;
            };
            let node = leader.unwrap_or(descriptor.replicas[0].node);
            let request = KvRequest {
                range: descriptor.id,
                generation: descriptor.generation,
                op: op.clone(),
            };
            let sent = Instant::now();
            match cluster
                .client
                .call::<KvRpc>(
                    cluster.addrs[(node.get() - 1) as usize],
                    &request,
                    Duration::from_secs(10),
                )
                .await
            {
                Ok(KvResponse::Written(_)) | Ok(KvResponse::Value(_)) => {
                    let done = Instant::now();
                    if sent >= start_measuring {
                        measured.latencies.push(done - sent);
                        measured.completions.push((done, key[0]));
                    }
                    if !get {
                        mine.push(key.clone());
                    }
                    break;
                }
                Ok(other) => panic!("unexpected answer {other:?}"),
                Err(e) => {
                    measured.errors += 1;
                    if matches!(
                        e.code,
                        ErrorCode::InvalidRequest | ErrorCode::TooLarge | ErrorCode::Internal
                    ) {
                        // Not worth retrying: this operation failed.
                        eprintln!("a request failed: {e}");
                        break;
                    }
                    route.learn(&e, descriptor.id);
                    if matches!(
                        e.code,
                        ErrorCode::Unavailable
                            | ErrorCode::Unreachable
                            | ErrorCode::Timeout
                            | ErrorCode::OutcomeUnknown
                    ) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        }
    }
    (measured, mine)
}

/// Splits `range` (at `at`, or its size median) on whichever store leads it when asked
/// (leadership may move under load), retrying a refusal for a moment.
async fn split_retrying(
    stores: &[Store],
    range: RangeId,
    at: Option<Vec<u8>>,
) -> (RangeDescriptor, RangeDescriptor) {
    let mut last_error = None;
    for _ in 0..50 {
        let leader = stores[0].leader(range).unwrap_or(n(1));
        match stores[(leader.get() - 1) as usize]
            .split(range, at.clone())
            .await
        {
            Ok(halves) => return halves,
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{range} did not split: {last_error:?}");
}

/// Runs `CLIENTS` clients for `PHASE` after `WARMUP`; `during` runs alongside.
async fn phase<F: std::future::Future<Output = T>, T>(
    cluster: &Arc<Cluster>,
    get: bool,
    spread: Spread,
    written: Arc<Vec<Vec<u8>>>,
    during: F,
) -> (Measured, Vec<Vec<u8>>, Duration, T) {
    let stop = Arc::new(AtomicBool::new(false));
    let start_measuring = Instant::now() + WARMUP;
    let mut handles = Vec::new();
    for c in 0..CLIENTS {
        let route = cluster.route().await;
        handles.push(tokio::spawn(client(
            cluster.clone(),
            route,
            0x9E37_79B9_7F4A_7C15u64.wrapping_mul(c as u64 + 1 + u64::from(get) * 1000),
            get,
            (spread == Spread::Halves).then_some(c % 2 == 1),
            written.clone(),
            stop.clone(),
            start_measuring,
        )));
    }
    let result = during.await;
    tokio::time::sleep_until((start_measuring + PHASE).into()).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = PHASE;
    let mut measured = Measured::default();
    let mut keys = Vec::new();
    for h in handles {
        let (m, k) = h.await.expect("client");
        measured.merge(m);
        keys.extend(k);
    }
    (measured, keys, elapsed, result)
}

/// The baseline's RPC: propose the payload to the group, answer once applied.
struct ProposeRpc;

impl Rpc for ProposeRpc {
    const NAME: &'static str = "bench.propose";
    type Request = Vec<u8>;
    type Response = ();
}

/// Three nodes running one group whose state machine only counts, with WALs on disk, each
/// serving [`ProposeRpc`]; returns puts per second with `CLIENTS` clients.
async fn raft_only() -> f64 {
    let peers = Peers::default();
    let ids: Vec<NodeId> = (1..=3).map(n).collect();
    let group = GroupId::new(1);
    let mut nodes = Vec::new();
    for &id in &ids {
        let config = DriverConfig::default();
        let inbox = RaftInbox::new(&config);
        let mut router = Router::new();
        inbox.register(&mut router).expect("register");
        let slot: Arc<Mutex<Option<RaftDriver<CountingMachine>>>> = Arc::default();
        let handler_slot = slot.clone();
        router
            .register::<ProposeRpc, _, _>(move |_ctx, data| {
                let driver = handler_slot.lock().unwrap().clone();
                async move {
                    let driver = driver.ok_or_else(|| {
                        shoal_core::Error::new(ErrorCode::Unavailable, "starting")
                    })?;
                    driver
                        .propose(group, Bytes::from(data))
                        .await
                        .map(|_| ())
                        .map_err(|e| shoal_core::Error::new(ErrorCode::Unavailable, e.to_string()))
                }
            })
            .expect("register");
        let server = RpcServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            id,
            router,
            TransportConfig::local(),
        )
        .await
        .expect("bind");
        peers.write().unwrap().insert(id, server.local_addr());
        let client = RpcClient::new(id, Some(server.local_addr()), TransportConfig::local())
            .expect("client");
        let driver = RaftDriver::start(id, Arc::new(client), peers.clone(), inbox, config);
        *slot.lock().unwrap() = Some(driver.clone());
        let dir = tempfile::tempdir().expect("temp dir");
        let (wal, _) = Wal::open(dir.path(), WalConfig::default()).expect("wal");
        let mut store = wal.store(group);
        Raft::bootstrap(&mut store, Membership::new(ids.clone())).expect("bootstrap");
        store.sync().expect("sync");
        let mut raft = Raft::new(
            id,
            group,
            RaftConfig::default(),
            store,
            0,
            id.get(),
            driver.clock().now(),
        )
        .expect("raft");
        if id == ids[0] {
            raft.campaign();
        }
        driver
            .add_group(raft, CountingMachine::default())
            .await
            .expect("add");
        nodes.push((driver, server, wal, dir));
    }
    // n1 campaigns first, but under load another node may win: send to whoever leads.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(id) = nodes[0].0.leader(group).and_then(|l| l.id) {
            break id;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let leader = peers.read().unwrap()[&leader];
    let client = Arc::new(RpcClient::new(n(100), None, TransportConfig::local()).expect("client"));
    let stop = Arc::new(AtomicBool::new(false));
    let start_measuring = Instant::now() + WARMUP;
    let mut handles = Vec::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut keys = Keys(c as u64 * 7919 + 1);
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut payload = keys.next();
                payload.extend_from_slice(&[7u8; VALUE_BYTES]);
                let sent = Instant::now();
                if client
                    .call::<ProposeRpc>(leader, &payload, Duration::from_secs(10))
                    .await
                    .is_ok()
                    && sent >= start_measuring
                {
                    done += 1;
                }
            }
            done
        }));
    }
    tokio::time::sleep_until((start_measuring + PHASE).into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for h in handles {
        total += h.await.expect("client");
    }
    for (driver, server, _, _) in nodes {
        driver.shutdown().await;
        server.shutdown().await;
    }
    total as f64 / PHASE.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let lease = std::env::args().any(|a| a == "--lease");
    let cluster = Arc::new(Cluster::start(lease).await);
    let leader = cluster.stores[0].leader(FIRST_RANGE).expect("a leader");
    let leader_store = cluster.stores[(leader.get() - 1) as usize].clone();

    let syncs_before = leader_store.wal_syncs();
    let (mut puts, written, elapsed, ()) =
        phase(&cluster, false, Spread::Uniform, Arc::default(), async {}).await;
    let syncs = leader_store.wal_syncs() - syncs_before;
    let put_rate = puts.rate(elapsed);
    let (put_p50, put_p99) = (puts.percentile_ms(50), puts.percentile_ms(99));
    let puts_per_fsync = puts.latencies.len() as f64 / syncs.max(1) as f64;
    if !json {
        println!(
            "puts, {CLIENTS} clients: {put_rate:.0}/s, p50 {put_p50:.2} ms, p99 {put_p99:.2} ms, {puts_per_fsync:.1} puts per leader fsync, {} errors",
            puts.errors
        );
    }

    let written = Arc::new(written);
    let (mut gets, _, elapsed, ()) =
        phase(&cluster, true, Spread::Uniform, written.clone(), async {}).await;
    let get_rate = gets.rate(elapsed);
    let get_p99 = gets.percentile_ms(99);
    if !json {
        println!(
            "linearizable gets, {CLIENTS} clients: {get_rate:.0}/s, p99 {get_p99:.2} ms, {} errors",
            gets.errors
        );
    }

    // The key space in two ranges (keys below 0x80, and the rest), so that one range can be
    // watched while the other splits.
    split_retrying(&cluster.stores, FIRST_RANGE, Some(vec![0x80])).await;
    let stores = cluster.stores.clone();
    let (splitting, _, elapsed, window) = phase(
        &cluster,
        false,
        Spread::Halves,
        Arc::default(),
        async move {
            tokio::time::sleep(WARMUP + Duration::from_secs(1)).await;
            let started = Instant::now();
            let (left, right) = split_retrying(&stores, FIRST_RANGE, None).await;
            (started, Instant::now(), left, right)
        },
    )
    .await;
    let (split_started, split_done, left, right) = window;
    let until = split_done + Duration::from_secs(1);
    let split_pause_ms = splitting
        .longest_pause(0..0x80, split_started, until)
        .as_secs_f64()
        * 1e3;
    let other_range_pause_ms = splitting
        .longest_pause(0x80..0xff, split_started, until)
        .as_secs_f64()
        * 1e3;
    if !json {
        println!(
            "puts while {} splits at {:?} into {} (the split took {:.1} ms): {:.0}/s, longest pause {split_pause_ms:.1} ms in the splitting range and {other_range_pause_ms:.1} ms in the other, {} errors (re-routing)",
            left.id,
            right.range.start(),
            right.id,
            (split_done - split_started).as_secs_f64() * 1e3,
            splitting.rate(elapsed),
            splitting.errors
        );
    }
    for store in &cluster.stores {
        store.shutdown().await;
    }

    let raft_rate = raft_only().await;
    if !json {
        println!("raft only (counting state machine), {CLIENTS} clients: {raft_rate:.0} puts/s");
    }
    println!(
        "{{\"read_mode\":\"{}\",\"put_per_s_64\":{put_rate:.0},\"put_p50_ms_64\":{put_p50:.3},\"put_p99_ms_64\":{put_p99:.3},\"get_per_s_64\":{get_rate:.0},\"get_p99_ms_64\":{get_p99:.3},\"split_pause_ms\":{split_pause_ms:.1},\"other_range_pause_ms\":{other_range_pause_ms:.1},\"puts_per_fsync\":{puts_per_fsync:.2},\"raft_only_put_per_s_64\":{raft_rate:.0}}}",
        if lease { "lease" } else { "read_index" }
    );
}

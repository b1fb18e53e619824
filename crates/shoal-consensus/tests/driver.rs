//! The tokio driver: three nodes on 127.0.0.1, each with one WAL, run eight Raft groups over
//! shoal-transport TCP. Every group elects a leader, commits concurrent proposals and
//! answers them with its state machine's replies, and serves a linearizable read on a
//! follower; each node's WAL syncs far fewer times than it writes records.

#![cfg(feature = "tokio")]

use bytes::Bytes;
use shoal_consensus::driver::{DriverConfig, Peers, RaftDriver, RaftInbox};
use shoal_consensus::{
    Entry, EntryPayload, LogIndex, LogStore, Membership, Raft, RaftConfig, ReadMode, Role,
    Snapshot, StateMachine, Wal, WalConfig,
};
use shoal_core::{Clock, NodeId, RangeId};
use shoal_transport::{Router, RpcClient, RpcServer, TransportConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GROUPS: u64 = 8;
const PROPOSALS: usize = 25;

/// Commands in order; answers each with how many it has applied.
#[derive(Clone, Default)]
struct CommandLog {
    applied: Arc<Mutex<(LogIndex, Vec<Bytes>)>>,
}

impl StateMachine for CommandLog {
    fn apply(&mut self, entry: &Entry) -> Bytes {
        let mut state = self.applied.lock().unwrap();
        state.0 = entry.index;
        if let EntryPayload::Command(data) = &entry.payload {
            state.1.push(data.clone());
        }
        Bytes::copy_from_slice(&(state.1.len() as u64).to_le_bytes())
    }
    fn applied_index(&self) -> LogIndex {
        self.applied.lock().unwrap().0
    }
    fn snapshot(&mut self) -> Bytes {
        let state = self.applied.lock().unwrap();
        Bytes::from(
            state
                .1
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect::<Vec<u8>>(),
        )
    }
    fn restore(&mut self, snapshot: &Snapshot) {
        let mut state = self.applied.lock().unwrap();
        state.0 = snapshot.meta.index;
        state.1 = snapshot
            .data
            .chunks(8)
            .map(Bytes::copy_from_slice)
            .collect();
    }
}

struct TestNode {
    driver: RaftDriver,
    server: RpcServer,
    wal: Wal,
    machines: Vec<CommandLog>,
    _dir: tempfile::TempDir,
}

fn raft_config() -> RaftConfig {
    RaftConfig {
        heartbeat_interval: Duration::from_millis(30),
        election_timeout: Duration::from_millis(300),
        ..RaftConfig::default()
    }
}

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_eight_groups_over_tcp_with_one_wal_each() {
    let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    let peers = Peers::default();
    let config = DriverConfig::default();
    let mut nodes = Vec::new();
    for &id in &ids {
        let inbox = RaftInbox::new(&config);
        let mut router = Router::new();
        inbox.register(&mut router).unwrap();
        let server = RpcServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            id,
            router,
            TransportConfig::local(),
        )
        .await
        .unwrap();
        peers.write().unwrap().insert(id, server.local_addr());
        let client = RpcClient::new(id, TransportConfig::local()).unwrap();
        let driver = RaftDriver::start(id, Arc::new(client), peers.clone(), inbox, config.clone());
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalConfig::default()).unwrap();
        nodes.push(TestNode {
            driver,
            server,
            wal,
            machines: Vec::new(),
            _dir: dir,
        });
    }
    for g in 1..=GROUPS {
        for (i, node) in nodes.iter_mut().enumerate() {
            let group = RangeId::new(g);
            let mut store = node.wal.store(group);
            Raft::bootstrap(&mut store, Membership::new(ids.clone())).unwrap();
            store.sync().unwrap();
            let now = node.driver.clock().now();
            let mut raft = Raft::new(
                ids[i],
                group,
                raft_config(),
                store,
                0,
                g * 10 + i as u64,
                now,
            )
            .unwrap();
            if g as usize % 3 == i {
                raft.campaign();
            }
            let machine = CommandLog::default();
            node.machines.push(machine.clone());
            node.driver
                .add_group(raft, Box::new(machine))
                .await
                .unwrap();
        }
    }

    for g in 1..=GROUPS {
        let group = RangeId::new(g);
        let leader = wait_for("a leader", async || {
            for (i, node) in nodes.iter().enumerate() {
                if node
                    .driver
                    .status(group)
                    .await
                    .is_some_and(|s| s.role == Role::Leader)
                {
                    return Some(i);
                }
            }
            None
        })
        .await;
        // Concurrent proposals, each answered with the state machine's reply.
        let mut handles = Vec::new();
        for p in 0..PROPOSALS {
            let driver = nodes[leader].driver.clone();
            handles.push(tokio::spawn(async move {
                let data = Bytes::copy_from_slice(&((g << 32) | p as u64).to_le_bytes());
                driver.propose(group, data).await
            }));
        }
        let mut answers = Vec::new();
        for h in handles {
            let answer = h.await.unwrap().expect("committed");
            answers.push(u64::from_le_bytes(answer[..].try_into().unwrap()));
        }
        answers.sort_unstable();
        assert_eq!(
            answers,
            (1..=PROPOSALS as u64).collect::<Vec<_>>(),
            "group {g}"
        );

        // A linearizable read on a follower sees every proposal (ReadIndex and lease reads,
        // by group).
        let follower = (leader + 1) % 3;
        let mode = if g % 2 == 0 {
            ReadMode::Lease
        } else {
            ReadMode::Safe
        };
        let index = wait_for("a follower read", async || {
            nodes[follower].driver.read_index(group, mode).await.ok()
        })
        .await;
        let machine = &nodes[follower].machines[(g - 1) as usize];
        let (applied, commands) = machine.applied.lock().unwrap().clone();
        assert!(applied >= index);
        assert_eq!(commands.len(), PROPOSALS, "group {g} on a follower");
    }

    for node in &nodes {
        let stats = node.wal.stats();
        assert!(stats.records > stats.syncs, "group commit: {stats:?}");
        assert_eq!(
            node.driver
                .inbox_stats()
                .spoofed
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
    for node in nodes {
        node.driver.shutdown().await;
        node.server.shutdown().await;
    }
}

#[tokio::test]
async fn requests_for_unknown_groups_fail_clearly() {
    let config = DriverConfig::default();
    let inbox = RaftInbox::new(&config);
    let client = RpcClient::new(NodeId::new(1), TransportConfig::local()).unwrap();
    let driver = RaftDriver::start(
        NodeId::new(1),
        Arc::new(client),
        Peers::default(),
        inbox,
        config,
    );
    let err = driver
        .propose(RangeId::new(5), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not hosted"), "{err}");
    assert!(driver
        .read_index(RangeId::new(5), ReadMode::Safe)
        .await
        .is_err());
    assert!(driver.status(RangeId::new(5)).await.is_none());
    driver.shutdown().await;
    assert!(matches!(
        driver.propose(RangeId::new(5), Bytes::new()).await,
        Err(shoal_consensus::driver::DriverError::Stopped)
    ));
}

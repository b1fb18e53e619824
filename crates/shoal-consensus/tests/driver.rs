//! The tokio driver: three nodes on 127.0.0.1, each with one WAL, run eight Raft groups over
//! shoal-transport TCP. Every group elects a leader, commits concurrent proposals and
//! answers them with its state machine's replies, and serves a linearizable read on a
//! follower; each node's WAL syncs far fewer times than it writes records. A round of
//! appends larger than a transport frame still reaches the followers, and a log-store error
//! stops only its own group.

#![cfg(feature = "tokio")]

use bytes::Bytes;
use shoal_consensus::driver::{DriverConfig, DriverError, Peers, RaftDriver, RaftInbox};
mod common;

use common::machine::CommandLog;
use shoal_consensus::{
    HostError, LogStore, Membership, Raft, RaftConfig, ReadMode, Role, Status, Wal, WalConfig,
};
use shoal_core::{Clock, GroupId, NodeId};
use shoal_transport::{Router, RpcClient, RpcServer, TransportConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GROUPS: u64 = 8;
const PROPOSALS: usize = 25;

struct TestNode {
    driver: RaftDriver<CommandLog>,
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

/// Starts node `id`: an RPC server on 127.0.0.1 whose address goes into `peers`, a driver
/// that finds its peers in `peers`, and an empty WAL.
async fn start_node(id: NodeId, peers: &Peers, config: &DriverConfig) -> TestNode {
    start_node_over(id, peers, config, TransportConfig::local()).await
}

/// [`start_node`] over a transport configured with `transport`.
async fn start_node_over(
    id: NodeId,
    peers: &Peers,
    config: &DriverConfig,
    transport: TransportConfig,
) -> TestNode {
    let inbox = RaftInbox::new(config);
    let mut router = Router::new();
    inbox.register(&mut router).unwrap();
    let server = RpcServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        id,
        router,
        transport.clone(),
    )
    .await
    .unwrap();
    peers.write().unwrap().insert(id, server.local_addr());
    let client = RpcClient::new(id, Some(server.local_addr()), transport).unwrap();
    let driver = RaftDriver::start(id, Arc::new(client), peers.clone(), inbox, config.clone());
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalConfig::default()).unwrap();
    TestNode {
        driver,
        server,
        wal,
        machines: Vec::new(),
        _dir: dir,
    }
}

/// Hosts replica `id` of `group` (a group of `voters`, bootstrapped into an empty store of
/// the node's WAL) on `node`, campaigning at once if `campaign`; returns its state machine.
async fn host(
    node: &TestNode,
    id: NodeId,
    voters: &[NodeId],
    group: GroupId,
    config: RaftConfig,
    campaign: bool,
) -> Result<CommandLog, DriverError> {
    let mut store = node.wal.store(group);
    Raft::bootstrap(&mut store, Membership::new(voters.iter().copied())).unwrap();
    store.sync().unwrap();
    let seed = id.get() * 1000 + group.get();
    let now = node.driver.clock().now();
    let mut raft = Raft::new(id, group, config, store, 0, seed, now).unwrap();
    if campaign {
        raft.campaign();
    }
    let machine = CommandLog::default();
    node.driver.add_group(raft, machine.clone()).await?;
    Ok(machine)
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
        nodes.push(start_node(id, &peers, &config).await);
    }
    for g in 1..=GROUPS {
        for (i, node) in nodes.iter_mut().enumerate() {
            let group = GroupId::new(g);
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
            node.driver.add_group(raft, machine).await.unwrap();
        }
    }

    for g in 1..=GROUPS {
        let group = GroupId::new(g);
        let leader = wait_for("a leader", async || {
            for (i, node) in nodes.iter().enumerate() {
                if node
                    .driver
                    .status(group)
                    .await
                    .is_ok_and(|s| s.role == Role::Leader)
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
        let state = machine.state();
        assert!(state.applied >= index);
        assert_eq!(state.commands.len(), PROPOSALS, "group {g} on a follower");
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
    let client = RpcClient::new(NodeId::new(1), None, TransportConfig::local()).unwrap();
    let driver: RaftDriver<CommandLog> = RaftDriver::start(
        NodeId::new(1),
        Arc::new(client),
        Peers::default(),
        inbox,
        config,
    );
    let err = driver
        .propose(GroupId::new(5), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not hosted"), "{err}");
    assert!(driver
        .read_index(GroupId::new(5), ReadMode::Safe)
        .await
        .is_err());
    assert!(matches!(
        driver.status(GroupId::new(5)).await,
        Err(DriverError::Host(HostError::UnknownGroup(g))) if g == GroupId::new(5)
    ));
    driver.shutdown().await;
    assert!(matches!(
        driver.propose(GroupId::new(5), Bytes::new()).await,
        Err(DriverError::Stopped)
    ));
    // A stopped driver is told apart from a group that is not hosted.
    assert!(matches!(
        driver.status(GroupId::new(5)).await,
        Err(DriverError::Stopped)
    ));
}

/// One round's appends to a follower may add up to `max_inflight_bytes` (32 MiB by
/// default), twice what a transport frame takes (16 MiB): the driver splits them into RPCs
/// of at most `max_rpc_bytes`. Here the leader cannot reach its followers while 24 MiB of
/// proposals are appended; once it can, one heartbeat answer makes it send them the whole
/// backlog in one round. Without the split that round's RPC was refused whole every time and
/// only the one-entry probe after each heartbeat got through, so catching up took a
/// heartbeat (1 s here) per entry: the time bound below tells the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_of_appends_larger_than_a_transport_frame_reaches_the_followers() {
    const PROPOSALS: usize = 24;
    const SIZE: usize = 1 << 20;
    let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    let config = DriverConfig::default();
    // Each node has its own address book, so the leader's alone can be emptied.
    let mut nodes = Vec::new();
    let mut books: Vec<Peers> = Vec::new();
    for &id in &ids {
        let book = Peers::default();
        nodes.push(start_node(id, &book, &config).await);
        books.push(book);
    }
    let addrs: Vec<(NodeId, SocketAddr)> = ids
        .iter()
        .zip(&nodes)
        .map(|(&id, node)| (id, node.server.local_addr()))
        .collect();
    for book in &books {
        book.write().unwrap().extend(addrs.iter().copied());
    }
    // Slow heartbeats, and an election timeout the cut below stays well inside.
    let raft_config = RaftConfig {
        heartbeat_interval: Duration::from_secs(1),
        election_timeout: Duration::from_secs(10),
        ..RaftConfig::default()
    };
    let group = GroupId::new(1);
    let mut machines = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let machine = host(node, ids[i], &ids, group, raft_config.clone(), i == 0)
            .await
            .unwrap();
        machines.push(machine);
    }
    let caught_up = |s: &Status| {
        s.role == Role::Leader
            && s.replicas.len() == 2
            && s.replicas.iter().all(|r| r.match_index == s.last_index)
    };
    let start = wait_for("n1 to lead and the others to hold its log", async || {
        nodes[0]
            .driver
            .status(group)
            .await
            .ok()
            .filter(|s| caught_up(s))
    })
    .await
    .last_index;

    // Cut n1 off from the others (they can still reach it) and propose 24 MiB.
    books[0].write().unwrap().retain(|&id, _| id == ids[0]);
    let proposals: Vec<_> = (0..PROPOSALS)
        .map(|p| {
            let driver = nodes[0].driver.clone();
            tokio::spawn(async move { driver.propose(group, vec![p as u8; SIZE].into()).await })
        })
        .collect();
    wait_for("n1 to append every proposal", async || {
        let status = nodes[0].driver.status(group).await.ok()?;
        (status.last_index >= start + PROPOSALS as u64).then_some(())
    })
    .await;

    let reconnected = Instant::now();
    books[0].write().unwrap().extend(addrs.iter().copied());
    for (p, handle) in proposals.into_iter().enumerate() {
        if let Err(e) = handle.await.unwrap() {
            panic!("proposal {p}: {e}");
        }
    }
    for (i, machine) in machines.iter().enumerate() {
        wait_for("every proposal applied everywhere", async || {
            (machine.commands().len() >= PROPOSALS).then_some(())
        })
        .await;
        // Every proposal once, whole (they were proposed concurrently, in any order).
        let commands = machine.commands();
        assert!(
            commands
                .iter()
                .all(|c| c.len() == SIZE && c.iter().all(|&b| b == c[0])),
            "n{}",
            i + 1
        );
        let mut which: Vec<u8> = commands.iter().map(|c| c[0]).collect();
        which.sort_unstable();
        assert_eq!(
            which,
            (0..PROPOSALS as u8).collect::<Vec<_>>(),
            "n{}",
            i + 1
        );
    }
    let took = reconnected.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "catching up took {took:?}: only one entry per heartbeat got through"
    );
    for node in nodes {
        node.driver.shutdown().await;
        node.server.shutdown().await;
    }
}

/// A log-store error in one group stops that group, not the node: here the WAL drops group
/// 1 under the driver, so the group's next write fails. Its proposal in flight is answered
/// "outcome unknown", its later requests, reads and status report the failure, nothing of it comes back into the WAL, group 2 carries on, and group
/// 1 can be added again over a fresh store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_store_error_stops_only_its_group() {
    let id = NodeId::new(1);
    let (g1, g2) = (GroupId::new(1), GroupId::new(2));
    let node = start_node(id, &Peers::default(), &DriverConfig::default()).await;
    let first = host(&node, id, &[id], g1, raft_config(), true)
        .await
        .unwrap();
    let second = host(&node, id, &[id], g2, raft_config(), true)
        .await
        .unwrap();
    for group in [g1, g2] {
        node.driver.propose(group, "before".into()).await.unwrap();
    }

    node.wal.remove_group(g1).unwrap();
    // The proposal in flight when the group failed may have reached followers (here there
    // are none, but the driver cannot know they did not commit it): its outcome is unknown.
    let error = node.driver.propose(g1, "lost".into()).await.unwrap_err();
    assert!(
        matches!(error, DriverError::Host(HostError::Indeterminate)),
        "{error}"
    );
    let status = node.driver.status(g1).await.unwrap_err();
    assert!(
        matches!(&status, DriverError::Host(HostError::GroupFailed { group, .. }) if *group == g1),
        "{status}"
    );
    assert!(
        status.to_string().contains("removed from the WAL"),
        "{status}"
    );
    assert!(matches!(
        node.driver.read_index(g1, ReadMode::Safe).await,
        Err(DriverError::Host(HostError::GroupFailed { .. }))
    ));
    assert!(matches!(
        node.driver.propose(g1, "refused".into()).await,
        Err(DriverError::Host(HostError::GroupFailed { .. }))
    ));
    assert_eq!(first.commands(), vec![Bytes::from("before")]);
    assert_eq!(
        node.wal.groups(),
        vec![g2],
        "the failed group did not come back"
    );

    // The other group never noticed.
    node.driver.propose(g2, "after".into()).await.unwrap();
    assert_eq!(node.driver.status(g2).await.unwrap().role, Role::Leader);
    assert_eq!(
        second.commands(),
        vec![Bytes::from("before"), Bytes::from("after")]
    );

    // Added again over a fresh store, group 1 works.
    let again = host(&node, id, &[id], g1, raft_config(), true)
        .await
        .unwrap();
    node.driver.propose(g1, "again".into()).await.unwrap();
    assert_eq!(again.commands(), vec![Bytes::from("again")]);
    assert_eq!(node.driver.status(g1).await.unwrap().role, Role::Leader);

    // A group whose messages could outgrow one RPC is refused up front.
    let oversized = RaftConfig {
        max_append_bytes: 16 << 20,
        ..raft_config()
    };
    let refused = host(&node, id, &[id], GroupId::new(3), oversized, true).await;
    assert!(
        matches!(refused, Err(DriverError::MessagesTooLarge { .. })),
        "{:?}",
        refused.err()
    );
    node.driver.shutdown().await;
    node.server.shutdown().await;
}

/// The driver never batches more per RPC than its transport's frames carry: over a transport
/// of 2 MiB frames it takes three quarters of that as its limit, whatever its own config says,
/// and refuses a group whose messages could be larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpc_limit_follows_the_transports_frame_limit() {
    let id = NodeId::new(1);
    let transport = TransportConfig {
        max_frame_bytes: 2 << 20,
        ..TransportConfig::local()
    };
    let node = start_node_over(id, &Peers::default(), &DriverConfig::default(), transport).await;
    let fits = RaftConfig {
        max_append_bytes: 1 << 20,
        max_proposal_bytes: 1 << 20,
        ..raft_config()
    };
    host(&node, id, &[id], GroupId::new(1), fits, true)
        .await
        .unwrap();
    let too_big = RaftConfig {
        max_append_bytes: 2 << 20,
        max_proposal_bytes: 1 << 20,
        ..raft_config()
    };
    match host(&node, id, &[id], GroupId::new(2), too_big, true).await {
        Err(DriverError::MessagesTooLarge { max, .. }) => assert_eq!(max, (2 << 20) / 4 * 3),
        other => panic!("{:?}", other.err()),
    }
    node.driver.shutdown().await;
    node.server.shutdown().await;
}

/// A follower cut off while the leader compacts its log catches up by a snapshot streamed
/// over TCP beside Raft traffic, in many chunks (the test state machine's are 256 bytes).
/// The leader is known through the lock-free lookup and the change notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_by_a_snapshot_streamed_over_tcp() {
    let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    let peers = Peers::default();
    let config = DriverConfig::default();
    let mut nodes = Vec::new();
    for &id in &ids {
        nodes.push(start_node(id, &peers, &config).await);
    }
    let group = GroupId::new(1);
    let compacting = RaftConfig {
        snapshot_after_entries: 20,
        compaction_trailing_entries: 2,
        ..raft_config()
    };
    let mut changes = nodes[0].driver.subscribe_leaders();
    let mut machines = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        machines.push(
            host(node, ids[i], &ids, group, compacting.clone(), i == 0)
                .await
                .unwrap(),
        );
    }
    wait_for("n1 to lead", async || {
        (nodes[0].driver.leader(group)?.id == Some(ids[0])).then_some(())
    })
    .await;
    // The notifications told the same: a term without a leader (the campaign), then n1.
    let mut seen = Vec::new();
    while let Ok(change) = changes.try_recv() {
        seen.push((change.group, change.leader.id));
    }
    assert_eq!(seen.last(), Some(&(group, Some(ids[0]))), "{seen:?}");

    // Nobody can reach n3 while the leader commits and compacts.
    let n3 = peers.write().unwrap().remove(&ids[2]).unwrap();
    for p in 0..100u64 {
        let mut data = vec![b'x'; 200];
        data[..8].copy_from_slice(&p.to_le_bytes());
        nodes[0].driver.propose(group, data.into()).await.unwrap();
    }
    wait_for("the leader to compact", async || {
        let status = nodes[0].driver.status(group).await.ok()?;
        (status.snapshot_index >= 80).then_some(())
    })
    .await;
    assert!(machines[2].commands().is_empty());

    peers.write().unwrap().insert(ids[2], n3);
    wait_for("n3 to catch up", async || {
        (machines[2].commands().len() == 100).then_some(())
    })
    .await;
    assert_eq!(machines[2].commands(), machines[0].commands());
    let status = nodes[2].driver.status(group).await.unwrap();
    assert!(status.snapshot_index >= 80, "n3 installed a snapshot");
    assert_eq!(
        nodes[2]
            .driver
            .inbox_stats()
            .refused_chunks
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    for node in nodes {
        node.driver.shutdown().await;
        node.server.shutdown().await;
    }
}

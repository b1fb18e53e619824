//! The tokio driver over real UDP and TCP sockets on 127.0.0.1.

use shoal_core::NodeId;
use shoal_membership::driver::{MembershipNode, NodeOptions};
use shoal_membership::{Keyring, MemberEventKind, MemberState, MembershipConfig};
use std::time::Duration;

/// Generous: these run on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

async fn start(id: u64, config: MembershipConfig) -> MembershipNode {
    let options = NodeOptions::new(NodeId::new(id), "127.0.0.1:0".parse().unwrap(), config);
    MembershipNode::start(options).await.unwrap()
}

/// Polls until `check` holds for what `node` knows, or the deadline passes.
async fn wait_for(
    node: &MembershipNode,
    what: &str,
    check: impl Fn(&[shoal_membership::Member]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let members = node.members().await.unwrap();
        if check(&members) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never saw {what}: {members:?}",
            node.id()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_of(members: &[shoal_membership::Member], id: u64) -> Option<MemberState> {
    members
        .iter()
        .find(|m| m.id == NodeId::new(id))
        .map(|m| m.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_see_a_killed_node_dead_and_a_leaving_node_left() {
    let config = MembershipConfig::local();
    let mut nodes = Vec::new();
    for id in 1..=5 {
        nodes.push(start(id, config.clone()).await);
    }
    let seed = nodes[0].addr();
    let mut events = nodes[0].subscribe();
    for node in &nodes[1..] {
        assert_eq!(node.join(vec![seed]).await.unwrap(), 1);
    }
    for node in &nodes {
        wait_for(node, "all five alive", |m| {
            (1..=5).all(|id| state_of(m, id) == Some(MemberState::Alive))
        })
        .await;
    }

    // Kill node 5 without a word: the others must declare it dead.
    nodes[4].shutdown().await;
    for node in &nodes[..4] {
        wait_for(node, "n5 dead", |m| {
            state_of(m, 5) == Some(MemberState::Dead)
        })
        .await;
    }
    // Node 4 leaves: the others drop it as left, not dead.
    nodes[3].leave().await;
    for node in &nodes[..3] {
        wait_for(node, "n4 left", |m| {
            state_of(m, 4) == Some(MemberState::Left)
        })
        .await;
    }

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push((event.kind, event.id.get()));
    }
    for expected in [
        (MemberEventKind::Joined, 2),
        (MemberEventKind::Dead, 5),
        (MemberEventKind::Left, 4),
    ] {
        assert!(seen.contains(&expected), "missing {expected:?} in {seen:?}");
    }
    for node in &nodes[..3] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_cluster_refuses_a_node_with_the_wrong_key() {
    let mut config = MembershipConfig::local();
    config.keyring = Some(Keyring::new([7; 32]));
    config.join_max_attempts = 2;
    config.join_initial_backoff = Duration::from_millis(100);
    let a = start(1, config.clone()).await;
    let b = start(2, config.clone()).await;
    assert_eq!(b.join(vec![a.addr()]).await.unwrap(), 1);
    wait_for(&a, "n2 alive", |m| {
        state_of(m, 2) == Some(MemberState::Alive)
    })
    .await;

    let mut wrong = config.clone();
    wrong.keyring = Some(Keyring::new([8; 32]));
    let c = start(3, wrong).await;
    assert!(
        c.join(vec![a.addr()]).await.is_err(),
        "a wrong key must not join"
    );
    let (stats, _) = a.stats().await.unwrap();
    assert!(stats.packets_decrypt_failed > 0, "{stats:?}");
    assert_eq!(state_of(&a.members().await.unwrap(), 3), None);

    // Rotation: b and a both learn a new key and switch to it; they keep talking.
    for node in [&a, &b] {
        node.change_keyring(|ring| {
            ring.add([9; 32]);
            ring.use_key([9; 32])
        })
        .await
        .unwrap();
    }
    b.set_meta(b"rotated".to_vec()).await.unwrap();
    wait_for(&a, "n2's new metadata", |m| {
        m.iter()
            .any(|m| m.id == NodeId::new(2) && m.meta == b"rotated")
    })
    .await;
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// Regression: a join replaced by a newer one answered its caller with `Stopped`, as if the
/// driver had gone. It is told the truth: another join took its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_replaced_by_a_newer_one_says_so() {
    let config = MembershipConfig::local();
    let (a, b) = (start(1, config.clone()).await, start(2, config).await);
    // Nothing listens here: the first join keeps retrying until it is replaced.
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (first, second) = tokio::join!(a.join(vec![nowhere]), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.join(vec![b.addr()]).await
    });
    assert!(
        matches!(
            first,
            Err(shoal_membership::driver::DriverError::Swim(
                shoal_membership::SwimError::JoinSuperseded
            ))
        ),
        "{first:?}"
    );
    assert_eq!(second.unwrap(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

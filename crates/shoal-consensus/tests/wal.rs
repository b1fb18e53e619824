//! Raft over the durable WAL: a group's replicas share nothing but each keeps its log in a
//! WAL; after every replica is dropped and reopened from disk, the group carries on with its
//! terms, votes and committed entries intact.

use shoal_consensus::{
    EntryPayload, LogStore, Membership, Message, Raft, RaftConfig, Wal, WalConfig, WalStore,
};
use shoal_core::{GroupId, Instant, NodeId};
use std::path::Path;
use std::time::Duration;

const GROUP: GroupId = GroupId::new(9);

fn open(dir: &Path, id: NodeId, now: Instant) -> Raft<WalStore> {
    let (wal, recovery) = Wal::open(dir, WalConfig::default()).unwrap();
    assert_eq!(recovery.torn, None);
    Raft::new(
        id,
        GROUP,
        RaftConfig::default(),
        wal.store(GROUP),
        0,
        id.get(),
        now,
    )
    .unwrap()
}

/// Runs the replicas for `rounds` steps of 10 ms, persisting and syncing every ready;
/// returns the commands each applied.
fn run(
    nodes: &mut [Raft<WalStore>],
    now: &mut Instant,
    rounds: usize,
    propose: &[&str],
) -> Vec<Vec<String>> {
    let mut applied = vec![Vec::new(); nodes.len()];
    let mut pending: Vec<&str> = propose.to_vec();
    for _ in 0..rounds {
        *now += Duration::from_millis(10);
        let mut inbox: Vec<Message> = Vec::new();
        for (i, node) in nodes.iter_mut().enumerate() {
            node.tick(*now);
            if node.is_leader() {
                for cmd in pending.drain(..) {
                    node.propose(cmd.as_bytes().to_vec().into()).unwrap();
                }
            }
            let ready = node.ready();
            inbox.extend(ready.messages.iter().cloned());
            ready.write_to(node.store_mut()).unwrap();
            node.store_mut().sync().unwrap();
            node.on_persisted(ready.persisted);
            inbox.extend(ready.persisted_messages);
            applied[i].extend(ready.committed.iter().filter_map(|e| match &e.payload {
                EntryPayload::Command(d) => Some(String::from_utf8_lossy(d).into_owned()),
                _ => None,
            }));
        }
        for m in inbox {
            let to = nodes.iter().position(|n| n.id() == m.to).unwrap();
            nodes[to].step(*now, m);
        }
    }
    applied
}

#[test]
fn a_group_over_the_wal_keeps_its_log_terms_and_votes_across_a_full_restart() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    let mut now = Instant::ZERO;
    for (dir, _) in dirs.iter().zip(&ids) {
        let (wal, _) = Wal::open(dir.path(), WalConfig::default()).unwrap();
        let mut store = wal.store(GROUP);
        Raft::bootstrap(&mut store, Membership::new(ids.clone())).unwrap();
        store.sync().unwrap();
    }
    let mut nodes: Vec<_> = dirs
        .iter()
        .zip(&ids)
        .map(|(d, &id)| open(d.path(), id, now))
        .collect();
    let applied = run(&mut nodes, &mut now, 300, &["a", "b", "c"]);
    assert!(applied.iter().all(|a| a == &["a", "b", "c"]), "{applied:?}");
    let before: Vec<_> = nodes
        .iter()
        .map(|n| (n.term(), n.last_index(), n.store().hard_state()))
        .collect();

    drop(nodes);
    let mut nodes: Vec<_> = dirs
        .iter()
        .zip(&ids)
        .map(|(d, &id)| open(d.path(), id, now))
        .collect();
    let after: Vec<_> = nodes
        .iter()
        .map(|n| (n.term(), n.last_index(), n.store().hard_state()))
        .collect();
    assert_eq!(before, after, "term, log and hard state survive");

    // The restarted group re-applies its log from the start (applied was 0) and goes on.
    let applied = run(&mut nodes, &mut now, 300, &["d"]);
    assert!(
        applied.iter().all(|a| a == &["a", "b", "c", "d"]),
        "{applied:?}"
    );
}

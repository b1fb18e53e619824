//! Three Raft replicas driven by a hand-written loop in virtual time: elect a leader, replicate
//! commands, stop the leader and elect another, and let the old one catch up when it returns.
//!
//! Run it with `cargo run -p shoal-consensus --example raft_in_memory`.

use shoal_consensus::{EntryPayload, MemLogStore, Membership, Raft, RaftConfig};
use shoal_core::{GroupId, Instant, NodeId};
use std::error::Error;
use std::time::Duration;

/// Replicas n1 to n3 of one group and the commands each applied; messages arrive at once.
#[derive(Default)]
struct Cluster {
    nodes: Vec<Raft<MemLogStore>>,
    applied: [Vec<String>; 3],
    down: Option<NodeId>,
    now: Instant,
}

impl Cluster {
    /// Runs the driver loop until `done` holds, for at most a minute of virtual time.
    fn run_until(&mut self, done: impl Fn(&Cluster) -> bool) -> Result<(), Box<dyn Error>> {
        while !done(self) {
            if self.now > Instant::from_millis(60_000) {
                return Err(format!("still waiting at {:?}", self.now).into());
            }
            self.now += Duration::from_millis(10);
            let mut inbox = Vec::new();
            for (node, applied) in self.nodes.iter_mut().zip(&mut self.applied) {
                if self.down == Some(node.id()) {
                    continue; // a replica that is down neither ticks nor sends
                }
                node.tick(self.now);
                let ready = node.ready();
                ready.write_to(node.store_mut())?; // persist before anything acknowledges it
                node.on_persisted(ready.persisted);
                inbox.extend(ready.messages.into_iter().chain(ready.persisted_messages));
                for entry in ready.committed {
                    if let EntryPayload::Command(data) = entry.payload {
                        applied.push(String::from_utf8_lossy(&data).into_owned());
                    }
                }
            }
            for message in inbox.into_iter().filter(|m| self.down != Some(m.to)) {
                let to = message.to.get() as usize - 1;
                self.nodes[to].step(self.now, message);
            }
        }
        Ok(())
    }

    fn leader(&self) -> Option<usize> {
        let up = |n: &Raft<MemLogStore>| self.down != Some(n.id());
        self.nodes.iter().position(|n| n.is_leader() && up(n))
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let ids: Vec<NodeId> = (1..=3).map(NodeId::new).collect();
    let (group, cfg, zero) = (GroupId::new(1), RaftConfig::default(), Instant::ZERO);
    let mut c = Cluster::default();
    for &id in &ids {
        let mut store = MemLogStore::new();
        Raft::bootstrap(&mut store, Membership::new(ids.clone()))?;
        let node = Raft::new(id, group, cfg.clone(), store, 0, id.get(), zero)?;
        c.nodes.push(node);
    }
    c.run_until(|c| c.leader().is_some())?;
    let l = c.leader().ok_or("no leader")?;
    let (id, term, now) = (ids[l], c.nodes[l].term(), c.now);
    println!("1. {id} is elected leader for term {term} at {now:?}");
    c.nodes[l].propose("x=1".into())?;
    let (index, term) = c.nodes[l].propose("y=2".into())?;
    println!("2. {id} appends x=1, then y=2 at index {index} in term {term}");
    c.run_until(|c| c.applied.iter().all(|a| a.len() == 2))?;
    println!("   every replica has applied {:?}", c.applied[0]);

    c.down = Some(id);
    c.run_until(|c| c.leader().is_some())?;
    let l = c.leader().ok_or("no leader")?;
    let (new, term, now) = (ids[l], c.nodes[l].term(), c.now);
    println!("3. {id} stops; {new} is elected for term {term} at {now:?}");
    c.nodes[l].propose("x=3".into())?;
    c.down = None;
    c.run_until(|c| c.applied.iter().all(|a| a.len() == 3))?;
    let (log, now) = (&c.applied[id.get() as usize - 1], c.now);
    println!("4. {id} returns and has applied {log:?} too at {now:?}");
    assert!(c.applied.iter().all(|a| a == &c.applied[0]));
    Ok(())
}

//! Two in-memory replicas drift apart; a tree comparison and a read-only check find where, and
//! a sync session reconciles them, sending only what differs, each message in its wire form.
//!
//! Run it with `cargo run -p shoal-merkle --example sync_two_replicas`.

use shoal_core::{HlcTimestamp, NodeId};
use shoal_merkle::{
    diverging_keys, ConflictRule, Item, MemStore, MerkleTree, Responder, Step, SyncConfig,
    SyncOutcome, SyncRequest, SyncResponse, SyncSession, SyncStore, TreeShape,
};
use std::error::Error;

fn stamp(physical_ms: u64, node: u64) -> HlcTimestamp {
    let node = NodeId::new(node);
    HlcTimestamp {
        physical_ms,
        logical: 0,
        node,
    }
}

/// Runs `session` on `local` against `peer` on `remote`; returns the outcome and bytes sent.
fn run(
    session: &mut SyncSession,
    local: &mut MemStore,
    peer: &mut Responder,
    remote: &mut MemStore,
) -> Result<(SyncOutcome, usize), Box<dyn Error>> {
    let mut bytes = 0;
    loop {
        match session.poll(local) {
            Step::Send(request) => {
                let asked = request.encode()?;
                let answer = peer.respond(remote, SyncRequest::decode(&asked)?);
                let answer = answer.encode()?;
                bytes += asked.len() + answer.len();
                session.handle_response(local, SyncResponse::decode(&answer)?)?;
            }
            Step::Done(outcome) => return Ok((outcome, bytes)),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn main() -> Result<(), Box<dyn Error>> {
    let tree = || MerkleTree::new(TreeShape::for_keys(5_000));
    let mut a = MemStore::new(ConflictRule::LastWriterWins, tree());
    let mut b = MemStore::new(ConflictRule::LastWriterWins, tree());
    for i in 0..5_000 {
        let item = Item::new(format!("user/{i:04}"), format!("v1 of {i}"), stamp(1, 1));
        a.put(item.clone());
        b.put(item);
    }
    println!("1. both replicas hold the same {} items", a.len());

    for i in 0..3 {
        a.put(Item::new(format!("user/{i:04}"), "new on a", stamp(2, 1)));
        b.put(Item::new(format!("new/{i}"), "only on b", stamp(2, 2)));
    }
    a.put(Item::new("user/4999", "a's write", stamp(3, 1)));
    b.put(Item::new("user/4999", "b's later write", stamp(4, 2)));
    let differing = diverging_keys(a.tree_mut(), b.tree_mut())?;
    let keys: Vec<String> = differing.iter().map(|d| text(&d.key)).collect();
    println!("2. comparing the two trees locally, these keys differ: {keys:?}");

    let mut check = SyncSession::check(SyncConfig::default(), 100);
    let mut reader = Responder::read_only(NodeId::new(2), SyncConfig::default());
    let (outcome, bytes) = run(&mut check, &mut a, &mut reader, &mut b)?;
    let (found, trips) = (outcome.differing.len(), check.stats().round_trips);
    println!("3. a read-only check over the wire finds {found} in {trips} round trips, {bytes} B");

    let mut session = SyncSession::new(SyncConfig::default());
    let mut peer = Responder::new(NodeId::new(2), SyncConfig::default());
    let (outcome, bytes) = run(&mut session, &mut a, &mut peer, &mut b)?;
    let (converged, stats) = (outcome.converged, session.stats());
    let (trips, taken, pushed) = (stats.round_trips, stats.items_taken, stats.items_pushed);
    println!("4. sync converged: {converged} in {trips} round trips and {bytes} B");
    println!("   a took {taken} items from b and pushed {pushed} to it");
    for key in ["user/0000", "new/0", "user/4999"] {
        let (in_a, in_b) = (a.get(key.as_bytes()), b.get(key.as_bytes()));
        let (in_a, in_b) = (in_a.map(|i| text(&i.value)), in_b.map(|i| text(&i.value)));
        println!("   {key}: a has {in_a:?}, b has {in_b:?}");
    }
    let same = a.tree_mut().root() == b.tree_mut().root();
    println!("5. equal roots again: {same}");
    Ok(())
}

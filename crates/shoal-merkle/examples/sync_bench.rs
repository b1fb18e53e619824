//! Sync benchmark: two replicas of `--keys` items that differ in `--diff` keys reconcile,
//! once with a shoal-merkle session and once with the `merkle-search-tree` crate's page-range
//! protocol, on the same data in the same run.
//!
//! `cargo run --release -p shoal-merkle --example sync_bench -- --keys 1000000 --diff 1000 --json`
//!
//! Keys are 16 bytes, values 32 bytes, merged last-writer-wins. Of the differing keys a
//! third exist only on A, a third only on B, and a third on both with different values (the
//! newer one on either side). Both protocols run in-process; every message of the
//! shoal-merkle session goes through the wire codec, and `bytes_exchanged` is the sum of the
//! encoded requests and answers. For the search tree, the bytes counted are what its
//! protocol puts on the wire: each round, both directions, the sender's page ranges (two
//! keys and a 16-byte hash each), the receiver's wanted ranges (two keys each) and the items
//! in them (encoded as for the session). `lower_bound_bytes` is `diff × (16 + 32)`: each
//! differing key and one 32-byte digest. `MST_DEBUG=1` prints, per search-tree pull, the pages
//! sent, the ranges wanted and the items they cover. The last line of output is one JSON object.

use merkle_search_tree::diff::{diff, PageRange, PageRangeSnapshot};
use merkle_search_tree::MerkleSearchTree;
use shoal_core::{HlcTimestamp, NodeId, Rng};
use shoal_merkle::*;
use std::collections::BTreeMap;
use std::time::Instant;

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 32;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

fn item(i: u64, version: u64, node: u64) -> Item {
    let mut value = [0u8; VALUE_LEN];
    let mut h = blake3::Hasher::new();
    h.update(&i.to_be_bytes());
    h.update(&version.to_be_bytes());
    value.copy_from_slice(&h.finalize().as_bytes()[..VALUE_LEN]);
    let stamp = HlcTimestamp {
        physical_ms: 1_700_000_000_000 + version,
        logical: 0,
        node: NodeId::new(node),
    };
    Item::new(key(i), value.to_vec(), stamp)
}

/// The two replicas' items: common ones, and the differences.
fn data(keys: u64, diff: u64, seed: u64) -> (Vec<Item>, Vec<Item>) {
    let mut rng = shoal_core::DetRng::from_seed(seed);
    let mut kind = vec![0u8; keys as usize];
    let mut chosen = 0;
    while chosen < diff {
        let i = rng.below(keys) as usize;
        if kind[i] == 0 {
            kind[i] = 1 + (chosen % 3) as u8;
            chosen += 1;
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..keys {
        match kind[i as usize] {
            0 => {
                a.push(item(i, 1, 1));
                b.push(item(i, 1, 1));
            }
            1 => a.push(item(i, 1, 1)),
            2 => b.push(item(i, 1, 2)),
            _ => {
                let (va, vb) = if rng.chance(0.5) { (2, 3) } else { (3, 2) };
                a.push(item(i, va, 1));
                b.push(item(i, vb, 2));
            }
        }
    }
    (a, b)
}

fn wire_len<T: serde::Serialize>(value: &T) -> usize {
    shoal_core::codec::encode(value).expect("encode").len()
}

struct ShoalRun {
    bytes: usize,
    round_trips: u64,
    sync_ms: f64,
    passes: u8,
}

fn shoal_sync(a: &mut MemStore, b: &mut MemStore) -> ShoalRun {
    let config = SyncConfig::default();
    let mut session = SyncSession::new(config.clone());
    let mut responder = Responder::new(NodeId::new(2), config);
    let mut bytes = 0;
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let start = Instant::now();
    let outcome = loop {
        match session.poll(a) {
            Step::Send(request) => {
                let wire = request.encode().expect("encode");
                bytes += wire.len();
                let kind = format!("{request:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string();
                let request = SyncRequest::decode(&wire).expect("decode");
                let response = responder.respond(b, request).encode().expect("encode");
                bytes += response.len();
                *by_kind.entry(kind).or_insert(0) += wire.len() + response.len();
                let response = SyncResponse::decode(&response).expect("decode");
                session.handle_response(a, response).expect("well-formed");
            }
            Step::Done(outcome) => break outcome,
        }
    };
    let sync_ms = start.elapsed().as_secs_f64() * 1e3;
    assert!(outcome.converged, "shoal-merkle session did not converge");
    if !std::env::args().any(|a| a == "--json") {
        println!("shoal-merkle bytes by request kind: {by_kind:?}");
    }
    ShoalRun {
        bytes,
        round_trips: session.stats().round_trips,
        sync_ms,
        passes: outcome.passes,
    }
}

/// A replica for the search-tree protocol: items in key order and the tree over them.
struct MstReplica {
    items: BTreeMap<Vec<u8>, Item>,
    tree: MerkleSearchTree<Vec<u8>, [u8; 32]>,
}

impl MstReplica {
    fn new(items: &[Item]) -> MstReplica {
        let mut r = MstReplica {
            items: BTreeMap::new(),
            tree: MerkleSearchTree::default(),
        };
        for item in items {
            r.offer(item.clone());
        }
        r.tree.root_hash();
        r
    }

    fn offer(&mut self, item: Item) {
        let rule = ConflictRule::LastWriterWins;
        if rule.wins(&item, self.items.get(&item.key)) {
            self.tree
                .upsert(item.key.clone(), &rule.leaf_digest(&item).0);
            self.items.insert(item.key.clone(), item);
        }
    }
}

/// One direction of one search-tree round: `to` pulls what differs from `from`.
fn mst_pull(from: &mut MstReplica, to: &mut MstReplica) -> usize {
    from.tree.root_hash();
    to.tree.root_hash();
    let page_len = |p: &PageRange<'_, Vec<u8>>| p.start().len() + p.end().len() + 2 + 16;
    let from_pages = PageRangeSnapshot::from(from.tree.serialise_page_ranges().expect("hashed"));
    let to_pages = PageRangeSnapshot::from(to.tree.serialise_page_ranges().expect("hashed"));
    let mut bytes: usize = from_pages.iter().map(|p| page_len(&p)).sum();
    let wanted: Vec<(Vec<u8>, Vec<u8>)> = diff(to_pages.iter(), from_pages.iter())
        .into_iter()
        .map(|r| (r.start().clone(), r.end().clone()))
        .collect();
    let mut incoming = Vec::new();
    for (start, end) in &wanted {
        bytes += start.len() + end.len() + 2;
        for item in from
            .items
            .range(start.clone()..=end.clone())
            .map(|(_, i)| i)
        {
            bytes += wire_len(item);
            incoming.push(item.clone());
        }
    }
    if std::env::var_os("MST_DEBUG").is_some() {
        eprintln!(
            "mst pull: {} pages ({} bytes), {} wanted ranges, {} items",
            from_pages.iter().len(),
            from_pages.iter().map(|p| page_len(&p)).sum::<usize>(),
            wanted.len(),
            incoming.len()
        );
    }
    for item in incoming {
        to.offer(item);
    }
    bytes
}

fn main() {
    let keys = arg("--keys", 1_000_000);
    let diff_keys = arg("--diff", 1000).min(keys);
    let seed = arg("--seed", 1);
    let json = std::env::args().any(|a| a == "--json");
    let (items_a, items_b) = data(keys, diff_keys, seed);
    let shape = TreeShape::for_keys(keys);

    // Tree build from leaf digests, and one-key updates with the root recomputed each time.
    let rule = ConflictRule::LastWriterWins;
    let leaves: Vec<(Vec<u8>, Digest)> = items_a
        .iter()
        .map(|i| (i.key.clone(), rule.leaf_digest(i)))
        .collect();
    let start = Instant::now();
    let mut tree = MerkleTree::new(shape);
    for (k, d) in &leaves {
        tree.insert(k, *d).expect("in range");
    }
    tree.root();
    let build_ms = start.elapsed().as_secs_f64() * 1e3;
    let updates = 100_000.min(leaves.len());
    let start = Instant::now();
    for (n, (k, _)) in leaves.iter().take(updates).enumerate() {
        tree.insert(k, Digest::of_version(k, n as u64))
            .expect("in range");
        std::hint::black_box(tree.root());
    }
    let update_ns = start.elapsed().as_nanos() as f64 / updates as f64;
    drop(tree);
    drop(leaves);

    let fill = |items: &[Item]| {
        let mut store = MemStore::new(rule, MerkleTree::new(shape));
        for item in items {
            store.put(item.clone());
        }
        store.tree_mut().root();
        store
    };
    let (mut a, mut b) = (fill(&items_a), fill(&items_b));
    let run = shoal_sync(&mut a, &mut b);
    assert_eq!(a.tree_mut().root(), b.tree_mut().root());
    assert_eq!(a.len() as u64, keys, "A holds the union");
    drop((a, b));

    let start = Instant::now();
    let mut ma = MstReplica::new(&items_a);
    let mut mb = MstReplica::new(&items_b);
    let mst_build_ms = start.elapsed().as_secs_f64() * 1e3 / 2.0;
    let start = Instant::now();
    let mut mst_bytes = 0;
    let mut mst_rounds = 0;
    while ma.tree.root_hash() != mb.tree.root_hash() && mst_rounds < 100 {
        mst_rounds += 1;
        mst_bytes += mst_pull(&mut mb, &mut ma);
        mst_bytes += mst_pull(&mut ma, &mut mb);
    }
    let mst_sync_ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(ma.items.len() as u64, keys, "the search tree converged too");

    let lower_bound = diff_keys as usize * (KEY_LEN + 32);
    let ratio = run.bytes as f64 / lower_bound.max(1) as f64;
    if !json {
        println!(
            "keys {keys}, diff {diff_keys}, shape fanout {} depth {}",
            shape.fanout(),
            shape.depth()
        );
        println!("shoal-merkle: {} bytes ({ratio:.2}x the lower bound), {} round trips, {} passes, {:.1} ms",
            run.bytes, run.round_trips, run.passes, run.sync_ms);
        println!("merkle-search-tree: {mst_bytes} bytes, {mst_rounds} rounds, {mst_sync_ms:.1} ms");
    }
    println!(
        "{{\"keys\":{keys},\"diff\":{diff_keys},\"bytes_exchanged\":{},\"lower_bound_bytes\":{lower_bound},\
\"bytes_ratio\":{ratio:.3},\"round_trips\":{},\"passes\":{},\"sync_ms\":{:.2},\"build_ms\":{build_ms:.1},\
\"update_ns\":{update_ns:.0},\"mst_bytes_exchanged\":{mst_bytes},\"mst_rounds\":{mst_rounds},\
\"mst_sync_ms\":{mst_sync_ms:.2},\"mst_build_ms\":{mst_build_ms:.1}}}",
        run.bytes, run.round_trips, run.passes, run.sync_ms
    );
}

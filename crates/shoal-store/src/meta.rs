//! The meta range: range 0, replicated by the founding voters, holding the authoritative
//! record of every range's descriptor, the range-id allocator and the node registry.
//!
//! # Key space
//!
//! Keys from `0xff` on are the system's, as in FoundationDB: user keys are below `0xff`
//! (the first user range spans `["", 0xff)`), and the meta range spans `[0xff, ∞)`. The
//! meta range is an ordinary range of the engine, so it is replicated, snapshotted and
//! compared like any other; only the store writes it, through [`MetaOp`]s its own Raft
//! group applies:
//!
//! - `0xff 'd' id generation` (big-endian): a range descriptor (leader hint cleared);
//! - `0xff 'n' id`: a node's [`NodeRecord`];
//! - `0xff 'a' "range-id"`: the next range id the allocator hands out;
//! - `0xff 's' id`: the store id a node is bound to (see `identity.rs`), `u64` big-endian;
//! - `0xff 'c' "cluster"`: the cluster's id, drawn by the first store bound.
//!
//! # Descriptors, guarded by generation
//!
//! The recorded descriptors form a [`DescriptorSet`], the same join-semilattice gossip
//! merges: recording a descriptor keeps it where it beats what is there (higher generation
//! first) and drops what it beats everywhere. A late or repeated record of an older
//! descriptor changes nothing, so leaders record their ranges' descriptors whenever they
//! change, in any order, with retries, and the meta range converges on the newest. A split
//! commits in its own range's group first; each half is then recorded by the node that leads
//! it (again until that succeeds), so for a moment the meta range may still hold the parent
//! for the right half's keys: a router sent there is answered `RangeKeyMismatch` with the
//! halves, as it would be with any stale descriptor.
//!
//! Only the cluster's nodes may send [`MetaOp`]s (see `service.rs`), and every op is checked
//! ([`check`]) before it is proposed and again as it applies. Applying reads nothing from the
//! node's configuration, so every replica reaches the same result.
//!
//! # Cost
//!
//! Recording and lookups read the whole descriptor set (about 100 bytes a range): fine for
//! thousands of ranges, which is what the store is built for today. Lookups are served only
//! to nodes whose gossip has not yet covered a key.

use super::command::Rejection;
use serde::{Deserialize, Serialize};
use shoal_core::{codec, KeyRange, NodeId, RangeDescriptor, RangeEnd, RangeId};
use shoal_ranges::DescriptorSet;
use shoal_storage::{Engine, Scan, StorageError, WriteBatch};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The meta range's id.
pub const META_RANGE: RangeId = RangeId::META;

/// The first byte of system keys: user keys are below it.
pub const SYSTEM_KEY_PREFIX: u8 = 0xff;

/// The first id the allocator hands out (0 is the meta range, 1 the first user range).
const FIRST_ALLOCATED_ID: u64 = 2;

/// The most descriptors one [`MetaOp::Record`] carries.
pub const MAX_RECORD: usize = 256;

/// The most ids one [`MetaOp::AllocateRangeIds`] hands out.
pub const MAX_ALLOCATE: u32 = 1024;

/// The longest zone name a node may register.
pub const MAX_ZONE_BYTES: usize = 128;

/// The longest descriptor bound the meta range records: the same on every node, whatever
/// each engine's key limit, so applying a record never depends on a node's configuration.
pub const MAX_BOUND_BYTES: usize = 64 << 10;

const DESCRIPTOR_PREFIX: &[u8] = b"\xffd";
const NODE_PREFIX: &[u8] = b"\xffn";
const NEXT_RANGE_ID: &[u8] = b"\xffarange-id";
const BINDING_PREFIX: &[u8] = b"\xffs";
const CLUSTER_ID: &[u8] = b"\xffccluster";

/// Entries read per page when the meta range is read whole.
const PAGE: usize = 1024;

/// The user key space: every key below `0xff`.
pub fn user_keys() -> KeyRange {
    KeyRange::new(Vec::new(), RangeEnd::Key(vec![SYSTEM_KEY_PREFIX])).expect("a non-empty span")
}

/// The meta range's span: every key from `0xff` on.
pub fn meta_keys() -> KeyRange {
    KeyRange::starting_at(vec![SYSTEM_KEY_PREFIX])
}

/// Whether `key` is in the system's part of the key space (from `0xff` on).
pub fn is_system_key(key: &[u8]) -> bool {
    key.first() == Some(&SYSTEM_KEY_PREFIX)
}

/// A node as it registers in the meta range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node.
    pub id: NodeId,
    /// Where it listens for node RPC, Raft and gossip.
    pub addr: SocketAddr,
    /// Its failure domain (a rack, a zone), if configured: placement spreads replicas across
    /// zones.
    pub zone: Option<String>,
}

/// A change to the meta range, applied by its Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaOp {
    /// Records descriptors (at most [`MAX_RECORD`]), each kept where it beats what is
    /// recorded (see the module docs).
    Record(Vec<RangeDescriptor>),
    /// Hands out `count` new range ids (1 to [`MAX_ALLOCATE`]), never handed out before.
    AllocateRangeIds {
        /// How many.
        count: u32,
    },
    /// Registers (or updates) a node.
    RegisterNode(NodeRecord),
    /// Binds `node` to the store `store` if it is bound to none yet, and sets the cluster's
    /// id to `cluster` if it has none yet; answers [`MetaAnswer::Bound`] with the cluster's
    /// id, or [`MetaAnswer::BoundElsewhere`] if the node is bound to another store.
    BindStore {
        /// The node.
        node: NodeId,
        /// Its store's id (never zero).
        store: u64,
        /// A cluster id to set if the cluster has none (never zero).
        cluster: u64,
    },
}

/// What a [`MetaOp`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaAnswer {
    /// Descriptors recorded: how many records were written or removed (0: nothing was
    /// newer).
    Recorded {
        /// Records written or removed.
        changed: u32,
    },
    /// Ids `first .. first + count` are this caller's.
    Allocated {
        /// The first id.
        first: RangeId,
    },
    /// The node is registered.
    Registered,
    /// The node is bound to the store asked for, in the cluster named.
    Bound {
        /// The cluster's id.
        cluster: u64,
    },
    /// The node is bound to another store: the one asking is not the node's.
    BoundElsewhere {
        /// The store the node is bound to.
        store: u64,
    },
}

fn descriptor_key(d: &RangeDescriptor) -> Vec<u8> {
    let mut key = Vec::with_capacity(DESCRIPTOR_PREFIX.len() + 16);
    key.extend_from_slice(DESCRIPTOR_PREFIX);
    key.extend_from_slice(&d.id.get().to_be_bytes());
    key.extend_from_slice(&d.generation.get().to_be_bytes());
    key
}

fn binding_key(id: NodeId) -> Vec<u8> {
    let mut key = BINDING_PREFIX.to_vec();
    key.extend_from_slice(&id.get().to_be_bytes());
    key
}

/// A `u64` stored big-endian under `key`, if any.
fn read_u64(engine: &Engine, range: RangeId, key: &[u8]) -> Result<Option<u64>, MetaReadError> {
    match engine.get(range, key)? {
        Some(v) => <[u8; 8]>::try_from(v.value.as_slice())
            .map(|b| Some(u64::from_be_bytes(b)))
            .map_err(|_| MetaReadError::Corrupt(format!("the value under {key:?}"))),
        None => Ok(None),
    }
}

/// Every node's store binding, in id order.
pub(crate) fn read_bindings(
    engine: &Engine,
    range: RangeId,
) -> Result<Vec<(NodeId, u64)>, MetaReadError> {
    read_prefix(engine, range, BINDING_PREFIX)?
        .into_iter()
        .map(|e| {
            let id = e.key[BINDING_PREFIX.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| MetaReadError::Corrupt("a binding's key".into()))?;
            let store = <[u8; 8]>::try_from(e.value.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| MetaReadError::Corrupt("a binding's store".into()))?;
            Ok((NodeId::new(id), store))
        })
        .collect()
}

fn node_key(id: NodeId) -> Vec<u8> {
    let mut key = NODE_PREFIX.to_vec();
    key.extend_from_slice(&id.get().to_be_bytes());
    key
}

/// The first key after every key starting with `prefix` (whose last byte is below 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Every entry under `prefix` in the meta range, page by page.
fn read_prefix(
    engine: &Engine,
    range: RangeId,
    prefix: &[u8],
) -> Result<Vec<shoal_storage::Entry>, StorageError> {
    let end = prefix_end(prefix);
    let mut entries = Vec::new();
    let mut from = prefix.to_vec();
    loop {
        let page = engine.scan(range, &Scan::all(PAGE).from(from.clone()).to(end.clone()))?;
        let full = page.len() == PAGE;
        if let Some(last) = page.last() {
            from = last.key.clone();
            from.push(0);
        }
        entries.extend(page);
        if !full {
            return Ok(entries);
        }
    }
}

/// Why the meta range's contents could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetaReadError {
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A record does not decode: the meta range is corrupt.
    #[error("corrupt meta record: {0}")]
    Corrupt(String),
}

/// The recorded descriptors, each under its key.
fn recorded(
    engine: &Engine,
    range: RangeId,
) -> Result<BTreeMap<Vec<u8>, RangeDescriptor>, MetaReadError> {
    read_prefix(engine, range, DESCRIPTOR_PREFIX)?
        .into_iter()
        .map(|e| {
            let d: RangeDescriptor = codec::decode(&e.value, e.value.len())
                .map_err(|err| MetaReadError::Corrupt(err.to_string()))?;
            Ok((e.key, d))
        })
        .collect()
}

/// The recorded descriptors as a set (for lookups).
pub(crate) fn read_descriptors(
    engine: &Engine,
    range: RangeId,
) -> Result<DescriptorSet, MetaReadError> {
    DescriptorSet::from_descriptors(recorded(engine, range)?.into_values(), MAX_BOUND_BYTES)
        .map_err(|e| MetaReadError::Corrupt(e.to_string()))
}

/// The registered nodes, in id order.
pub(crate) fn read_nodes(
    engine: &Engine,
    range: RangeId,
) -> Result<Vec<NodeRecord>, MetaReadError> {
    read_prefix(engine, range, NODE_PREFIX)?
        .into_iter()
        .map(|e| {
            codec::decode(&e.value, e.value.len())
                .map_err(|err| MetaReadError::Corrupt(err.to_string()))
        })
        .collect()
}

/// The batch a bootstrap writes into the meta range: the founding descriptors, and the
/// allocator past them.
pub(crate) fn bootstrap_batch(
    descriptors: &[RangeDescriptor],
    next_id: u64,
) -> Result<WriteBatch, String> {
    let mut batch = WriteBatch::new();
    for d in descriptors {
        let mut d = d.clone();
        d.leader_hint = None;
        batch.put(
            descriptor_key(&d),
            codec::encode(&d).map_err(|e| e.to_string())?,
        );
    }
    batch.put(
        NEXT_RANGE_ID.to_vec(),
        next_id.max(FIRST_ALLOCATED_ID).to_be_bytes().to_vec(),
    );
    Ok(batch)
}

/// Whether `op` is well formed: 1 to [`MAX_RECORD`] valid descriptors with bounds of at most
/// [`MAX_BOUND_BYTES`], 1 to [`MAX_ALLOCATE`] ids, a zone of at most [`MAX_ZONE_BYTES`].
pub(crate) fn check(op: &MetaOp) -> Result<(), Rejection> {
    let refuse = |why: String| Err(Rejection::InvalidMeta(why));
    match op {
        MetaOp::Record(descriptors) => {
            if descriptors.is_empty() || descriptors.len() > MAX_RECORD {
                return refuse(format!("a record of 1 to {MAX_RECORD} descriptors"));
            }
            if let Err(e) =
                DescriptorSet::from_descriptors(descriptors.iter().cloned(), MAX_BOUND_BYTES)
            {
                return refuse(e.to_string());
            }
        }
        MetaOp::AllocateRangeIds { count } => {
            if *count == 0 || *count > MAX_ALLOCATE {
                return refuse(format!("allocate 1 to {MAX_ALLOCATE} ids"));
            }
        }
        MetaOp::RegisterNode(record) => {
            if record
                .zone
                .as_ref()
                .is_some_and(|z| z.len() > MAX_ZONE_BYTES)
            {
                return refuse(format!("a zone name over {MAX_ZONE_BYTES} bytes"));
            }
        }
        MetaOp::BindStore { store, cluster, .. } => {
            if *store == 0 || *cluster == 0 {
                return refuse("store and cluster ids are never zero".into());
            }
        }
    }
    Ok(())
}

/// What applying `op` in the meta range writes, and answers; reads what it needs from the
/// engine (the range's state at the entry before). A refusal is deterministic.
pub(crate) fn evaluate(
    engine: &Engine,
    range: RangeId,
    op: MetaOp,
) -> Result<Result<(WriteBatch, MetaAnswer), Rejection>, MetaReadError> {
    let refuse = |why: String| Ok(Err(Rejection::InvalidMeta(why)));
    if range != META_RANGE {
        return refuse(format!("{range} is not the meta range"));
    }
    if let Err(rejection) = check(&op) {
        return Ok(Err(rejection));
    }
    let mut batch = WriteBatch::new();
    match op {
        MetaOp::Record(descriptors) => {
            let incoming: Vec<RangeDescriptor> = descriptors
                .into_iter()
                .map(|mut d| {
                    d.leader_hint = None;
                    d
                })
                .collect();
            let incoming = match DescriptorSet::from_descriptors(incoming, MAX_BOUND_BYTES) {
                Ok(set) => set,
                Err(e) => return refuse(e.to_string()),
            };
            let before = recorded(engine, range)?;
            let mut set =
                DescriptorSet::from_descriptors(before.values().cloned(), MAX_BOUND_BYTES)
                    .map_err(|e| MetaReadError::Corrupt(e.to_string()))?;
            if !set.merge(&incoming) {
                return Ok(Ok((batch, MetaAnswer::Recorded { changed: 0 })));
            }
            let after: BTreeMap<Vec<u8>, &RangeDescriptor> =
                set.descriptors().map(|d| (descriptor_key(d), d)).collect();
            let mut changed = 0u32;
            for key in before.keys().filter(|k| !after.contains_key(*k)) {
                batch.delete(key.clone());
                changed += 1;
            }
            for (key, d) in &after {
                if before.get(key) != Some(*d) {
                    let value =
                        codec::encode(*d).map_err(|e| MetaReadError::Corrupt(e.to_string()))?;
                    batch.put(key.clone(), value);
                    changed += 1;
                }
            }
            Ok(Ok((batch, MetaAnswer::Recorded { changed })))
        }
        MetaOp::AllocateRangeIds { count } => {
            let next = match engine.get(range, NEXT_RANGE_ID)? {
                Some(v) => <[u8; 8]>::try_from(v.value.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| MetaReadError::Corrupt("the range-id allocator".into()))?,
                None => FIRST_ALLOCATED_ID,
            };
            let Some(after) = next.checked_add(u64::from(count)) else {
                return refuse("range ids are exhausted".into());
            };
            batch.put(NEXT_RANGE_ID.to_vec(), after.to_be_bytes().to_vec());
            Ok(Ok((
                batch,
                MetaAnswer::Allocated {
                    first: RangeId::new(next),
                },
            )))
        }
        MetaOp::RegisterNode(record) => {
            let value =
                codec::encode(&record).map_err(|e| MetaReadError::Corrupt(e.to_string()))?;
            batch.put(node_key(record.id), value);
            Ok(Ok((batch, MetaAnswer::Registered)))
        }
        MetaOp::BindStore {
            node,
            store,
            cluster,
        } => {
            if let Some(bound) = read_u64(engine, range, &binding_key(node))? {
                if bound != store {
                    return Ok(Ok((batch, MetaAnswer::BoundElsewhere { store: bound })));
                }
            } else {
                batch.put(binding_key(node), store.to_be_bytes().to_vec());
            }
            let cluster = match read_u64(engine, range, CLUSTER_ID)? {
                Some(existing) => existing,
                None => {
                    batch.put(CLUSTER_ID.to_vec(), cluster.to_be_bytes().to_vec());
                    cluster
                }
            };
            Ok(Ok((batch, MetaAnswer::Bound { cluster })))
        }
    }
}

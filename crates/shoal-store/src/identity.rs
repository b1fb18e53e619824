//! Who a store is, so that a node whose data is gone cannot pass for the replica it was.
//!
//! A data directory gets a **store id** when it is first used: a random 64-bit number written
//! to `identity` beside the engine and the WAL, with the node id it belongs to and, once
//! known, the **cluster id** (drawn by the first node to register in the meta range). The meta
//! range binds each node id to the store id it first registered with (see
//! [`super::meta::MetaOp::BindStore`]). A node that comes back with an empty or replaced
//! data directory has a new store id: the binding refuses it, so it hosts nothing, and the
//! other nodes refuse every request it sends (its membership metadata says which store
//! speaks, [`Identity::member_meta`]). It must be removed from its ranges and come back under
//! a new node id: its votes and acknowledgements, given with a log it no longer has, would
//! otherwise let a leader without a committed entry overwrite it (CockroachDB and TiKV give
//! stores ids for the same reason).
//!
//! A data directory that already holds data from before identities existed gets a store id
//! too, and is trusted: it is the same disk.

use super::node::StoreError;
use shoal_core::NodeId;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The identity file's name in the data directory.
const FILE: &str = "identity";

/// The prefix of a data node's membership metadata: `store=<16 hex digits>`.
const META_PREFIX: &str = "store=";

/// What the meta range said of this store's binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Not bound yet: a store created on this start hosts nothing it was not bootstrapped
    /// with until the meta range binds it.
    Unknown,
    /// Bound: this store is the node's.
    Admitted,
    /// The node id is bound to another store: this one's data is not the node's.
    Refused(String),
}

/// This store's identity and what the cluster made of it.
#[derive(Debug)]
pub(crate) struct Identity {
    path: PathBuf,
    node: NodeId,
    store: u64,
    /// Whether the data directory was empty when this identity was created (on this start).
    fresh: bool,
    cluster: Mutex<Option<u64>>,
    admission: Mutex<Admission>,
    /// Whether the meta range bound this store since it opened.
    bound: std::sync::atomic::AtomicBool,
}

/// A random 64-bit number (the standard library's hasher keys come from the operating
/// system's randomness), never zero.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}

fn parse_hex(field: &str, value: &str) -> Result<u64, StoreError> {
    u64::from_str_radix(value, 16)
        .ok()
        .filter(|&v| v != 0)
        .ok_or_else(|| StoreError::Corrupt(format!("identity: {field} {value:?} is not an id")))
}

impl Identity {
    /// Reads the identity in `data_dir`, or creates one: `had_data` says whether the
    /// directory already holds a store (from before identities existed). Refuses a
    /// directory that belongs to another node id.
    pub(crate) fn load_or_create(
        data_dir: &Path,
        node: NodeId,
        had_data: bool,
    ) -> Result<Identity, StoreError> {
        let path = data_dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Identity::parse(path, node, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity {
                    path,
                    node,
                    store: random_u64(),
                    fresh: !had_data,
                    cluster: Mutex::new(None),
                    admission: Mutex::new(if had_data {
                        Admission::Admitted
                    } else {
                        Admission::Unknown
                    }),
                    bound: Default::default(),
                };
                identity.save()?;
                Ok(identity)
            }
            Err(e) => Err(StoreError::Corrupt(format!(
                "reading {}: {e}",
                path.display()
            ))),
        }
    }

    fn parse(path: PathBuf, node: NodeId, text: &str) -> Result<Identity, StoreError> {
        let (mut owner, mut store, mut cluster) = (None, None, None);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((field, value)) = line.split_once('=') else {
                return Err(StoreError::Corrupt(format!("identity: a line {line:?}")));
            };
            match field {
                "node" => {
                    owner = Some(value.parse::<u64>().map_err(|_| {
                        StoreError::Corrupt(format!("identity: node {value:?} is not an id"))
                    })?)
                }
                "store" => store = Some(parse_hex(field, value)?),
                "cluster" => cluster = Some(parse_hex(field, value)?),
                _ => {}
            }
        }
        let (Some(owner), Some(store)) = (owner, store) else {
            return Err(StoreError::Corrupt(
                "identity: the node or store id is missing".into(),
            ));
        };
        if owner != node.get() {
            return Err(StoreError::Config(format!(
                "the data directory belongs to node {owner}, not to node {}",
                node.get()
            )));
        }
        Ok(Identity {
            path,
            node,
            store,
            fresh: false,
            cluster: Mutex::new(cluster),
            // Its own data: it is the node's store unless the meta range says otherwise.
            admission: Mutex::new(Admission::Admitted),
            bound: Default::default(),
        })
    }

    /// Writes the identity durably (a temporary file synced, renamed over, the directory
    /// synced).
    fn save(&self) -> Result<(), StoreError> {
        let mut text = format!("node={}\nstore={:016x}\n", self.node.get(), self.store);
        if let Some(cluster) = self.cluster() {
            text.push_str(&format!("cluster={cluster:016x}\n"));
        }
        let io = |e: std::io::Error| {
            StoreError::Corrupt(format!("writing {}: {e}", self.path.display()))
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, &self.path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    /// This store's id.
    pub(crate) fn store(&self) -> u64 {
        self.store
    }

    /// Whether the data directory was empty when this store started.
    pub(crate) fn fresh(&self) -> bool {
        self.fresh
    }

    /// The cluster's id, once known.
    pub(crate) fn cluster(&self) -> Option<u64> {
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the meta range made of this store.
    pub(crate) fn admission(&self) -> Admission {
        self.admission
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether this store may host replicas it is sent (on demand): not while a store
    /// created on this start is unbound, never once refused.
    pub(crate) fn may_host(&self) -> bool {
        self.admission() == Admission::Admitted
    }

    /// The meta range bound this store to its node in cluster `cluster`: remembered (and
    /// the cluster id written down the first time). Refused if this data directory already
    /// belongs to another cluster.
    pub(crate) fn bound(&self, cluster: u64) -> Result<(), StoreError> {
        let known = self.cluster();
        match known {
            Some(mine) if mine != cluster => {
                let why = format!(
                    "this data directory belongs to cluster {mine:016x}, but the cluster it \
                     joined is {cluster:016x}"
                );
                self.refuse(why.clone());
                return Err(StoreError::Config(why));
            }
            Some(_) => {}
            None => {
                *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(cluster);
                self.save()?;
            }
        }
        let mut admission = self.admission.lock().unwrap_or_else(|p| p.into_inner());
        if *admission == Admission::Unknown {
            *admission = Admission::Admitted;
        }
        self.bound.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether the meta range bound this store to its node since it opened.
    pub(crate) fn is_bound(&self) -> bool {
        self.bound.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The meta range refused this store (its node id is bound to another store).
    pub(crate) fn refuse(&self, why: String) {
        *self.admission.lock().unwrap_or_else(|p| p.into_inner()) = Admission::Refused(why);
    }

    /// The membership metadata a data node publishes: which store speaks for it.
    pub(crate) fn member_meta(&self) -> Vec<u8> {
        format!("{META_PREFIX}{:016x}", self.store).into_bytes()
    }
}

/// The store id a data node's membership metadata names, if it names one.
pub(crate) fn store_in_meta(meta: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(meta).ok()?;
    let hex = text.strip_prefix(META_PREFIX)?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_survives_a_reopen_and_refuses_another_node() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path(), NodeId::new(3), false).unwrap();
        assert!(first.fresh());
        assert_eq!(first.admission(), Admission::Unknown);
        assert!(!first.may_host());
        first.bound(0xabc).unwrap();
        assert!(first.may_host());
        let again = Identity::load_or_create(dir.path(), NodeId::new(3), false).unwrap();
        assert_eq!(
            (again.store(), again.cluster(), again.fresh()),
            (first.store(), Some(0xabc), false)
        );
        assert!(again.bound(0xdef).is_err());
        assert!(!again.may_host());
        assert!(matches!(
            Identity::load_or_create(dir.path(), NodeId::new(4), false),
            Err(StoreError::Config(_))
        ));
        assert_eq!(store_in_meta(&first.member_meta()), Some(first.store()));
        assert_eq!(store_in_meta(b"role=gateway"), None);
        // Another directory, another store.
        let other_dir = tempfile::tempdir().unwrap();
        let other = Identity::load_or_create(other_dir.path(), NodeId::new(3), true).unwrap();
        assert_ne!(other.store(), first.store());
        assert!(!other.fresh() && other.may_host());
    }
}

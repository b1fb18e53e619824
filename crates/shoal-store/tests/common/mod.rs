//! Stores on loopback TCP with real fjall and WALs in temp dirs, and a client that routes
//! like a gateway: it finds a range's descriptor, goes to its leader, follows `NotLeader`
//! hints and replaces descriptors on `RangeKeyMismatch`.

#![allow(dead_code)]

use shoal_core::{Error, ErrorCode, NodeId, RangeDescriptor, RangeId};
use shoal_store::{
    Acks, Comparison, KvOp, KvRequest, KvResponse, KvRpc, LookupRequest, LookupRpc, Store,
    StoreConfig, WriteOp,
};
use shoal_transport::{RpcClient, RpcTransportExt, TransportConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn n(raw: u64) -> NodeId {
    NodeId::new(raw)
}

/// Raft timings for tests: quick elections, but with room for a loaded 2-core machine.
pub fn config(id: NodeId, dir: &std::path::Path) -> StoreConfig {
    StoreConfig::local(id, dir)
}

pub struct Cluster {
    pub stores: Vec<Option<Store>>,
    pub dirs: Vec<tempfile::TempDir>,
    pub addrs: Vec<SocketAddr>,
    pub client: Arc<RpcClient>,
    pub configure: fn(&mut StoreConfig),
}

impl Cluster {
    /// `nodes` stores, bootstrapped together as the first range's voters.
    pub async fn start(nodes: u64, configure: fn(&mut StoreConfig)) -> Cluster {
        let mut cluster = Cluster {
            stores: Vec::new(),
            dirs: Vec::new(),
            addrs: Vec::new(),
            client: Arc::new(
                RpcClient::new(NodeId::new(10_000), None, TransportConfig::local()).unwrap(),
            ),
            configure,
        };
        for i in 1..=nodes {
            let dir = tempfile::tempdir().unwrap();
            let mut config = config(n(i), dir.path());
            configure(&mut config);
            let store = Store::open(config).await.unwrap();
            cluster.addrs.push(store.addr());
            cluster.stores.push(Some(store));
            cluster.dirs.push(dir);
        }
        // The stores find each other through membership: each joins through the first.
        for store in cluster.stores.iter().flatten().skip(1) {
            store.join(vec![cluster.addrs[0]]).await.unwrap();
        }
        cluster.await_members().await;
        let voters: Vec<NodeId> = (1..=nodes).map(n).collect();
        for store in cluster.stores.iter().flatten() {
            store.bootstrap(&voters).await.unwrap();
        }
        cluster
    }

    /// Waits until every live store sees every live store as a live member.
    pub async fn await_members(&self) {
        let live: Vec<NodeId> = (1..=self.stores.len() as u64)
            .map(n)
            .filter(|&id| self.stores[(id.get() - 1) as usize].is_some())
            .collect();
        wait_for("every store to see the others", async || {
            for store in self.stores.iter().flatten() {
                let members = store.members().await.ok()?;
                let alive = |id: &NodeId| members.iter().any(|m| m.id == *id && m.state.is_live());
                if !live.iter().all(alive) {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    pub fn store(&self, id: NodeId) -> &Store {
        self.stores[(id.get() - 1) as usize].as_ref().unwrap()
    }

    /// Stops a store the way a crash does: no flush, no hand-over (the process's OS buffers
    /// survive, as they would a killed process).
    pub async fn kill(&mut self, id: NodeId) {
        let store = self.stores[(id.get() - 1) as usize].take().unwrap();
        store.crash().await;
    }

    /// Reopens a store on its directory and address.
    pub async fn restart(&mut self, id: NodeId) {
        let i = (id.get() - 1) as usize;
        let mut config = config(id, self.dirs[i].path());
        config.listen = self.addrs[i];
        (self.configure)(&mut config);
        // The crashed store's last references (a snapshot transfer, say) may still be going.
        let deadline = Instant::now() + Duration::from_secs(10);
        let store = loop {
            match Store::open(config.clone()).await {
                Ok(store) => break store,
                Err(e) if Instant::now() < deadline => {
                    tracing_skip(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("reopening {id}: {e}"),
            }
        };
        let seeds: Vec<SocketAddr> = self
            .addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i && self.stores[*j].is_some())
            .map(|(_, a)| *a)
            .collect();
        if !seeds.is_empty() {
            store.join(seeds).await.unwrap();
        }
        self.stores[i] = Some(store);
    }

    /// The freshest descriptor any live store holds for `key`.
    pub async fn descriptor(&self, key: &[u8]) -> Option<RangeDescriptor> {
        let mut best: Option<RangeDescriptor> = None;
        for (i, addr) in self.addrs.iter().enumerate() {
            if self.stores[i].is_none() {
                continue;
            }
            let request = LookupRequest { key: key.to_vec() };
            let Ok(found) = self
                .client
                .call::<LookupRpc>(*addr, &request, Duration::from_secs(2))
                .await
            else {
                continue;
            };
            for d in found {
                if best.as_ref().is_none_or(|b| d.generation > b.generation) {
                    best = Some(d);
                }
            }
        }
        best
    }

    /// Sends `op` for `key` the way a router does, until it succeeds or fails with an error
    /// a router does not retry, within 30 s: it finds the range's freshest descriptor, sends
    /// there ([`Cluster::request_in`]) and starts over on `RangeKeyMismatch` and
    /// `RangeNotFound`.
    pub async fn request(&self, key: &[u8], op: KvOp) -> Result<KvResponse, Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let Some(descriptor) = self.descriptor(key).await else {
                assert!(Instant::now() < deadline, "no descriptor for {key:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match self.request_in(&descriptor, op.clone()).await {
                Err(e)
                    if matches!(
                        e.code,
                        ErrorCode::RangeKeyMismatch { .. } | ErrorCode::RangeNotFound { .. }
                    ) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// Writes `pairs` (sorted by key) in batches of up to `batch` puts, each batch to the
    /// one range that holds all its keys, regrouping when a range splits under it.
    pub async fn put_sorted(&self, pairs: &[(Vec<u8>, Vec<u8>)], batch: usize) {
        let mut at = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while at < pairs.len() {
            assert!(Instant::now() < deadline, "writes stalled at {at}");
            let Some(descriptor) = self.descriptor(&pairs[at].0).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let ops: Vec<WriteOp> = pairs[at..]
                .iter()
                .take(batch)
                .take_while(|(k, _)| descriptor.contains_key(k))
                .map(|(k, v)| WriteOp::Put {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect();
            let count = ops.len();
            let op = KvOp::Write {
                ops,
                acks: Acks::Majority,
            };
            match self.request_in(&descriptor, op).await {
                Ok(_) => at += count,
                Err(e) if matches!(e.code, ErrorCode::RangeKeyMismatch { .. }) => {}
                Err(e) if e.code == ErrorCode::OutcomeUnknown => {}
                Err(e) => panic!("writing at {at}: {e}"),
            }
        }
    }

    /// Sends `op` to `descriptor`'s range, following `NotLeader` hints and retrying
    /// transient errors (a replica that has not started the range yet included), but
    /// returning `RangeKeyMismatch` (the caller regroups).
    pub async fn request_in(
        &self,
        descriptor: &RangeDescriptor,
        op: KvOp,
    ) -> Result<KvResponse, Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut target: Option<NodeId> = None;
        let mut last_error = None;
        while Instant::now() < deadline {
            let node = target
                .or_else(|| self.leader_of(descriptor))
                .unwrap_or(descriptor.replicas[0].node);
            let i = (node.get() - 1) as usize;
            if self.stores.get(i).is_none_or(Option::is_none) {
                target = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let request = KvRequest {
                range: descriptor.id,
                generation: descriptor.generation,
                op: op.clone(),
            };
            match self
                .client
                .call::<KvRpc>(self.addrs[i], &request, Duration::from_secs(10))
                .await
            {
                Ok(response) => return Ok(response),
                Err(e) => {
                    match &e.code {
                        ErrorCode::NotLeader { hint } => target = hint.as_ref().map(|h| h.node),
                        ErrorCode::Unavailable
                        | ErrorCode::Unreachable
                        | ErrorCode::Timeout
                        | ErrorCode::ShuttingDown => target = None,
                        // A replica the descriptor names that does not host the range yet:
                        // the right half of a split starts on each replica as it applies
                        // the split, a moment after. Ask the next replica.
                        ErrorCode::RangeNotFound { .. } => {
                            let at = descriptor.replicas.iter().position(|r| r.node == node);
                            let next = at.map_or(0, |at| (at + 1) % descriptor.replicas.len());
                            target = Some(descriptor.replicas[next].node);
                        }
                        _ => return Err(e),
                    }
                    last_error = Some(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::new(ErrorCode::Timeout, "no route")))
    }

    /// Puts `{prefix}{i:03}` = `value` for every `i` in `keys`, one acknowledged write at a
    /// time; returns the keys.
    pub async fn put_numbered(
        &self,
        prefix: &str,
        keys: std::ops::Range<u32>,
        value: &[u8],
    ) -> Vec<String> {
        let mut written = Vec::new();
        for i in keys {
            let key = format!("{prefix}{i:03}");
            self.request(key.as_bytes(), KvOp::put(key.clone(), value.to_vec()))
                .await
                .unwrap();
            written.push(key);
        }
        written
    }

    /// The leader of the range holding `key` and one of its followers, of nodes 1 to 3.
    pub async fn leader_and_follower(&self, key: &[u8]) -> (NodeId, NodeId) {
        let descriptor = self.descriptor(key).await.unwrap();
        let leader = wait_for("a leader", async || self.leader_of(&descriptor)).await;
        let follower = (1..=3).map(n).find(|&id| id != leader).unwrap();
        (leader, follower)
    }

    /// Waits until `node`'s engine holds `key` in `range`.
    pub async fn wait_holds(&self, node: NodeId, range: RangeId, key: &[u8]) {
        wait_for("a replica to hold a key", async || {
            self.store(node).engine().get(range, key).ok()?.map(|_| ())
        })
        .await
    }

    /// Compares `from`'s replica of `range` with `peer`'s, once both are at one applied
    /// index.
    pub async fn compare_at_one_index(
        &self,
        from: NodeId,
        range: RangeId,
        peer: NodeId,
    ) -> Comparison {
        wait_for(
            "the replicas to reach one applied index",
            async || match self.store(from).compare_replica(range, peer).await.ok()? {
                Comparison::NotAtOneIndex { .. } => None,
                done => Some(done),
            },
        )
        .await
    }

    /// The leader of a range as the live stores see it.
    pub fn leader_of(&self, descriptor: &RangeDescriptor) -> Option<NodeId> {
        self.stores.iter().flatten().find_map(|s| {
            s.leader(descriptor.id)
                .filter(|l| self.stores[(l.get() - 1) as usize].is_some())
        })
    }

    /// Shuts every store down, together (each leaves the cluster first).
    pub async fn shutdown(self) {
        let stops: Vec<_> = self
            .stores
            .into_iter()
            .flatten()
            .map(|store| tokio::spawn(async move { store.shutdown().await }))
            .collect();
        for stop in stops {
            stop.await.unwrap();
        }
    }
}

/// Waits for `check` to hold, for at most 60 s.
pub async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tracing_skip(_e: &dyn std::fmt::Display) {}

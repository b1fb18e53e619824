//! The answering side of a sync: stateless, one response per request, every request
//! checked against the limits before any work. A read-only responder answers comparisons
//! and fetches and refuses every write.

use crate::config::SyncConfig;
use crate::digest::DigestWindow;
use crate::error::MerkleError;
use crate::item::{Item, Refusal};
use crate::message::{IdList, NodeList, SyncRequest, SyncResponse, MAX_FETCH};
use crate::shape::TreeShape;
use crate::store::SyncStore;
use shoal_core::{Error, ErrorCode, NodeId};

/// Counters kept by a [`Responder`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponderStats {
    /// Requests answered (refusals included).
    pub requests: u64,
    /// Requests refused as malformed or over a limit.
    pub refused_requests: u64,
    /// Pushed or gossiped items stored.
    pub items_accepted: u64,
    /// Pushed or gossiped items not stored because the local copy was as new.
    pub items_stale: u64,
    /// Pushed or gossiped items refused as invalid (bad content hash, over a limit, outside
    /// the range). Never stored.
    pub items_invalid: u64,
}

/// Answers a peer's [`SyncRequest`]s from a local [`SyncStore`].
#[derive(Clone, Debug)]
pub struct Responder {
    node: NodeId,
    config: SyncConfig,
    /// Refuse `Push` and `Gossip`: see [`Responder::read_only`].
    read_only: bool,
    stats: ResponderStats,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> SyncResponse {
    SyncResponse::Refused {
        error: Error::new(code, message),
    }
}

impl Responder {
    /// A responder for node `node`.
    pub fn new(node: NodeId, config: SyncConfig) -> Responder {
        Responder {
            node,
            config,
            read_only: false,
            stats: ResponderStats::default(),
        }
    }

    /// A responder for node `node` that never writes to its store: it answers roots, node
    /// and leaf digests, fetches and pings, and refuses [`SyncRequest::Push`] and
    /// [`SyncRequest::Gossip`] with [`ErrorCode::InvalidRequest`]. For a replica whose data
    /// belongs to a Raft log: peers can compare against it
    /// ([`SyncSession::check`](crate::SyncSession::check)) or read from it, but nothing can be
    /// written behind the log's back. A reconciling session against it ends with
    /// [`SyncError::Refused`](crate::SyncError::Refused) when it first pushes.
    pub fn read_only(node: NodeId, config: SyncConfig) -> Responder {
        Responder {
            read_only: true,
            ..Self::new(node, config)
        }
    }

    /// Whether this responder refuses writes (see [`Responder::read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The counters so far.
    pub fn stats(&self) -> &ResponderStats {
        &self.stats
    }

    /// Answers `request` from `store`.
    pub fn respond<S: SyncStore>(&mut self, store: &mut S, request: SyncRequest) -> SyncResponse {
        self.stats.requests += 1;
        let response = self.answer(store, request);
        if let SyncResponse::Refused { error } = &response {
            self.stats.refused_requests += 1;
            tracing::debug!(%error, "sync request refused");
        }
        response
    }

    fn answer<S: SyncStore>(&mut self, store: &mut S, request: SyncRequest) -> SyncResponse {
        match request {
            SyncRequest::ExchangeRoots {
                root, shape, span, ..
            } => {
                if shape.validate().is_err() || shape != store.tree().shape() {
                    return MerkleError::ShapeMismatch.into_response();
                }
                // Same shape over other keys (one side has applied a split or merge the other
                // has not): the roots are not comparable, and what a session would then
                // fetch or push belongs to neither range.
                if &span != store.tree().span() {
                    return MerkleError::SpanMismatch.into_response();
                }
                let mine = store.tree_mut().root();
                SyncResponse::Roots {
                    root: mine,
                    count: store.tree().len() as u64,
                    roots_match: mine == root,
                }
            }
            SyncRequest::GetNodes {
                level,
                nodes,
                window,
                max,
            } => self.nodes(store, level, &nodes, window, max),
            SyncRequest::GetLeaves {
                buckets,
                after,
                window,
                max,
            } => self.leaves(store, &buckets, after, window, max),
            SyncRequest::Fetch { ids } => {
                if let Err(response) = self.check_fetch(ids.0.len(), "ids") {
                    return response;
                }
                self.batch(ids.0.iter(), |&id, out| store.items_with_hash(id, out))
            }
            SyncRequest::FetchKeys { keys } => {
                if let Err(response) = self.check_fetch(keys.len(), "keys") {
                    return response;
                }
                self.batch(keys.iter(), |key, out| out.extend(store.item(key)))
            }
            SyncRequest::FetchByHash { hashes } => {
                if let Err(response) = self.check_fetch(hashes.len(), "hashes") {
                    return response;
                }
                self.batch(hashes.iter(), |hash, out| out.extend(store.item(&hash.0)))
            }
            SyncRequest::Push { .. } | SyncRequest::Gossip { .. } if self.read_only => refuse(
                ErrorCode::InvalidRequest,
                "read-only replica: its items are written only through its log, never by sync",
            ),
            SyncRequest::Push { items } => {
                if items.len() > self.config.max_push_items {
                    return refuse(ErrorCode::TooLarge, "too many items in one push");
                }
                let (mut accepted, mut refused) = (0, 0);
                for item in items {
                    if self.take(store, item) {
                        accepted += 1;
                    } else {
                        refused += 1;
                    }
                }
                SyncResponse::Pushed { accepted, refused }
            }
            SyncRequest::Gossip { item } => {
                let taken = self.take(store, item);
                SyncResponse::Pushed {
                    accepted: u32::from(taken),
                    refused: u32::from(!taken),
                }
            }
            SyncRequest::Ping { .. } => SyncResponse::Pong {
                node: self.node,
                count: store.tree().len() as u64,
            },
        }
    }

    /// The items `lookup` finds for each of `asks`, for as many of the first asks as fit
    /// the batch size (always at least one).
    fn batch<T>(
        &self,
        asks: impl Iterator<Item = T>,
        mut lookup: impl FnMut(T, &mut Vec<Item>),
    ) -> SyncResponse {
        let mut items = Vec::new();
        let mut answered = 0;
        let mut bytes = 0;
        for ask in asks {
            let before = items.len();
            lookup(ask, &mut items);
            let added: usize = items[before..].iter().map(Item::size).sum();
            if answered > 0 && bytes + added > self.config.max_batch_bytes {
                items.truncate(before);
                break;
            }
            bytes += added;
            answered += 1;
        }
        SyncResponse::Items {
            items,
            answered: answered as u32,
        }
    }

    /// Refuses a fetch of more than the configured `max_fetch` ids, keys or hashes (never
    /// more than the protocol's [`MAX_FETCH`], whatever the configuration says).
    fn check_fetch(&self, asks: usize, what: &str) -> Result<(), SyncResponse> {
        let max = self.config.max_fetch.min(MAX_FETCH);
        if asks > max {
            let message = format!("{asks} {what} in one fetch, over the limit of {max}");
            return Err(refuse(ErrorCode::TooLarge, message));
        }
        Ok(())
    }

    /// Checks a list of nodes at `level` and the digest window asked for.
    fn check_nodes(
        &self,
        shape: &TreeShape,
        level: u8,
        nodes: &NodeList,
        window: DigestWindow,
    ) -> Result<(), SyncResponse> {
        if !window.is_valid() {
            let message = format!("digest length {} is not 2 to 32", window.len);
            return Err(refuse(ErrorCode::InvalidRequest, message));
        }
        let max = self.config.max_nodes_per_request;
        if nodes.is_empty() || nodes.len() > max as usize {
            let message = format!("1 to {max} nodes per request");
            return Err(refuse(ErrorCode::InvalidRequest, message));
        }
        if nodes
            .as_slice()
            .last()
            .is_some_and(|&last| last >= shape.width(level))
        {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "node index outside the tree",
            ));
        }
        Ok(())
    }

    fn take<S: SyncStore>(&mut self, store: &mut S, item: Item) -> bool {
        match store.offer(item, &self.config.limits) {
            Ok(()) => {
                self.stats.items_accepted += 1;
                true
            }
            Err(Refusal::Stale) => {
                self.stats.items_stale += 1;
                false
            }
            Err(Refusal::Invalid) => {
                self.stats.items_invalid += 1;
                false
            }
        }
    }

    fn nodes<S: SyncStore>(
        &self,
        store: &mut S,
        level: u8,
        nodes: &NodeList,
        window: DigestWindow,
        max: u32,
    ) -> SyncResponse {
        let shape = store.tree().shape();
        if level >= shape.depth() {
            return refuse(ErrorCode::InvalidRequest, "GetNodes below the bucket level");
        }
        if let Err(response) = self.check_nodes(&shape, level, nodes, window) {
            return response;
        }
        let fanout = shape.fanout();
        let budget = max.min(self.config.max_digests_per_response) as usize / fanout;
        if budget == 0 {
            return refuse(
                ErrorCode::InvalidRequest,
                "max is below one fanout of digests",
            );
        }
        let tree = store.tree_mut();
        tree.refresh();
        let answered = nodes.len().min(budget);
        let mut digests = Vec::with_capacity(answered * fanout * window.len());
        for &parent in &nodes.as_slice()[..answered] {
            let first = shape.first_child(parent);
            for child in first..first + fanout as u64 {
                digests.extend_from_slice(tree.node(level + 1, child).window(window));
            }
        }
        SyncResponse::Nodes {
            digests,
            truncated: answered < nodes.len(),
        }
    }

    fn leaves<S: SyncStore>(
        &self,
        store: &mut S,
        buckets: &NodeList,
        after: Option<u64>,
        window: DigestWindow,
        max: u32,
    ) -> SyncResponse {
        let shape = store.tree().shape();
        if let Err(response) = self.check_nodes(&shape, shape.depth(), buckets, window) {
            return response;
        }
        if let (Some(after), Some(&first)) = (after, buckets.as_slice().first()) {
            if shape.bucket_of(after) != first {
                return refuse(
                    ErrorCode::InvalidRequest,
                    "resume point is not in the first bucket",
                );
            }
        }
        let limit = max.min(self.config.max_leaves_per_response).max(1) as usize;
        let tree = store.tree();
        let (mut ids, mut digests) = (Vec::new(), Vec::new());
        let mut truncated = false;
        'buckets: for (i, &b) in buckets.as_slice().iter().enumerate() {
            let entries = tree.bucket(b);
            let start = match (i, after) {
                (0, Some(after)) => entries.partition_point(|e| e.hash() <= after),
                _ => 0,
            };
            for entry in &entries[start..] {
                // Stop only between different key hashes, so a hash is never split.
                let prev = ids.last().copied();
                if ids.len() >= limit && prev != Some(entry.hash()) {
                    truncated = true;
                    break 'buckets;
                }
                ids.push(entry.hash());
                digests.extend_from_slice(entry.digest().window(window));
            }
        }
        SyncResponse::Leaves {
            ids: IdList(ids),
            digests,
            truncated,
        }
    }
}

impl MerkleError {
    fn into_response(self) -> SyncResponse {
        SyncResponse::Refused { error: self.into() }
    }
}

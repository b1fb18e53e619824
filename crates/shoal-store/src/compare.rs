//! Replica comparison: two replicas of a range compare their data at one applied index with
//! a shoal-merkle check session over the node transport, in a few round trips, without
//! changing either.
//!
//! Each side builds a Merkle tree over a point-in-time view of its range (a leaf per key,
//! digesting its version and value; the values are read from the view only when a bucket
//! differs). The asking side runs [`SyncSession::check`]; the other answers with a
//! [`Responder::read_only`] over its own view, kept for the session. Replicas at different
//! applied indexes are not compared (the caller waits until they agree on one, as they do
//! once writes pause). A mismatch at one index is a replica divergence: it is logged as an
//! error and counted ([`super::Store::replica_mismatches`]).

use super::node::{Inner, StoreError};
use serde::{Deserialize, Serialize};
use shoal_core::{HlcTimestamp, NodeId, RangeId};
use shoal_merkle::{
    ConflictRule, Item, MerkleTree, Responder, Step, SyncConfig, SyncRequest, SyncResponse,
    SyncSession, SyncStore, TreeShape,
};
use shoal_storage::{Engine, RangeView, Scan};
use shoal_transport::{Rpc, RpcTransportExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A replica's Merkle root at its applied index (to compare replicas from outside, as
/// `cargo xtask cluster-test` does through the gateway).
pub struct DigestRpc;

impl Rpc for DigestRpc {
    const NAME: &'static str = "shoal.store.digest";
    type Request = RangeId;
    type Response = RangeDigest;
}

/// A replica's data, digested: equal roots at one applied index mean equal data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDigest {
    /// The applied index of the view digested.
    pub applied: u64,
    /// The root of the Merkle tree over every key's version and value (BLAKE3), the
    /// tree [`CompareRpc`] sessions compare.
    pub root: [u8; 32],
    /// Keys digested.
    pub keys: u64,
}

/// Builds the Merkle tree of this node's replica of `range` as it is now, on a blocking
/// thread, at most two builds at a time.
async fn build_tree(inner: &Inner, range: RangeId) -> Result<RangeTree, shoal_core::Error> {
    let _permit = inner
        .comparisons
        .builds
        .acquire()
        .await
        .map_err(|_| shoal_core::Error::new(shoal_core::ErrorCode::ShuttingDown, "stopping"))?;
    let engine = inner.groups.engine().clone();
    tokio::task::spawn_blocking(move || RangeTree::build(&engine, range))
        .await
        .map_err(|e| shoal_core::Error::new(shoal_core::ErrorCode::Internal, e.to_string()))?
        .map_err(|e| match e {
            StoreError::Storage(shoal_storage::StorageError::RangeNotFound(_)) => {
                shoal_core::Error::new(
                    shoal_core::ErrorCode::RangeNotFound { range },
                    "no replica of the range here",
                )
            }
            e => shoal_core::Error::new(shoal_core::ErrorCode::Unavailable, e.to_string()),
        })
}

/// This node's replica of `range`, digested (see [`RangeDigest`]).
pub(crate) async fn digest(
    inner: &Inner,
    range: RangeId,
) -> Result<RangeDigest, shoal_core::Error> {
    let mut tree = build_tree(inner, range).await?;
    let keys = tree.keys;
    Ok(RangeDigest {
        applied: tree.applied(),
        root: tree.tree.root().0,
        keys,
    })
}

/// One step of a comparison session.
pub struct CompareRpc;

impl Rpc for CompareRpc {
    const NAME: &'static str = "shoal.store.compare";
    type Request = CompareRequest;
    type Response = CompareResponse;
}

/// A request of a comparison session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareRequest {
    /// The range compared.
    pub range: RangeId,
    /// The session (the asker's choice): the answering side keeps its view for it.
    pub session: u64,
    /// The merkle request; `None` ends the session (the answering side drops its view).
    pub request: Option<SyncRequest>,
}

/// The answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareResponse {
    /// The applied index of the answering side's view.
    pub applied: u64,
    /// The merkle answer (`None` when the session was ended).
    pub response: Option<SyncResponse>,
}

/// How a comparison came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Both replicas were at `applied` and hold the same data.
    Equal {
        /// The applied index compared at.
        applied: u64,
        /// Round trips taken.
        round_trips: u64,
    },
    /// Both were at `applied` and differ on these key hashes (`complete`: all of them).
    Differ {
        /// The applied index compared at.
        applied: u64,
        /// Differing key hashes.
        key_hashes: Vec<u64>,
        /// Whether the list is complete.
        complete: bool,
    },
    /// The replicas are at different applied indexes: nothing was compared.
    NotAtOneIndex {
        /// This replica's.
        local: u64,
        /// The peer's.
        peer: u64,
    },
}

/// Differing key hashes listed at most.
const MAX_DIFFERING: usize = 1000;
/// How long the answering side keeps the view of a session it hears nothing more of.
const SESSION_TTL: Duration = Duration::from_secs(60);
/// The most sessions the answering side keeps at once (the least recently used goes first).
const MAX_SESSIONS: usize = 16;

/// A range at one applied index, as a read-only merkle replica.
pub(crate) struct RangeTree {
    view: RangeView,
    tree: MerkleTree,
    /// Keys in the tree.
    keys: u64,
}

/// A version as the stamp of a last-writer-wins item (the digest covers it).
fn stamp(version: u64) -> HlcTimestamp {
    HlcTimestamp {
        physical_ms: version,
        logical: 0,
        node: NodeId::new(0),
    }
}

impl RangeTree {
    /// Builds the tree over `range` as it is now (reads every key once).
    pub(crate) fn build(engine: &Engine, range: RangeId) -> Result<RangeTree, StoreError> {
        let view = engine.view(range)?;
        let mut tree = MerkleTree::with_span(TreeShape::default(), view.span().clone());
        let rule = ConflictRule::LastWriterWins;
        let mut keys = 0;
        let mut from: Vec<u8> = view.span().start().to_vec();
        loop {
            let page = view.scan(&Scan::all(4096).from(from.clone()))?;
            for entry in &page {
                let item = Item::new(entry.key.clone(), entry.value.clone(), stamp(entry.version));
                tree.insert(&entry.key, rule.leaf_digest(&item))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                keys += 1;
            }
            match page.last() {
                Some(last) if page.len() == 4096 => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => break,
            }
        }
        tree.refresh();
        Ok(RangeTree { view, tree, keys })
    }

    pub(crate) fn applied(&self) -> u64 {
        self.view.applied_index()
    }
}

impl SyncStore for RangeTree {
    fn rule(&self) -> ConflictRule {
        ConflictRule::LastWriterWins
    }

    fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    fn tree_mut(&mut self) -> &mut MerkleTree {
        &mut self.tree
    }

    fn item(&self, key: &[u8]) -> Option<Item> {
        let v = self.view.get(key).ok()??;
        Some(Item::new(key.to_vec(), v.value, stamp(v.version)))
    }

    /// Never called: comparisons change nothing (a check session takes no items, and the
    /// answering side is read-only).
    fn write(&mut self, _item: Item) {}
}

/// The answering side's sessions, by (asker, session).
#[derive(Default)]
pub(crate) struct CompareSessions {
    sessions: HashMap<(NodeId, u64), (Instant, RangeTree, Responder)>,
}

/// This node's part in replica comparisons, owned in one place: the sessions it answers,
/// how many trees it builds at once, the comparisons it started, and the mismatches found.
pub(crate) struct Comparisons {
    /// Comparison sessions this node answers.
    sessions: Mutex<CompareSessions>,
    /// Trees built for comparisons at once (each reads a whole range): a peer cannot make
    /// this node build more.
    builds: tokio::sync::Semaphore,
    /// The last comparison session this node started.
    started: AtomicU64,
    /// Comparisons that found two replicas differing at one applied index.
    mismatches: AtomicU64,
}

impl Default for Comparisons {
    fn default() -> Self {
        Comparisons {
            sessions: Mutex::default(),
            builds: tokio::sync::Semaphore::new(2),
            started: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
        }
    }
}

impl Comparisons {
    /// A session number this node has not used.
    pub(crate) fn next_session(&self) -> u64 {
        self.started.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Comparisons so far that found two replicas differing at one applied index.
    pub(crate) fn mismatches(&self) -> u64 {
        self.mismatches.load(Ordering::Relaxed)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, CompareSessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Answers one request of a comparison session from `asker`.
pub(crate) async fn answer(
    inner: &Arc<Inner>,
    asker: NodeId,
    request: CompareRequest,
) -> Result<CompareResponse, shoal_core::Error> {
    let key = (asker, request.session);
    let Some(sync_request) = request.request else {
        let mut sessions = inner.comparisons.sessions();
        let applied = sessions
            .sessions
            .remove(&key)
            .map_or(0, |(_, tree, _)| tree.applied());
        return Ok(CompareResponse {
            applied,
            response: None,
        });
    };
    let fresh = {
        let mut sessions = inner.comparisons.sessions();
        sessions
            .sessions
            .retain(|_, (at, _, _)| at.elapsed() < SESSION_TTL);
        !sessions.sessions.contains_key(&key)
    };
    if fresh {
        let tree = build_tree(inner, request.range).await?;
        let responder = Responder::read_only(inner.id, SyncConfig::default());
        let mut sessions = inner.comparisons.sessions();
        if sessions.sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .sessions
                .iter()
                .min_by_key(|(_, (at, _, _))| *at)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                sessions.sessions.remove(&oldest);
            }
        }
        sessions
            .sessions
            .insert(key, (Instant::now(), tree, responder));
    }
    let mut sessions = inner.comparisons.sessions();
    let (at, tree, responder) = sessions
        .sessions
        .get_mut(&key)
        .ok_or_else(|| shoal_core::Error::new(shoal_core::ErrorCode::Unavailable, "gone"))?;
    if tree.view.range() != request.range {
        return Err(shoal_core::Error::new(
            shoal_core::ErrorCode::InvalidRequest,
            "a session for another range",
        ));
    }
    *at = Instant::now();
    let response = responder.respond(tree, sync_request);
    Ok(CompareResponse {
        applied: tree.applied(),
        response: Some(response),
    })
}

/// Compares this node's replica of `range` with `peer`'s (see the module docs).
pub(crate) async fn compare(
    inner: &Arc<Inner>,
    range: RangeId,
    peer: NodeId,
    session: u64,
) -> Result<Comparison, StoreError> {
    let addr = inner
        .topology
        .peer_addr(peer)
        .ok_or_else(|| StoreError::Raft(format!("no address for {peer}")))?;
    let engine = inner.groups.engine().clone();
    let mut local = tokio::task::spawn_blocking(move || RangeTree::build(&engine, range))
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))??;
    let applied = local.applied();
    let result = run_check(inner, &mut local, range, addr, session).await;
    // Let the peer drop its view at once, whatever happened.
    let close = CompareRequest {
        range,
        session,
        request: None,
    };
    let _ = inner
        .topology
        .inner
        .client
        .call::<CompareRpc>(addr, &close, inner.config.request_timeout)
        .await;
    let (outcome, round_trips) = match result? {
        Ok(done) => done,
        Err(peer) => {
            return Ok(Comparison::NotAtOneIndex {
                local: applied,
                peer,
            })
        }
    };
    if outcome.converged {
        return Ok(Comparison::Equal {
            applied,
            round_trips,
        });
    }
    inner.comparisons.mismatches.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        node = %inner.id, %range, %peer, applied,
        differing = outcome.differing.len(),
        "REPLICAS DIVERGE: two replicas of a range hold different data at one applied index"
    );
    Ok(Comparison::Differ {
        applied,
        key_hashes: outcome.differing,
        complete: outcome.differing_complete,
    })
}

/// Runs the check session against `addr`: its outcome and round trips, or `Err(index)` if
/// the peer's view is at another applied index.
async fn run_check(
    inner: &Arc<Inner>,
    local: &mut RangeTree,
    range: RangeId,
    addr: std::net::SocketAddr,
    session: u64,
) -> Result<Result<(shoal_merkle::SyncOutcome, u64), u64>, StoreError> {
    let mut check = SyncSession::check(SyncConfig::default(), MAX_DIFFERING);
    loop {
        match check.poll(local) {
            Step::Send(request) => {
                let ask = CompareRequest {
                    range,
                    session,
                    request: Some(request),
                };
                let answer = inner
                    .topology
                    .inner
                    .client
                    .call::<CompareRpc>(addr, &ask, inner.config.request_timeout)
                    .await?;
                if answer.applied != local.applied() {
                    return Ok(Err(answer.applied));
                }
                let response = answer
                    .response
                    .ok_or_else(|| StoreError::Raft("the peer ended the comparison".into()))?;
                check
                    .handle_response(local, response)
                    .map_err(|e| StoreError::Raft(format!("comparison: {e}")))?;
            }
            Step::Done(outcome) => return Ok(Ok((outcome, check.stats().round_trips))),
        }
    }
}

//! The asking side of a sync: a sans-IO state machine that reconciles the local replica with
//! one peer by descending both trees where they differ.
//!
//! A session compares roots; where they differ it asks for the children of differing nodes
//! level by level (digests cut to a few bytes, see [`DigestWindow`]), then for the entries of
//! differing buckets, then fetches the peer's items it lacks or that may be newer and pushes
//! its own items the peer lacks or that win. It ends by comparing full roots again; a chance
//! match of short digests (or a write during the session) costs another pass. For `d`
//! differing keys among `n` that is O(d log n) digests in O(log n) round trips.
//!
//! Work is kept on a stack of bounded batches, so memory stays bounded whatever the
//! divergence. The peer keeps no session state: a lost answer is recovered by sending the
//! same request again ([`SyncSession::poll`] does so while a request is outstanding), and
//! items already taken before an interruption stay taken, so a new session after a restart
//! has less to do. A peer that keeps answering one request with malformed data is given up
//! on after [`SyncConfig::max_malformed_answers`] resends.
//!
//! A check session ([`SyncSession::check`]) changes nothing, so a pass cannot end with
//! matching roots, and a chance match of truncated digests could hide a differing subtree.
//! It reads the entries of differing buckets with full digests, which gives it the peer's
//! exact digest of each such bucket, and ends only when the local tree with those buckets
//! replaced by the peer's has the peer's full root: then no difference is left outside the
//! buckets it read. Until then it runs more passes (other digest bytes), comparing the
//! peer's digests against that patched tree, so buckets already read are not read again.

use crate::config::SyncConfig;
use crate::digest::{bucket_digest, inner_digest, key_hash, Digest, DigestWindow, DIGEST_LEN};
use crate::error::SyncError;
use crate::item::{Item, Refusal};
use crate::message::{IdList, NodeList, SyncRequest, SyncResponse};
use crate::shape::TreeShape;
use crate::store::SyncStore;
use crate::tree::MerkleTree;
use foldhash::fast::FixedState;

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this request to the peer and pass its answer to
    /// [`SyncSession::handle_response`].
    Send(SyncRequest),
    /// The session is over.
    Done(SyncOutcome),
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Whether the two roots matched at the end.
    pub converged: bool,
    /// Passes run (0 when the roots matched at once).
    pub passes: u8,
    /// In check mode, the key hashes found to differ, in ascending order (at most the
    /// configured limit); empty otherwise.
    pub differing: Vec<u64>,
    /// Whether `differing` holds every key hash on which the two replicas differ. In check
    /// mode: the peer's full root was matched by the local tree with every bucket found to
    /// differ replaced by the peer's, and no more keys differ than the limit; false when the
    /// limit was reached, the passes ran out (the trees changed during the check) or the
    /// session failed. Outside check mode nothing is listed, so this is `converged`.
    pub differing_complete: bool,
}

/// Counters kept by a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Answers handled (each one a round trip).
    pub round_trips: u64,
    /// Requests sent again after a lost or malformed answer.
    pub resends: u64,
    /// Child digests compared.
    pub digests_compared: u64,
    /// Leaf entries received and compared.
    pub leaves_compared: u64,
    /// Items received from the peer and stored.
    pub items_taken: u64,
    /// Items received that lost to the local copy.
    pub items_stale: u64,
    /// Items received that were invalid or not asked for: refused, never stored.
    pub items_refused: u64,
    /// Items pushed to the peer.
    pub items_pushed: u64,
    /// Of those, how many the peer stored.
    pub items_pushed_accepted: u64,
    /// Answers that broke the protocol.
    pub malformed_responses: u64,
}

#[derive(Clone, Debug)]
enum Work {
    Nodes {
        level: u8,
        nodes: Vec<u64>,
    },
    Leaves {
        buckets: Vec<u64>,
        after: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Comparing roots before the first pass or after a pass.
    Roots,
    Descend,
    Done(SyncOutcome),
}

/// One reconciliation with one peer. See the module docs.
///
/// ```
/// use shoal_core::{HlcTimestamp, NodeId};
/// use shoal_merkle::*;
///
/// let tree = || MerkleTree::new(TreeShape::default());
/// let (mut a, mut b) = (MemStore::new(ConflictRule::LastWriterWins, tree()),
///                       MemStore::new(ConflictRule::LastWriterWins, tree()));
/// let at = |ms| HlcTimestamp { physical_ms: ms, logical: 0, node: NodeId::new(1) };
/// a.put(Item::new("only-a", "1", at(1)));
/// b.put(Item::new("only-b", "2", at(1)));
/// a.put(Item::new("both", "old", at(1)));
/// b.put(Item::new("both", "new", at(2)));
///
/// let mut session = SyncSession::new(SyncConfig::default());
/// let mut peer = Responder::new(NodeId::new(2), SyncConfig::default());
/// let outcome = loop {
///     match session.poll(&mut a) {
///         Step::Send(request) => {
///             let response = peer.respond(&mut b, request);
///             session.handle_response(&mut a, response)?;
///         }
///         Step::Done(outcome) => break outcome,
///     }
/// };
/// assert!(outcome.converged);
/// assert_eq!(a.get(b"both").unwrap().value, b"new");
/// assert!(b.get(b"only-a").is_some() && a.get(b"only-b").is_some());
/// # Ok::<(), SyncError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SyncSession {
    config: SyncConfig,
    check_only: bool,
    check_limit: usize,
    phase: Phase,
    pass: u8,
    stack: Vec<Work>,
    /// Ids to fetch, with whether local copies may need pushing afterwards.
    fetch: Vec<(u64, bool)>,
    push: Vec<Item>,
    push_bytes: usize,
    differing: Vec<u64>,
    /// Check mode: more keys differ than `check_limit`.
    over_limit: bool,
    /// Check mode: the peer's full digest of each bucket whose entries were read in full.
    resolved: hashbrown::HashMap<u64, Digest, FixedState>,
    /// Check mode: the peer's entries so far of a bucket cut by a truncated leaf answer,
    /// completed by the answer that resumes it.
    partial: Option<(u64, Vec<(u64, Digest)>)>,
    /// Check mode: the digests, by (level, index), of the local tree with the `resolved`
    /// buckets replaced by the peer's, for those buckets and their ancestors (as of the last
    /// root exchange). Empty outside check mode.
    patched: hashbrown::HashMap<(u8, u64), Digest, FixedState>,
    /// Malformed answers received for the outstanding request.
    malformed_in_a_row: u32,
    outstanding: Option<(SyncRequest, Pending)>,
    stats: SessionStats,
}

/// What an outstanding request was for, to check and use its answer.
#[derive(Clone, Debug)]
enum Pending {
    /// The root sent: the local tree may change (local writes, pushes from other peers)
    /// before the answer arrives, and the peer compared against this one.
    Roots {
        sent: Digest,
        /// The peer's root once every difference is accounted for: `sent` outside check
        /// mode, the patched root in check mode (see the module docs).
        expected: Digest,
    },
    /// A step of the descent.
    Work(Work),
    Fetch {
        ids: Vec<(u64, bool)>,
    },
    Push {
        count: usize,
    },
}

impl SyncSession {
    /// A session that reconciles: both sides end up with the winners of every key.
    pub fn new(config: SyncConfig) -> SyncSession {
        SyncSession {
            config,
            check_only: false,
            check_limit: 0,
            phase: Phase::Roots,
            pass: 0,
            stack: Vec::new(),
            fetch: Vec::new(),
            push: Vec::new(),
            push_bytes: 0,
            differing: Vec::new(),
            over_limit: false,
            resolved: hashbrown::HashMap::default(),
            partial: None,
            patched: hashbrown::HashMap::default(),
            malformed_in_a_row: 0,
            outstanding: None,
            stats: SessionStats::default(),
        }
    }

    /// A session that only compares: it changes neither side and reports up to `limit` key
    /// hashes that differ (see [`SyncOutcome::differing`]), all of them unless
    /// [`SyncOutcome::differing_complete`] is false. Exact with any `digest_len`: leaf
    /// entries are compared in full, and the session runs passes until the buckets found to
    /// differ account for the peer's full root (see the module docs). Use it on trees taken
    /// at the same applied index; a tree changing during the check can exhaust
    /// [`SyncConfig::max_passes`] and leave the list incomplete.
    pub fn check(config: SyncConfig, limit: usize) -> SyncSession {
        SyncSession {
            check_only: true,
            check_limit: limit,
            ..Self::new(config)
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Whether a request is waiting for its answer.
    pub fn is_waiting(&self) -> bool {
        self.outstanding.is_some()
    }

    /// The next request to send, or the outcome. While a request is outstanding (its answer
    /// was lost, or was malformed), returns that request again: as often as the caller asks
    /// for a lost answer, and at most [`SyncConfig::max_malformed_answers`] times after
    /// malformed ones, after which the session is over.
    pub fn poll<S: SyncStore>(&mut self, store: &mut S) -> Step {
        if let Phase::Done(outcome) = &self.phase {
            return Step::Done(outcome.clone());
        }
        if let Some((request, _)) = &self.outstanding {
            self.stats.resends += 1;
            return Step::Send(request.clone());
        }
        let (request, pending) = self.next(store);
        self.outstanding = Some((request.clone(), pending));
        Step::Send(request)
    }

    fn next<S: SyncStore>(&mut self, store: &mut S) -> (SyncRequest, Pending) {
        if self.phase == Phase::Roots {
            let tree = store.tree_mut();
            let root = tree.root();
            let request = SyncRequest::ExchangeRoots {
                root,
                count: tree.len() as u64,
                shape: tree.shape(),
                span: tree.span().clone(),
            };
            let expected = if self.check_only {
                self.patch(store.tree());
                self.local_node(store.tree(), 0, 0)
            } else {
                root
            };
            return (
                request,
                Pending::Roots {
                    sent: root,
                    expected,
                },
            );
        }
        if self.push.len() >= self.config.max_push_items
            || self.push_bytes >= self.config.max_batch_bytes
        {
            return self.push_request();
        }
        if self.fetch.len() >= self.config.max_fetch {
            return self.fetch_request();
        }
        if let Some(work) = self.stack.pop() {
            let window = self.used_window();
            let sorted = |v: &Vec<u64>| NodeList::new(v.clone()).expect("work lists are sorted");
            let request = match &work {
                Work::Nodes { level, nodes } => SyncRequest::GetNodes {
                    level: *level,
                    nodes: sorted(nodes),
                    window,
                    max: self.config.max_digests_per_response,
                },
                Work::Leaves { buckets, after } => SyncRequest::GetLeaves {
                    buckets: sorted(buckets),
                    after: *after,
                    window: self.leaf_window(),
                    max: self.config.max_leaves_per_response,
                },
            };
            return (request, Pending::Work(work));
        }
        if !self.fetch.is_empty() {
            return self.fetch_request();
        }
        if !self.push.is_empty() {
            return self.push_request();
        }
        // The pass is over: compare full roots.
        self.phase = Phase::Roots;
        self.next(store)
    }

    fn fetch_request(&mut self) -> (SyncRequest, Pending) {
        let n = self.fetch.len().min(self.config.max_fetch);
        let ids: Vec<(u64, bool)> = self.fetch.drain(..n).collect();
        let request = SyncRequest::Fetch {
            ids: IdList(ids.iter().map(|&(id, _)| id).collect()),
        };
        (request, Pending::Fetch { ids })
    }

    fn push_request(&mut self) -> (SyncRequest, Pending) {
        let mut n = 0;
        let mut bytes = 0;
        for item in &self.push {
            if n == self.config.max_push_items
                || (n > 0 && bytes + item.size() > self.config.max_batch_bytes)
            {
                break;
            }
            bytes += item.size();
            n += 1;
        }
        let items: Vec<Item> = self.push.drain(..n).collect();
        self.push_bytes -= bytes;
        self.stats.items_pushed += n as u64;
        (SyncRequest::Push { items }, Pending::Push { count: n })
    }

    /// Takes the peer's answer to the outstanding request. On `Err` the request stays
    /// outstanding ([`SyncSession::poll`] sends it again), except when the peer refused it
    /// or answered it badly once more than [`SyncConfig::max_malformed_answers`] allows
    /// ([`SyncError::TooManyMalformed`]), which end the session unconverged.
    pub fn handle_response<S: SyncStore>(
        &mut self,
        store: &mut S,
        response: SyncResponse,
    ) -> Result<(), SyncError> {
        let Some((request, pending)) = self.outstanding.take() else {
            return Err(SyncError::NoRequest);
        };
        if let SyncResponse::Refused { error } = response {
            self.finish(false, false);
            return Err(SyncError::Refused(error));
        }
        match self.apply(store, &pending, response) {
            Ok(()) => {
                self.stats.round_trips += 1;
                self.malformed_in_a_row = 0;
                Ok(())
            }
            Err(e) => {
                self.stats.malformed_responses += 1;
                self.malformed_in_a_row = self.malformed_in_a_row.saturating_add(1);
                tracing::debug!(%e, "malformed sync response");
                if self.malformed_in_a_row > self.config.max_malformed_answers {
                    let count = self.malformed_in_a_row;
                    tracing::debug!(count, "giving up on a peer that keeps answering badly");
                    self.finish(false, false);
                    return Err(SyncError::TooManyMalformed {
                        count,
                        last: e.to_string(),
                    });
                }
                self.outstanding = Some((request, pending));
                Err(e)
            }
        }
    }

    /// Ends the session. `complete`: whether `differing` is all that differs.
    fn finish(&mut self, converged: bool, complete: bool) {
        let mut differing = std::mem::take(&mut self.differing);
        // A bucket read twice (never by an honest, still peer) lists its keys twice.
        differing.sort_unstable();
        differing.dedup();
        self.phase = Phase::Done(SyncOutcome {
            converged,
            passes: self.pass,
            differing,
            differing_complete: complete && !self.over_limit,
        });
        self.stack.clear();
        self.fetch.clear();
        self.push.clear();
        self.push_bytes = 0;
        self.resolved.clear();
        self.partial = None;
        self.patched.clear();
    }

    fn apply<S: SyncStore>(
        &mut self,
        store: &mut S,
        pending: &Pending,
        response: SyncResponse,
    ) -> Result<(), SyncError> {
        let malformed = |what: &str| Err(SyncError::Malformed(what.to_string()));
        match (pending, response) {
            (
                Pending::Roots { sent, expected },
                SyncResponse::Roots {
                    root, roots_match, ..
                },
            ) => {
                if roots_match != (root == *sent) {
                    return malformed("roots_match disagrees with the roots");
                }
                if roots_match || root == *expected {
                    // Outside check mode `expected` is `sent`. In check mode, a match with
                    // the patched root means every differing key is in a bucket read in
                    // full, so `differing` is complete.
                    self.finish(roots_match, true);
                } else if self.pass >= self.config.max_passes {
                    self.finish(false, false);
                } else {
                    self.pass += 1;
                    self.phase = Phase::Descend;
                    self.partial = None;
                    self.stack.push(Work::Nodes {
                        level: 0,
                        nodes: vec![0],
                    });
                }
                Ok(())
            }
            (
                Pending::Work(Work::Nodes { level, nodes }),
                SyncResponse::Nodes { digests, truncated },
            ) => self.on_nodes(store, *level, nodes, &digests, truncated),
            (
                Pending::Work(Work::Leaves { buckets, after }),
                SyncResponse::Leaves {
                    ids,
                    digests,
                    truncated,
                },
            ) => self.on_leaves(store, buckets, *after, &ids.0, &digests, truncated),
            (Pending::Fetch { ids }, SyncResponse::Items { items, answered }) => {
                self.on_items(store, ids, items, answered as usize)
            }
            (Pending::Push { count }, SyncResponse::Pushed { accepted, refused }) => {
                if (accepted as usize) + (refused as usize) != *count {
                    return malformed("push answer counts a different number of items");
                }
                self.stats.items_pushed_accepted += u64::from(accepted);
                Ok(())
            }
            _ => malformed("answer of the wrong kind"),
        }
    }

    /// The digest window of the current pass (pass 1 compares window 0).
    fn used_window(&self) -> DigestWindow {
        DigestWindow {
            len: self.config.digest_len,
            window: self.pass.saturating_sub(1),
        }
    }

    /// The digest window of leaf entries: full digests in check mode, which needs the
    /// peer's exact bucket digests (see the module docs); the pass's window otherwise.
    fn leaf_window(&self) -> DigestWindow {
        if self.check_only {
            DigestWindow {
                len: DIGEST_LEN as u8,
                window: 0,
            }
        } else {
            self.used_window()
        }
    }

    /// The local digest of node `index` at `level` to compare with the peer's: the tree's,
    /// or in check mode the patched one where a resolved bucket lies below.
    fn local_node(&self, tree: &MerkleTree, level: u8, index: u64) -> Digest {
        if self.patched.is_empty() {
            return tree.node(level, index);
        }
        self.patched
            .get(&(level, index))
            .copied()
            .unwrap_or_else(|| tree.node(level, index))
    }

    /// Check mode: recomputes `patched` from `resolved` over the (refreshed) local tree,
    /// bottom up as [`MerkleTree::refresh`] does, ancestors shared by resolved buckets once.
    fn patch(&mut self, tree: &MerkleTree) {
        self.patched.clear();
        let shape = tree.shape();
        let depth = shape.depth();
        let mut level_nodes: Vec<u64> = Vec::with_capacity(self.resolved.len());
        for (&bucket, &digest) in &self.resolved {
            self.patched.insert((depth, bucket), digest);
            level_nodes.push(bucket);
        }
        let mut children = Vec::with_capacity(shape.fanout());
        shape.for_each_ancestor(&mut level_nodes, |level, index, below| {
            children.clear();
            children.extend(below.map(|child| self.local_node(tree, level + 1, child)));
            let digest = inner_digest(&children);
            self.patched.insert((level, index), digest);
        });
    }

    fn on_nodes<S: SyncStore>(
        &mut self,
        store: &mut S,
        level: u8,
        nodes: &[u64],
        digests: &[u8],
        truncated: bool,
    ) -> Result<(), SyncError> {
        let window = self.used_window();
        let tree = store.tree_mut();
        tree.refresh();
        let shape = tree.shape();
        let fanout = shape.fanout();
        let per_parent = fanout * window.len();
        if digests.is_empty() || !digests.len().is_multiple_of(per_parent) {
            return Err(SyncError::Malformed(
                "digest block of the wrong size".into(),
            ));
        }
        let answered = digests.len() / per_parent;
        if answered > nodes.len() || truncated != (answered < nodes.len()) {
            return Err(SyncError::Malformed(
                "node answer does not fit the request".into(),
            ));
        }
        let mut differing = Vec::new();
        for (&parent, theirs) in nodes[..answered]
            .iter()
            .zip(digests.chunks_exact(per_parent))
        {
            let first = shape.first_child(parent);
            for (i, their) in theirs.chunks_exact(window.len()).enumerate() {
                let child = first + i as u64;
                if self.local_node(tree, level + 1, child).window(window) != their {
                    differing.push(child);
                }
            }
        }
        self.stats.digests_compared += (answered * fanout) as u64;
        if truncated {
            self.stack.push(Work::Nodes {
                level,
                nodes: nodes[answered..].to_vec(),
            });
        }
        let child_level = level + 1;
        let batch = self.config.max_nodes_per_request as usize;
        // Pushed in reverse so the leftmost batch is worked on first.
        for chunk in differing.chunks(batch).rev() {
            let nodes = chunk.to_vec();
            self.stack.push(if child_level == shape.depth() {
                Work::Leaves {
                    buckets: nodes,
                    after: None,
                }
            } else {
                Work::Nodes {
                    level: child_level,
                    nodes,
                }
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_leaves<S: SyncStore>(
        &mut self,
        store: &mut S,
        buckets: &[u64],
        after: Option<u64>,
        ids: &[u64],
        digests: &[u8],
        truncated: bool,
    ) -> Result<(), SyncError> {
        let window = self.leaf_window();
        let shape = store.tree().shape();
        if digests.len() != ids.len() * window.len() {
            return Err(SyncError::Malformed(
                "leaf digests do not match the ids".into(),
            ));
        }
        if truncated && ids.is_empty() {
            return Err(SyncError::Malformed(
                "truncated leaf answer without entries".into(),
            ));
        }
        // Ids must be in order, each in a bucket asked for, past the resume point.
        let mut bucket_pos = 0;
        for (i, &id) in ids.iter().enumerate() {
            if i > 0 && id < ids[i - 1] {
                return Err(SyncError::Malformed("leaf ids out of order".into()));
            }
            let b = shape.bucket_of(id);
            while bucket_pos < buckets.len() && buckets[bucket_pos] < b {
                bucket_pos += 1;
            }
            if bucket_pos == buckets.len() || buckets[bucket_pos] != b {
                return Err(SyncError::Malformed(
                    "leaf id outside the buckets asked for".into(),
                ));
            }
            if after.is_some_and(|after| id <= after) {
                return Err(SyncError::Malformed(
                    "leaf id before the resume point".into(),
                ));
            }
        }
        self.stats.leaves_compared += ids.len() as u64;
        // With a truncated answer, only what it covers is compared; the rest is asked again.
        let last = truncated.then(|| ids[ids.len() - 1]);
        let covered = match last {
            Some(last) => buckets.partition_point(|&b| b <= shape.bucket_of(last)),
            None => buckets.len(),
        };
        let tree = store.tree();
        let mut theirs = ids
            .iter()
            .copied()
            .zip(digests.chunks_exact(window.len()))
            .peekable();
        let mut to_fetch = Vec::new();
        let mut to_push = Vec::new();
        for (i, &b) in buckets[..covered].iter().enumerate() {
            let lower = if i == 0 { after } else { None };
            let mine: Vec<_> = tree
                .bucket(b)
                .iter()
                .filter(|e| {
                    lower.is_none_or(|a| e.hash() > a) && last.is_none_or(|l| e.hash() <= l)
                })
                .collect();
            let mut m = 0;
            loop {
                let their_id = theirs
                    .peek()
                    .map(|&(id, _)| id)
                    .filter(|&id| shape.bucket_of(id) == b);
                let my_id = mine.get(m).map(|e| e.hash());
                let id = match (their_id, my_id) {
                    (None, None) => break,
                    (Some(t), Some(my)) => t.min(my),
                    (Some(t), None) => t,
                    (None, Some(my)) => my,
                };
                let mut their_group = Vec::new();
                while let Some(&(tid, d)) = theirs.peek() {
                    if tid != id {
                        break;
                    }
                    their_group.push(d);
                    theirs.next();
                }
                let mut my_group = Vec::new();
                while m < mine.len() && mine[m].hash() == id {
                    my_group.push(mine[m].digest().window(window));
                    m += 1;
                }
                if their_group == my_group {
                    continue;
                }
                match (their_group.is_empty(), my_group.is_empty()) {
                    (false, true) => to_fetch.push((id, false)),
                    (true, false) => to_push.push(id),
                    _ => to_fetch.push((id, true)),
                }
            }
        }
        if let Some(last) = last {
            self.stack.push(Work::Leaves {
                buckets: buckets[covered - 1..].to_vec(),
                after: Some(last),
            });
        }
        if self.check_only {
            self.resolve_buckets(shape, &buckets[..covered], after, truncated, ids, digests);
            let found = to_fetch
                .iter()
                .map(|&(id, _)| id)
                .chain(to_push.iter().copied());
            for id in found {
                if self.differing.len() >= self.check_limit {
                    self.over_limit = true;
                    break;
                }
                self.differing.push(id);
            }
            if self.over_limit {
                // The list is full: what more passes would find could not be reported.
                self.finish(false, false);
            }
            return Ok(());
        }
        self.fetch.extend(to_fetch);
        for id in to_push {
            self.queue_push(store, id, &[]);
        }
        Ok(())
    }

    /// Check mode: records the peer's full digest of each bucket of `covered` whose entries
    /// this leaf answer (with full digests) completes. The last bucket of a truncated answer
    /// is kept in `partial` for the answer that resumes it; a resumed bucket whose start was
    /// not kept stays unresolved (another pass reads it again).
    #[allow(clippy::too_many_arguments)]
    fn resolve_buckets(
        &mut self,
        shape: TreeShape,
        covered: &[u64],
        after: Option<u64>,
        truncated: bool,
        ids: &[u64],
        digests: &[u8],
    ) {
        let carried = self.partial.take();
        let mut theirs = ids
            .iter()
            .copied()
            .zip(digests.chunks_exact(DIGEST_LEN))
            .peekable();
        for (i, &bucket) in covered.iter().enumerate() {
            let (mut known, mut entries) = match (i, after, &carried) {
                (0, Some(_), Some((cut, so_far))) if *cut == bucket => (true, so_far.clone()),
                (0, Some(_), _) => (false, Vec::new()),
                _ => (true, Vec::new()),
            };
            while let Some((id, digest)) = theirs.next_if(|&(id, _)| shape.bucket_of(id) == bucket)
            {
                match <[u8; DIGEST_LEN]>::try_from(digest) {
                    Ok(bytes) => entries.push((id, Digest(bytes))),
                    Err(_) => known = false,
                }
            }
            if truncated && i + 1 == covered.len() {
                if known {
                    self.partial = Some((bucket, entries));
                }
            } else if known {
                let digest = bucket_digest(entries.iter().map(|(id, digest)| (*id, digest)));
                self.resolved.insert(bucket, digest);
            }
        }
    }

    /// Queues the local items with key hash `id` for the peer, except copies it just sent.
    fn queue_push<S: SyncStore>(&mut self, store: &S, id: u64, sent_by_peer: &[Item]) {
        let mut items = Vec::new();
        store.items_with_hash(id, &mut items);
        for item in items {
            if sent_by_peer.contains(&item) {
                continue;
            }
            self.push_bytes += item.size();
            self.push.push(item);
        }
    }

    fn on_items<S: SyncStore>(
        &mut self,
        store: &mut S,
        ids: &[(u64, bool)],
        items: Vec<Item>,
        answered: usize,
    ) -> Result<(), SyncError> {
        if answered > ids.len() || (answered == 0 && !ids.is_empty()) {
            return Err(SyncError::Malformed(
                "fetch answer covers no or too many ids".into(),
            ));
        }
        let asked = &ids[..answered];
        let wanted: hashbrown::HashSet<u64, foldhash::fast::FixedState> =
            asked.iter().map(|&(id, _)| id).collect();
        let mut received: Vec<(u64, Item)> = Vec::with_capacity(items.len());
        for item in items {
            let id = key_hash(&item.key);
            if !wanted.contains(&id) {
                self.stats.items_refused += 1;
                tracing::debug!("peer sent an item that was not asked for; refused");
                continue;
            }
            received.push((id, item));
        }
        for (_, item) in &received {
            match store.offer(item.clone(), &self.config.limits) {
                Ok(()) => self.stats.items_taken += 1,
                Err(Refusal::Stale) => self.stats.items_stale += 1,
                Err(Refusal::Invalid) => self.stats.items_refused += 1,
            }
        }
        // Sorted by id, so each reconciled id finds what the peer sent by binary search.
        received.sort_unstable_by_key(|&(id, _)| id);
        for &(id, reconcile) in asked {
            if reconcile {
                let start = received.partition_point(|(rid, _)| *rid < id);
                let end = start + received[start..].partition_point(|(rid, _)| *rid == id);
                let sent: Vec<Item> = received[start..end]
                    .iter()
                    .map(|(_, item)| item.clone())
                    .collect();
                self.queue_push(store, id, &sent);
            }
        }
        // Ids the answer had no room for go back to the front of the queue.
        let rest = ids[answered..].iter().copied();
        self.fetch.splice(0..0, rest);
        Ok(())
    }
}

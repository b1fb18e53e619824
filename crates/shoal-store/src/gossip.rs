//! Range descriptors spread by gossip, so every node learns where every range is without
//! asking (shoal-ranges' [`DescriptorSet`] merge over membership user broadcasts).
//!
//! Each leader announces the ranges it leads (the descriptor with itself as the leader
//! hint, dated by its Raft term) when one is new to it or changed, and every [`REANNOUNCE`];
//! every node merges what it hears into the set it answers lookups from. Broadcasts are
//! best-effort, and a node that joins heard none of the earlier ones, so every node also
//! pulls a peer's whole set now and then ([`RangesRpc`], every [`PULL_EVERY`] and right
//! after joining) and merges it: anti-entropy, as membership's push-pull does for members.
//! The merge is a semilattice (higher generation wins key by key, hints by term), so the
//! order and duplication of broadcasts do not matter, and a node that missed some converges
//! from later ones.

use super::node::Inner;
use super::topology::TopologyInner;
use shoal_core::{RangeDescriptor, RangeId};
use shoal_membership::UserMessage;
use shoal_ranges::DescriptorSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Marks a user broadcast as a descriptor chunk (other users of broadcasts may share the
/// channel).
const PREFIX: &[u8] = b"shoal.ranges.descriptors/1:";
/// How often leaders check what to announce.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Announced again at least this often, for nodes that missed it.
const REANNOUNCE: Duration = Duration::from_secs(30);
/// How often a node pulls a random peer's whole set.
const PULL_EVERY: Duration = Duration::from_secs(5);
/// The most bytes of descriptors one pull answers with.
const MAX_PULL_BYTES: usize = 8 << 20;

/// A node's whole set of known descriptors, as chunks ([`DescriptorSet::encode_chunks`]).
pub struct RangesRpc;

impl shoal_transport::Rpc for RangesRpc {
    const NAME: &'static str = "shoal.store.ranges";
    type Request = ();
    type Response = Vec<Vec<u8>>;
}

/// This node's set as chunks, for [`RangesRpc`].
pub(crate) fn answer_pull(inner: &TopologyInner) -> Result<Vec<Vec<u8>>, shoal_core::Error> {
    let chunks = inner
        .known_ranges()
        .encode_fitting_chunks(MAX_PULL_BYTES)
        .map_err(|e| shoal_core::Error::new(shoal_core::ErrorCode::Internal, e.to_string()))?;
    Ok(chunks.chunks)
}

/// Pulls `from`'s whole set and merges it.
pub(crate) async fn pull(inner: &TopologyInner, from: std::net::SocketAddr) {
    use shoal_transport::RpcTransportExt;
    let max_key = inner.max_key_len;
    match inner
        .client
        .call::<RangesRpc>(from, &(), Duration::from_secs(5))
        .await
    {
        Ok(chunks) => {
            for chunk in chunks {
                match DescriptorSet::decode_chunk(&chunk, max_key) {
                    Ok(set) => {
                        inner.known_ranges().merge(&set);
                    }
                    Err(e) => {
                        tracing::warn!(%from, error = %e, "refused a pulled descriptor chunk")
                    }
                }
            }
        }
        Err(e) => tracing::debug!(%from, error = %e, "pulling descriptors failed"),
    }
}

/// Pulls a random live peer's set every [`PULL_EVERY`].
pub(crate) async fn pull_now_and_then(inner: Arc<TopologyInner>) {
    let mut ticker = tokio::time::interval(PULL_EVERY);
    let mut turn = inner.id.get() as usize;
    loop {
        ticker.tick().await;
        let Ok(members) = inner.members.members().await else {
            return;
        };
        let peers: Vec<std::net::SocketAddr> = members
            .iter()
            .filter(|m| m.id != inner.id && m.state.is_live())
            .map(|m| m.addr)
            .collect();
        if peers.is_empty() {
            continue;
        }
        turn = turn.wrapping_add(1);
        pull(&inner, peers[turn % peers.len()]).await;
    }
}

/// Announces the ranges this node leads (see the module docs).
pub(crate) async fn announce(inner: Arc<Inner>) {
    let max_bytes = inner
        .config
        .membership
        .max_user_broadcast_bytes
        .saturating_sub(PREFIX.len());
    let max_key = inner.config.engine.max_key_len;
    let topology = &inner.topology.inner;
    // What was last announced per range: its generation, the hint's term, and when.
    let mut announced: HashMap<RangeId, (u64, u64, tokio::time::Instant)> = HashMap::new();
    // The generation of each hosted descriptor last merged into the known set.
    let mut learned: HashMap<RangeId, u64> = HashMap::new();
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    // A pass over every hosted range is skipped while no descriptor and no leader changed,
    // for up to half of REANNOUNCE: idle ranges cost no pass every CHECK_EVERY.
    let mut leaders = inner.groups.driver().subscribe_leaders();
    let mut passed: Option<(u64, tokio::time::Instant)> = None;
    loop {
        ticker.tick().await;
        let now = tokio::time::Instant::now();
        let mut leaders_changed = false;
        while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
            leaders.try_recv()
        {
            leaders_changed = true;
        }
        let version = inner.groups.descriptors_version();
        if !leaders_changed
            && passed.is_some_and(|(v, at)| v == version && now.duration_since(at) < REANNOUNCE / 2)
        {
            continue;
        }
        passed = Some((version, now));
        let mut delta = DescriptorSet::new();
        for descriptor in inner.groups.descriptors() {
            // What this node hosts it knows first-hand, whoever leads (merged once per
            // generation, not every check).
            let generation = descriptor.generation.get();
            if learned.insert(descriptor.id, generation) != Some(generation) {
                topology.learn(&descriptor, 0);
            }
            let Some(leader) = inner.groups.driver().leader(descriptor.id.into()) else {
                continue;
            };
            if leader.id != Some(inner.id) {
                continue;
            }
            let current = (descriptor.generation.get(), leader.term);
            let fresh = announced.get(&descriptor.id).is_some_and(|&(g, t, at)| {
                (g, t) == current && now.duration_since(at) < REANNOUNCE
            });
            if fresh {
                continue;
            }
            match DescriptorSet::leader_delta(&descriptor, inner.id, leader.term, max_key) {
                Ok(d) => {
                    delta.merge(&d);
                    announced.insert(descriptor.id, (current.0, current.1, now));
                }
                Err(e) => {
                    tracing::warn!(range = %descriptor.id, error = %e, "a descriptor cannot be gossiped")
                }
            }
        }
        if delta.is_empty() {
            continue;
        }
        topology.known_ranges().merge(&delta);
        let chunks = match delta.encode_fitting_chunks(max_bytes) {
            Ok(chunks) => chunks,
            Err(e) => {
                tracing::warn!(error = %e, "descriptors could not be chunked");
                continue;
            }
        };
        for d in &chunks.oversized {
            tracing::warn!(range = %d.id, "a descriptor too large to gossip; peers learn it by lookup");
        }
        for chunk in chunks.chunks {
            let mut payload = PREFIX.to_vec();
            payload.extend_from_slice(&chunk);
            if let Err(e) = topology.members.broadcast(payload).await {
                tracing::debug!(error = %e, "a descriptor broadcast was refused");
            }
        }
    }
}

/// Merges the descriptor chunks other nodes broadcast.
pub(crate) async fn listen(
    inner: Arc<TopologyInner>,
    mut messages: broadcast::Receiver<UserMessage>,
) {
    let max_key = inner.max_key_len;
    loop {
        match messages.recv().await {
            Ok(message) => {
                let Some(chunk) = message.payload.strip_prefix(PREFIX) else {
                    continue;
                };
                match DescriptorSet::decode_chunk(chunk, max_key) {
                    Ok(set) => {
                        inner.known_ranges().merge(&set);
                    }
                    Err(e) => {
                        tracing::warn!(from = %message.from, error = %e, "refused a descriptor chunk")
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "missed descriptor broadcasts; later ones catch up");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Inner {
    /// Every descriptor this node has for `key`: the hosted range's (as applied here) and
    /// the freshest one gossip brought, if it differs. Routers take the highest generation.
    pub(crate) fn descriptors_for(&self, key: &[u8]) -> Vec<RangeDescriptor> {
        let mut found: Vec<RangeDescriptor> =
            self.groups.hosted_range_for(key).into_iter().collect();
        if let Some(known) = self.topology.inner.known_ranges().winner(key) {
            if !found
                .iter()
                .any(|d| d.id == known.id && d.generation >= known.generation)
            {
                found.push(known.clone());
            }
        }
        found
    }
}

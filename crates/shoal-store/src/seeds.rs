//! Keeping in touch with the seeds a node joined through. A join succeeds once one seed
//! answers; if that seed then dies before gossip has told this node about the others (a
//! cluster whose nodes all start at once, its first node killed a second later), this node
//! would know no live member, and its ranges could not elect leaders for want of their
//! peers' addresses. So, as Consul's `retry_join` and Cassandra's seeds do, the store joins
//! again through each seed that no live member is known at: after
//! [`StoreConfig::rejoin_interval`], then backing off to every 30 s while seeds stay missing.
//!
//! [`StoreConfig::rejoin_interval`]: super::StoreConfig::rejoin_interval

use super::topology::TopologyInner;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most seeds remembered (joins beyond it add nothing).
const MAX_SEEDS: usize = 64;

/// The longest wait between joins through seeds still missing: a seed that is gone for
/// good (a decommissioned machine left in `--join`) costs one attempt per 30 s.
const MAX_REJOIN_INTERVAL: Duration = Duration::from_secs(30);

/// The seeds this node joined through.
#[derive(Default)]
pub(crate) struct Seeds {
    addrs: Mutex<Vec<SocketAddr>>,
    /// Held by a join in progress: the background rejoin stays out of its way (a newer
    /// join supersedes a pending one).
    pub(crate) joining: tokio::sync::Mutex<()>,
}

impl Seeds {
    /// Remembers `seeds` (other than `own`).
    pub(crate) fn remember(&self, seeds: &[SocketAddr], own: SocketAddr) {
        let mut addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        for &seed in seeds {
            if seed != own && !addrs.contains(&seed) && addrs.len() < MAX_SEEDS {
                addrs.push(seed);
            }
        }
    }

    fn all(&self) -> Vec<SocketAddr> {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Every `rejoin_interval`, joins through the seeds no live member is known at; while the
/// same seeds stay missing, the wait doubles up to [`MAX_REJOIN_INTERVAL`].
pub(crate) async fn rejoin(inner: Arc<TopologyInner>) {
    let base = inner.rejoin_interval;
    if base.is_zero() {
        return;
    }
    let mut interval = base;
    loop {
        tokio::time::sleep(interval).await;
        let seeds = inner.seeds.all();
        if seeds.is_empty() {
            continue;
        }
        let Ok(_joining) = inner.seeds.joining.try_lock() else {
            continue;
        };
        let Ok(members) = inner.members.members().await else {
            continue;
        };
        let missing: Vec<SocketAddr> = seeds
            .into_iter()
            .filter(|seed| {
                !members
                    .iter()
                    .any(|m| m.addr == *seed && m.id != inner.id && m.state.is_live())
            })
            .collect();
        if missing.is_empty() {
            interval = base;
            continue;
        }
        interval = (interval * 2).min(MAX_REJOIN_INTERVAL.max(base));
        tracing::debug!(node = %inner.id, ?missing, "joining again through seeds not known alive");
        // A seed still down is tried again next round; a pending attempt is superseded then.
        let _ = tokio::time::timeout(interval, inner.members.join(missing)).await;
    }
}

//! Settings of a sync session and of the responder that answers it.

use crate::digest::{DigestWindow, DIGEST_LEN};
use crate::message::MAX_FETCH;
use crate::store::ItemLimits;

/// Tuning and limits for [`SyncSession`](crate::SyncSession) and
/// [`Responder`](crate::Responder). Both ends should use the same values; the responder
/// enforces its own limits whatever the asker sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// Bytes of each digest compared while descending (2 to 32; default 3). Shorter costs
    /// fewer bytes; a chance match (2<sup>-8·len</sup> per comparison) only costs another
    /// pass, because a session ends by comparing full roots. Use 32 for consistency checks.
    pub digest_len: u8,
    /// Most parent nodes per `GetNodes` request (default 4,096).
    pub max_nodes_per_request: u32,
    /// Most child digests a responder sends in one answer (default 16,384).
    pub max_digests_per_response: u32,
    /// Most leaf entries per `GetLeaves` answer (default 8,192).
    pub max_leaves_per_response: u32,
    /// Ids per `Fetch` (default and maximum 1,000).
    pub max_fetch: usize,
    /// Most bytes of items in one `Items` answer or one `Push` (default 4 MiB; one item is
    /// always allowed, so an item at the size limit still moves).
    pub max_batch_bytes: usize,
    /// Most items per `Push` (default 1,000).
    pub max_push_items: usize,
    /// Passes before a session gives up converging (default 4): a pass ends by comparing
    /// full roots, which differ again only after a chance digest match or concurrent writes.
    pub max_passes: u8,
    /// Size limits on items taken from the peer.
    pub limits: ItemLimits,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            digest_len: 3,
            max_nodes_per_request: 4096,
            max_digests_per_response: 16384,
            max_leaves_per_response: 8192,
            max_fetch: MAX_FETCH,
            max_batch_bytes: 4 << 20,
            max_push_items: 1000,
            max_passes: 4,
            limits: ItemLimits::default(),
        }
    }
}

impl SyncConfig {
    /// Full 32-byte digests: no chance matches, for consistency checks.
    pub fn exact() -> Self {
        SyncConfig {
            digest_len: DIGEST_LEN as u8,
            ..Self::default()
        }
    }

    /// Checks the settings make sense.
    pub fn validate(&self) -> Result<(), String> {
        if !(DigestWindow {
            len: self.digest_len,
            window: 0,
        })
        .is_valid()
        {
            return Err(format!(
                "digest_len must be 2 to 32, not {}",
                self.digest_len
            ));
        }
        if self.max_nodes_per_request == 0
            || self.max_digests_per_response < 256
            || self.max_leaves_per_response == 0
            || self.max_push_items == 0
            || self.max_passes == 0
        {
            return Err("request and response limits must be positive (max_digests_per_response at least 256, one full fanout)".into());
        }
        if self.max_fetch == 0 || self.max_fetch > MAX_FETCH {
            return Err(format!("max_fetch must be 1 to {MAX_FETCH}"));
        }
        Ok(())
    }
}

//! Settings of a sync session and of the responder that answers it.

use crate::digest::{DigestWindow, DIGEST_LEN};
use crate::error::ConfigError;
use crate::message::MAX_FETCH;
use crate::store::ItemLimits;

/// Tuning and limits for [`SyncSession`](crate::SyncSession) and
/// [`Responder`](crate::Responder). Both ends should use the same values; the responder
/// enforces its own limits whatever the asker sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// Bytes of each digest compared while descending (2 to 32; default 3). Shorter costs
    /// fewer bytes; a chance match (2<sup>-8·len</sup> per comparison) only costs another
    /// pass, because a session ends by comparing full roots. A check session
    /// ([`SyncSession::check`](crate::SyncSession::check)) is exact at any length: it
    /// compares leaf entries in full and runs passes until the differing buckets it found
    /// account for the peer's full root.
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
    /// How many times a session sends one request again after malformed answers to it
    /// (default 3). The next malformed answer ends the session unconverged with
    /// [`SyncError::TooManyMalformed`](crate::SyncError::TooManyMalformed), so a broken or
    /// hostile peer is not asked forever; 0 gives up at the first. A good answer resets the
    /// count. Lost answers are not counted: the caller decides how often to resend those.
    pub max_malformed_answers: u32,
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
            max_malformed_answers: 3,
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
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(DigestWindow {
            len: self.digest_len,
            window: 0,
        })
        .is_valid()
        {
            return Err(ConfigError::DigestLen {
                len: self.digest_len,
            });
        }
        let zero = [
            ("max_nodes_per_request", self.max_nodes_per_request == 0),
            ("max_leaves_per_response", self.max_leaves_per_response == 0),
            ("max_push_items", self.max_push_items == 0),
            ("max_passes", self.max_passes == 0),
        ];
        if let Some(&(field, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(ConfigError::Zero { field });
        }
        // The widest fanout a shape may have: a responder must fit one parent's children.
        let min = 256;
        if self.max_digests_per_response < min {
            return Err(ConfigError::TooFewDigests {
                value: self.max_digests_per_response,
                min,
            });
        }
        if self.max_fetch == 0 || self.max_fetch > MAX_FETCH {
            return Err(ConfigError::MaxFetch {
                value: self.max_fetch,
                max: MAX_FETCH,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_what_is_wrong() {
        assert_eq!(SyncConfig::default().validate(), Ok(()));
        assert_eq!(SyncConfig::exact().validate(), Ok(()));
        let with = |change: fn(&mut SyncConfig)| {
            let mut config = SyncConfig::default();
            change(&mut config);
            config.validate()
        };
        assert_eq!(
            with(|c| c.digest_len = 1),
            Err(ConfigError::DigestLen { len: 1 })
        );
        assert_eq!(
            with(|c| c.max_push_items = 0),
            Err(ConfigError::Zero {
                field: "max_push_items"
            })
        );
        assert_eq!(
            with(|c| c.max_digests_per_response = 255),
            Err(ConfigError::TooFewDigests {
                value: 255,
                min: 256
            })
        );
        assert_eq!(
            with(|c| c.max_fetch = MAX_FETCH + 1),
            Err(ConfigError::MaxFetch {
                value: MAX_FETCH + 1,
                max: MAX_FETCH
            })
        );
        // No malformed answer tolerated is a valid choice.
        assert_eq!(with(|c| c.max_malformed_answers = 0), Ok(()));
        assert!(with(|c| c.max_passes = 0)
            .unwrap_err()
            .to_string()
            .contains("max_passes"));
    }
}

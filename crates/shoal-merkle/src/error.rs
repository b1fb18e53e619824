//! What can go wrong: for the tree, for a sync session, and in its settings.

use shoal_core::{Error, ErrorCode};

/// A tree operation that was refused; the tree is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// Fanout or depth out of bounds.
    #[error("bad tree shape: fanout 2^{fanout_bits}, depth {depth} (fanout 2..=256, at most 2^24 buckets)")]
    BadShape {
        /// log2 of the fanout asked for.
        fanout_bits: u8,
        /// The depth asked for.
        depth: u8,
    },
    /// Two trees (or a tree and a peer) do not share a shape.
    #[error("tree shapes differ")]
    ShapeMismatch,
    /// A peer's tree covers another key range: roots over different keys say nothing about
    /// each other, and items of one range do not belong in the other.
    #[error("trees cover different key ranges")]
    SpanMismatch,
    /// The key is not in the tree's key range.
    #[error("key is outside the tree's key range")]
    KeyOutsideSpan,
    /// A split point not strictly inside the tree's key range.
    #[error("split key is not strictly inside the tree's key range")]
    BadSplitKey,
    /// A merge of trees whose key ranges are not left and right neighbours.
    #[error("trees to merge are not adjacent key ranges")]
    NotAdjacent,
}

/// Why a sync step failed. A failed step changes nothing it has not already applied (each
/// applied item was a complete, checked item); the session can be resumed or abandoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The peer's response breaks the protocol (wrong kind, wrong digest size, too many
    /// entries, ids that were not asked for...). Counted in the session's stats.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The peer refused the request.
    #[error("peer refused: {0}")]
    Refused(Error),
    /// A response arrived while no request was outstanding.
    #[error("response without a request")]
    NoRequest,
    /// The peer answered one request with malformed data more often than
    /// [`SyncConfig::max_malformed_answers`](crate::SyncConfig::max_malformed_answers)
    /// allows. The session has ended unconverged: a peer that cannot answer correctly is
    /// not asked forever.
    #[error("peer sent {count} malformed answers in a row to one request; last: {last}")]
    TooManyMalformed {
        /// Malformed answers received for the request.
        count: u32,
        /// What was wrong with the last one.
        last: String,
    },
    /// The tree refused an operation.
    #[error(transparent)]
    Tree(#[from] MerkleError),
}

/// Why [`SyncConfig::validate`](crate::SyncConfig::validate) refused a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `digest_len` is outside 2 to 32.
    #[error("digest_len must be 2 to 32, not {len}")]
    DigestLen {
        /// The length configured.
        len: u8,
    },
    /// A count limit that must be positive is zero.
    #[error("{field} must be positive")]
    Zero {
        /// The setting's name.
        field: &'static str,
    },
    /// `max_digests_per_response` is below one full fanout, so a responder could not answer
    /// for a single parent.
    #[error("max_digests_per_response must be at least {min} (one full fanout), not {value}")]
    TooFewDigests {
        /// The value configured.
        value: u32,
        /// The least allowed.
        min: u32,
    },
    /// `max_fetch` is zero or over the protocol's limit.
    #[error("max_fetch must be 1 to {max}, not {value}")]
    MaxFetch {
        /// The value configured.
        value: usize,
        /// The protocol's limit, [`MAX_FETCH`](crate::MAX_FETCH).
        max: usize,
    },
}

impl From<MerkleError> for Error {
    fn from(e: MerkleError) -> Self {
        Error::new(ErrorCode::InvalidRequest, e.to_string())
    }
}

//! What can go wrong, for the tree and for a sync session.

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
    /// The tree refused an operation.
    #[error(transparent)]
    Tree(#[from] MerkleError),
}

impl From<MerkleError> for Error {
    fn from(e: MerkleError) -> Self {
        Error::new(ErrorCode::InvalidRequest, e.to_string())
    }
}

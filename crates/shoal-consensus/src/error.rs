//! Why a proposal, read or transfer was refused.

use crate::membership::ConfChangeError;
use shoal_core::{ErrorCode, LeaderHint, NodeId};
use std::net::SocketAddr;

/// Why a proposal was refused. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader as far as this node knows.
        leader: Option<NodeId>,
    },
    /// Leadership is being handed to another node.
    #[error("leadership is moving to {to}")]
    TransferInProgress {
        /// The node taking over.
        to: NodeId,
    },
    /// The proposal is over the configured limit.
    #[error("proposal of {size} B over the limit of {max} B")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Too many bytes are appended but not yet committed; retry after a backoff.
    #[error("too much uncommitted data; retry later")]
    Overloaded,
    /// The membership change is not allowed now.
    #[error(transparent)]
    ConfChange(#[from] ConfChangeError),
}

/// Why a read could not be confirmed here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known, or the leader changed before confirming.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader as far as this node knows.
        leader: Option<NodeId>,
    },
    /// Leadership is being handed over; lease reads are off.
    #[error("leadership is moving to {to}")]
    TransferInProgress {
        /// The node taking over.
        to: NodeId,
    },
}

/// Why a leadership transfer was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader can hand over leadership.
    #[error("not the leader")]
    NotLeader,
    /// The target is not a voter of the group (or is this node).
    #[error("{0} is not another voter")]
    NotAVoter(NodeId),
}

impl ProposeError {
    /// The wire error for a client, with the leader's address from `addr_of`.
    pub fn code(&self, addr_of: impl Fn(NodeId) -> Option<SocketAddr>) -> ErrorCode {
        match self {
            ProposeError::NotLeader { leader } => not_leader(*leader, addr_of),
            ProposeError::TransferInProgress { to } => not_leader(Some(*to), addr_of),
            ProposeError::TooLarge { .. } => ErrorCode::TooLarge,
            ProposeError::Overloaded => ErrorCode::Overloaded,
            ProposeError::ConfChange(_) => ErrorCode::InvalidRequest,
        }
    }
}

impl ReadError {
    /// The wire error for a client, with the leader's address from `addr_of`.
    pub fn code(&self, addr_of: impl Fn(NodeId) -> Option<SocketAddr>) -> ErrorCode {
        match self {
            ReadError::NotLeader { leader } => not_leader(*leader, addr_of),
            ReadError::TransferInProgress { to } => not_leader(Some(*to), addr_of),
        }
    }
}

fn not_leader(leader: Option<NodeId>, addr_of: impl Fn(NodeId) -> Option<SocketAddr>) -> ErrorCode {
    ErrorCode::NotLeader {
        hint: leader.map(|node| LeaderHint {
            node,
            addr: addr_of(node),
        }),
    }
}

/// Why a group could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The log store could not be read.
    #[error(transparent)]
    Store(#[from] crate::store::LogStoreError),
    /// Bootstrapping a store that already holds a log.
    #[error("the log store is not empty; the group is already bootstrapped or joined")]
    AlreadyInitialized,
}

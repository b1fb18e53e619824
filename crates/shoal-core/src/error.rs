//! Error codes that cross the wire, and whether a caller may retry them.

use crate::descriptor::RangeDescriptor;
use crate::id::{NodeId, RangeId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// Where the leader is believed to be, so a client can redirect without asking around.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The believed leader.
    pub node: NodeId,
    /// Its RPC address, when the sender knows it.
    pub addr: Option<SocketAddr>,
}

/// What went wrong, in a form a remote caller can act on.
///
/// Codes that carry data carry exactly what a router needs to correct its caches.
/// [`ErrorCode::is_retriable`] tells whether sending the same request again (after correcting
/// caches, with backoff) can succeed.
///
/// On the wire a code is its variant index, so the order of the variants is part of the
/// protocol: a new code goes at the end, never in the middle (a golden test pins every index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// This replica is not the leader; try the hinted one.
    NotLeader {
        /// The leader as far as this replica knows.
        hint: Option<LeaderHint>,
    },
    /// The key is not in the range the request named; here are the descriptors this node
    /// holds for that key span, so the router can replace its stale ones.
    RangeKeyMismatch {
        /// Fresher descriptors.
        descriptors: Vec<RangeDescriptor>,
    },
    /// The node holds no replica of the range.
    RangeNotFound {
        /// The range asked for.
        range: RangeId,
    },
    /// The deadline passed before an answer. The request may or may not have taken effect.
    Timeout,
    /// The peer or a quorum cannot be reached right now.
    Unavailable,
    /// The peer is shedding load (too many requests in flight); back off and retry.
    Overloaded,
    /// Too few replicas are alive to satisfy the request's durability.
    NotEnoughReplicas,
    /// The request itself is wrong (bad key, bad arguments); retrying cannot help.
    InvalidRequest,
    /// No handler is registered for the method.
    UnknownMethod,
    /// The peer speaks another protocol version.
    UnsupportedVersion {
        /// The version the peer speaks.
        supported: u16,
    },
    /// A message, key or value is over a configured limit.
    TooLarge,
    /// Bytes that do not decode as the expected message.
    CorruptMessage,
    /// The peer is shutting down and takes no new requests.
    ShuttingDown,
    /// A bug or an unexpected failure on the peer.
    Internal,
    /// A write was accepted but its fate cannot be known (the leader lost its leadership or
    /// the range moved before the write was seen committed or dropped): it may or may not
    /// have taken effect, and never counts as a failure. Retry only what is safe to apply
    /// twice, or read back first.
    OutcomeUnknown,
    /// The request was never sent: no connection to the peer could be made (refused, or
    /// the peer was recently unreachable and is in backoff). Unlike [`ErrorCode::Unavailable`]
    /// and [`ErrorCode::Timeout`], which may come after a request left, this one is definite:
    /// it cannot have taken effect, so even a write may be sent elsewhere.
    Unreachable,
}

impl ErrorCode {
    /// Whether the same request, sent again after correcting caches and backing off, can
    /// succeed. Note that a retried [`ErrorCode::Timeout`] may apply a write twice unless the
    /// request is idempotent.
    pub fn is_retriable(&self) -> bool {
        match self {
            ErrorCode::NotLeader { .. }
            | ErrorCode::RangeKeyMismatch { .. }
            | ErrorCode::RangeNotFound { .. }
            | ErrorCode::Timeout
            | ErrorCode::Unavailable
            | ErrorCode::Overloaded
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::ShuttingDown
            | ErrorCode::Unreachable => true,
            ErrorCode::InvalidRequest
            | ErrorCode::UnknownMethod
            | ErrorCode::UnsupportedVersion { .. }
            | ErrorCode::TooLarge
            | ErrorCode::CorruptMessage
            | ErrorCode::Internal
            | ErrorCode::OutcomeUnknown => false,
        }
    }

    /// A short stable name, for metrics labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorCode::NotLeader { .. } => "not_leader",
            ErrorCode::RangeKeyMismatch { .. } => "range_key_mismatch",
            ErrorCode::RangeNotFound { .. } => "range_not_found",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::NotEnoughReplicas => "not_enough_replicas",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::UnsupportedVersion { .. } => "unsupported_version",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::CorruptMessage => "corrupt_message",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
            ErrorCode::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self {
            ErrorCode::NotLeader { hint: Some(hint) } => write!(f, " (leader {})", hint.node),
            ErrorCode::RangeNotFound { range } => write!(f, " ({range})"),
            ErrorCode::UnsupportedVersion { supported } => write!(f, " (peer speaks v{supported})"),
            ErrorCode::RangeKeyMismatch { descriptors } => {
                write!(f, " ({} fresher descriptors)", descriptors.len())
            }
            _ => Ok(()),
        }
    }
}

/// An error as seen by a caller: a code to act on and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// What to do about it.
    pub code: ErrorCode,
    /// What happened, for logs.
    pub message: String,
}

impl Error {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for [`ErrorCode::is_retriable`].
    pub fn is_retriable(&self) -> bool {
        self.code.is_retriable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_codes_are_the_transient_ones() {
        assert!(ErrorCode::NotLeader { hint: None }.is_retriable());
        assert!(ErrorCode::Unavailable.is_retriable());
        assert!(ErrorCode::Overloaded.is_retriable());
        assert!(ErrorCode::Timeout.is_retriable());
        assert!(!ErrorCode::InvalidRequest.is_retriable());
        assert!(!ErrorCode::CorruptMessage.is_retriable());
        assert!(!ErrorCode::UnsupportedVersion { supported: 2 }.is_retriable());
        assert!(!ErrorCode::Internal.is_retriable());
    }

    /// Peers of different versions must agree on what each index means: a code inserted or
    /// moved mid-list would silently turn one error into another on the wire.
    #[test]
    fn wire_indexes_of_error_codes_are_pinned() {
        let pinned = [
            (ErrorCode::NotLeader { hint: None }, 0u8),
            (
                ErrorCode::RangeKeyMismatch {
                    descriptors: vec![],
                },
                1,
            ),
            (
                ErrorCode::RangeNotFound {
                    range: RangeId::new(0),
                },
                2,
            ),
            (ErrorCode::Timeout, 3),
            (ErrorCode::Unavailable, 4),
            (ErrorCode::Overloaded, 5),
            (ErrorCode::NotEnoughReplicas, 6),
            (ErrorCode::InvalidRequest, 7),
            (ErrorCode::UnknownMethod, 8),
            (ErrorCode::UnsupportedVersion { supported: 0 }, 9),
            (ErrorCode::TooLarge, 10),
            (ErrorCode::CorruptMessage, 11),
            (ErrorCode::ShuttingDown, 12),
            (ErrorCode::Internal, 13),
            (ErrorCode::OutcomeUnknown, 14),
            (ErrorCode::Unreachable, 15),
        ];
        for (code, index) in pinned {
            let bytes = crate::codec::encode(&code).unwrap();
            assert_eq!(bytes[0], index, "{} moved on the wire", code.name());
            // Every variant is listed: the match below fails to compile when one is added,
            // as a reminder to pin it here too.
            match code {
                ErrorCode::NotLeader { .. }
                | ErrorCode::RangeKeyMismatch { .. }
                | ErrorCode::RangeNotFound { .. }
                | ErrorCode::Timeout
                | ErrorCode::Unavailable
                | ErrorCode::Overloaded
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::InvalidRequest
                | ErrorCode::UnknownMethod
                | ErrorCode::UnsupportedVersion { .. }
                | ErrorCode::TooLarge
                | ErrorCode::CorruptMessage
                | ErrorCode::ShuttingDown
                | ErrorCode::Internal
                | ErrorCode::OutcomeUnknown
                | ErrorCode::Unreachable => {}
            }
        }
        // Whole encodings of two codes with payloads, byte for byte.
        let hint = ErrorCode::NotLeader {
            hint: Some(LeaderHint {
                node: NodeId::new(4),
                addr: None,
            }),
        };
        assert_eq!(crate::codec::encode(&hint).unwrap(), vec![0, 1, 4, 0]);
        let version = ErrorCode::UnsupportedVersion { supported: 2 };
        assert_eq!(crate::codec::encode(&version).unwrap(), vec![9, 2]);
    }

    #[test]
    fn errors_print_code_detail_and_message() {
        let e = Error::new(
            ErrorCode::NotLeader {
                hint: Some(LeaderHint {
                    node: NodeId::new(4),
                    addr: None,
                }),
            },
            "term 7",
        );
        assert_eq!(e.to_string(), "not_leader (leader n4): term 7");
    }
}

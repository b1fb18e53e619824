//! What can go wrong, sorted the way a caller must act on it: an operation that certainly
//! did not take effect may be retried; one that may have must not be assumed either way.

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operation certainly did not take effect: the gateway refused it (a 4xx, or a 503
    /// that says it was not carried out), or no gateway could be reached to send it.
    /// `retriable` says whether trying again later may succeed (unavailable, not sent)
    /// or not (malformed, too large, unauthorized).
    #[error("not done ({code}): {message}")]
    Refused {
        /// The HTTP status, if a gateway answered.
        status: Option<u16>,
        /// The gateway's error name (`bad_request`, `too_large`, `unavailable`, ...), or
        /// `not_sent` when no gateway was reached.
        code: String,
        /// What happened.
        message: String,
        /// Whether trying again may succeed.
        retriable: bool,
    },
    /// A conditional write's condition did not hold (a 409): nothing was written.
    #[error("condition failed: {message}")]
    ConditionFailed {
        /// What the gateway said.
        message: String,
    },
    /// The operation may or may not have taken effect: the gateway said so (a 504
    /// `outcome_unknown`), or the request left and no answer came. Read before retrying.
    #[error("outcome unknown: {message}")]
    OutcomeUnknown {
        /// What happened.
        message: String,
    },
    /// A gateway answered something this client does not understand (nothing to retry
    /// blindly: for a write, the outcome is unknown too).
    #[error("unexpected answer: {message}")]
    Protocol {
        /// What was wrong with it.
        message: String,
    },
    /// The client's own settings are unusable (a bad URL, an unreadable certificate).
    #[error("configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// Whether the operation certainly did not take effect (Jepsen's `fail`, as opposed to
    /// `info`): then it is safe to retry.
    pub fn is_definite(&self) -> bool {
        matches!(
            self,
            Error::Refused { .. } | Error::ConditionFailed { .. } | Error::Config { .. }
        )
    }

    /// Whether trying the same operation again may succeed and is safe: it certainly did
    /// not happen, and the reason may pass.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::Refused {
                retriable: true,
                ..
            }
        )
    }

    /// The HTTP status a gateway answered with, if the failure came from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } => *status,
            Error::ConditionFailed { .. } => Some(409),
            _ => None,
        }
    }

    /// An operation that never reached a gateway.
    pub(crate) fn not_sent(message: impl Into<String>) -> Error {
        Error::Refused {
            status: None,
            code: "not_sent".into(),
            message: message.into(),
            retriable: true,
        }
    }
}

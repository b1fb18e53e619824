//! The wire envelope: headers that precede every request and response body.

use crate::error::{Error, ErrorCode};
use crate::id::{CorrelationId, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version this build speaks. Peers on another version are refused with
/// [`ErrorCode::UnsupportedVersion`] during the handshake.
///
/// Raised whenever a message carried over the transport changes shape. Version 2: Merkle's
/// `ExchangeRoots` carries its key range, range-descriptor gossip carries each leader hint's
/// term, and Raft membership is validated on decode.
pub const PROTOCOL_VERSION: u16 = 2;

/// Names an RPC method on the wire: the 32-bit FNV-1a hash of the method's name, computed at
/// compile time. Registries refuse two names that hash alike, so collisions are found at start
/// rather than misrouted at run time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MethodId(u32);

impl MethodId {
    /// The id of the method called `name`.
    pub const fn of(name: &str) -> Self {
        let bytes = name.as_bytes();
        let mut hash: u32 = 0x811c_9dc5;
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u32;
            hash = hash.wrapping_mul(0x0100_0193);
            i += 1;
        }
        Self(hash)
    }

    /// The raw value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{:08x}", self.0)
    }
}

/// Precedes every request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// The sender's protocol version.
    pub version: u16,
    /// Echoed in the response so it finds its caller on a multiplexed connection.
    pub correlation_id: CorrelationId,
    /// The sending node.
    pub source: NodeId,
    /// How long the caller will wait, in milliseconds. The server drops work it cannot finish
    /// in time rather than answering nobody.
    pub timeout_ms: u32,
    /// The method being called.
    pub method: MethodId,
}

/// Precedes every response body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHeader {
    /// The request this answers.
    pub correlation_id: CorrelationId,
    /// `None` on success (a body follows); the error otherwise (no body follows).
    pub code: Option<ErrorCode>,
    /// Human-readable detail for an error; empty on success.
    pub message: String,
}

impl ResponseHeader {
    /// A success header.
    pub fn ok(correlation_id: CorrelationId) -> Self {
        Self {
            correlation_id,
            code: None,
            message: String::new(),
        }
    }

    /// An error header carrying `error`.
    pub fn error(correlation_id: CorrelationId, error: Error) -> Self {
        Self {
            correlation_id,
            code: Some(error.code),
            message: error.message,
        }
    }

    /// `Ok(())` for a success header, the carried error otherwise.
    pub fn into_result(self) -> Result<(), Error> {
        match self.code {
            None => Ok(()),
            Some(code) => Err(Error::new(code, self.message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_ids_are_fnv1a_and_stable() {
        // FNV-1a test vectors: "" and "a".
        assert_eq!(MethodId::of("").get(), 0x811c_9dc5);
        assert_eq!(MethodId::of("a").get(), 0xe40c_292c);
        assert_ne!(MethodId::of("kv.get"), MethodId::of("kv.put"));
    }

    #[test]
    fn response_headers_round_trip_to_results() {
        assert!(ResponseHeader::ok(CorrelationId::new(1))
            .into_result()
            .is_ok());
        let err = ResponseHeader::error(
            CorrelationId::new(2),
            Error::new(ErrorCode::Overloaded, "64 in flight"),
        )
        .into_result()
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::Overloaded);
        assert_eq!(err.message, "64 in flight");
    }
}

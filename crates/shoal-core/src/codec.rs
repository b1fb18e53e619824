//! The wire codec: the only module in Shoal that names bincode.
//!
//! Everything that crosses a process boundary is a serde type encoded here, so the format can
//! be swapped in one place. Both directions take a size limit. Decoding additionally bounds
//! every allocation a length prefix can ask for: bincode preallocates strings and byte
//! buffers at their claimed length, so the decoder runs with a limit chosen from the input's
//! own size (a tier just above the most that size can legitimately decode to). A corrupt length prefix therefore fails with an error
//! instead of allocating gigabytes.

use crate::error::{Error, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest message the codec will encode or decode, whatever limit a caller passes.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The encoded form is, or would be, over the limit.
    #[error("message of at least {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The size (for encoding, a lower bound: encoding stops at the limit).
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The value cannot be encoded (a serde error in its `Serialize` impl).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// A whole-message decode left bytes unread.
    #[error("{trailing} unexpected bytes after the message")]
    TrailingBytes {
        /// How many bytes were left.
        trailing: usize,
    },
}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        let code = match &e {
            CodecError::TooLarge { .. } => ErrorCode::TooLarge,
            CodecError::Encode(_) => ErrorCode::Internal,
            CodecError::Decode(_) | CodecError::TrailingBytes { .. } => ErrorCode::CorruptMessage,
        };
        Error::new(code, e.to_string())
    }
}

/// Encodes `value` into a new buffer (up to [`MAX_MESSAGE_BYTES`]).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    // Room for a typical small message at once, rather than growing through every power of
    // two on the way.
    let mut buf = Vec::with_capacity(256);
    encode_into(value, &mut buf, MAX_MESSAGE_BYTES)?;
    Ok(buf)
}

/// Appends the encoding of `value` to `buf` and returns the number of bytes appended. Fails
/// with [`CodecError::TooLarge`] as soon as `buf` would grow past `limit` bytes in total,
/// leaving `buf` as it was.
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, CodecError> {
    let limit = limit.min(MAX_MESSAGE_BYTES);
    let before = buf.len();
    let mut writer = LimitedWriter { buf, limit };
    match bincode::serde::encode_into_writer(value, &mut writer, config()) {
        Ok(()) => Ok(writer.buf.len() - before),
        Err(e) => {
            writer.buf.truncate(before);
            if is_limit_error(&e) {
                // The writer refused the write that would have crossed the limit.
                Err(CodecError::TooLarge {
                    size: limit + 1,
                    limit,
                })
            } else {
                Err(CodecError::Encode(e.to_string()))
            }
        }
    }
}

/// Decodes a `T` that must occupy all of `bytes`, which may be at most `limit` bytes long.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    let (value, used) = decode_prefix(bytes, limit)?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            trailing: bytes.len() - used,
        });
    }
    Ok(value)
}

/// Decodes a `T` from the front of `bytes` (at most `limit` long) and returns it with the
/// number of bytes it took, so several values can be read back to back.
pub fn decode_prefix<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<(T, usize), CodecError> {
    let limit = limit.min(MAX_MESSAGE_BYTES);
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    // bincode counts, against the limit, the in-memory size of everything it decodes (a
    // one-byte varint decoded into a u64 counts 8), so a valid message needs up to
    // DECODED_PER_BYTE times its own length. The tier is the first one above that: a corrupt
    // length prefix claiming more fails at once instead of allocating.
    let need = bytes.len().saturating_mul(DECODED_PER_BYTE);
    let result = if need <= TIER_64K {
        decode_limited::<T, TIER_64K>(bytes)
    } else if need <= TIER_1M {
        decode_limited::<T, TIER_1M>(bytes)
    } else if need <= TIER_16M {
        decode_limited::<T, TIER_16M>(bytes)
    } else if need <= TIER_256M {
        decode_limited::<T, TIER_256M>(bytes)
    } else {
        decode_limited::<T, TIER_1G>(bytes)
    };
    result.map_err(|e| CodecError::Decode(e.to_string()))
}

/// The most in-memory bytes one encoded byte can decode to as bincode counts them (a
/// one-byte varint read into a `u64` or `usize`; Shoal's messages use no `u128`).
const DECODED_PER_BYTE: usize = 8;
const TIER_64K: usize = 64 << 10;
const TIER_1M: usize = 1 << 20;
const TIER_16M: usize = 16 << 20;
const TIER_256M: usize = 256 << 20;
const TIER_1G: usize = 1 << 30;

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, config().with_limit::<LIMIT>())
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn is_limit_error(e: &bincode::error::EncodeError) -> bool {
    matches!(e, bincode::error::EncodeError::Other(message) if *message == OVER_LIMIT)
}

/// A `Vec` writer that refuses to grow past `limit`, so an oversized value fails early
/// instead of being encoded in full first.
struct LimitedWriter<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
}

/// What [`LimitedWriter`] answers a write that would cross its limit.
const OVER_LIMIT: &str = "message over limit";

impl bincode::enc::write::Writer for LimitedWriter<'_> {
    fn write(&mut self, data: &[u8]) -> Result<(), bincode::error::EncodeError> {
        if self.buf.len() + data.len() > self.limit {
            return Err(bincode::error::EncodeError::Other(OVER_LIMIT));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{MethodId, RequestHeader, ResponseHeader, PROTOCOL_VERSION};
    use crate::error::ErrorCode;
    use crate::id::{CorrelationId, NodeId};
    use proptest::prelude::*;

    fn header() -> RequestHeader {
        RequestHeader {
            version: PROTOCOL_VERSION,
            correlation_id: CorrelationId::new(77),
            source: NodeId::new(3),
            timeout_ms: 5_000,
            method: MethodId::of("test.echo"),
        }
    }

    #[test]
    fn values_round_trip() {
        let h = header();
        let bytes = encode(&h).unwrap();
        assert_eq!(decode::<RequestHeader>(&bytes, 1024).unwrap(), h);
    }

    #[test]
    fn back_to_back_values_decode_with_prefix() {
        let mut buf = Vec::new();
        encode_into(&header(), &mut buf, 1024).unwrap();
        encode_into(&"body".to_string(), &mut buf, 1024).unwrap();
        let (h, used) = decode_prefix::<RequestHeader>(&buf, 1024).unwrap();
        assert_eq!(h, header());
        assert_eq!(decode::<String>(&buf[used..], 1024).unwrap(), "body");
    }

    #[test]
    fn encoding_over_the_limit_fails_and_leaves_the_buffer_alone() {
        let mut buf = vec![1, 2, 3];
        let err = encode_into(&vec![7u8; 1000], &mut buf, 100).unwrap_err();
        assert!(
            matches!(err, CodecError::TooLarge { limit: 100, .. }),
            "{err:?}"
        );
        assert_eq!(buf, vec![1, 2, 3]);
    }

    #[test]
    fn decoding_over_the_limit_is_refused_before_reading() {
        let bytes = encode(&vec![0u8; 200]).unwrap();
        assert!(matches!(
            decode::<Vec<u8>>(&bytes, 100),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&5u32).unwrap();
        bytes.push(0);
        assert_eq!(
            decode::<u32>(&bytes, 64),
            Err(CodecError::TrailingBytes { trailing: 1 })
        );
    }

    #[test]
    fn a_huge_length_prefix_fails_without_allocating_it() {
        // A String claiming u64::MAX / 2 bytes: varint marker 0xFD then a u64.
        let mut bytes = vec![0xFD];
        bytes.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        bytes.extend_from_slice(b"abc");
        assert!(matches!(
            decode::<String>(&bytes, 1024),
            Err(CodecError::Decode(_))
        ));
        // And one claiming 1 GiB.
        let mut bytes = vec![0xFC];
        bytes.extend_from_slice(&(1u32 << 30).to_le_bytes());
        assert!(matches!(
            decode::<String>(&bytes, 1024),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(decode::<ResponseHeader>(&[0xff, 0xff, 0xff, 0xff, 0xff], 64).is_err());
        assert!(decode::<ResponseHeader>(&[], 64).is_err());
    }

    #[test]
    fn compact_messages_that_decode_to_much_more_still_decode() {
        // 200,000 small integers: one byte each on the wire, eight in memory.
        let many: Vec<u64> = (0..200_000).map(|i| i % 100).collect();
        let bytes = encode(&many).unwrap();
        assert!(bytes.len() < 210_000);
        assert_eq!(decode::<Vec<u64>>(&bytes, MAX_MESSAGE_BYTES).unwrap(), many);
        // A length prefix claiming more than the input could hold still fails cleanly.
        let mut lying = encode(&vec![1u64; 4]).unwrap();
        lying[0] = 0xfc; // a u32 length follows
        lying.splice(1..1, [0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<Vec<u64>>(&lying, MAX_MESSAGE_BYTES).is_err());
    }

    #[test]
    fn codec_errors_map_to_wire_codes() {
        let e: Error = CodecError::Decode("x".into()).into();
        assert_eq!(e.code, ErrorCode::CorruptMessage);
        let e: Error = CodecError::TooLarge { size: 2, limit: 1 }.into();
        assert_eq!(e.code, ErrorCode::TooLarge);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<RequestHeader>(&bytes, 1024);
            let _ = decode::<ResponseHeader>(&bytes, 1024);
            let _ = decode::<crate::descriptor::RangeDescriptor>(&bytes, 1024);
        }

        #[test]
        fn headers_round_trip(id in any::<u64>(), node in any::<u64>(), timeout_ms in any::<u32>(), msg in ".{0,40}") {
            let h = RequestHeader {
                version: PROTOCOL_VERSION,
                correlation_id: CorrelationId::new(id),
                source: NodeId::new(node),
                timeout_ms,
                method: MethodId::of("x"),
            };
            prop_assert_eq!(decode::<RequestHeader>(&encode(&h).unwrap(), 1024).unwrap(), h);
            let r = ResponseHeader { correlation_id: CorrelationId::new(id), code: Some(ErrorCode::Timeout), message: msg };
            prop_assert_eq!(decode::<ResponseHeader>(&encode(&r).unwrap(), 1024).unwrap(), r);
        }
    }
}

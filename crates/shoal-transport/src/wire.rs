//! What travels inside frames on an RPC connection.
//!
//! After the handshake (see [`crate::handshake`]) every frame is one kind byte followed by a
//! header and, for requests and successful responses, the body:
//!
//! ```text
//! | u32 BE length | kind: u8 | RequestHeader  | request body  |   kind 1: Request
//! | u32 BE length | kind: u8 | ResponseHeader | response body |   kind 2: Response
//! | u32 BE length | kind: u8 |                                    kind 3: GoAway
//! ```
//!
//! Headers and bodies are encoded by `shoal_core::codec`; a body is whatever follows its
//! header in the frame.

use crate::frame::{begin_frame, finish_frame};
use shoal_core::codec::{self, CodecError};
use shoal_core::{CorrelationId, Error, ErrorCode, RequestHeader, ResponseHeader};

const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;
const KIND_GOAWAY: u8 = 3;

/// A decoded frame, borrowing its body from the frame buffer.
#[derive(Debug)]
pub(crate) enum Incoming<'a> {
    Request(RequestHeader, &'a [u8]),
    Response(ResponseHeader, &'a [u8]),
    /// The server is draining: send no new requests on this connection.
    GoAway,
}

/// Decodes one frame payload.
pub(crate) fn parse(payload: &[u8]) -> Result<Incoming<'_>, CodecError> {
    let Some((&kind, rest)) = payload.split_first() else {
        return Err(CodecError::Decode("empty frame".into()));
    };
    match kind {
        KIND_REQUEST => {
            let (header, used) = codec::decode_prefix::<RequestHeader>(rest, rest.len())?;
            Ok(Incoming::Request(header, &rest[used..]))
        }
        KIND_RESPONSE => {
            let (header, used) = codec::decode_prefix::<ResponseHeader>(rest, rest.len())?;
            Ok(Incoming::Response(header, &rest[used..]))
        }
        KIND_GOAWAY if rest.is_empty() => Ok(Incoming::GoAway),
        other => Err(CodecError::Decode(format!("unknown frame kind {other}"))),
    }
}

/// A complete request frame.
pub(crate) fn request_frame(
    header: &RequestHeader,
    body: &[u8],
    max_frame_bytes: usize,
) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(32 + body.len());
    let start = begin_frame(&mut buf);
    buf.push(KIND_REQUEST);
    codec::encode_into(header, &mut buf, max_frame_bytes)?;
    buf.extend_from_slice(body);
    finish_frame(&mut buf, start, max_frame_bytes).map_err(too_large(max_frame_bytes))?;
    Ok(buf)
}

/// The start of a successful response frame; the handler appends the body and
/// [`finish_response`] completes it.
pub(crate) fn response_prefix(correlation_id: CorrelationId) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    begin_frame(&mut buf);
    buf.push(KIND_RESPONSE);
    let header = ResponseHeader::ok(correlation_id);
    // A success header is a few bytes; it cannot be over any valid limit.
    codec::encode_into(&header, &mut buf, usize::MAX)
        .expect("invariant: a success response header always encodes");
    buf
}

/// Completes a frame started with [`response_prefix`], or turns a failure into an error
/// frame so the caller always hears back.
pub(crate) fn finish_response(
    correlation_id: CorrelationId,
    result: Result<Vec<u8>, Error>,
    max_frame_bytes: usize,
) -> Vec<u8> {
    match result {
        Ok(mut buf) => match finish_frame(&mut buf, 0, max_frame_bytes) {
            Ok(()) => buf,
            Err(len) => error_frame(correlation_id, too_large(max_frame_bytes)(len)),
        },
        Err(error) => error_frame(correlation_id, error),
    }
}

/// A response frame carrying `error`. The message is shortened if needed so the frame fits.
pub(crate) fn error_frame(correlation_id: CorrelationId, mut error: Error) -> Vec<u8> {
    const MAX_MESSAGE: usize = 4096;
    if error.message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !error.message.is_char_boundary(cut) {
            cut -= 1;
        }
        error.message.truncate(cut);
    }
    let mut buf = Vec::with_capacity(64 + error.message.len());
    let start = begin_frame(&mut buf);
    buf.push(KIND_RESPONSE);
    let header = ResponseHeader::error(correlation_id, error);
    if codec::encode_into(&header, &mut buf, usize::MAX).is_err() {
        // Only a descriptor-laden code could be this large; fall back to a bare code.
        buf.truncate(start + crate::frame::LENGTH_PREFIX_BYTES + 1);
        let bare = ResponseHeader::error(
            correlation_id,
            Error::new(ErrorCode::Internal, "error response too large to encode"),
        );
        codec::encode_into(&bare, &mut buf, usize::MAX)
            .expect("invariant: a bare error header always encodes");
    }
    finish_frame(&mut buf, start, usize::MAX).expect("invariant: no cap was passed");
    buf
}

/// The frame telling a client that the server is draining.
pub(crate) fn goaway_frame() -> Vec<u8> {
    let mut buf = Vec::with_capacity(5);
    let start = begin_frame(&mut buf);
    buf.push(KIND_GOAWAY);
    finish_frame(&mut buf, start, usize::MAX).expect("invariant: no cap was passed");
    buf
}

fn too_large(max: usize) -> impl Fn(usize) -> Error {
    move |len| {
        Error::new(
            ErrorCode::TooLarge,
            format!("frame of {len} bytes is over the {max}-byte cap"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::{MethodId, NodeId, PROTOCOL_VERSION};

    #[test]
    fn requests_and_responses_parse_back() {
        let header = RequestHeader {
            version: PROTOCOL_VERSION,
            correlation_id: CorrelationId::new(9),
            source: NodeId::new(1),
            timeout_ms: 100,
            method: MethodId::of("m"),
        };
        let frame = request_frame(&header, b"body", 1024).unwrap();
        match parse(&frame[4..]).unwrap() {
            Incoming::Request(h, body) => {
                assert_eq!(h, header);
                assert_eq!(body, b"body");
            }
            other => panic!("parsed as {other:?}"),
        }
        let mut ok = response_prefix(CorrelationId::new(9));
        ok.extend_from_slice(b"xyz");
        let ok = finish_response(CorrelationId::new(9), Ok(ok), 1024);
        assert!(
            matches!(parse(&ok[4..]).unwrap(), Incoming::Response(h, b"xyz") if h.code.is_none())
        );
        assert!(matches!(
            parse(&goaway_frame()[4..]).unwrap(),
            Incoming::GoAway
        ));
    }

    #[test]
    fn an_oversized_response_becomes_a_too_large_error() {
        let mut big = response_prefix(CorrelationId::new(1));
        big.extend_from_slice(&[0u8; 2048]);
        let frame = finish_response(CorrelationId::new(1), Ok(big), 1024);
        match parse(&frame[4..]).unwrap() {
            Incoming::Response(h, _) => assert_eq!(h.code, Some(ErrorCode::TooLarge)),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn unknown_kinds_and_empty_frames_are_corrupt() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[42, 0, 0]).is_err());
        assert!(parse(&[KIND_GOAWAY, 1]).is_err());
        assert!(parse(&[KIND_REQUEST, 0xff, 0xff]).is_err());
    }

    #[test]
    fn long_error_messages_are_shortened() {
        let frame = error_frame(
            CorrelationId::new(1),
            Error::new(ErrorCode::Internal, "é".repeat(5000)),
        );
        assert!(frame.len() < 4200);
    }
}

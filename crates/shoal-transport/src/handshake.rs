//! The connection handshake, where the protocol version is agreed.
//!
//! The first frame each way has a fixed layout that no future version may change, so a peer
//! on any version can read it and answer with a clear refusal instead of hanging:
//!
//! ```text
//! client → server:  | len | "SHOL" | version: u16 BE | Hello (codec)    |
//! server → client:  | len | "SHOL" | version: u16 BE | status: u8 | HelloAck (codec, if accepted) |
//! ```

use crate::frame::{begin_frame, finish_frame, read_frame};
use serde::{Deserialize, Serialize};
use shoal_core::{codec, Error, ErrorCode, NodeId, PROTOCOL_VERSION};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

const MAGIC: [u8; 4] = *b"SHOL";
const PREFIX_BYTES: usize = 6;
const STATUS_ACCEPTED: u8 = 0;
const STATUS_VERSION_REFUSED: u8 = 1;
/// Handshake frames are tiny; anything larger is not a Shoal peer.
const MAX_HANDSHAKE_BYTES: usize = 1024;

/// What a client says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub node: NodeId,
    /// Where the client itself listens, if it does: how fault rules name it.
    pub listen_addr: Option<SocketAddr>,
}

/// What the server says back when it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HelloAck {
    pub node: NodeId,
}

/// Client side: sends `hello` and waits for the server's verdict.
pub(crate) async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    hello: &Hello,
    timeout: Duration,
) -> Result<HelloAck, Error> {
    let exchange = async {
        stream
            .write_all(&hello_frame(PROTOCOL_VERSION, hello))
            .await?;
        read_frame(stream, MAX_HANDSHAKE_BYTES, timeout)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let reply = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(Error::new(ErrorCode::Timeout, "handshake timed out")),
        Ok(Err(e)) => {
            return Err(Error::new(
                ErrorCode::Unavailable,
                format!("handshake failed: {e}"),
            ))
        }
        Ok(Ok(None)) => {
            return Err(Error::new(
                ErrorCode::Unavailable,
                "peer closed during handshake",
            ))
        }
        Ok(Ok(Some(reply))) => reply,
    };
    let (version, rest) = split_prefix(&reply)
        .ok_or_else(|| Error::new(ErrorCode::CorruptMessage, "peer is not a Shoal node"))?;
    match rest.split_first() {
        Some((&STATUS_ACCEPTED, ack)) if version == PROTOCOL_VERSION => {
            Ok(codec::decode::<HelloAck>(ack, MAX_HANDSHAKE_BYTES)?)
        }
        Some((&STATUS_VERSION_REFUSED, _)) | Some((&STATUS_ACCEPTED, _)) => Err(Error::new(
            ErrorCode::UnsupportedVersion { supported: version },
            format!("peer speaks protocol v{version}, this node v{PROTOCOL_VERSION}"),
        )),
        _ => Err(Error::new(
            ErrorCode::CorruptMessage,
            "malformed handshake reply",
        )),
    }
}

/// Why a server refused a connection at the handshake.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("client speaks protocol v{0}")]
    Version(u16),
    #[error("not a Shoal handshake: {0}")]
    Malformed(String),
    #[error("handshake timed out")]
    Timeout,
    #[error("client closed during handshake")]
    Closed,
}

/// Server side: reads the client's hello and accepts it (replying with `local`) or refuses it
/// (replying with our version, so the client can report it).
pub(crate) async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    local: NodeId,
    timeout: Duration,
) -> Result<Hello, HandshakeError> {
    let read = read_frame(stream, MAX_HANDSHAKE_BYTES, timeout);
    let frame = match tokio::time::timeout(timeout, read).await {
        Err(_) => return Err(HandshakeError::Timeout),
        Ok(Err(e)) => return Err(HandshakeError::Malformed(e.to_string())),
        Ok(Ok(None)) => return Err(HandshakeError::Closed),
        Ok(Ok(Some(frame))) => frame,
    };
    let (version, rest) =
        split_prefix(&frame).ok_or_else(|| HandshakeError::Malformed("bad magic".into()))?;
    if version != PROTOCOL_VERSION {
        let reply = reply_frame(STATUS_VERSION_REFUSED, None);
        // Best effort: the client is refused either way.
        let _ = tokio::time::timeout(timeout, stream.write_all(&reply)).await;
        return Err(HandshakeError::Version(version));
    }
    let hello = codec::decode::<Hello>(rest, MAX_HANDSHAKE_BYTES)
        .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let reply = reply_frame(STATUS_ACCEPTED, Some(&HelloAck { node: local }));
    match tokio::time::timeout(timeout, stream.write_all(&reply)).await {
        Ok(Ok(())) => Ok(hello),
        Ok(Err(e)) => Err(HandshakeError::Malformed(e.to_string())),
        Err(_) => Err(HandshakeError::Timeout),
    }
}

/// A hello frame claiming `version` (tests use other versions to check refusals).
pub(crate) fn hello_frame(version: u16, hello: &Hello) -> Vec<u8> {
    let mut buf = Vec::with_capacity(32);
    let start = begin_frame(&mut buf);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&version.to_be_bytes());
    codec::encode_into(hello, &mut buf, MAX_HANDSHAKE_BYTES)
        .expect("invariant: a hello is a few dozen bytes");
    finish_frame(&mut buf, start, MAX_HANDSHAKE_BYTES).expect("invariant: hello fits");
    buf
}

fn reply_frame(status: u8, ack: Option<&HelloAck>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(32);
    let start = begin_frame(&mut buf);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    buf.push(status);
    if let Some(ack) = ack {
        codec::encode_into(ack, &mut buf, MAX_HANDSHAKE_BYTES)
            .expect("invariant: an ack is a few bytes");
    }
    finish_frame(&mut buf, start, MAX_HANDSHAKE_BYTES).expect("invariant: reply fits");
    buf
}

fn split_prefix(frame: &[u8]) -> Option<(u16, &[u8])> {
    if frame.len() < PREFIX_BYTES || frame[..4] != MAGIC {
        return None;
    }
    Some((
        u16::from_be_bytes([frame[4], frame[5]]),
        &frame[PREFIX_BYTES..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            node: NodeId::new(1),
            listen_addr: None,
        }
    }

    #[tokio::test]
    async fn matching_versions_shake_hands() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let t = Duration::from_secs(5);
        let server = tokio::spawn(async move { server_handshake(&mut b, NodeId::new(2), t).await });
        let ack = client_handshake(&mut a, &hello(), t).await.unwrap();
        assert_eq!(ack.node, NodeId::new(2));
        assert_eq!(server.await.unwrap().unwrap(), hello());
    }

    #[tokio::test]
    async fn a_client_on_another_version_is_refused_with_ours() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let t = Duration::from_secs(5);
        let server = tokio::spawn(async move { server_handshake(&mut b, NodeId::new(2), t).await });
        a.write_all(&hello_frame(PROTOCOL_VERSION + 1, &hello()))
            .await
            .unwrap();
        let reply = read_frame(&mut a, 1024, t).await.unwrap().unwrap();
        assert_eq!(split_prefix(&reply).unwrap().0, PROTOCOL_VERSION);
        assert_eq!(reply[PREFIX_BYTES], STATUS_VERSION_REFUSED);
        assert!(
            matches!(server.await.unwrap(), Err(HandshakeError::Version(v)) if v == PROTOCOL_VERSION + 1)
        );
    }

    #[tokio::test]
    async fn garbage_instead_of_a_hello_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let t = Duration::from_secs(5);
        let server = tokio::spawn(async move { server_handshake(&mut b, NodeId::new(2), t).await });
        a.write_all(b"\x00\x00\x00\x08GET / HT").await.unwrap();
        assert!(matches!(
            server.await.unwrap(),
            Err(HandshakeError::Malformed(_))
        ));
    }
}

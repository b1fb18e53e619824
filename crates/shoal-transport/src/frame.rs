//! Length-prefixed framing: a `u32` big-endian length, then that many bytes.
//!
//! The length is checked against the cap before anything is allocated, the payload buffer
//! grows only as bytes arrive, and once a frame has begun it must finish within the stall
//! timeout, so neither a lying nor a stalling peer can hold memory or a task hostage.

use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Memory reserved up front for a frame's payload; larger frames grow as bytes arrive.
const INITIAL_PAYLOAD_CAPACITY: usize = 64 << 10;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announced more than the cap.
    #[error("frame of {len} bytes is over the {max}-byte cap")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The cap in force.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("connection closed mid-frame")]
    Truncated,
    /// The rest of a started frame did not arrive in time.
    #[error("peer stalled mid-frame for more than {0:?}")]
    Stalled(Duration),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames. Waiting for a frame
/// to begin has no time limit; finishing a begun frame has `stall_timeout`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
    stall_timeout: Duration,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let first = reader.read(&mut prefix).await?;
    if first == 0 {
        return Ok(None);
    }
    let rest = async {
        reader.read_exact(&mut prefix[first..]).await?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > max_frame_bytes {
            return Err(FrameError::TooLarge {
                len,
                max: max_frame_bytes,
            });
        }
        // Grow with what actually arrives rather than trusting the prefix: a peer announcing
        // a cap-sized frame and sending nothing must not pin the cap's worth of memory.
        let mut payload = Vec::with_capacity(len.min(INITIAL_PAYLOAD_CAPACITY));
        let read = (&mut *reader)
            .take(len as u64)
            .read_to_end(&mut payload)
            .await?;
        if read < len {
            return Err(FrameError::Truncated);
        }
        Ok(payload)
    };
    match tokio::time::timeout(stall_timeout, rest).await {
        Ok(Ok(payload)) => Ok(Some(payload)),
        Ok(Err(FrameError::Io(e))) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(FrameError::Truncated)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(FrameError::Stalled(stall_timeout)),
    }
}

/// Starts a frame in `buf`: reserves the length prefix, to be filled by [`finish_frame`].
pub fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; LENGTH_PREFIX_BYTES]);
    start
}

/// Fills in the length prefix of the frame begun at `start`. Refuses frames over the cap.
pub fn finish_frame(buf: &mut [u8], start: usize, max_frame_bytes: usize) -> Result<(), usize> {
    let len = buf.len() - start - LENGTH_PREFIX_BYTES;
    if len > max_frame_bytes {
        return Err(len);
    }
    // The cap is at most MAX_FRAME_CEILING (64 MiB), so the length fits a u32.
    let prefix = u32::try_from(len).map_err(|_| len)?.to_be_bytes();
    buf[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&prefix);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let start = begin_frame(&mut buf);
        buf.extend_from_slice(payload);
        finish_frame(&mut buf, start, 1024).unwrap();
        buf
    }

    #[tokio::test]
    async fn frames_round_trip_back_to_back() {
        let mut bytes = framed(b"hello");
        bytes.extend(framed(b""));
        bytes.extend(framed(b"world"));
        let mut reader = bytes.as_slice();
        let stall = Duration::from_secs(1);
        assert_eq!(
            read_frame(&mut reader, 1024, stall).await.unwrap().unwrap(),
            b"hello"
        );
        assert_eq!(
            read_frame(&mut reader, 1024, stall).await.unwrap().unwrap(),
            b""
        );
        assert_eq!(
            read_frame(&mut reader, 1024, stall).await.unwrap().unwrap(),
            b"world"
        );
        assert!(read_frame(&mut reader, 1024, stall)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_allocating() {
        let bytes = u32::MAX.to_be_bytes();
        let mut reader = &bytes[..];
        let err = read_frame(&mut reader, 1024, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, max: 1024 } if len == u32::MAX as usize));
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_truncated() {
        let mut bytes = framed(b"hello");
        bytes.truncate(6);
        let mut reader = bytes.as_slice();
        let err = read_frame(&mut reader, 1024, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err:?}");
        let mut reader = &[0u8, 0][..];
        let err = read_frame(&mut reader, 1024, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_frame_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, &[0, 0, 0, 10, 1, 2])
            .await
            .unwrap();
        let err = read_frame(&mut server, 1024, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Stalled(_)), "{err:?}");
        drop(client);
    }

    #[tokio::test]
    async fn a_large_frame_arriving_in_pieces_is_read_whole() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut framed = Vec::new();
        let start = begin_frame(&mut framed);
        framed.extend_from_slice(&payload);
        finish_frame(&mut framed, start, 1 << 20).unwrap();
        let (mut client, mut server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut client, &framed)
                .await
                .unwrap();
        });
        let got = read_frame(&mut server, 1 << 20, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.unwrap(), payload);
        writer.await.unwrap();
    }

    #[test]
    fn finishing_an_oversized_frame_fails() {
        let mut buf = Vec::new();
        let start = begin_frame(&mut buf);
        buf.extend_from_slice(&[0; 2000]);
        assert_eq!(finish_frame(&mut buf, start, 1024), Err(2000));
    }
}

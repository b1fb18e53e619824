//! The one task per connection that owns the socket's write half.
//!
//! Frames arrive already encoded over a bounded channel. The task writes whatever is queued in
//! one system call (up to a batch limit), so many concurrent requests share a write instead of
//! each paying for one, and callers never hold the socket across an await, which keeps their
//! cancellation safe.

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Coalesce queued frames into writes of at most this many bytes.
const BATCH_BYTES: usize = 64 << 10;

/// Writes frames from `frames` until every sender is gone, then shuts the write half down.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    mut sink: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES);
    while let Some(first) = frames.recv().await {
        if first.len() >= BATCH_BYTES {
            sink.write_all(&first).await?;
            continue;
        }
        batch.extend_from_slice(&first);
        while batch.len() < BATCH_BYTES {
            match frames.try_recv() {
                Ok(next) => batch.extend_from_slice(&next),
                Err(_) => break,
            }
        }
        sink.write_all(&batch).await?;
        batch.clear();
    }
    sink.flush().await?;
    sink.shutdown().await
}

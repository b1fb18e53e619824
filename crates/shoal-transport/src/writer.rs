//! The write side of a connection, shared by every task that answers or sends on it.
//!
//! Sending is synchronous and never awaits, which keeps callers cancellation-safe. When the
//! connection is idle (nothing buffered, and no frame sent in the last
//! [`COALESCE_WINDOW`]) the frame goes straight to the socket with a non-blocking write,
//! saving the wake-up of a writer task (most of the latency of a lone small RPC). When the
//! connection is busy (frames follow each other closely), the socket is full, or a flush is
//! already under way, the frame is appended to a buffer that a writer task drains in large
//! writes: frames stay in order and concurrent senders share system calls (on loopback a
//! send also runs the receiver's network stack, so a system call per frame costs the
//! cluster dearly under load). The buffer is bounded in bytes: a peer that stops reading
//! makes sends fail, not memory grow.

use crate::lock::lock;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A frame sent within this long of the previous one finds the connection busy: it is
/// buffered for the writer task, which sends it with whatever else arrives meanwhile.
pub(crate) const COALESCE_WINDOW: Duration = Duration::from_micros(200);

/// Why a frame was not accepted for sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// More than the buffer bound is waiting for the socket: the peer is not reading.
    Full,
    /// The connection is closed or its socket failed.
    Closed,
}

/// The sending end of a connection. Cheap to clone.
#[derive(Clone)]
pub(crate) struct FrameSink {
    shared: Arc<SinkShared>,
}

struct SinkShared {
    half: OwnedWriteHalf,
    state: Mutex<SinkState>,
    wake: Notify,
    max_buffered_bytes: usize,
}

#[derive(Default)]
struct SinkState {
    /// Bytes waiting for the writer task, whole frames in order.
    buffered: Vec<u8>,
    /// The writer task owns the socket's output until it has emptied `buffered`.
    flushing: bool,
    /// When the last frame was accepted.
    last_send: Option<Instant>,
    closed: bool,
    failed: bool,
}

impl FrameSink {
    /// Wraps `half` and starts its writer task, which ends after [`FrameSink::close`] once
    /// everything accepted has been written.
    pub(crate) fn start(half: OwnedWriteHalf, max_buffered_bytes: usize) -> (Self, JoinHandle<()>) {
        let shared = Arc::new(SinkShared {
            half,
            state: Mutex::new(SinkState::default()),
            wake: Notify::new(),
            max_buffered_bytes,
        });
        let writer = tokio::spawn(drain(Arc::clone(&shared)));
        (FrameSink { shared }, writer)
    }

    /// Queues one complete frame, writing it at once if the connection is idle.
    pub(crate) fn send(&self, frame: &[u8]) -> Result<(), SendError> {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        if state.closed || state.failed {
            return Err(SendError::Closed);
        }
        let now = Instant::now();
        let busy = state
            .last_send
            .is_some_and(|last| now.saturating_duration_since(last) < COALESCE_WINDOW);
        state.last_send = Some(now);
        if busy && !state.flushing {
            // Let the writer task gather this frame with the ones about to follow.
            state.buffered.extend_from_slice(frame);
        } else if !state.flushing {
            // Idle: nothing is buffered, so writing now keeps frames in order.
            let written = match shared.half.try_write(frame) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(_) => {
                    state.failed = true;
                    return Err(SendError::Closed);
                }
            };
            if written == frame.len() {
                return Ok(());
            }
            state.buffered.extend_from_slice(&frame[written..]);
        } else {
            if state.buffered.len() + frame.len() > shared.max_buffered_bytes {
                return Err(SendError::Full);
            }
            state.buffered.extend_from_slice(frame);
            return Ok(());
        }
        state.flushing = true;
        drop(state);
        shared.wake.notify_one();
        Ok(())
    }

    /// Accepts no more frames; the writer task exits once the buffer is written.
    pub(crate) fn close(&self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
    }
}

/// The writer task: sleeps until woken, then writes buffered frames until none are left.
async fn drain(shared: Arc<SinkShared>) {
    let mut batch = Vec::new();
    loop {
        shared.wake.notified().await;
        // Let the tasks that are ready now add their frames to this write.
        tokio::task::yield_now().await;
        loop {
            {
                let mut state = lock(&shared.state);
                if state.buffered.is_empty() {
                    state.flushing = false;
                    if state.closed || state.failed {
                        return;
                    }
                    break;
                }
                std::mem::swap(&mut batch, &mut state.buffered);
            }
            if let Err(e) = write_all(&shared.half, &batch).await {
                tracing::debug!(error = %e, "connection write failed");
                lock(&shared.state).failed = true;
                return;
            }
            batch.clear();
        }
    }
}

async fn write_all(half: &OwnedWriteHalf, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        half.writable().await?;
        match half.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

//! One client connection: many requests in flight at once, matched to responses by
//! correlation id.

use crate::config::TransportConfig;
use crate::fault::{Direction, FaultFilter, Verdict};
use crate::frame::read_frame;
use crate::handshake::{client_handshake, Hello};
use crate::lock::lock;
use crate::stats::{bump, TransportStats};
use crate::wire::{self, Incoming};
use crate::writer::{FrameSink, SendError};
use shoal_core::{
    CorrelationId, Error, ErrorCode, MethodId, NodeId, RequestHeader, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

type Reply = Result<Vec<u8>, Error>;

/// Read buffer per connection: one system call picks up many small frames.
pub(crate) const READ_BUFFER_BYTES: usize = 64 << 10;

/// Requests waiting for their response, by correlation id.
#[derive(Default)]
struct Pending {
    waiting: Mutex<HashMap<CorrelationId, oneshot::Sender<Reply>>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CorrelationId, oneshot::Sender<Reply>>> {
        lock(&self.waiting)
    }

    /// Fails every waiting request, when the connection is gone.
    fn fail_all(&self, error: &Error) {
        for (_, waiter) in self.lock().drain() {
            let _ = waiter.send(Err(error.clone()));
        }
    }
}

/// Removes a request from [`Pending`] if its caller stops waiting (timeout or cancellation),
/// so abandoned entries never accumulate.
struct PendingGuard<'a> {
    pending: &'a Pending,
    id: CorrelationId,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.id);
    }
}

/// A live, handshaken connection to one peer.
pub(crate) struct Connection {
    peer: SocketAddr,
    remote_node: NodeId,
    local_node: NodeId,
    max_frame_bytes: usize,
    next_id: AtomicU64,
    pending: Arc<Pending>,
    /// Bounds requests in flight on this connection; a caller holds a permit until answered.
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    frames: FrameSink,
    /// Set when the connection failed or the server sent GoAway: use a new one for new calls.
    retired: Arc<AtomicBool>,
    stats: Arc<TransportStats>,
    fault: FaultFilter,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.frames.close();
        self.pending
            .fail_all(&Error::new(ErrorCode::Unavailable, "connection closed"));
    }
}

impl Connection {
    /// Connects to `peer`, shakes hands, and starts the reader and writer tasks.
    pub(crate) async fn open(
        peer: SocketAddr,
        hello: &Hello,
        config: &TransportConfig,
        stats: Arc<TransportStats>,
        fault: FaultFilter,
    ) -> Result<Connection, Error> {
        let connect = tokio::time::timeout(config.connect_timeout, TcpStream::connect(peer));
        let mut stream = match connect.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                bump(&stats.connect_failures);
                return Err(Error::new(
                    ErrorCode::Unavailable,
                    format!("connect to {peer} failed: {e}"),
                ));
            }
            Err(_) => {
                bump(&stats.connect_failures);
                return Err(Error::new(
                    ErrorCode::Unavailable,
                    format!(
                        "connect to {peer} timed out after {:?}",
                        config.connect_timeout
                    ),
                ));
            }
        };
        // Small request/response frames must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let ack = match client_handshake(&mut stream, hello, config.handshake_timeout).await {
            Ok(ack) => ack,
            Err(e) => {
                bump(&stats.handshake_failures);
                return Err(e);
            }
        };
        bump(&stats.connections_opened);
        let (read_half, write_half) = stream.into_split();
        let (frames, _writer) = FrameSink::start(write_half, config.max_write_buffer_bytes);
        let pending = Arc::new(Pending::default());
        let retired = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_responses(ReaderState {
            peer,
            read_half: BufReader::with_capacity(READ_BUFFER_BYTES, read_half),
            pending: Arc::clone(&pending),
            retired: Arc::clone(&retired),
            stats: Arc::clone(&stats),
            fault: fault.clone(),
            max_frame_bytes: config.max_frame_bytes,
            stall_timeout: config.frame_stall_timeout,
        }));
        let max_in_flight = u32::try_from(config.max_in_flight_per_connection).unwrap_or(u32::MAX);
        Ok(Connection {
            peer,
            remote_node: ack.node,
            local_node: hello.node,
            max_frame_bytes: config.max_frame_bytes,
            next_id: AtomicU64::new(1),
            pending,
            in_flight: Arc::new(Semaphore::new(max_in_flight as usize)),
            max_in_flight,
            frames,
            retired,
            stats,
            fault,
            reader,
        })
    }

    /// The node at the other end, as it said in the handshake.
    pub(crate) fn remote_node(&self) -> NodeId {
        self.remote_node
    }

    /// Whether new calls should use another connection.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Sends one request and waits for its response until `deadline`.
    pub(crate) async fn call(
        &self,
        method: MethodId,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = match tokio::time::timeout_at(deadline, self.in_flight.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Error::new(ErrorCode::Unavailable, "connection closed")),
            Err(_) => {
                bump(&self.stats.call_timeouts);
                return Err(Error::new(
                    ErrorCode::Timeout,
                    format!("no free in-flight slot to {} within {timeout:?}", self.peer),
                ));
            }
        };
        let id = CorrelationId::new(self.next_id.fetch_add(1, Ordering::Relaxed));
        let header = RequestHeader {
            version: PROTOCOL_VERSION,
            correlation_id: id,
            source: self.local_node,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            method,
        };
        let frame = wire::request_frame(&header, body, self.max_frame_bytes)?;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let _guard = PendingGuard {
            pending: &self.pending,
            id,
        };
        // Checked after registering: the reader marks the connection retired before failing
        // every pending request, so either it fails ours or we see the mark here.
        if self.retired.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorCode::Unavailable,
                format!("connection to {} is closing", self.peer),
            ));
        }
        match self.fault.check(self.peer, Direction::Outbound) {
            Verdict::Pass => self.enqueue(frame)?,
            // A dropped request is never answered: the caller times out, as in a partition.
            Verdict::Drop => {}
            Verdict::Delay(d) => {
                tokio::time::sleep_until((tokio::time::Instant::now() + d).min(deadline)).await;
                self.enqueue(frame)?;
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(Error::new(ErrorCode::Unavailable, "connection closed")),
            Err(_) => {
                bump(&self.stats.call_timeouts);
                Err(Error::new(
                    ErrorCode::Timeout,
                    format!("no response from {} within {timeout:?}", self.peer),
                ))
            }
        }
    }

    fn enqueue(&self, frame: Vec<u8>) -> Result<(), Error> {
        self.frames.send(&frame).map_err(|e| match e {
            // Full only when the socket has stopped draining, e.g. the peer stopped reading.
            SendError::Full => Error::new(
                ErrorCode::Overloaded,
                format!("send buffer to {} is full", self.peer),
            ),
            SendError::Closed => Error::new(ErrorCode::Unavailable, "connection closed"),
        })
    }

    /// Waits until no request is in flight, or `timeout` passes. Returns whether it drained.
    pub(crate) async fn drain(&self, timeout: Duration) -> bool {
        let all = self.in_flight.acquire_many(self.max_in_flight);
        matches!(tokio::time::timeout(timeout, all).await, Ok(Ok(_)))
    }
}

struct ReaderState {
    peer: SocketAddr,
    read_half: BufReader<tokio::net::tcp::OwnedReadHalf>,
    pending: Arc<Pending>,
    retired: Arc<AtomicBool>,
    stats: Arc<TransportStats>,
    fault: FaultFilter,
    max_frame_bytes: usize,
    stall_timeout: Duration,
}

/// Reads responses until the connection ends, handing each to its waiting caller.
async fn read_responses(mut s: ReaderState) {
    let reason = loop {
        let payload = match read_frame(&mut s.read_half, s.max_frame_bytes, s.stall_timeout).await {
            Ok(Some(payload)) => payload,
            Ok(None) => break "closed by peer".to_string(),
            Err(e) => {
                crate::stats::count_frame_error(&s.stats, &e);
                break e.to_string();
            }
        };
        let (header, body) = match wire::parse(&payload) {
            Ok(Incoming::Response(header, body)) => (header, body),
            Ok(Incoming::GoAway) => {
                s.retired.store(true, Ordering::Release);
                continue;
            }
            Ok(Incoming::Request(..)) => {
                bump(&s.stats.corrupt_frames);
                break "server sent a request frame".to_string();
            }
            Err(e) => {
                bump(&s.stats.corrupt_frames);
                break format!("corrupt frame: {e}");
            }
        };
        let id = header.correlation_id;
        let reply = header.into_result().map(|()| body.to_vec());
        match s.fault.check(s.peer, Direction::Inbound) {
            Verdict::Pass => deliver(&s.pending, &s.stats, id, reply),
            Verdict::Drop => {}
            Verdict::Delay(d) => {
                let (pending, stats) = (Arc::clone(&s.pending), Arc::clone(&s.stats));
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    deliver(&pending, &stats, id, reply);
                });
            }
        }
    };
    tracing::debug!(peer = %s.peer, %reason, "client connection ended");
    s.retired.store(true, Ordering::Release);
    let error = Error::new(
        ErrorCode::Unavailable,
        format!("connection to {} lost: {reason}", s.peer),
    );
    s.pending.fail_all(&error);
}

fn deliver(pending: &Pending, stats: &TransportStats, id: CorrelationId, reply: Reply) {
    let waiter = pending.lock().remove(&id);
    match waiter {
        Some(waiter) => {
            let _ = waiter.send(reply);
        }
        None => {
            // Late (its caller timed out) or bogus: either way nobody is waiting.
            bump(&stats.unknown_responses);
            tracing::debug!(%id, "response with no waiting request dropped");
        }
    }
}

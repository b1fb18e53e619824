//! The RPC server: accepts connections, serves each with a reader loop that dispatches
//! requests to the [`Router`], and shuts down gracefully.
//!
//! Layout follows mini-redis: one accept loop bounded by a connection semaphore, one task per
//! connection, a watch channel that announces shutdown, and a channel whose closing tells
//! `shutdown` that every connection has drained.

use crate::config::TransportConfig;
use crate::connection::READ_BUFFER_BYTES;
use crate::error::TransportError;
use crate::fault::{Direction, FaultFilter, Verdict};
use crate::frame::read_frame;
use crate::handshake::server_handshake;
use crate::service::{BoxFuture, RequestContext, Router};
use crate::stats::{bump, count_frame_error, TransportStats};
use crate::wire::{self, Incoming};
use crate::writer::FrameSink;
use shoal_core::{Error, ErrorCode, NodeId, RequestHeader, PROTOCOL_VERSION};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// A running RPC server. Dropping it closes connections abruptly; call
/// [`RpcServer::shutdown`] to drain them.
pub struct RpcServer {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    /// Every connection task holds a clone of the sender; when all are gone, all drained.
    drained: mpsc::Receiver<()>,
    accept: JoinHandle<()>,
    shared: Arc<Shared>,
    stats: Arc<TransportStats>,
    fault: FaultFilter,
}

/// What every connection task of one server shares.
struct Shared {
    node: NodeId,
    router: Router,
    config: TransportConfig,
    stats: Arc<TransportStats>,
    fault: FaultFilter,
    /// Connection tasks alive right now.
    open_connections: AtomicUsize,
}

impl RpcServer {
    /// Binds `addr` and serves `router` as node `node`, with fresh statistics and a disabled
    /// fault filter.
    pub async fn bind(
        addr: SocketAddr,
        node: NodeId,
        router: Router,
        config: TransportConfig,
    ) -> Result<RpcServer, TransportError> {
        let stats = Arc::new(TransportStats::default());
        let fault = FaultFilter::with_stats(Arc::clone(&stats));
        Self::bind_with(addr, node, router, config, stats, fault).await
    }

    /// Like [`RpcServer::bind`], sharing statistics and fault rules with other components
    /// (typically the node's [`crate::RpcClient`]).
    pub async fn bind_with(
        addr: SocketAddr,
        node: NodeId,
        router: Router,
        config: TransportConfig,
        stats: Arc<TransportStats>,
        fault: FaultFilter,
    ) -> Result<RpcServer, TransportError> {
        config.validate()?;
        let listener = TcpListener::bind(addr).await?;
        Self::serve(listener, node, router, config, stats, fault)
    }

    /// Serves `router` as node `node` on a listener bound already. A node binds its port
    /// first (and the UDP port beside it), builds what its handlers reach, registers them,
    /// and only then serves: connections that arrive meanwhile wait in the listen backlog.
    /// Call from within a tokio runtime.
    pub fn serve(
        listener: TcpListener,
        node: NodeId,
        router: Router,
        config: TransportConfig,
        stats: Arc<TransportStats>,
        fault: FaultFilter,
    ) -> Result<RpcServer, TransportError> {
        config.validate()?;
        let local_addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (drained_tx, drained) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            node,
            router,
            config,
            stats: Arc::clone(&stats),
            fault: fault.clone(),
            open_connections: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            shutdown_rx,
            drained_tx,
        ));
        tracing::debug!(%local_addr, %node, "rpc server listening");
        Ok(RpcServer {
            local_addr,
            shutdown,
            drained,
            accept,
            shared,
            stats,
            fault,
        })
    }

    /// Connections currently open (accepted and not yet closed).
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Acquire)
    }

    /// The address the server listens on (with the real port if it bound port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters for this server's connections.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// The fault-injection filter applied to this server's traffic.
    pub fn fault_filter(&self) -> &FaultFilter {
        &self.fault
    }

    /// Stops accepting, tells every client to go away, waits (up to the drain timeout per
    /// connection) for in-flight requests to be answered, and closes everything.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.accept).await;
        // Returns None once every connection task has dropped its sender.
        let _ = self.drained.recv().await;
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.shutdown.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    drained: mpsc::Sender<()>,
) {
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut backoff = Duration::from_millis(1);
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                backoff = Duration::from_millis(1);
                shared.open_connections.fetch_add(1, Ordering::AcqRel);
                let task = ConnectionTask {
                    shared: Arc::clone(&shared),
                    shutdown: shutdown.clone(),
                    _drained: drained.clone(),
                    _permit: permit,
                };
                tokio::spawn(task.run(stream, remote));
            }
            Err(e) => {
                // Typically out of file descriptors: wait instead of spinning.
                tracing::warn!(error = %e, ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

struct ConnectionTask {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    /// Dropped when the task ends; see [`RpcServer::drained`].
    _drained: mpsc::Sender<()>,
    /// Held for the connection's lifetime; bounds open connections.
    _permit: OwnedSemaphorePermit,
}

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.shared.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionTask {
    async fn run(mut self, mut stream: TcpStream, remote: SocketAddr) {
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        let _ = stream.set_nodelay(true);
        let hello = match server_handshake(&mut stream, shared.node, config.handshake_timeout).await
        {
            Ok(hello) => hello,
            Err(e) => {
                bump(&shared.stats.handshake_failures);
                tracing::debug!(%remote, error = %e, "handshake refused");
                return;
            }
        };
        bump(&shared.stats.connections_opened);
        let peer = hello.listen_addr.unwrap_or(remote);
        let (read_half, write_half) = stream.into_split();
        let mut read_half = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
        let max_in_flight = config.max_in_flight_per_connection;
        let (frames, writer) = FrameSink::start(write_half, config.max_write_buffer_bytes);
        let in_flight = Arc::new(Semaphore::new(max_in_flight));
        let conn = ConnectionContext {
            shared: Arc::clone(&shared),
            node: hello.node,
            peer,
            frames,
            in_flight: Arc::clone(&in_flight),
        };
        let reason = loop {
            let read = tokio::select! {
                biased;
                _ = self.shutdown.changed() => {
                    conn.send(&wire::goaway_frame());
                    break "server shutting down".to_string();
                }
                read = read_frame(&mut read_half, config.max_frame_bytes, config.frame_stall_timeout) => read,
            };
            let payload = match read {
                Ok(Some(payload)) => payload,
                Ok(None) => break "closed by client".to_string(),
                Err(e) => {
                    count_frame_error(&shared.stats, &e);
                    break e.to_string();
                }
            };
            match wire::parse(&payload) {
                Ok(Incoming::Request(header, body)) => conn.handle(header, body),
                Ok(other) => {
                    bump(&shared.stats.corrupt_frames);
                    break format!("client sent a non-request frame: {other:?}");
                }
                Err(e) => {
                    bump(&shared.stats.corrupt_frames);
                    break format!("corrupt frame: {e}");
                }
            }
        };
        tracing::debug!(%remote, %reason, "server connection closing");
        // Let requests already accepted finish and be answered.
        let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(config.drain_timeout, in_flight.acquire_many(all)).await;
        conn.frames.close();
        let _ = writer.await;
    }
}

/// Per-connection state the request handlers need.
struct ConnectionContext {
    shared: Arc<Shared>,
    /// The node the connection's handshake announced: every request on it must name it.
    node: NodeId,
    peer: SocketAddr,
    frames: FrameSink,
    in_flight: Arc<Semaphore>,
}

impl ConnectionContext {
    /// Sends a frame to the client. If the client has stopped reading (the buffer is full) or
    /// the connection broke, the frame is dropped and counted; the client times out.
    fn send(&self, frame: &[u8]) {
        send_or_count(&self.frames, &self.shared.stats, frame);
    }

    fn handle(&self, header: RequestHeader, body: &[u8]) {
        let id = header.correlation_id;
        if header.version != PROTOCOL_VERSION {
            let error = Error::new(
                ErrorCode::UnsupportedVersion {
                    supported: PROTOCOL_VERSION,
                },
                format!("request of protocol v{}", header.version),
            );
            self.send(&wire::error_frame(id, error));
            return;
        }
        if header.source != self.node {
            bump(&self.shared.stats.spoofed_sources);
            let error = Error::new(
                ErrorCode::InvalidRequest,
                format!(
                    "request names source {} on a connection from {}",
                    header.source, self.node
                ),
            );
            self.send(&wire::error_frame(id, error));
            return;
        }
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            bump(&self.shared.stats.overloaded_rejections);
            let error = Error::new(
                ErrorCode::Overloaded,
                format!(
                    "more than {} requests in flight on this connection",
                    self.shared.config.max_in_flight_per_connection
                ),
            );
            self.send(&wire::error_frame(id, error));
            return;
        };
        let inbound_delay = match self.shared.fault.check(self.peer, Direction::Inbound) {
            Verdict::Pass => None,
            Verdict::Drop => return,
            Verdict::Delay(d) => Some(d),
        };
        let timeout = match header.timeout_ms {
            0 => self.shared.config.default_request_timeout,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let ctx = RequestContext {
            source: self.node,
            peer: self.peer,
            timeout,
        };
        let shared = Arc::clone(&self.shared);
        let response = shared
            .router
            .dispatch(ctx, header.method, body, wire::response_prefix(id));
        let frames = self.frames.clone();
        let peer = self.peer;
        let job: BoxFuture<()> = Box::pin(async move {
            if let Some(d) = inbound_delay {
                tokio::time::sleep(d).await;
            }
            let result = match tokio::time::timeout(timeout, response).await {
                Ok(result) => result,
                Err(_) => {
                    bump(&shared.stats.handler_timeouts);
                    Err(Error::new(
                        ErrorCode::Timeout,
                        format!("handler exceeded {timeout:?}"),
                    ))
                }
            };
            let frame = wire::finish_response(id, result, shared.config.max_frame_bytes);
            match shared.fault.check(peer, Direction::Outbound) {
                Verdict::Pass => {}
                Verdict::Drop => return,
                Verdict::Delay(d) => tokio::time::sleep(d).await,
            }
            send_or_count(&frames, &shared.stats, &frame);
            drop(permit);
        });
        run_inline_or_spawn(job);
    }
}

fn send_or_count(frames: &FrameSink, stats: &TransportStats, frame: &[u8]) {
    if frames.send(frame).is_err() {
        bump(&stats.unsent_responses);
    }
}

/// Polls `job` once right here; most handlers finish without waiting, and answering them
/// inline saves a task spawn and a wake-up per request. A job that does wait is moved into its
/// own task, whose first poll registers a real waker (futures re-register on every poll).
fn run_inline_or_spawn(mut job: BoxFuture<()>) {
    let mut cx = Context::from_waker(Waker::noop());
    if Pin::as_mut(&mut job).poll(&mut cx).is_pending() {
        tokio::spawn(job);
    }
}

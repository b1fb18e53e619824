//! The tokio driver: runs a [`Swim`] core over UDP datagrams (probes, gossip) and
//! shoal-transport TCP RPC (push-pull, fallback pings), with real timers.
//!
//! One task owns the core and is the only place it is touched; it waits on the UDP socket,
//! the next timer, commands from [`MembershipNode`] handles, reliable requests from the RPC
//! server and the outcomes of reliable exchanges it started. Everything else is plumbing.
//!
//! [`MembershipNode::start`] binds its own UDP socket and RPC server on one port. A node
//! that already serves RPC (a store, whose one listener carries node RPC and Raft too) uses
//! [`MembershipNode::start_shared`] instead: it registers a [`MembershipInbox`] on its own
//! router, and hands the node its RPC client and a UDP socket on the same port number.

mod timers;

use crate::config::MembershipConfig;
use crate::event::{MemberEvent, UserMessage};
use crate::keyring::{Keyring, KeyringError};
use crate::member::Member;
use crate::output::{Output, RequestId};
use crate::stats::MembershipStats;
use crate::swim::{Swim, SwimError};
use shoal_core::rng::entropy_seed;
use shoal_core::{Clock, NodeId, SystemClock};
use shoal_transport::{
    DatagramTransport, Router, Rpc, RpcClient, RpcServer, RpcTransport, RpcTransportExt,
    TransportConfig, TransportError, UdpTransport,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use timers::TimerQueue;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

/// The RPC method carrying membership's reliable channel: sealed request bytes in, sealed
/// response bytes out.
pub struct MembershipExchange;

impl Rpc for MembershipExchange {
    const NAME: &'static str = "shoal.membership.exchange";
    type Request = Vec<u8>;
    type Response = Vec<u8>;
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// This node's id, unique in the cluster.
    pub id: NodeId,
    /// Where to bind UDP and TCP (the same port for both). Port 0 picks a free one.
    pub bind: SocketAddr,
    /// The address peers should use, if not the bound one (behind NAT, or bound to
    /// 0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// Initial metadata.
    pub meta: Vec<u8>,
    /// Protocol settings.
    pub config: MembershipConfig,
    /// Transport settings for UDP and TCP.
    pub transport: TransportConfig,
    /// The core's random seed; `None` draws one from entropy.
    pub seed: Option<u64>,
    /// How long [`MembershipNode::leave`] waits for the Left notice to go out. Default 5 s.
    pub leave_timeout: Duration,
    /// Buffered events per subscriber; a subscriber that falls further behind loses the
    /// oldest (and is told so by `RecvError::Lagged`). Default 4096.
    pub event_buffer: usize,
}

impl NodeOptions {
    /// Options with defaults: no metadata, LAN transport settings, 5 s leave timeout.
    pub fn new(id: NodeId, bind: SocketAddr, config: MembershipConfig) -> Self {
        Self {
            id,
            bind,
            advertise: None,
            meta: Vec::new(),
            config,
            transport: TransportConfig::lan(),
            seed: None,
            leave_timeout: Duration::from_secs(5),
            event_buffer: 4096,
        }
    }
}

/// Why a node could not start or answer.
#[derive(Debug, Error)]
pub enum DriverError {
    /// The protocol refused (bad config or metadata, left, join failed).
    #[error(transparent)]
    Swim(#[from] SwimError),
    /// A socket could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The keyring refused the change.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// Encryption is not configured, so there is no keyring to change.
    #[error("no keyring: encryption is off")]
    NoKeyring,
    /// The node has shut down.
    #[error("the membership node has shut down")]
    Stopped,
}

/// The reliable channel's handler and what it feeds the driver: register it on the node's
/// [`Router`] before the server is built, then hand it to
/// [`MembershipNode::start_shared`].
pub struct MembershipInbox {
    commands: mpsc::Sender<Command>,
    command_rx: mpsc::Receiver<Command>,
}

impl Default for MembershipInbox {
    fn default() -> Self {
        Self::new()
    }
}

impl MembershipInbox {
    /// A fresh inbox.
    pub fn new() -> Self {
        let (commands, command_rx) = mpsc::channel(256);
        Self {
            commands,
            command_rx,
        }
    }

    /// Registers the [`MembershipExchange`] handler.
    pub fn register(&self, router: &mut Router) -> Result<(), shoal_transport::RegisterError> {
        let to_core = self.commands.clone();
        router.register::<MembershipExchange, _, _>(move |ctx, request: Vec<u8>| {
            let to_core = to_core.clone();
            async move {
                let (reply, answer) = oneshot::channel();
                let stopped = || {
                    shoal_core::Error::new(
                        shoal_core::ErrorCode::ShuttingDown,
                        "membership node stopped",
                    )
                };
                to_core
                    .send(Command::Reliable(ctx.peer, request, reply))
                    .await
                    .map_err(|_| stopped())?;
                answer.await.map_err(|_| stopped())?.ok_or_else(|| {
                    shoal_core::Error::new(
                        shoal_core::ErrorCode::InvalidRequest,
                        "membership exchange refused",
                    )
                })
            }
        })?;
        Ok(())
    }
}

type Reply<T> = oneshot::Sender<T>;
type KeyringChange = Box<dyn FnOnce(&mut Keyring) -> Result<(), KeyringError> + Send>;

enum Command {
    Join(Vec<SocketAddr>, Reply<Result<usize, SwimError>>),
    Leave(Reply<()>),
    SetMeta(Vec<u8>, Reply<Result<(), SwimError>>),
    Broadcast(Vec<u8>, Reply<Result<(), SwimError>>),
    Members(Reply<Vec<Member>>),
    Stats(Reply<(MembershipStats, u32)>),
    Keyring(KeyringChange, Reply<Result<(), DriverError>>),
    Reliable(SocketAddr, Vec<u8>, Reply<Option<Vec<u8>>>),
    Shutdown,
}

/// A running membership node. Cheap to share behind an `Arc`; dropping it does not stop the
/// node: call [`MembershipNode::leave`] or [`MembershipNode::shutdown`].
pub struct MembershipNode {
    id: NodeId,
    addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<MemberEvent>,
    messages: broadcast::Sender<UserMessage>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

/// How many UDP ports [`MembershipNode::start`] tries, with port 0, for one whose TCP twin is
/// free too.
const PORT_ATTEMPTS: u32 = 16;

impl MembershipNode {
    /// Binds UDP and TCP and starts the protocol. The node is alone until
    /// [`MembershipNode::join`].
    pub async fn start(options: NodeOptions) -> Result<Self, DriverError> {
        options.config.validate().map_err(SwimError::from)?;
        let inbox = MembershipInbox::new();
        // TCP on the same port as UDP, so one address serves both. With port 0 the system
        // picks a free UDP port whose TCP twin may be in use (an outgoing connection's
        // port, say): then another UDP port is picked, a few times.
        let mut attempts = 0;
        let (udp, server) = loop {
            let udp = UdpTransport::bind(options.bind, options.id, &options.transport).await?;
            let mut router = Router::new();
            inbox
                .register(&mut router)
                .expect("one method on a fresh router");
            let tcp_bind = SocketAddr::new(options.bind.ip(), udp.local_addr().port());
            match RpcServer::bind(tcp_bind, options.id, router, options.transport.clone()).await {
                Ok(server) => break (udp, server),
                Err(TransportError::Io(e))
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && options.bind.port() == 0
                        && attempts < PORT_ATTEMPTS =>
                {
                    attempts += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let udp_addr = udp.local_addr();
        let addr = options.advertise.unwrap_or(udp_addr);
        // Peers' fault rules and views name this node by the address it advertises.
        let client = Arc::new(
            RpcClient::new(options.id, Some(addr), options.transport.clone())
                .map_err(TransportError::from)?,
        );
        Self::run(
            options,
            inbox,
            client.clone(),
            udp,
            Some((server, client)),
            addr,
        )
    }

    /// Starts the protocol over a transport the caller owns: `inbox` registered on the
    /// router of the caller's RPC server, `client` the caller's RPC client, and `udp` a
    /// socket the caller bound (on the same port number as its RPC server, so one address
    /// serves both). Peers reach this node at `options.advertise`, or the socket's address.
    pub fn start_shared(
        options: NodeOptions,
        inbox: MembershipInbox,
        client: Arc<dyn RpcTransport>,
        udp: UdpTransport,
    ) -> Result<Self, DriverError> {
        options.config.validate().map_err(SwimError::from)?;
        let addr = options.advertise.unwrap_or(udp.local_addr());
        Self::run(options, inbox, client, udp, None, addr)
    }

    fn run(
        options: NodeOptions,
        inbox: MembershipInbox,
        client: Arc<dyn RpcTransport>,
        udp: UdpTransport,
        own: Option<(RpcServer, Arc<RpcClient>)>,
        addr: SocketAddr,
    ) -> Result<Self, DriverError> {
        let MembershipInbox {
            commands,
            command_rx,
        } = inbox;
        let seed = options.seed.unwrap_or_else(entropy_seed);
        let swim = Swim::new(
            options.id,
            addr,
            options.meta.clone(),
            0,
            options.config.clone(),
            seed,
        )?;
        let (events, _) = broadcast::channel(options.event_buffer.max(1));
        let (messages, _) = broadcast::channel(options.event_buffer.max(1));
        let driver = Driver {
            swim,
            clock: SystemClock::new(),
            udp: Arc::new(udp),
            client,
            own,
            timers: TimerQueue::default(),
            commands: command_rx,
            events: events.clone(),
            messages: messages.clone(),
            pending_join: None,
            leave_timeout: options.leave_timeout,
        };
        let task = tokio::spawn(driver.run());
        Ok(Self {
            id: options.id,
            addr,
            commands,
            events,
            messages,
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address peers reach this node at (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Membership events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MemberEvent> {
        self.events.subscribe()
    }

    /// User broadcasts from other members, from now on.
    pub fn subscribe_messages(&self) -> broadcast::Receiver<UserMessage> {
        self.messages.subscribe()
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, DriverError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| DriverError::Stopped)?;
        answer.await.map_err(|_| DriverError::Stopped)
    }

    /// Joins through `seeds`, retrying with backoff as configured. Returns how many seeds
    /// answered the successful attempt.
    pub async fn join(&self, seeds: Vec<SocketAddr>) -> Result<usize, DriverError> {
        Ok(self.ask(|r| Command::Join(seeds, r)).await??)
    }

    /// Publishes new metadata (refused above `max_meta_bytes`).
    pub async fn set_meta(&self, meta: Vec<u8>) -> Result<(), DriverError> {
        Ok(self.ask(|r| Command::SetMeta(meta, r)).await??)
    }

    /// Broadcasts `payload` to every member, best-effort.
    pub async fn broadcast(&self, payload: Vec<u8>) -> Result<(), DriverError> {
        Ok(self.ask(|r| Command::Broadcast(payload, r)).await??)
    }

    /// Every member this node knows of, itself included.
    pub async fn members(&self) -> Result<Vec<Member>, DriverError> {
        self.ask(Command::Members).await
    }

    /// Counters, and Lifeguard's local health score.
    pub async fn stats(&self) -> Result<(MembershipStats, u32), DriverError> {
        self.ask(Command::Stats).await
    }

    /// Changes the encryption keyring (add, use or remove a key) while running.
    pub async fn change_keyring(
        &self,
        change: impl FnOnce(&mut Keyring) -> Result<(), KeyringError> + Send + 'static,
    ) -> Result<(), DriverError> {
        self.ask(|r| Command::Keyring(Box::new(change), r)).await?
    }

    /// Leaves gracefully: announces it, waits (up to the leave timeout) for the notice to
    /// go out, then stops.
    pub async fn leave(&self) {
        let _ = self.ask(Command::Leave).await;
        self.join_task().await;
    }

    /// Stops at once, without telling anyone (peers will detect it as failed).
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        self.join_task().await;
    }

    async fn join_task(&self) {
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

struct Driver {
    swim: Swim,
    clock: SystemClock,
    udp: Arc<UdpTransport>,
    client: Arc<dyn RpcTransport>,
    /// The server and client this node started itself (stopped with it), if it did not
    /// share its caller's.
    own: Option<(RpcServer, Arc<RpcClient>)>,
    timers: TimerQueue,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<MemberEvent>,
    messages: broadcast::Sender<UserMessage>,
    pending_join: Option<Reply<Result<usize, SwimError>>>,
    leave_timeout: Duration,
}

impl Driver {
    async fn run(mut self) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(RequestId, Result<Vec<u8>, ()>)>();
        let mut leaving: Option<(tokio::time::Instant, Reply<()>)> = None;
        self.swim.start(self.clock.now());
        self.flush(&done_tx).await;
        loop {
            if let Some((deadline, _)) = &leaving {
                if self.swim.leave_announced() || tokio::time::Instant::now() >= *deadline {
                    if let Some((_, reply)) = leaving.take() {
                        let _ = reply.send(());
                    }
                    break;
                }
            }
            let next_timer = self.timers.next_deadline();
            tokio::select! {
                received = self.udp.recv() => match received {
                    Ok(datagram) => {
                        self.swim.handle_datagram(self.clock.now(), datagram.from, &datagram.payload);
                    }
                    Err(e) => {
                        tracing::warn!(%e, "membership udp receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = sleep_until(next_timer) => {
                    let now = self.clock.now();
                    for timer in self.timers.pop_due(tokio::time::Instant::now()) {
                        self.swim.handle_timer(now, timer);
                    }
                }
                Some((id, result)) = done_rx.recv() => {
                    self.swim.handle_reliable_response(self.clock.now(), id, result);
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    match command {
                        Command::Shutdown => break,
                        Command::Leave(reply) => {
                            let now = self.clock.now();
                            self.swim.leave(now);
                            self.swim.gossip_now(now);
                            leaving = Some((tokio::time::Instant::now() + self.leave_timeout, reply));
                        }
                        other => self.command(other),
                    }
                }
            }
            self.flush(&done_tx).await;
        }
        if let Some((server, client)) = self.own.take() {
            server.shutdown().await;
            client.shutdown().await;
        }
    }

    fn command(&mut self, command: Command) {
        let now = self.clock.now();
        match command {
            Command::Join(seeds, reply) => match self.swim.join(now, &seeds) {
                Ok(()) => {
                    // A newer join supersedes an older one still waiting: its caller hears
                    // so, rather than a closed channel that reads as the driver stopping.
                    if let Some(older) = self.pending_join.replace(reply) {
                        let _ = older.send(Err(SwimError::JoinSuperseded));
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::SetMeta(meta, reply) => {
                let _ = reply.send(self.swim.set_meta(meta));
            }
            Command::Broadcast(payload, reply) => {
                let _ = reply.send(self.swim.broadcast(payload));
            }
            Command::Members(reply) => {
                let _ = reply.send(self.swim.members().to_vec());
            }
            Command::Stats(reply) => {
                let _ = reply.send((*self.swim.stats(), self.swim.health_score()));
            }
            Command::Keyring(change, reply) => {
                let result = match self.swim.keyring_mut() {
                    Some(ring) => change(ring).map_err(DriverError::from),
                    None => Err(DriverError::NoKeyring),
                };
                let _ = reply.send(result);
            }
            Command::Reliable(from, bytes, reply) => {
                let _ = reply.send(self.swim.handle_reliable_request(now, from, &bytes));
            }
            Command::Leave(_) | Command::Shutdown => {}
        }
    }

    /// Carries out everything the core asked for.
    async fn flush(&mut self, done: &mpsc::UnboundedSender<(RequestId, Result<Vec<u8>, ()>)>) {
        while let Some(output) = self.swim.poll_output() {
            match output {
                Output::Datagram { to, bytes } => {
                    if let Err(e) = self.udp.send_to(to, &bytes).await {
                        tracing::debug!(%to, %e, "membership datagram not sent");
                    }
                }
                Output::Reliable {
                    to,
                    id,
                    bytes,
                    timeout,
                } => {
                    let client = self.client.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        let result = client
                            .call::<MembershipExchange>(to, &bytes, timeout)
                            .await
                            .map_err(|e| tracing::debug!(%to, %e, "membership exchange failed"));
                        let _ = done.send((id, result));
                    });
                }
                Output::Timer { after, timer } => self.timers.push(after, timer),
                Output::Event(event) => {
                    let _ = self.events.send(event);
                }
                Output::UserMessage(message) => {
                    let _ = self.messages.send(message);
                }
                Output::JoinFinished(result) => {
                    if let Some(reply) = self.pending_join.take() {
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

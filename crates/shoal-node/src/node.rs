//! One node: its range store (node RPC, Raft and gossip on one port) and its embedded HTTP
//! gateway, started and stopped together; or a standalone gateway, whose HTTP routes reach
//! the cluster through a topology with no store under it.

use shoal_core::NodeId;
use shoal_gateway::{routes, GatewayConfig, HttpListener, KvRouter, TlsListener};
use shoal_store::{Store, StoreConfig, StoreError, Topology};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a stopping node waits for HTTP requests in flight.
pub const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How to run one node.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// The node's id, unique in the cluster.
    pub id: NodeId,
    /// Where its engine and WAL live (unused by a standalone gateway, which keeps nothing on
    /// disk).
    pub data_dir: PathBuf,
    /// Node RPC, Raft and gossip (UDP on the same port number).
    pub listen: SocketAddr,
    /// The HTTP gateway.
    pub http: SocketAddr,
    /// Members to join through (empty: the first node of a cluster).
    pub join: Vec<SocketAddr>,
    /// The founding voters, if this node is to bootstrap the cluster (a node already
    /// bootstrapped ignores it).
    pub bootstrap: Vec<NodeId>,
    /// The address peers reach this node at, if not `listen` (behind NAT, or bound to
    /// 0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// The node's failure domain (a rack, a zone), registered for placement.
    pub zone: Option<String>,
    /// The gateway's settings (CORS origins, bearer token, limits).
    pub gateway: GatewayConfig,
    /// Serve HTTPS with this certificate and key instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// Whether the node hosts ranges (a data node), or only routes requests (a standalone
    /// gateway: a member of the cluster's membership that learns where ranges are by gossip
    /// and the meta range, with no engine, no WAL and no files).
    pub hosts_ranges: bool,
    /// BREAKS LINEARIZABILITY (see `StoreConfig::unsafe_skip_read_barrier`).
    #[cfg(feature = "unsafe-test-switches")]
    pub unsafe_skip_read_barrier: bool,
    /// Store settings beyond the above (tests shorten timeouts).
    pub tune: fn(&mut StoreConfig),
}

/// A PEM certificate chain and its private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl NodeSettings {
    /// Settings for node `id` with everything else at its default (no joins, no
    /// bootstrap, HTTP without TLS, CORS closed, no token).
    pub fn new(id: NodeId, data_dir: PathBuf, listen: SocketAddr, http: SocketAddr) -> Self {
        Self {
            id,
            data_dir,
            listen,
            http,
            join: Vec::new(),
            bootstrap: Vec::new(),
            advertise: None,
            zone: None,
            gateway: GatewayConfig::default(),
            tls: None,
            hosts_ranges: true,
            #[cfg(feature = "unsafe-test-switches")]
            unsafe_skip_read_barrier: false,
            tune: |_| {},
        }
    }
}

/// What a node is under its gateway.
enum Member {
    /// A data node's store.
    Data(Store),
    /// A standalone gateway's view of the cluster.
    Gateway(Topology),
}

/// A running node.
pub struct Node {
    member: Member,
    http_addr: SocketAddr,
    https: bool,
    stop_http: Option<oneshot::Sender<()>>,
    http_task: JoinHandle<std::io::Result<()>>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store refused.
    #[error("store: {0}")]
    Store(StoreError),
    /// The HTTP listener could not bind.
    #[error("http listener: {0}")]
    Http(std::io::Error),
    /// The certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] shoal_gateway::TlsError),
}

impl Node {
    /// Binds the HTTP listener, opens the store, joins, bootstraps if asked (and not done
    /// before), and serves HTTP.
    pub async fn start(settings: NodeSettings) -> Result<Node, StartError> {
        // Read before anything starts: a bad certificate stops the node at once.
        let tls = match &settings.tls {
            Some(files) => Some(shoal_gateway::server_config(&files.cert, &files.key)?),
            None => None,
        };
        // Bound first, so the connections the store opens while joining cannot take its port.
        let listener = tokio::net::TcpListener::bind(settings.http)
            .await
            .map_err(StartError::Http)?;
        let member = if settings.hosts_ranges {
            Member::Data(open_store(&settings).await?)
        } else {
            let mut config = StoreConfig::new(settings.id, PathBuf::new(), settings.listen);
            config.advertise = settings.advertise;
            (settings.tune)(&mut config);
            let topology = Topology::open(config.topology())
                .await
                .map_err(StartError::Store)?;
            if let Err(e) = topology.join(settings.join.clone()).await {
                tracing::warn!(error = %e, "could not join yet; membership keeps trying");
            }
            Member::Gateway(topology)
        };
        let http_addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                member.shutdown().await;
                return Err(StartError::Http(e));
            }
        };
        let listener = match tls {
            None => HttpListener::Plain(listener),
            Some(tls) => match TlsListener::new(listener, tls) {
                Ok(listener) => HttpListener::Tls(listener),
                Err(e) => {
                    member.shutdown().await;
                    return Err(StartError::Http(e));
                }
            },
        };
        let router = match &member {
            Member::Data(store) => KvRouter::new(store.clone()),
            Member::Gateway(topology) => KvRouter::new(topology.clone()),
        };
        let app = routes(router, settings.gateway.clone());
        let (stop_http, stopped) = oneshot::channel::<()>();
        let http_task = tokio::spawn(shoal_gateway::serve(listener, app, async move {
            let _ = stopped.await;
        }));
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let (rpc, role) = match &member {
            Member::Data(store) => (store.addr(), "data"),
            Member::Gateway(topology) => (topology.addr(), "gateway"),
        };
        tracing::info!(node = %settings.id, %rpc, http = %http_addr, scheme, role, "node started");
        if settings.gateway.fault_injection {
            tracing::warn!("fault injection is on: /v1/admin/faults can cut this node off");
        }
        Ok(Node {
            member,
            http_addr,
            https: settings.tls.is_some(),
            stop_http: Some(stop_http),
            http_task,
        })
    }

    /// The node's store (`None` for a standalone gateway).
    pub fn store(&self) -> Option<&Store> {
        match &self.member {
            Member::Data(store) => Some(store),
            Member::Gateway(_) => None,
        }
    }

    /// Where the gateway listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The gateway's URL (`http://` or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// Stops accepting HTTP requests and finishes those in flight (for at most
    /// [`HTTP_DRAIN`]), then leaves the cluster and closes the store (everything
    /// acknowledged is durable).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(HTTP_DRAIN, &mut self.http_task)
            .await
            .is_err()
        {
            tracing::warn!("HTTP requests still in flight after {HTTP_DRAIN:?}; stopping anyway");
            self.http_task.abort();
        }
        let id = self.member.id();
        self.member.shutdown().await;
        tracing::info!(node = %id, "node stopped");
    }
}

impl Member {
    fn id(&self) -> NodeId {
        match self {
            Member::Data(store) => store.id(),
            Member::Gateway(topology) => topology.id(),
        }
    }

    /// Leaves the cluster and stops (a data node after handing its leaderships over).
    async fn shutdown(&self) {
        match self {
            Member::Data(store) => store.shutdown().await,
            Member::Gateway(topology) => topology.shutdown().await,
        }
    }
}

/// Opens a data node's store, joins and bootstraps as `settings` say.
async fn open_store(settings: &NodeSettings) -> Result<Store, StartError> {
    let mut config = StoreConfig::new(settings.id, &settings.data_dir, settings.listen);
    config.advertise = settings.advertise;
    config.zone = settings.zone.clone();
    #[cfg(feature = "unsafe-test-switches")]
    if settings.unsafe_skip_read_barrier {
        tracing::error!("UNSAFE: linearizable reads skip the read barrier (a test switch)");
        config.unsafe_skip_read_barrier = true;
    }
    (settings.tune)(&mut config);
    let store = Store::open(config).await.map_err(StartError::Store)?;
    if !settings.join.is_empty() {
        if let Err(e) = store.join(settings.join.clone()).await {
            tracing::warn!(error = %e, "could not join yet; membership keeps trying");
        }
    }
    if !settings.bootstrap.is_empty() {
        match store.bootstrap(&settings.bootstrap).await {
            Ok(_) => tracing::info!(node = %settings.id, "bootstrapped the cluster"),
            Err(StoreError::AlreadyBootstrapped) => {}
            Err(StoreError::ClusterExists) => tracing::warn!(
                node = %settings.id,
                "the cluster exists already and this data directory is new: joining it, not bootstrapping"
            ),
            Err(e) => {
                store.shutdown().await;
                return Err(StartError::Store(e));
            }
        }
    }
    Ok(store)
}

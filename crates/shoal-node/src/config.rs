//! `shoal start`'s configuration. Each setting comes from its flag, else its `SHOAL_*`
//! environment variable (clap reads both), else the `--config` file (TOML, the same names
//! as the flags), else its default.

use crate::node::{NodeSettings, TlsFiles};
use serde::Deserialize;
use shoal_core::NodeId;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where node RPC, Raft and gossip listen unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Where the gateway listens unless told otherwise.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8400";

/// `shoal start`'s flags (each also read from its environment variable). No `Debug`: it
/// holds the token.
#[derive(clap::Args, Default)]
pub struct StartArgs {
    /// A TOML file of settings (the flags' names, e.g. `data-dir = "/var/lib/shoal"`);
    /// flags and environment variables override it.
    #[arg(long, env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id, unique in the cluster (required).
    #[arg(long, env = "SHOAL_ID")]
    pub id: Option<u64>,
    /// Where the node keeps its data (required for a data node; a standalone gateway keeps
    /// nothing on disk and refuses it).
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Node RPC and Raft over TCP, gossip over UDP, on this one address [default:
    /// 127.0.0.1:7400].
    #[arg(long, env = "SHOAL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The HTTP gateway [default: 127.0.0.1:8400].
    #[arg(long, env = "SHOAL_HTTP")]
    pub http: Option<SocketAddr>,
    /// The address peers reach `listen` at, if not that one (bound to 0.0.0.0, or NAT).
    #[arg(long, env = "SHOAL_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// Members to join through (their `listen` addresses), comma-separated.
    #[arg(long, env = "SHOAL_JOIN", value_delimiter = ',')]
    pub join: Option<Vec<SocketAddr>>,
    /// Creates the cluster with these founding voters (node ids, comma-separated, this node
    /// among them) unless this node already holds data. Give every founding node the same
    /// list.
    #[arg(long, env = "SHOAL_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Option<Vec<u64>>,
    /// This node's failure domain (a rack, a zone), at most 128 bytes.
    #[arg(long, env = "SHOAL_ZONE")]
    pub zone: Option<String>,
    /// Origins whose pages may call the gateway (CORS), comma-separated, each exactly
    /// `scheme://host[:port]` [default: none, CORS closed].
    #[arg(long, env = "SHOAL_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Require `Authorization: Bearer <token>` on every route but /health. Prefer the
    /// environment variable or the file: flags show in process listings.
    #[arg(long, env = "SHOAL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Serve HTTPS: the PEM certificate chain (with --tls-key).
    #[arg(long, env = "SHOAL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Serve HTTPS: the PEM private key (with --tls-cert).
    #[arg(long, env = "SHOAL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve `/v1/admin/faults`, which cuts or delays this node's traffic with chosen peers:
    /// for fault-injection tests (`cargo xtask cluster-test`), never in production.
    #[arg(long, env = "SHOAL_FAULT_INJECTION")]
    pub fault_injection: bool,
    /// BREAKS LINEARIZABILITY: linearizable reads skip the read barrier (a build with the
    /// `unsafe-test-switches` feature only, for proving the cluster test catches it).
    #[cfg(feature = "unsafe-test-switches")]
    #[arg(long, hide = true)]
    pub unsafe_skip_read_barrier: bool,
}

/// The `--config` file: the same settings, every one optional. No `Debug`: it holds the
/// token.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`StartArgs::id`].
    pub id: Option<u64>,
    /// See [`StartArgs::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`StartArgs::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`StartArgs::http`].
    pub http: Option<SocketAddr>,
    /// See [`StartArgs::advertise`].
    pub advertise: Option<SocketAddr>,
    /// See [`StartArgs::join`].
    pub join: Option<Vec<SocketAddr>>,
    /// See [`StartArgs::bootstrap`].
    pub bootstrap: Option<Vec<u64>>,
    /// See [`StartArgs::zone`].
    pub zone: Option<String>,
    /// See [`StartArgs::cors_origins`].
    pub cors_origins: Option<Vec<String>>,
    /// See [`StartArgs::auth_token`].
    pub auth_token: Option<String>,
    /// See [`StartArgs::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`StartArgs::tls_key`].
    pub tls_key: Option<PathBuf>,
}

impl FileConfig {
    /// Reads and parses `path`; unknown settings are refused.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// What a node started from [`StartArgs`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A data node: hosts ranges, serves a gateway (`shoal start`).
    Data,
    /// A standalone gateway: joins membership to learn the topology, hosts no range
    /// (`shoal gateway`).
    Gateway,
}

impl StartArgs {
    /// The settings of a node of `role`: these flags over `file` over the defaults.
    pub fn resolve_as(self, file: FileConfig, role: Role) -> Result<NodeSettings, String> {
        let id = self
            .id
            .or(file.id)
            .ok_or("--id (or SHOAL_ID, or id in the file) is required")?;
        if id == 0 {
            return Err("node ids start at 1".into());
        }
        let data_dir = match (self.data_dir.or(file.data_dir), role) {
            (Some(dir), Role::Data) => dir,
            // A standalone gateway keeps nothing on disk.
            (None, Role::Gateway) => PathBuf::new(),
            (Some(_), Role::Gateway) => {
                return Err("a gateway keeps no data: it takes no --data-dir".into())
            }
            (None, Role::Data) => {
                return Err(
                    "--data-dir (or SHOAL_DATA_DIR, or data-dir in the file) is required".into(),
                )
            }
        };
        let default = |addr: &str| addr.parse::<SocketAddr>().expect("a valid default");
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| default(DEFAULT_LISTEN));
        let http = self
            .http
            .or(file.http)
            .unwrap_or_else(|| default(DEFAULT_HTTP));
        let mut settings = NodeSettings::new(NodeId::new(id), data_dir, listen, http);
        settings.advertise = self.advertise.or(file.advertise);
        settings.join = self.join.or(file.join).unwrap_or_default();
        settings.bootstrap = self
            .bootstrap
            .or(file.bootstrap)
            .unwrap_or_default()
            .into_iter()
            .map(NodeId::new)
            .collect();
        if role == Role::Gateway {
            settings.hosts_ranges = false;
            if !settings.bootstrap.is_empty() {
                return Err("a gateway hosts no ranges and cannot bootstrap a cluster".into());
            }
            if settings.join.is_empty() {
                return Err(
                    "a gateway needs --join: the members it learns the cluster from".into(),
                );
            }
        }
        if !settings.bootstrap.is_empty() && !settings.bootstrap.contains(&settings.id) {
            return Err(format!(
                "--bootstrap lists the founding voters, and this node ({id}) is not among them"
            ));
        }
        settings.zone = self.zone.or(file.zone);
        settings.gateway.cors_origins = self
            .cors_origins
            .or(file.cors_origins)
            .unwrap_or_default()
            .iter()
            .map(|o| shoal_gateway::parse_origin(o))
            .collect::<Result<_, _>>()?;
        settings.gateway.auth_token = self.auth_token.or(file.auth_token);
        if settings.gateway.auth_token.as_deref() == Some("") {
            return Err("the auth token is empty".into());
        }
        settings.gateway.fault_injection = self.fault_injection;
        settings.tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        #[cfg(feature = "unsafe-test-switches")]
        {
            settings.unsafe_skip_read_barrier = self.unsafe_skip_read_barrier;
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        start: StartArgs,
    }

    fn args(flags: &[&str]) -> StartArgs {
        let mut argv = vec!["shoal"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().start
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            id = 2
            data-dir = "/from/file"
            http = "127.0.0.1:9000"
            join = ["127.0.0.1:7401", "127.0.0.1:7402"]
            cors-origins = ["https://app.example.com"]
            "#,
        )
        .unwrap();
        let settings = args(&["--data-dir", "/from/flag"])
            .resolve_as(file, Role::Data)
            .unwrap();
        assert_eq!(settings.id, NodeId::new(2));
        assert_eq!(settings.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.http, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(settings.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(settings.join.len(), 2);
        assert_eq!(settings.gateway.cors_origins.len(), 1);
        assert!(settings.gateway.auth_token.is_none());
        assert!(settings.tls.is_none());
    }

    #[test]
    fn bad_configurations_are_refused_with_reasons() {
        let none = FileConfig::default;
        let data = |flags: &[&str]| args(flags).resolve_as(none(), Role::Data).err().unwrap();
        assert!(data(&[]).contains("--id"));
        assert!(data(&["--id", "1"]).contains("--data-dir"));
        let refused = |flags: &[&str]| {
            let mut all = vec!["--id", "1", "--data-dir", "d"];
            all.extend_from_slice(flags);
            data(&all)
        };
        assert!(refused(&["--cors-origins", "*"]).contains("origin"));
        assert!(refused(&["--cors-origins", "https://a.example/path"]).contains("origin"));
        assert!(refused(&["--tls-cert", "c.pem"]).contains("together"));
        assert!(refused(&["--bootstrap", "2,3"]).contains("not among them"));
        assert!(toml::from_str::<FileConfig>("listen-addr = \"x\"").is_err());
        let gateway = |flags: &[&str]| args(flags).resolve_as(none(), Role::Gateway);
        assert!(gateway(&["--id", "9", "--bootstrap", "9"]).is_err());
        assert!(gateway(&["--id", "9"]).err().unwrap().contains("--join"));
        assert!(
            gateway(&["--id", "9", "--join", "127.0.0.1:7400", "--data-dir", "d"])
                .err()
                .unwrap()
                .contains("no data")
        );
        let settings = gateway(&["--id", "9", "--join", "127.0.0.1:7400"]).unwrap();
        assert!(!settings.hosts_ranges);
        assert_eq!(settings.data_dir, PathBuf::new());
    }
}

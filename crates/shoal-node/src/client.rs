//! The command-line client: requests to a gateway's HTTP API, over HTTP or HTTPS, with the
//! gateway's bearer token if it needs one.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use shoal_gateway::{encode_bytes, VERSION_HEADER};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How long one CLI request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP answer: status, version header, body.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `X-Shoal-Version` header, if any.
    pub version: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

/// A gateway to send requests to: its base URL (`http://host:port` or `https://...`), the
/// token to present, and for HTTPS the certificate authorities to trust.
#[derive(Clone)]
pub struct Gateway {
    base: String,
    host: String,
    port: u16,
    token: Option<String>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Gateway {
    /// A gateway at `url`. HTTPS needs `ca_cert`, a PEM file of the certificates to trust
    /// (a dev cluster's `tls/cert.pem`, or the CA that signed the gateway's certificate).
    pub fn new(url: &str, token: Option<String>, ca_cert: Option<&Path>) -> Result<Self, String> {
        let base = url.trim_end_matches('/').to_string();
        let (https, rest) = match (base.strip_prefix("https://"), base.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => {
                return Err(format!(
                    "{url}: the URL must start with http:// or https://"
                ))
            }
        };
        if rest.contains('/') {
            return Err(format!("{url}: give the gateway's address only, no path"));
        }
        let default_port = if https { 443 } else { 80 };
        let bad_port = |port: &str| format!("{url}: bad port {port:?}");
        let (host, port) = match rest.strip_prefix('[') {
            // An IPv6 literal: `[addr]` or `[addr]:port`.
            Some(v6) => {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("{url}: unclosed ["))?;
                let port = match after.strip_prefix(':') {
                    Some(port) => port.parse().map_err(|_| bad_port(port))?,
                    None if after.is_empty() => default_port,
                    None => return Err(bad_port(after)),
                };
                (addr.to_string(), port)
            }
            None => match rest.split_once(':') {
                Some((host, port)) => (host.to_string(), port.parse().map_err(|_| bad_port(port))?),
                None => (rest.to_string(), default_port),
            },
        };
        let tls = if https {
            let path = ca_cert.ok_or_else(|| {
                format!("{url}: HTTPS needs --ca-cert (the PEM certificate to trust)")
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Self {
            base,
            host,
            port,
            token,
            tls,
        })
    }

    /// `host:port` as the Host header gives it (IPv6 literals in brackets).
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Sends one request for `path` (with its query), with `headers` and `body`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        self.send(method, path, headers, body, TIMEOUT)
            .await
            .map_err(|e| format!("{}{path}: {e}", self.base))
    }

    /// Sends one request, waiting at most `timeout`, and says whether a failure happened
    /// before the request could have left ([`SendError::NotSent`]: no connection) or after
    /// ([`SendError::Lost`]: it may have been received and acted on).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, SendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let host = self.host.as_str();
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect((host, self.port)))
            .await
            .map_err(|_| SendError::NotSent("connecting timed out".into()))?
            .map_err(|e| SendError::NotSent(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.authority());
        if let Some(token) = &self.token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::NotSent(format!("bad request: {e}")))?;
        let exchange = async {
            match &self.tls {
                None => send(tcp, request).await,
                Some(connector) => {
                    let name = ServerName::try_from(host.to_string())
                        .map_err(|e| SendError::NotSent(format!("{host}: {e}")))?;
                    // The request goes out only after the handshake: a failed one is not sent.
                    let tls = connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| SendError::NotSent(format!("TLS: {e}")))?;
                    send(tls, request).await
                }
            }
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| SendError::Lost(format!("no answer within {timeout:?}")))?
    }

    /// The status of a GET of `path`.
    pub async fn status_of(&self, path: &str) -> Result<u16, String> {
        Ok(self
            .request(Method::GET, path, &[], Vec::new())
            .await?
            .status)
    }
}

/// Why [`Gateway::send`] got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The request never left: no connection could be made.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The request may have left and been acted on, but no answer came.
    #[error("no answer: {0}")]
    Lost(String),
}

/// One HTTP/1.1 exchange over `io`.
async fn send<T>(io: T, request: Request<Full<Bytes>>) -> Result<Answer, SendError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendError::NotSent(e.to_string()))?;
    let driving = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| SendError::Lost(e.to_string()));
    let answer = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let version = response
                .headers()
                .get(VERSION_HEADER)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| SendError::Lost(format!("reading the answer: {e}")))?
                .to_bytes()
                .to_vec();
            Ok(Answer {
                status,
                version,
                body,
            })
        }
        Err(e) => Err(e),
    };
    driving.abort();
    answer
}

/// The path of `key` in the key-value API.
pub fn key_path(key: &str) -> String {
    format!("/v1/kv/{}", encode_bytes(key.as_bytes()))
}

//! One gateway: its address, its TLS settings, a small pool of idle HTTP/1.1 connections,
//! and one exchange at a time over them that says whether a failure happened before the
//! request could have left or after.

use crate::bodies::ErrorBody;
use crate::error::Error;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The most idle connections kept per gateway.
const MAX_IDLE: usize = 64;

/// The largest answer read (a scan page is at most about 4 MiB of keys and values,
/// percent-encoded: up to three bytes each).
pub(crate) const MAX_ANSWER_BYTES: usize = 16 << 20;

/// An HTTP answer: status, the key's version header, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `X-Shoal-Version` header, if any.
    pub version: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Protocol {
            message: format!("an answer that is not the JSON expected: {e}"),
        })
    }

    /// The gateway's error body, if this answer carries one.
    pub fn error_body(&self) -> Option<ErrorBody> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why an exchange got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The request never left: no connection (or TLS session) could be made.
    NotSent(String),
    /// The request may have left and been acted on, but no answer came.
    Lost(String),
    /// The request cannot be sent at all (a path or header that is not valid HTTP): a
    /// caller's mistake, the same on every gateway.
    Invalid(String),
}

/// A gateway's address and TLS settings.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The URL as given, without a trailing slash.
    pub(crate) url: String,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    idle: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
}

impl Endpoint {
    /// A gateway at `url` (`http://host:port` or `https://host:port`, no path). HTTPS needs
    /// `tls`, the client's TLS settings.
    pub(crate) fn parse(
        url: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Endpoint, Error> {
        let config = |message: String| Error::Config { message };
        let base = url.trim_end_matches('/').to_string();
        let (https, rest) = match (base.strip_prefix("https://"), base.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => {
                return Err(config(format!(
                    "{url}: the URL must start with http:// or https://"
                )))
            }
        };
        if rest.contains('/') {
            return Err(config(format!(
                "{url}: give the gateway's address only, no path"
            )));
        }
        let default_port = if https { 443 } else { 80 };
        let bad_port = |port: &str| config(format!("{url}: bad port {port:?}"));
        let (host, port) = match rest.strip_prefix('[') {
            // An IPv6 literal: `[addr]` or `[addr]:port`.
            Some(v6) => {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or_else(|| config(format!("{url}: unclosed [")))?;
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
        if host.is_empty() {
            return Err(config(format!("{url}: no host")));
        }
        let tls = if https {
            let tls = tls.ok_or_else(|| {
                config(format!(
                    "{url}: HTTPS needs the certificate authorities to trust (ClientConfig::ca_cert_pem)"
                ))
            })?;
            Some(tokio_rustls::TlsConnector::from(tls.clone()))
        } else {
            None
        };
        Ok(Endpoint {
            url: base,
            host,
            port,
            tls,
            idle: Arc::new(Mutex::new(Vec::new())),
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

    /// Sends one request by `deadline`, on an idle connection if one is ready, else on a new
    /// one made within `connect_timeout`.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        connect_timeout: Duration,
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.authority());
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Invalid(format!("not a valid HTTP request: {e}")))?;
        let deadline = tokio::time::Instant::from_std(deadline);
        let mut sender = match self.take_idle() {
            Some(sender) => sender,
            None => {
                let connect_by = deadline.min(tokio::time::Instant::now() + connect_timeout);
                tokio::time::timeout_at(connect_by, self.connect())
                    .await
                    .map_err(|_| Failure::NotSent("connecting timed out".into()))??
            }
        };
        let exchange = async {
            let response = sender.send_request(request).await.map_err(|e| {
                // Canceled: the connection closed before the request was written (an idle
                // connection the gateway had just closed); anything else may have left.
                if e.is_canceled() {
                    Failure::NotSent(e.to_string())
                } else {
                    Failure::Lost(e.to_string())
                }
            })?;
            let status = response.status().as_u16();
            let version = response
                .headers()
                .get(crate::VERSION_HEADER)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| Failure::Lost(format!("reading the answer: {e}")))?
                .to_bytes()
                .to_vec();
            Ok(Answer {
                status,
                version,
                body,
            })
        };
        let answer = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| Failure::Lost("no answer in time".into()))?;
        if answer.is_ok() {
            self.put_idle(sender);
        }
        answer
    }

    /// An idle connection that is still open.
    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// A new connection (TLS first, when the URL is HTTPS): nothing is sent on it yet, so a
    /// failure here is a request not sent.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| Failure::NotSent(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| Failure::NotSent(format!("{}: {e}", self.host)))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Failure::NotSent(format!("TLS: {e}")))?;
                handshake(tls).await
            }
        }
    }
}

/// Starts HTTP/1.1 over `io`; the connection runs in its own task until either side closes.
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::NotSent(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn urls_are_read_or_refused_with_reasons() {
        let e = Endpoint::parse("http://127.0.0.1:8400/", None).unwrap();
        assert_eq!(
            (e.url.as_str(), e.authority()),
            ("http://127.0.0.1:8400", "127.0.0.1:8400".into())
        );
        let e = Endpoint::parse("http://[::1]:9000", None).unwrap();
        assert_eq!(e.authority(), "[::1]:9000");
        assert_eq!(Endpoint::parse("http://shoal", None).unwrap().port, 80);
        for (bad, why) in [
            ("127.0.0.1:8400", "http://"),
            ("http://host:8400/v1", "no path"),
            ("http://host:port", "bad port"),
            ("http://[::1", "unclosed"),
            ("http://:80", "no host"),
            ("https://host", "certificate"),
        ] {
            let refused = Endpoint::parse(bad, None).err().map(|e| e.to_string());
            assert!(
                refused.as_deref().is_some_and(|e| e.contains(why)),
                "{bad}: {refused:?}"
            );
        }
    }
}

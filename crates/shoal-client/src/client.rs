//! [`Client`]: typed key-value operations over one or more gateways, with failover for what
//! is safe to retry.

use crate::bodies::{CasExpect, ScanPage, Written};
use crate::endpoint::{Answer, Endpoint, Failure};
use crate::error::Error;
use crate::health::Health;
use crate::keys::{decode_key, encode_bytes};
use hyper::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a [`Client`] reaches the cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The gateways' URLs (`http://host:port` or `https://host:port`); any of them serves
    /// any request. At least one.
    pub endpoints: Vec<String>,
    /// The bearer token the gateways want, if any.
    pub token: Option<String>,
    /// For HTTPS: the PEM certificates to trust (a dev cluster's `tls/cert.pem`, or the CA
    /// that signed the gateways' certificates).
    pub ca_cert_pem: Option<Vec<u8>>,
    /// The longest one attempt waits for its gateway's answer. A gateway that does not
    /// answer in time (stopped, cut off) is avoided for [`ClientConfig::avoid_for`]; a read
    /// goes on to another, a write whose request left is an unknown outcome. Default 5 s
    /// (the gateways' own deadline is 10 s).
    pub attempt_timeout: Duration,
    /// The longest an operation takes, every attempt included. Default 15 s.
    pub request_timeout: Duration,
    /// The longest a connection takes to open. Default 1 s.
    pub connect_timeout: Duration,
    /// How long a gateway that could not be reached, or did not answer, is passed over
    /// while others are available. Default 5 s.
    pub avoid_for: Duration,
    /// How long a request may wait for its gateway before new requests go to the others
    /// (while any other is not in doubt itself), and a read is sent to another gateway too
    /// (the first answer wins): a paused process still accepts connections, so a request
    /// left waiting is the first sign. Answers take milliseconds; an election, which every
    /// gateway waits out alike, takes about a second. Default 200 ms.
    pub stalled_after: Duration,
}

impl ClientConfig {
    /// Defaults for these gateways.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            token: None,
            ca_cert_pem: None,
            attempt_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(1),
            avoid_for: Duration::from_secs(5),
            stalled_after: Duration::from_millis(200),
        }
    }

    /// Refuses settings that cannot work: no endpoint, a zero timeout.
    pub fn validate(&self) -> Result<(), Error> {
        let refuse = |message: &str| {
            Err(Error::Config {
                message: message.into(),
            })
        };
        if self.endpoints.is_empty() {
            return refuse("no gateway to send requests to");
        }
        if self.attempt_timeout.is_zero()
            || self.request_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.stalled_after.is_zero()
        {
            return refuse("timeouts must be above zero");
        }
        if let Some(token) = &self.token {
            if token.is_empty() {
                return refuse("the token is empty");
            }
            if hyper::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                return refuse("the token cannot be sent in an HTTP header");
            }
        }
        Ok(())
    }
}

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (the default).
    #[default]
    Linearizable,
    /// Any replica's state: possibly behind, never a value that was not written.
    Stale,
}

impl Consistency {
    fn query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
        }
    }
}

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Acks {
    /// Once a majority of replicas hold it durably and it is applied (the default; the
    /// only mode whose answer says whether a condition held).
    #[default]
    Majority,
    /// Once the range's leader accepted it: not known to be committed.
    Leader,
    /// At once: not known to be accepted.
    None,
}

impl Acks {
    fn query(self) -> &'static str {
        match self {
            Acks::Majority => "majority",
            Acks::Leader => "leader",
            Acks::None => "none",
        }
    }
}

/// A condition on a write's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Only over this version (`If-Match`).
    Version(u64),
    /// Only if the key holds no value (`If-None-Match: *`).
    Absent,
}

/// How a write is made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// When it is acknowledged.
    pub acks: Acks,
    /// A condition it needs (with [`Acks::Majority`] only).
    pub condition: Option<Condition>,
}

/// A value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// Its version (rises with every write of the key).
    pub version: u64,
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written, at this version ([`Acks::Majority`]).
    Written {
        /// The key's new version.
        version: u64,
    },
    /// Accepted, not known to be committed ([`Acks::Leader`] or [`Acks::None`]).
    Accepted,
}

/// What a compare-and-set expects the key to hold now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// This version.
    Version(u64),
    /// This value.
    Value(Vec<u8>),
    /// No value.
    Absent,
}

/// What a compare-and-set did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swap {
    /// The expectation held and the new value was written, at this version.
    Set {
        /// The key's new version.
        version: u64,
    },
    /// The expectation held and the key was deleted (`existed`: it had a value).
    Deleted {
        /// Whether the key had a value.
        existed: bool,
    },
    /// The expectation did not hold: nothing changed.
    Mismatch,
}

/// One key of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// Its version.
    pub version: u64,
}

/// Which keys a scan lists, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanRequest {
    /// Keys starting with this (not with `start` or `end`).
    pub prefix: Option<Vec<u8>>,
    /// The first key (default the first).
    pub start: Option<Vec<u8>>,
    /// The first key after the scan (default the last).
    pub end: Option<Vec<u8>>,
    /// Entries per page, 1 to 10,000 (default 100 when `None`).
    pub page_size: Option<u32>,
    /// How the pages are read.
    pub consistency: Consistency,
}

impl ScanRequest {
    /// The keys starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        ScanRequest {
            prefix: Some(prefix.into()),
            ..ScanRequest::default()
        }
    }

    /// The keys from `start` (inclusive) to `end` (exclusive; `None`: to the last).
    pub fn range(start: impl Into<Vec<u8>>, end: Option<Vec<u8>>) -> Self {
        ScanRequest {
            start: Some(start.into()),
            end,
            ..ScanRequest::default()
        }
    }
}

/// A scan in progress: one page per [`Scan::next_page`], each a request of its own (pages
/// are each consistent; the scan as a whole is not one snapshot).
pub struct Scan {
    client: Client,
    request: ScanRequest,
    /// Where the next page starts; `None` once the last page was read.
    continuation: Option<String>,
    started: bool,
}

impl Scan {
    /// The next page, or `None` when the scan is done.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Entry>>, Error> {
        if self.started && self.continuation.is_none() {
            return Ok(None);
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        let r = &self.request;
        if let Some(prefix) = &r.prefix {
            query.push(("prefix", encode_bytes(prefix)));
        }
        if let Some(start) = &r.start {
            query.push(("start", encode_bytes(start)));
        }
        if let Some(end) = &r.end {
            query.push(("end", encode_bytes(end)));
        }
        if let Some(limit) = r.page_size {
            query.push(("limit", limit.to_string()));
        }
        if r.consistency != Consistency::Linearizable {
            query.push(("consistency", r.consistency.query().into()));
        }
        if let Some(continuation) = &self.continuation {
            query.push(("continuation", continuation.clone()));
        }
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let path = format!("/v1/kv?{}", query.join("&"));
        let answer = self.client.typed_read(&path).await?;
        if answer.status != 200 {
            return Err(error_from(&answer, true));
        }
        let page: ScanPage = answer.json()?;
        self.started = true;
        self.continuation = page.continuation;
        let decode = |text: &str| {
            decode_key(text).or_else(|e| {
                // An empty value is a valid value (an empty key is not).
                if text.is_empty() {
                    Ok(Vec::new())
                } else {
                    Err(Error::Protocol {
                        message: format!("a scan entry that does not decode: {e}"),
                    })
                }
            })
        };
        let entries = page
            .entries
            .into_iter()
            .map(|e| {
                Ok(Entry {
                    key: decode(&e.key)?,
                    value: decode(&e.value)?,
                    version: e.version,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Some(entries))
    }

    /// Every remaining entry, page after page (for scans known to be small).
    pub async fn collect(mut self) -> Result<Vec<Entry>, Error> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

/// The least time left for which a write is still sent.
const MIN_WRITE_TIME: Duration = Duration::from_millis(100);

/// Whether a request may be sent again after it may have left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// It changes nothing (a read): any failure may be retried on another gateway.
    Safe,
    /// It may change something: only a request that certainly was not carried out (not
    /// sent, or refused as unavailable) is sent again.
    IfNotDone,
}

/// What to do with a gateway's 503 (refused, not carried out, may pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unavailable {
    /// Try again (another gateway, or the same a moment later) until the request's time
    /// is up: typed operations.
    Retry,
    /// Hand it back as answered: raw requests, whose callers read statuses themselves.
    Answer,
}

/// A client of Shoal's HTTP API. Cheap to clone (clones share connections and what they
/// learned about the gateways).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    endpoints: Vec<Endpoint>,
    /// What this client knows of each gateway's health.
    health: Vec<Health>,
    /// Where the next request starts looking, so load spreads over the gateways.
    next: AtomicUsize,
}

impl Client {
    /// A client of the gateways in `config`.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        config.validate()?;
        let tls = match &config.ca_cert_pem {
            Some(pem) => Some(tls_config(pem)?),
            None => None,
        };
        let endpoints = config
            .endpoints
            .iter()
            .map(|url| Endpoint::parse(url, tls.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Client {
            inner: Arc::new(Inner {
                health: endpoints.iter().map(|_| Health::default()).collect(),
                next: AtomicUsize::new(0),
                endpoints,
                config,
            }),
        })
    }

    /// A client of one gateway, with the default settings.
    pub fn connect(url: &str) -> Result<Client, Error> {
        Client::new(ClientConfig::new([url]))
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// `key`'s value and version (a linearizable read), or `None` if it has none.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, Error> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// `key`'s value and version, read as `consistency` says.
    pub async fn get_with(
        &self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<Option<Versioned>, Error> {
        let mut path = checked_key_path(key)?;
        if consistency != Consistency::Linearizable {
            path.push_str("?consistency=");
            path.push_str(consistency.query());
        }
        let answer = self.typed_read(&path).await?;
        match answer.status {
            200 => {
                let version = answer.version.ok_or_else(|| Error::Protocol {
                    message: "a value without its version".into(),
                })?;
                Ok(Some(Versioned {
                    value: answer.body,
                    version,
                }))
            }
            404 => Ok(None),
            _ => Err(error_from(&answer, true)),
        }
    }

    /// Writes `value` to `key` (acknowledged by a majority); its new version.
    pub async fn put(&self, key: &[u8], value: impl Into<Vec<u8>>) -> Result<u64, Error> {
        match self.put_with(key, value, WriteOptions::default()).await? {
            PutOutcome::Written { version } => Ok(version),
            PutOutcome::Accepted => Err(Error::Protocol {
                message: "a majority write answered as merely accepted".into(),
            }),
        }
    }

    /// Writes `value` to `key` as `options` say. A condition that does not hold is
    /// [`Error::ConditionFailed`].
    pub async fn put_with(
        &self,
        key: &[u8],
        value: impl Into<Vec<u8>>,
        options: WriteOptions,
    ) -> Result<PutOutcome, Error> {
        let path = write_path(key, options.acks)?;
        let answer = self
            .typed_write(
                Method::PUT,
                &path,
                &condition_headers(options.condition),
                value.into(),
            )
            .await?;
        match answer.status {
            200 => Ok(PutOutcome::Written {
                version: answer.json::<Written>()?.version,
            }),
            202 => Ok(PutOutcome::Accepted),
            _ => Err(error_from(&answer, false)),
        }
    }

    /// Deletes `key`; whether it had a value.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, Error> {
        self.delete_with(key, WriteOptions::default()).await
    }

    /// Deletes `key` as `options` say; whether it had a value (always `true` unless acked by
    /// a majority, which alone knows).
    pub async fn delete_with(&self, key: &[u8], options: WriteOptions) -> Result<bool, Error> {
        let path = write_path(key, options.acks)?;
        let answer = self
            .typed_write(
                Method::DELETE,
                &path,
                &condition_headers(options.condition),
                Vec::new(),
            )
            .await?;
        match answer.status {
            204 | 202 => Ok(true),
            404 => Ok(false),
            _ => Err(error_from(&answer, false)),
        }
    }

    /// Sets `key` to `new` (or deletes it, for `None`) if it holds what `expect` says.
    pub async fn compare_and_set(
        &self,
        key: &[u8],
        expect: Expect,
        new: Option<Vec<u8>>,
    ) -> Result<Swap, Error> {
        let path = format!("{}/cas", checked_key_path(key)?);
        let expect = match expect {
            Expect::Version(v) => CasExpect::Version(v),
            Expect::Value(v) => CasExpect::Value(encode_bytes(&v)),
            Expect::Absent => CasExpect::Absent,
        };
        let deletes = new.is_none();
        let body = crate::bodies::CasRequest {
            expect,
            value: match &new {
                Some(v) => serde_json::Value::String(encode_bytes(v)),
                None => serde_json::Value::Null,
            },
        };
        let body = serde_json::to_vec(&body).map_err(|e| Error::Config {
            message: e.to_string(),
        })?;
        let answer = self.typed_write(Method::POST, &path, &[], body).await?;
        match answer.status {
            200 if deletes => Ok(Swap::Deleted {
                existed: answer.json::<crate::bodies::Deleted>()?.deleted,
            }),
            200 => Ok(Swap::Set {
                version: answer.json::<Written>()?.version,
            }),
            409 => Ok(Swap::Mismatch),
            _ => Err(error_from(&answer, false)),
        }
    }

    /// A scan of the keys `request` names, page by page.
    pub fn scan(&self, request: ScanRequest) -> Scan {
        Scan {
            client: self.clone(),
            request,
            continuation: None,
            started: false,
        }
    }

    /// A typed operation's read: failed over and hedged as reads are, a 503 tried again.
    async fn typed_read(&self, path: &str) -> Result<Answer, Error> {
        let timeout = self.inner.config.request_timeout;
        self.execute(
            Method::GET,
            path,
            &[],
            Vec::new(),
            Retry::Safe,
            Unavailable::Retry,
            timeout,
        )
        .await
    }

    /// A typed operation's write: sent again only when certainly not done (not sent, or a
    /// 503).
    async fn typed_write(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Answer, Error> {
        let timeout = self.inner.config.request_timeout;
        self.execute(
            method,
            path,
            headers,
            body,
            Retry::IfNotDone,
            Unavailable::Retry,
            timeout,
        )
        .await
    }

    /// A GET of any route of the API (`/v1/ranges`, `/metrics`, ...): the answer as it
    /// came, whatever its status, after failing over as a read may.
    pub async fn get_raw(&self, path: &str) -> Result<Answer, Error> {
        self.request(Method::GET, path, &[], Vec::new()).await
    }

    /// A GET of a JSON route, decoded; an error status is an error.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let answer = self.get_raw(path).await?;
        if answer.status != 200 {
            return Err(error_from(&answer, true));
        }
        answer.json()
    }

    /// Any request to the API (admin routes, say): the answer as it came, whatever its
    /// status. A safe method (GET, HEAD, OPTIONS) fails over to another gateway on any
    /// failure; any other only when it certainly was not sent.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Answer, Error> {
        let timeout = self.inner.config.request_timeout;
        self.request_within(method, path, headers, body, timeout)
            .await
    }

    /// [`Client::request`], all of it (every attempt) within `timeout`.
    pub async fn request_within(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, Error> {
        let retry = if method.is_safe() {
            Retry::Safe
        } else {
            Retry::IfNotDone
        };
        self.execute(
            method,
            path,
            headers,
            body,
            retry,
            Unavailable::Answer,
            timeout,
        )
        .await
    }

    /// Sends a request to the gateways in turn, starting from the next in rotation and
    /// passing over those recently failed, until one answers (a 503 counts only with
    /// [`Unavailable::Answer`]), a failure may not be retried (`retry`), or `timeout` is up.
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        retry: Retry,
        unavailable: Unavailable,
        timeout: Duration,
    ) -> Result<Answer, Error> {
        let inner = &self.inner;
        let config = &inner.config;
        let deadline = Instant::now() + timeout;
        let mut headers = headers.to_vec();
        if let Some(token) = &config.token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        let mut last: Option<Error> = None;
        let mut attempt: u32 = 0;
        loop {
            let now = Instant::now();
            // A write is not sent with too little time left for an answer: running out of
            // time before it left stays a certain failure (the gateway does the same).
            let floor = match retry {
                Retry::Safe => Duration::ZERO,
                Retry::IfNotDone => MIN_WRITE_TIME,
            };
            if now + floor >= deadline {
                return Err(last.unwrap_or_else(|| Error::not_sent("no time left to send it")));
            }
            let request = Request {
                method: &method,
                path,
                headers: &headers,
                body: &body,
                deadline: deadline.min(now + config.attempt_timeout),
            };
            let i = self.pick(now);
            let (i, sent) = if retry == Retry::Safe && inner.endpoints.len() > 1 {
                self.attempt_hedged(i, &request).await
            } else {
                (i, self.attempt(i, &request).await)
            };
            let endpoint = &inner.endpoints[i];
            attempt += 1;
            match sent {
                // Refused before anything happened (no leader yet, overloaded): another
                // gateway, or this one a moment later, may do it.
                Ok(answer) if answer.status == 503 && unavailable == Unavailable::Retry => {
                    last = Some(error_from(&answer, false))
                }
                Ok(answer) => return Ok(answer),
                Err(Failure::NotSent(message)) => {
                    last = Some(Error::not_sent(format!("{}: {message}", endpoint.url)));
                }
                Err(Failure::Invalid(message)) => {
                    return Err(Error::Refused {
                        status: None,
                        code: "bad_request".into(),
                        message,
                        retriable: false,
                    })
                }
                Err(Failure::Lost(message)) => {
                    let message = format!("{}: {message}", endpoint.url);
                    if retry == Retry::IfNotDone {
                        return Err(Error::OutcomeUnknown { message });
                    }
                    last = Some(Error::Refused {
                        status: None,
                        code: "no_answer".into(),
                        message,
                        retriable: true,
                    });
                }
            }
            // Every gateway tried once at once; then back off a little between rounds.
            if attempt as usize >= inner.endpoints.len() {
                let wait =
                    Duration::from_millis(20 << attempt.min(5)).min(Duration::from_millis(500));
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(wait.min(left)).await;
            }
        }
    }

    /// One attempt of `request` on gateway `i`, keeping its health: the request is in
    /// flight until it ends, and a failure to connect or to answer passes the gateway over
    /// for [`ClientConfig::avoid_for`].
    async fn attempt(&self, i: usize, request: &Request<'_>) -> Result<Answer, Failure> {
        let inner = &self.inner;
        let in_flight = inner.health[i].sending(Instant::now());
        let sent = inner.endpoints[i]
            .send(
                request.method.clone(),
                request.path,
                request.headers,
                request.body.to_vec(),
                inner.config.connect_timeout,
                request.deadline,
            )
            .await;
        drop(in_flight);
        if matches!(sent, Err(Failure::NotSent(_) | Failure::Lost(_))) {
            inner.health[i].avoid(Instant::now() + inner.config.avoid_for);
        }
        sent
    }

    /// One attempt of a request that changes nothing, on gateway `i`; once it has waited
    /// [`ClientConfig::stalled_after`], the same request goes to another gateway not in
    /// doubt too, and the first answer wins (a hedged request: a read held up by a paused
    /// gateway does not wait for it).
    async fn attempt_hedged(
        &self,
        i: usize,
        request: &Request<'_>,
    ) -> (usize, Result<Answer, Failure>) {
        let first = self.attempt(i, request);
        tokio::pin!(first);
        let j = loop {
            tokio::select! {
                answer = &mut first => return (i, answer),
                _ = tokio::time::sleep(self.inner.config.stalled_after) => {
                    if let Some(j) = self.other_than(i, Instant::now()) {
                        break j;
                    }
                }
            }
        };
        let second = self.attempt(j, request);
        tokio::pin!(second);
        tokio::select! {
            answer = &mut first => match answer {
                Ok(answer) => (i, Ok(answer)),
                Err(_) => (j, second.await),
            },
            answer = &mut second => match answer {
                Ok(answer) => {
                    // The other gateway answered while this one still waits: pass it over
                    // for a while (dropping its attempt forgets the request in flight, which
                    // alone would make it look healthy again).
                    self.inner.health[i].avoid(Instant::now() + self.inner.config.avoid_for);
                    (j, Ok(answer))
                }
                Err(_) => (i, first.await),
            },
        }
    }

    /// The gateway for the next attempt: the next in rotation not in doubt (see
    /// [`Health::doubtful`]), else the next in rotation.
    fn pick(&self, now: Instant) -> usize {
        let n = self.inner.endpoints.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| !self.doubtful(i, now))
            .unwrap_or(start % n)
    }

    /// A gateway other than `i` not in doubt, if there is one.
    fn other_than(&self, i: usize, now: Instant) -> Option<usize> {
        let n = self.inner.endpoints.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&j| j != i && !self.doubtful(j, now))
    }

    fn doubtful(&self, i: usize, now: Instant) -> bool {
        self.inner.health[i].doubtful(now, self.inner.config.stalled_after)
    }
}

/// One request as every attempt sends it.
struct Request<'a> {
    method: &'a Method,
    path: &'a str,
    headers: &'a [(&'a str, String)],
    body: &'a [u8],
    /// When the attempt gives up.
    deadline: Instant,
}

/// The path of `key` in the key-value API, percent-encoded.
pub fn key_path(key: impl AsRef<[u8]>) -> String {
    format!("/v1/kv/{}", encode_bytes(key.as_ref()))
}

/// The path of `key`, refused before sending if it is empty (no key is).
fn checked_key_path(key: &[u8]) -> Result<String, Error> {
    if key.is_empty() {
        return Err(Error::Refused {
            status: None,
            code: "bad_request".into(),
            message: "the key is empty".into(),
            retriable: false,
        });
    }
    Ok(key_path(key))
}

fn write_path(key: &[u8], acks: Acks) -> Result<String, Error> {
    let mut path = checked_key_path(key)?;
    if acks != Acks::Majority {
        path.push_str("?acks=");
        path.push_str(acks.query());
    }
    Ok(path)
}

fn condition_headers(condition: Option<Condition>) -> Vec<(&'static str, String)> {
    match condition {
        None => Vec::new(),
        Some(Condition::Version(v)) => vec![("if-match", v.to_string())],
        Some(Condition::Absent) => vec![("if-none-match", "*".into())],
    }
}

/// A gateway's error answer as an error; `read`: the request changed nothing, whatever
/// happened.
pub fn error_from(answer: &Answer, read: bool) -> Error {
    let body = answer.error_body();
    let code = body.as_ref().map_or("", |b| b.error.as_str()).to_string();
    let message = body.map_or_else(
        || String::from_utf8_lossy(&answer.body).into_owned(),
        |b| b.message,
    );
    match answer.status {
        409 => Error::ConditionFailed { message },
        504 if !read => Error::OutcomeUnknown { message },
        503 => Error::Refused {
            status: Some(503),
            code,
            message,
            retriable: true,
        },
        400..=499 => Error::Refused {
            status: Some(answer.status),
            code,
            message,
            retriable: false,
        },
        status if read => Error::Refused {
            status: Some(status),
            code,
            message,
            retriable: true,
        },
        // A write that met anything else may have happened: when in doubt, unknown.
        status => Error::OutcomeUnknown {
            message: format!("status {status}: {message}"),
        },
    }
}

/// TLS settings trusting the certificates in `pem`.
fn tls_config(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, Error> {
    let config = |message: String| Error::Config { message };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| config(format!("a certificate to trust: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| config(format!("a certificate to trust: {e}")))?;
    }
    if roots.is_empty() {
        return Err(config("no certificate to trust in the PEM given".into()));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| config(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            version: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn answers_become_errors_that_say_whether_it_happened() {
        let unavailable = answer(503, r#"{"error":"unavailable","message":"no leader"}"#);
        let refused = error_from(&unavailable, false);
        assert!(refused.is_definite() && refused.is_retriable(), "{refused}");
        assert_eq!(refused.status(), Some(503));
        let bad = error_from(
            &answer(400, r#"{"error":"bad_request","message":"x"}"#),
            false,
        );
        assert!(bad.is_definite() && !bad.is_retriable(), "{bad}");
        let conflict = error_from(&answer(409, "{}"), false);
        assert!(matches!(conflict, Error::ConditionFailed { .. }) && conflict.is_definite());
        // A write that met a 504 or anything unexpected may have happened.
        for status in [504, 500, 502] {
            let e = error_from(&answer(status, "oops"), false);
            assert!(matches!(e, Error::OutcomeUnknown { .. }), "{status}: {e}");
            assert!(!e.is_definite());
        }
        // A read changes nothing, whatever it met.
        for status in [504, 500] {
            assert!(
                error_from(&answer(status, ""), true).is_definite(),
                "{status}"
            );
        }
    }

    #[test]
    fn keys_are_encoded_and_empty_ones_refused_before_sending() {
        assert_eq!(key_path(b"a/b c"), "/v1/kv/a%2Fb%20c");
        assert_eq!(key_path([0xffu8, 0]), "/v1/kv/%FF%00");
        assert!(checked_key_path(b"").unwrap_err().is_definite());
        assert_eq!(
            write_path(b"k", Acks::Leader).unwrap(),
            "/v1/kv/k?acks=leader"
        );
        assert_eq!(write_path(b"k", Acks::Majority).unwrap(), "/v1/kv/k");
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(Client::new(ClientConfig::new(Vec::<String>::new())).is_err());
        let mut zero = ClientConfig::new(["http://127.0.0.1:1"]);
        zero.attempt_timeout = Duration::ZERO;
        assert!(Client::new(zero).is_err());
        let mut pem = ClientConfig::new(["https://127.0.0.1:1"]);
        pem.ca_cert_pem = Some(b"not a certificate".to_vec());
        assert!(Client::new(pem).is_err());
        assert!(
            Client::connect("https://127.0.0.1:1").is_err(),
            "HTTPS needs roots"
        );
        let mut token = ClientConfig::new(["http://127.0.0.1:1"]);
        token.token = Some("line\nbreak".into());
        assert!(
            Client::new(token).is_err(),
            "a token that is no header value"
        );
    }

    /// A request that is not valid HTTP is the caller's mistake: refused at once, not
    /// retried, and no gateway is passed over for it.
    #[tokio::test]
    async fn a_request_that_is_not_valid_http_is_refused_at_once() {
        let client = Client::connect("http://127.0.0.1:1").unwrap();
        let e = client.get_raw("/v1/kv/a b").await.unwrap_err();
        assert!(e.is_definite() && !e.is_retriable(), "{e}");
        assert!(!client.inner.health[0].avoided(Instant::now()));
    }

    /// A gateway that cannot be reached is passed over, and the next one takes the request.
    #[tokio::test]
    async fn a_gateway_that_refuses_connections_is_passed_over() {
        // A port nothing listens on: connecting is refused, the request was never sent.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let mut config = ClientConfig::new([url.clone(), url]);
        config.request_timeout = Duration::from_millis(300);
        let client = Client::new(config).unwrap();
        let e = client.put(b"k", "v").await.unwrap_err();
        assert!(e.is_definite() && e.is_retriable(), "{e}");
        let now = Instant::now();
        assert!(client.inner.health.iter().all(|h| h.avoided(now)));
    }
}

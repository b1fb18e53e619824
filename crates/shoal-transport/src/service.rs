//! Typed RPC services: declare a method once with [`Rpc`], register a handler on a [`Router`],
//! and every transport (TCP, in-memory) serves it the same way.

use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_core::{codec, Error, ErrorCode, MethodId, NodeId};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One RPC method: its name and its request and response types.
///
/// ```
/// use shoal_transport::Rpc;
///
/// /// Echo a payload back.
/// struct Echo;
/// impl Rpc for Echo {
///     const NAME: &'static str = "example.echo";
///     type Request = Vec<u8>;
///     type Response = Vec<u8>;
/// }
/// ```
pub trait Rpc: Send + Sync + 'static {
    /// The method's name, unique within a process; its hash is the wire id.
    const NAME: &'static str;
    /// The wire id of the method.
    const METHOD: MethodId = MethodId::of(Self::NAME);
    /// What callers send.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// What handlers return.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// What a handler knows about the request besides its body.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The node that sent it: the id its connection's handshake announced (a request whose
    /// header names another node is refused before it gets here). The handshake itself is not
    /// authenticated: without mutual TLS, which is later work, a peer that can connect can
    /// announce any id, so this says which node a connection claims to be, consistently for
    /// every request on it, not who it provably is.
    pub source: NodeId,
    /// The address the request came from (the sender's advertised address when it has one).
    pub peer: SocketAddr,
    /// How long the caller is willing to wait, as it said when sending.
    pub timeout: Duration,
}

type ErasedHandler =
    Arc<dyn Fn(RequestContext, &[u8], Vec<u8>) -> BoxFuture<Result<Vec<u8>, Error>> + Send + Sync>;

struct Registered {
    name: &'static str,
    handler: ErasedHandler,
}

/// Why a handler could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another method already uses this name, or a name with the same hash.
    #[error("method {name:?} clashes with already registered {existing:?} (same id {id:?})")]
    Clash {
        /// The method being registered.
        name: &'static str,
        /// The method already holding the id.
        existing: &'static str,
        /// The shared id.
        id: MethodId,
    },
}

/// Maps method ids to handlers. Build it before serving; it is immutable afterwards.
#[derive(Default, Clone)]
pub struct Router {
    handlers: HashMap<MethodId, Arc<Registered>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.handlers.values().map(|r| r.name).collect();
        names.sort_unstable();
        f.debug_struct("Router").field("methods", &names).finish()
    }
}

impl Router {
    /// A router with no methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `R`. Refuses a second method with the same id.
    pub fn register<R, F, Fut>(&mut self, handler: F) -> Result<&mut Self, RegisterError>
    where
        R: Rpc,
        F: Fn(RequestContext, R::Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Response, Error>> + Send + 'static,
    {
        if let Some(existing) = self.handlers.get(&R::METHOD) {
            return Err(RegisterError::Clash {
                name: R::NAME,
                existing: existing.name,
                id: R::METHOD,
            });
        }
        let handler = Arc::new(handler);
        let erased: ErasedHandler = Arc::new(move |ctx, body: &[u8], mut out: Vec<u8>| {
            let request = match codec::decode::<R::Request>(body, body.len()) {
                Ok(request) => request,
                Err(e) => {
                    let error = Error::new(
                        ErrorCode::CorruptMessage,
                        format!("{}: bad request body: {e}", R::NAME),
                    );
                    return Box::pin(std::future::ready(Err(error))) as BoxFuture<_>;
                }
            };
            let response = handler(ctx, request);
            Box::pin(async move {
                let response = response.await?;
                codec::encode_into(&response, &mut out, codec::MAX_MESSAGE_BYTES)?;
                Ok(out)
            })
        });
        self.handlers.insert(
            R::METHOD,
            Arc::new(Registered {
                name: R::NAME,
                handler: erased,
            }),
        );
        Ok(self)
    }

    /// Whether a handler is registered for `method`.
    pub fn contains(&self, method: MethodId) -> bool {
        self.handlers.contains_key(&method)
    }

    /// Decodes `body`, runs the handler, and appends the encoded response to `out`. Errors
    /// (unknown method, undecodable body, the handler's own) come back as `Err`.
    pub fn dispatch(
        &self,
        ctx: RequestContext,
        method: MethodId,
        body: &[u8],
        out: Vec<u8>,
    ) -> BoxFuture<Result<Vec<u8>, Error>> {
        match self.handlers.get(&method) {
            Some(registered) => (registered.handler)(ctx, body, out),
            None => Box::pin(std::future::ready(Err(Error::new(
                ErrorCode::UnknownMethod,
                format!("no handler for method {method:?}"),
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Add;
    impl Rpc for Add {
        const NAME: &'static str = "test.add";
        type Request = (u32, u32);
        type Response = u32;
    }

    struct AddAgain;
    impl Rpc for AddAgain {
        const NAME: &'static str = "test.add";
        type Request = u8;
        type Response = u8;
    }

    fn ctx() -> RequestContext {
        RequestContext {
            source: NodeId::new(1),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn dispatch_decodes_runs_and_encodes() {
        let mut router = Router::new();
        router
            .register::<Add, _, _>(|_, (a, b)| async move { Ok(a + b) })
            .unwrap();
        let body = codec::encode(&(2u32, 3u32)).unwrap();
        let out = router
            .dispatch(ctx(), Add::METHOD, &body, vec![9])
            .await
            .unwrap();
        assert_eq!(out[0], 9, "the prefix is kept");
        assert_eq!(codec::decode::<u32>(&out[1..], 64).unwrap(), 5);
    }

    #[tokio::test]
    async fn bad_bodies_and_unknown_methods_are_errors() {
        let mut router = Router::new();
        router
            .register::<Add, _, _>(|_, (a, b)| async move { Ok(a + b) })
            .unwrap();
        let err = router
            .dispatch(ctx(), Add::METHOD, &[0xff], Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::CorruptMessage);
        let err = router
            .dispatch(ctx(), MethodId::of("nope"), &[], Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownMethod);
    }

    #[test]
    fn clashing_names_are_refused() {
        let mut router = Router::new();
        router
            .register::<Add, _, _>(|_, (a, b)| async move { Ok(a + b) })
            .unwrap();
        let err = router
            .register::<AddAgain, _, _>(|_, x| async move { Ok(x) })
            .unwrap_err();
        assert!(matches!(err, RegisterError::Clash { .. }));
    }
}

//! Who may call the gateway: requests from web pages only from origins listed explicitly
//! (none by default), and an optional bearer token on every route but `/health`.

use crate::errors::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The route that answers without a token: a load balancer's liveness probe.
pub(crate) const OPEN_PATH: &str = "/health";

/// The CORS layer for `origins` (exact `scheme://host[:port]` matches). Credentials are
/// never allowed: the token is sent as a header the page sets, not as a cookie.
pub(crate) fn cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::PUT, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
        ])
        .expose_headers([header::HeaderName::from_static(crate::VERSION_HEADER)])
        .max_age(std::time::Duration::from_secs(600))
}

/// Refuses (403) any request from a web page of an origin not listed (its `Origin` header):
/// a preflight, and also the requests a page may send without one (a form's POST, a
/// `no-cors` fetch), which would otherwise run before the browser hid their answer. Clients
/// that are not browsers send no `Origin` and pass.
pub(crate) async fn refuse_foreign_origins(
    State(origins): State<Arc<[HeaderValue]>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        if !origins.contains(origin) {
            return ApiError {
                status: StatusCode::FORBIDDEN,
                code: "origin_not_allowed",
                message: "requests from this origin are not allowed".into(),
            }
            .into_response();
        }
    }
    next.run(request).await
}

/// Refuses (401) a request without `Authorization: Bearer <token>`, but for `/health` and
/// CORS preflights (a browser sends those without credentials; the CORS layer answers them).
pub(crate) async fn require_token(
    State(token): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let exempt = request.uri().path() == OPEN_PATH || request.method() == Method::OPTIONS;
    // The scheme's name is case-insensitive (RFC 9110 section 11.1).
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
        .map(|v| &v[7..]);
    if exempt || presented.is_some_and(|p| same_secret(p, token.as_bytes())) {
        return next.run(request).await;
    }
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: "this gateway needs Authorization: Bearer <token>".into(),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Whether `a` equals `b`, in time that depends only on their lengths (a token's bytes are
/// not guessed one at a time from response times).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"tokem"));
        assert!(!same_secret(b"token", b"token2"));
        assert!(!same_secret(b"", b"t"));
    }
}

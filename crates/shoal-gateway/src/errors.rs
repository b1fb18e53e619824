//! How failures become HTTP answers. A write whose outcome is unknown is a 504 that says so,
//! never a status claiming it failed; a range without a leader or quorum is a 503 with
//! `Retry-After`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shoal_core::{Error, ErrorCode};

/// An HTTP error answer: a status and a JSON body `{"error": code, "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// A short stable name of what went wrong.
    pub code: &'static str,
    /// What happened.
    pub message: String,
}

impl ApiError {
    /// A 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    /// A 404: no such key.
    pub fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: "no value for the key".into(),
        }
    }

    /// A 409: a compare-and-set or a conditional write whose condition did not hold.
    pub fn condition_failed(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "condition_failed",
            message: message.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e.code {
            ErrorCode::OutcomeUnknown => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"),
            ErrorCode::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ErrorCode::InvalidRequest | ErrorCode::CorruptMessage => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            code if code.is_retriable() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self {
            status,
            code,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = shoal_client::bodies::ErrorBody {
            error: self.code.to_string(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

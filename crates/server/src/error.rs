//! The server's one error type and its HTTP form: `{"error": {"code": "...", "message": "..."}}`.
//!
//! Engine errors are converted here and nowhere else. Input errors are 4xx; an engine that is busy or
//! closing is 503 with `Retry-After`; an engine that failed (I/O, corruption, fail-stop) is 500/503
//! with the engine's reason, so an operator sees the file and offset.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after_s: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_json`, `invalid_key`, `value_too_large`, `not_found`, ...
    pub code: String,
    /// For humans; may change between versions.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }
}

/// Characters of an error message at most: messages quote the input they refuse (serde's
/// "unknown field `…`", a bad value), and a client's 1 MB string is not echoed back.
pub const MESSAGE_CHARS_MAX: usize = 400;

/// `s` cut to `max` characters, with a marker when it was cut.
pub fn cut_echo(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}… ({} bytes cut)", &s[..at], s.len() - at),
    }
}

/// The JSON body alone; used by the middleware that rewrites bodiless error responses too.
pub fn error_json(code: &str, message: &str) -> Vec<u8> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: cut_echo(message, MESSAGE_CHARS_MAX),
        },
    };
    serde_json::to_vec(&body)
        .unwrap_or_else(|_| b"{\"error\":{\"code\":\"internal\",\"message\":\"\"}}".to_vec())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, error_json(self.code, &self.message)).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after_s {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<kyrodb_storage::Error> for ApiError {
    fn from(e: kyrodb_storage::Error) -> Self {
        use kyrodb_storage::Error as E;
        let msg = e.to_string();
        match e {
            E::ValueTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large", msg)
            }
            E::BatchTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", msg)
            }
            E::BatchTooManyOps { .. } => Self::bad_request("batch_too_many_ops", msg),
            E::InvalidKeyspaceName(_) => Self::bad_request("invalid_keyspace_name", msg),
            E::NoSuchKeyspace(_) => Self::new(StatusCode::NOT_FOUND, "no_such_keyspace", msg),
            E::TooManyKeyspaces(_) => Self::new(StatusCode::CONFLICT, "too_many_keyspaces", msg),
            E::InvalidOption(_) => Self::bad_request("invalid_option", msg),
            E::Busy { .. } | E::WalQueueFull { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", msg).retry_after(1)
            }
            // The file's path is for the log, not for clients.
            E::OutOfFiles { .. } => {
                tracing::warn!(error = %msg, "refused a write: out of file descriptors");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "busy: the server is out of file descriptors; nothing was written, retry later",
                )
                .retry_after(1)
            }
            E::Closed => Self::new(StatusCode::SERVICE_UNAVAILABLE, "closed", msg).retry_after(5),
            E::Unavailable(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable", msg)
                    .retry_after(1)
            }
            E::Indeterminate(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown", msg).retry_after(1)
            }
            E::WritesStopped(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "writes_stopped", msg)
            }
            E::Locked(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "locked", msg),
            E::Corrupt { .. } => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", msg),
            E::Io { .. } => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "io", msg),
            E::ConditionFailed { .. } => Self::new(StatusCode::CONFLICT, "condition_failed", msg),
            E::Index(kyrodb_storage::IndexError::InvalidConfig(_)) => {
                Self::bad_request("invalid_option", msg)
            }
            E::Index(kyrodb_storage::IndexError::Io { .. }) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "io", msg)
            }
            E::Index(kyrodb_storage::IndexError::Build(_)) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "index_build_failed", msg)
            } // No catch-all: a new engine error must be mapped here on purpose (the match is exhaustive).
        }
    }
}

/// The stable code for a status produced outside our handlers (router, tower layers).
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "no_route",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "body_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "invalid_request",
        429 => "rate_limited",
        431 => "headers_too_large",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
}

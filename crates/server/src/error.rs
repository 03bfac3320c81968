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

/// Every error code the server answers with (its handlers, the engine's and search layer's errors,
/// the tower layers, the connection loop), each with its one-line meaning. The one list: a test
/// finds every code written in the server's and the search crate's sources and fails on one missing
/// here, and another fails when the Python SDK has no exception class for one (docs/api.md lists
/// them). Codes are stable; messages are for humans and may change.
pub const CODES: &[(&str, &str)] = &[
    // 400: the request is wrong; nothing was written.
    (
        "bad_request",
        "the request is malformed (a status answered outside our handlers)",
    ),
    (
        "invalid_json",
        "the body is not JSON, or not the JSON the route takes",
    ),
    (
        "invalid_body",
        "the body could not be read as the route's input",
    ),
    (
        "invalid_request",
        "the request does not fit the route (a field's type or range)",
    ),
    ("invalid_query", "a query parameter is unknown or mistyped"),
    ("invalid_key", "a key is not a plain decimal u64"),
    (
        "invalid_ttl",
        "ttl_ms is not a positive number of milliseconds",
    ),
    (
        "invalid_option",
        "an option is out of its range or not available here",
    ),
    (
        "invalid_keyspace_name",
        "a keyspace name breaks the naming rule",
    ),
    (
        "reserved_keyspace",
        "the keyspace is reserved (default, or a name starting with _)",
    ),
    (
        "invalid_collection_name",
        "a collection name breaks the naming rule",
    ),
    ("invalid_schema", "a collection schema is invalid"),
    (
        "invalid_field_type",
        "a field's value does not match its declared type",
    ),
    (
        "invalid_document",
        "a document is malformed (the message names the field path)",
    ),
    (
        "invalid_id",
        "a document id is empty, too long or not a string",
    ),
    (
        "invalid_vector",
        "a vector has non-finite values or a zero or overflowing norm",
    ),
    (
        "dimension_mismatch",
        "a vector's length differs from its field's dimension",
    ),
    (
        "invalid_filter",
        "a filter is malformed or names an unknown field",
    ),
    (
        "invalid_datetime",
        "a datetime is not RFC 3339 or out of range",
    ),
    ("invalid_feedback", "a feedback event is malformed"),
    (
        "unknown_field",
        "the request names a field the collection does not have",
    ),
    (
        "batch_too_many_ops",
        "a batch has more operations than batch_ops_max",
    ),
    (
        "too_many_keys",
        "a request lists more keys than batch_keys_max",
    ),
    ("too_many", "a request asks for more items than its limit"),
    ("too_large", "an input is over its size limit"),
    (
        "document_too_large",
        "a document is over documents' size limit",
    ),
    (
        "response_too_large",
        "the answer would be over response_bytes_max; ask for fewer",
    ),
    (
        "invalid_api_key",
        "a key specification (role, scopes, tenant, quotas) is invalid",
    ),
    ("invalid_api_key_id", "a key id is not 16 hex digits"),
    (
        "invalid_backup_target",
        "a backup target is neither a directory nor an s3:// URL",
    ),
    (
        "invalid_consistency",
        "consistency= is neither linearizable nor stale",
    ),
    (
        "invalid_node_id",
        "a cluster node id is not a positive integer",
    ),
    (
        "invalid_raft_addr",
        "a cluster node's Raft address is not IP:PORT",
    ),
    (
        "model_mismatch",
        "the collection's embedding model differs from the server's",
    ),
    ("method_not_allowed", "the route does not take this method"),
    (
        "request_timeout",
        "the request took longer than request_timeout_ms",
    ),
    ("uri_too_long", "the request line is over 64 KiB"),
    ("headers_too_large", "the request headers are too large"),
    (
        "unsupported_media_type",
        "a JSON route got text/plain, multipart or (from a browser) no JSON",
    ),
    ("tls_required", "plain HTTP sent to the TLS port"),
    // 401, 403
    (
        "unauthorized",
        "no bearer token, or an unknown or revoked one",
    ),
    ("forbidden", "the token's role or scopes do not reach this"),
    ("quota_exceeded", "the key's documents quota is used up"),
    ("tenant_mismatch", "the document belongs to another tenant"),
    (
        "backup_dir_not_allowed",
        "the backup target is outside --backup-dirs",
    ),
    (
        "host_not_allowed",
        "the Host header names a host this server does not serve",
    ),
    ("cross_origin_refused", "a write from another site's page"),
    // 404
    ("not_found", "the key does not exist"),
    ("no_route", "no route has this path"),
    ("no_such_keyspace", "the keyspace does not exist"),
    ("collection_not_found", "the collection does not exist"),
    ("document_not_found", "the document does not exist"),
    ("api_key_not_found", "no key has this id"),
    ("no_such_backup", "no backup job has this id"),
    ("no_such_node", "the cluster has no node with this id"),
    ("not_clustered", "the server does not run in cluster mode"),
    // 409
    (
        "condition_failed",
        "if_seq did not match the live value's sequence number",
    ),
    (
        "write_conflict",
        "a concurrent write changed what this one depended on",
    ),
    (
        "collection_exists",
        "a collection of that name exists with another schema",
    ),
    ("too_many_keyspaces", "keyspaces_max keyspaces exist"),
    (
        "auth_not_enabled",
        "the server has no KYRODB_API_KEYS, so keys cannot be made",
    ),
    ("too_many_api_keys", "10,000 keys exist"),
    (
        "reembed_running",
        "a re-embed of the collection is already running",
    ),
    (
        "backup_in_progress",
        "a backup is already running on this node",
    ),
    ("already_initialised", "the cluster is initialised already"),
    (
        "cluster_change_refused",
        "a membership change not possible as asked (e.g. the last voter); nothing changed",
    ),
    // 413
    ("body_too_large", "the request body is over body_bytes_max"),
    ("value_too_large", "a value is over value_bytes_max"),
    ("batch_too_large", "a batch is over batch_bytes_max"),
    // 429
    (
        "rate_limited",
        "over the per-IP rate limit or the key's request or byte quota",
    ),
    // 5xx
    ("internal", "a server bug; the message says what failed"),
    ("io", "the engine's I/O failed (the message names the file)"),
    (
        "corrupt",
        "a file failed its checksum (the message names the file and offset)",
    ),
    ("index_build_failed", "building a learned index failed"),
    ("memory_budget", "the vector memory budget is full (507)"),
    (
        "unavailable",
        "the server cannot answer now (a status answered outside our handlers)",
    ),
    (
        "busy",
        "the engine is behind on writes; retry after Retry-After",
    ),
    ("closed", "the engine is closed"),
    ("shutting_down", "the server is shutting down"),
    (
        "writes_stopped",
        "the engine stopped writes after a failed fsync or write (restart needed)",
    ),
    ("locked", "another process holds the data directory"),
    (
        "model_unavailable",
        "the embedding model is not installed or busy",
    ),
    (
        "too_many_connections",
        "connections_max connections are open; retry after Retry-After",
    ),
    (
        "cluster_unavailable",
        "no leader or quorum answered within the cluster timeout",
    ),
    (
        "outcome_unknown",
        "the write may or may not have been applied (leader lost mid-write)",
    ),
    (
        "cluster_change_failed",
        "a membership change was not applied",
    ),
];

#[cfg(test)]
mod code_list_tests {
    use super::CODES;

    /// Every code literal in the server's and the search crate's sources.
    fn codes_in_sources() -> std::collections::BTreeMap<String, String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = std::collections::BTreeMap::new();
        let mut dirs = vec![root.join("server/src"), root.join("search/src")];
        // Where a code literal is written: `ApiError::new(status, "code"`, `bad_request("code"`,
        // `error_json("code"`, the connection loop's `closing_answer(.., "code"`, the search crate's
        // `invalid("code"` and `code: "code"`: (marker, which string literal after it is the code).
        let markers = [
            ("StatusCode::", 0),
            ("bad_request(", 0),
            ("error_json(", 0),
            ("closing_answer(", 2),
            ("invalid(", 0),
            ("code: ", 0),
        ];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                    continue;
                }
                if p.extension().is_none_or(|x| x != "rs") {
                    continue;
                }
                let mut text = std::fs::read_to_string(&p).unwrap();
                if let Some(list) = text.find("pub const CODES") {
                    text.truncate(list); // this file: its mappings, not the list itself
                }
                for (m, nth) in markers {
                    for (at, _) in text.match_indices(m) {
                        // The nth string literal in the next 160 bytes after the marker.
                        let rest = &text[at + m.len()..];
                        let mut end = rest.len().min(160);
                        while !rest.is_char_boundary(end) {
                            end -= 1;
                        }
                        let window = &rest[..end];
                        let mut lits = window.split('"').skip(1).step_by(2);
                        let Some(code) = lits.nth(nth) else { continue };
                        let before = &window[..window.find(code).unwrap_or(0)];
                        let is_code = !code.is_empty()
                            && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                            && (nth > 0 || before.chars().filter(|c| *c == '(').count() <= 1)
                            && !before.contains(';');
                        if is_code {
                            found.insert(code.to_owned(), p.display().to_string());
                        }
                    }
                }
            }
        }
        found
    }

    #[test]
    fn every_code_in_the_sources_is_in_the_list_once() {
        let listed: Vec<&str> = CODES.iter().map(|(c, _)| *c).collect();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), listed.len(), "a code is listed twice");
        let found = codes_in_sources();
        assert!(found.len() >= 60, "the scan found only {found:?}");
        for (code, file) in &found {
            assert!(
                listed.contains(&code.as_str()),
                "{code} (written in {file}) is not in CODES"
            );
        }
        for s in [
            400u16, 401, 403, 404, 405, 408, 413, 414, 415, 422, 429, 431, 500, 503,
        ] {
            let c = super::code_for_status(axum::http::StatusCode::from_u16(s).unwrap());
            assert!(listed.contains(&c), "{c} (for status {s}) is not in CODES");
        }
    }

    #[test]
    fn the_python_sdk_has_a_class_for_every_code() {
        let sdk = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../clients/python/src/kyrodb/_errors.py"),
        )
        .unwrap();
        for (code, _) in CODES {
            assert!(
                sdk.contains(&format!("code = \"{code}\"")),
                "the SDK's _errors.py has no class for {code}"
            );
        }
    }
}

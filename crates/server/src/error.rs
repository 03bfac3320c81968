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
    /// The HTTP status answered.
    pub status: StatusCode,
    /// The machine-readable code in the body.
    pub code: ErrorCode,
    /// For humans; cut to [`MESSAGE_CHARS_MAX`] characters in the body.
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after_s: Option<u64>,
}

/// The body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_json`, `invalid_key`, `value_too_large`, `not_found`, ...
    /// (every code is listed in `x-error-codes`).
    pub code: String,
    /// For humans; may change between versions.
    pub message: String,
}

impl ApiError {
    /// `code` answered with its usual status.
    pub fn of(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::of_status(code.status(), code, message)
    }
    /// `code` answered with `status` (the table's two codes that have a second status).
    pub fn of_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::of(ErrorCode::NotFound, message)
    }
    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::of(ErrorCode::Internal, message)
    }
    /// With a `Retry-After` header of `seconds` (at least 1).
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
pub fn error_json(code: ErrorCode, message: &str) -> Vec<u8> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.as_str().to_owned(),
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
            E::ValueTooLarge { .. } => Self::of(ErrorCode::ValueTooLarge, msg),
            E::BatchTooLarge { .. } => Self::of(ErrorCode::BatchTooLarge, msg),
            E::BatchTooManyOps { .. } => Self::of(ErrorCode::BatchTooManyOps, msg),
            E::InvalidKeyspaceName(_) => Self::of(ErrorCode::InvalidKeyspaceName, msg),
            E::NoSuchKeyspace(_) => Self::of(ErrorCode::NoSuchKeyspace, msg),
            E::TooManyKeyspaces(_) => Self::of(ErrorCode::TooManyKeyspaces, msg),
            E::InvalidOption(_) => Self::of(ErrorCode::InvalidOption, msg),
            E::Busy { .. } | E::WalQueueFull { .. } => {
                Self::of(ErrorCode::Busy, msg).retry_after(1)
            }
            // The file's path is for the log, not for clients.
            E::OutOfFiles { .. } => {
                tracing::warn!(error = %msg, "refused a write: out of file descriptors");
                Self::of(
                    ErrorCode::Busy,
                    "busy: the server is out of file descriptors; nothing was written, retry later",
                )
                .retry_after(1)
            }
            E::Closed => Self::of(ErrorCode::Closed, msg).retry_after(5),
            E::Unavailable(_) => Self::of(ErrorCode::ClusterUnavailable, msg).retry_after(1),
            E::Indeterminate(_) => Self::of(ErrorCode::OutcomeUnknown, msg).retry_after(1),
            E::WritesStopped(_) => Self::of(ErrorCode::WritesStopped, msg),
            E::Locked(_) => Self::of(ErrorCode::Locked, msg),
            E::Corrupt { .. } => Self::of(ErrorCode::Corrupt, msg),
            E::Io { .. } => Self::of(ErrorCode::Io, msg),
            E::ConditionFailed { .. } => Self::of(ErrorCode::ConditionFailed, msg),
            E::Index(kyrodb_storage::IndexError::InvalidConfig(_)) => {
                Self::of(ErrorCode::InvalidOption, msg)
            }
            E::Index(kyrodb_storage::IndexError::Io { .. }) => Self::of(ErrorCode::Io, msg),
            E::Index(kyrodb_storage::IndexError::Build(_)) => {
                Self::of(ErrorCode::IndexBuildFailed, msg)
            } // No catch-all: a new engine error must be mapped here on purpose (the match is exhaustive).
        }
    }
}

/// The stable code for a status produced outside our handlers (router, tower layers).
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::BadRequest,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NoRoute,
        405 => ErrorCode::MethodNotAllowed,
        408 => ErrorCode::RequestTimeout,
        413 => ErrorCode::BodyTooLarge,
        414 => ErrorCode::UriTooLong,
        415 => ErrorCode::UnsupportedMediaType,
        422 => ErrorCode::InvalidRequest,
        429 => ErrorCode::RateLimited,
        431 => ErrorCode::HeadersTooLarge,
        503 => ErrorCode::Unavailable,
        s if s >= 500 => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    }
}

/// Every error code the server answers with (its handlers, the engine's and search layer's errors,
/// the tower layers, the connection loop), each with its HTTP status and one-line meaning: the one
/// list. Every error answer is made from an [`ErrorCode`], so a handler cannot send a code that is
/// not here; the search crate's `Error::Invalid` codes are strings, and a test finds every one
/// written in its sources and fails on one missing here. `/openapi.json` lists them
/// (`x-error-codes`), the Python SDK's exception classes are generated from that list
/// (`clients/python/tools/gen_errors.py`), and docs/api.md shows them. Codes are stable;
/// messages are for humans and may change. The status is the usual one; two codes are also
/// answered with another (`too_many`: 400 for an embed batch; `model_mismatch`: 409 for a
/// collection whose stored model differs).
macro_rules! error_codes {
    ($($variant:ident = ($code:literal, $status:literal, $meaning:expr),)*) => {
        /// A stable error code: see [`error_codes!`]'s table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(
                #[doc = $meaning]
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code, in the table's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as sent: `{"error": {"code": ...}}`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status it is answered with (see the table's note for the two exceptions).
            pub const fn status_u16(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// One line on what it means.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }

            /// The code spelled `s`, if there is one.
            pub fn from_code(s: &str) -> Option<ErrorCode> {
                match s {
                    $($code => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    BadRequest = ("bad_request", 400, "the request is malformed (a status answered outside our handlers)"),
    InvalidJson = ("invalid_json", 400, "the body is not JSON, or not the JSON the route takes"),
    InvalidBody = ("invalid_body", 400, "the body could not be read as the route's input"),
    InvalidRequest = ("invalid_request", 400, "the request does not fit the route (a field's type or range)"),
    InvalidQuery = ("invalid_query", 400, "a query parameter is unknown or mistyped"),
    InvalidBase64 = ("invalid_base64", 400, "value_b64 is not standard base64"),
    InvalidKey = ("invalid_key", 400, "a key is not a plain decimal u64"),
    InvalidTtl = ("invalid_ttl", 400, "ttl_ms is not a positive number of milliseconds"),
    InvalidOption = ("invalid_option", 400, "an option is out of its range or not available here"),
    InvalidKeyspaceName = ("invalid_keyspace_name", 400, "a keyspace name breaks the naming rule"),
    ReservedKeyspace = ("reserved_keyspace", 400, "the keyspace is reserved (default, or a name starting with _)"),
    InvalidCollectionName = ("invalid_collection_name", 400, "a collection name breaks the naming rule"),
    InvalidSchema = ("invalid_schema", 400, "a collection schema is invalid"),
    InvalidFieldType = ("invalid_field_type", 400, "a field's value does not match its declared type"),
    InvalidDocument = ("invalid_document", 400, "a document is malformed (the message names the field path)"),
    InvalidId = ("invalid_id", 400, "a document id is empty, too long or not a string"),
    InvalidVector = ("invalid_vector", 400, "a vector has non-finite values or a zero or overflowing norm"),
    DimensionMismatch = ("dimension_mismatch", 400, "a vector's length differs from its field's dimension"),
    InvalidFilter = ("invalid_filter", 400, "a filter is malformed or names an unknown field"),
    InvalidDatetime = ("invalid_datetime", 400, "a datetime is not RFC 3339 or out of range"),
    InvalidFeedback = ("invalid_feedback", 400, "a feedback event is malformed"),
    UnknownField = ("unknown_field", 400, "the request names a field the collection does not have"),
    BatchTooManyOps = ("batch_too_many_ops", 400, "a batch has more operations than batch_ops_max"),
    TooManyKeys = ("too_many_keys", 400, "a request lists more keys than batch_keys_max"),
    TooMany = ("too_many", 413, "a request asks for more items than its limit (400 for texts in one embed request)"),
    TooLarge = ("too_large", 400, "an input is over its size limit"),
    DocumentTooLarge = ("document_too_large", 400, "a document is over documents' size limit"),
    ResponseTooLarge = ("response_too_large", 400, "the answer would be over response_bytes_max; ask for fewer"),
    InvalidApiKey = ("invalid_api_key", 400, "a key specification (role, scopes, tenant, quotas) is invalid"),
    InvalidApiKeyId = ("invalid_api_key_id", 400, "a key id is not 16 hex digits"),
    InvalidBackupTarget = ("invalid_backup_target", 400, "a backup target is neither a directory nor an s3:// URL"),
    InvalidConsistency = ("invalid_consistency", 400, "consistency= is neither linearizable nor stale"),
    InvalidNodeId = ("invalid_node_id", 400, "a cluster node id is not a positive integer"),
    InvalidRaftAddr = ("invalid_raft_addr", 400, "a cluster node's Raft address is not IP:PORT"),
    ModelMismatch = ("model_mismatch", 400, "a document's vectors come from another model than the field's (400), or the server runs another model than the collection's (409)"),
    MethodNotAllowed = ("method_not_allowed", 405, "the route does not take this method"),
    RequestTimeout = ("request_timeout", 408, "the request took longer than request_timeout_ms"),
    UriTooLong = ("uri_too_long", 414, "the request line is over 64 KiB"),
    HeadersTooLarge = ("headers_too_large", 431, "the request headers are too large"),
    UnsupportedMediaType = ("unsupported_media_type", 415, "a JSON route got text/plain, multipart or (from a browser) no JSON"),
    TlsRequired = ("tls_required", 400, "plain HTTP sent to the TLS port"),
    Unauthorized = ("unauthorized", 401, "no bearer token, or an unknown or revoked one"),
    Forbidden = ("forbidden", 403, "the token's role or scopes do not reach this"),
    QuotaExceeded = ("quota_exceeded", 403, "the key's documents quota is used up"),
    TenantMismatch = ("tenant_mismatch", 403, "the document belongs to another tenant"),
    BackupDirNotAllowed = ("backup_dir_not_allowed", 403, "the backup target is outside --backup-dirs"),
    HostNotAllowed = ("host_not_allowed", 403, "the Host header names a host this server does not serve"),
    CrossOriginRefused = ("cross_origin_refused", 403, "a write from another site's page"),
    NotFound = ("not_found", 404, "the key does not exist"),
    NoRoute = ("no_route", 404, "no route has this path"),
    NoSuchKeyspace = ("no_such_keyspace", 404, "the keyspace does not exist"),
    CollectionNotFound = ("collection_not_found", 404, "the collection does not exist"),
    DocumentNotFound = ("document_not_found", 404, "the document does not exist"),
    ApiKeyNotFound = ("api_key_not_found", 404, "no key has this id"),
    NoSuchBackup = ("no_such_backup", 404, "no backup job has this id"),
    NoSuchNode = ("no_such_node", 404, "the cluster has no node with this id"),
    NotClustered = ("not_clustered", 404, "the server does not run in cluster mode"),
    ConditionFailed = ("condition_failed", 409, "if_seq did not match the live value's sequence number"),
    WriteConflict = ("write_conflict", 409, "a concurrent write changed what this one depended on"),
    CollectionExists = ("collection_exists", 409, "a collection of that name exists with another schema"),
    TooManyKeyspaces = ("too_many_keyspaces", 409, "keyspaces_max keyspaces exist"),
    AuthNotEnabled = ("auth_not_enabled", 409, "the server has no KYRODB_API_KEYS, so keys cannot be made"),
    TooManyApiKeys = ("too_many_api_keys", 409, "10,000 keys exist"),
    ReembedRunning = ("reembed_running", 409, "a re-embed of the collection is already running"),
    BackupInProgress = ("backup_in_progress", 409, "a backup is already running on this node"),
    AlreadyInitialised = ("already_initialised", 409, "the cluster is initialised already"),
    ClusterChangeRefused = ("cluster_change_refused", 409, "a membership change not possible as asked (e.g. the last voter); nothing changed"),
    BodyTooLarge = ("body_too_large", 413, "the request body is over body_bytes_max"),
    ValueTooLarge = ("value_too_large", 413, "a value is over value_bytes_max"),
    BatchTooLarge = ("batch_too_large", 413, "a batch is over batch_bytes_max"),
    RateLimited = ("rate_limited", 429, "over the per-IP rate limit or the key's request or byte quota"),
    Internal = ("internal", 500, "a server bug; the message says what failed"),
    Io = ("io", 500, "the engine's I/O failed (the message names the file)"),
    Corrupt = ("corrupt", 500, "a file failed its checksum (the message names the file and offset)"),
    IndexBuildFailed = ("index_build_failed", 500, "building a learned index failed"),
    MemoryBudget = ("memory_budget", 507, "the vector memory budget is full (507)"),
    Unavailable = ("unavailable", 503, "the server cannot answer now (a status answered outside our handlers)"),
    Busy = ("busy", 503, "the engine is behind on writes; retry after Retry-After"),
    Closed = ("closed", 503, "the engine is closed"),
    ShuttingDown = ("shutting_down", 503, "the server is shutting down"),
    WritesStopped = ("writes_stopped", 503, "the engine stopped writes after a failed fsync or write (restart needed)"),
    Locked = ("locked", 503, "another process holds the data directory"),
    ModelUnavailable = ("model_unavailable", 503, "the embedding model is not installed or busy"),
    TooManyConnections = ("too_many_connections", 503, "connections_max connections are open; retry after Retry-After"),
    ClusterUnavailable = ("cluster_unavailable", 503, "no leader or quorum answered within the cluster timeout"),
    OutcomeUnknown = ("outcome_unknown", 503, "the write may or may not have been applied (leader lost mid-write)"),
    ClusterChangeFailed = ("cluster_change_failed", 503, "a membership change was not applied"),
}

impl ErrorCode {
    /// The HTTP status it is answered with.
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.status_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod code_list_tests {
    use super::ErrorCode;

    /// Every code literal in the search crate's sources (the server's own are [`ErrorCode`]s, so
    /// the compiler checks them): `invalid("code"` and `code: "code"`.
    fn codes_in_search_sources() -> std::collections::BTreeMap<String, String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = std::collections::BTreeMap::new();
        let mut dirs = vec![root.join("search/src")];
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
                let text = std::fs::read_to_string(&p).unwrap();
                for m in ["invalid(", "code: ", "decode::<"] {
                    for (at, _) in text.match_indices(m) {
                        // The first string literal in the next 160 bytes after the marker.
                        let rest = &text[at + m.len()..];
                        let mut end = rest.len().min(160);
                        while !rest.is_char_boundary(end) {
                            end -= 1;
                        }
                        let window = &rest[..end];
                        let Some(code) = window.split('"').nth(1) else {
                            continue;
                        };
                        let before = &window[..window.find(code).unwrap_or(0)];
                        let is_code = !code.is_empty()
                            && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                            && before.chars().filter(|c| *c == '(').count() <= 1
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
    fn every_code_is_listed_once_and_the_search_crate_sends_only_listed_codes() {
        let mut sorted: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ErrorCode::ALL.len(), "a code is listed twice");
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.as_str()), Some(*c));
            assert!(c.status().is_client_error() || c.status().is_server_error());
        }
        let found = codes_in_search_sources();
        assert!(found.len() >= 10, "the scan found only {found:?}");
        for (code, file) in &found {
            assert!(
                ErrorCode::from_code(code).is_some(),
                "{code} (written in {file}) is not an ErrorCode"
            );
        }
        // A status answered outside the handlers gets a code answered with that status (422,
        // axum's rejection of a body, is answered as invalid_request: a 400 code).
        for s in [
            400u16, 401, 403, 404, 405, 408, 413, 414, 415, 429, 431, 500, 503,
        ] {
            let c = super::code_for_status(axum::http::StatusCode::from_u16(s).unwrap());
            assert_eq!(c.status_u16(), s, "{c} for status {s}");
        }
    }

    #[test]
    fn the_python_sdk_has_a_class_for_every_code() {
        let sdk = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../clients/python/src/kyrodb/_errors.py"),
        )
        .unwrap();
        for code in ErrorCode::ALL {
            assert!(
                sdk.contains(&format!("code = \"{code}\"")),
                "the SDK's _errors.py has no class for {code}"
            );
        }
    }
}

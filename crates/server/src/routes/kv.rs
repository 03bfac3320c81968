//! Key-value routes. Every route but `/v1/get_fast/{key}` takes a keyspace (`keyspace` in the query or
//! the body; default `default`). Reads run inline (memory or mmap); writes run on the blocking pool
//! because an acknowledgement waits for the WAL's group commit.

use crate::error::ErrorCode;
use std::borrow::Cow;

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use kyrodb_storage::{Condition, Keyspace, Value, WriteBatch};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    extract::{JsonBody, KeyPath, Object, QueryOf, RawBody},
    AppState,
};
use crate::error::{ApiError, ErrorBody};

/// One key and its value, given as exactly one of `value` (UTF-8 text) or `value_b64` (any bytes).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    /// Unsigned 64-bit key.
    #[serde(deserialize_with = "super::extract::de_key")]
    pub key: u64,
    /// The value as a UTF-8 string. Exactly one of `value` and `value_b64`.
    #[serde(default, deserialize_with = "super::extract::de_present")]
    #[schema(value_type = String)]
    pub value: Option<String>,
    /// The value's bytes in standard base64 (RFC 4648 alphabet, `=` padding): for values that are not
    /// UTF-8. Exactly one of `value` and `value_b64`.
    #[serde(default, deserialize_with = "super::extract::de_present")]
    #[schema(value_type = String, format = Byte)]
    pub value_b64: Option<String>,
    /// The keyspace (default `default`); it must exist (`POST /v1/keyspaces`).
    #[serde(default, deserialize_with = "super::extract::de_present")]
    #[schema(value_type = String, pattern = "^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")]
    pub keyspace: Option<String>,
    /// The value expires this many milliseconds from now (wall clock; survives restarts). Expired
    /// keys are invisible at once and dropped by compaction.
    #[serde(default, deserialize_with = "super::extract::de_opt_ttl_ms")]
    #[schema(value_type = u64, minimum = 1, maximum = 3153600000000u64)]
    pub ttl_ms: Option<u64>,
    /// Write only if the key has no live value (else 409 `condition_failed`, nothing written).
    #[serde(default, deserialize_with = "super::extract::de_present")]
    #[schema(value_type = bool)]
    pub if_absent: Option<bool>,
    /// Write only if the key's live value was written at this sequence number (the `offset` its write
    /// returned, or `x-kyrodb-seq` of `GET /v1/kv/{key}`); else 409 `condition_failed`.
    #[serde(default, deserialize_with = "super::extract::de_opt_if_seq")]
    #[schema(value_type = u64)]
    pub if_seq: Option<u64>,
}

/// Longest TTL accepted: 100 years in milliseconds (keeps expiry arithmetic far from overflow).
pub const TTL_MS_MAX: u64 = 3_153_600_000_000;

/// The conditions a write asks for, from `if_absent` / `if_seq`; when both are given, both must hold
/// (which no live key satisfies: the write then fails with 409). No allocation: this is on every put.
fn conditions(if_absent: Option<bool>, if_seq: Option<u64>) -> [Option<Condition>; 2] {
    [
        (if_absent == Some(true)).then_some(Condition::Absent),
        if_seq.map(Condition::Seq),
    ]
}

fn check_ttl(ttl_ms: Option<u64>) -> Result<(), ApiError> {
    match ttl_ms {
        Some(t) if t == 0 || t > TTL_MS_MAX => Err(ApiError::of(
            ErrorCode::InvalidTtl,
            format!("ttl_ms {t} is outside 1..={TTL_MS_MAX}"),
        )),
        _ => Ok(()),
    }
}

/// The keyspace a request names (the default one when it names none); 404 `no_such_keyspace`.
/// The keyspace a request names (None: `default`), if the request's key reaches it
/// (`crate::keys`): every key-value route resolves its keyspace here.
pub(crate) fn keyspace(s: &AppState, name: Option<&str>) -> Result<Keyspace, ApiError> {
    match name {
        None => {
            crate::keys::check_keyspace(kyrodb_storage::DEFAULT_KEYSPACE)?;
            Ok(s.db.default_keyspace().clone())
        }
        Some(n) => {
            reserved(n)?;
            crate::keys::check_keyspace(n)?;
            Ok(s.db.keyspace(n)?)
        }
    }
}

/// Keyspaces whose names start with `_` belong to the server (collections' documents and catalog):
/// the key-value API neither reads nor writes them, so derived indexes cannot be bypassed.
pub(crate) fn reserved(name: &str) -> Result<(), ApiError> {
    if name.starts_with('_') {
        return Err(ApiError::of(
            ErrorCode::ReservedKeyspace,
            format!(
                "keyspace {name:?} is reserved (names starting with _ hold collections); use /v2"
            ),
        ));
    }
    Ok(())
}

/// One put with its options into `batch`: the condition first (it is checked against the state
/// before the batch), then the value, with its TTL if any.
fn add_put(
    batch: &mut WriteBatch,
    ks: &Keyspace,
    key: u64,
    value: &[u8],
    ttl_ms: Option<u64>,
    conds: [Option<Condition>; 2],
) {
    for c in conds.into_iter().flatten() {
        batch.require(ks, key, c);
    }
    match ttl_ms {
        Some(t) => batch.put_with_ttl(ks, key, value, std::time::Duration::from_millis(t)),
        None => batch.put(ks, key, value),
    };
}

impl PutRequest {
    /// This put, with its keyspace, TTL and condition, into `batch` (checked first: nothing is added
    /// when it is refused).
    fn add_to(&self, s: &AppState, batch: &mut WriteBatch) -> Result<(), ApiError> {
        let value = self.value_bytes(s)?;
        check_ttl(self.ttl_ms)?;
        let conds = conditions(self.if_absent, self.if_seq);
        let ks = keyspace(s, self.keyspace.as_deref())?;
        add_put(batch, &ks, self.key, &value, self.ttl_ms, conds);
        Ok(())
    }

    /// The value's bytes, checked against `value_bytes_max`: borrowed for `value`, decoded for
    /// `value_b64`.
    fn value_bytes(&self, state: &AppState) -> Result<Cow<'_, [u8]>, ApiError> {
        let bytes = match (&self.value, &self.value_b64) {
            (Some(v), None) => Cow::Borrowed(v.as_bytes()),
            (None, Some(b64)) => Cow::Owned(BASE64.decode(b64).map_err(|e| {
                ApiError::of(
                    ErrorCode::InvalidBase64,
                    format!("value_b64 is not standard base64: {e}"),
                )
            })?),
            _ => {
                return Err(ApiError::of(
                    ErrorCode::InvalidRequest,
                    "exactly one of value and value_b64 is required",
                ))
            }
        };
        check_value(state, bytes.len())?;
        Ok(bytes)
    }
}

/// The answer to a write.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OffsetResponse {
    /// The write's sequence number: durable and visible once returned.
    pub offset: u64,
}

/// The body of `batch_get` and `batch_delete`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest {
    /// Keys to read, or to delete in one atomic write (absent keys are not an error).
    #[serde(deserialize_with = "super::extract::de_keys")]
    #[schema(max_items = 10000)]
    pub keys: Vec<u64>,
    /// The keyspace (default `default`).
    #[serde(default, deserialize_with = "super::extract::de_present")]
    #[schema(value_type = String, pattern = "^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")]
    pub keyspace: Option<String>,
}

/// `POST /v1/kv/delete_range`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRangeRequest {
    /// First key, inclusive (default 0).
    #[serde(default, deserialize_with = "super::extract::de_opt_start")]
    #[schema(value_type = u64)]
    pub start: Option<u64>,
    /// Last key, exclusive (default: the end of the key space; at or below `start`: nothing).
    #[serde(default, deserialize_with = "super::extract::de_opt_end")]
    #[schema(value_type = u64)]
    pub end: Option<u64>,
    /// The keyspace (default `default`).
    #[serde(default, deserialize_with = "super::extract::de_present")]
    #[schema(value_type = String, pattern = "^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")]
    pub keyspace: Option<String>,
}

/// Query of `PUT /v1/kv/{key}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    /// The keyspace (default `default`).
    #[param(pattern = "^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")]
    pub keyspace: Option<String>,
    /// Expire the value this many milliseconds from now.
    #[param(minimum = 1, maximum = 3153600000000u64)]
    pub ttl_ms: Option<u64>,
    /// Write only if the key has no live value (else 409).
    pub if_absent: Option<bool>,
    /// Write only if the key's live value was written at this sequence number (else 409). With
    /// `if_absent` too, both must hold.
    pub if_seq: Option<u64>,
}

/// Query of `GET /v1/kv/{key}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// The keyspace (default `default`).
    #[param(pattern = "^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")]
    pub keyspace: Option<String>,
}

/// Query of `DELETE /v1/kv/{key}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// The keyspace (default `default`).
    #[param(pattern = "^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")]
    pub keyspace: Option<String>,
    /// Delete only if the key's live value was written at this sequence number (else 409).
    pub if_seq: Option<u64>,
}

/// `POST /v1/kv/batch_put`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchPutRequest {
    /// Written all-or-nothing under one sequence number; each item may name its own keyspace (a batch
    /// is atomic across keyspaces) and carry its own TTL and condition.
    #[schema(value_type = Vec<PutRequest>, max_items = 10000)]
    pub items: Vec<Object<PutRequest>>,
}

/// One key's value in a JSON answer. `value` is the UTF-8 string, or null when the key is absent; a
/// value that is not UTF-8 comes as `value_hex` (and `value` null).
#[derive(Debug, Serialize, ToSchema)]
pub struct Item {
    /// The key.
    pub key: u64,
    /// The value as UTF-8 text; null when the key is absent or the value is not UTF-8.
    pub value: Option<String>,
    /// The value in hex, only when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_hex: Option<String>,
}

/// The answer to `POST /v1/kv/batch_get`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchGetResponse {
    /// In the order of the request's keys.
    pub items: Vec<Item>,
    /// How many keys were present.
    pub found: usize,
}

/// Query of `GET /v1/scan`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScanQuery {
    /// First key, inclusive. Default 0.
    pub start: Option<u64>,
    /// Last key, exclusive (an `end` at or below `start` is an empty range). Default: the end of
    /// the key space.
    pub end: Option<u64>,
    /// At most this many items (default 100, at most `scan_limit_max`).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// The keyspace (default `default`).
    #[param(pattern = "^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")]
    pub keyspace: Option<String>,
}

/// A page of `GET /v1/scan`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanResponse {
    /// Live keys in the range with their values, ascending.
    pub items: Vec<Item>,
    /// Pass as `start` to continue; null when the range is exhausted.
    pub next_start: Option<u64>,
}

const SCAN_LIMIT_DEFAULT: usize = 100;

#[cfg(test)]
fn item(key: u64, v: Option<&[u8]>) -> Item {
    match v {
        None => Item {
            key,
            value: None,
            value_hex: None,
        },
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Item {
                key,
                value: Some(s.to_owned()),
                value_hex: None,
            },
            Err(_) => Item {
                key,
                value: None,
                value_hex: Some(hex(b)),
            },
        },
    }
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

fn octets(v: Value) -> Response {
    let mut resp = Bytes::from_owner(v).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

fn check_value(state: &AppState, len: usize) -> Result<(), ApiError> {
    let max = state.limits.value_bytes_max;
    if len > max {
        return Err(kyrodb_storage::Error::ValueTooLarge { len, max }.into());
    }
    Ok(())
}

/// Runs an engine call that may block (a write waits for fsync) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> kyrodb_storage::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("engine task failed: {e}"))),
    }
}

/// Writes a value given as UTF-8 text (`value`) or base64 (`value_b64`).
#[utoipa::path(post, path = "/v1/put", tag = "kv", request_body = PutRequest,
    responses((status = 200, body = OffsetResponse), (status = 400, body = ErrorBody),
        (status = 404, description = "no such keyspace", body = ErrorBody),
        (status = 409, description = "condition_failed", body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn put_json(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<PutRequest>,
) -> Result<Json<OffsetResponse>, ApiError> {
    let mut batch = WriteBatch::new();
    req.add_to(&s, &mut batch)?;
    commit(&s, batch).await
}

/// Writes the raw request body as the value (an empty or missing body is the empty value); with
/// `ttl_ms` it expires, with `if_absent` / `if_seq` it is a compare-and-set (409 when the condition
/// does not hold, nothing written).
#[utoipa::path(put, path = "/v1/kv/{key}", tag = "kv", params(("key" = u64, Path), PutQuery),
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream"),
    responses((status = 200, body = OffsetResponse), (status = 400, body = ErrorBody),
        (status = 404, description = "no such keyspace", body = ErrorBody),
        (status = 409, description = "condition_failed", body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn put_raw(
    State(s): State<AppState>,
    KeyPath(key): KeyPath,
    QueryOf(q): QueryOf<PutQuery>,
    RawBody(body): RawBody,
) -> Result<Json<OffsetResponse>, ApiError> {
    check_value(&s, body.len())?;
    check_ttl(q.ttl_ms)?;
    let conds = conditions(q.if_absent, q.if_seq);
    let ks = keyspace(&s, q.keyspace.as_deref())?;
    let mut batch = WriteBatch::new();
    add_put(&mut batch, &ks, key, &body, q.ttl_ms, conds);
    commit(&s, batch).await
}

/// The raw value bytes, with the sequence number of the write that stored them (`x-kyrodb-seq`, for
/// `if_seq`) and, when the value expires, `x-kyrodb-expires-at-ms` (Unix ms); 404 when absent or expired.
#[utoipa::path(get, path = "/v1/kv/{key}", tag = "kv", params(("key" = u64, Path), GetQuery),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>,
        headers(("x-kyrodb-seq" = u64, description = "sequence number of the write that stored the value"),
                ("x-kyrodb-expires-at-ms" = u64, description = "when the value expires (Unix ms); absent if never"))),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    State(s): State<AppState>,
    KeyPath(key): KeyPath,
    QueryOf(q): QueryOf<GetQuery>,
) -> Result<Response, ApiError> {
    let ks = keyspace(&s, q.keyspace.as_deref())?;
    let Some(e) = ks.get_entry(key)? else {
        return Err(ApiError::not_found(format!(
            "key {key} not found in keyspace {:?}",
            ks.name()
        )));
    };
    let mut resp = octets(e.value);
    let h = resp.headers_mut();
    h.insert("x-kyrodb-seq", HeaderValue::from(e.seq));
    if let Some(at) = e.expires_at_ms {
        h.insert("x-kyrodb-expires-at-ms", HeaderValue::from(at));
    }
    Ok(resp)
}

/// The raw value bytes with nothing else on the path: the point-read benchmark's route.
#[utoipa::path(get, path = "/v1/get_fast/{key}", tag = "kv", params(("key" = u64, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)))]
pub async fn get_fast(
    State(s): State<AppState>,
    KeyPath(key): KeyPath,
    _: super::extract::NoQuery,
) -> Result<Response, ApiError> {
    crate::keys::check_keyspace(kyrodb_storage::DEFAULT_KEYSPACE)?;
    match s.db.get(key)? {
        Some(v) => Ok(octets(v)),
        None => Err(ApiError::not_found(format!("key {key} not found"))),
    }
}

/// Deletes a key (absent keys too: deletes are idempotent); with `if_seq`, only if the live value
/// was written at that sequence number (409 otherwise).
#[utoipa::path(delete, path = "/v1/kv/{key}", tag = "kv", params(("key" = u64, Path), DeleteQuery),
    responses((status = 200, body = OffsetResponse), (status = 400, body = ErrorBody),
        (status = 404, description = "no such keyspace", body = ErrorBody),
        (status = 409, description = "condition_failed", body = ErrorBody)))]
pub async fn delete(
    State(s): State<AppState>,
    KeyPath(key): KeyPath,
    QueryOf(q): QueryOf<DeleteQuery>,
) -> Result<Json<OffsetResponse>, ApiError> {
    let ks = keyspace(&s, q.keyspace.as_deref())?;
    let mut batch = WriteBatch::new();
    if let Some(seq) = q.if_seq {
        batch.require(&ks, key, Condition::Seq(seq));
    }
    batch.delete(&ks, key);
    commit(&s, batch).await
}

/// Deletes many keys in one atomic write.
#[utoipa::path(post, path = "/v1/kv/batch_delete", tag = "kv", request_body = KeysRequest,
    responses((status = 200, body = OffsetResponse), (status = 400, body = ErrorBody),
        (status = 404, description = "no such keyspace", body = ErrorBody)))]
pub async fn batch_delete(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<KeysRequest>,
) -> Result<Json<OffsetResponse>, ApiError> {
    check_batch_len(&s, req.keys.len(), "keys")?;
    let ks = keyspace(&s, req.keyspace.as_deref())?;
    let mut batch = WriteBatch::new();
    for k in &req.keys {
        batch.delete(&ks, *k);
    }
    commit(&s, batch).await
}

/// Deletes every live key in `[start, end)` in one atomic write (at most `batch_keys_max` keys; a
/// range holding more is refused whole with 400 `batch_too_many_ops`: delete it in smaller ranges).
#[utoipa::path(post, path = "/v1/kv/delete_range", tag = "kv", request_body = DeleteRangeRequest,
    responses((status = 200, body = OffsetResponse), (status = 400, body = ErrorBody),
        (status = 404, description = "no such keyspace", body = ErrorBody)))]
pub async fn delete_range(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<DeleteRangeRequest>,
) -> Result<Json<OffsetResponse>, ApiError> {
    let ks = keyspace(&s, req.keyspace.as_deref())?;
    let start = req.start.unwrap_or(0);
    let mut batch = WriteBatch::new();
    match req.end {
        Some(end) if end <= start => {}
        Some(end) => {
            batch.delete_range(&ks, start..end);
        }
        None => {
            batch.delete_range(&ks, start..);
        }
    }
    commit(&s, batch).await
}

/// Writes `batch` (waiting for its group commit on the blocking pool) and answers its sequence number.
async fn commit(s: &AppState, batch: WriteBatch) -> Result<Json<OffsetResponse>, ApiError> {
    let db = s.db.clone();
    let offset = blocking(move || db.write(batch)).await?;
    Ok(Json(OffsetResponse { offset }))
}

/// Refuses a batch of more than `batch_keys_max` `what` (keys, items).
fn check_batch_len(s: &AppState, n: usize, what: &str) -> Result<(), ApiError> {
    let max = s.limits.batch_keys_max;
    if n > max {
        return Err(ApiError::of(
            ErrorCode::TooManyKeys,
            format!("{n} {what}, more than batch_keys_max ({max})"),
        ));
    }
    Ok(())
}

/// Many keys against one consistent view.
#[utoipa::path(post, path = "/v1/kv/batch_get", tag = "kv", request_body = KeysRequest,
    responses((status = 200, body = BatchGetResponse), (status = 400, body = ErrorBody),
        (status = 404, description = "no such keyspace", body = ErrorBody)))]
pub async fn batch_get(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<KeysRequest>,
) -> Result<Response, ApiError> {
    check_batch_len(&s, req.keys.len(), "keys")?;
    let values = keyspace(&s, req.keyspace.as_deref())?.multi_get(&req.keys)?;
    // Values are zero-copy views until they are written out: check the answer's size first.
    let value_bytes: usize = values.iter().flatten().map(|v| v.len()).sum();
    let cap = s.limits.response_bytes_max;
    if value_bytes > cap {
        return Err(ApiError::of(ErrorCode::ResponseTooLarge,
            format!("the values of these keys total {value_bytes} bytes, more than response_bytes_max ({cap}); ask for fewer keys"),
        ));
    }
    let found = values.iter().filter(|v| v.is_some()).count();
    let rows = req.keys.iter().copied().zip(values).collect();
    Ok(items_json(rows, format!("\"found\":{found}")))
}

/// Answers of at most this many value bytes are encoded at once (with a content length); larger
/// ones are streamed in pieces of about this size, each encoded on the blocking pool, so one answer
/// holds about two pieces however large it is and a client that stops reading holds no more.
const STREAM_PIECE_BYTES: usize = 256 << 10;

/// Appends one [`Item`] (`{"key":k,"value":…}`, `value_hex` for bytes that are not UTF-8) written
/// straight from the engine's value: no `String` per item (the batch benchmark's hot path).
fn write_item(out: &mut Vec<u8>, key: u64, v: Option<&[u8]>) {
    use std::io::Write as _;
    // Writes into a Vec cannot fail.
    let _ = write!(out, "{{\"key\":{key},\"value\":");
    match v.map(|b| (b, std::str::from_utf8(b))) {
        None => out.extend_from_slice(b"null"),
        Some((_, Ok(text))) => {
            let _ = serde_json::to_writer(&mut *out, text);
        }
        Some((b, Err(_))) => {
            let _ = write!(out, "null,\"value_hex\":\"{}\"", hex(b));
        }
    }
    out.push(b'}');
}

/// Items `(position in the answer, key, value)`, comma-separated.
fn write_items<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = (usize, u64, Option<&'a [u8]>)>) {
    for (i, k, v) in items {
        if i > 0 {
            out.push(b',');
        }
        write_item(out, k, v);
    }
}

/// `{"items":[` + the rows as items + `],` + `tail` + `}`: the [`BatchGetResponse`] and
/// [`ScanResponse`] forms (tests check them against serde's). Small answers are one buffer; large
/// ones stream (see [`STREAM_PIECE_BYTES`]).
fn items_json(rows: Vec<(u64, Option<Value>)>, tail: String) -> Response {
    let value_bytes: usize = rows
        .iter()
        .filter_map(|r| r.1.as_ref())
        .map(|v| v.len())
        .sum();
    let head = b"{\"items\":[".as_slice();
    let end = format!("],{tail}}}").into_bytes();
    let mut resp = if value_bytes <= STREAM_PIECE_BYTES {
        let mut out = Vec::with_capacity(32 + rows.len() * 32 + value_bytes + value_bytes / 8);
        out.extend_from_slice(head);
        write_items(
            &mut out,
            rows.iter()
                .enumerate()
                .map(|(i, (k, v))| (i, *k, v.as_deref())),
        );
        out.extend_from_slice(&end);
        out.into_response()
    } else {
        let (mut tx, body) =
            http_body_util::channel::Channel::<bytes::Bytes, std::io::Error>::new(1);
        tokio::spawn(async move {
            let mut rows = rows.into_iter().enumerate().peekable();
            if tx
                .send_data(bytes::Bytes::from_static(b"{\"items\":["))
                .await
                .is_err()
            {
                return;
            }
            while rows.peek().is_some() {
                let mut piece = Vec::new();
                let mut bytes = 0;
                while bytes < STREAM_PIECE_BYTES {
                    let Some(r) = rows.next() else { break };
                    bytes += r.1 .1.as_ref().map_or(0, |v| v.len()) + 32;
                    piece.push(r);
                }
                let encoded = tokio::task::spawn_blocking(move || {
                    let mut out = Vec::with_capacity(bytes + bytes / 8);
                    write_items(
                        &mut out,
                        piece.iter().map(|(i, (k, v))| (*i, *k, v.as_deref())),
                    );
                    out
                })
                .await;
                // The encoder failed: the answer is aborted (HTTP/1.1: the connection is cut
                // before the last chunk; HTTP/2: the stream is reset), never ended as if whole.
                let encoded = match encoded {
                    Ok(e) => e,
                    Err(e) => {
                        tx.abort(std::io::Error::other(format!("encoding the answer: {e}")));
                        return;
                    }
                };
                // The client went away (the body was dropped): stop.
                if tx.send_data(encoded.into()).await.is_err() {
                    return;
                }
            }
            let _ = tx.send_data(end.into()).await;
        });
        axum::body::Body::new(body).into_response()
    };
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Writes many values atomically (used by `kyrodb import`); each item's value is UTF-8 text (`value`)
/// or base64 (`value_b64`). A bad item refuses the whole batch with a message that starts `items[i]: `.
#[utoipa::path(post, path = "/v1/kv/batch_put", tag = "kv", request_body = BatchPutRequest,
    responses((status = 200, body = OffsetResponse), (status = 400, body = ErrorBody),
        (status = 404, description = "no such keyspace", body = ErrorBody),
        (status = 409, description = "condition_failed", body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn batch_put(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<BatchPutRequest>,
) -> Result<Json<OffsetResponse>, ApiError> {
    check_batch_len(&s, req.items.len(), "items")?;
    let mut batch = WriteBatch::new();
    for (i, Object(it)) in req.items.iter().enumerate() {
        it.add_to(&s, &mut batch).map_err(|mut e| {
            e.message = format!("items[{i}]: {}", e.message);
            e
        })?;
    }
    commit(&s, batch).await
}

/// Live keys in `[start, end)`, ascending.
#[utoipa::path(get, path = "/v1/scan", tag = "kv", params(ScanQuery),
    responses((status = 200, body = ScanResponse), (status = 400, body = ErrorBody),
        (status = 404, description = "no such keyspace", body = ErrorBody)))]
pub async fn scan(
    State(s): State<AppState>,
    QueryOf(q): QueryOf<ScanQuery>,
) -> Result<Response, ApiError> {
    let start = q.start.unwrap_or(0);
    let limit = q.limit.unwrap_or(SCAN_LIMIT_DEFAULT);
    let max = s.limits.scan_limit_max;
    if limit == 0 || limit > max {
        return Err(ApiError::of(
            ErrorCode::InvalidQuery,
            format!("limit {limit} is outside 1..={max}"),
        ));
    }
    let ks = keyspace(&s, q.keyspace.as_deref())?;
    if q.end.is_some_and(|end| end <= start) {
        // [start, end) is empty: an empty page, as for any range that holds no key.
        return Ok(items_json(Vec::new(), "\"next_start\":null".into()));
    }
    // One extra row tells whether there is a next page without a second lookup. The rows are
    // zero-copy views of one point in time; the scan runs off the async workers.
    let end = q.end;
    let rows = tokio::task::spawn_blocking(move || match end {
        Some(end) => ks.scan(start..end, limit + 1),
        None => ks.scan(start.., limit + 1),
    })
    .await
    .map_err(|e| ApiError::internal(format!("scan task: {e}")))??;
    // A page ends at `limit` rows or once its values reach response_bytes_max (always at least one
    // row, so paging makes progress); `next_start` continues from the first row left out.
    let cap = s.limits.response_bytes_max;
    let mut bytes = 0usize;
    let shown = rows
        .iter()
        .take(limit)
        .position(|(_, v)| {
            bytes += v.len();
            bytes > cap
        })
        .map_or(rows.len().min(limit), |at| at.max(1));
    let next_start = rows.get(shown).map(|(k, _)| *k);
    let rows = rows
        .into_iter()
        .take(shown)
        .map(|(k, v)| (k, Some(v)))
        .collect();
    let next = next_start.map_or("null".to_owned(), |k| k.to_string());
    Ok(items_json(rows, format!("\"next_start\":{next}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// Small answers (one buffer) and large ones (streamed in pieces) are serde's form exactly.
    #[tokio::test]
    async fn hand_written_item_json_matches_serde_whole_and_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let db = kyrodb_storage::Db::open(dir.path(), Default::default()).unwrap();
        db.put(1, b"plain \"quoted\" \\ \n").unwrap();
        db.put(2, &[0xff, 0x00]).unwrap();
        let big = "é".repeat(100_000);
        for k in 10..20 {
            db.put(k, big.as_bytes()).unwrap();
        }
        for keys in [vec![1, 2, 3, 1], (0..25).collect::<Vec<u64>>()] {
            let values = db.multi_get(&keys).unwrap();
            let items: Vec<Item> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| item(*k, v.as_deref()))
                .collect();
            let found = values.iter().filter(|v| v.is_some()).count();
            let rows: Vec<_> = keys.iter().copied().zip(values).collect();
            let streamed = rows
                .iter()
                .filter_map(|r| r.1.as_ref())
                .map(|v| v.len())
                .sum::<usize>()
                > STREAM_PIECE_BYTES;
            let r = items_json(rows, format!("\"found\":{found}"));
            use axum::body::HttpBody as _;
            assert_eq!(r.body().size_hint().exact().is_none(), streamed);
            let want = serde_json::to_string(&BatchGetResponse { items, found }).unwrap();
            assert_eq!(body_of(r).await, want);
        }
        let r = items_json(Vec::new(), "\"next_start\":null".into());
        let want = serde_json::to_string(&ScanResponse {
            items: Vec::new(),
            next_start: None,
        })
        .unwrap();
        assert_eq!(body_of(r).await, want);
    }

    #[test]
    fn binary_values_come_as_hex() {
        let it = item(7, Some(&[0xff, 0x00, 0x41]));
        assert_eq!((it.value, it.value_hex.as_deref()), (None, Some("ff0041")));
        assert_eq!(item(7, Some(b"hi")).value.as_deref(), Some("hi"));
        assert!(item(7, None).value.is_none());
    }
}

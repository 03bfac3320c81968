//! Scoped API keys (`crate::keys`) and the audit log (`crate::audit`): admin routes that act on the
//! whole node.

use crate::error::ErrorCode;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    extract::{JsonBody, QueryOf},
    AppState,
};
use crate::{
    audit::Entry,
    error::{ApiError, ErrorBody},
    keys::{CreatedKey, KeyInfo, NewKey, PendingNode},
};

/// The answer to `GET /v1/keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// Every key made with `POST /v1/keys`.
    pub keys: Vec<KeyInfo>,
}

/// The answer to `DELETE /v1/keys/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedKey {
    /// The id of the key revoked.
    pub deleted: String,
    /// In a cluster, the members that had not applied the revocation when the answer was sent
    /// (down or cut off; each refuses the key as soon as it catches up). Empty: every node refuses
    /// the key from now on.
    pub pending_nodes: Vec<PendingNode>,
}

/// In a cluster: waits (up to the cluster timeout) until every member has applied this node's
/// writes so far — the key change just made — so that it holds on every node when answered.
/// The members that had not.
async fn on_every_node(s: &AppState) -> Vec<PendingNode> {
    let Some(c) = &s.cluster else {
        return Vec::new();
    };
    let pending = c.await_applied_everywhere(c.applied_index()).await;
    if !pending.is_empty() {
        tracing::warn!(?pending, "a key change is not yet applied on every member");
    }
    pending
        .into_iter()
        .map(|(node_id, reason)| PendingNode { node_id, reason })
        .collect()
}

/// Runs key-store work on the blocking pool (it reads and writes the engine).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("key task failed: {e}")))?
}

fn store(s: &AppState) -> Result<crate::keys::KeyStore, ApiError> {
    match s.auth.store() {
        Some(st) if s.auth.enabled() => Ok(st.clone()),
        _ => Err(ApiError::of(
            ErrorCode::AuthNotEnabled,
            "this server has no keys (KYRODB_API_KEYS), so every request may do everything and a \
             scoped key would limit nobody: configure an admin key first",
        )),
    }
}

/// Creates a key: a role, the collections and keyspaces it reaches (names or globs; `["*"]` for
/// all), optionally a tenant and quotas. The answer holds the token, this once: only its SHA-256 is
/// kept (durably through the engine; replicated in a cluster). Scoped keys cannot use the routes
/// that act on the whole node (snapshots, the cluster, keys, the audit log, `/metrics`).
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = NewKey,
    responses((status = 201, body = CreatedKey),
        (status = 400, description = "invalid_api_key", body = ErrorBody),
        (status = 409, description = "auth_not_enabled (the server has no KYRODB_API_KEYS); too_many_api_keys", body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let st = store(&s)?;
    let mut created = blocking(move || st.create(req)).await?;
    created.pending_nodes = on_every_node(&s).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Every key made with `POST /v1/keys`, without secrets (keys from `KYRODB_API_KEYS` are not
/// listed).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = KeyList)))]
pub async fn list(State(s): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let Some(st) = s.auth.store().cloned() else {
        return Ok(Json(KeyList { keys: Vec::new() }));
    };
    Ok(Json(KeyList {
        keys: blocking(move || st.list()).await?,
    }))
}

/// Revokes a key. In a cluster the answer waits (up to the cluster timeout) until every member has
/// applied the revocation, so the key is refused on every node from then on; `pending_nodes` names
/// members that had not (down or cut off: each refuses the key once it catches up, and until then
/// answers it only with `?consistency=stale` reads — other requests wait for a quorum read point and
/// check the key again there).
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{16}$")),
    responses((status = 200, body = DeletedKey),
        (status = 400, description = "invalid_api_key_id", body = ErrorBody),
        (status = 404, description = "api_key_not_found", body = ErrorBody),
        (status = 409, description = "auth_not_enabled", body = ErrorBody)))]
pub async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeletedKey>, ApiError> {
    let st = store(&s)?;
    let i = id.clone();
    blocking(move || st.delete(&i)).await?;
    Ok(Json(DeletedKey {
        deleted: id.to_ascii_lowercase(),
        pending_nodes: on_every_node(&s).await,
    }))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries at or after this Unix millisecond.
    pub since_ms: Option<i64>,
    /// At most this many (the newest), 1..=1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// The answer to `GET /v1/audit`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    /// Oldest first.
    pub entries: Vec<Entry>,
}

/// Most entries in one answer.
const AUDIT_LIMIT_MAX: usize = 1000;

/// The newest entries of this node's audit log: every admin action, who made it, when, from where,
/// and its outcome (refused attempts included).
#[utoipa::path(get, path = "/v1/audit", tag = "keys", params(AuditQuery),
    responses((status = 200, body = AuditLog), (status = 400, body = ErrorBody)))]
pub async fn audit(
    State(s): State<AppState>,
    QueryOf(q): QueryOf<AuditQuery>,
) -> Result<Json<AuditLog>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > AUDIT_LIMIT_MAX {
        return Err(ApiError::of(
            ErrorCode::InvalidQuery,
            format!("limit {limit} is outside 1..={AUDIT_LIMIT_MAX}"),
        ));
    }
    let a = s.audit.clone();
    let since = q.since_ms.unwrap_or(i64::MIN);
    let entries = blocking(move || {
        a.read(since, limit)
            .map_err(|e| ApiError::internal(format!("reading the audit log: {e}")))
    })
    .await?;
    Ok(Json(AuditLog { entries }))
}

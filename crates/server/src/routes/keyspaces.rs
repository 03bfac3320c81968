//! Keyspaces: list them with their exact key counts, create one, read one's count, drop one.

use crate::error::ErrorCode;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    extract::JsonBody,
    kv::{blocking, keyspace},
    AppState,
};
use crate::error::{ApiError, ErrorBody};

/// A keyspace and its size.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyspaceInfo {
    /// The keyspace's name.
    pub name: String,
    /// Live keys (exact; expired keys are not counted).
    pub keys: u64,
}

/// The answer to `GET /v1/keyspaces`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyspaceList {
    /// Every keyspace the caller may use, except the reserved ones (starting with `_`).
    pub keyspaces: Vec<KeyspaceInfo>,
}

/// The answer to `DELETE /v1/keyspaces/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DroppedKeyspace {
    /// The name of the keyspace dropped.
    pub dropped: String,
}

/// `POST /v1/keyspaces`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyspace {
    /// 1 to 64 characters from A-Z a-z 0-9 _ . -, not starting with _ (reserved for collections)
    #[schema(pattern = "^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")]
    pub name: String,
}

/// Every keyspace with its live-key count (those starting with `_` hold collections and are not listed).
#[utoipa::path(get, path = "/v1/keyspaces", tag = "kv",
    responses((status = 200, body = KeyspaceList)))]
pub async fn list(State(s): State<AppState>) -> Result<Json<KeyspaceList>, ApiError> {
    let mut keyspaces = Vec::new();
    let who = crate::keys::current();
    // Reserved keyspaces (collections' documents and catalog) are the server's own: /v2 shows them.
    // A scoped key sees the keyspaces it reaches.
    for name in
        s.db.keyspace_names()
            .into_iter()
            .filter(|n| !n.starts_with('_') && who.as_ref().is_none_or(|p| p.may_keyspace(n)))
    {
        let ks = s.db.keyspace(&name)?;
        keyspaces.push(KeyspaceInfo {
            keys: ks.count(),
            name,
        });
    }
    Ok(Json(KeyspaceList { keyspaces }))
}

/// Creates a keyspace (durably, through the WAL): 201 when created, 200 when it already existed.
#[utoipa::path(post, path = "/v1/keyspaces", tag = "kv", request_body = CreateKeyspace,
    responses((status = 201, body = KeyspaceInfo), (status = 200, body = KeyspaceInfo),
        (status = 400, body = ErrorBody),
        (status = 409, description = "keyspaces_max reached", body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<CreateKeyspace>,
) -> Result<Response, ApiError> {
    kyrodb_storage::validate_keyspace_name(&req.name)?;
    super::kv::reserved(&req.name)?;
    crate::keys::check_keyspace(&req.name)?;
    let existed = s.db.keyspace(&req.name).is_ok();
    let db = s.db.clone();
    let name = req.name.clone();
    let ks = blocking(move || db.create_keyspace(&name)).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(KeyspaceInfo {
            keys: ks.count(),
            name: req.name,
        }),
    )
        .into_response())
}

/// One keyspace's live-key count; 404 when it does not exist.
#[utoipa::path(get, path = "/v1/keyspaces/{name}", tag = "kv",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")),
    responses((status = 200, body = KeyspaceInfo), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<KeyspaceInfo>, ApiError> {
    let ks = keyspace(&s, Some(&name))?;
    Ok(Json(KeyspaceInfo {
        keys: ks.count(),
        name,
    }))
}

/// Drops a keyspace, durably (through the WAL): its keys are gone, its name is free and it no longer
/// counts against `keyspaces_max`; a keyspace created again under the name starts empty. Writes to
/// it already under way finish first; later ones get 404. `default` and the reserved keyspaces (names
/// starting with `_`: collections' documents, their catalog, the cluster's state) cannot be dropped.
#[utoipa::path(delete, path = "/v1/keyspaces/{name}", tag = "kv",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9.-][A-Za-z0-9_.-]{0,63}$")),
    responses((status = 200, body = DroppedKeyspace),
        (status = 400, description = "invalid_keyspace_name; reserved_keyspace (`default`, or a name \
            starting with `_`)", body = ErrorBody),
        (status = 404, description = "no_such_keyspace", body = ErrorBody)))]
pub async fn drop(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DroppedKeyspace>, ApiError> {
    kyrodb_storage::validate_keyspace_name(&name)?;
    super::kv::reserved(&name)?;
    crate::keys::check_keyspace(&name)?;
    if name == kyrodb_storage::DEFAULT_KEYSPACE {
        return Err(ApiError::of(
            ErrorCode::ReservedKeyspace,
            "keyspace \"default\" cannot be dropped: every database has it \
             (delete its keys with /v1/kv/delete_range)",
        ));
    }
    let db = s.db.clone();
    let n = name.clone();
    blocking(move || db.drop_keyspace(&n)).await?;
    Ok(Json(DroppedKeyspace { dropped: name }))
}

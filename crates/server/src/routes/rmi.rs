//! `POST /v1/rmi/build`: (re)build the learned index over the snapshots.
//!
//! Until the engine exposes a learned-index build of its own, building the index means compacting:
//! `Db::snapshot` rebuilds every snapshot's index through the engine's configured `IndexBuilder`, and
//! the answer reports what `Stats` says about it. Leaves and ε are reported as null until the engine
//! exposes them; only [`rebuild`] changes when it does.

use axum::{extract::State, Json};
use kyrodb_storage::Db;
use serde::Serialize;
use utoipa::ToSchema;

use super::{kv::blocking, AppState};
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct RmiBuildResponse {
    /// The index kind the engine uses (`Stats::index`).
    pub index: String,
    /// Writes up to here are indexed.
    pub covered_seq: u64,
    pub keys: u64,
    pub keyspaces: Vec<KeyspaceIndex>,
    /// Learned-index leaves; null until the engine reports them.
    pub leaves: Option<u64>,
    /// Learned-index error bound ε, in positions; null until the engine reports it.
    pub epsilon: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyspaceIndex {
    pub name: String,
    pub keys: u64,
    pub model_bytes: u64,
}

/// The engine call behind the route; the one place to change when the engine grows an index build.
fn rebuild(db: &Db) -> kyrodb_storage::Result<RmiBuildResponse> {
    let info = db.snapshot()?;
    let st = db.stats();
    let keyspaces = st
        .keyspaces
        .iter()
        .map(|k| KeyspaceIndex {
            name: k.name.clone(),
            keys: k.snapshot_keys,
            model_bytes: k.index_model_bytes as u64,
        })
        .collect();
    Ok(RmiBuildResponse {
        index: st.index.to_owned(),
        covered_seq: info.covered_seq,
        keys: info.keys,
        keyspaces,
        leaves: None,
        epsilon: None,
    })
}

/// Rebuilds the index over everything written so far and reports it.
#[utoipa::path(post, path = "/v1/rmi/build", tag = "admin",
    responses((status = 200, body = RmiBuildResponse), (status = 503, body = ErrorBody)))]
pub async fn build(State(s): State<AppState>) -> Result<Json<RmiBuildResponse>, ApiError> {
    let db = s.db.clone();
    Ok(Json(blocking(move || rebuild(&db)).await?))
}

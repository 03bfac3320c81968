//! `POST /v1/rmi/build`: compact what is in the delta, then rebuild every snapshot's learned index and
//! report its shape (leaves, ε) per keyspace.
//!
//! Compacting first means the index covers every write acknowledged before the request; the rebuild
//! then runs even when compaction had nothing to do, so the route always (re)builds. Readers are not
//! blocked: the engine swaps the new index in atomically.

use axum::{extract::State, Json};
use kyrodb_storage::Db;
use serde::Serialize;
use utoipa::ToSchema;

use super::{kv::blocking, AppState};
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct RmiBuildResponse {
    /// The engine's index builder (`learned`, `binary_search`, ...).
    pub index: String,
    /// Every write up to this sequence number is in the indexed snapshots.
    pub covered_seq: u64,
    /// Keys indexed, all keyspaces.
    pub keys: u64,
    /// Leaves of all keyspaces' models.
    pub leaves: u64,
    /// Largest prediction error over all keyspaces, in slots: a lookup reads at most 2ε+1 keys.
    pub epsilon: u32,
    pub build_ms: f64,
    pub keyspaces: Vec<KeyspaceIndex>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyspaceIndex {
    pub name: String,
    /// The index kind of this keyspace's snapshot.
    pub kind: String,
    pub keys: u64,
    pub leaves: u64,
    pub epsilon_max: u32,
    pub epsilon_mean: f64,
    pub model_bytes: u64,
    pub build_ms: f64,
}

/// The engine calls behind the route.
fn rebuild(db: &Db) -> kyrodb_storage::Result<RmiBuildResponse> {
    let info = db.snapshot()?;
    let reports = db.rebuild_index()?;
    let keyspaces: Vec<KeyspaceIndex> = reports
        .iter()
        .map(|r| KeyspaceIndex {
            name: r.keyspace.clone(),
            kind: r.index.kind.to_owned(),
            keys: r.keys,
            leaves: r.index.leaves as u64,
            epsilon_max: r.index.epsilon_max,
            epsilon_mean: r.index.epsilon_mean,
            model_bytes: r.index.model_bytes as u64,
            build_ms: r.build_ms,
        })
        .collect();
    Ok(RmiBuildResponse {
        index: db.stats().index.to_owned(),
        covered_seq: info.covered_seq,
        keys: keyspaces.iter().map(|k| k.keys).sum(),
        leaves: keyspaces.iter().map(|k| k.leaves).sum(),
        epsilon: keyspaces.iter().map(|k| k.epsilon_max).max().unwrap_or(0),
        build_ms: keyspaces.iter().map(|k| k.build_ms).sum(),
        keyspaces,
    })
}

/// Compacts, rebuilds the learned index over everything written so far, and reports it.
#[utoipa::path(post, path = "/v1/rmi/build", tag = "admin",
    responses((status = 200, body = RmiBuildResponse), (status = 503, body = ErrorBody)))]
pub async fn build(State(s): State<AppState>) -> Result<Json<RmiBuildResponse>, ApiError> {
    let db = s.db.clone();
    Ok(Json(blocking(move || rebuild(&db)).await?))
}

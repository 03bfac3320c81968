//! `POST /v1/rmi/build`: compact what is in the delta, then rebuild every snapshot's learned index and
//! report its shape per keyspace: leaves, the configured error bound (`epsilon_bound`) and the error the
//! index measured over its keys (`epsilon_max_measured`, `error_mean_measured`).
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

/// The answer to `POST /v1/rmi/build`.
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
    /// The configured error bound, in slots (the largest over all keyspaces).
    pub epsilon_bound: u32,
    /// Largest prediction error measured over all keyspaces' keys, in slots: a lookup reads at most
    /// `2·epsilon_max_measured + 1` keys.
    pub epsilon_max_measured: u32,
    /// Wall time of all keyspaces' builds, in milliseconds.
    pub build_ms: f64,
    /// Each keyspace's index.
    pub keyspaces: Vec<KeyspaceIndex>,
}

/// One keyspace's rebuilt index.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyspaceIndex {
    /// The keyspace.
    pub name: String,
    /// The index kind of this keyspace's snapshot.
    pub kind: String,
    /// Keys indexed.
    pub keys: u64,
    /// Leaves of the model.
    pub leaves: u64,
    /// The configured error bound, in slots.
    pub epsilon_bound: u32,
    /// Largest prediction error measured over this keyspace's keys, in slots.
    pub epsilon_max_measured: u32,
    /// Mean absolute prediction error measured over this keyspace's keys, in slots.
    pub error_mean_measured: f64,
    /// Bytes the index holds beyond the key array.
    pub model_bytes: u64,
    /// Wall time of the build, persisting included, in milliseconds.
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
            epsilon_bound: r.index.epsilon_bound,
            epsilon_max_measured: r.index.epsilon_max_measured,
            error_mean_measured: r.index.error_mean_measured,
            model_bytes: r.index.model_bytes as u64,
            build_ms: r.build_ms,
        })
        .collect();
    Ok(RmiBuildResponse {
        index: db.stats().index.to_owned(),
        covered_seq: info.covered_seq,
        keys: keyspaces.iter().map(|k| k.keys).sum(),
        leaves: keyspaces.iter().map(|k| k.leaves).sum(),
        epsilon_bound: keyspaces.iter().map(|k| k.epsilon_bound).max().unwrap_or(0),
        epsilon_max_measured: keyspaces
            .iter()
            .map(|k| k.epsilon_max_measured)
            .max()
            .unwrap_or(0),
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

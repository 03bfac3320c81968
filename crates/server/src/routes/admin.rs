//! Admin routes: snapshot and warm-up.

use axum::{extract::State, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::{kv::blocking, AppState};
use crate::error::{ApiError, ErrorBody};

/// The answer to `POST /v1/snapshot`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotResponse {
    /// Every write up to this sequence number is now in snapshot files.
    pub covered_seq: u64,
    /// Generation of the manifest that commits the snapshot.
    pub manifest_generation: u64,
    /// Keys in all keyspaces' snapshots.
    pub keys: u64,
    /// Bytes of all keyspaces' snapshot data files.
    pub data_bytes: u64,
}

/// The answer to `POST /v1/warmup`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WarmupResponse {
    /// Bytes of snapshot files (keys, offsets, values) now resident.
    pub bytes: u64,
    /// 4 KiB pages read to make them so.
    pub pages_touched: u64,
}

/// Compacts everything written so far into snapshots and waits until the manifest covers it.
#[utoipa::path(post, path = "/v1/snapshot", tag = "admin",
    responses((status = 200, body = SnapshotResponse), (status = 503, body = ErrorBody)))]
pub async fn snapshot(State(s): State<AppState>) -> Result<Json<SnapshotResponse>, ApiError> {
    let db = s.db.clone();
    let info = blocking(move || db.snapshot()).await?;
    // Collections' graphs are persisted with every snapshot (a verified cache for the next start).
    let cs = s.collections.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || cs.checkpoint())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        tracing::warn!(%e, "graphs not written with the snapshot; the next start rebuilds them");
    }
    Ok(Json(SnapshotResponse {
        covered_seq: info.covered_seq,
        manifest_generation: info.manifest_generation,
        keys: info.keys,
        data_bytes: info.data_bytes,
    }))
}

/// Reads the snapshot files into memory (readahead, then every page touched), so the first reads do
/// not fault.
#[utoipa::path(post, path = "/v1/warmup", tag = "admin", responses((status = 200, body = WarmupResponse)))]
pub async fn warmup(State(s): State<AppState>) -> Result<Json<WarmupResponse>, ApiError> {
    let db = s.db.clone();
    let w = blocking(move || Ok(db.warm())).await?;
    Ok(Json(WarmupResponse {
        bytes: w.bytes,
        pages_touched: w.pages_touched,
    }))
}

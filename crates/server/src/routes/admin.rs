//! Admin routes: snapshot and warm-up.

use axum::{extract::State, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::{kv::blocking, AppState};
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotResponse {
    /// Every write up to this sequence number is now in snapshot files.
    pub covered_seq: u64,
    pub manifest_generation: u64,
    pub keys: u64,
    pub data_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WarmupResponse {
    /// Snapshot bytes the kernel was asked to read ahead (madvise WILLNEED).
    pub bytes_advised: u64,
    /// The same in 4 KiB pages.
    pub pages_advised: u64,
}

/// Compacts everything written so far into snapshots and waits until the manifest covers it.
#[utoipa::path(post, path = "/v1/snapshot", tag = "admin",
    responses((status = 200, body = SnapshotResponse), (status = 503, body = ErrorBody)))]
pub async fn snapshot(State(s): State<AppState>) -> Result<Json<SnapshotResponse>, ApiError> {
    let db = s.db.clone();
    let info = blocking(move || db.snapshot()).await?;
    Ok(Json(SnapshotResponse {
        covered_seq: info.covered_seq,
        manifest_generation: info.manifest_generation,
        keys: info.keys,
        data_bytes: info.data_bytes,
    }))
}

/// Asks the kernel to read the snapshot files ahead, so the first reads do not fault.
#[utoipa::path(post, path = "/v1/warmup", tag = "admin", responses((status = 200, body = WarmupResponse)))]
pub async fn warmup(State(s): State<AppState>) -> Result<Json<WarmupResponse>, ApiError> {
    let db = s.db.clone();
    let bytes = blocking(move || Ok(db.warm())).await? as u64;
    Ok(Json(WarmupResponse {
        bytes_advised: bytes,
        pages_advised: bytes.div_ceil(4096),
    }))
}

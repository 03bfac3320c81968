//! Operations routes: liveness, readiness, build information, metrics, the OpenAPI document.

use crate::error::ErrorCode;
use std::sync::atomic::Ordering;

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::ApiError;

/// The answer to `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok`.
    pub status: &'static str,
}

/// The answer to `GET /ready` (200 when ready, else 503).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// Whether the engine accepts writes and shutdown has not started.
    pub ready: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// Every write at or below this sequence number is durable and visible.
    pub visible_seq: u64,
    /// `available` or `unavailable` (no model installed: `kyrodb model install`); readiness does not
    /// depend on it.
    pub auto_embed: &'static str,
    /// Why auto_embed is unavailable.
    pub auto_embed_reason: Option<String>,
}

/// The answer to `GET /build_info`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildInfo {
    /// The server's version.
    pub version: &'static str,
    /// The git commit it was built from (`unknown` when that was not known).
    pub git_sha: &'static str,
    /// The `rustc --version` of the compiler that built it.
    pub rustc: &'static str,
    /// The target triple it was built for.
    pub target: &'static str,
    /// The cargo profile it was built with (`release`, `debug`).
    pub profile: &'static str,
    /// CPU features detected at run time that the engine's SIMD paths can use.
    pub cpu_features: Vec<&'static str>,
    /// The engine's index kind.
    pub index: &'static str,
    /// The request limits this server enforces.
    pub limits: super::Limits,
    /// `available` or `unavailable` (no model installed: `kyrodb model install`).
    pub auto_embed: &'static str,
    /// Why auto_embed is unavailable.
    pub auto_embed_reason: Option<String>,
    /// The embedding model, when loaded: name, version, sha256, dim, max_tokens, dir.
    #[schema(value_type = Option<Object>)]
    pub embed_model: Option<serde_json::Value>,
    /// When this server started, in epoch milliseconds.
    pub started_at_ms: i64,
    /// Seconds since it started.
    pub uptime_seconds: f64,
}

/// Liveness: the process answers. Never needs a token.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = HealthResponse)))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok" })
}

/// Readiness: the engine accepts writes and shutdown has not started.
#[utoipa::path(get, path = "/ready", tag = "ops",
    responses((status = 200, body = ReadyResponse), (status = 503, body = ReadyResponse)))]
pub async fn ready(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let st = s.db.stats();
    // Error text names files and directories: only a caller with a token sees it (with auth off,
    // `/v1/stats` and the log have it).
    let detailed = s.auth.enabled()
        && s.auth
            .check(
                headers
                    .get(axum::http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
                crate::auth::Role::Read,
            )
            .is_ok();
    let reason = if s.shutting_down.load(Ordering::Acquire) {
        Some("shutting down".to_owned())
    } else {
        st.writes_stopped.map(|w| {
            if detailed {
                format!("writes stopped: {w}")
            } else {
                "writes stopped after an I/O failure (details: the server log, /v1/stats)"
                    .to_owned()
            }
        })
    };
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(ReadyResponse {
            ready: reason.is_none(),
            reason,
            visible_seq: st.visible_seq,
            auto_embed: s.embed.status(),
            auto_embed_reason: s.embed.reason().map(|r| {
                if detailed {
                    r.to_owned()
                } else {
                    "no embedding model loaded (details: /build_info, the server log)".to_owned()
                }
            }),
        }),
    )
        .into_response()
}

/// Version, git commit, compiler, target, detected CPU features and the request limits.
#[utoipa::path(get, path = "/build_info", tag = "ops", responses((status = 200, body = BuildInfo)))]
pub async fn build_info(State(s): State<AppState>) -> Json<BuildInfo> {
    Json(BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        git_sha: env!("KYRODB_GIT_SHA"),
        rustc: env!("KYRODB_RUSTC_VERSION"),
        target: env!("KYRODB_TARGET"),
        profile: env!("KYRODB_PROFILE"),
        cpu_features: cpu_features(),
        index: s.db.stats().index,
        limits: s.limits,
        auto_embed: s.embed.status(),
        auto_embed_reason: s.embed.reason().map(str::to_owned),
        embed_model: s.embed.info().and_then(|i| serde_json::to_value(i).ok()),
        started_at_ms: s.started_at_ms,
        uptime_seconds: s.started.elapsed().as_secs_f64(),
    })
}

/// Runtime-detected CPU features relevant to the engine's SIMD code.
pub fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($name:tt),*) => { $( if std::arch::is_x86_feature_detected!($name) { f.push($name); } )* };
        }
        detect!("sse2", "sse4.2", "popcnt", "avx", "avx2", "bmi2", "avx512f", "avx512bw");
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            f.push("neon");
        }
    }
    f
}

/// Prometheus text: HTTP, engine and index metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let engine = s.db.stats();
    crate::metrics::record_engine_stats(&engine);
    crate::metrics::record_process_stats(s.started, s.db.path());
    crate::metrics::record_search_stats(&s.collections);
    s.embed.record_stats();
    let mut text = s.metrics.render();
    text.push_str(&crate::metrics::render_keyspace_stats(&engine));
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, body = Object)))]
// A body sent with the GET (a careless client) is read before the ~100 KB answer: a connection closed
// with unread bytes is reset, and the reset can cut the answer the client has not read yet.
pub async fn openapi(State(s): State<AppState>, _unread: axum::body::Bytes) -> Response {
    let mut resp = s.openapi_json.clone().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Any path the router does not know.
pub async fn no_route() -> ApiError {
    ApiError::of(ErrorCode::NoRoute, "no such route; see /openapi.json")
}

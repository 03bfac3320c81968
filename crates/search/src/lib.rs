//! KyroDB collections: documents stored through the storage engine (its WAL, snapshots, recovery),
//! with derived indexes — HNSW per vector field, payload indexes for filters — kept in step through
//! the engine's applier seam. See docs/design/search.md.
// fjall's lints: no `unwrap` outside tests (use `expect` naming the invariant), and every
// public item documented.
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]
#![warn(missing_debug_implementations)]
// `unsafe` lives only in `distance::simd` (the SIMD kernels), which allows it.
#![deny(unsafe_code)]

mod cancel;
mod checkpoint;
mod collection;
pub mod distance;
pub mod doc;
mod env;
mod error;
pub mod families;
pub mod filter;
pub mod hnsw;
pub mod hybrid;
mod job;
mod manager;
pub mod payload;
pub mod query;
pub mod rank;
pub mod reembed;
pub mod schema;
pub mod tenant;
pub mod text;
pub mod timeindex;
pub mod wire;

pub use cancel::{Cancel, CancelOnDrop};
pub use collection::{Collection, CollectionInfo, TenantsInfo, VectorIndexInfo};
pub use doc::Document;
pub use env::{default_index_threads, SearchOptions};
pub use error::{Error, Result};
pub use filter::Filter;
pub use hybrid::HybridRequest;
pub use manager::{
    CollectionStats, Collections, FieldStats, CATALOG_KEYSPACE, COLLECTION_KEYSPACE_PREFIX,
    FEEDBACK_KEYSPACE_PREFIX,
};
pub use query::{Hit, SearchRequest, SearchResponse};
pub use reembed::{EmbedFailure, EmbedFn, JobState, ReembedJob};
pub use schema::{EmbedSpec, Schema, VectorSpec};
pub use tenant::Tenant;

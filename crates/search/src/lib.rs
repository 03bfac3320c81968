//! KyroDB collections: documents stored through the storage engine (its WAL, snapshots, recovery),
//! with derived indexes — HNSW per vector field, payload indexes for filters — kept in step through
//! the engine's applier seam. See docs/design/search.md.
#![warn(missing_debug_implementations)]

pub mod distance;
pub mod hnsw;

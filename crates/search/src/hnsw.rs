//! The HNSW graph.

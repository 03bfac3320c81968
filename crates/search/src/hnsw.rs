//! The HNSW graph.
#![deny(unsafe_code)]

//! KyroDB's learned index: an error-bounded piecewise-linear model over a sorted, deduplicated `u64`
//! key array.
//!
//! - [`Rmi::build`] segments the keys into linear leaves whose error is at most
//!   [`RmiConfig::epsilon_max_slots`] *by construction* (measured with the lookup arithmetic), and builds
//!   a radix router over the leaves' first keys that adapts to clusters and outliers.
//! - [`Rmi::find`] / [`Rmi::lower_bound`] take the key slice (the index does not own it), route, predict,
//!   and search only the `2·ε + 1` keys of the window, with a runtime-chosen SIMD kernel.
//! - [`Rmi::find_batch`] / [`Rmi::lower_bound_batch`] pipeline groups of lookups with prefetching.
//! - [`Rmi::save`] / [`RmiFile::open`] write and validate the checksummed file format.
//! - [`RmiHandle`] swaps in background rebuilds behind an `ArcSwap`.
//!
//! Design, byte layout and the ε and crash arguments: `docs/design/rmi.md`.
// fjall's lints: no `unwrap` outside tests (use `expect` naming the invariant), and every
// public item documented.
#![deny(clippy::unwrap_used)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod config;
mod error;
mod file;
mod handle;
pub mod metrics;
mod model;
mod router;
pub mod search;
mod segment;
mod shape;
mod tree;

pub use batch::BATCH_GROUP_QUERIES;
pub use config::{RmiConfig, EPSILON_SLOTS_LIMIT};
pub use error::{Result, RmiError};
pub use file::{
    checksum, RmiFile, FLAG_BINARY, FLAG_KEYS, FLAG_TREE, HEADER_BYTES, MAGIC, TRAILER_BYTES,
    VERSION,
};
pub use handle::{KeyedRmi, RmiHandle};
pub use metrics::PROBE_SAMPLES_MAX;
pub use model::{check_sorted_unique, BuildStats, Rmi};
pub use router::{BUCKET_LEAVES_MAX, DEPTH_MAX, TABLE_BITS_MAX};
pub use search::Kernel;
pub use shape::{Shape, MODEL_BYTES_PER_KEY_MAX, SAMPLE_QUERIES, TREE_BLOCK_CANDIDATES};
pub use tree::NODE_KEYS;

//! Choosing the index's shape from the data at build time.
//!
//! Candidates: the learned model at up to three error bounds (`ε_max`, `ε_max / 2`, `ε_max / 4`), the
//! model-free search tree with blocks of 16, 32 or 64 keys, and plain binary search — the last two only
//! where a lookup still reads at most `2·ε_max + 1` keys (block, or `⌈log2(n + 1)⌉` probes).
//! Each candidate is built over the keys, then its lookup cost is *measured on a sample* of
//! [`SAMPLE_QUERIES`] queries (evenly spaced keys and the gaps after them): how many router tables, leaf
//! records, tree nodes and window keys each query touches, and which structure they live in. Each access
//! is priced by the size of the structure it reads ([`access_ns`]: a structure that fits in L1, L2 or L3
//! costs that cache's latency, a larger one a DRAM miss), plus a fixed compute cost per step. The
//! cheapest candidate whose model takes at most [`MODEL_BYTES_PER_KEY_MAX`] bytes per key wins (the
//! smallest model if none does). The choice is deterministic: the same keys and configuration always
//! give the same shape, byte for byte, whatever the machine's load.

use crate::tree::{SearchTree, NODE_KEYS};

/// Keys per leaf block of the search-tree candidates: 16, 32 or 64 keys (2, 4 or 8 cache lines and
/// AVX-512 compares; 0.53, 0.27 or 0.14 model bytes per key).
pub const TREE_BLOCK_CANDIDATES: [usize; 3] = [16, 32, 64];
/// Model budget: a candidate above this many bytes per key is taken only when none is below.
pub const MODEL_BYTES_PER_KEY_MAX: f64 = 1.0;
/// Queries the cost of each candidate is measured on (half keys, half gaps).
pub const SAMPLE_QUERIES: usize = 2048;

/// The layout an index was built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Error-bounded linear leaves behind a radix router; every key within `epsilon_max` slots of its
    /// prediction.
    Learned {
        /// The error bound the leaves were fitted to.
        epsilon_max: u32,
    },
    /// No model: a static search tree over every `block_keys`-th key, 16 separators a node.
    SearchTree {
        /// Keys per leaf block of the key array.
        block_keys: u32,
    },
    /// No model at all: branchless binary search over the keys (`slice::binary_search`), for sets so
    /// small that any structure costs more than it saves.
    BinarySearch,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Learned { epsilon_max } => write!(f, "learned(eps={epsilon_max})"),
            Shape::SearchTree { block_keys } => write!(f, "search_tree(block={block_keys})"),
            Shape::BinarySearch => write!(f, "binary_search"),
        }
    }
}

/// Cache sizes the cost model prices accesses by (a structure that fits is assumed resident when
/// lookups are frequent). Conservative for current x86 and ARM server cores.
const L1_BYTES: usize = 32 << 10;
const L2_BYTES: usize = 1 << 20;
const L3_BYTES: usize = 16 << 20;

/// Cost of one dependent read from a randomly accessed structure of `bytes` bytes, in nanoseconds, as
/// it shows in a stream of independent lookups (out-of-order execution overlaps part of each miss).
/// Fitted to bench/index on the 2-core AVX-512 VM (docs/design/rmi.md, "Choosing the shape").
pub(crate) fn access_ns(bytes: usize) -> f64 {
    if bytes <= L1_BYTES {
        0.6
    } else if bytes <= L2_BYTES {
        1.2
    } else if bytes <= L3_BYTES {
        12.0
    } else {
        40.0
    }
}

/// Compute per binary-search step (compare, conditional move), per radix-table step, per leaf
/// prediction (u64→f64, multiply, round, clamp, window bounds: a long dependent chain that holds up
/// the lookups queued behind it, which is why it weighs as much as an L3 miss), per tree node (two
/// 8-key compares, mask to popcount), per key-block or window count.
const BINARY_STEP_NS: f64 = 0.2;
pub(crate) const ROUTE_STEP_NS: f64 = 2.0;
pub(crate) const PREDICT_NS: f64 = 19.0;
const NODE_STEP_NS: f64 = 4.5;
const COUNT_NS: f64 = 2.0;

/// Cost of counting a window of `keys` keys once its first line is loaded: per line a compare and,
/// out of cache, the extra lines' misses (they overlap, so a fraction of a miss each).
pub(crate) fn window_ns(keys: usize, array_bytes: usize) -> f64 {
    let lines = keys.div_ceil(8).max(1) as f64;
    let extra_line = if array_bytes > L3_BYTES { 4.0 } else { 0.3 };
    if keys > crate::search::LINEAR_WINDOW_SLOTS_MAX {
        // Branchless binary search: every step a dependent read.
        return (keys as f64).log2().ceil() * (COUNT_NS + access_ns(array_bytes).min(12.0));
    }
    COUNT_NS + lines * 0.8 + (lines - 1.0) * extra_line
}

/// Estimated nanoseconds per lookup of plain binary search over `n` keys: step `i` picks among `2^i`
/// midpoints, each on its own cache line, so the first steps hit a small hot set and the last ones
/// the whole array.
pub(crate) fn binary_cost(n: usize) -> f64 {
    let steps = binary_search_reads(n);
    (1..=steps)
        .map(|i| {
            let touched = (1usize << i.min(40)).saturating_mul(64).min(n * 8);
            BINARY_STEP_NS + access_ns(touched)
        })
        .sum()
}

/// Sample queries: evenly spaced keys and the gap after each.
pub(crate) fn sample_queries(keys: &[u64]) -> Vec<u64> {
    if keys.is_empty() {
        return Vec::new();
    }
    let half = SAMPLE_QUERIES / 2;
    let step = (keys.len() / half).max(1);
    keys.iter()
        .step_by(step)
        .flat_map(|&k| [k, k.wrapping_add(1)])
        .collect()
}

/// Estimated nanoseconds per lookup of the search tree over `key_count` keys. Every lookup reads one
/// node per level and one block, whatever the key, so no sample is needed.
pub(crate) fn tree_cost(tree: &SearchTree, key_count: usize) -> f64 {
    let array_bytes = key_count * 8;
    let levels: f64 = tree
        .levels
        .iter()
        .map(|l| access_ns(l.count * NODE_KEYS * 8) + NODE_STEP_NS)
        .sum();
    levels + access_ns(array_bytes) + window_ns(tree.block_keys.min(key_count), array_bytes)
}

/// Key arrays larger than this (the last-level cache the model assumes) have their shape chosen by
/// timing the candidates rather than by the cost model.
pub(crate) const MEASURE_ABOVE_BYTES: usize = L3_BYTES;
/// Timed lookups per candidate and round, and rounds (each candidate's best round counts).
const MEASURE_QUERIES: usize = 4096;
const MEASURE_ROUNDS: usize = 3;

/// Mean nanoseconds per `lower_bound` of each index over `keys`, in the order given. Each round draws
/// fresh pseudo-random queries (present keys and the gaps after them, spread over the whole array, so
/// the array reads miss as they do in service while the small upper levels stay warm), and times every
/// candidate on the same queries, interleaved so that machine noise falls on all of them alike.
pub(crate) fn measure<'a, T: LowerBound + 'a>(
    keys: &[u64],
    indexes: impl Iterator<Item = &'a T>,
) -> Vec<f64> {
    let indexes: Vec<&T> = indexes.collect();
    let mut best = vec![f64::INFINITY; indexes.len()];
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ keys.len() as u64;
    let mut next = move || {
        // splitmix64: a fixed sequence, so the same keys get the same queries.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for _ in 0..MEASURE_ROUNDS {
        let queries: Vec<u64> = (0..MEASURE_QUERIES)
            .map(|_| {
                let r = next();
                let k = keys[(r % keys.len() as u64) as usize];
                if r & (1 << 63) != 0 {
                    k.wrapping_add(1)
                } else {
                    k
                }
            })
            .collect();
        for (i, rmi) in indexes.iter().enumerate() {
            let started = std::time::Instant::now();
            let mut sum = 0usize;
            for &q in &queries {
                sum = sum.wrapping_add(rmi.lower_bound(keys, std::hint::black_box(q)));
            }
            std::hint::black_box(sum);
            let ns = started.elapsed().as_nanos() as f64 / queries.len() as f64;
            best[i] = best[i].min(ns);
        }
    }
    best
}

/// What [`measure`] times: a `lower_bound` over the key array (the built index).
pub(crate) trait LowerBound {
    /// The position of the first key ≥ `key` in `keys`.
    fn lower_bound(&self, keys: &[u64], key: u64) -> usize;
}

/// Keys binary search reads in a lookup over `n` keys: `⌈log2(n + 1)⌉`.
pub(crate) fn binary_search_reads(n: usize) -> usize {
    (usize::BITS - n.leading_zeros()) as usize
}

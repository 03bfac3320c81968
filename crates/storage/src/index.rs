//! The seam the learned index plugs into: every snapshot's sorted key array is searched through a
//! [`SortedIndex`] built by the configured [`IndexBuilder`]. Binary search serves until a better index
//! is configured.

use std::sync::Arc;

/// A search structure over one snapshot's sorted, deduplicated keys. It does not own the keys: the
/// snapshot keeps them in its mmap'd file and passes the same slice the index was built from.
pub trait SortedIndex: Send + Sync {
    /// Position of `key` in `keys`, if present.
    fn find(&self, keys: &[u64], key: u64) -> Option<usize>;
    /// The first position whose key is `>= key` (`keys.len()` when none is).
    fn lower_bound(&self, keys: &[u64], key: u64) -> usize;
    /// Bytes the index holds beyond the key array.
    fn model_bytes(&self) -> usize {
        0
    }
}

/// Builds a [`SortedIndex`] for a snapshot's keys.
pub trait IndexBuilder: Send + Sync {
    /// Builds over sorted, deduplicated keys.
    fn build(&self, keys: &[u64]) -> Arc<dyn SortedIndex>;
    /// A short name for stats and logs.
    fn name(&self) -> &'static str;
}

/// Plain binary search: O(log n), no model.
#[derive(Debug, Default, Clone, Copy)]
pub struct BinarySearch;

impl SortedIndex for BinarySearch {
    fn find(&self, keys: &[u64], key: u64) -> Option<usize> {
        keys.binary_search(&key).ok()
    }
    fn lower_bound(&self, keys: &[u64], key: u64) -> usize {
        keys.partition_point(|k| *k < key)
    }
}

/// Builds [`BinarySearch`].
#[derive(Debug, Default, Clone, Copy)]
pub struct BinarySearchBuilder;

impl IndexBuilder for BinarySearchBuilder {
    fn build(&self, _keys: &[u64]) -> Arc<dyn SortedIndex> {
        Arc::new(BinarySearch)
    }
    fn name(&self) -> &'static str {
        "binary_search"
    }
}

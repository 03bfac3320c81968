//! The seam the learned index plugs into: every snapshot's sorted key array is searched through a
//! [`SortedIndex`] built by the configured [`IndexBuilder`]. Binary search serves until a better index
//! is configured.

use std::{path::Path, sync::Arc};

use kyrodb_rmi::{Rmi, RmiConfig};

/// A search structure over one snapshot's sorted, deduplicated keys. It does not own the keys: the
/// snapshot keeps them in its mmap'd file and passes the same slice the index was built from.
pub trait SortedIndex: Send + Sync {
    /// Position of `key` in `keys`, if present.
    fn find(&self, keys: &[u64], key: u64) -> Option<usize>;
    /// The first position whose key is `>= key` (`keys.len()` when none is).
    fn lower_bound(&self, keys: &[u64], key: u64) -> usize;
    /// `out[i] = self.find(keys, queries[i])` for many queries at once; an index may overlap their
    /// memory accesses (the learned index prefetches).
    fn find_batch(&self, keys: &[u64], queries: &[u64], out: &mut [Option<usize>]) {
        for (q, o) in queries.iter().zip(out.iter_mut()) {
            *o = self.find(keys, *q);
        }
    }
    /// A cheap guess at `key`'s position (for prefetching the arrays parallel to the keys), if the
    /// index has one.
    fn predict(&self, _key: u64) -> Option<usize> {
        None
    }
    /// What the index is, for stats and `/v1/rmi/build`.
    fn info(&self) -> IndexInfo {
        IndexInfo {
            kind: "binary_search",
            ..IndexInfo::default()
        }
    }
}

/// Shape of one snapshot's index.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IndexInfo {
    pub kind: &'static str,
    pub leaves: usize,
    /// Largest prediction error in slots (a lookup reads at most `2·epsilon_max + 1` keys).
    pub epsilon_max: u32,
    pub epsilon_mean: f64,
    /// Bytes the index holds beyond the key array.
    pub model_bytes: usize,
}

/// Builds a [`SortedIndex`] for a snapshot's keys.
pub trait IndexBuilder: Send + Sync {
    /// Builds over sorted, deduplicated keys.
    fn build(&self, keys: &[u64]) -> Result<Arc<dyn SortedIndex>, String>;
    /// Loads the index persisted at `path` when it verifies against `keys`; otherwise builds it and
    /// persists it there. Returns the index and whether it was (re)built. A missing or corrupt file is
    /// rebuilt, never served.
    fn load_or_build(
        &self,
        keys: &[u64],
        _path: &Path,
    ) -> Result<(Arc<dyn SortedIndex>, bool), String> {
        self.build(keys).map(|i| (i, true))
    }
    /// Builds over `keys` and persists to `path` (atomically), replacing what is there.
    fn rebuild(&self, keys: &[u64], _path: &Path) -> Result<Arc<dyn SortedIndex>, String> {
        self.build(keys)
    }
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
    fn build(&self, _keys: &[u64]) -> Result<Arc<dyn SortedIndex>, String> {
        Ok(Arc::new(BinarySearch))
    }
    fn name(&self) -> &'static str {
        "binary_search"
    }
}

impl SortedIndex for Rmi {
    fn find(&self, keys: &[u64], key: u64) -> Option<usize> {
        Rmi::find(self, keys, key)
    }
    fn lower_bound(&self, keys: &[u64], key: u64) -> usize {
        Rmi::lower_bound(self, keys, key)
    }
    fn find_batch(&self, keys: &[u64], queries: &[u64], out: &mut [Option<usize>]) {
        Rmi::find_batch(self, keys, queries, out)
    }
    fn predict(&self, key: u64) -> Option<usize> {
        Rmi::predict(self, key)
    }
    fn info(&self) -> IndexInfo {
        IndexInfo {
            kind: "rmi",
            leaves: self.leaf_count(),
            epsilon_max: self.epsilon_max(),
            epsilon_mean: self.stats().epsilon_mean_slots,
            model_bytes: self.model_bytes(),
        }
    }
}

/// The learned index (`kyrodb-rmi`), persisted beside each snapshot as `<ks>-<gen>.rmi`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LearnedIndexBuilder {
    pub config: RmiConfig,
}

impl IndexBuilder for LearnedIndexBuilder {
    fn build(&self, keys: &[u64]) -> Result<Arc<dyn SortedIndex>, String> {
        Ok(Arc::new(
            Rmi::build(keys, &self.config).map_err(|e| e.to_string())?,
        ))
    }

    fn load_or_build(
        &self,
        keys: &[u64],
        path: &Path,
    ) -> Result<(Arc<dyn SortedIndex>, bool), String> {
        let (rmi, rebuilt) =
            Rmi::load_or_rebuild(path, keys, &self.config).map_err(|e| e.to_string())?;
        if rebuilt {
            tracing::info!(path = %path.display(), "learned index missing or invalid; rebuilt from the snapshot");
        }
        Ok((Arc::new(rmi), rebuilt))
    }

    fn rebuild(&self, keys: &[u64], path: &Path) -> Result<Arc<dyn SortedIndex>, String> {
        let rmi = Rmi::build(keys, &self.config).map_err(|e| e.to_string())?;
        rmi.verify(keys).map_err(|e| e.to_string())?;
        rmi.save(path, None).map_err(|e| e.to_string())?;
        Ok(Arc::new(rmi))
    }

    fn name(&self) -> &'static str {
        "rmi"
    }
}

//! The seam the learned index plugs into: every snapshot's sorted key array is searched through a
//! [`SortedIndex`] built by the configured [`IndexBuilder`]. Binary search serves until a better index
//! is configured.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use kyrodb_rmi::{Rmi, RmiConfig, RmiError};

/// Why an [`IndexBuilder`] could not build, load or persist an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The builder's configuration is outside its documented range (a caller's mistake, not a failure
    /// of the engine). [`crate::Db::open`] refuses such a builder with [`crate::Error::InvalidOption`].
    #[error("invalid index configuration: {0}")]
    InvalidConfig(String),
    /// Reading or persisting the index file failed.
    #[error("index file {}: {source}", path.display())]
    Io {
        /// The index file (or its directory).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The build itself failed (for example keys that are not sorted and unique). A bug, since
    /// snapshot keys are verified before an index is built over them.
    #[error("index build failed: {0}")]
    Build(String),
}

impl From<RmiError> for IndexError {
    fn from(e: RmiError) -> Self {
        match e {
            RmiError::InvalidConfig(m) => IndexError::InvalidConfig(m),
            RmiError::Io { path, source } => IndexError::Io { path, source },
            other => IndexError::Build(other.to_string()),
        }
    }
}

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

/// Shape of one snapshot's index. Two different numbers are called ε elsewhere; here they have
/// different names: the **bound** the build was asked to guarantee, and the error the index **measured**
/// over the keys it was built for.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IndexInfo {
    /// `"rmi"` or `"binary_search"`.
    pub kind: &'static str,
    /// Leaves (linear models); 0 for binary search.
    pub leaves: usize,
    /// The configured error bound, in slots (`RmiConfig::epsilon_max_slots`): the build guarantees that
    /// every key lies within this many slots of its prediction. 0 for binary search.
    pub epsilon_bound: u32,
    /// The largest prediction error measured over the snapshot's keys, in slots (`<= epsilon_bound`);
    /// a lookup reads at most `2·epsilon_max_measured + 1` keys. 0 for binary search.
    pub epsilon_max_measured: u32,
    /// The mean absolute prediction error measured over the snapshot's keys, in slots. 0 for binary
    /// search.
    pub error_mean_measured: f64,
    /// Bytes the index holds beyond the key array.
    pub model_bytes: usize,
}

/// Builds a [`SortedIndex`] for a snapshot's keys.
pub trait IndexBuilder: Send + Sync {
    /// Builds over sorted, deduplicated keys.
    fn build(&self, keys: &[u64]) -> Result<Arc<dyn SortedIndex>, IndexError>;
    /// Loads the index persisted at `path` when it verifies against `keys`; otherwise builds it and
    /// persists it there. Returns the index and whether it was (re)built. A missing or corrupt file is
    /// rebuilt, never served.
    fn load_or_build(
        &self,
        keys: &[u64],
        _path: &Path,
    ) -> Result<(Arc<dyn SortedIndex>, bool), IndexError> {
        self.build(keys).map(|i| (i, true))
    }
    /// Builds over `keys` and persists to `path` (atomically), replacing what is there.
    fn rebuild(&self, keys: &[u64], _path: &Path) -> Result<Arc<dyn SortedIndex>, IndexError> {
        self.build(keys)
    }
    /// Checks the builder's configuration; [`crate::Db::open`] calls it and refuses an invalid one with
    /// [`crate::Error::InvalidOption`], so a bad configuration fails at open, not at the first build.
    fn validate(&self) -> Result<(), IndexError> {
        Ok(())
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
    fn build(&self, _keys: &[u64]) -> Result<Arc<dyn SortedIndex>, IndexError> {
        Ok(Arc::new(BinarySearch))
    }
    fn name(&self) -> &'static str {
        "binary_search"
    }
}

/// A learned index with the error it measured over its keys. A freshly built `Rmi` carries its build
/// statistics, but one loaded from its file does not (the file holds the model, not the statistics), so
/// the measured numbers are computed here, once, over the keys the index was just verified against:
/// they read the same after a restart as after the build.
struct LearnedIndex {
    rmi: Rmi,
    epsilon_max_measured: u32,
    error_mean_measured: f64,
}

impl LearnedIndex {
    /// Measures `rmi` over `keys` (the keys it was built for and verified against): the largest and
    /// the mean absolute distance between each key's predicted and true position.
    fn measured(rmi: Rmi, keys: &[u64]) -> Self {
        let (mut max, mut sum) = (0u64, 0u64);
        for (i, k) in keys.iter().enumerate() {
            let err = rmi.predict(*k).map_or(0, |p| (p as u64).abs_diff(i as u64));
            max = max.max(err);
            sum += err;
        }
        Self {
            rmi,
            epsilon_max_measured: u32::try_from(max).unwrap_or(u32::MAX),
            error_mean_measured: if keys.is_empty() {
                0.0
            } else {
                sum as f64 / keys.len() as f64
            },
        }
    }
}

impl SortedIndex for LearnedIndex {
    fn find(&self, keys: &[u64], key: u64) -> Option<usize> {
        self.rmi.find(keys, key)
    }
    fn lower_bound(&self, keys: &[u64], key: u64) -> usize {
        self.rmi.lower_bound(keys, key)
    }
    fn find_batch(&self, keys: &[u64], queries: &[u64], out: &mut [Option<usize>]) {
        self.rmi.find_batch(keys, queries, out)
    }
    fn predict(&self, key: u64) -> Option<usize> {
        self.rmi.predict(key)
    }
    fn info(&self) -> IndexInfo {
        IndexInfo {
            kind: "rmi",
            leaves: self.rmi.leaf_count(),
            epsilon_bound: self.rmi.epsilon_max(),
            epsilon_max_measured: self.epsilon_max_measured,
            error_mean_measured: self.error_mean_measured,
            model_bytes: self.rmi.model_bytes(),
        }
    }
}

/// The learned index (`kyrodb-rmi`), persisted beside each snapshot as `<ks>-<gen>.rmi`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LearnedIndexBuilder {
    /// How each index is built (ε bound, router size); checked at open.
    pub config: RmiConfig,
}

impl IndexBuilder for LearnedIndexBuilder {
    fn build(&self, keys: &[u64]) -> Result<Arc<dyn SortedIndex>, IndexError> {
        let rmi = Rmi::build(keys, &self.config)?;
        Ok(Arc::new(LearnedIndex::measured(rmi, keys)))
    }

    fn load_or_build(
        &self,
        keys: &[u64],
        path: &Path,
    ) -> Result<(Arc<dyn SortedIndex>, bool), IndexError> {
        let (rmi, rebuilt) = Rmi::load_or_rebuild(path, keys, &self.config)?;
        if rebuilt {
            tracing::info!(path = %path.display(), "learned index missing or invalid; rebuilt from the snapshot");
        }
        Ok((Arc::new(LearnedIndex::measured(rmi, keys)), rebuilt))
    }

    fn rebuild(&self, keys: &[u64], path: &Path) -> Result<Arc<dyn SortedIndex>, IndexError> {
        let rmi = Rmi::build(keys, &self.config)?;
        rmi.verify(keys)?;
        rmi.save(path, None)?;
        Ok(Arc::new(LearnedIndex::measured(rmi, keys)))
    }

    fn validate(&self) -> Result<(), IndexError> {
        Ok(self.config.validate()?)
    }

    fn name(&self) -> &'static str {
        "rmi"
    }
}

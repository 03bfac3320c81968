//! The learned index: build, lookup and verification.

use std::time::{Duration, Instant};

use crate::config::{RmiConfig, EPSILON_SLOTS_LIMIT};
use crate::error::{Result, RmiError};
use crate::router::Router;
use crate::search::{self, Kernel};
use crate::segment::{self, predict, LeafModel};

/// Numbers describing one build, for metrics, logs and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BuildStats {
    /// Wall time of the build.
    pub build_duration: Duration,
    /// Leaves (linear models).
    pub leaf_count: usize,
    /// Radix tables in the router.
    pub table_count: usize,
    /// Mean of the leaves' measured error bounds, in slots.
    pub epsilon_mean_slots: f64,
    /// Mean absolute prediction error over all keys, in slots.
    pub error_mean_slots: f64,
}

/// An error-bounded learned index over a sorted, deduplicated `u64` key array it does not own.
///
/// Lookups take the key slice the index was built from (for example a snapshot's mmap'd key array).
/// Every key lies within [`Rmi::epsilon`] slots of its prediction, so a lookup reads at most
/// `2·ε + 1` keys. Prediction: route the key to its leaf, then
/// `base + min(round(slope · (key − first_key) as f64), leaf_len − 1)` — f64 slope, exact u64 offsets.
#[derive(Debug, Clone)]
pub struct Rmi {
    pub(crate) key_count: usize,
    pub(crate) epsilon_max: u32,
    pub(crate) epsilon: u32,
    pub(crate) first_keys: Vec<u64>,
    pub(crate) leaves: Vec<LeafModel>,
    pub(crate) router: Router,
    pub(crate) kernel: Kernel,
    pub(crate) stats: BuildStats,
}

/// Refuses input that is not strictly increasing.
pub fn check_sorted_unique(keys: &[u64]) -> Result<()> {
    match keys.windows(2).position(|w| w[0] >= w[1]) {
        None => Ok(()),
        Some(i) => Err(RmiError::NotSortedOrDuplicate {
            index: i + 1,
            previous: keys[i],
            key: keys[i + 1],
        }),
    }
}

impl Rmi {
    /// Builds an index over sorted, deduplicated `keys`. Errors (never panics) on unsorted or duplicate
    /// input and on an invalid configuration.
    pub fn build(keys: &[u64], config: &RmiConfig) -> Result<Rmi> {
        config.validate()?;
        check_sorted_unique(keys)?;
        let started = Instant::now();
        let seg = segment::segment(keys, config.epsilon_max_slots);
        if seg.first_keys.len() >= u32::MAX as usize {
            return Err(RmiError::InvalidConfig(format!(
                "{} leaves exceed the router's 32-bit leaf ids; raise epsilon_max_slots",
                seg.first_keys.len()
            )));
        }
        let router = Router::build(&seg.first_keys, config.router_buckets_per_leaf);
        let epsilon = seg.leaf_epsilons.iter().copied().max().unwrap_or(0);
        let eps_sum: u64 = seg.leaf_epsilons.iter().map(|&e| u64::from(e)).sum();
        let mut rmi = Rmi {
            key_count: keys.len(),
            epsilon_max: config.epsilon_max_slots,
            epsilon,
            stats: BuildStats {
                leaf_count: seg.first_keys.len(),
                table_count: router.tables.len(),
                epsilon_mean_slots: eps_sum as f64 / seg.first_keys.len().max(1) as f64,
                ..BuildStats::default()
            },
            first_keys: seg.first_keys,
            leaves: seg.leaves,
            router,
            kernel: Kernel::detect(),
        };
        rmi.stats.error_mean_slots = rmi.error_mean(keys);
        rmi.stats.build_duration = started.elapsed();
        debug_assert_eq!(rmi.check_structure(), Ok(()));
        crate::metrics::record_build(&rmi, keys);
        Ok(rmi)
    }

    /// Keys the index was built over.
    pub fn key_count(&self) -> usize {
        self.key_count
    }

    /// Measured bound on every key's prediction error, in slots (`<= epsilon_max()`).
    pub fn epsilon(&self) -> u32 {
        self.epsilon
    }

    /// The configured bound the build guaranteed.
    pub fn epsilon_max(&self) -> u32 {
        self.epsilon_max
    }

    /// Largest number of keys any lookup reads: `2·ε + 1` (the `2·ε + 2` candidate answers include
    /// "past the window", which needs no read).
    pub fn window_max_slots(&self) -> usize {
        (2 * self.epsilon as usize + 1).min(self.key_count)
    }

    /// Leaves (linear models).
    pub fn leaf_count(&self) -> usize {
        self.first_keys.len()
    }

    /// Bytes of model state beyond the key array.
    pub fn model_bytes(&self) -> usize {
        self.first_keys.len() * 8
            + self.leaves.len() * std::mem::size_of::<LeafModel>()
            + self.router.bytes()
    }

    /// Build statistics.
    pub fn stats(&self) -> &BuildStats {
        &self.stats
    }

    /// The last-mile kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Selects the last-mile kernel (tests and benchmarks compare them). Refuses one the CPU lacks.
    pub fn set_kernel(&mut self, kernel: Kernel) -> Result<()> {
        if !kernel.is_supported() {
            return Err(RmiError::KernelUnsupported(kernel));
        }
        self.kernel = kernel;
        Ok(())
    }

    /// Predicted position of `key` (`key_count > 0`).
    #[inline(always)]
    pub(crate) fn predict_leaf(&self, leaf: usize, key: u64) -> usize {
        let model = self.leaves[leaf];
        let last = self.leaves[leaf + 1].base - 1;
        predict(self.first_keys[leaf], model.slope, model.base, last, key) as usize
    }

    /// The predicted position of `key`, or `None` for an empty index.
    #[inline(always)]
    pub fn predict(&self, key: u64) -> Option<usize> {
        if self.key_count == 0 {
            return None;
        }
        let leaf = self.router.route(&self.first_keys, key);
        Some(self.predict_leaf(leaf, key))
    }

    /// The search window `[lo, hi)` for a prediction, clipped to `len` keys.
    #[inline(always)]
    pub(crate) fn window(&self, predicted: usize, len: usize) -> (usize, usize) {
        let eps = self.epsilon as usize;
        let hi = predicted
            .saturating_add(eps + 1)
            .min(self.key_count)
            .min(len);
        let lo = predicted.saturating_sub(eps).min(hi);
        (lo, hi)
    }

    /// Lower bound from a prediction: the first position whose key is `>= key`.
    #[inline(always)]
    pub(crate) fn lower_bound_at(&self, keys: &[u64], key: u64, predicted: usize) -> usize {
        let (lo, hi) = self.window(predicted, keys.len());
        lo + search::count_less(self.kernel, &keys[lo..hi], key)
    }

    /// Exact position from a prediction.
    #[inline(always)]
    pub(crate) fn find_at(&self, keys: &[u64], key: u64, predicted: usize) -> Option<usize> {
        let (lo, hi) = self.window(predicted, keys.len());
        let at = lo + search::count_less(self.kernel, &keys[lo..hi], key);
        let found = if at < hi && keys[at] == key {
            Some(at)
        } else {
            None
        };
        debug_assert_eq!(
            found,
            keys.binary_search(&key).ok(),
            "key {key} outside its window [{lo}, {hi})"
        );
        found
    }

    /// Position of `key` in `keys` (the slice this index was built over), if present.
    #[inline]
    pub fn find(&self, keys: &[u64], key: u64) -> Option<usize> {
        let predicted = self.predict(key)?;
        self.find_at(keys, key, predicted)
    }

    /// The first position in `keys` whose key is `>= key` (`keys.len()` when none is); equal to
    /// `keys.partition_point(|k| *k < key)`.
    #[inline]
    pub fn lower_bound(&self, keys: &[u64], key: u64) -> usize {
        match self.predict(key) {
            None => 0,
            Some(predicted) => self.lower_bound_at(keys, key, predicted),
        }
    }

    fn error_mean(&self, keys: &[u64]) -> f64 {
        if keys.is_empty() {
            return 0.0;
        }
        let mut sum = 0u64;
        for (leaf, pair) in self.leaves.windows(2).enumerate() {
            let (base, end) = (pair[0].base as usize, pair[1].base as usize);
            for (i, &key) in keys.iter().enumerate().take(end).skip(base) {
                sum += self.predict_leaf(leaf, key).abs_diff(i) as u64;
            }
        }
        sum as f64 / keys.len() as f64
    }

    /// Checks the model against `keys` end to end: same count, strictly increasing, and every key routed
    /// and predicted within ε of its position. O(n); run it before trusting an index from elsewhere.
    pub fn verify(&self, keys: &[u64]) -> Result<()> {
        if keys.len() != self.key_count {
            return Err(RmiError::KeyCountMismatch {
                index_keys: self.key_count as u64,
                slice_keys: keys.len() as u64,
            });
        }
        check_sorted_unique(keys)?;
        for (position, &key) in keys.iter().enumerate() {
            let predicted = self.predict(key).unwrap_or(0);
            let (lo, hi) = self.window(predicted, keys.len());
            if !(lo..hi).contains(&position) {
                return Err(RmiError::WindowViolation {
                    key,
                    position,
                    window_lo: lo,
                    window_hi: hi,
                });
            }
        }
        Ok(())
    }

    /// Structural invariants that make every lookup in-bounds and bounded, whatever the keys: counts
    /// agree, leaf ranges are non-empty and increasing, ε is within its bound, router entries point at
    /// existing leaves and children only go deeper. Returns a description of the first violation.
    pub(crate) fn check_structure(&self) -> std::result::Result<(), String> {
        self.check_leaves()?;
        self.router.check(self.first_keys.len())
    }

    /// The leaf half of [`Rmi::check_structure`].
    pub(crate) fn check_leaves(&self) -> std::result::Result<(), String> {
        let leaf_count = self.first_keys.len();
        if self.epsilon > self.epsilon_max || self.epsilon_max > EPSILON_SLOTS_LIMIT {
            return Err(format!(
                "epsilon {} exceeds bound {}",
                self.epsilon, self.epsilon_max
            ));
        }
        if self.leaves.len() != leaf_count + 1 || (leaf_count == 0) != (self.key_count == 0) {
            return Err("leaf and key counts disagree".into());
        }
        if self.leaves[0].base != 0 || self.leaves[leaf_count].base != self.key_count as u64 {
            return Err("leaf ranges do not cover the keys".into());
        }
        if let Some(i) = self.leaves.windows(2).position(|w| w[0].base >= w[1].base) {
            return Err(format!("leaf {i} has an empty or reversed range"));
        }
        if let Some(i) = self.first_keys.windows(2).position(|w| w[0] >= w[1]) {
            return Err(format!("leaf {} first key not increasing", i + 1));
        }
        if let Some(i) = self
            .leaves
            .iter()
            .position(|l| !(l.slope.is_finite() && l.slope >= 0.0))
        {
            return Err(format!(
                "leaf {i} slope is not a finite non-negative number"
            ));
        }
        Ok(())
    }
}

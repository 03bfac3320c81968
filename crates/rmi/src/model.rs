//! The learned index: build, lookup and verification.

use std::time::{Duration, Instant};

use crate::config::{RmiConfig, EPSILON_SLOTS_LIMIT};
use crate::error::{Result, RmiError};
use crate::router::{Router, BUCKET_LEAVES_MAX, ENTRY_VALUE};
use crate::search::{self, Kernel};
use crate::segment::{self, Leaf};

/// Where a lookup looks: the prediction and the error bound of the leaf that made it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pub(crate) predicted: usize,
    pub(crate) epsilon: usize,
}

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
    pub(crate) leaf_count: usize,
    /// `leaf_count` leaves, then `BUCKET_LEAVES_MAX` sentinels.
    pub(crate) leaves: Vec<Leaf>,
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
        let leaf_count = seg.leaves.len();
        if leaf_count >= ENTRY_VALUE as usize {
            return Err(RmiError::InvalidConfig(format!(
                "{leaf_count} leaves exceed the router's 30-bit leaf ids; raise epsilon_max_slots"
            )));
        }
        let first_keys: Vec<u64> = seg.leaves.iter().map(|l| l.first_key).collect();
        let router = Router::build(&first_keys, config.router_buckets_per_leaf);
        let epsilon = seg.leaf_epsilons.iter().copied().max().unwrap_or(0);
        let eps_sum: u64 = seg.leaf_epsilons.iter().map(|&e| u64::from(e)).sum();
        let mut rmi = Rmi {
            key_count: keys.len(),
            epsilon_max: config.epsilon_max_slots,
            epsilon,
            stats: BuildStats {
                leaf_count,
                table_count: router.tables.len(),
                epsilon_mean_slots: eps_sum as f64 / leaf_count.max(1) as f64,
                ..BuildStats::default()
            },
            leaf_count,
            leaves: with_sentinels(seg.leaves),
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
        self.leaf_count
    }

    /// Bytes of model state beyond the key array.
    pub fn model_bytes(&self) -> usize {
        self.leaves.len() * std::mem::size_of::<Leaf>() + self.router.bytes()
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

    /// The leaf holding `key` (`leaf_count > 0`).
    #[inline(always)]
    pub(crate) fn leaf_of(&self, key: u64) -> &Leaf {
        &self.leaves[self.router.route(&self.leaves, self.leaf_count, key)]
    }

    /// The predicted position of `key`, or `None` for an empty index.
    #[inline(always)]
    pub fn predict(&self, key: u64) -> Option<usize> {
        if self.leaf_count == 0 {
            return None;
        }
        Some(self.leaf_of(key).predict(key) as usize)
    }

    /// Prediction and the error bound of the leaf that made it (`leaf_count > 0`).
    #[inline(always)]
    pub(crate) fn probe(&self, key: u64) -> Probe {
        let leaf = self.leaf_of(key);
        Probe {
            predicted: leaf.predict(key) as usize,
            epsilon: leaf.epsilon() as usize,
        }
    }

    /// The search window `[lo, hi)` of a probe — `[pred − ε, pred + ε]` with the leaf's ε — clipped
    /// to `len` keys.
    #[inline(always)]
    pub(crate) fn window(&self, probe: Probe, len: usize) -> (usize, usize) {
        // `predicted < key_count`, so only a crafted model over a slice it was not built for could
        // wrap here; the clip to `len` keeps even that in bounds.
        let hi = probe.predicted.wrapping_add(probe.epsilon + 1).min(len);
        let lo = probe.predicted.saturating_sub(probe.epsilon).min(hi);
        (lo, hi)
    }

    /// Lower bound inside the window of `predicted`, counting with `count_less`.
    #[inline(always)]
    pub(crate) fn lower_bound_with(
        &self,
        keys: &[u64],
        key: u64,
        probe: Probe,
        count_less: impl Fn(&[u64], u64) -> usize,
    ) -> usize {
        let (lo, hi) = self.window(probe, keys.len());
        lo + count_less(&keys[lo..hi], key)
    }

    /// Exact position inside the window of `predicted`, counting with `count_less`.
    #[inline(always)]
    pub(crate) fn find_with(
        &self,
        keys: &[u64],
        key: u64,
        probe: Probe,
        count_less: impl Fn(&[u64], u64) -> usize,
    ) -> Option<usize> {
        let (lo, hi) = self.window(probe, keys.len());
        let at = lo + count_less(&keys[lo..hi], key);
        let found = if at < hi && keys[at] == key {
            Some(at)
        } else {
            None
        };
        // A present key is always inside its window (only checkable against the slice built over).
        debug_assert!(
            keys.len() != self.key_count || found == keys.binary_search(&key).ok(),
            "key {key} outside its window [{lo}, {hi})"
        );
        found
    }

    /// Position of `key` in `keys` (the slice this index was built over), if present.
    #[inline]
    pub fn find(&self, keys: &[u64], key: u64) -> Option<usize> {
        if self.leaf_count == 0 {
            return None;
        }
        match self.kernel {
            Kernel::Avx512 => search::simd::find_avx512(self, keys, key),
            Kernel::Avx2 => search::simd::find_avx2(self, keys, key),
            _ => self.find_generic(keys, key, |w, k| search::count_less(self.kernel, w, k)),
        }
    }

    /// Route, predict, search; the body every kernel-specialised `find` inlines.
    #[inline(always)]
    pub(crate) fn find_generic(
        &self,
        keys: &[u64],
        key: u64,
        count_less: impl Fn(&[u64], u64) -> usize,
    ) -> Option<usize> {
        self.find_with(keys, key, self.probe(key), count_less)
    }

    /// The first position in `keys` whose key is `>= key` (`keys.len()` when none is); equal to
    /// `keys.partition_point(|k| *k < key)`.
    #[inline]
    pub fn lower_bound(&self, keys: &[u64], key: u64) -> usize {
        if self.leaf_count == 0 {
            return 0;
        }
        match self.kernel {
            Kernel::Avx512 => search::simd::lower_bound_avx512(self, keys, key),
            Kernel::Avx2 => search::simd::lower_bound_avx2(self, keys, key),
            _ => self.lower_bound_generic(keys, key, |w, k| search::count_less(self.kernel, w, k)),
        }
    }

    /// Route, predict, search; the body every kernel-specialised `lower_bound` inlines.
    #[inline(always)]
    pub(crate) fn lower_bound_generic(
        &self,
        keys: &[u64],
        key: u64,
        count_less: impl Fn(&[u64], u64) -> usize,
    ) -> usize {
        self.lower_bound_with(keys, key, self.probe(key), count_less)
    }

    fn error_mean(&self, keys: &[u64]) -> f64 {
        if keys.is_empty() {
            return 0.0;
        }
        let mut sum = 0u64;
        for leaf in &self.leaves[..self.leaf_count] {
            for i in leaf.base..=leaf.last() {
                sum += leaf.predict(keys[i as usize]).abs_diff(i);
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
            let (lo, hi) = self.window(self.probe(key), keys.len());
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
        self.router.check(self.leaf_count)
    }

    /// The leaf half of [`Rmi::check_structure`].
    pub(crate) fn check_leaves(&self) -> std::result::Result<(), String> {
        if self.epsilon > self.epsilon_max || self.epsilon_max > EPSILON_SLOTS_LIMIT {
            return Err(format!(
                "epsilon {} exceeds bound {}",
                self.epsilon, self.epsilon_max
            ));
        }
        if self.leaves.len() != self.leaf_count + BUCKET_LEAVES_MAX
            || (self.leaf_count == 0) != (self.key_count == 0)
            || self.leaf_count >= ENTRY_VALUE as usize
        {
            return Err("leaf and key counts disagree".into());
        }
        if self.leaves[self.leaf_count..]
            .iter()
            .any(|l| *l != Leaf::SENTINEL)
        {
            return Err("sentinel leaves altered".into());
        }
        let mut next = 0u64;
        let mut previous_key = None;
        for (i, leaf) in self.leaves[..self.leaf_count].iter().enumerate() {
            if leaf.base != next {
                return Err(format!("leaf {i} range does not follow the previous one"));
            }
            if leaf.epsilon() > u64::from(self.epsilon) {
                return Err(format!("leaf {i} error bound exceeds the index's"));
            }
            if previous_key.is_some_and(|k| k >= leaf.first_key) {
                return Err(format!("leaf {i} first key not increasing"));
            }
            if !(leaf.slope.is_finite() && leaf.slope >= 0.0) {
                return Err(format!(
                    "leaf {i} slope is not a finite non-negative number"
                ));
            }
            previous_key = Some(leaf.first_key);
            next = leaf.last() + 1;
        }
        if next != self.key_count as u64 {
            return Err("leaf ranges do not cover the keys".into());
        }
        Ok(())
    }
}

/// Appends the sentinel records the router's in-bucket scan reads past the last leaf.
pub(crate) fn with_sentinels(mut leaves: Vec<Leaf>) -> Vec<Leaf> {
    leaves.extend([Leaf::SENTINEL; BUCKET_LEAVES_MAX]);
    leaves
}

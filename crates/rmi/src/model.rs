//! The learned index: build, lookup and verification.

use std::time::{Duration, Instant};

use crate::config::{RmiConfig, EPSILON_SLOTS_LIMIT};
use crate::error::{Result, RmiError};
use crate::router::{Router, BUCKET_LEAVES_MAX, ENTRY_VALUE};
use crate::router::{Step, DEPTH_MAX};
use crate::search::{self, CheckedKernel, Dispatch, Kernel};
use crate::segment::{self, Leaf};
use crate::shape::{
    self, access_ns, binary_search_reads, window_ns, LowerBound, Shape, MODEL_BYTES_PER_KEY_MAX,
    PREDICT_NS, ROUTE_STEP_NS, TREE_BLOCK_CANDIDATES,
};
use crate::tree::SearchTree;

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

/// An index over a sorted, deduplicated `u64` key array it does not own, in the shape
/// ([`Rmi::shape`]) chosen from the keys at build time: a learned model, or a model-free search tree
/// where that is faster.
///
/// Lookups take the key slice the index was built from (for example a snapshot's mmap'd key array).
/// A lookup reads at most [`Rmi::window_max_slots`] `<= 2·ε_max + 1` keys of it. Learned shape: every
/// key lies within [`Rmi::epsilon`] slots of its prediction: route the key to its leaf, then
/// `base + min(round(slope · (key − first_key) as f64), leaf_len − 1)` — f64 slope, exact u64 offsets.
/// Search-tree shape: a descent through 16-key nodes to one block of keys (`tree.rs`).
#[derive(Debug, Clone)]
pub struct Rmi {
    pub(crate) shape: Shape,
    /// The search tree (shape `SearchTree`); empty for a learned index.
    pub(crate) tree: SearchTree,
    pub(crate) key_count: usize,
    pub(crate) epsilon_max: u32,
    pub(crate) epsilon: u32,
    pub(crate) leaf_count: usize,
    /// `leaf_count` leaves, then `BUCKET_LEAVES_MAX` sentinels.
    pub(crate) leaves: Vec<Leaf>,
    pub(crate) router: Router,
    pub(crate) kernel: CheckedKernel,
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
    /// Builds an index over sorted, deduplicated `keys`, choosing its shape from the keys (see
    /// `shape.rs` and docs/design/rmi.md): learned at `epsilon_max_slots` or a half or quarter of it,
    /// the model-free search tree (blocks of 16, 32 or 64 keys), or plain binary search — each only
    /// where it keeps a lookup within `2·epsilon_max_slots + 1` key reads — within the model budget:
    /// for key arrays that fit in the last-level cache the one the cost model prices cheapest on a
    /// sample, for larger ones the one whose lookups time fastest on sampled queries. Errors (never panics) on
    /// unsorted or duplicate input and on an invalid configuration.
    pub fn build(keys: &[u64], config: &RmiConfig) -> Result<Rmi> {
        config.validate()?;
        check_sorted_unique(keys)?;
        let started = Instant::now();
        let queries = shape::sample_queries(keys);
        let budget = MODEL_BYTES_PER_KEY_MAX * keys.len() as f64;
        // Every candidate with its estimated cost; the choice is made below.
        let mut candidates: Vec<(f64, Rmi)> = Vec::new();
        if binary_search_reads(keys.len()) <= 2 * config.epsilon_max_slots as usize + 1
            && !keys.is_empty()
        {
            let rmi = Rmi::build_binary(keys.len(), config);
            candidates.push((shape::binary_cost(keys.len()), rmi));
        }
        // An empty index stays the (empty) learned shape: nothing to search, no bytes to spend.
        for block in TREE_BLOCK_CANDIDATES {
            if !tree_allowed(block, config.epsilon_max_slots) || keys.is_empty() {
                continue;
            }
            let rmi = Rmi::build_tree(keys, config, block);
            let cost = shape::tree_cost(&rmi.tree, keys.len());
            candidates.push((cost, rmi));
        }
        let eps = config.epsilon_max_slots;
        let mut tried = Vec::new();
        for epsilon in [eps, eps / 2, eps / 4] {
            if tried.contains(&epsilon) {
                continue;
            }
            tried.push(epsilon);
            let rmi = Rmi::build_learned(keys, config, epsilon)?;
            let cost = learned_cost(&rmi, &queries);
            candidates.push((cost, rmi));
        }
        // Over the model budget only when nothing is within it: then the smallest model.
        let within: Vec<(f64, Rmi)> = {
            let (ok, over): (Vec<_>, Vec<_>) = candidates
                .into_iter()
                .partition(|(_, r)| r.model_bytes() as f64 <= budget);
            if ok.is_empty() {
                let smallest = over
                    .into_iter()
                    .min_by_key(|(_, r)| r.model_bytes())
                    .expect("at least one learned candidate");
                vec![smallest]
            } else {
                ok
            }
        };
        // Keys that fit in the last-level cache: the cost model decides (deterministic; fitted where
        // timing small differences is noisy). Larger sets: time each candidate's lookups on fresh
        // random queries and keep the fastest (the model mispriced them by up to 1.7×: bench/index
        // --compare, docs/design/rmi.md).
        let chosen = if keys.len() * 8 > shape::MEASURE_ABOVE_BYTES && within.len() > 1 {
            let times = shape::measure(keys, within.iter().map(|(_, r)| r));
            within
                .into_iter()
                .zip(times)
                .min_by(|(_, a), (_, b)| a.total_cmp(b))
                .map(|((_, r), _)| r)
        } else {
            within
                .into_iter()
                .min_by(|(a, _), (b, _)| a.total_cmp(b))
                .map(|(_, r)| r)
        };
        let mut rmi = chosen.expect("at least one learned candidate");
        rmi.stats.build_duration = started.elapsed();
        crate::metrics::record_build(rmi.stats.build_duration, keys, |k| rmi.predict(k));
        Ok(rmi)
    }

    /// Builds exactly `shape` (no choice): for tests, benchmarks and callers that know better.
    /// `Learned { epsilon_max }` overrides the configuration's ε; `SearchTree { block_keys }` needs
    /// `1 <= block_keys <= 2·epsilon_max_slots + 1` so the window bound still holds.
    pub fn build_shape(keys: &[u64], config: &RmiConfig, shape: Shape) -> Result<Rmi> {
        config.validate()?;
        check_sorted_unique(keys)?;
        let started = Instant::now();
        let mut rmi = match shape {
            Shape::Learned { epsilon_max } => {
                RmiConfig {
                    epsilon_max_slots: epsilon_max,
                    ..*config
                }
                .validate()?;
                Rmi::build_learned(keys, config, epsilon_max)?
            }
            Shape::SearchTree { block_keys } => {
                let block = block_keys as usize;
                if block == 0 || block > 2 * config.epsilon_max_slots as usize + 1 {
                    return Err(RmiError::InvalidConfig(format!(
                        "search-tree block of {block_keys} keys outside 1..=2·{}+1",
                        config.epsilon_max_slots
                    )));
                }
                Rmi::build_tree(keys, config, block)
            }
            Shape::BinarySearch => {
                if binary_search_reads(keys.len()) > 2 * config.epsilon_max_slots as usize + 1 {
                    return Err(RmiError::InvalidConfig(format!(
                        "binary search over {} keys reads more than 2·{}+1",
                        keys.len(),
                        config.epsilon_max_slots
                    )));
                }
                Rmi::build_binary(keys.len(), config)
            }
        };
        rmi.stats.build_duration = started.elapsed();
        crate::metrics::record_build(rmi.stats.build_duration, keys, |k| rmi.predict(k));
        Ok(rmi)
    }

    /// No model: binary search over `key_count` keys.
    fn build_binary(key_count: usize, config: &RmiConfig) -> Rmi {
        Rmi::model_free(
            Shape::BinarySearch,
            key_count,
            config.epsilon_max_slots,
            0,
            SearchTree::default(),
        )
    }

    /// The search-tree shape over (validated) `keys`.
    fn build_tree(keys: &[u64], config: &RmiConfig, block_keys: usize) -> Rmi {
        let rmi = Rmi::model_free(
            Shape::SearchTree {
                block_keys: block_keys as u32,
            },
            keys.len(),
            config.epsilon_max_slots,
            // The window a lookup reads is one block: as wide as a learned window of ε = block / 2.
            (block_keys / 2) as u32,
            SearchTree::build(keys, block_keys),
        );
        debug_assert_eq!(rmi.check_structure(), Ok(()));
        rmi
    }

    /// An index of a model-free shape: no leaves (not even sentinels), no router.
    pub(crate) fn model_free(
        shape: Shape,
        key_count: usize,
        epsilon_max: u32,
        epsilon: u32,
        tree: SearchTree,
    ) -> Rmi {
        Rmi {
            shape,
            key_count,
            epsilon_max,
            epsilon,
            leaf_count: 0,
            leaves: Vec::new(),
            router: Router::default(),
            kernel: CheckedKernel::detect(),
            stats: BuildStats {
                table_count: tree.depth(),
                ..BuildStats::default()
            },
            tree,
        }
    }

    /// The learned shape at error bound `epsilon` over (validated) `keys`.
    fn build_learned(keys: &[u64], config: &RmiConfig, epsilon: u32) -> Result<Rmi> {
        let seg = segment::segment(keys, epsilon);
        let leaf_count = seg.leaves.len();
        if leaf_count >= ENTRY_VALUE as usize {
            return Err(RmiError::InvalidConfig(format!(
                "{leaf_count} leaves exceed the router's 30-bit leaf ids; raise epsilon_max_slots"
            )));
        }
        let first_keys: Vec<u64> = seg.leaves.iter().map(|l| l.first_key).collect();
        let router = Router::build(&first_keys, config.router_buckets_per_leaf);
        let measured = seg.leaf_epsilons.iter().copied().max().unwrap_or(0);
        let eps_sum: u64 = seg.leaf_epsilons.iter().map(|&e| u64::from(e)).sum();
        let mut rmi = Rmi {
            shape: Shape::Learned {
                epsilon_max: epsilon,
            },
            tree: SearchTree::default(),
            key_count: keys.len(),
            epsilon_max: epsilon,
            epsilon: measured,
            stats: BuildStats {
                leaf_count,
                table_count: router.tables.len(),
                epsilon_mean_slots: eps_sum as f64 / leaf_count.max(1) as f64,
                ..BuildStats::default()
            },
            leaf_count,
            leaves: with_sentinels(seg.leaves),
            router,
            kernel: CheckedKernel::detect(),
        };
        rmi.stats.error_mean_slots = rmi.error_mean(keys);
        debug_assert_eq!(rmi.check_structure(), Ok(()));
        Ok(rmi)
    }

    /// The shape this index was built with.
    pub fn shape(&self) -> Shape {
        self.shape
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

    /// Largest number of keys of the key array any lookup reads: `2·ε + 1` for the learned shape (the
    /// `2·ε + 2` candidate answers include "past the window", which needs no read), one block for the
    /// search tree.
    pub fn window_max_slots(&self) -> usize {
        match self.shape {
            Shape::Learned { .. } => (2 * self.epsilon as usize + 1).min(self.key_count),
            Shape::SearchTree { block_keys } => (block_keys as usize).min(self.key_count),
            Shape::BinarySearch => binary_search_reads(self.key_count),
        }
    }

    /// Leaves (linear models).
    pub fn leaf_count(&self) -> usize {
        self.leaf_count
    }

    /// Bytes of model state beyond the key array (for the search tree: its nodes).
    pub fn model_bytes(&self) -> usize {
        self.leaves.len() * std::mem::size_of::<Leaf>() + self.router.bytes() + self.tree.bytes()
    }

    /// Build statistics.
    pub fn stats(&self) -> &BuildStats {
        &self.stats
    }

    /// The last-mile kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel.get()
    }

    /// Selects the last-mile kernel (tests and benchmarks compare them). Refuses one the CPU lacks.
    pub fn set_kernel(&mut self, kernel: Kernel) -> Result<()> {
        self.kernel = CheckedKernel::new(kernel).ok_or(RmiError::KernelUnsupported(kernel))?;
        Ok(())
    }

    /// The leaf holding `key` (`leaf_count > 0`).
    #[inline(always)]
    pub(crate) fn leaf_of(&self, key: u64) -> &Leaf {
        &self.leaves[self.router.route(&self.leaves, self.leaf_count, key)]
    }

    /// The predicted position of `key`, or `None` when there is no model (an empty index, or the
    /// search-tree shape, whose only guess is the full lookup).
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
    #[inline(always)]
    pub fn find(&self, keys: &[u64], key: u64) -> Option<usize> {
        // The no-model shape inlines into the caller: nothing but std's binary search and this test.
        if self.shape == Shape::BinarySearch {
            return keys.binary_search(&key).ok();
        }
        self.find_structured(keys, key)
    }

    /// `find` through the model or the search tree, with the kernel's whole-lookup copy.
    #[inline]
    fn find_structured(&self, keys: &[u64], key: u64) -> Option<usize> {
        match self.kernel.dispatch() {
            Dispatch::Avx512(proof) => search::simd::find_avx512(proof, self, keys, key),
            Dispatch::Avx2(proof) => search::simd::find_avx2(proof, self, keys, key),
            Dispatch::Portable(kernel) => {
                self.find_generic(keys, key, |w, k| search::count_less(kernel, w, k))
            }
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
        if self.leaf_count == 0 {
            // The search tree (and the empty index, whose tree is empty).
            let (lo, hi) = self.tree.block(key, keys.len(), &count_less);
            let at = lo + count_less(&keys[lo..hi], key);
            return (at < hi && keys[at] == key).then_some(at);
        }
        self.find_with(keys, key, self.probe(key), count_less)
    }

    /// The first position in `keys` whose key is `>= key` (`keys.len()` when none is); equal to
    /// `keys.partition_point(|k| *k < key)`.
    #[inline(always)]
    pub fn lower_bound(&self, keys: &[u64], key: u64) -> usize {
        if self.shape == Shape::BinarySearch {
            return keys.partition_point(|k| *k < key);
        }
        self.lower_bound_structured(keys, key)
    }

    /// `lower_bound` through the model or the search tree, with the kernel's whole-lookup copy.
    #[inline]
    fn lower_bound_structured(&self, keys: &[u64], key: u64) -> usize {
        match self.kernel.dispatch() {
            Dispatch::Avx512(proof) => search::simd::lower_bound_avx512(proof, self, keys, key),
            Dispatch::Avx2(proof) => search::simd::lower_bound_avx2(proof, self, keys, key),
            Dispatch::Portable(kernel) => {
                self.lower_bound_generic(keys, key, |w, k| search::count_less(kernel, w, k))
            }
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
        if self.leaf_count == 0 {
            let (lo, hi) = self.tree.block(key, keys.len(), &count_less);
            return lo + count_less(&keys[lo..hi], key);
        }
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
        if self.shape == Shape::BinarySearch {
            // Nothing to trust: binary search over sorted keys is exact by itself.
            return Ok(());
        }
        if self.leaf_count == 0 {
            // The search tree: exactly the one the keys give (O(n / block)), or failing that every key
            // in its block — which, as for learned windows, makes every lookup exact (docs/design/rmi.md).
            if self.tree.matches(keys) {
                return Ok(());
            }
            return every_key_in_window(keys, |key| {
                self.tree.block(key, keys.len(), search::count_less_scalar)
            });
        }
        every_key_in_window(keys, |key| self.window(self.probe(key), keys.len()))
    }

    /// Structural invariants that make every lookup in-bounds and bounded, whatever the keys: counts
    /// agree, leaf ranges are non-empty and increasing, ε is within its bound, router entries point at
    /// existing leaves and children only go deeper. Returns a description of the first violation.
    pub(crate) fn check_structure(&self) -> std::result::Result<(), String> {
        self.check_leaves()?;
        self.router.check(self.leaf_count)?;
        self.check_tree()
    }

    /// The search-tree half of [`Rmi::check_structure`]: a tree only in the tree shape, with a block
    /// inside the window bound, and levels that fit the key count.
    pub(crate) fn check_tree(&self) -> std::result::Result<(), String> {
        match self.shape {
            Shape::Learned { .. } => {
                if self.tree != SearchTree::default() {
                    return Err("learned index carries a search tree".into());
                }
                Ok(())
            }
            Shape::SearchTree { block_keys } => {
                if block_keys as usize != self.tree.block_keys
                    || self.leaf_count != 0
                    || block_keys > 2 * self.epsilon_max.min(EPSILON_SLOTS_LIMIT) + 1
                    || self.epsilon != block_keys / 2
                {
                    return Err("search tree shape fields disagree".into());
                }
                self.tree.check(self.key_count)
            }
            Shape::BinarySearch => {
                if self.tree != SearchTree::default()
                    || self.leaf_count != 0
                    || self.epsilon != 0
                    || binary_search_reads(self.key_count)
                        > 2 * self.epsilon_max.min(EPSILON_SLOTS_LIMIT) as usize + 1
                {
                    return Err("binary search shape carries a model or breaks the bound".into());
                }
                Ok(())
            }
        }
    }

    /// The leaf half of [`Rmi::check_structure`].
    pub(crate) fn check_leaves(&self) -> std::result::Result<(), String> {
        if self.epsilon > self.epsilon_max || self.epsilon_max > EPSILON_SLOTS_LIMIT {
            return Err(format!(
                "epsilon {} exceeds bound {}",
                self.epsilon, self.epsilon_max
            ));
        }
        let learned = matches!(self.shape, Shape::Learned { .. });
        let padding = if learned { BUCKET_LEAVES_MAX } else { 0 };
        if self.leaves.len() != self.leaf_count + padding
            || (learned && (self.leaf_count == 0) != (self.key_count == 0))
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
        if learned && next != self.key_count as u64 {
            return Err("leaf ranges do not cover the keys".into());
        }
        Ok(())
    }
}

/// `Ok` if every key's position lies inside the window `window_of(key)` gives it.
fn every_key_in_window(keys: &[u64], window_of: impl Fn(u64) -> (usize, usize)) -> Result<()> {
    for (position, &key) in keys.iter().enumerate() {
        let (lo, hi) = window_of(key);
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

/// Whether a search-tree block of `block` keys fits the window bound `2·ε_max + 1`.
pub(crate) fn tree_allowed(block: usize, epsilon_max: u32) -> bool {
    block <= 2 * epsilon_max as usize + 1
}

/// Appends the sentinel records the router's in-bucket scan reads past the last leaf.
pub(crate) fn with_sentinels(mut leaves: Vec<Leaf>) -> Vec<Leaf> {
    leaves.extend([Leaf::SENTINEL; BUCKET_LEAVES_MAX]);
    leaves
}

/// Mean estimated nanoseconds per lookup of a learned model, measured over `queries` with the
/// cost model of [`crate::shape`].
pub(crate) fn learned_cost(rmi: &Rmi, queries: &[u64]) -> f64 {
    if rmi.leaf_count == 0 || queries.is_empty() {
        return 0.0;
    }
    let array_bytes = rmi.key_count * 8;
    let router_ns = access_ns(rmi.router.bytes()) + ROUTE_STEP_NS;
    let leaf_ns = access_ns(rmi.leaves.len() * std::mem::size_of::<Leaf>());
    let mut total = 0.0;
    for &key in queries {
        let router = &rmi.router;
        let mut tables = 1usize;
        let mut bucket = router.bucket(&router.tables[0], key);
        let mut leaf_reads = 1.0;
        for _ in 1..=DEPTH_MAX {
            match router.step(bucket, key) {
                Step::Child(next) => {
                    bucket = next;
                    tables += 1;
                }
                Step::Leaves(at) => {
                    let entry = router.entries[at];
                    if entry & crate::router::ENTRY_CROWDED != 0 {
                        let end = (router.entries[at + 1] & crate::router::ENTRY_VALUE) as usize;
                        let start = (entry & crate::router::ENTRY_VALUE) as usize;
                        leaf_reads = ((end - start + 1) as f64).log2().ceil();
                    } else {
                        let start = (entry & crate::router::ENTRY_VALUE) as usize;
                        if rmi.leaves[start + 1].first_key <= key {
                            leaf_reads = 2.0;
                        }
                    }
                    break;
                }
            }
        }
        let probe = rmi.probe(key);
        let (lo, hi) = rmi.window(probe, rmi.key_count);
        total += tables as f64 * router_ns
            + leaf_reads * leaf_ns
            + PREDICT_NS
            + access_ns(array_bytes)
            + window_ns(hi - lo, array_bytes);
    }
    total / queries.len() as f64
}

impl LowerBound for Rmi {
    fn lower_bound(&self, keys: &[u64], key: u64) -> usize {
        Rmi::lower_bound(self, keys, key)
    }
}

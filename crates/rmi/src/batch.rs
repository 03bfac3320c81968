//! Batch lookups with software prefetching.
//!
//! A lookup is a short chain of dependent cache misses (router entry → leaf record → key window). One
//! at a time the CPU waits on each; in a batch we walk a group of queries through each stage and
//! prefetch what the next stage needs, so the misses of a whole group overlap.

use crate::model::{Probe, Rmi};
use crate::router::{Step, DEPTH_MAX};
use crate::search::simd::prefetch;
use crate::search::{self, Dispatch};
use crate::shape::Shape;
use crate::tree::NODE_KEYS;

/// Queries walked through the pipeline together. Enough to cover memory latency, few enough that the
/// prefetched lines (up to 6 per query at ε = 16; 32 measured best on bench/index) are still in L1 when used.
pub const BATCH_GROUP_QUERIES: usize = 32;

impl Rmi {
    /// Lower bounds of many keys: `out[i] = self.lower_bound(keys, queries[i])`. Processes
    /// `min(queries.len(), out.len())` queries.
    pub fn lower_bound_batch(&self, keys: &[u64], queries: &[u64], out: &mut [usize]) {
        if self.shape == Shape::BinarySearch {
            for (slot, &key) in out.iter_mut().zip(queries) {
                *slot = keys.partition_point(|k| *k < key);
            }
            return;
        }
        match self.kernel.dispatch() {
            Dispatch::Avx512(proof) => {
                search::simd::lower_bound_batch_avx512(proof, self, keys, queries, out)
            }
            _ => {
                let kernel = self.kernel.get();
                self.lower_bound_batch_with(keys, queries, out, |w, k| {
                    search::count_less(kernel, w, k)
                })
            }
        }
    }

    /// Exact positions of many keys: `out[i] = self.find(keys, queries[i])`. Processes
    /// `min(queries.len(), out.len())` queries.
    pub fn find_batch(&self, keys: &[u64], queries: &[u64], out: &mut [Option<usize>]) {
        if self.shape == Shape::BinarySearch {
            for (slot, &key) in out.iter_mut().zip(queries) {
                *slot = keys.binary_search(&key).ok();
            }
            return;
        }
        match self.kernel.dispatch() {
            Dispatch::Avx512(proof) => {
                search::simd::find_batch_avx512(proof, self, keys, queries, out)
            }
            _ => {
                let kernel = self.kernel.get();
                self.find_batch_with(keys, queries, out, |w, k| search::count_less(kernel, w, k))
            }
        }
    }

    #[inline(always)]
    pub(crate) fn lower_bound_batch_with(
        &self,
        keys: &[u64],
        queries: &[u64],
        out: &mut [usize],
        count_less: impl Fn(&[u64], u64) -> usize + Copy,
    ) {
        if self.leaf_count == 0 {
            return self.tree_pipeline(keys, queries, out, count_less, |lo, hi, key| {
                lo + count_less(&keys[lo..hi], key)
            });
        }
        self.pipeline(keys, queries, out, |rmi, key, predicted| match predicted {
            None => 0,
            Some(p) => rmi.lower_bound_with(keys, key, p, count_less),
        });
    }

    #[inline(always)]
    pub(crate) fn find_batch_with(
        &self,
        keys: &[u64],
        queries: &[u64],
        out: &mut [Option<usize>],
        count_less: impl Fn(&[u64], u64) -> usize + Copy,
    ) {
        if self.leaf_count == 0 {
            return self.tree_pipeline(keys, queries, out, count_less, |lo, hi, key| {
                let at = lo + count_less(&keys[lo..hi], key);
                (at < hi && keys[at] == key).then_some(at)
            });
        }
        self.pipeline(keys, queries, out, |rmi, key, predicted| {
            predicted.and_then(|p| rmi.find_with(keys, key, p, count_less))
        });
    }

    /// The search tree's pipeline: each level for the whole group, every node prefetched before any is
    /// counted, then every block prefetched before any is searched. Same answers as `Rmi::find`.
    #[inline(always)]
    fn tree_pipeline<T>(
        &self,
        keys: &[u64],
        queries: &[u64],
        out: &mut [T],
        count_less: impl Fn(&[u64], u64) -> usize + Copy,
        finish: impl Fn(usize, usize, u64) -> T,
    ) {
        let tree = &self.tree;
        let mut at = [0usize; BATCH_GROUP_QUERIES];
        let groups = queries
            .chunks(BATCH_GROUP_QUERIES)
            .zip(out.chunks_mut(BATCH_GROUP_QUERIES));
        for (group, results) in groups {
            at[..group.len()].fill(0);
            for level in &tree.levels {
                for c in &mut at[..group.len()] {
                    // The same clamp as `SearchTree::block`.
                    *c = level.first + (*c).min(level.count - 1);
                    let node = &tree.nodes[*c].0;
                    prefetch(&node[0]);
                    prefetch(&node[NODE_KEYS - 1]);
                }
                for (c, &key) in at.iter_mut().zip(group) {
                    *c = (*c - level.first) * NODE_KEYS + count_less(&tree.nodes[*c].0, key);
                }
            }
            for c in &mut at[..group.len()] {
                *c = c.saturating_mul(tree.block_keys).min(keys.len());
                if *c < keys.len() {
                    prefetch(&keys[*c]);
                    prefetch(&keys[(*c + tree.block_keys).min(keys.len()) - 1]);
                }
            }
            for ((slot, &key), &lo) in results.iter_mut().zip(group).zip(&at) {
                *slot = finish(lo, lo.saturating_add(tree.block_keys).min(keys.len()), key);
            }
        }
    }

    #[inline(always)]
    fn pipeline<T: Copy>(
        &self,
        keys: &[u64],
        queries: &[u64],
        out: &mut [T],
        finish: impl Fn(&Rmi, u64, Option<Probe>) -> T,
    ) {
        let mut probes = [None; BATCH_GROUP_QUERIES];
        let mut leaf = [0usize; BATCH_GROUP_QUERIES];
        let mut step = [Step::Leaves(0); BATCH_GROUP_QUERIES];
        let groups = queries
            .chunks(BATCH_GROUP_QUERIES)
            .zip(out.chunks_mut(BATCH_GROUP_QUERIES));
        for (group, results) in groups {
            if self.leaf_count == 0 {
                for (slot, &key) in results.iter_mut().zip(group) {
                    *slot = finish(self, key, None);
                }
                continue;
            }
            // Walk the router one level at a time for the whole group, prefetching each next entry.
            let root = self.router.tables[0];
            for (j, &key) in group.iter().enumerate() {
                let bucket = self.router.bucket(&root, key);
                prefetch(&self.router.entries[bucket]);
                step[j] = Step::Child(bucket);
            }
            for _ in 0..DEPTH_MAX {
                let mut deeper = false;
                for (j, &key) in group.iter().enumerate() {
                    if let Step::Child(bucket) = step[j] {
                        step[j] = self.router.step(bucket, key);
                        match step[j] {
                            Step::Child(next) => {
                                prefetch(&self.router.entries[next]);
                                deeper = true;
                            }
                            Step::Leaves(at) => {
                                prefetch(&self.leaves[self.router.bucket_start(at)])
                            }
                        }
                    }
                }
                if !deeper {
                    break;
                }
            }
            for (j, &key) in group.iter().enumerate() {
                leaf[j] = match step[j] {
                    Step::Leaves(at) => {
                        self.router
                            .leaf_in_bucket(at, &self.leaves, self.leaf_count, key)
                    }
                    Step::Child(_) => self.router.route(&self.leaves, self.leaf_count, key),
                };
                prefetch(&self.leaves[leaf[j]]);
            }
            for (j, &key) in group.iter().enumerate() {
                let l = &self.leaves[leaf[j]];
                let p = Probe {
                    predicted: l.predict(key) as usize,
                    epsilon: l.epsilon() as usize,
                };
                probes[j] = Some(p);
                let (lo, hi) = self.window(p, keys.len());
                // Every cache line of the window (8 keys per 64-byte line), so the search hits L1.
                for i in (lo..hi).step_by(8) {
                    prefetch(&keys[i]);
                }
                if lo < hi {
                    prefetch(&keys[hi - 1]);
                }
            }
            for (j, (slot, &key)) in results.iter_mut().zip(group).enumerate() {
                *slot = finish(self, key, probes[j]);
            }
        }
    }
}

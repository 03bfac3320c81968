//! Batch lookups with software prefetching.
//!
//! A lookup is a short chain of dependent cache misses (router entry → leaf record → key window). One
//! at a time the CPU waits on each; in a batch we walk a group of queries through each stage and
//! prefetch what the next stage needs, so the misses of a whole group overlap.

use crate::model::{Probe, Rmi};
use crate::router::{Step, DEPTH_MAX};
use crate::search::simd::prefetch;
use crate::search::{self, Kernel};

/// Queries walked through the pipeline together. Enough to cover memory latency, few enough that the
/// prefetched lines (up to 6 per query at ε = 16; 32 measured best on bench/index) are still in L1 when used.
pub const BATCH_GROUP_QUERIES: usize = 32;

impl Rmi {
    /// Lower bounds of many keys: `out[i] = self.lower_bound(keys, queries[i])`. Processes
    /// `min(queries.len(), out.len())` queries.
    pub fn lower_bound_batch(&self, keys: &[u64], queries: &[u64], out: &mut [usize]) {
        match self.kernel {
            Kernel::Avx512 => search::simd::lower_bound_batch_avx512(self, keys, queries, out),
            _ => self.lower_bound_batch_with(keys, queries, out, |w, k| {
                search::count_less(self.kernel, w, k)
            }),
        }
    }

    /// Exact positions of many keys: `out[i] = self.find(keys, queries[i])`. Processes
    /// `min(queries.len(), out.len())` queries.
    pub fn find_batch(&self, keys: &[u64], queries: &[u64], out: &mut [Option<usize>]) {
        match self.kernel {
            Kernel::Avx512 => search::simd::find_batch_avx512(self, keys, queries, out),
            _ => self.find_batch_with(keys, queries, out, |w, k| {
                search::count_less(self.kernel, w, k)
            }),
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
        self.pipeline(keys, queries, out, |rmi, key, predicted| {
            predicted.and_then(|p| rmi.find_with(keys, key, p, count_less))
        });
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

//! Batch lookups with software prefetching.
//!
//! A lookup is a short chain of dependent cache misses (root entry → leaf model → key window). One at a
//! time the CPU waits on each; in a batch we walk a group of queries through each stage and prefetch
//! what the next stage needs, so the misses of a whole group overlap.

use crate::model::Rmi;
use crate::search::simd::prefetch;

/// Queries walked through the pipeline together. Enough to cover memory latency, few enough that the
/// prefetched lines are still in L1 when used.
pub const BATCH_GROUP_QUERIES: usize = 16;

impl Rmi {
    /// Lower bounds of many keys: `out[i] = self.lower_bound(keys, queries[i])`. Processes
    /// `min(queries.len(), out.len())` queries.
    pub fn lower_bound_batch(&self, keys: &[u64], queries: &[u64], out: &mut [usize]) {
        self.pipeline(keys, queries, out, |rmi, key, predicted| match predicted {
            None => 0,
            Some(p) => rmi.lower_bound_at(keys, key, p),
        });
    }

    /// Exact positions of many keys: `out[i] = self.find(keys, queries[i])`. Processes
    /// `min(queries.len(), out.len())` queries.
    pub fn find_batch(&self, keys: &[u64], queries: &[u64], out: &mut [Option<usize>]) {
        self.pipeline(keys, queries, out, |rmi, key, predicted| {
            predicted.and_then(|p| rmi.find_at(keys, key, p))
        });
    }

    #[inline(always)]
    fn pipeline<T: Copy>(
        &self,
        keys: &[u64],
        queries: &[u64],
        out: &mut [T],
        finish: impl Fn(&Rmi, u64, Option<usize>) -> T,
    ) {
        let mut predicted = [None; BATCH_GROUP_QUERIES];
        let mut leaf = [0usize; BATCH_GROUP_QUERIES];
        for (group, results) in queries
            .chunks(BATCH_GROUP_QUERIES)
            .zip(out.chunks_mut(BATCH_GROUP_QUERIES))
        {
            if self.key_count == 0 {
                for (slot, &key) in results.iter_mut().zip(group) {
                    *slot = finish(self, key, None);
                }
                continue;
            }
            let root = self.router.tables[0];
            for &key in group {
                prefetch(&self.router.entries[self.router.bucket(&root, key)]);
            }
            for (j, &key) in group.iter().enumerate() {
                leaf[j] = self.router.route(&self.first_keys, key);
                prefetch(&self.leaves[leaf[j]]);
            }
            for (j, &key) in group.iter().enumerate() {
                let p = self.predict_leaf(leaf[j], key);
                predicted[j] = Some(p);
                let (lo, hi) = self.window(p, keys.len());
                if lo < hi {
                    prefetch(&keys[lo]);
                    prefetch(&keys[(lo + hi) / 2]);
                    prefetch(&keys[hi - 1]);
                }
            }
            for (j, (slot, &key)) in results.iter_mut().zip(group).enumerate() {
                *slot = finish(self, key, predicted[j]);
            }
        }
    }
}

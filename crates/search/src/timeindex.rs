//! The per-collection timestamp index: a time range → the rows whose timestamp lies in it, through
//! the learned index (`kyrodb-rmi`), not a scan.
//!
//! - **Base** (learned part): the distinct timestamps, sorted (as order-preserving u64 keys), with
//!   the bitmap of rows at each; an [`Rmi`] over the keys maps a time to its position, so a range
//!   is two `lower_bound`s and a union of the bitmaps between them.
//! - **Delta**: writes since the base was built, in an ordered map of key → bitmap, and the `dead`
//!   rows of the base removed since (a rewrite of a row goes to the delta, its base entry is dead).
//! - A range = (base bitmaps in range − dead) ∪ delta bitmaps in range: recent writes are covered
//!   at once. When the delta holds more than an eighth of the base's keys or of its rows (at least
//!   [`DELTA_KEYS_MIN`]), or dead rows a quarter of the base's rows, the base is rebuilt from both
//!   (on the applier thread; measured cost in docs/design/search.md).
//!
//! Derived state: rebuilt from the stored documents when a collection is attached.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    time::Instant,
};

use kyrodb_rmi::{Rmi, RmiConfig};
use roaring::{MultiOps, RoaringBitmap};

/// The delta is folded into the base when it holds more keys than this and an eighth of the base.
pub const DELTA_KEYS_MIN: usize = 4096;

/// An i64 (epoch ms) as a u64 with the same order.
fn key(ms: i64) -> u64 {
    (ms as u64) ^ (1 << 63)
}

/// The timestamp index of one collection.
#[derive(Debug, Default)]
pub struct TimeIndex {
    keys: Vec<u64>,
    bitmaps: Vec<RoaringBitmap>,
    rmi: Option<Rmi>,
    base_rows: u64,
    delta: BTreeMap<u64, RoaringBitmap>,
    delta_rows: u64,
    dead: RoaringBitmap,
    /// Each indexed row's key.
    ts_of: HashMap<u32, u64>,
    rebuilds: u64,
    last_rebuild_us: u64,
}

impl TimeIndex {
    /// Indexes `row` at `ms`. The row must not be indexed (remove it first).
    pub fn insert(&mut self, row: u32, ms: i64) {
        let k = key(ms);
        if self.delta.entry(k).or_default().insert(row) {
            self.delta_rows += 1;
        }
        self.ts_of.insert(row, k);
        self.maybe_rebuild();
    }

    /// Removes `row` (a no-op for a row not indexed).
    pub fn remove(&mut self, row: u32) {
        let Some(k) = self.ts_of.remove(&row) else {
            return;
        };
        if let Some(b) = self.delta.get_mut(&k) {
            if b.remove(row) {
                self.delta_rows -= 1;
                if b.is_empty() {
                    self.delta.remove(&k);
                }
                return;
            }
        }
        self.dead.insert(row);
        self.maybe_rebuild();
    }

    fn maybe_rebuild(&mut self) {
        let delta_due = self.delta.len() >= DELTA_KEYS_MIN.max(self.keys.len() / 8)
            || self.delta_rows >= (DELTA_KEYS_MIN as u64).max(self.base_rows / 8);
        let dead_due = self.dead.len() >= (DELTA_KEYS_MIN as u64).max(self.base_rows / 4);
        if delta_due || dead_due {
            self.rebuild();
        }
    }

    /// Folds the delta and the dead rows into a new base and rebuilds the learned index over it.
    pub fn rebuild(&mut self) {
        let t = Instant::now();
        let mut merged: BTreeMap<u64, RoaringBitmap> = std::mem::take(&mut self.delta);
        self.delta_rows = 0;
        for (k, mut b) in std::mem::take(&mut self.keys)
            .into_iter()
            .zip(std::mem::take(&mut self.bitmaps))
        {
            b -= &self.dead;
            if !b.is_empty() {
                *merged.entry(k).or_default() |= b;
            }
        }
        self.dead = RoaringBitmap::new();
        self.base_rows = merged.values().map(RoaringBitmap::len).sum();
        let (keys, bitmaps): (Vec<u64>, Vec<RoaringBitmap>) = merged.into_iter().unzip();
        // Sorted and unique by construction (BTreeMap keys); a build error would be a bug in that,
        // and the index then answers by binary search instead.
        self.rmi = Rmi::build(&keys, &RmiConfig::default()).ok();
        self.keys = keys;
        self.bitmaps = bitmaps;
        self.rebuilds += 1;
        self.last_rebuild_us = t.elapsed().as_micros() as u64;
    }

    fn lower_bound(&self, k: u64) -> usize {
        match &self.rmi {
            Some(r) => r.lower_bound(&self.keys, k),
            None => self.keys.partition_point(|x| *x < k),
        }
    }

    /// The rows whose timestamp lies in (`from`, `to`) with the given bounds.
    pub fn range(&self, from: Bound<i64>, to: Bound<i64>) -> RoaringBitmap {
        let lo = match from {
            Bound::Unbounded => 0,
            Bound::Included(ms) => self.lower_bound(key(ms)),
            Bound::Excluded(ms) => match key(ms).checked_add(1) {
                Some(k) => self.lower_bound(k),
                None => self.keys.len(),
            },
        };
        let hi = match to {
            Bound::Unbounded => self.keys.len(),
            Bound::Excluded(ms) => self.lower_bound(key(ms)),
            Bound::Included(ms) => match key(ms).checked_add(1) {
                Some(k) => self.lower_bound(k),
                None => self.keys.len(),
            },
        };
        let (lo, hi) = (lo.min(hi), hi);
        let mut out = self.bitmaps[lo..hi].iter().union();
        out -= &self.dead;
        let kb = |b: Bound<i64>| b.map(key);
        let delta: Vec<&RoaringBitmap> = if lo_hi_empty(from, to) {
            Vec::new()
        } else {
            self.delta
                .range((kb(from), kb(to)))
                .map(|(_, b)| b)
                .collect()
        };
        out |= delta.into_iter().union();
        out
    }

    /// State for `explain` and a collection's info.
    pub fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "index": "kyrodb-rmi over the distinct timestamps + delta",
            "shape": self.rmi.as_ref().map(|r| format!("{:?}", r.shape())),
            "base_keys": self.keys.len(),
            "base_rows": self.base_rows,
            "delta_keys": self.delta.len(),
            "delta_rows": self.delta_rows,
            "dead_rows": self.dead.len(),
            "rebuilds": self.rebuilds,
            "last_rebuild_us": self.last_rebuild_us,
        })
    }
}

/// A range whose start lies after its end (BTreeMap::range panics on those).
fn lo_hi_empty(from: Bound<i64>, to: Bound<i64>) -> bool {
    match (from, to) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b)) | (Bound::Excluded(a), Bound::Included(b)) => {
            a >= b
        }
        (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// The index against a plain map of row → timestamp, through inserts, deletes, rewrites and
    /// rebuilds, for every kind of bound.
    #[test]
    fn ranges_equal_a_scan_through_churn_and_rebuilds() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut ix = TimeIndex::default();
        let mut truth: HashMap<u32, i64> = HashMap::new();
        for step in 0..60_000u32 {
            let row = rng.gen_range(0..20_000u32);
            if rng.gen_bool(0.2) {
                ix.remove(row);
                truth.remove(&row);
            } else {
                // Skewed, with negative times and repeats.
                let ms = rng.gen_range(-5_000i64..100_000) * rng.gen_range(1..4);
                ix.remove(row);
                ix.insert(row, ms);
                truth.insert(row, ms);
            }
            if step % 3_000 == 0 {
                for _ in 0..20 {
                    let a = rng.gen_range(-20_000i64..320_000);
                    let b = a + rng.gen_range(-1_000i64..80_000);
                    let bounds = [
                        (Bound::Included(a), Bound::Excluded(b)),
                        (Bound::Excluded(a), Bound::Included(b)),
                        (Bound::Unbounded, Bound::Excluded(b)),
                        (Bound::Included(a), Bound::Unbounded),
                        (Bound::Included(a), Bound::Included(a)),
                    ];
                    for (from, to) in bounds {
                        let got = ix.range(from, to);
                        let want: RoaringBitmap = truth
                            .iter()
                            .filter(|(_, &t)| {
                                (match from {
                                    Bound::Included(x) => t >= x,
                                    Bound::Excluded(x) => t > x,
                                    Bound::Unbounded => true,
                                }) && (match to {
                                    Bound::Included(x) => t <= x,
                                    Bound::Excluded(x) => t < x,
                                    Bound::Unbounded => true,
                                })
                            })
                            .map(|(&r, _)| r)
                            .collect();
                        assert_eq!(got, want, "step {step} {from:?}..{to:?}");
                    }
                }
            }
        }
        assert!(ix.rebuilds > 2, "{:?}", ix.info());
        assert!(ix.rmi.is_some());
    }
}

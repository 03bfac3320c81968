//! Error-bounded piecewise-linear segmentation (the leaves).
//!
//! A greedy shrinking cone (FITing-tree / RadixSpline style) anchored at each segment's first key grows
//! a segment while some slope keeps every key of it within ε of its position. The slope is then checked
//! with the exact arithmetic lookups use ([`predict`]); a segment is cut at the first key whose measured
//! error exceeds ε. The first key of a segment is predicted exactly, so every cut makes progress, and
//! the ε bound holds by construction rather than by floating-point hope.

/// Keys one leaf may hold: its last offset shares a word with its ε.
pub(crate) const LEAF_KEYS_MAX: u64 = 1 << LEAF_OFFSET_BITS;
/// Bits of [`Leaf::span`] holding the leaf's last offset; the bits above hold its ε.
pub(crate) const LEAF_OFFSET_BITS: u32 = 40;

/// One leaf: a linear model over the keys at positions `base..=base + last_offset`. Lookups read one
/// record (two adjacent ones at most), so the fields sit together: 32 bytes, two leaves per cache line.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(32))]
pub(crate) struct Leaf {
    /// Smallest key of the leaf.
    pub first_key: u64,
    /// Positions per key unit; finite and `>= 0`.
    pub slope: f64,
    /// Position of `first_key`.
    pub base: u64,
    /// `epsilon << 40 | last_offset`: the leaf's measured error bound (slots) and the offset of its
    /// last key from `base`.
    pub span: u64,
}

impl Leaf {
    /// Padding record after the last leaf: never routed to (routing clamps to the last real leaf).
    pub(crate) const SENTINEL: Leaf = Leaf {
        first_key: u64::MAX,
        slope: 0.0,
        base: 0,
        span: 0,
    };

    /// A leaf over positions `base..=last` with measured error bound `epsilon`.
    pub(crate) fn new(first_key: u64, slope: f64, base: u64, last: u64, epsilon: u32) -> Leaf {
        // Checked in release too (once per leaf, at build): a wider span or ε would corrupt the packed
        // `span` word that bounds every window.
        assert!(last >= base && last - base < LEAF_KEYS_MAX && epsilon < 1 << 24);
        Leaf {
            first_key,
            slope,
            base,
            span: u64::from(epsilon) << LEAF_OFFSET_BITS | (last - base),
        }
    }

    /// Offset of the last key from `base`.
    #[inline(always)]
    pub(crate) fn last_offset(&self) -> u64 {
        self.span & (LEAF_KEYS_MAX - 1)
    }

    /// Position of the last key.
    #[inline(always)]
    pub(crate) fn last(&self) -> u64 {
        self.base + self.last_offset()
    }

    /// The leaf's error bound: every key in it lies within this many slots of its prediction.
    #[inline(always)]
    pub(crate) fn epsilon(&self) -> u64 {
        self.span >> LEAF_OFFSET_BITS
    }

    /// Predicted position of `key`: `base + min(round(slope · (key − first_key)), last_offset)`.
    /// Monotone non-decreasing in `key`, and always inside `[base, last]`.
    #[inline(always)]
    pub(crate) fn predict(&self, key: u64) -> u64 {
        // Same arithmetic as [`predict`] (which the build verifies with), without re-deriving the span.
        let dx = key.saturating_sub(self.first_key);
        let offset = (self.slope * dx as f64 + 0.5) as u64;
        self.base + offset.min(self.last_offset())
    }
}

/// See [`Leaf::predict`].
#[inline(always)]
pub(crate) fn predict(first_key: u64, slope: f64, base: u64, last: u64, key: u64) -> u64 {
    let dx = key.saturating_sub(first_key);
    // Round half up; float-to-int `as` saturates (and maps NaN to 0), so this never wraps.
    let offset = (slope * dx as f64 + 0.5) as u64;
    base + offset.min(last.saturating_sub(base))
}

/// Leaves of a segmentation, in key order.
#[derive(Debug, Default)]
pub(crate) struct Segmentation {
    /// The leaves; first keys strictly increasing, ranges contiguous from 0 to the key count.
    pub leaves: Vec<Leaf>,
    /// Measured error bound of each leaf, in slots (≤ ε).
    pub leaf_epsilons: Vec<u32>,
}

/// Segments sorted, deduplicated `keys` so that every key lies within `epsilon` slots of its prediction.
pub(crate) fn segment(keys: &[u64], epsilon: u32) -> Segmentation {
    let mut out = Segmentation::default();
    let mut start = 0usize;
    while start < keys.len() {
        let (end, slope) = grow_cone(keys, start, epsilon);
        let (end, leaf_epsilon) = verify_prefix(keys, start, end, slope, epsilon);
        let leaf = Leaf::new(
            keys[start],
            slope,
            start as u64,
            end as u64 - 1,
            leaf_epsilon,
        );
        out.leaves.push(leaf);
        out.leaf_epsilons.push(leaf_epsilon);
        start = end;
    }
    out
}

/// Grows a segment from `start` while the cone of feasible slopes stays non-empty. Returns one past the
/// last key taken and the cone's middle slope.
fn grow_cone(keys: &[u64], start: usize, epsilon: u32) -> (usize, f64) {
    let first_key = keys[start];
    let eps = f64::from(epsilon);
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let mut end = start + 1;
    while end < keys.len() && ((end - start) as u64) < LEAF_KEYS_MAX {
        let dx = (keys[end] - first_key) as f64;
        let dy = (end - start) as f64;
        // round(slope·dx) must land in [dy − ε, dy + ε]: slope·dx ∈ [dy − ε − ½, dy + ε + ½), kept a
        // quarter slot inside each edge so float rounding rarely matters (verification catches it when
        // it does). An exact line sits in the middle, so equal gaps fit one leaf even at ε = 0.
        let need_lo = (dy - eps - 0.25) / dx;
        let need_hi = (dy + eps + 0.25) / dx;
        if need_lo > hi || need_hi < lo {
            break;
        }
        lo = lo.max(need_lo);
        hi = hi.min(need_hi);
        end += 1;
    }
    let slope = if hi.is_finite() {
        ((lo + hi) / 2.0).max(0.0)
    } else {
        0.0
    };
    (end, slope)
}

/// Measures each key of `keys[start..end]` with the lookup arithmetic; cuts the segment at the first key
/// whose error exceeds `epsilon`. Returns the (possibly shorter) end and the measured error bound.
fn verify_prefix(keys: &[u64], start: usize, end: usize, slope: f64, epsilon: u32) -> (usize, u32) {
    let first_key = keys[start];
    let mut last = end as u64 - 1;
    let mut max_error = 0u64;
    for (i, &key) in keys.iter().enumerate().take(end).skip(start) {
        let predicted = predict(first_key, slope, start as u64, last, key);
        let error = predicted.abs_diff(i as u64);
        if error > u64::from(epsilon) {
            // Cutting only moves the clamp towards the keys kept, so their errors can only shrink.
            last = i as u64 - 1;
            let kept = verify_prefix_exact(keys, start, i, slope, last);
            return (i, kept);
        }
        max_error = max_error.max(error);
    }
    (end, max_error as u32)
}

/// Recomputes the error bound of an already-cut segment (its clamp changed).
fn verify_prefix_exact(keys: &[u64], start: usize, end: usize, slope: f64, last: u64) -> u32 {
    let first_key = keys[start];
    keys[start..end]
        .iter()
        .enumerate()
        .map(|(j, &key)| {
            predict(first_key, slope, start as u64, last, key).abs_diff((start + j) as u64)
        })
        .max()
        .unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(keys: &[u64], epsilon: u32) -> Segmentation {
        let seg = segment(keys, epsilon);
        let mut next = 0u64;
        for (j, leaf) in seg.leaves.iter().enumerate() {
            assert_eq!(leaf.base, next, "leaf {j} not contiguous");
            assert_eq!(leaf.epsilon(), u64::from(seg.leaf_epsilons[j]));
            assert_eq!(leaf.first_key, keys[leaf.base as usize]);
            assert!(seg.leaf_epsilons[j] <= epsilon);
            for i in leaf.base..=leaf.last() {
                assert!(
                    leaf.predict(keys[i as usize]).abs_diff(i) <= u64::from(seg.leaf_epsilons[j])
                );
            }
            next = leaf.last() + 1;
        }
        assert_eq!(next, keys.len() as u64);
        seg
    }

    #[test]
    fn equal_gaps_make_one_leaf() {
        let keys: Vec<u64> = (0..10_000u64).map(|i| i * 7 + 3).collect();
        assert_eq!(check(&keys, 0).leaves.len(), 1);
    }

    #[test]
    fn extremes_and_outliers_stay_bounded() {
        let mut keys: Vec<u64> = (0..1000u64).collect();
        keys.extend([1 << 40, u64::MAX - 2, u64::MAX - 1, u64::MAX]);
        for eps in [0, 1, 4, 32] {
            check(&keys, eps);
        }
    }

    #[test]
    fn empty_and_single() {
        assert!(check(&[], 8).leaves.is_empty());
        assert_eq!(check(&[u64::MAX], 0).leaves.len(), 1);
    }
}

//! The root: routes a key to the leaf whose range holds it, in a bounded number of steps.
//!
//! A radix table maps `(key − key_lo) >> shift` to the first leaf whose first key falls in that bucket
//! or later. `key_lo` and `shift` come from the keys actually present in the table's range, so the table
//! never assumes keys fill the top bits. A bucket holding more than [`BUCKET_LEAVES_MAX`] leaves gets a
//! child table over just its own key range (clusters and outliers thus cost one more level, not a long
//! search). Depth is capped at [`DEPTH_MAX`]; a crowded bucket at the last level is marked and searched
//! by branchless binary search over its leaves' first keys.
//!
//! Bound on routing work per lookup: at most `DEPTH_MAX` table reads, then either a look at
//! `BUCKET_LEAVES_MAX` leaves at most (usually one or two adjacent records) or, for a crowded bucket at
//! depth `DEPTH_MAX` only, `⌈log2(leaves + 1)⌉` binary-search steps.

use crate::segment::Leaf;

/// Tables on one root-to-leaf path, at most. Each level shrinks the key range by at least half.
pub const DEPTH_MAX: usize = 4;
/// A bucket with more leaves than this gets a child table (unless at `DEPTH_MAX`). The leaf array is
/// padded with this many sentinel records so the in-bucket scan never needs the bucket's end.
pub const BUCKET_LEAVES_MAX: usize = 8;
/// Largest radix table, in index bits.
pub const TABLE_BITS_MAX: u32 = 24;
/// Entry flag: the low 30 bits are a child table id.
pub(crate) const ENTRY_CHILD: u32 = 1 << 31;
/// Entry flag: the bucket holds more than `BUCKET_LEAVES_MAX` leaves and has no child (depth cap);
/// the low 30 bits are its first leaf and the next entry's low 30 bits (never a child) its end.
pub(crate) const ENTRY_CROWDED: u32 = 1 << 30;
/// Mask of an entry's value bits; leaf ids and table ids are below this.
pub(crate) const ENTRY_VALUE: u32 = ENTRY_CROWDED - 1;

/// One radix table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Table {
    /// Smallest key of the table's range.
    pub key_lo: u64,
    /// Right shift applied to `key − key_lo`; `< 64`.
    pub shift: u32,
    /// Bucket count is `1 << bits`; `<= TABLE_BITS_MAX`.
    pub bits: u32,
    /// Index of bucket 0 in the shared entry array; the table owns `(1 << bits) + 1` entries.
    pub entries_offset: u64,
    /// `(1 << bits) − 1`, kept so routing does not recompute it (not stored in files).
    pub bucket_max: u64,
}

impl Table {
    /// A table with the derived `bucket_max`.
    pub(crate) fn new(key_lo: u64, shift: u32, bits: u32, entries_offset: u64) -> Table {
        let bucket_max = 1u64.checked_shl(bits).map_or(u64::MAX, |b| b - 1);
        Table {
            key_lo,
            shift,
            bits,
            entries_offset,
            bucket_max,
        }
    }
}

/// Outcome of one routing level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Index into `entries` of the key's bucket in a child table.
    Child(usize),
    /// Index into `entries` of the key's bucket, which lists leaves.
    Leaves(usize),
}

/// All radix tables and their entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Router {
    /// Table 0 is the root. Children always have larger ids than their parent.
    pub tables: Vec<Table>,
    /// Entries of all tables: a leaf id (first leaf whose bucket is `>=` this one), possibly flagged.
    pub entries: Vec<u32>,
}

struct Pending {
    table: usize,
    carry_leaf: usize,
    leaves_end: usize,
    key_lo: u64,
    key_hi: u64,
    depth: usize,
}

fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

impl Router {
    /// Builds the router over leaves with strictly increasing `first_keys`. Leaf count must be below
    /// `ENTRY_VALUE` (checked by the caller).
    pub(crate) fn build(first_keys: &[u64], buckets_per_leaf: u32) -> Router {
        let mut router = Router::default();
        let Some(&key_hi) = first_keys.last() else {
            return router;
        };
        let mut queue = vec![Pending {
            table: 0,
            carry_leaf: 0,
            leaves_end: first_keys.len(),
            key_lo: first_keys[0],
            key_hi,
            depth: 1,
        }];
        router.tables.push(Table::new(0, 0, 0, 0));
        while let Some(p) = queue.pop() {
            router.fill_table(first_keys, &p, buckets_per_leaf, &mut queue);
        }
        router
    }

    fn fill_table(
        &mut self,
        first_keys: &[u64],
        p: &Pending,
        per_leaf: u32,
        queue: &mut Vec<Pending>,
    ) {
        let leaves = (p.leaves_end - p.carry_leaf) as u64;
        let range_bits = bit_len(p.key_hi - p.key_lo);
        let want_bits = bit_len((leaves * u64::from(per_leaf)).saturating_sub(1));
        let bits = want_bits.min(range_bits).min(TABLE_BITS_MAX);
        let shift = range_bits - bits;
        let offset = self.entries.len();
        let buckets = 1usize << bits;
        self.tables[p.table] = Table::new(p.key_lo, shift, bits, offset as u64);
        // Leaf `carry_leaf` covers keys below the first bucketed leaf, so bucketing starts after it.
        let mut leaf = p.carry_leaf + 1;
        for bucket in 0..=buckets {
            while leaf < p.leaves_end
                && (((first_keys[leaf] - p.key_lo) >> shift) as usize) < bucket
            {
                leaf += 1;
            }
            self.entries.push(leaf as u32);
        }
        for bucket in 0..buckets {
            let start = self.entries[offset + bucket] as usize;
            let end = (self.entries[offset + bucket + 1] & ENTRY_VALUE) as usize;
            if end - start <= BUCKET_LEAVES_MAX {
                continue;
            }
            if p.depth >= DEPTH_MAX || shift == 0 {
                self.entries[offset + bucket] |= ENTRY_CROWDED;
                continue;
            }
            let child = self.tables.len();
            self.tables.push(Table::new(0, 0, 0, 0));
            self.entries[offset + bucket] = child as u32 | ENTRY_CHILD;
            // The child spans the keys actually in the bucket, not the bucket's full width, so a tight
            // cluster gets a fine table at once instead of a chain of mostly empty levels.
            let (key_lo, key_hi) = (first_keys[start], first_keys[end - 1]);
            queue.push(Pending {
                table: child,
                carry_leaf: start - 1,
                leaves_end: end,
                key_lo,
                key_hi,
                depth: p.depth + 1,
            });
        }
    }

    /// The leaf whose range holds `key`: the last leaf with `first_key <= key`, or leaf 0. `leaves`
    /// holds `leaf_count` leaves followed by `BUCKET_LEAVES_MAX` sentinels.
    #[inline(always)]
    pub(crate) fn route(&self, leaves: &[Leaf], leaf_count: usize, key: u64) -> usize {
        let mut bucket = self.bucket(&self.tables[0], key);
        for _ in 1..DEPTH_MAX {
            match self.step(bucket, key) {
                Step::Child(next) => bucket = next,
                Step::Leaves(at) => return self.leaf_in_bucket(at, leaves, leaf_count, key),
            }
        }
        match self.step(bucket, key) {
            Step::Leaves(at) => self.leaf_in_bucket(at, leaves, leaf_count, key),
            Step::Child(_) => unreachable_route(),
        }
    }

    /// One level of routing: the bucket `key` falls in at the next level, or the entry of a leaf bucket.
    #[inline(always)]
    pub(crate) fn step(&self, bucket: usize, key: u64) -> Step {
        let entry = self.entries[bucket];
        if entry & ENTRY_CHILD != 0 {
            Step::Child(self.bucket(&self.tables[(entry & ENTRY_VALUE) as usize], key))
        } else {
            Step::Leaves(bucket)
        }
    }

    /// First leaf a leaf bucket's search reads (for prefetching).
    #[inline(always)]
    pub(crate) fn bucket_start(&self, bucket: usize) -> usize {
        (self.entries[bucket] & ENTRY_VALUE) as usize
    }

    /// The leaf holding `key`, given the index of its (non-child) bucket entry.
    #[inline(always)]
    pub(crate) fn leaf_in_bucket(
        &self,
        bucket: usize,
        leaves: &[Leaf],
        leaf_count: usize,
        key: u64,
    ) -> usize {
        let entry = self.entries[bucket];
        let start = (entry & ENTRY_VALUE) as usize;
        if entry & ENTRY_CROWDED != 0 {
            let end = (self.entries[bucket + 1] & ENTRY_VALUE) as usize;
            return start - 1 + count_le_binary(&leaves[start..end], key);
        }
        // Leaves after the bucket have larger first keys than any key routed here, and sentinels
        // only count for key == u64::MAX (clamped below), so no end bound is needed.
        let mut leaf = start - 1 + usize::from(leaves[start].first_key <= key);
        if leaves[start + 1].first_key <= key {
            leaf = start - 1 + count_le(&leaves[start..start + BUCKET_LEAVES_MAX], key);
        }
        leaf.min(leaf_count - 1)
    }

    /// Index into `entries` of the bucket of `key` in `table`.
    #[inline(always)]
    pub(crate) fn bucket(&self, table: &Table, key: u64) -> usize {
        let raw = key.saturating_sub(table.key_lo) >> table.shift;
        table.entries_offset as usize + raw.min(table.bucket_max) as usize
    }

    /// Bytes of model state the router holds.
    pub(crate) fn bytes(&self) -> usize {
        self.tables.len() * std::mem::size_of::<Table>() + self.entries.len() * 4
    }

    /// Structural invariants that keep `route` in bounds: tables and entries in range, leaf ids in
    /// `1..=leaf_count` and non-decreasing, crowded buckets followed by a plain entry, children deeper
    /// than their parent, depth capped.
    pub(crate) fn check(&self, leaf_count: usize) -> Result<(), String> {
        if leaf_count == 0 {
            return if self.tables.is_empty() && self.entries.is_empty() {
                Ok(())
            } else {
                Err("router without leaves".into())
            };
        }
        if self.tables.is_empty() {
            return Err("router has no root table".into());
        }
        let mut depth = vec![0usize; self.tables.len()];
        depth[0] = 1;
        for (id, table) in self.tables.iter().enumerate() {
            self.check_table(id, table, leaf_count, &mut depth)?;
        }
        Ok(())
    }

    fn check_table(
        &self,
        id: usize,
        table: &Table,
        leaf_count: usize,
        depth: &mut [usize],
    ) -> Result<(), String> {
        if table.shift >= 64 || table.bits > TABLE_BITS_MAX {
            return Err(format!(
                "table {id}: shift {} or bits {} out of range",
                table.shift, table.bits
            ));
        }
        let start =
            usize::try_from(table.entries_offset).map_err(|_| format!("table {id}: offset"))?;
        let end = start.saturating_add((1usize << table.bits) + 1);
        let Some(entries) = self.entries.get(start..end) else {
            return Err(format!(
                "table {id}: entries {start}..{end} beyond {}",
                self.entries.len()
            ));
        };
        let mut previous = 1usize;
        for (i, &entry) in entries.iter().enumerate() {
            let value = (entry & ENTRY_VALUE) as usize;
            if entry & ENTRY_CHILD != 0 {
                if entry & ENTRY_CROWDED != 0
                    || value <= id
                    || value >= self.tables.len()
                    || i + 1 == entries.len()
                {
                    return Err(format!("table {id}: bad child entry {entry:#x}"));
                }
                depth[value] = depth[value].max(depth[id] + 1);
                if depth[value] > DEPTH_MAX {
                    return Err(format!("table {value}: deeper than {DEPTH_MAX}"));
                }
                continue;
            }
            if value < previous || value > leaf_count {
                return Err(format!("table {id}: leaf id {value} out of order or range"));
            }
            previous = value;
            if entry & ENTRY_CROWDED != 0 {
                let next = entries.get(i + 1).copied().unwrap_or(ENTRY_CHILD);
                let end = (next & ENTRY_VALUE) as usize;
                if next & ENTRY_CHILD != 0 || end < value || end > leaf_count {
                    return Err(format!("table {id}: crowded bucket {i} without a leaf end"));
                }
            }
        }
        Ok(())
    }
}

/// Validated routers never get here: `fill_table` stops adding children at `DEPTH_MAX`, and
/// `Router::check` checks the same of loaded files.
#[cold]
fn unreachable_route() -> usize {
    0
}

/// Number of `leaves` whose first key is `<= key` (a fixed-length count: no data-dependent branch).
#[inline(always)]
fn count_le(leaves: &[Leaf], key: u64) -> usize {
    leaves.iter().map(|l| usize::from(l.first_key <= key)).sum()
}

/// Number of sorted `leaves` whose first key is `<= key`, by branchless binary search.
#[inline]
fn count_le_binary(leaves: &[Leaf], key: u64) -> usize {
    if leaves.is_empty() {
        return 0;
    }
    let mut base = 0usize;
    let mut len = leaves.len();
    while len > 1 {
        let half = len / 2;
        base += usize::from(leaves[base + half - 1].first_key <= key) * half;
        len -= half;
    }
    base + usize::from(leaves[base].first_key <= key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves_of(first_keys: &[u64]) -> Vec<Leaf> {
        let mut leaves: Vec<Leaf> = first_keys
            .iter()
            .enumerate()
            .map(|(i, &k)| Leaf {
                first_key: k,
                slope: 0.0,
                base: i as u64,
                span: 0,
            })
            .collect();
        leaves.extend([Leaf::SENTINEL; BUCKET_LEAVES_MAX]);
        leaves
    }

    fn check(first_keys: &[u64]) -> Router {
        let router = Router::build(first_keys, 2);
        router.check(first_keys.len()).expect("valid router");
        let leaves = leaves_of(first_keys);
        let mut probes: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1];
        for &k in first_keys {
            probes.extend([k, k.wrapping_sub(1), k.wrapping_add(1)]);
        }
        for key in probes {
            let want = first_keys.partition_point(|&k| k <= key).saturating_sub(1);
            assert_eq!(
                router.route(&leaves, first_keys.len(), key),
                want,
                "key {key}"
            );
        }
        router
    }

    #[test]
    fn routes_like_partition_point() {
        check(&[5]);
        check(&[0, u64::MAX]);
        check(&(0..1000u64).map(|i| i * 1_000_003).collect::<Vec<_>>());
        // A dense cluster plus far outliers: the cluster must get child tables.
        let mut keys: Vec<u64> = (0..5000u64).map(|i| (1 << 20) + i * 3).collect();
        keys.extend([1 << 62, u64::MAX - 5, u64::MAX]);
        assert!(check(&keys).tables.len() > 1);
    }

    #[test]
    fn depth_cap_marks_crowded_buckets() {
        // Nested clusters, each 2^10 times tighter: more levels than DEPTH_MAX allows.
        let mut keys = Vec::new();
        for level in 0..6u32 {
            let width = 1u64 << (60 - 10 * level);
            keys.extend((0..40u64).map(|i| (1u64 << 62) + i * (width / 40).max(1)));
        }
        keys.sort_unstable();
        keys.dedup();
        let router = check(&keys);
        assert!(
            router.entries.iter().any(|e| e & ENTRY_CROWDED != 0)
                || router.tables.len() <= DEPTH_MAX
        );
    }
}

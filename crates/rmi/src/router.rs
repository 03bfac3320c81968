//! The root: routes a key to the leaf whose range holds it, in a bounded number of steps.
//!
//! A radix table maps `(key − key_lo) >> shift` to the first leaf whose first key falls in that bucket
//! or later. `key_lo` and `shift` come from the keys actually present in the table's range, so the table
//! never assumes keys fill the top bits. A bucket holding more than [`BUCKET_LEAVES_MAX`] leaves gets a
//! child table over just its own key range (clusters and outliers thus cost one more level, not a long
//! search). Depth is capped at [`DEPTH_MAX`]; a crowded bucket at the last level is searched by
//! branchless binary search over its leaves' first keys.
//!
//! Bound on routing work per lookup: at most `DEPTH_MAX` table reads, then either a scan of at most
//! `BUCKET_LEAVES_MAX` first keys or, at depth `DEPTH_MAX` only, `⌈log2(leaves + 1)⌉` binary-search steps.

/// Tables on one root-to-leaf path, at most. Each level shrinks the key range by at least half.
pub const DEPTH_MAX: usize = 4;
/// A bucket with more leaves than this gets a child table (unless at `DEPTH_MAX`).
pub const BUCKET_LEAVES_MAX: usize = 8;
/// Largest radix table, in index bits.
pub const TABLE_BITS_MAX: u32 = 24;

/// One radix table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Smallest key of the table's range.
    pub key_lo: u64,
    /// Right shift applied to `key − key_lo`; `< 64`.
    pub shift: u32,
    /// Bucket count is `1 << bits`; `<= TABLE_BITS_MAX`.
    pub bits: u32,
    /// Index of bucket 0 in the shared entry array; the table owns `(1 << bits) + 1` entries.
    pub entries_offset: u64,
}

/// Entry layout: low 32 bits = first leaf whose bucket is `>=` this one; high 32 bits = child table id
/// (0 = none; table 0 is the root, so no child is ever 0).
pub const CHILD_SHIFT: u32 = 32;

/// All radix tables and their entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Router {
    /// Table 0 is the root. Children always have larger ids than their parent.
    pub tables: Vec<Table>,
    /// Entries of all tables.
    pub entries: Vec<u64>,
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
    /// Builds the router over leaves with strictly increasing `first_keys` (non-empty).
    pub fn build(first_keys: &[u64], buckets_per_leaf: u32) -> Router {
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
        router.tables.push(Table {
            key_lo: 0,
            shift: 0,
            bits: 0,
            entries_offset: 0,
        });
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
        self.tables[p.table] = Table {
            key_lo: p.key_lo,
            shift,
            bits,
            entries_offset: offset as u64,
        };
        // Leaf `carry_leaf` covers keys below the first bucketed leaf, so bucketing starts after it.
        let mut leaf = p.carry_leaf + 1;
        for bucket in 0..=buckets {
            while leaf < p.leaves_end
                && (((first_keys[leaf] - p.key_lo) >> shift) as usize) < bucket
            {
                leaf += 1;
            }
            self.entries.push(leaf as u64);
        }
        if p.depth >= DEPTH_MAX {
            return;
        }
        for bucket in 0..buckets {
            let start = self.entries[offset + bucket] as usize;
            let end = self.entries[offset + bucket + 1] as usize;
            if end - start <= BUCKET_LEAVES_MAX || shift == 0 {
                continue;
            }
            let child = self.tables.len();
            self.tables.push(Table {
                key_lo: 0,
                shift: 0,
                bits: 0,
                entries_offset: 0,
            });
            self.entries[offset + bucket] |= (child as u64) << CHILD_SHIFT;
            let key_lo = p.key_lo + ((bucket as u64) << shift);
            let key_hi = key_lo.saturating_add((1u64 << shift) - 1).min(p.key_hi);
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

    /// The leaf whose range holds `key`: the last leaf with `first_key <= key`, or leaf 0.
    #[inline(always)]
    pub fn route(&self, first_keys: &[u64], key: u64) -> usize {
        let mut table = self.tables[0];
        for _ in 0..DEPTH_MAX {
            let bucket = self.bucket(&table, key);
            let entry = self.entries[bucket];
            let child = (entry >> CHILD_SHIFT) as usize;
            if child != 0 {
                table = self.tables[child];
                continue;
            }
            let start = (entry as u32) as usize;
            let end = (self.entries[bucket + 1] as u32) as usize;
            return start - 1 + count_le(&first_keys[start..end], key);
        }
        unreachable_route()
    }

    /// Index into `entries` of the bucket of `key` in `table`.
    #[inline(always)]
    pub fn bucket(&self, table: &Table, key: u64) -> usize {
        let raw = key.saturating_sub(table.key_lo) >> table.shift;
        table.entries_offset as usize + raw.min((1u64 << table.bits) - 1) as usize
    }

    /// Structural invariants that keep `route` in bounds: tables and entries in range, entries
    /// non-decreasing leaf ids in `1..=leaf_count`, children deeper than their parent, depth capped.
    pub fn check(&self, leaf_count: usize) -> Result<(), String> {
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
            if table.shift >= 64 || table.bits > TABLE_BITS_MAX {
                return Err(format!(
                    "table {id}: shift {} or bits {} out of range",
                    table.shift, table.bits
                ));
            }
            let start =
                usize::try_from(table.entries_offset).map_err(|_| format!("table {id}: offset"))?;
            let end = start + (1usize << table.bits) + 1;
            let Some(entries) = self.entries.get(start..end) else {
                return Err(format!(
                    "table {id}: entries {start}..{end} beyond {}",
                    self.entries.len()
                ));
            };
            let mut previous = 1u64;
            for &entry in entries {
                let leaf = entry & u64::from(u32::MAX);
                if leaf < previous || leaf > leaf_count as u64 {
                    return Err(format!("table {id}: leaf id {leaf} out of order or range"));
                }
                previous = leaf;
                let child = (entry >> CHILD_SHIFT) as usize;
                if child != 0 {
                    if child <= id || child >= self.tables.len() {
                        return Err(format!("table {id}: child {child} is not a deeper table"));
                    }
                    depth[child] = depth[child].max(depth[id] + 1);
                    if depth[child] > DEPTH_MAX {
                        return Err(format!("table {child}: deeper than {DEPTH_MAX}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Bytes of model state the router holds.
    pub fn bytes(&self) -> usize {
        self.tables.len() * std::mem::size_of::<Table>() + self.entries.len() * 8
    }
}

/// Validated routers never get here: `fill_table` stops adding children at `DEPTH_MAX`, and
/// `Rmi::validate` checks the same of loaded files.
#[cold]
fn unreachable_route() -> usize {
    0
}

/// Number of `first_keys` that are `<= key`: a short linear count for small buckets, else branchless
/// binary search.
#[inline(always)]
fn count_le(first_keys: &[u64], key: u64) -> usize {
    if first_keys.len() <= BUCKET_LEAVES_MAX {
        return first_keys.iter().map(|&k| usize::from(k <= key)).sum();
    }
    let mut base = 0usize;
    let mut len = first_keys.len();
    while len > 1 {
        let half = len / 2;
        base += usize::from(first_keys[base + half - 1] <= key) * half;
        len -= half;
    }
    base + usize::from(first_keys[base] <= key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(first_keys: &[u64], key: u64) -> usize {
        first_keys.partition_point(|&k| k <= key).saturating_sub(1)
    }

    fn check(first_keys: &[u64]) {
        let router = Router::build(first_keys, 2);
        let mut probes: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1];
        for &k in first_keys {
            probes.extend([k, k.wrapping_sub(1), k.wrapping_add(1)]);
        }
        for key in probes {
            assert_eq!(
                router.route(first_keys, key),
                naive(first_keys, key),
                "key {key}"
            );
        }
    }

    #[test]
    fn routes_like_partition_point() {
        check(&[5]);
        check(&[0, u64::MAX]);
        check(&(0..1000u64).map(|i| i * 1_000_003).collect::<Vec<_>>());
        // A dense cluster plus far outliers: the cluster must get child tables.
        let mut keys: Vec<u64> = (0..5000u64).map(|i| (1 << 20) + i * 3).collect();
        keys.extend([1 << 62, u64::MAX - 5, u64::MAX]);
        check(&keys);
        let router = Router::build(&keys, 2);
        assert!(router.tables.len() > 1);
    }
}

//! The no-model shape: a static search tree over the key array (an implicit B+-tree, as in
//! Algorithmica's "S+ tree"), for sets where a model does not pay — small or cache-resident ones.
//!
//! The key array itself is the leaf level, cut into blocks of `block_keys` keys. Level 1 holds the last
//! key of every block; each higher level holds the last separator of every node (`NODE_KEYS`
//! separators, 128 bytes, two cache lines) of the level below, until one node remains: the root.
//! Levels are padded to whole nodes with `u64::MAX`, which is never `< key`.
//!
//! Lookup: at each level `c = node · NODE_KEYS + count(node < key)` — the number of that level's
//! separators below `key` — picks the node of the next level; at the bottom `c` is the block holding
//! the lower bound, and `c · block_keys + count(block < key)` is the answer. Every count is a fixed-width
//! SIMD compare; there is no data-dependent branch and no division. A lookup reads `depth` nodes and
//! one block: at most `block_keys` keys of the key array.
//!
//! Why the counts are exact: separators are keys, in order, so `count(level < key)` is a lower bound
//! over that level. If all of node `c`'s separators were `< key` then `c + 1` entries of the level above
//! would be `< key`, so the lower bound inside the level lies in node `c` — except when `key` exceeds
//! every separator, where `c` is the level's length and the node index is clamped to the last node,
//! whose count then yields the next level's length: still the exact count. At the bottom, block `c`'s
//! last key is the first separator `>= key`, so the answer lies in block `c` (or is `n` when
//! `c = blocks`, an empty block after clipping).

/// Separators per internal node: two cache lines of `u64`, two AVX-512 compares.
pub const NODE_KEYS: usize = 16;

/// One node: `NODE_KEYS` separators, aligned so a node is exactly two cache lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(128))]
pub(crate) struct Node(pub [u64; NODE_KEYS]);

/// One level of the tree: its nodes are `nodes[first..first + count]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Level {
    /// Index of the level's first node.
    pub first: usize,
    /// Nodes in the level (`>= 1`).
    pub count: usize,
}

/// A static search tree over a sorted key array it does not own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SearchTree {
    /// Keys per leaf block (a lookup reads at most this many keys of the array).
    pub block_keys: usize,
    /// Root first; the last level indexes the key array's blocks. Empty when the keys fit one block.
    pub levels: Vec<Level>,
    /// All nodes, level by level, root first.
    pub nodes: Vec<Node>,
}

/// Separators of the level above `entries`: the last entry of every group of `group`.
fn separators(entries: &[u64], group: usize) -> Vec<u64> {
    entries
        .chunks(group)
        .map(|c| *c.last().expect("chunks are non-empty"))
        .collect()
}

impl SearchTree {
    /// Builds the tree over sorted `keys` with leaf blocks of `block_keys` (`>= 1`) keys. O(n / block).
    pub(crate) fn build(keys: &[u64], block_keys: usize) -> SearchTree {
        let block_keys = block_keys.max(1);
        let mut tree = SearchTree {
            block_keys,
            ..SearchTree::default()
        };
        if keys.len() <= block_keys {
            return tree;
        }
        // Bottom-up: level 1 separates the key array's blocks, each next one the nodes below it.
        let mut bottom_up = vec![separators(keys, block_keys)];
        while bottom_up.last().is_some_and(|l| l.len() > NODE_KEYS) {
            let above = separators(bottom_up.last().expect("non-empty"), NODE_KEYS);
            bottom_up.push(above);
        }
        for level in bottom_up.iter().rev() {
            let first = tree.nodes.len();
            for chunk in level.chunks(NODE_KEYS) {
                let mut node = [u64::MAX; NODE_KEYS];
                node[..chunk.len()].copy_from_slice(chunk);
                tree.nodes.push(Node(node));
            }
            tree.levels.push(Level {
                first,
                count: tree.nodes.len() - first,
            });
        }
        tree
    }

    /// Nodes per level, root first, of the tree over `key_count` keys in blocks of `block_keys` (`>= 1`).
    /// Computed without allocating per key, so a file's header can be checked before anything is sized
    /// by it.
    pub(crate) fn level_nodes(key_count: usize, block_keys: usize) -> Vec<usize> {
        let mut counts = Vec::new();
        let mut entries = key_count.div_ceil(block_keys.max(1));
        if entries > 1 {
            loop {
                let nodes = entries.div_ceil(NODE_KEYS);
                counts.push(nodes);
                if nodes == 1 {
                    break;
                }
                entries = nodes;
            }
        }
        counts.reverse();
        counts
    }

    /// A tree with the given levels (root first), every separator `u64::MAX`, to be filled in.
    pub(crate) fn skeleton(level_nodes: &[usize], block_keys: usize) -> SearchTree {
        let mut tree = SearchTree {
            block_keys,
            ..SearchTree::default()
        };
        for &count in level_nodes {
            tree.levels.push(Level {
                first: tree.nodes.len(),
                count,
            });
            tree.nodes
                .extend(std::iter::repeat_n(Node([u64::MAX; NODE_KEYS]), count));
        }
        tree
    }

    /// Levels of internal nodes a lookup reads.
    pub(crate) fn depth(&self) -> usize {
        self.levels.len()
    }

    /// Bytes of the tree beyond the key array.
    pub(crate) fn bytes(&self) -> usize {
        self.nodes.len() * std::mem::size_of::<Node>() + self.levels.len() * 16
    }

    /// The block `[lo, hi)` of `keys` (clipped to `len`) that holds the lower bound of `key`, counting
    /// separators with `count_less`. In bounds for any tree and any `len`.
    #[inline(always)]
    pub(crate) fn block(
        &self,
        key: u64,
        len: usize,
        count_less: impl Fn(&[u64], u64) -> usize,
    ) -> (usize, usize) {
        let mut c = 0usize;
        for level in &self.levels {
            // `c <= nodes of this level` (see the module comment); the clamp only acts when `key` is
            // above every separator, and keeps a crafted tree in bounds.
            let node = c.min(level.count - 1);
            c = node * NODE_KEYS + count_less(&self.nodes[level.first + node].0, key);
        }
        let lo = c.saturating_mul(self.block_keys).min(len);
        (lo, lo.saturating_add(self.block_keys).min(len))
    }

    /// Exact checks against `keys`: the tree must be the one `build(keys, block_keys)` makes. O(n / block).
    pub(crate) fn matches(&self, keys: &[u64]) -> bool {
        *self == SearchTree::build(keys, self.block_keys)
    }

    /// Structural invariants that keep `block` in bounds whatever the separators say: levels contiguous,
    /// non-empty, covering the nodes, the root a single node, each level exactly as many nodes as the
    /// separators the level above holds.
    pub(crate) fn check(&self, key_count: usize) -> Result<(), String> {
        if self.block_keys == 0 {
            return Err("search tree with empty blocks".into());
        }
        let expected = SearchTree::level_nodes(key_count, self.block_keys);
        if self.levels.len() != expected.len() {
            return Err(format!(
                "search tree has {} levels, {key_count} keys need {}",
                self.levels.len(),
                expected.len()
            ));
        }
        let mut next = 0usize;
        for (i, (level, &nodes)) in self.levels.iter().zip(&expected).enumerate() {
            if level.first != next || level.count != nodes {
                return Err(format!("search tree level {i} out of place"));
            }
            next += nodes;
        }
        if next != self.nodes.len() {
            return Err("search tree nodes do not match its levels".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::count_less_scalar;

    fn lower_bound(tree: &SearchTree, keys: &[u64], key: u64) -> usize {
        let (lo, hi) = tree.block(key, keys.len(), count_less_scalar);
        assert!(hi - lo <= tree.block_keys);
        lo + count_less_scalar(&keys[lo..hi], key)
    }

    #[test]
    fn every_size_around_node_boundaries_is_exact() {
        for block in [1usize, 4, 16, 32] {
            for n in (0..600).chain([4095, 4096, 4097, 8191, 8192, 8193, 70_000]) {
                let keys: Vec<u64> = (0..n as u64).map(|i| i * 3 + 1).collect();
                let tree = SearchTree::build(&keys, block);
                tree.check(n).expect("valid");
                assert!(tree.matches(&keys));
                for probe in (0..n as u64 * 3 + 3).step_by(if n > 1000 { 7 } else { 1 }) {
                    assert_eq!(
                        lower_bound(&tree, &keys, probe),
                        keys.partition_point(|k| *k < probe),
                        "block {block} n {n} probe {probe}"
                    );
                }
                assert_eq!(lower_bound(&tree, &keys, u64::MAX), n);
            }
        }
    }

    #[test]
    fn extreme_keys() {
        let keys = [0, 1, u64::MAX - 1, u64::MAX];
        let tree = SearchTree::build(&keys, 1);
        for p in [0, 1, 2, u64::MAX - 1, u64::MAX] {
            assert_eq!(
                lower_bound(&tree, &keys, p),
                keys.partition_point(|k| *k < p)
            );
        }
    }

    #[test]
    fn crafted_levels_are_refused() {
        let keys: Vec<u64> = (0..5000).collect();
        let mut tree = SearchTree::build(&keys, 16);
        tree.check(keys.len()).expect("valid");
        assert!(tree.check(keys.len() * 40).is_err());
        tree.levels[1].count += 1;
        assert!(tree.check(keys.len()).is_err());
    }
}

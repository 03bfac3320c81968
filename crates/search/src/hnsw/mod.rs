//! The HNSW graph of one vector field: vectors and level-0 links in one chunked arena of atomics,
//! upper levels in another, a pending set scanned exactly by every search until the background linker
//! links it, tombstones repaired by `maintain`. Layout, algorithm and numbers: docs/design/search.md.
//!
//! - `arena.rs` — the chunked `AtomicU32` arena (grows without moving records).
//! - `graph.rs` — layer search (filtered during traversal), greedy descent, heuristic selection, linking.
//! - `file.rs` — the persisted form and its verification.
//!
//! Concurrency: `set`/`remove` are serialised by a small mutex (never held across graph work). Any
//! number of threads may call `link_pending` at once: each claims the nodes it links, rewrites a
//! node's list only under that node's striped list lock, and takes the entry lock when it may move
//! the entry point; `maintain` and `write_to` exclude them (the graph lock, shared by linkers);
//! searches take none of these. Every shared word is an atomic, read racily but always in range: a
//! neighbour id read while a list is rewritten is some id the list held, never out of bounds.
#![deny(unsafe_code)]

mod arena;
mod file;
mod graph;
#[cfg(test)]
mod tests;

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::cancel::{Cancel, Poll, NEVER};
use crate::distance::{self, Metric, SharedKernel};
use arena::Arena;
pub use file::FormatError;
use graph::{Cand, Linker, Scratch};

/// Build parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node on upper levels; level 0 keeps `2·m`.
    pub m: usize,
    /// Beam width while linking.
    pub ef_construction: usize,
    /// Seed of the level generator (the graph is deterministic for a given order of operations).
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 24,
            ef_construction: 200,
            seed: 0x6b79_726f_6462,
        }
    }
}

/// Result of a search.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchOut {
    /// (node, score), score descending, ties by node ascending.
    pub hits: Vec<(u32, f32)>,
    /// Vectors scored while walking the graph.
    pub visited: usize,
    /// Vectors scored by exact scans (pending nodes, or the nodes given to `search_exact`).
    pub exact_scanned: usize,
}

/// Counts and memory of an index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HnswStats {
    /// Nodes that searches can return (pending or linked).
    pub live: usize,
    /// Live nodes not yet (re)linked into the graph.
    pub pending: usize,
    /// Removed nodes whose graph slot may still be pointed at.
    pub tombstones: usize,
    /// Bytes allocated by the index (arenas; search scratch excluded).
    pub bytes: usize,
}

/// Most levels a node can have; with m ≥ 2 a level above 16 has probability < 2^-16 per node.
const LEVEL_MAX: usize = 16;
/// Limits on parameters (the file format stores list lengths as u16).
const M_MIN: usize = 2;
const M_MAX: usize = 1024;

// Node states, the low two bits of the meta word; the bits above count versions (bumped by `set`).
const STATE_EMPTY: u32 = 0;
const STATE_PENDING: u32 = 1;
const STATE_LINKED: u32 = 2;
const STATE_REMOVED: u32 = 3;
const STATE_MASK: u32 = 3;
const VERSION_ONE: u32 = 4;

const ENTRY_NONE: u64 = u64::MAX;

/// Beam expansions (up to 2·m distances each) or pending-bitmap words (32 nodes) between looks at
/// a search's cancellation token.
const POLL_EVERY: u32 = 32;
/// Nodes of an exact scan between looks at its cancellation token.
const EXACT_POLL_EVERY: u32 = 1024;

/// Word offsets of a node's record in the level-0 arena:
/// `[vector: dim][meta][count0][level + 1, 0 = none][upper slot base][level-0 links: 2·m]`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    dim: usize,
    m: usize,
    m0: usize,
}

impl Layout {
    const fn meta(&self) -> usize {
        self.dim
    }
    const fn count0(&self) -> usize {
        self.dim + 1
    }
    const fn level(&self) -> usize {
        self.dim + 2
    }
    const fn upper(&self) -> usize {
        self.dim + 3
    }
    const fn links0(&self) -> usize {
        self.dim + 4
    }
    const fn stride(&self) -> usize {
        self.dim + 4 + self.m0
    }
}

/// A filtered, concurrently updatable HNSW index over dense `u32` node ids.
pub struct Hnsw {
    metric: Metric,
    params: HnswParams,
    layout: Layout,
    /// `1 / ln(m)`: the level distribution's scale.
    level_scale: f64,
    sim: SharedKernel,
    /// Level-0 records (see [`Layout`]).
    nodes: Arena,
    /// Upper-level lists, `[count][links: m]`; a node of level L owns slots `base .. base + L`.
    upper: Arena,
    /// One bit per node that may be pending; the node's state word is the truth.
    pending_bits: Arena,
    /// Highest node id ever set, plus one.
    nodes_end: AtomicU32,
    upper_slots_used: AtomicU32,
    /// `level << 32 | node` of the entry point, or `ENTRY_NONE`.
    entry: AtomicU64,
    live: AtomicUsize,
    pending: AtomicUsize,
    tombstones: AtomicUsize,
    /// Serialises `set`/`remove`; holds the normalisation buffer.
    writer: Mutex<Vec<f32>>,
    /// Shared by linkers, exclusive for `maintain` and `write_to`.
    graph: RwLock<()>,
    /// Idle linkers' state (scratch buffers, level generator), one per concurrent `link_pending`.
    linkers: Mutex<Vec<Linker>>,
    /// Linkers created so far (seeds each one's level generator).
    linkers_made: AtomicU64,
    /// Next pending-bitmap word a linker looks at.
    link_cursor: AtomicU32,
    /// One bit per node some linker is linking.
    claimed: Arena,
    /// Held while the entry point may change (first node, a node above the top level).
    entry_mu: Mutex<()>,
    /// A node's lists are rewritten only under `list_locks[node % LIST_LOCKS]`.
    list_locks: Box<[Mutex<()>]>,
    scratch_pool: Mutex<Vec<Scratch>>,
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("dim", &self.layout.dim)
            .field("metric", &self.metric)
            .field("params", &self.params)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

const SCRATCH_POOL_MAX: usize = 64;
/// Stripes of the per-node list locks.
const LIST_LOCKS: usize = 1024;

impl Hnsw {
    /// An empty index. Panics if `dim` is 0 or `params.m` is outside 2..=1024.
    pub fn new(dim: usize, metric: Metric, params: HnswParams) -> Self {
        assert!(dim > 0, "hnsw: dim must be positive");
        assert!(
            (M_MIN..=M_MAX).contains(&params.m),
            "hnsw: m must be in {M_MIN}..={M_MAX}"
        );
        let layout = Layout {
            dim,
            m: params.m,
            m0: 2 * params.m,
        };
        Hnsw {
            metric,
            params,
            layout,
            level_scale: 1.0 / (params.m as f64).ln(),
            sim: distance::similarity_kernel(metric),
            nodes: Arena::new(layout.stride()),
            upper: Arena::new(1 + params.m),
            pending_bits: Arena::new(1),
            nodes_end: AtomicU32::new(0),
            upper_slots_used: AtomicU32::new(0),
            entry: AtomicU64::new(ENTRY_NONE),
            live: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            tombstones: AtomicUsize::new(0),
            writer: Mutex::new(Vec::with_capacity(dim)),
            graph: RwLock::new(()),
            linkers: Mutex::new(Vec::new()),
            linkers_made: AtomicU64::new(0),
            link_cursor: AtomicU32::new(0),
            claimed: Arena::new(1),
            entry_mu: Mutex::new(()),
            list_locks: (0..LIST_LOCKS).map(|_| Mutex::new(())).collect(),
            scratch_pool: Mutex::new(Vec::new()),
        }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.layout.dim
    }

    /// Metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Build parameters.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Stores `vector` for `node` (cosine: a normalised copy; a vector that cannot be normalised is
    /// stored as zeros and scores 0: [`distance::prepare`]), replacing any previous vector, and makes it visible to `search` at once as a pending node.
    /// O(dim) plus, once per 256 ids, a chunk allocation; never waits for graph work. Panics if
    /// `vector.len() != dim` (callers validate input). Calls for one node are serialised internally.
    pub fn set(&self, node: u32, vector: &[f32]) {
        assert_eq!(vector.len(), self.layout.dim, "hnsw set: wrong dimension");
        let mut buf = self.writer.lock();
        buf.clear();
        buf.extend_from_slice(vector);
        distance::prepare(self.metric, &mut buf);
        let rec = self.nodes.ensure(node);
        self.pending_bits.ensure(node / 32);
        self.nodes_end.fetch_max(node + 1, Ordering::AcqRel);
        for (word, x) in rec[..self.layout.dim].iter().zip(buf.iter()) {
            word.store(x.to_bits(), Ordering::Relaxed);
        }
        let meta = &rec[self.layout.meta()];
        let mut old = meta.load(Ordering::Acquire);
        loop {
            let new = ((old & !STATE_MASK).wrapping_add(VERSION_ONE)) | STATE_PENDING;
            match meta.compare_exchange_weak(old, new, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => break,
                Err(current) => old = current,
            }
        }
        match old & STATE_MASK {
            STATE_EMPTY => {
                self.live.fetch_add(1, Ordering::Relaxed);
                self.pending.fetch_add(1, Ordering::SeqCst);
            }
            STATE_REMOVED => {
                self.tombstones.fetch_sub(1, Ordering::Relaxed);
                self.live.fetch_add(1, Ordering::Relaxed);
                self.pending.fetch_add(1, Ordering::SeqCst);
            }
            STATE_LINKED => {
                self.pending.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        self.set_pending_bit(node);
    }

    /// After this returns no search returns `node`; its graph slot stays a tombstone (still
    /// traversed) until `set` reuses it or `maintain` repairs the lists pointing at it.
    pub fn remove(&self, node: u32) {
        let _serial = self.writer.lock();
        let Some(rec) = self.nodes.get(node) else {
            return;
        };
        let meta = &rec[self.layout.meta()];
        let mut old = meta.load(Ordering::Acquire);
        loop {
            let state = old & STATE_MASK;
            if state != STATE_PENDING && state != STATE_LINKED {
                return;
            }
            // Never linked (no level yet): nothing points at it, so the slot is free at once.
            let never_linked = rec[self.layout.level()].load(Ordering::Acquire) == 0;
            let to = if never_linked {
                STATE_EMPTY
            } else {
                STATE_REMOVED
            };
            match meta.compare_exchange_weak(
                old,
                (old & !STATE_MASK) | to,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.live.fetch_sub(1, Ordering::Relaxed);
                    if state == STATE_PENDING {
                        self.pending.fetch_sub(1, Ordering::SeqCst);
                    }
                    if to == STATE_REMOVED {
                        self.tombstones.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                Err(current) => old = current,
            }
        }
        self.settle_pending_bit(node);
    }

    /// Live nodes not yet linked.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// The stored (for cosine: normalised) vector of a live node.
    pub fn vector(&self, node: u32) -> Option<Vec<f32>> {
        let rec = self.nodes.get(node)?;
        if !is_live(self.state_of(rec)) {
            return None;
        }
        Some(
            rec[..self.layout.dim]
                .iter()
                .map(|w| f32::from_bits(w.load(Ordering::Relaxed)))
                .collect(),
        )
    }

    /// Counts and allocated bytes.
    pub fn stats(&self) -> HnswStats {
        HnswStats {
            live: self.live.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            tombstones: self.tombstones.load(Ordering::Relaxed),
            bytes: self.nodes.bytes() + self.upper.bytes() + self.pending_bits.bytes(),
        }
    }

    /// Top-k by score over the graph (greedy descent, then a beam of `ef.max(k)` on level 0) merged
    /// with an exact scan of pending nodes. With `allow`, rejected nodes are traversed but never
    /// returned, and the beam keeps expanding until it holds `ef` allowed nodes or runs out of
    /// reachable ones (hnswlib's filtered search). Panics if `query.len() != dim`.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> SearchOut {
        self.search_with(query, k, ef, allow, &NEVER)
            .expect("a search that cannot be cancelled")
    }

    /// [`search`](Self::search) that stops when `cancel` fires: the pending scan and the beam
    /// look at it every few dozen expansions, and the search then answers
    /// [`Error::Cancelled`](crate::Error::Cancelled).
    pub fn search_with(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&(dyn Fn(u32) -> bool + Sync)>,
        cancel: &Cancel,
    ) -> crate::Result<SearchOut> {
        assert_eq!(query.len(), self.layout.dim, "hnsw search: wrong dimension");
        let mut out = SearchOut::default();
        if k == 0 {
            return Ok(out);
        }
        let mut poll = Poll::new(cancel, POLL_EVERY);
        let mut scratch = self.take_scratch();
        let mut q = std::mem::take(&mut scratch.query);
        self.prepare_query(query, &mut q);
        let mut hits: Vec<Cand> = Vec::new();
        // Pending nodes first, the graph second: a node the linker moves from pending to linked
        // during this search is then either scored by the scan (still pending when scanned) or
        // already in the graph when the walk starts. The other order could miss it in both.
        if self.pending.load(Ordering::SeqCst) > 0 {
            out.exact_scanned = self.scan_pending(&q, k, allow, &mut hits, &mut poll);
        }
        if let Some((entry, top_level)) = self.entry() {
            out.visited =
                self.search_graph(&mut scratch, &q, entry, top_level, k, ef, allow, &mut poll);
            hits.extend(scratch.top.drain().map(|c| c.0));
        }
        out.hits = self.finish(hits, k);
        scratch.query = q;
        self.give_back(scratch);
        cancel.check()?;
        Ok(out)
    }

    /// Exact top-k over `nodes` (removed and unknown ones skipped): the planner's exact path.
    pub fn search_exact(
        &self,
        query: &[f32],
        k: usize,
        nodes: &mut dyn Iterator<Item = u32>,
    ) -> SearchOut {
        self.search_exact_with(query, k, nodes, &NEVER)
            .expect("a search that cannot be cancelled")
    }

    /// [`search_exact`](Self::search_exact) that stops when `cancel` fires (looked at every
    /// 1,024 nodes), answering [`Error::Cancelled`](crate::Error::Cancelled).
    pub fn search_exact_with(
        &self,
        query: &[f32],
        k: usize,
        nodes: &mut dyn Iterator<Item = u32>,
        cancel: &Cancel,
    ) -> crate::Result<SearchOut> {
        assert_eq!(query.len(), self.layout.dim, "hnsw search: wrong dimension");
        let mut out = SearchOut::default();
        if k == 0 {
            return Ok(out);
        }
        let mut poll = Poll::new(cancel, EXACT_POLL_EVERY);
        let mut q = Vec::with_capacity(self.layout.dim);
        self.prepare_query(query, &mut q);
        let mut best: BinaryHeap<std::cmp::Reverse<Cand>> = BinaryHeap::with_capacity(k + 1);
        for node in nodes {
            if poll.stop() {
                break;
            }
            let Some(rec) = self.nodes.get(node) else {
                continue;
            };
            if !is_live(self.state_of(rec)) {
                continue;
            }
            out.exact_scanned += 1;
            let sim = (self.sim)(&q, &rec[..self.layout.dim]);
            push_bounded(&mut best, Cand { sim, node }, k);
        }
        cancel.check()?;
        out.hits = self.finish(best.into_iter().map(|c| c.0).collect(), k);
        Ok(out)
    }

    fn prepare_query(&self, query: &[f32], q: &mut Vec<f32>) {
        q.clear();
        q.extend_from_slice(query);
        distance::prepare(self.metric, q);
    }

    /// Exact scan of the pending nodes into `hits` (at most `k` of them). Returns how many it scored.
    fn scan_pending(
        &self,
        q: &[f32],
        k: usize,
        allow: Option<&(dyn Fn(u32) -> bool + Sync)>,
        hits: &mut Vec<Cand>,
        poll: &mut Poll<'_>,
    ) -> usize {
        let words = self.nodes_end.load(Ordering::Acquire).div_ceil(32);
        let mut best: BinaryHeap<std::cmp::Reverse<Cand>> = BinaryHeap::with_capacity(k + 1);
        let mut scanned = 0;
        for w in 0..words {
            let Some(word) = self.pending_bits.get(w) else {
                continue;
            };
            if poll.stop() {
                break;
            }
            let mut bits = word[0].load(Ordering::SeqCst);
            while bits != 0 {
                let node = w * 32 + bits.trailing_zeros();
                bits &= bits - 1;
                let Some(rec) = self.nodes.get(node) else {
                    continue;
                };
                if self.state_of(rec) != STATE_PENDING || allow.is_some_and(|f| !f(node)) {
                    continue;
                }
                scanned += 1;
                let sim = (self.sim)(q, &rec[..self.layout.dim]);
                push_bounded(&mut best, Cand { sim, node }, k);
            }
        }
        hits.extend(best.into_iter().map(|c| c.0));
        scanned
    }

    /// Dedupes, drops nodes removed meanwhile, orders (score desc, node asc), keeps `k`, converts.
    fn finish(&self, mut hits: Vec<Cand>, k: usize) -> Vec<(u32, f32)> {
        hits.sort_unstable_by_key(|c| c.node);
        hits.dedup_by_key(|c| c.node);
        hits.retain(|c| {
            self.nodes
                .get(c.node)
                .is_some_and(|rec| is_live(self.state_of(rec)))
        });
        hits.sort_unstable_by(|a, b| b.cmp(a));
        hits.truncate(k);
        hits.iter()
            .map(|c| (c.node, distance::similarity_to_score(self.metric, c.sim)))
            .collect()
    }

    fn take_scratch(&self) -> Scratch {
        self.scratch_pool.lock().pop().unwrap_or_default()
    }

    fn give_back(&self, scratch: Scratch) {
        let mut pool = self.scratch_pool.lock();
        if pool.len() < SCRATCH_POOL_MAX {
            pool.push(scratch);
        }
    }

    #[inline(always)]
    fn state_of(&self, rec: &[AtomicU32]) -> u32 {
        rec[self.layout.meta()].load(Ordering::Acquire) & STATE_MASK
    }

    fn entry(&self) -> Option<(u32, usize)> {
        let e = self.entry.load(Ordering::Acquire);
        (e != ENTRY_NONE).then_some((e as u32, (e >> 32) as usize))
    }

    fn set_entry(&self, entry: Option<(u32, usize)>) {
        let e = entry.map_or(ENTRY_NONE, |(n, l)| (l as u64) << 32 | u64::from(n));
        self.entry.store(e, Ordering::Release);
    }

    fn set_pending_bit(&self, node: u32) {
        let word = self.pending_bits.ensure(node / 32);
        word[0].fetch_or(1 << (node % 32), Ordering::SeqCst);
    }

    /// Clears `node`'s pending bit, then sets it again if the node is pending: a `set` whose bit
    /// landed before the clear stored its state before that, so the re-check sees it.
    fn settle_pending_bit(&self, node: u32) {
        let Some(word) = self.pending_bits.get(node / 32) else {
            return;
        };
        word[0].fetch_and(!(1 << (node % 32)), Ordering::SeqCst);
        if self
            .nodes
            .get(node)
            .is_some_and(|rec| self.state_of(rec) == STATE_PENDING)
        {
            word[0].fetch_or(1 << (node % 32), Ordering::SeqCst);
        }
    }
}

fn is_live(state: u32) -> bool {
    state == STATE_PENDING || state == STATE_LINKED
}

/// Keeps the best `k` in a min-heap.
fn push_bounded(heap: &mut BinaryHeap<std::cmp::Reverse<Cand>>, c: Cand, k: usize) {
    if heap.len() < k {
        heap.push(std::cmp::Reverse(c));
    } else if heap.peek().is_some_and(|worst| c > worst.0) {
        heap.pop();
        heap.push(std::cmp::Reverse(c));
    }
}

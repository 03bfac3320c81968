//! Graph algorithms: layer search (filtered during traversal), greedy descent, hnswlib's
//! neighbour-selection heuristic, linking pending nodes, repairing lists that point at tombstones.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering};

use rand::Rng;

use super::{
    is_live, Hnsw, LEVEL_MAX, STATE_EMPTY, STATE_LINKED, STATE_MASK, STATE_PENDING, STATE_REMOVED,
};
use crate::cancel::Poll;
use crate::distance;

/// A scored node. Ordered by similarity, then by *lower* node id: "greater" is always "better".
#[derive(Clone, Copy, Debug)]
pub(super) struct Cand {
    pub(super) sim: f32,
    pub(super) node: u32,
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.sim
            .total_cmp(&other.sim)
            .then_with(|| other.node.cmp(&self.node))
    }
}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Cand {}

/// Per-search buffers, pooled: an epoch-tagged visited array (cleared only when the epoch wraps).
#[derive(Default)]
pub(super) struct Scratch {
    visited: Vec<u16>,
    epoch: u16,
    cand: BinaryHeap<Cand>,
    pub(super) top: BinaryHeap<Reverse<Cand>>,
    links: Vec<u32>,
    fresh: Vec<u32>,
    pub(super) query: Vec<f32>,
}

impl Scratch {
    fn begin(&mut self, nodes_end: usize) {
        if self.visited.len() < nodes_end {
            self.visited.resize(nodes_end, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.visited.fill(0);
            self.epoch = 1;
        }
        self.cand.clear();
        self.top.clear();
    }
}

/// True the first time `node` is seen in this epoch.
#[inline(always)]
fn first_visit(visited: &mut Vec<u16>, epoch: u16, node: u32) -> bool {
    let i = node as usize;
    if i >= visited.len() {
        // A node linked after this search sized its array.
        visited.resize(i + 1, 0);
    }
    if visited[i] == epoch {
        false
    } else {
        visited[i] = epoch;
        true
    }
}

/// One linker's state (scratch buffers, level generator); pooled by the index.
pub(super) struct Linker {
    scratch: Scratch,
    rng: rand::rngs::SmallRng,
    base: Vec<f32>,
    chosen: Vec<Cand>,
    chosen_vectors: Vec<f32>,
    cands: Vec<Cand>,
    links: Vec<u32>,
    more: Vec<u32>,
    /// Links chosen per level while connecting one node, published bottom-up.
    per_level: Vec<Vec<Cand>>,
    /// The node's lists when connecting began (to keep reverse links added meanwhile).
    before: Vec<Vec<u32>>,
}

impl Linker {
    pub(super) fn new(rng: rand::rngs::SmallRng) -> Self {
        Linker {
            scratch: Scratch::default(),
            rng,
            base: Vec::new(),
            chosen: Vec::new(),
            chosen_vectors: Vec::new(),
            cands: Vec::new(),
            links: Vec::new(),
            more: Vec::new(),
            per_level: Vec::new(),
            before: Vec::new(),
        }
    }
}

/// Upper bound on greedy steps per level (each step strictly improves; this only guards against
/// vectors rewritten under the walk).
const GREEDY_STEPS_MAX: usize = 100_000;
/// How many neighbours ahead to prefetch.
const PREFETCH_AHEAD: usize = 3;

impl Hnsw {
    /// Descends from the entry point and runs the level-0 beam; the results are left in `s.top`.
    /// Stops early when `poll` says so (the caller reports the cancellation).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn search_graph(
        &self,
        s: &mut Scratch,
        q: &[f32],
        entry: u32,
        top_level: usize,
        k: usize,
        ef: usize,
        allow: Option<&(dyn Fn(u32) -> bool + Sync)>,
        poll: &mut Poll<'_>,
    ) -> usize {
        let Some(rec) = self.nodes.get(entry) else {
            return 0;
        };
        let mut cur = Cand {
            sim: (self.sim)(q, &rec[..self.layout.dim]),
            node: entry,
        };
        let mut visited = 1;
        for level in (1..=top_level).rev() {
            cur = self.greedy(s, q, cur, level, &mut visited);
        }
        let meta = self.layout.meta();
        visited += match allow {
            None => self.search_layer(s, q, cur, ef.max(k), 0, poll, |_, rec| {
                is_live(rec[meta].load(Ordering::Acquire) & STATE_MASK)
            }),
            Some(allow) => self.search_layer(s, q, cur, ef.max(k), 0, poll, |node, rec| {
                is_live(rec[meta].load(Ordering::Acquire) & STATE_MASK) && allow(node)
            }),
        };
        visited
    }

    /// Greedy walk on one upper level: move to the best neighbour until none is better.
    fn greedy(
        &self,
        s: &mut Scratch,
        q: &[f32],
        mut cur: Cand,
        level: usize,
        visited: &mut usize,
    ) -> Cand {
        for _ in 0..GREEDY_STEPS_MAX {
            let mut changed = false;
            self.links_into(cur.node, level, &mut s.links);
            for &node in &s.links {
                let Some(rec) = self.nodes.get(node) else {
                    continue;
                };
                *visited += 1;
                let sim = (self.sim)(q, &rec[..self.layout.dim]);
                if sim > cur.sim {
                    cur = Cand { sim, node };
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        cur
    }

    /// Beam search of width `ef` on `level` from `entry`. Nodes failing `accept` are expanded like the
    /// others but never enter the result set, and the stopping bound comes from the result set only,
    /// so the walk goes on until `ef` accepted nodes are found or the reachable set is exhausted
    /// — or `poll` stops it. Results are left in `s.top`; returns how many vectors were scored.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn search_layer<F: Fn(u32, &[AtomicU32]) -> bool>(
        &self,
        s: &mut Scratch,
        q: &[f32],
        entry: Cand,
        ef: usize,
        level: usize,
        poll: &mut Poll<'_>,
        accept: F,
    ) -> usize {
        let dim = self.layout.dim;
        s.begin(self.nodes_end.load(Ordering::Acquire) as usize);
        first_visit(&mut s.visited, s.epoch, entry.node);
        s.cand.push(entry);
        if let Some(rec) = self.nodes.get(entry.node) {
            if accept(entry.node, rec) {
                s.top.push(Reverse(entry));
            }
        }
        let mut scored = 0;
        while let Some(c) = s.cand.pop() {
            if s.top.len() >= ef && s.top.peek().is_some_and(|worst| c.sim < worst.0.sim) {
                break;
            }
            if poll.stop() {
                break;
            }
            self.links_into(c.node, level, &mut s.links);
            s.fresh.clear();
            for &node in &s.links {
                if first_visit(&mut s.visited, s.epoch, node) {
                    s.fresh.push(node);
                }
            }
            for &node in s.fresh.iter().take(PREFETCH_AHEAD) {
                if let Some(rec) = self.nodes.get(node) {
                    distance::prefetch(&rec[..=dim]);
                }
            }
            for i in 0..s.fresh.len() {
                if let Some(&ahead) = s.fresh.get(i + PREFETCH_AHEAD) {
                    if let Some(rec) = self.nodes.get(ahead) {
                        distance::prefetch(&rec[..=dim]);
                    }
                }
                let node = s.fresh[i];
                let Some(rec) = self.nodes.get(node) else {
                    continue;
                };
                scored += 1;
                let sim = (self.sim)(q, &rec[..dim]);
                let full = s.top.len() >= ef;
                if !full || s.top.peek().is_some_and(|worst| sim > worst.0.sim) {
                    let cand = Cand { sim, node };
                    s.cand.push(cand);
                    if accept(node, rec) {
                        s.top.push(Reverse(cand));
                        if s.top.len() > ef {
                            s.top.pop();
                        }
                    }
                }
            }
        }
        scored
    }

    /// Copies `node`'s links on `level` into `out` (empty if it has none there).
    pub(super) fn links_into(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        let Some(rec) = self.nodes.get(node) else {
            return;
        };
        if level == 0 {
            let count =
                (rec[self.layout.count0()].load(Ordering::Acquire) as usize).min(self.layout.m0);
            let start = self.layout.links0();
            out.extend(
                rec[start..start + count]
                    .iter()
                    .map(|w| w.load(Ordering::Relaxed)),
            );
            return;
        }
        let Some(slot) = self.upper_slot(rec, level) else {
            return;
        };
        let count = (slot[0].load(Ordering::Acquire) as usize).min(self.layout.m);
        out.extend(slot[1..1 + count].iter().map(|w| w.load(Ordering::Relaxed)));
    }

    /// The list of `rec`'s node on upper `level`, if it has that level.
    fn upper_slot(&self, rec: &[AtomicU32], level: usize) -> Option<&[AtomicU32]> {
        let level_plus_one = rec[self.layout.level()].load(Ordering::Acquire) as usize;
        if level == 0 || level >= level_plus_one {
            return None;
        }
        let base = rec[self.layout.upper()].load(Ordering::Acquire);
        self.upper.get(base.checked_add(level as u32 - 1)?)
    }

    /// The linker's postcondition on a list it selected for `node` on `level`: at most the level's
    /// capacity, never the node itself (a loaded file's lists are checked by the loader instead).
    fn debug_check_links(&self, node: u32, level: usize, links: &[u32]) {
        let cap = if level == 0 {
            self.layout.m0
        } else {
            self.layout.m
        };
        debug_assert!(
            links.len() <= cap,
            "node {node} level {level}: {} links",
            links.len()
        );
        debug_assert!(
            !links.contains(&node),
            "node {node} level {level}: a self-link"
        );
    }

    /// Overwrites `node`'s list on `level`: entries first, then the count (readers clamp it).
    pub(super) fn write_links(&self, node: u32, level: usize, links: &[u32]) {
        let Some(rec) = self.nodes.get(node) else {
            return;
        };
        let (count, slots) = if level == 0 {
            let start = self.layout.links0();
            (
                &rec[self.layout.count0()],
                &rec[start..start + self.layout.m0],
            )
        } else {
            let Some(slot) = self.upper_slot(rec, level) else {
                return;
            };
            (&slot[0], &slot[1..])
        };
        let n = links.len().min(slots.len());
        for (slot, &id) in slots.iter().zip(&links[..n]) {
            slot.store(id, Ordering::Relaxed);
        }
        count.store(n as u32, Ordering::Release);
    }

    /// Links up to `max` pending nodes. Callers may run concurrently: each claims the nodes it links.
    pub fn link_pending(&self, max: usize) -> usize {
        let words = self.nodes_end.load(Ordering::Acquire).div_ceil(32);
        if words == 0 || max == 0 {
            return 0;
        }
        let _graph = self.graph.read();
        let mut lk = self.take_linker();
        let mut linked = 0;
        let mut w = self.link_cursor.load(Ordering::Relaxed) % words;
        for _ in 0..=words {
            let bits_now = self
                .pending_bits
                .get(w)
                .map_or(0, |word| word[0].load(Ordering::SeqCst));
            let mut bits = bits_now;
            while bits != 0 && linked < max {
                let node = w * 32 + bits.trailing_zeros();
                bits &= bits - 1;
                if !self.claim(node) {
                    continue; // another linker has it
                }
                let done = self.link_one(&mut lk, node);
                self.unclaim(node);
                if done {
                    linked += 1;
                }
            }
            if linked >= max {
                break;
            }
            w = (w + 1) % words;
        }
        self.link_cursor.store(w, Ordering::Relaxed);
        self.linkers.lock().push(lk);
        linked
    }

    fn take_linker(&self) -> Linker {
        if let Some(lk) = self.linkers.lock().pop() {
            return lk;
        }
        // Linker i draws levels from seed + i: with one linker thread the graph is deterministic.
        let i = self.linkers_made.fetch_add(1, Ordering::Relaxed);
        Linker::new(rand::SeedableRng::seed_from_u64(
            self.params.seed.wrapping_add(i),
        ))
    }

    /// True if this caller now owns `node`'s linking.
    fn claim(&self, node: u32) -> bool {
        let word = self.claimed.ensure(node / 32);
        word[0].fetch_or(1 << (node % 32), Ordering::AcqRel) & (1 << (node % 32)) == 0
    }

    fn unclaim(&self, node: u32) {
        if let Some(word) = self.claimed.get(node / 32) {
            word[0].fetch_and(!(1 << (node % 32)), Ordering::AcqRel);
        }
    }

    fn list_lock(&self, node: u32) -> parking_lot::MutexGuard<'_, ()> {
        self.list_locks[node as usize % self.list_locks.len()].lock()
    }

    /// Links one node (first link, or re-link after `set` replaced its vector). False if it was not
    /// pending when looked at.
    fn link_one(&self, lk: &mut Linker, node: u32) -> bool {
        let Some(rec) = self.nodes.get(node) else {
            return false;
        };
        let meta = rec[self.layout.meta()].load(Ordering::SeqCst);
        if meta & STATE_MASK != STATE_PENDING {
            self.settle_pending_bit(node);
            return false;
        }
        let mut q = std::mem::take(&mut lk.scratch.query);
        q.clear();
        q.extend(
            rec[..self.layout.dim]
                .iter()
                .map(|w| f32::from_bits(w.load(Ordering::Relaxed))),
        );
        let level = self.level_or_assign(lk, rec);
        // Linkers that may move the entry point (the first node; a node above the top level) take
        // the entry lock for the whole insertion and re-read the entry under it (hnswlib's rule).
        let may_move_entry = self.entry().is_none_or(|(_, top)| level > top);
        let _entry_guard = may_move_entry.then(|| self.entry_mu.lock());
        match self.entry() {
            None => {
                for l in 0..=level {
                    let _list = self.list_lock(node);
                    self.write_links(node, l, &[]);
                }
                self.set_entry(Some((node, level)));
            }
            Some((entry, top_level)) => self.connect(lk, node, &q, level, entry, top_level),
        }
        lk.scratch.query = q;
        // Publish: clear the bit, then LINKED unless `set`/`remove` changed the node meanwhile.
        self.settle_pending_bit_cleared(node);
        let meta_word = &rec[self.layout.meta()];
        if meta_word
            .compare_exchange(
                meta,
                (meta & !STATE_MASK) | STATE_LINKED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        } else {
            self.settle_pending_bit(node);
        }
        true
    }

    fn settle_pending_bit_cleared(&self, node: u32) {
        if let Some(word) = self.pending_bits.get(node / 32) {
            word[0].fetch_and(!(1 << (node % 32)), Ordering::SeqCst);
        }
    }

    /// The node's level, drawing one (and its upper slots) the first time it is linked.
    fn level_or_assign(&self, lk: &mut Linker, rec: &[AtomicU32]) -> usize {
        let current = rec[self.layout.level()].load(Ordering::Acquire) as usize;
        if current > 0 {
            return current - 1;
        }
        let u: f64 = lk.rng.gen();
        let level = ((-(1.0 - u).ln() * self.level_scale) as usize).min(LEVEL_MAX);
        if level > 0 {
            let base = self
                .upper_slots_used
                .fetch_add(level as u32, Ordering::Relaxed);
            for i in 0..level as u32 {
                let slot = self.upper.ensure(base + i);
                slot[0].store(0, Ordering::Relaxed);
            }
            rec[self.layout.upper()].store(base, Ordering::Release);
        }
        rec[self.layout.level()].store(level as u32 + 1, Ordering::Release);
        level
    }

    /// hnswlib's insert: greedy descent to `level`, then per level a beam of `ef_construction`,
    /// heuristic selection of `m` links, and reverse links (pruned by the heuristic when full).
    fn connect(
        &self,
        lk: &mut Linker,
        node: u32,
        q: &[f32],
        level: usize,
        entry: u32,
        top_level: usize,
    ) {
        let Some(entry_rec) = self.nodes.get(entry) else {
            return;
        };
        let mut cur = Cand {
            sim: (self.sim)(q, &entry_rec[..self.layout.dim]),
            node: entry,
        };
        let mut scored = 0;
        for l in ((level + 1)..=top_level).rev() {
            cur = self.greedy(&mut lk.scratch, q, cur, l, &mut scored);
        }
        let meta = self.layout.meta();
        // Choose every level's links top-down (each level's beam starts from the level above's best),
        // then publish bottom-up: a search that reaches the node on level l through a reverse link
        // must find its lists on l and every level below already written. Publishing top-down (as
        // hnswlib does) lets a search descend onto the node and start its level-0 beam from a node
        // with no level-0 links — it then finds nothing but that node.
        let levels = level.min(top_level);
        lk.per_level.resize_with(levels + 1, Vec::new);
        // The lists as they are now: a re-linked node is reachable throughout, and another linker may
        // add itself to these lists (a reverse link) while this one searches. Those additions are kept
        // when the new lists are published (below), not overwritten.
        lk.before.resize_with(levels + 1, Vec::new);
        for l in 0..=levels {
            let mut b = std::mem::take(&mut lk.before[l]);
            self.links_into(node, l, &mut b);
            lk.before[l] = b;
        }
        for l in (0..=levels).rev() {
            self.search_layer(
                &mut lk.scratch,
                q,
                cur,
                // hnswlib's floor: a beam narrower than m cannot offer m candidates.
                self.params.ef_construction.max(self.layout.m),
                l,
                &mut Poll::never(),
                |n, rec| n != node && is_live(rec[meta].load(Ordering::Acquire) & STATE_MASK),
            );
            lk.cands.clear();
            lk.cands.extend(lk.scratch.top.drain().map(|c| c.0));
            lk.cands.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(&best) = lk.cands.first() {
                cur = best;
            }
            let cands = std::mem::take(&mut lk.cands);
            self.select(lk, &cands, self.layout.m, q);
            lk.cands = cands;
            lk.per_level[l].clear();
            lk.per_level[l].extend_from_slice(&lk.chosen);
        }
        for l in 0..=levels {
            let chosen = std::mem::take(&mut lk.per_level[l]);
            lk.links.clear();
            lk.links.extend(chosen.iter().map(|c| c.node));
            {
                let _list = self.list_lock(node);
                self.keep_concurrent_additions(lk, node, l, q);
                self.debug_check_links(node, l, &lk.links);
                self.write_links(node, l, &lk.links);
            }
            for c in &chosen {
                self.add_reverse_link(lk, c.node, node, l, c.sim);
            }
            lk.per_level[l] = chosen;
        }
        for l in (top_level + 1)..=level {
            let _list = self.list_lock(node);
            self.write_links(node, l, &[]);
        }
        if level > top_level {
            self.set_entry(Some((node, level)));
        }
    }

    /// Adds to `lk.links` (the list about to be published for `node` on `level`) the ids another linker
    /// put into the node's list since `connect` read it (`lk.before`), best first within the capacity.
    /// Called under the node's list lock.
    fn keep_concurrent_additions(&self, lk: &mut Linker, node: u32, level: usize, q: &[f32]) {
        let cap = if level == 0 {
            self.layout.m0
        } else {
            self.layout.m
        };
        let mut now = std::mem::take(&mut lk.more);
        self.links_into(node, level, &mut now);
        let before = &lk.before[level];
        let mut added: Vec<Cand> = now
            .iter()
            .filter(|n| !before.contains(n) && !lk.links.contains(n) && **n != node)
            .filter_map(|&n| {
                let rec = self.nodes.get(n)?;
                is_live(self.state_of(rec)).then(|| Cand {
                    sim: (self.sim)(q, &rec[..self.layout.dim]),
                    node: n,
                })
            })
            .collect();
        lk.more = now;
        if added.is_empty() {
            return;
        }
        added.sort_unstable_by(|a, b| b.cmp(a));
        for c in added {
            if lk.links.len() >= cap {
                break;
            }
            lk.links.push(c.node);
        }
    }

    /// hnswlib's getNeighborsByHeuristic2: walk `cands` (best first) and keep a candidate unless it
    /// is closer to an already kept one than to `base` (the vector whose list this is). Result in
    /// `lk.chosen`.
    ///
    /// One change for identical vectors: of the candidates holding exactly `base`'s vector, only
    /// the first is kept, and it dominates nothing. hnswlib keeps every copy (each is as close to
    /// the base as to the kept copies, so none is dominated): a copy's list then holds only copies
    /// and a cluster of a few hundred becomes a clique that beams enter and cannot leave (on the
    /// PyPI corpus 2.5% of nodes were not found by their own vector, 0.03% with this rule). The
    /// collection adds a hit's copies back (`expand_duplicates`).
    fn select(&self, lk: &mut Linker, cands: &[Cand], m: usize, base: &[f32]) {
        lk.chosen.clear();
        if cands.len() <= m {
            lk.chosen.extend_from_slice(cands);
            return;
        }
        let dim = self.layout.dim;
        lk.chosen_vectors.clear();
        let mut copy_kept = false;
        for &c in cands {
            if lk.chosen.len() >= m {
                break;
            }
            let Some(rec) = self.nodes.get(c.node) else {
                continue;
            };
            let v = &rec[..dim];
            let copy = v
                .iter()
                .zip(base)
                .all(|(w, b)| w.load(Ordering::Relaxed) == b.to_bits());
            if copy {
                if !copy_kept {
                    copy_kept = true;
                    lk.chosen.push(c);
                }
                continue;
            }
            let dominated = lk
                .chosen_vectors
                .chunks_exact(dim)
                .any(|kept| (self.sim)(kept, v) > c.sim);
            if !dominated {
                lk.chosen.push(c);
                lk.chosen_vectors
                    .extend(v.iter().map(|w| f32::from_bits(w.load(Ordering::Relaxed))));
            }
        }
        debug_assert!(lk.chosen.len() <= m);
    }

    /// Adds `new` to `target`'s list on `level`; when full, re-selects among old links and `new`
    /// (tombstones dropped) with the heuristic.
    fn add_reverse_link(&self, lk: &mut Linker, target: u32, new: u32, level: usize, sim_new: f32) {
        let cap = if level == 0 {
            self.layout.m0
        } else {
            self.layout.m
        };
        // Read-modify-write of the target's list: another linker may be adding to it too.
        let _list = self.list_lock(target);
        let mut links = std::mem::take(&mut lk.links);
        self.links_into(target, level, &mut links);
        if links.contains(&new) {
            lk.links = links;
            return;
        }
        if links.len() < cap {
            links.push(new);
            self.debug_check_links(target, level, &links);
            self.write_links(target, level, &links);
            lk.links = links;
            return;
        }
        let Some(base) = self.copy_vector(target, &mut lk.base) else {
            lk.links = links;
            return;
        };
        let mut cands = std::mem::take(&mut lk.cands);
        cands.clear();
        cands.push(Cand {
            sim: sim_new,
            node: new,
        });
        for &n in &links {
            if let Some(rec) = self.nodes.get(n) {
                if is_live(self.state_of(rec)) {
                    cands.push(Cand {
                        sim: (self.sim)(&base, &rec[..self.layout.dim]),
                        node: n,
                    });
                }
            }
        }
        cands.sort_unstable_by(|a, b| b.cmp(a));
        self.select(lk, &cands, cap, &base);
        lk.base = base;
        links.clear();
        links.extend(lk.chosen.iter().map(|c| c.node));
        self.debug_check_links(target, level, &links);
        self.write_links(target, level, &links);
        lk.cands = cands;
        lk.links = links;
    }

    fn copy_vector(&self, node: u32, buf: &mut Vec<f32>) -> Option<Vec<f32>> {
        let rec = self.nodes.get(node)?;
        let mut out = std::mem::take(buf);
        out.clear();
        out.extend(
            rec[..self.layout.dim]
                .iter()
                .map(|w| f32::from_bits(w.load(Ordering::Relaxed))),
        );
        Some(out)
    }

    /// Repairs lists pointing at tombstones once they exceed ~10% of the slots, frees the repaired
    /// tombstones (state empty, lists cleared) and moves the entry point off a dead node.
    pub fn maintain(&self) {
        let _graph = self.graph.write();
        let mut linker = self.take_linker();
        self.maintain_locked(&mut linker);
        self.linkers.lock().push(linker);
    }

    fn maintain_locked(&self, lk: &mut Linker) {
        let tombstones = self.tombstones.load(Ordering::Relaxed);
        let live = self.live.load(Ordering::Relaxed);
        if tombstones == 0 || tombstones * 10 < tombstones + live {
            return;
        }
        let end = self.nodes_end.load(Ordering::Acquire);
        for node in 0..end {
            let Some(rec) = self.nodes.get(node) else {
                continue;
            };
            let level_plus_one = rec[self.layout.level()].load(Ordering::Acquire) as usize;
            if !is_live(self.state_of(rec)) || level_plus_one == 0 {
                continue;
            }
            for level in 0..level_plus_one {
                self.repair(lk, node, level);
            }
        }
        let mut best_entry: Option<(u32, usize)> = None;
        for node in 0..end {
            let Some(rec) = self.nodes.get(node) else {
                continue;
            };
            let level_plus_one = rec[self.layout.level()].load(Ordering::Acquire) as usize;
            let meta_word = &rec[self.layout.meta()];
            let meta = meta_word.load(Ordering::SeqCst);
            if meta & STATE_MASK == STATE_REMOVED {
                if meta_word
                    .compare_exchange(
                        meta,
                        (meta & !STATE_MASK) | STATE_EMPTY,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok()
                {
                    self.tombstones.fetch_sub(1, Ordering::Relaxed);
                    for level in 0..level_plus_one {
                        self.write_links(node, level, &[]);
                    }
                }
            } else if is_live(meta & STATE_MASK)
                && level_plus_one > 0
                && best_entry.is_none_or(|(_, l)| level_plus_one - 1 > l)
            {
                best_entry = Some((node, level_plus_one - 1));
            }
        }
        let entry_dead = self.entry().is_some_and(|(e, _)| {
            self.nodes
                .get(e)
                .is_none_or(|rec| !is_live(self.state_of(rec)))
        });
        if entry_dead || self.entry().is_none() {
            self.set_entry(best_entry);
        }
    }

    /// Re-selects `node`'s list on `level` if it points at a dead node: candidates are its live links
    /// and the live links of its dead ones.
    fn repair(&self, lk: &mut Linker, node: u32, level: usize) {
        let mut links = std::mem::take(&mut lk.links);
        self.links_into(node, level, &mut links);
        let dead = |n: u32| {
            self.nodes
                .get(n)
                .is_none_or(|rec| !is_live(self.state_of(rec)))
        };
        if !links.iter().any(|&n| dead(n)) {
            lk.links = links;
            return;
        }
        let mut pool = std::mem::take(&mut lk.more);
        pool.clear();
        let mut second = Vec::new();
        for &n in &links {
            if dead(n) {
                self.links_into(n, level, &mut second);
                pool.extend(second.iter().copied().filter(|&x| x != node && !dead(x)));
            } else {
                pool.push(n);
            }
        }
        pool.sort_unstable();
        pool.dedup();
        let Some(base) = self.copy_vector(node, &mut lk.base) else {
            lk.links = links;
            lk.more = pool;
            return;
        };
        let mut cands = std::mem::take(&mut lk.cands);
        cands.clear();
        for &n in &pool {
            if let Some(rec) = self.nodes.get(n) {
                cands.push(Cand {
                    sim: (self.sim)(&base, &rec[..self.layout.dim]),
                    node: n,
                });
            }
        }
        cands.sort_unstable_by(|a, b| b.cmp(a));
        let cap = if level == 0 {
            self.layout.m0
        } else {
            self.layout.m
        };
        self.select(lk, &cands, cap, &base);
        lk.base = base;
        links.clear();
        links.extend(lk.chosen.iter().map(|c| c.node));
        self.debug_check_links(node, level, &links);
        self.write_links(node, level, &links);
        lk.cands = cands;
        lk.links = links;
        lk.more = pool;
    }
}

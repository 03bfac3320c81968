//! Stand-in with the HNSW API (exact scan), replaced by the graph when its branch merges.
use std::collections::BTreeMap;

use parking_lot::RwLock;

use crate::distance::{normalize, score, Metric};

/// Graph parameters.
#[derive(Debug, Clone, Copy)]
pub struct HnswParams {
    /// Neighbours per node.
    pub m: usize,
    /// Beam width while linking.
    pub ef_construction: usize,
    /// Level seed.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            seed: 42,
        }
    }
}

/// A search's result.
#[derive(Debug, Default)]
pub struct SearchOut {
    /// (node, score), best first, ties by node.
    pub hits: Vec<(u32, f32)>,
    /// Graph nodes whose distance was computed.
    pub visited: usize,
    /// Nodes scanned exactly.
    pub exact_scanned: usize,
}

/// Sizes.
#[derive(Debug, Default, Clone, Copy)]
pub struct HnswStats {
    /// Live nodes.
    pub live: usize,
    /// Nodes not linked yet.
    pub pending: usize,
    /// Removed nodes still holding a slot.
    pub tombstones: usize,
    /// Memory held.
    pub bytes: usize,
}

/// A file that does not verify.
#[derive(Debug, thiserror::Error)]
#[error("hnsw file: {reason} at byte {offset}")]
pub struct FormatError {
    /// Byte offset.
    pub offset: u64,
    /// What is wrong.
    pub reason: &'static str,
}

/// The index.
#[derive(Debug)]
pub struct Hnsw {
    dim: usize,
    metric: Metric,
    vectors: RwLock<BTreeMap<u32, Vec<f32>>>,
}

impl Hnsw {
    /// An empty index.
    pub fn new(dim: usize, metric: Metric, _params: HnswParams) -> Self {
        Self {
            dim,
            metric,
            vectors: RwLock::new(BTreeMap::new()),
        }
    }
    /// Dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }
    /// Stores a vector.
    pub fn set(&self, node: u32, vector: &[f32]) {
        let mut v = vector.to_vec();
        if self.metric == Metric::Cosine {
            normalize(&mut v);
        }
        self.vectors.write().insert(node, v);
    }
    /// Removes a node.
    pub fn remove(&self, node: u32) {
        self.vectors.write().remove(&node);
    }
    /// Links pending nodes.
    pub fn link_pending(&self, _max: usize) -> usize {
        0
    }
    /// Pending nodes.
    pub fn pending(&self) -> usize {
        0
    }
    /// Top-k.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        _ef: usize,
        allow: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> SearchOut {
        let nodes: Vec<u32> = self
            .vectors
            .read()
            .keys()
            .copied()
            .filter(|n| allow.is_none_or(|f| f(*n)))
            .collect();
        self.search_exact(query, k, &mut nodes.into_iter())
    }
    /// Exact top-k over `nodes`.
    pub fn search_exact(
        &self,
        query: &[f32],
        k: usize,
        nodes: &mut dyn Iterator<Item = u32>,
    ) -> SearchOut {
        let mut q = query.to_vec();
        if self.metric == Metric::Cosine {
            normalize(&mut q);
        }
        let vs = self.vectors.read();
        let mut hits: Vec<(u32, f32)> = Vec::new();
        let mut n = 0;
        for node in nodes {
            if let Some(v) = vs.get(&node) {
                n += 1;
                hits.push((node, score(self.metric, &q, v)));
            }
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        SearchOut {
            hits,
            visited: 0,
            exact_scanned: n,
        }
    }
    /// The stored vector.
    pub fn vector(&self, node: u32) -> Option<Vec<f32>> {
        self.vectors.read().get(&node).cloned()
    }
    /// Sizes.
    pub fn stats(&self) -> HnswStats {
        let vs = self.vectors.read();
        HnswStats {
            live: vs.len(),
            pending: 0,
            tombstones: 0,
            bytes: vs.len() * (self.dim * 4 + 32),
        }
    }
    /// Upkeep.
    pub fn maintain(&self) {}
    /// Persist.
    pub fn write_to(&self, _w: &mut dyn std::io::Write) -> std::io::Result<()> {
        Err(std::io::Error::other("not persisted"))
    }
    /// Load.
    pub fn read_from(_bytes: &[u8], _dim: usize, _metric: Metric) -> Result<Hnsw, FormatError> {
        Err(FormatError {
            offset: 0,
            reason: "not persisted",
        })
    }
}

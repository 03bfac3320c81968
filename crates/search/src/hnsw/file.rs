//! The persisted form of an index (all integers little-endian):
//!
//! ```text
//! header  magic "KYHNSW\0\0" | version u32 = 1 | dim u32 | metric u8 (0 cosine, 1 dot, 2 l2)
//!         | m u32 | ef_construction u32 | seed u64 | nodes u32 | entry u32 | entry_level u32
//!         (entry = u32::MAX: no entry point)
//! node×nodes  state u8 (0 empty, 1 pending, 2 linked, 3 removed)
//!         then, unless empty: level u8 (0xFF: never linked) | vector f32×dim
//!         | per level 0..=level: count u16 | neighbour u32×count   (count ≤ 2m on level 0, m above)
//! trailer xxh3-64 of every byte before it
//! ```
//!
//! `read_from` parses with bounds checks (a node count larger than the bytes left, a list longer than
//! its level allows, a neighbour id ≥ nodes, a bad entry point are refused with their offset), then
//! checks the trailer position and the checksum. No input panics (fuzzed in the tests).

use std::io::Write;
use std::sync::atomic::Ordering;

use kyrodb_storage::codec::{ReadError, Reader};

use xxhash_rust::xxh3::Xxh3;

use super::{
    Hnsw, HnswParams, LEVEL_MAX, M_MAX, M_MIN, STATE_EMPTY, STATE_LINKED, STATE_MASK,
    STATE_PENDING, STATE_REMOVED,
};
use crate::distance::Metric;

const MAGIC: &[u8; 8] = b"KYHNSW\0\0";
const VERSION: u32 = 1;
const NO_LEVEL: u8 = 0xFF;
const NO_ENTRY: u32 = u32::MAX;

/// Why a persisted index was refused.
#[derive(Debug, thiserror::Error)]
#[error("hnsw file: {reason} at byte {offset}")]
pub struct FormatError {
    /// Byte offset of the field that failed.
    pub offset: u64,
    /// What was wrong.
    pub reason: &'static str,
}

impl FormatError {
    fn at(offset: impl TryInto<u64>, reason: &'static str) -> FormatError {
        FormatError {
            offset: offset.try_into().unwrap_or(u64::MAX),
            reason,
        }
    }
}

impl From<ReadError> for FormatError {
    fn from(e: ReadError) -> Self {
        FormatError::at(e.offset(), e.reason())
    }
}

fn metric_code(metric: Metric) -> u8 {
    match metric {
        Metric::Cosine => 0,
        Metric::Dot => 1,
        Metric::L2 => 2,
    }
}

/// Hashes everything written through it.
struct Hashing<'a> {
    inner: &'a mut dyn Write,
    hasher: Xxh3,
}

impl Hashing<'_> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.inner.write_all(bytes)
    }
}

impl Hnsw {
    /// Writes the index (pending nodes as pending). Graph writers wait meanwhile; `set`, `remove`
    /// and searches do not.
    pub fn write_to(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let _graph = self.graph.write();
        let mut buffered = std::io::BufWriter::with_capacity(1 << 16, w);
        let mut out = Hashing {
            inner: &mut buffered,
            hasher: Xxh3::new(),
        };
        let nodes = self.nodes_end.load(Ordering::Acquire);
        let (entry, entry_level) = self.entry().map_or((NO_ENTRY, 0), |(n, l)| (n, l as u32));
        out.put(MAGIC)?;
        out.put(&VERSION.to_le_bytes())?;
        out.put(&(self.layout.dim as u32).to_le_bytes())?;
        out.put(&[metric_code(self.metric)])?;
        out.put(&(self.params.m as u32).to_le_bytes())?;
        out.put(&(self.params.ef_construction as u32).to_le_bytes())?;
        out.put(&self.params.seed.to_le_bytes())?;
        out.put(&nodes.to_le_bytes())?;
        out.put(&entry.to_le_bytes())?;
        out.put(&entry_level.to_le_bytes())?;
        let mut bytes = Vec::new();
        let mut links = Vec::new();
        for node in 0..nodes {
            bytes.clear();
            self.encode_node(node, &mut bytes, &mut links);
            out.put(&bytes)?;
        }
        let sum = out.hasher.digest();
        buffered.write_all(&sum.to_le_bytes())?;
        buffered.flush()
    }

    fn encode_node(&self, node: u32, bytes: &mut Vec<u8>, links: &mut Vec<u32>) {
        let Some(rec) = self.nodes.get(node) else {
            bytes.push(STATE_EMPTY as u8);
            return;
        };
        let state = rec[self.layout.meta()].load(Ordering::Acquire) & STATE_MASK;
        bytes.push(state as u8);
        if state == STATE_EMPTY {
            return;
        }
        let level_plus_one = rec[self.layout.level()].load(Ordering::Acquire) as usize;
        bytes.push(if level_plus_one == 0 {
            NO_LEVEL
        } else {
            (level_plus_one - 1) as u8
        });
        for w in &rec[..self.layout.dim] {
            bytes.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        for level in 0..level_plus_one {
            self.links_into(node, level, links);
            bytes.extend_from_slice(&(links.len() as u16).to_le_bytes());
            for &id in links.iter() {
                bytes.extend_from_slice(&id.to_le_bytes());
            }
        }
    }

    /// Reads an index written by [`Hnsw::write_to`], refusing anything that does not verify.
    pub fn read_from(bytes: &[u8], dim: usize, metric: Metric) -> Result<Hnsw, FormatError> {
        let mut r = Reader::new(bytes);
        if r.take(8)? != MAGIC {
            return Err(FormatError::at(0, "bad magic"));
        }
        if r.u32()? != VERSION {
            return Err(FormatError::at(8, "unsupported version"));
        }
        if r.u32()? as usize != dim {
            return Err(FormatError::at(12, "dimension mismatch"));
        }
        if r.u8()? != metric_code(metric) {
            return Err(FormatError::at(16, "metric mismatch"));
        }
        let m = r.u32()? as usize;
        if !(M_MIN..=M_MAX).contains(&m) {
            return Err(FormatError::at(17, "m out of range"));
        }
        let ef_construction = r.u32()? as usize;
        let seed = r.u64()?;
        let nodes_at = r.at();
        let nodes = r.u32()?;
        let entry = r.u32()?;
        let entry_level = r.u32()? as usize;
        if nodes as usize > bytes.len().saturating_sub(r.at()) {
            return Err(FormatError::at(nodes_at, "node count exceeds the file"));
        }
        if dim == 0 {
            return Err(FormatError::at(12, "dimension mismatch"));
        }
        let index = Hnsw::new(
            dim,
            metric,
            HnswParams {
                m,
                ef_construction,
                seed,
            },
        );
        let mut links = Vec::new();
        for node in 0..nodes {
            index.decode_node(&mut r, node, nodes, &mut links)?;
        }
        if entry != NO_ENTRY {
            let level_ok = entry < nodes
                && index.nodes.get(entry).is_some_and(|rec| {
                    rec[index.layout.meta()].load(Ordering::Relaxed) & STATE_MASK != STATE_EMPTY
                        && rec[index.layout.level()].load(Ordering::Relaxed) as usize
                            == entry_level + 1
                });
            if !level_ok {
                return Err(FormatError::at(nodes_at + 4, "bad entry point"));
            }
            index.set_entry(Some((entry, entry_level)));
        }
        let body_end = r.at();
        let sum = r.u64()?;
        if r.at() != bytes.len() {
            return Err(FormatError::at(r.at() as u64, "trailing bytes"));
        }
        if xxhash_rust::xxh3::xxh3_64(&bytes[..body_end]) != sum {
            return Err(FormatError::at(body_end as u64, "checksum mismatch"));
        }
        Ok(index)
    }

    fn decode_node(
        &self,
        r: &mut Reader<'_>,
        node: u32,
        nodes: u32,
        links: &mut Vec<u32>,
    ) -> Result<(), FormatError> {
        let state_at = r.at() as u64;
        let state = u32::from(r.u8()?);
        if state == STATE_EMPTY {
            return Ok(());
        }
        if state > STATE_REMOVED {
            return Err(FormatError::at(state_at, "bad node state"));
        }
        let level_at = r.at() as u64;
        let level = r.u8()?;
        if level != NO_LEVEL && level as usize > LEVEL_MAX {
            return Err(FormatError::at(level_at, "level out of range"));
        }
        if level == NO_LEVEL && state != STATE_PENDING {
            return Err(FormatError::at(level_at, "linked node without a level"));
        }
        let vector = r.take(self.layout.dim * 4)?;
        let rec = self.nodes.ensure(node);
        self.pending_bits.ensure(node / 32);
        for (word, chunk) in rec[..self.layout.dim].iter().zip(vector.chunks_exact(4)) {
            word.store(
                u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                Ordering::Relaxed,
            );
        }
        if level != NO_LEVEL {
            let level = level as usize;
            if level > 0 {
                let base = self
                    .upper_slots_used
                    .fetch_add(level as u32, Ordering::Relaxed);
                for i in 0..level as u32 {
                    self.upper.ensure(base + i);
                }
                rec[self.layout.upper()].store(base, Ordering::Relaxed);
            }
            rec[self.layout.level()].store(level as u32 + 1, Ordering::Relaxed);
            for l in 0..=level {
                let cap = if l == 0 {
                    self.layout.m0
                } else {
                    self.layout.m
                };
                let count_at = r.at() as u64;
                let count = usize::from(r.u16()?);
                if count > cap {
                    return Err(FormatError::at(count_at, "neighbour list too long"));
                }
                links.clear();
                for _ in 0..count {
                    let id_at = r.at() as u64;
                    let id = r.u32()?;
                    if id >= nodes {
                        return Err(FormatError::at(id_at, "neighbour id out of range"));
                    }
                    links.push(id);
                }
                self.write_links(node, l, links);
            }
        }
        rec[self.layout.meta()].store(state, Ordering::Relaxed);
        self.nodes_end.fetch_max(node + 1, Ordering::Relaxed);
        match state {
            STATE_PENDING => {
                self.live.fetch_add(1, Ordering::Relaxed);
                self.pending.fetch_add(1, Ordering::Relaxed);
                self.set_pending_bit(node);
            }
            STATE_LINKED => {
                self.live.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.tombstones.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

//! The on-disk index file: written whole to a temp file, fsynced, renamed, directory fsynced; loaded
//! through mmap and validated (length, checksum, structure, optionally every key's window) before any of
//! it is used. Byte layout and crash argument: docs/design/rmi.md.
#![allow(unsafe_code)]

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use xxhash_rust::xxh3::Xxh3;

use crate::config::RmiConfig;
use crate::error::{Result, RmiError};
use crate::model::{with_sentinels, BuildStats, Rmi};
use crate::router::{Router, Table};
use crate::search::CheckedKernel;
use crate::segment::Leaf;
use crate::shape::Shape;
use crate::tree::{SearchTree, NODE_KEYS};

/// The file checksum: xxHash3-64 of every byte before the trailer.
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// First 8 bytes of every index file.
pub const MAGIC: [u8; 8] = *b"KYRORMI\0";
/// Format version written and accepted.
pub const VERSION: u32 = 1;
/// Flag: the file carries the key array after the leaves.
pub const FLAG_KEYS: u32 = 1;
/// Flag: the index has the search-tree shape: a tree descriptor (`block_keys u32 | node_keys u32`)
/// where the tables would be, then the separators (`u64`, `entry_count` of them), and no leaves.
/// Readers that predate the flag refuse such a file (unknown flag) and rebuild it.
pub const FLAG_TREE: u32 = 2;
/// Flag: the index has no model at all (binary search): nothing between the header and the keys, and
/// leaf, table and entry counts all 0. Readers that predate the flag refuse it and rebuild.
pub const FLAG_BINARY: u32 = 4;
/// Header bytes.
pub const HEADER_BYTES: usize = 64;
/// Trailing checksum bytes.
pub const TRAILER_BYTES: usize = 8;
const TABLE_BYTES: usize = 24;
const LEAF_BYTES: usize = 32;

struct Header {
    flags: u32,
    key_count: u64,
    leaf_count: u64,
    table_count: u64,
    entry_count: u64,
    epsilon_max: u32,
    epsilon: u32,
    file_bytes: u64,
}

/// Byte offsets of each section, derived from the header's counts.
struct Layout {
    tables: usize,
    entries: usize,
    leaves: usize,
    keys: usize,
    checksum: usize,
}

impl Layout {
    fn new(h: &Header) -> Option<Layout> {
        let count = |n: u64| usize::try_from(n).ok();
        let tables = HEADER_BYTES;
        let (entries, entry_bytes) = if h.flags & FLAG_BINARY != 0 {
            (tables, 0)
        } else if h.flags & FLAG_TREE != 0 {
            // The tree descriptor, then u64 separators.
            (tables + 8, count(h.entry_count)?.checked_mul(8)?)
        } else {
            (
                tables.checked_add(count(h.table_count)?.checked_mul(TABLE_BYTES)?)?,
                // u32 entries, padded to a multiple of 8 bytes so every later section stays 8-aligned.
                (count(h.entry_count)?.checked_add(1)? / 2).checked_mul(8)?,
            )
        };
        let leaves = entries.checked_add(entry_bytes)?;
        let keys = leaves.checked_add(count(h.leaf_count)?.checked_mul(LEAF_BYTES)?)?;
        let key_bytes = if h.flags & FLAG_KEYS != 0 {
            count(h.key_count)?.checked_mul(8)?
        } else {
            0
        };
        let checksum = keys.checked_add(key_bytes)?;
        Some(Layout {
            tables,
            entries,
            leaves,
            keys,
            checksum,
        })
    }

    fn file_bytes(&self) -> usize {
        self.checksum + TRAILER_BYTES
    }
}

/// Writes bytes through the checksum.
struct Hashing<W: Write> {
    inner: W,
    hash: Xxh3,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.inner.write_all(bytes)
    }
    fn u64s(&mut self, values: &[u64]) -> std::io::Result<()> {
        for chunk in values.chunks(4096) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.put(&bytes)?;
        }
        Ok(())
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RmiError + '_ {
    move |source| RmiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Rmi {
    /// Saves the model (and `keys`, when given, for a self-contained file) to `path` atomically:
    /// temp file, fsync, rename, fsync of the directory. A crash leaves either the old file or the new.
    pub fn save(&self, path: &Path, keys: Option<&[u64]>) -> Result<()> {
        if let Some(keys) = keys {
            if keys.len() != self.key_count {
                return Err(RmiError::KeyCountMismatch {
                    index_keys: self.key_count as u64,
                    slice_keys: keys.len() as u64,
                });
            }
        }
        let tmp = temp_path(path);
        let result = self.write_file(&tmp, keys).and_then(|()| {
            fs::rename(&tmp, path).map_err(io_error(path))?;
            sync_parent(path)
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_file(&self, tmp: &Path, keys: Option<&[u64]>) -> Result<()> {
        let file = File::create(tmp).map_err(io_error(tmp))?;
        let mut out = Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            hash: Xxh3::new(),
        };
        let tree = matches!(self.shape, Shape::SearchTree { .. });
        let shape_flag = match self.shape {
            Shape::Learned { .. } => 0,
            Shape::SearchTree { .. } => FLAG_TREE,
            Shape::BinarySearch => FLAG_BINARY,
        };
        let header = Header {
            flags: if keys.is_some() { FLAG_KEYS } else { 0 } | shape_flag,
            key_count: self.key_count as u64,
            leaf_count: self.leaf_count as u64,
            table_count: if tree {
                self.tree.levels.len()
            } else {
                self.router.tables.len()
            } as u64,
            entry_count: if tree {
                self.tree.nodes.len() * NODE_KEYS
            } else {
                self.router.entries.len()
            } as u64,
            epsilon_max: self.epsilon_max,
            epsilon: self.epsilon,
            file_bytes: 0,
        };
        let layout = Layout::new(&header)
            .ok_or_else(|| RmiError::InvalidConfig("index too large to save".into()))?;
        let header = Header {
            file_bytes: layout.file_bytes() as u64,
            ..header
        };
        let write = |out: &mut Hashing<BufWriter<File>>| -> std::io::Result<()> {
            out.put(&encode_header(&header))?;
            if tree {
                out.put(&(self.tree.block_keys as u32).to_le_bytes())?;
                out.put(&(NODE_KEYS as u32).to_le_bytes())?;
                let separators: Vec<u64> = self.tree.nodes.iter().flat_map(|n| n.0).collect();
                out.u64s(&separators)?;
            }
            for t in &self.router.tables {
                out.put(&t.key_lo.to_le_bytes())?;
                out.put(&t.shift.to_le_bytes())?;
                out.put(&t.bits.to_le_bytes())?;
                out.put(&t.entries_offset.to_le_bytes())?;
            }
            let mut entries: Vec<u8> = self
                .router
                .entries
                .iter()
                .flat_map(|e| e.to_le_bytes())
                .collect();
            entries.resize(entries.len().div_ceil(8) * 8, 0);
            out.put(&entries)?;
            let leaves: Vec<u64> = self.leaves[..self.leaf_count]
                .iter()
                .flat_map(|l| [l.first_key, l.slope.to_bits(), l.base, l.span])
                .collect();
            out.u64s(&leaves)?;
            if let Some(keys) = keys {
                out.u64s(keys)?;
            }
            let checksum = out.hash.digest();
            out.inner.write_all(&checksum.to_le_bytes())?;
            out.inner.flush()?;
            out.inner.get_ref().sync_all()
        };
        write(&mut out).map_err(io_error(tmp))
    }

    /// Loads the index at `path` for `keys` if it is valid *for these keys* (checksum, structure, every
    /// key in its window); otherwise — missing, truncated, corrupt or stale — builds a new one from
    /// `keys` and saves it. Returns the index and whether it was rebuilt. A bad file is never served.
    pub fn load_or_rebuild(path: &Path, keys: &[u64], config: &RmiConfig) -> Result<(Rmi, bool)> {
        if let Ok(rmi) = Rmi::load(path) {
            if rmi.verify(keys).is_ok() {
                return Ok((rmi, false));
            }
        }
        let rmi = Rmi::build(keys, config)?;
        rmi.save(path, None)?;
        Ok((rmi, true))
    }

    /// Loads a model saved by [`Rmi::save`], validated; any key array in the file is checked against it
    /// and then dropped. Use [`RmiFile::open`] to keep the keys mapped.
    pub fn load(path: &Path) -> Result<Rmi> {
        Ok(RmiFile::open(path)?.rmi)
    }
}

fn encode_header(h: &Header) -> [u8; HEADER_BYTES] {
    let mut b = [0u8; HEADER_BYTES];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&h.flags.to_le_bytes());
    b[16..24].copy_from_slice(&h.key_count.to_le_bytes());
    b[24..32].copy_from_slice(&h.leaf_count.to_le_bytes());
    b[32..40].copy_from_slice(&h.table_count.to_le_bytes());
    b[40..48].copy_from_slice(&h.entry_count.to_le_bytes());
    b[48..52].copy_from_slice(&h.epsilon_max.to_le_bytes());
    b[52..56].copy_from_slice(&h.epsilon.to_le_bytes());
    b[56..64].copy_from_slice(&h.file_bytes.to_le_bytes());
    b
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_error(parent))
}

fn u32_at(b: &[u8], offset: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[offset..offset + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], offset: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[offset..offset + 8]);
    u64::from_le_bytes(a)
}

fn u64s_at(b: &[u8], offset: usize, count: usize) -> Vec<u64> {
    b[offset..offset + count * 8]
        .chunks_exact(8)
        .map(|c| u64_at(c, 0))
        .collect()
}

/// A validated index file, mapped. Holds the key array too when the file carries one.
pub struct RmiFile {
    rmi: Rmi,
    map: Mmap,
    keys: Option<std::ops::Range<usize>>,
    path: PathBuf,
}

impl std::fmt::Debug for RmiFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RmiFile")
            .field("path", &self.path)
            .field("keys", &self.keys.is_some())
            .finish()
    }
}

impl RmiFile {
    /// Maps and validates `path`: length, magic, version, flags, section sizes, xxHash3 checksum, model
    /// structure, and — when the file holds keys — that every key lies in its window. Any failure is a
    /// typed error naming the file and byte offset; nothing unvalidated is ever used.
    pub fn open(path: &Path) -> Result<RmiFile> {
        let file = File::open(path).map_err(io_error(path))?;
        let len = file.metadata().map_err(io_error(path))?.len();
        let truncated = |offset: u64, what: &str| RmiError::Truncated {
            path: path.to_path_buf(),
            offset,
            what: what.into(),
        };
        let corrupt = |offset: usize, reason: String| RmiError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            reason,
        };
        if len < (HEADER_BYTES + TRAILER_BYTES) as u64 {
            return Err(truncated(len, "header and checksum"));
        }
        // SAFETY: index files are written once under a temp name and renamed into place; nothing writes
        // to a published file, so the mapping's bytes do not change underneath us. Every byte is
        // checksummed and bounds-checked before use.
        let map = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
        let b: &[u8] = &map;
        if b[0..8] != MAGIC {
            return Err(corrupt(0, "bad magic".into()));
        }
        if u32_at(b, 8) != VERSION {
            return Err(corrupt(8, format!("unsupported version {}", u32_at(b, 8))));
        }
        let header = Header {
            flags: u32_at(b, 12),
            key_count: u64_at(b, 16),
            leaf_count: u64_at(b, 24),
            table_count: u64_at(b, 32),
            entry_count: u64_at(b, 40),
            epsilon_max: u32_at(b, 48),
            epsilon: u32_at(b, 52),
            file_bytes: u64_at(b, 56),
        };
        if header.flags & !(FLAG_KEYS | FLAG_TREE | FLAG_BINARY) != 0
            || header.flags & FLAG_TREE != 0 && header.flags & FLAG_BINARY != 0
        {
            return Err(corrupt(12, format!("unknown flags {:#x}", header.flags)));
        }
        if header.leaf_count > header.key_count {
            return Err(corrupt(24, "more leaves than keys".into()));
        }
        if header.flags & (FLAG_TREE | FLAG_BINARY) != 0 && header.leaf_count != 0 {
            return Err(corrupt(24, "model-free shape with leaves".into()));
        }
        if header.flags & FLAG_BINARY != 0 && (header.table_count, header.entry_count) != (0, 0) {
            return Err(corrupt(32, "binary search shape with tables".into()));
        }
        let layout =
            Layout::new(&header).ok_or_else(|| corrupt(16, "section sizes overflow".into()))?;
        if header.file_bytes != layout.file_bytes() as u64 {
            return Err(corrupt(
                56,
                format!(
                    "header says {} bytes, counts say {}",
                    header.file_bytes,
                    layout.file_bytes()
                ),
            ));
        }
        if len < header.file_bytes {
            return Err(truncated(
                len,
                &format!("expected {} bytes", header.file_bytes),
            ));
        }
        if len > header.file_bytes {
            return Err(corrupt(
                layout.file_bytes(),
                "trailing bytes after checksum".into(),
            ));
        }
        let stored = u64_at(b, layout.checksum);
        let computed = checksum(&b[..layout.checksum]);
        if stored != computed {
            return Err(RmiError::Checksum {
                path: path.to_path_buf(),
                offset: layout.checksum as u64,
                stored,
                computed,
            });
        }
        let rmi = decode(b, &header, &layout).map_err(|r| corrupt(layout.tables, r))?;
        rmi.check_leaves().map_err(|r| corrupt(layout.leaves, r))?;
        rmi.router
            .check(rmi.leaf_count)
            .map_err(|r| corrupt(layout.tables, r))?;
        rmi.check_tree().map_err(|r| corrupt(layout.tables, r))?;
        let keys = (header.flags & FLAG_KEYS != 0).then_some(layout.keys..layout.checksum);
        let loaded = RmiFile {
            rmi,
            map,
            keys,
            path: path.to_path_buf(),
        };
        if let Some(keys) = loaded.keys() {
            match loaded.rmi.verify(keys) {
                Ok(()) => {}
                Err(RmiError::NotSortedOrDuplicate { index, .. }) => {
                    return Err(corrupt(
                        layout.keys + index * 8,
                        "keys not strictly increasing".into(),
                    ))
                }
                Err(RmiError::WindowViolation { position, .. }) => {
                    return Err(corrupt(
                        layout.keys + position * 8,
                        "key outside its window".into(),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(loaded)
    }

    /// The validated model.
    pub fn rmi(&self) -> &Rmi {
        &self.rmi
    }

    /// Takes the model, dropping the mapping.
    pub fn into_rmi(self) -> Rmi {
        self.rmi
    }

    /// The key array, if the file carries one (read in place from the mapping).
    pub fn keys(&self) -> Option<&[u64]> {
        let range = self.keys.clone()?;
        let bytes = &self.map[range];
        #[cfg(target_endian = "little")]
        {
            // SAFETY: any 8 initialised bytes are a valid u64; the mapping is page-aligned and the keys
            // section starts at a multiple of 8, so `align_to` yields no prefix (checked below, never
            // assumed); on little-endian hosts the in-memory value equals the file's LE encoding.
            let (prefix, keys, suffix) = unsafe { bytes.align_to::<u64>() };
            if prefix.is_empty() && suffix.is_empty() {
                return Some(keys);
            }
        }
        let _ = bytes;
        None
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The model the sections describe; only the tree descriptor is checked here (the rest by the caller).
fn decode(b: &[u8], h: &Header, l: &Layout) -> std::result::Result<Rmi, String> {
    let leaf_count = h.leaf_count as usize;
    if h.flags & FLAG_BINARY != 0 {
        return Ok(Rmi::model_free(
            Shape::BinarySearch,
            h.key_count as usize,
            h.epsilon_max,
            h.epsilon,
            SearchTree::default(),
        ));
    }
    if h.flags & FLAG_TREE != 0 {
        let block_keys = u32_at(b, l.tables);
        let node_keys = u32_at(b, l.tables + 4);
        if node_keys as usize != NODE_KEYS || block_keys == 0 {
            return Err(format!(
                "search tree of {block_keys}-key blocks and {node_keys}-key nodes"
            ));
        }
        // The levels follow from the key count and the block; `check_tree` then requires the stored
        // separators to fill exactly those levels.
        let level_nodes = SearchTree::level_nodes(h.key_count as usize, block_keys as usize);
        let nodes: usize = level_nodes.iter().sum();
        if level_nodes.len() as u64 != h.table_count
            || (nodes as u64).checked_mul(NODE_KEYS as u64) != Some(h.entry_count)
        {
            return Err(format!(
                "{} levels and {} separators do not fit {} keys",
                h.table_count, h.entry_count, h.key_count
            ));
        }
        let mut tree = SearchTree::skeleton(&level_nodes, block_keys as usize);
        let separators = u64s_at(b, l.entries, h.entry_count as usize);
        for (node, chunk) in tree
            .nodes
            .iter_mut()
            .zip(separators.chunks_exact(NODE_KEYS))
        {
            node.0.copy_from_slice(chunk);
        }
        return Ok(Rmi::model_free(
            Shape::SearchTree { block_keys },
            h.key_count as usize,
            h.epsilon_max,
            h.epsilon,
            tree,
        ));
    }
    let tables = (0..h.table_count as usize)
        .map(|i| {
            let at = l.tables + i * TABLE_BYTES;
            Table::new(
                u64_at(b, at),
                u32_at(b, at + 8),
                u32_at(b, at + 12),
                u64_at(b, at + 16),
            )
        })
        .collect();
    let entries = b[l.entries..l.entries + h.entry_count as usize * 4]
        .chunks_exact(4)
        .map(|c| u32_at(c, 0))
        .collect();
    let router = Router { tables, entries };
    let leaves = u64s_at(b, l.leaves, leaf_count * 4)
        .chunks_exact(4)
        .map(|c| Leaf {
            first_key: c[0],
            slope: f64::from_bits(c[1]),
            base: c[2],
            span: c[3],
        })
        .collect();
    Ok(Rmi {
        shape: Shape::Learned {
            epsilon_max: h.epsilon_max,
        },
        tree: SearchTree::default(),
        key_count: h.key_count as usize,
        epsilon_max: h.epsilon_max,
        epsilon: h.epsilon,
        leaf_count,
        leaves: with_sentinels(leaves),
        router,
        kernel: CheckedKernel::detect(),
        stats: BuildStats {
            leaf_count,
            table_count: h.table_count as usize,
            ..BuildStats::default()
        },
    })
}

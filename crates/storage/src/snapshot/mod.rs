//! Snapshots: one keyspace's sorted keys and values at a covered sequence number, in two immutable
//! files. `NNN.bin` holds the keys, value offsets and value checksums, covered by per-block xxh3
//! checksums that are all verified at open; `NNN.data` holds the values back to back, each verified
//! against its checksum when it is read. Byte layout and crash argument: docs/design/storage.md.

mod reader;
mod writer;

use std::path::{Path, PathBuf};

pub(crate) use reader::Snapshot;
pub(crate) use writer::SnapshotWriter;

pub(crate) const BIN_MAGIC: &[u8; 8] = b"KYROSNB1";
pub(crate) const BIN_END_MAGIC: &[u8; 8] = b"KYROSNBE";
pub(crate) const BIN_VERSION: u32 = 1;
pub(crate) const BIN_HEADER_BYTES: usize = 48;
pub(crate) const BIN_FOOTER_BYTES: usize = 24;
/// The unit of the block checksum table.
pub(crate) const CHECKSUM_BLOCK_BYTES: usize = 1 << 20;

/// What the manifest records about one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotMeta {
    pub generation: u64,
    pub key_count: u64,
    pub bin_bytes: u64,
    pub data_bytes: u64,
}

pub(crate) fn bin_path(dir: &Path, keyspace: u32, generation: u64) -> PathBuf {
    dir.join(format!("{keyspace:08x}-{generation:016x}.bin"))
}

pub(crate) fn data_path(dir: &Path, keyspace: u32, generation: u64) -> PathBuf {
    dir.join(format!("{keyspace:08x}-{generation:016x}.data"))
}

/// The persisted index beside a snapshot (derived state: rebuilt when missing or invalid).
pub(crate) fn index_path(dir: &Path, keyspace: u32, generation: u64) -> PathBuf {
    dir.join(format!("{keyspace:08x}-{generation:016x}.rmi"))
}

/// Parses a snapshot file name (`.bin`, `.data` or `.rmi`) back to `(keyspace, generation)`.
pub(crate) fn parse_name(name: &str) -> Option<(u32, u64)> {
    let stem = name
        .strip_suffix(".bin")
        .or_else(|| name.strip_suffix(".data"))
        .or_else(|| name.strip_suffix(".rmi"))?;
    let (ks, generation) = stem.split_once('-')?;
    Some((
        u32::from_str_radix(ks, 16).ok()?,
        u64::from_str_radix(generation, 16).ok()?,
    ))
}

/// Bytes from the start of the bin file to the block table, for `n` keys.
pub(crate) fn bin_body_bytes(n: u64) -> Option<u64> {
    (BIN_HEADER_BYTES as u64)
        .checked_add(n.checked_mul(8)?)?
        .checked_add((n + 1).checked_mul(8)?)
}

/// Bytes before each value in `.data`: its checksum, so the check reads the cache line the value is in.
pub(crate) const VALUE_HEADER_BYTES: usize = 4;

/// The checksum of one value, as stored in front of it in the data file.
pub(crate) fn value_hash(value: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(value) as u32
}

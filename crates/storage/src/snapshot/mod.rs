//! Snapshots: one keyspace's sorted keys and values at a covered sequence number, in two immutable
//! files. `NNN.bin` holds the keys, value offsets and value checksums, covered by per-block xxh3
//! checksums that are all verified at open; `NNN.data` holds the values back to back, each verified
//! against its checksum when it is read. Byte layout and crash argument: docs/design/storage.md.

mod reader;
mod writer;

use std::path::{Path, PathBuf};

pub(crate) use reader::{SnapEntry, Snapshot};
pub(crate) use writer::SnapshotWriter;

pub(crate) const BIN_MAGIC: &[u8; 8] = b"KYROSNB1";
pub(crate) const BIN_END_MAGIC: &[u8; 8] = b"KYROSNBE";
/// The version written. Version 1 (no sequence numbers, no expiry) is still read.
pub(crate) const BIN_VERSION: u32 = 2;
pub(crate) const BIN_VERSION_1: u32 = 1;
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

/// Bytes from the start of the bin file to the block table, for `n` keys of which `expiring` have an
/// expiry (version 2; 0 for version 1).
pub(crate) fn bin_body_bytes(n: u64, expiring: u64) -> Option<u64> {
    (BIN_HEADER_BYTES as u64)
        .checked_add(n.checked_mul(8)?)?
        .checked_add(n.checked_add(1)?.checked_mul(8)?)?
        .checked_add(expiring.checked_mul(16)?)
}

/// Bytes before each value in `.data`, version 1: its checksum, so the check reads the cache line the
/// value is in.
pub(crate) const VALUE_HEADER_BYTES_V1: usize = 4;
/// Version 2, at least: `checksum u32 | seq u64`, then `expires_ms u64` when the top bit of `seq` is set
/// (so a value without an expiry pays 8 bytes, not 16).
pub(crate) const VALUE_HEADER_BYTES: usize = 12;
/// The bit of the stored `seq` that says an `expires_ms` follows (sequence numbers stay below it).
pub(crate) const EXPIRES_FLAG: u64 = 1 << 63;

/// The checksum of one value, version 1.
pub(crate) fn value_hash_v1(value: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(value) as u32
}

/// The checksum of one entry, version 2: the low 32 bits of xxh3-64 over the bytes after the checksum,
/// `seq ‖ [expires_ms] ‖ value`, which are contiguous in the file (one hash on the read path).
pub(crate) fn entry_hash(rest: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(rest) as u32
}

/// [`entry_hash`] of `meta ‖ value`, concatenated in `scratch` (one-shot xxh3 is faster than the
/// streaming hasher for the small values most entries hold).
pub(crate) fn entry_hash_parts(scratch: &mut Vec<u8>, meta: &[u8], value: &[u8]) -> u32 {
    scratch.clear();
    scratch.extend_from_slice(meta);
    scratch.extend_from_slice(value);
    entry_hash(scratch)
}

/// The bytes after an entry's checksum and before its value: `seq u64`, with [`EXPIRES_FLAG`] and
/// `expires_ms u64` after it when the value expires. Returns the buffer and how much of it is used.
pub(crate) fn entry_meta(seq: u64, expires_ms: u64) -> ([u8; 16], usize) {
    assert!(
        seq < EXPIRES_FLAG,
        "sequence number {seq} overflows the entry format"
    );
    let mut m = [0u8; 16];
    if expires_ms == 0 {
        m[..8].copy_from_slice(&seq.to_le_bytes());
        (m, 8)
    } else {
        m[..8].copy_from_slice(&(seq | EXPIRES_FLAG).to_le_bytes());
        m[8..].copy_from_slice(&expires_ms.to_le_bytes());
        (m, 16)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;
    use crate::index::BinarySearchBuilder;

    /// Writes a version-1 snapshot exactly as the engine wrote it before sequence numbers and expiry
    /// were recorded.
    fn write_v1(dir: &Path, keyspace: u32, generation: u64, kv: &[(u64, &[u8])]) -> SnapshotMeta {
        let mut data = Vec::new();
        let mut offsets = vec![0u64];
        for (_, v) in kv {
            data.put_u32_le(value_hash_v1(v));
            data.put_slice(v);
            offsets.push(data.len() as u64);
        }
        let n = kv.len() as u64;
        let mut b = Vec::new();
        b.put_slice(BIN_MAGIC);
        b.put_u32_le(BIN_VERSION_1);
        b.put_u32_le(keyspace);
        b.put_u64_le(n);
        b.put_u64_le(99);
        b.put_u64_le(data.len() as u64);
        b.put_u64_le(0);
        kv.iter().for_each(|(k, _)| b.put_u64_le(*k));
        offsets.iter().for_each(|o| b.put_u64_le(*o));
        assert_eq!(Some(b.len() as u64), bin_body_bytes(n, 0));
        writer::append_block_table(&mut b);
        std::fs::write(bin_path(dir, keyspace, generation), &b).unwrap();
        std::fs::write(data_path(dir, keyspace, generation), &data).unwrap();
        SnapshotMeta {
            generation,
            key_count: n,
            bin_bytes: b.len() as u64,
            data_bytes: data.len() as u64,
        }
    }

    #[test]
    fn the_writer_and_reader_checksums_agree() {
        let (meta, len) = entry_meta(7, 9);
        let meta = &meta[..len];
        let mut whole = meta.to_vec();
        whole.extend_from_slice(b"value");
        assert_eq!(
            entry_hash_parts(&mut Vec::new(), meta, b"value"),
            entry_hash(&whole)
        );
    }

    #[test]
    fn a_version_1_snapshot_still_opens_with_seq_0_and_no_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let kv: [(u64, &[u8]); 3] = [(1, b"one"), (5, b""), (9, b"nine")];
        let meta = write_v1(dir.path(), 3, 7, &kv);
        let snap = Snapshot::open(dir.path(), 3, meta, &BinarySearchBuilder).unwrap();
        for (k, v) in kv {
            let e = snap.get(k).unwrap().unwrap();
            assert_eq!(&snap.data()[e.start..e.end], v);
            assert_eq!((e.seq, e.expires_ms), (0, 0));
        }
        assert!(snap.get(2).unwrap().is_none());
        assert_eq!(snap.expiring().count(), 0);
        snap.verify_values().unwrap();
    }

    #[test]
    fn a_version_2_snapshot_round_trips_seq_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SnapshotWriter::create(dir.path(), 0, 2, 50).unwrap();
        w.push(1, b"a", 10, 0).unwrap();
        w.push(2, b"bb", 11, 5_000).unwrap();
        w.push(3, b"", 12, 0).unwrap();
        let meta = w.finish().unwrap();
        let snap = Snapshot::open(dir.path(), 0, meta, &BinarySearchBuilder).unwrap();
        let e = snap.get(2).unwrap().unwrap();
        assert_eq!(&snap.data()[e.start..e.end], b"bb");
        assert_eq!((e.seq, e.expires_ms), (11, 5_000));
        assert_eq!(snap.expiring().collect::<Vec<_>>(), vec![(2, 5_000)]);
        // The checksum covers the sequence number and the expiry.
        let data = data_path(dir.path(), 0, 2);
        let mut bytes = std::fs::read(&data).unwrap();
        let second = VALUE_HEADER_BYTES + 1; // after key 1's entry (no expiry, 1-byte value)
        bytes[second + 4] ^= 1; // seq of key 2
        std::fs::write(&data, &bytes).unwrap();
        let snap = Snapshot::open(dir.path(), 0, meta, &BinarySearchBuilder).unwrap();
        assert!(matches!(snap.get(2), Err(crate::Error::Corrupt { .. })));
        bytes[second + 4] ^= 1;
        bytes[second + 12] ^= 1; // expiry of key 2
        std::fs::write(&data, &bytes).unwrap();
        let snap = Snapshot::open(dir.path(), 0, meta, &BinarySearchBuilder).unwrap();
        assert!(matches!(snap.get(2), Err(crate::Error::Corrupt { .. })));
        assert!(snap.get(1).unwrap().is_some());
    }
}

//! Opens a snapshot: maps both files, verifies every byte of `.bin` before use, and serves lookups
//! through the configured [`SortedIndex`].

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    bin_body_bytes, bin_path, data_path, entry_hash, value_hash_v1, SnapshotMeta, BIN_END_MAGIC,
    BIN_FOOTER_BYTES, BIN_HEADER_BYTES, BIN_MAGIC, BIN_VERSION, BIN_VERSION_1,
    CHECKSUM_BLOCK_BYTES,
};
use crate::{
    codec::{u32_at, u64_at},
    index::{IndexBuilder, SortedIndex},
    mmap::MappedFile,
    Error, Result,
};

/// The two mapped files of a snapshot, shared by every `Snapshot` value that serves them (an index
/// rebuild makes a new `Snapshot` over the same files).
struct Files {
    bin: MappedFile,
    data: MappedFile,
    bin_path: PathBuf,
    data_path: PathBuf,
    index_path: PathBuf,
}

/// An open, verified snapshot of one keyspace and the index that searches it.
pub(crate) struct Snapshot {
    pub meta: SnapshotMeta,
    files: Arc<Files>,
    n: usize,
    /// Format version of the files (1 or 2).
    version: u32,
    /// Entries in the expiry table (version 2).
    expiring: usize,
    index: Arc<dyn SortedIndex>,
}

/// One verified entry of a snapshot: where its value is in `.data`, the sequence number of the write
/// that made it (0 for a version-1 snapshot, which did not record it) and its expiry (0 = never).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SnapEntry {
    pub start: usize,
    pub end: usize,
    pub seq: u64,
    pub expires_ms: u64,
}

impl Snapshot {
    /// Maps and verifies the files the manifest names. Any mismatch is refused with file and offset.
    pub(crate) fn open(
        dir: &Path,
        keyspace: u32,
        meta: SnapshotMeta,
        builder: &dyn IndexBuilder,
    ) -> Result<Self> {
        let bin_path = bin_path(dir, keyspace, meta.generation);
        let data_path = data_path(dir, keyspace, meta.generation);
        let index_path = super::index_path(dir, keyspace, meta.generation);
        let bin = MappedFile::open(&bin_path)?;
        let data = MappedFile::open(&data_path)?;
        let (n, version, expiring) = verify_bin(&bin_path, bin.bytes(), keyspace, &meta)?;
        if data.bytes().len() as u64 != meta.data_bytes {
            return Err(Error::corrupt(
                &data_path,
                (data.bytes().len() as u64).min(meta.data_bytes),
                format!(
                    "file is {} bytes, the manifest says {}",
                    data.bytes().len(),
                    meta.data_bytes
                ),
            ));
        }
        let files = Arc::new(Files {
            bin,
            data,
            bin_path,
            data_path,
            index_path,
        });
        let mut snap = Self {
            meta,
            files,
            n,
            version,
            expiring,
            index: Arc::new(crate::index::BinarySearch),
        };
        snap.verify_structure()?;
        match builder.load_or_build(snap.keys(), &snap.files.index_path) {
            Ok((index, _rebuilt)) => snap.index = index,
            // The index is derived state: binary search serves (correctly, more slowly) until a rebuild.
            Err(e) => {
                tracing::error!(error = %e, "index build failed; serving this snapshot with binary search")
            }
        }
        Ok(snap)
    }

    /// The same files with a freshly built index, persisted for the next open.
    pub(crate) fn rebuild_index(&self, builder: &dyn IndexBuilder) -> Result<Self> {
        let index = builder.rebuild(self.keys(), &self.files.index_path)?;
        Ok(Self {
            meta: self.meta,
            files: self.files.clone(),
            n: self.n,
            version: self.version,
            expiring: self.expiring,
            index,
        })
    }

    /// The sorted keys, straight from the mapping.
    pub(crate) fn keys(&self) -> &[u64] {
        self.files.bin.u64s(BIN_HEADER_BYTES, self.n).unwrap_or(&[])
    }

    fn offsets(&self) -> &[u64] {
        self.files
            .bin
            .u64s(BIN_HEADER_BYTES + 8 * self.n, self.n + 1)
            .unwrap_or(&[])
    }

    pub(crate) fn index(&self) -> &dyn SortedIndex {
        &*self.index
    }

    /// `(key, expires_ms)` of every key with an expiry, in key order (verified at open).
    pub(crate) fn expiring(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let at = BIN_HEADER_BYTES + 16 * self.n + 8;
        let raw = self.files.bin.u64s(at, 2 * self.expiring).unwrap_or(&[]);
        raw.chunks_exact(2).map(|c| (c[0], c[1]))
    }

    /// Whether the snapshot holds `key` (expired or not).
    pub(crate) fn contains(&self, key: u64) -> bool {
        self.index.find(self.keys(), key).is_some()
    }

    fn value_header_bytes(&self) -> usize {
        if self.version == BIN_VERSION_1 {
            super::VALUE_HEADER_BYTES_V1
        } else {
            super::VALUE_HEADER_BYTES
        }
    }

    /// Keys strictly increase; offsets start at 0, never decrease and end at the data length. Checked
    /// once at open so that lookups can index without further bounds surprises.
    fn verify_structure(&self) -> Result<()> {
        let keys = self.keys();
        let offsets = self.offsets();
        if keys.len() != self.n || offsets.len() != self.n + 1 {
            return Err(Error::corrupt(
                &self.files.bin_path,
                BIN_HEADER_BYTES as u64,
                "arrays misaligned or out of bounds",
            ));
        }
        if let Some(i) = keys.windows(2).position(|w| w[0] >= w[1]) {
            return Err(Error::corrupt(
                &self.files.bin_path,
                (BIN_HEADER_BYTES + 8 * (i + 1)) as u64,
                "keys not strictly increasing",
            ));
        }
        let off_base = BIN_HEADER_BYTES + 8 * self.n;
        if offsets[0] != 0 {
            return Err(Error::corrupt(
                &self.files.bin_path,
                off_base as u64,
                "first value offset is not 0",
            ));
        }
        let header = self.value_header_bytes() as u64;
        if let Some(i) = offsets
            .windows(2)
            .position(|w| w[1] < w[0].saturating_add(header))
        {
            return Err(Error::corrupt(
                &self.files.bin_path,
                (off_base + 8 * (i + 1)) as u64,
                "value offsets leave no room for the value checksum",
            ));
        }
        if offsets[self.n] != self.meta.data_bytes {
            return Err(Error::corrupt(
                &self.files.bin_path,
                (off_base + 8 * self.n) as u64,
                "last offset is not the data length",
            ));
        }
        let exp_base = off_base + 8 * (self.n + 1);
        let table: Vec<(u64, u64)> = self.expiring().collect();
        if table.len() != self.expiring {
            return Err(Error::corrupt(
                &self.files.bin_path,
                exp_base as u64,
                "expiry table misaligned or out of bounds",
            ));
        }
        if let Some(i) = table.iter().position(|(_, e)| *e == 0) {
            return Err(Error::corrupt(
                &self.files.bin_path,
                (exp_base + 16 * i) as u64,
                "expiry table entry without an expiry",
            ));
        }
        if let Some(i) = table.windows(2).position(|w| w[0].0 >= w[1].0) {
            return Err(Error::corrupt(
                &self.files.bin_path,
                (exp_base + 16 * (i + 1)) as u64,
                "expiry table keys not strictly increasing",
            ));
        }
        Ok(())
    }

    /// The entry at position `i`, verified against its checksum before it is returned.
    pub(crate) fn entry_at(&self, i: usize) -> Result<SnapEntry> {
        let offsets = self.offsets();
        let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
        let entry = &self.files.data.bytes()[start..end];
        let corrupt = |why: &str| {
            Error::corrupt(
                &self.files.data_path,
                start as u64,
                format!("{why} for key {}", self.keys()[i]),
            )
        };
        // Open checked that every entry holds at least its fixed header.
        if self.version == BIN_VERSION_1 {
            let (head, value) = entry.split_at(super::VALUE_HEADER_BYTES_V1);
            if value_hash_v1(value).to_le_bytes() != head {
                return Err(corrupt("value checksum mismatch"));
            }
            return Ok(SnapEntry {
                start: start + super::VALUE_HEADER_BYTES_V1,
                end,
                seq: 0,
                expires_ms: 0,
            });
        }
        if entry_hash(&entry[4..]).to_le_bytes() != entry[..4] {
            return Err(corrupt("value checksum mismatch"));
        }
        let seq = u64_at(entry, 4).unwrap_or(0);
        let (seq, expires_ms, header) = if seq & super::EXPIRES_FLAG == 0 {
            (seq, 0, super::VALUE_HEADER_BYTES)
        } else {
            let exp = u64_at(entry, super::VALUE_HEADER_BYTES)
                .filter(|e| *e != 0)
                .ok_or_else(|| corrupt("entry too short for its expiry"))?;
            (
                seq & !super::EXPIRES_FLAG,
                exp,
                super::VALUE_HEADER_BYTES + 8,
            )
        };
        Ok(SnapEntry {
            start: start + header,
            end,
            seq,
            expires_ms,
        })
    }

    /// `key`'s entry, if the snapshot holds the key (expired or not: the caller decides).
    pub(crate) fn get(&self, key: u64) -> Result<Option<SnapEntry>> {
        // Touch the offset the prediction points at while the key window is searched: the cache misses
        // overlap instead of following each other (the results are not needed, only the loads).
        if let Some(p) = self.index.predict(key) {
            // Then the predicted entry's value: the target's value is at most ε entries away, usually
            // on the same page, whose TLB entry this load fetches too.
            let near = self.offsets().get(p).copied().unwrap_or(0) as usize;
            std::hint::black_box(self.files.data.bytes().get(near).copied());
        }
        match self.index.find(self.keys(), key) {
            Some(i) => self.entry_at(i).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn data(&self) -> &[u8] {
        self.files.data.bytes()
    }

    /// Verifies every value's checksum (a scrub). Returns the first failure.
    pub(crate) fn verify_values(&self) -> Result<()> {
        (0..self.n).try_for_each(|i| self.entry_at(i).map(|_| ()))
    }

    /// Asks the kernel to read both files ahead, then reads one byte of every 4 KiB page so each is
    /// resident and mapped. Returns (bytes, pages touched).
    pub(crate) fn warm(&self) -> (u64, u64) {
        let (mut bytes, mut pages) = (0u64, 0u64);
        for file in [&self.files.bin, &self.files.data] {
            file.advise_willneed();
            let b = file.bytes();
            let sum = b.iter().step_by(4096).fold(0u8, |acc, x| acc ^ *x);
            std::hint::black_box(sum);
            bytes += b.len() as u64;
            pages += b.len().div_ceil(4096) as u64;
        }
        (bytes, pages)
    }
}

/// Checks footer, block table and header of a bin file; returns the key count, the format version and
/// the number of expiry table entries.
fn verify_bin(
    path: &Path,
    b: &[u8],
    keyspace: u32,
    meta: &SnapshotMeta,
) -> Result<(usize, u32, usize)> {
    let corrupt = |off: usize, why: &str| Error::corrupt(path, off as u64, why.to_owned());
    if b.len() as u64 != meta.bin_bytes {
        return Err(corrupt(
            b.len().min(meta.bin_bytes as usize),
            "file length differs from the manifest",
        ));
    }
    if b.len() < BIN_HEADER_BYTES + BIN_FOOTER_BYTES {
        return Err(corrupt(0, "file shorter than header and footer"));
    }
    let foot = b.len() - BIN_FOOTER_BYTES;
    if &b[foot + 16..] != BIN_END_MAGIC {
        return Err(corrupt(foot + 16, "bad footer magic"));
    }
    let table_offset = u64_at(b, foot).unwrap_or(u64::MAX) as usize;
    if table_offset > foot
        || !table_offset.is_multiple_of(8)
        || (foot - table_offset) != table_offset.div_ceil(CHECKSUM_BLOCK_BYTES) * 8
    {
        return Err(corrupt(
            foot,
            "block table offset inconsistent with file length",
        ));
    }
    let table = &b[table_offset..foot];
    if xxhash_rust::xxh3::xxh3_64(table) != u64_at(b, foot + 8).unwrap_or(0) {
        return Err(corrupt(
            table_offset,
            "block checksum table fails its checksum",
        ));
    }
    for (i, block) in b[..table_offset].chunks(CHECKSUM_BLOCK_BYTES).enumerate() {
        if xxhash_rust::xxh3::xxh3_64(block) != u64_at(table, i * 8).unwrap_or(0) {
            return Err(corrupt(i * CHECKSUM_BLOCK_BYTES, "block checksum mismatch"));
        }
    }
    let version = u32_at(b, 8).unwrap_or(0);
    if &b[0..8] != BIN_MAGIC || !(BIN_VERSION_1..=BIN_VERSION).contains(&version) {
        return Err(corrupt(0, "bad magic or unsupported version"));
    }
    if u32_at(b, 12) != Some(keyspace) {
        return Err(corrupt(12, "snapshot belongs to another keyspace"));
    }
    let n = u64_at(b, 16).unwrap_or(u64::MAX);
    // Version 1 reserved these 8 bytes (0); version 2 keeps the expiry table's length there.
    let expiring = u64_at(b, 40).unwrap_or(u64::MAX);
    if version == BIN_VERSION_1 && expiring != 0 {
        return Err(corrupt(40, "reserved field is not 0"));
    }
    if n != meta.key_count
        || expiring > n
        || bin_body_bytes(n, expiring) != Some(table_offset as u64)
    {
        return Err(corrupt(
            16,
            "key count inconsistent with the manifest or the file length",
        ));
    }
    if u64_at(b, 32) != Some(meta.data_bytes) {
        return Err(corrupt(32, "data length differs from the manifest"));
    }
    Ok((n as usize, version, expiring as usize))
}

//! Opens a snapshot: maps both files, verifies every byte of `.bin` before use, and serves lookups
//! through the configured [`SortedIndex`].

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    bin_body_bytes, bin_path, data_path, value_hash, SnapshotMeta, BIN_END_MAGIC, BIN_FOOTER_BYTES,
    BIN_HEADER_BYTES, BIN_MAGIC, BIN_VERSION, CHECKSUM_BLOCK_BYTES,
};
use crate::{
    index::{IndexBuilder, SortedIndex},
    mmap::MappedFile,
    wal::record::{read_u32, read_u64},
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
    index: Arc<dyn SortedIndex>,
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
        let n = verify_bin(&bin_path, bin.bytes(), keyspace, &meta)?;
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
        let header = super::VALUE_HEADER_BYTES as u64;
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
        Ok(())
    }

    /// The value at position `i`, verified against its checksum before it is returned.
    pub(crate) fn value_at(&self, i: usize) -> Result<(usize, usize)> {
        let offsets = self.offsets();
        let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
        let entry = &self.files.data.bytes()[start..end];
        let (stored, value) = entry.split_at(super::VALUE_HEADER_BYTES);
        if value_hash(value).to_le_bytes() != stored {
            return Err(Error::corrupt(
                &self.files.data_path,
                start as u64,
                format!("value checksum mismatch for key {}", self.keys()[i]),
            ));
        }
        Ok((start + super::VALUE_HEADER_BYTES, end))
    }

    /// Byte range in `.data` of `key`'s value, if the snapshot holds the key.
    pub(crate) fn get(&self, key: u64) -> Result<Option<(usize, usize)>> {
        // Touch the offset the prediction points at while the key window is searched: the cache misses
        // overlap instead of following each other (the results are not needed, only the loads).
        if let Some(p) = self.index.predict(key) {
            // Then the predicted entry's value: the target's value is at most ε entries away, usually
            // on the same page, whose TLB entry this load fetches too.
            let near = self.offsets().get(p).copied().unwrap_or(0) as usize;
            std::hint::black_box(self.files.data.bytes().get(near).copied());
        }
        match self.index.find(self.keys(), key) {
            Some(i) => self.value_at(i).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn data(&self) -> &[u8] {
        self.files.data.bytes()
    }

    /// Verifies every value's checksum (a scrub). Returns the first failure.
    pub(crate) fn verify_values(&self) -> Result<()> {
        (0..self.n).try_for_each(|i| self.value_at(i).map(|_| ()))
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

/// Checks footer, block table and header of a bin file; returns the key count.
fn verify_bin(path: &Path, b: &[u8], keyspace: u32, meta: &SnapshotMeta) -> Result<usize> {
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
    let table_offset = read_u64(b, foot).unwrap_or(u64::MAX) as usize;
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
    if xxhash_rust::xxh3::xxh3_64(table) != read_u64(b, foot + 8).unwrap_or(0) {
        return Err(corrupt(
            table_offset,
            "block checksum table fails its checksum",
        ));
    }
    for (i, block) in b[..table_offset].chunks(CHECKSUM_BLOCK_BYTES).enumerate() {
        if xxhash_rust::xxh3::xxh3_64(block) != read_u64(table, i * 8).unwrap_or(0) {
            return Err(corrupt(i * CHECKSUM_BLOCK_BYTES, "block checksum mismatch"));
        }
    }
    if &b[0..8] != BIN_MAGIC || read_u32(b, 8) != Some(BIN_VERSION) {
        return Err(corrupt(0, "bad magic or unsupported version"));
    }
    if read_u32(b, 12) != Some(keyspace) {
        return Err(corrupt(12, "snapshot belongs to another keyspace"));
    }
    let n = read_u64(b, 16).unwrap_or(u64::MAX);
    if n != meta.key_count || bin_body_bytes(n) != Some(table_offset as u64) {
        return Err(corrupt(
            16,
            "key count inconsistent with the manifest or the file length",
        ));
    }
    if read_u64(b, 32) != Some(meta.data_bytes) {
        return Err(corrupt(32, "data length differs from the manifest"));
    }
    Ok(n as usize)
}

//! Streams a merged, sorted key/value sequence into a new snapshot's two files.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use bytes::BufMut;

use super::{
    bin_body_bytes, bin_path, data_path, entry_hash_parts, entry_meta, SnapshotMeta, BIN_END_MAGIC,
    BIN_MAGIC, BIN_VERSION, CHECKSUM_BLOCK_BYTES,
};
use crate::{
    error::{IoContext, Result},
    fsutil,
};

/// Writes `.data` as values arrive and `.bin` at the end. Keys must arrive strictly increasing.
pub(crate) struct SnapshotWriter {
    dir: PathBuf,
    keyspace: u32,
    generation: u64,
    covered_seq: u64,
    data: BufWriter<File>,
    data_tmp: PathBuf,
    keys: Vec<u64>,
    offsets: Vec<u64>,
    /// `(key, expires_ms)` of the keys with an expiry, in key order.
    expiring: Vec<(u64, u64)>,
    data_bytes: u64,
    /// Reused to hash an entry's metadata and value in one call.
    scratch: Vec<u8>,
}

impl SnapshotWriter {
    pub(crate) fn create(
        dir: &Path,
        keyspace: u32,
        generation: u64,
        covered_seq: u64,
    ) -> Result<Self> {
        let (file, data_tmp) = fsutil::create_tmp(&data_path(dir, keyspace, generation))?;
        Ok(Self {
            dir: dir.to_owned(),
            keyspace,
            generation,
            covered_seq,
            data: BufWriter::with_capacity(1 << 20, file),
            data_tmp,
            keys: Vec::new(),
            offsets: vec![0],
            expiring: Vec::new(),
            data_bytes: 0,
            scratch: Vec::new(),
        })
    }

    /// Appends `key`'s value, written by sequence number `seq`, expiring at `expires_ms` (0 = never).
    pub(crate) fn push(&mut self, key: u64, value: &[u8], seq: u64, expires_ms: u64) -> Result<()> {
        debug_assert!(
            self.keys.last().is_none_or(|last| *last < key),
            "snapshot keys must strictly increase"
        );
        let (meta, meta_len) = entry_meta(seq, expires_ms);
        let meta = &meta[..meta_len];
        self.data
            .write_all(&entry_hash_parts(&mut self.scratch, meta, value).to_le_bytes())
            .at(&self.data_tmp)?;
        self.data.write_all(meta).at(&self.data_tmp)?;
        self.data.write_all(value).at(&self.data_tmp)?;
        if expires_ms != 0 {
            self.expiring.push((key, expires_ms));
        }
        self.data_bytes += (4 + meta_len + value.len()) as u64;
        self.keys.push(key);
        self.offsets.push(self.data_bytes);
        Ok(())
    }

    /// Makes both files durable under their final names. They stay unreferenced (and are deleted at the
    /// next open) until a manifest names them.
    pub(crate) fn finish(self) -> Result<SnapshotMeta> {
        let data_final = data_path(&self.dir, self.keyspace, self.generation);
        let data_file = self
            .data
            .into_inner()
            .map_err(|e| crate::Error::io(&self.data_tmp, e.into_error()))?;
        fsutil::sync_file(&data_file, &self.data_tmp)?;
        fail::fail_point!("snapshot::after_data_sync");
        let bin = encode_bin(
            self.keyspace,
            self.covered_seq,
            self.data_bytes,
            &self.keys,
            &self.offsets,
            &self.expiring,
        );
        let bin_final = bin_path(&self.dir, self.keyspace, self.generation);
        let (mut bin_file, bin_tmp) = fsutil::create_tmp(&bin_final)?;
        fsutil::write_all(&mut bin_file, &bin_tmp, &bin)?;
        fsutil::sync_file(&bin_file, &bin_tmp)?;
        drop(bin_file);
        std::fs::rename(&self.data_tmp, &data_final).at(&data_final)?;
        std::fs::rename(&bin_tmp, &bin_final).at(&bin_final)?;
        fsutil::sync_dir(&self.dir)?;
        fail::fail_point!("snapshot::after_rename");
        Ok(SnapshotMeta {
            generation: self.generation,
            key_count: self.keys.len() as u64,
            bin_bytes: bin.len() as u64,
            data_bytes: self.data_bytes,
        })
    }
}

fn encode_bin(
    keyspace: u32,
    covered_seq: u64,
    data_bytes: u64,
    keys: &[u64],
    offsets: &[u64],
    expiring: &[(u64, u64)],
) -> Vec<u8> {
    let n = keys.len() as u64;
    let body = bin_body_bytes(n, expiring.len() as u64).unwrap_or(u64::MAX) as usize;
    let blocks = body.div_ceil(CHECKSUM_BLOCK_BYTES);
    let mut b = Vec::with_capacity(body + blocks * 8 + super::BIN_FOOTER_BYTES);
    b.put_slice(BIN_MAGIC);
    b.put_u32_le(BIN_VERSION);
    b.put_u32_le(keyspace);
    b.put_u64_le(n);
    b.put_u64_le(covered_seq);
    b.put_u64_le(data_bytes);
    b.put_u64_le(expiring.len() as u64);
    keys.iter().for_each(|k| b.put_u64_le(*k));
    offsets.iter().for_each(|o| b.put_u64_le(*o));
    for (k, e) in expiring {
        b.put_u64_le(*k);
        b.put_u64_le(*e);
    }
    debug_assert_eq!(b.len(), body);
    append_block_table(&mut b);
    b
}

/// Appends the block checksum table over everything in `b` and the footer.
pub(crate) fn append_block_table(b: &mut Vec<u8>) {
    let table_offset = b.len() as u64;
    let table: Vec<u8> = b
        .chunks(CHECKSUM_BLOCK_BYTES)
        .flat_map(|c| xxhash_rust::xxh3::xxh3_64(c).to_le_bytes())
        .collect();
    b.put_slice(&table);
    b.put_u64_le(table_offset);
    b.put_u64_le(xxhash_rust::xxh3::xxh3_64(&table));
    b.put_slice(BIN_END_MAGIC);
}

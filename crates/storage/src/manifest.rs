//! The manifest: which snapshot files are current and which WAL sequence they cover. Replaced whole by
//! an atomic rename; the rename is the commit point of a compaction. Byte layout in docs/design/storage.md.

use std::path::Path;

use bytes::BufMut;

use crate::{
    codec::{u32_at, u64_at},
    error::Result,
    fsutil,
    snapshot::SnapshotMeta,
    Error,
};

const MAGIC: &[u8; 8] = b"KYROMANF";
const VERSION: u32 = 1;
pub(crate) const FILE_NAME: &str = "MANIFEST";

/// One keyspace as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyspaceEntry {
    pub id: u32,
    pub name: String,
    pub snapshot: Option<SnapshotMeta>,
}

/// The decoded manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub generation: u64,
    /// Every WAL record with a sequence number at or below this is in the snapshots.
    pub covered_seq: u64,
    pub next_keyspace_id: u32,
    pub keyspaces: Vec<KeyspaceEntry>,
}

impl Manifest {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.keyspaces.len() * 64);
        b.put_slice(MAGIC);
        b.put_u32_le(VERSION);
        b.put_u32_le(self.keyspaces.len() as u32);
        b.put_u64_le(self.generation);
        b.put_u64_le(self.covered_seq);
        b.put_u32_le(self.next_keyspace_id);
        for ks in &self.keyspaces {
            b.put_u32_le(ks.id);
            b.put_u16_le(ks.name.len() as u16);
            b.put_slice(ks.name.as_bytes());
            let s = ks.snapshot.unwrap_or(SnapshotMeta {
                generation: 0,
                key_count: 0,
                bin_bytes: 0,
                data_bytes: 0,
            });
            b.put_u64_le(s.generation);
            b.put_u64_le(s.key_count);
            b.put_u64_le(s.bin_bytes);
            b.put_u64_le(s.data_bytes);
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&b);
        b.put_u64_le(sum);
        b
    }

    /// Decodes and verifies; `path` only names the file in errors.
    pub(crate) fn decode(path: &Path, b: &[u8]) -> Result<Self> {
        let corrupt = |off: usize, why: &str| Error::corrupt(path, off as u64, why.to_owned());
        if b.len() < 44 {
            return Err(corrupt(b.len(), "manifest shorter than its fixed part"));
        }
        let body = b.len() - 8;
        if xxhash_rust::xxh3::xxh3_64(&b[..body]) != u64_at(b, body).unwrap_or(0) {
            return Err(corrupt(body, "manifest checksum mismatch"));
        }
        if &b[0..8] != MAGIC || u32_at(b, 8) != Some(VERSION) {
            return Err(corrupt(0, "bad magic or unsupported version"));
        }
        let count = u32_at(b, 12).unwrap_or(0) as usize;
        let generation = u64_at(b, 16).unwrap_or(0);
        let covered_seq = u64_at(b, 24).unwrap_or(0);
        let next_keyspace_id = u32_at(b, 32).unwrap_or(0);
        let mut at = 36;
        let mut keyspaces = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let id = u32_at(b, at).ok_or_else(|| corrupt(at, "truncated keyspace entry"))?;
            let name_len = b
                .get(at + 4..at + 6)
                .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize);
            let name_len = name_len.ok_or_else(|| corrupt(at, "truncated keyspace entry"))?;
            let name = b
                .get(at + 6..at + 6 + name_len)
                .ok_or_else(|| corrupt(at, "truncated keyspace name"))?;
            let name = std::str::from_utf8(name)
                .map_err(|_| corrupt(at + 6, "keyspace name is not UTF-8"))?;
            at += 6 + name_len;
            let f: Vec<u64> = (0..4)
                .map_while(|i| u64_at(&b[..body], at + 8 * i))
                .collect();
            if f.len() != 4 {
                return Err(corrupt(at, "truncated snapshot entry"));
            }
            at += 32;
            let snapshot = (f[0] != 0).then_some(SnapshotMeta {
                generation: f[0],
                key_count: f[1],
                bin_bytes: f[2],
                data_bytes: f[3],
            });
            keyspaces.push(KeyspaceEntry {
                id,
                name: name.to_owned(),
                snapshot,
            });
        }
        if at != body {
            return Err(corrupt(at, "trailing bytes after the last keyspace"));
        }
        Ok(Self {
            generation,
            covered_seq,
            next_keyspace_id,
            keyspaces,
        })
    }

    /// Reads `dir/MANIFEST`, or `None` when there is none.
    pub(crate) fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(b) => Self::decode(&path, &b).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Replaces `dir/MANIFEST` atomically.
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        fail::fail_point!("manifest::before_write");
        fsutil::write_atomic(&dir.join(FILE_NAME), &self.encode())?;
        fail::fail_point!("manifest::after_write");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_any_flipped_byte_is_refused() {
        let m = Manifest {
            generation: 7,
            covered_seq: 99,
            next_keyspace_id: 3,
            keyspaces: vec![
                KeyspaceEntry {
                    id: 0,
                    name: "default".into(),
                    snapshot: None,
                },
                KeyspaceEntry {
                    id: 2,
                    name: "docs".into(),
                    snapshot: Some(SnapshotMeta {
                        generation: 7,
                        key_count: 10,
                        bin_bytes: 500,
                        data_bytes: 1000,
                    }),
                },
            ],
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(Path::new("M"), &b).unwrap(), m);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(
                matches!(
                    Manifest::decode(Path::new("M"), &c),
                    Err(Error::Corrupt { .. })
                ),
                "flip at {i} accepted"
            );
        }
        assert!(Manifest::decode(Path::new("M"), &b[..b.len() - 1]).is_err());
    }
}

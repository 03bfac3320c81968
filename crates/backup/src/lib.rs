//! Backups of a KyroDB node (docs/design/backup.md).
//!
//! A backup is an engine checkpoint ([`kyrodb_storage::Db::checkpoint`]: the manifest and the
//! snapshot files it names, covering every write up to one sequence number) plus the collections'
//! graph files, streamed to a [`Target`] — a directory or an S3 prefix — as **content-addressed
//! objects** (`data/<xxh3-128 of the content>`, sent only when the target lacks them: incremental)
//! and, written last, `backups/<id>/manifest.json`: which logical file is which object, its size
//! and block checksums, the sequence number, and a checksum of the manifest itself. A crash midway
//! leaves objects no manifest names and no manifest; a manifest names only objects written (and,
//! for a directory, fsynced) before it.
//!
//! [`create`] makes one, [`list`] and [`verify`] read them, [`restore`] turns one into a fresh data
//! directory after checking every byte.
// fjall's lints: no `unwrap` outside tests (use `expect` naming the invariant), and every
// public item documented.
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod create;
mod manifest;
mod restore;
mod target;
mod verify;

use std::path::PathBuf;

pub use create::{create, Progress, Source, State};
pub use manifest::{id_for, FileEntry, Manifest, BLOCK_BYTES, FORMAT};
pub use restore::restore;
pub use target::{open_target, DirTarget, S3Target, Target, TargetSpec};
pub use verify::{list, load_manifest, verify, Listed, Verified};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The target (directory or object store) failed an operation on an object.
    #[error("{target}: {key}: {message}")]
    Target {
        /// The target (a directory or `s3://bucket/prefix`).
        target: String,
        /// The object's key in it.
        key: String,
        /// What the target said.
        message: String,
    },
    /// A file of a backup does not hold what its manifest says: named by its logical path and
    /// object key, with the byte offset of the first block that differs.
    #[error("damaged backup file {path} (object {object}) at byte {offset}: {reason}")]
    Damaged {
        /// The file's path in the backed-up data directory (`MANIFEST`, `snap/…`, `search/…`),
        /// or `manifest.json` for the manifest itself.
        path: String,
        /// The object's key in the target.
        object: String,
        /// Byte offset of the first block that differs.
        offset: u64,
        /// What differs.
        reason: String,
    },
    /// No backup with this id, or none at all.
    #[error("{0}")]
    NotFound(String),
    /// A bad target, id or data directory.
    #[error("{0}")]
    Invalid(String),
    /// The engine refused (checkpoint, or opening the restored directory).
    #[error("engine: {0}")]
    Engine(#[from] kyrodb_storage::Error),
}

impl Error {
    /// The stable code the server and the CLI report this error under.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "backup_io",
            Error::Target { .. } => "backup_target_failed",
            Error::Damaged { .. } => "backup_damaged",
            Error::NotFound(_) => "no_such_backup",
            Error::Invalid(_) => "invalid_backup_target",
            Error::Engine(_) => "engine",
        }
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait IoAt<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoAt<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// Hashes a stream of bytes as a backup file: xxh3-128 of the whole content (the object's name)
/// and xxh3-64 of each [`BLOCK_BYTES`] block (to name where a damaged copy differs).
#[derive(Default)]
pub(crate) struct Hasher {
    whole: xxhash_rust::xxh3::Xxh3,
    block: xxhash_rust::xxh3::Xxh3,
    in_block: u64,
    bytes: u64,
    blocks: Vec<u64>,
}

impl Hasher {
    pub(crate) fn update(&mut self, mut b: &[u8]) {
        self.whole.update(b);
        self.bytes += b.len() as u64;
        while !b.is_empty() {
            let take = ((BLOCK_BYTES - self.in_block) as usize).min(b.len());
            self.block.update(&b[..take]);
            self.in_block += take as u64;
            b = &b[take..];
            if self.in_block == BLOCK_BYTES {
                self.blocks.push(self.block.digest());
                self.block.reset();
                self.in_block = 0;
            }
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Block checksums so far (complete blocks only).
    pub(crate) fn blocks(&self) -> &[u64] {
        &self.blocks
    }

    /// (whole hash as 32 hex digits, block hashes as 16 hex digits each).
    pub(crate) fn finish(mut self) -> (String, Vec<String>) {
        if self.in_block > 0 {
            self.blocks.push(self.block.digest());
        }
        (
            format!("{:032x}", self.whole.digest128()),
            self.blocks.iter().map(|b| format!("{b:016x}")).collect(),
        )
    }
}

/// The object key of content with this hash.
pub fn data_key(hash: &str) -> String {
    format!("data/{hash}")
}

/// The object key of a backup's manifest.
pub fn manifest_key(id: &str) -> String {
    format!("backups/{id}/manifest.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hasher_blocks_do_not_depend_on_how_the_bytes_arrive() {
        let data: Vec<u8> = (0..(BLOCK_BYTES as usize * 2 + 1000))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut a = Hasher::default();
        a.update(&data);
        let mut b = Hasher::default();
        for c in data.chunks(12_345) {
            b.update(c);
        }
        let (ha, ba) = a.finish();
        let (hb, bb) = b.finish();
        assert_eq!(ha, hb);
        assert_eq!(ba, bb);
        assert_eq!(ba.len(), 3);
        assert_eq!(
            ha,
            format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&data)),
            "the object name is the xxh3-128 of the content"
        );
    }
}

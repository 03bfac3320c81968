//! KyroDB's storage engine: u64 keys to byte values in named keyspaces, sharing one write-ahead log.
//!
//! Write path: validate → queue → the WAL writer assigns a sequence number, writes and fsyncs a whole
//! group at once → applies it to the in-memory delta → publishes → acknowledges. Read path: active
//! delta → frozen delta → the keyspace's mmap'd snapshot, found through a [`SortedIndex`].
//! Compaction merges a frozen delta into new snapshot files in the background and swaps them in
//! atomically. Recovery replays the WAL after what the manifest covers. The on-disk formats and their
//! crash arguments are in docs/design/storage.md.
#![deny(clippy::unwrap_used)]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]
#![warn(missing_docs)]

mod applier;
mod checkpoint;
pub mod codec;
mod compaction;
mod condition;
mod core;
mod counts;
mod db;
mod delta;
mod error;
pub mod families;
mod fsutil;
pub mod index;
mod inner;
mod manifest;
mod merge;
mod mmap;
mod options;
mod recovery;
mod replica;
mod replicate;
mod run;
pub mod seglog;
mod snapshot;
mod view;
mod wal;

pub use applier::{Applier, Change};
pub use checkpoint::install_checkpoint;
pub use compaction::SnapshotInfo;
pub use condition::Condition;
pub use core::{validate_keyspace_name, DEFAULT_KEYSPACE};
pub use db::{Db, IndexReport, Keyspace, KeyspaceStats, Stats, WarmReport, WriteBatch};
pub use error::{Error, Result};
/// Fsyncs a directory (after creating, renaming or deleting entries in it), naming it on failure.
pub use fsutil::sync_dir;
/// Writes a whole file atomically: a temp file, fsync, rename over `path`, fsync of the directory —
/// the engine's rule for every file it makes visible, offered to derived state (search graphs).
pub use fsutil::write_atomic as write_file_atomic;
pub use index::{
    BinarySearch, BinarySearchBuilder, IndexBuilder, IndexError, IndexInfo, LearnedIndexBuilder,
    SortedIndex,
};
/// The learned index's build configuration, the type of [`LearnedIndexBuilder::config`].
pub use kyrodb_rmi::RmiConfig;
pub use options::{FsyncPolicy, Options};
pub use replicate::{LoggedWrite, Replicator};
pub use view::{Entry, Value};

//! The write-ahead log: segmented, checksummed, group-committed. See docs/design/storage.md.

pub(crate) mod record;
pub(crate) mod segment;
mod writer;

pub(crate) use writer::{CommitSink, Hint, Wal, WalStart};

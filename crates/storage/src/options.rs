//! Engine options. Every limit is named with its unit last and has a default that works.

use std::sync::Arc;

use crate::{
    index::{IndexBuilder, LearnedIndexBuilder},
    Error, Result,
};

/// When a WAL append becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before every acknowledgement (group commit amortises it). The default.
    Always,
    /// Acknowledge after the write(2); fsync at most this many milliseconds later. A crash loses at
    /// most that window.
    IntervalMs(u64),
    /// Never fsync; the OS writes back when it likes. A power loss can lose anything not yet written back.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => match other
                .strip_prefix("interval_ms:")
                .or_else(|| other.strip_prefix("interval:"))
            {
                Some(ms) => ms
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Self::IntervalMs)
                    .ok_or_else(|| {
                        Error::InvalidOption(format!(
                            "fsync interval {ms:?} is not a positive integer"
                        ))
                    }),
                None => Err(Error::InvalidOption(format!(
                    "fsync policy {other:?} is not one of always, never, interval_ms:<ms>"
                ))),
            },
        }
    }
}

/// Options for [`crate::Db::open`].
#[derive(Clone)]
pub struct Options {
    /// Durability of acknowledgements. Default `Always`.
    pub fsync: FsyncPolicy,
    /// Largest value accepted, in bytes. Default 1 MiB.
    pub value_bytes_max: usize,
    /// Largest encoded write batch, in bytes. Default 64 MiB.
    pub batch_bytes_max: usize,
    /// Most operations in one write batch. Default 100,000.
    pub batch_ops_max: usize,
    /// A WAL segment is closed and a new one started past this size, in bytes. Default 64 MiB.
    pub wal_segment_bytes: u64,
    /// Segments fully covered by a snapshot that are kept anyway (for inspection/backup). Default 0.
    pub wal_retain_segments: usize,
    /// Compaction starts when the delta holds this many bytes. Default 64 MiB.
    pub delta_bytes_compact: usize,
    /// Compaction also starts when the oldest write in the delta is this old and the delta is not empty.
    /// Default 60,000 ms. 0 disables the age trigger.
    pub delta_age_compact_ms: u64,
    /// Writers wait (then get `Busy`) when the active plus frozen delta hold more than this. Default 512 MiB.
    pub delta_bytes_budget: usize,
    /// How long a writer waits for room under the budget before `Busy`. Default 10,000 ms.
    pub write_stall_ms_max: u64,
    /// Bytes of writes queued for the WAL writer at most; writers wait beyond it. Default 64 MiB.
    pub wal_queue_bytes_max: usize,
    /// Most keyspaces. Default 4096.
    pub keyspaces_max: usize,
    /// Builds the index over each snapshot's sorted keys (the learned-index seam). Default: the
    /// learned index; `BinarySearchBuilder` is the plain alternative.
    pub index_builder: Arc<dyn IndexBuilder>,
    /// Start the background compaction thread. Tests switch it off to compact by hand. Default true.
    pub background_compaction: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            value_bytes_max: 1 << 20,
            batch_bytes_max: 64 << 20,
            batch_ops_max: 100_000,
            wal_segment_bytes: 64 << 20,
            wal_retain_segments: 0,
            delta_bytes_compact: 64 << 20,
            delta_age_compact_ms: 60_000,
            delta_bytes_budget: 512 << 20,
            write_stall_ms_max: 10_000,
            wal_queue_bytes_max: 64 << 20,
            keyspaces_max: 4096,
            index_builder: Arc::new(LearnedIndexBuilder::default()),
            background_compaction: true,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("fsync", &self.fsync)
            .field("value_bytes_max", &self.value_bytes_max)
            .field("batch_bytes_max", &self.batch_bytes_max)
            .field("wal_segment_bytes", &self.wal_segment_bytes)
            .field("delta_bytes_compact", &self.delta_bytes_compact)
            .field("delta_bytes_budget", &self.delta_bytes_budget)
            .field("index", &self.index_builder.name())
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Checks ranges so that a bad configuration fails at open, not later.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidOption(m));
        if self.value_bytes_max == 0 || self.value_bytes_max > (256 << 20) {
            return bad(format!(
                "value_bytes_max {} is outside 1..=256 MiB",
                self.value_bytes_max
            ));
        }
        if self.batch_bytes_max < self.value_bytes_max + 64 || self.batch_bytes_max > (1 << 30) {
            return bad(format!(
                "batch_bytes_max {} must be at least value_bytes_max + 64 and at most 1 GiB",
                self.batch_bytes_max
            ));
        }
        if self.wal_segment_bytes < 4096 {
            return bad(format!(
                "wal_segment_bytes {} is below 4096",
                self.wal_segment_bytes
            ));
        }
        if self.delta_bytes_compact == 0 || self.delta_bytes_budget < self.delta_bytes_compact {
            return bad(format!(
                "delta_bytes_budget ({}) must be at least delta_bytes_compact ({}), which must be positive",
                self.delta_bytes_budget, self.delta_bytes_compact
            ));
        }
        if self.batch_ops_max == 0 || self.keyspaces_max == 0 {
            return bad("batch_ops_max and keyspaces_max must be positive".into());
        }
        if let Err(e) = self.index_builder.validate() {
            return bad(format!(
                "index_builder ({}): {e}",
                self.index_builder.name()
            ));
        }
        Ok(())
    }
}

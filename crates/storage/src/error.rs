//! The storage engine's one error type.

use std::{io, path::PathBuf, sync::Arc};

/// Everything the engine can refuse or fail with. The server maps each variant to an HTTP error code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value over `value_bytes_max`; nothing was written.
    #[error("value is {len} bytes, larger than value_bytes_max ({max} bytes)")]
    ValueTooLarge {
        /// Bytes of the largest value in the write.
        len: usize,
        /// `value_bytes_max`.
        max: usize,
    },
    /// A batch whose encoded size is over `batch_bytes_max`; nothing was written.
    #[error("batch is {len} bytes, larger than batch_bytes_max ({max} bytes)")]
    BatchTooLarge {
        /// Encoded bytes of the batch.
        len: usize,
        /// `batch_bytes_max`.
        max: usize,
    },
    /// A batch with more operations than `batch_ops_max`; nothing was written.
    #[error("batch has {count} operations, more than batch_ops_max ({max})")]
    BatchTooManyOps {
        /// Operations in the batch.
        count: usize,
        /// `batch_ops_max`.
        max: usize,
    },
    /// A keyspace name outside `[A-Za-z0-9_.-]{1,64}`.
    #[error("keyspace name {0:?} is invalid: use 1 to 64 characters from A-Z a-z 0-9 _ . -, not only dots")]
    InvalidKeyspaceName(String),
    /// A keyspace that does not exist.
    #[error("keyspace {0:?} does not exist")]
    NoSuchKeyspace(String),
    /// More keyspaces than `keyspaces_max`.
    #[error("cannot create keyspace: keyspaces_max ({0}) reached")]
    TooManyKeyspaces(usize),
    /// Bytes on disk that failed a checksum or a structural check. Never served.
    #[error("{}: corrupt at byte offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage in it.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The engine stopped accepting writes after an I/O failure (fail-stop): restart to recover.
    #[error("writes are stopped after an I/O failure: {0}")]
    WritesStopped(Arc<str>),
    /// The delta is over its memory budget and compaction did not catch up in time.
    #[error("busy: in-memory delta holds {delta_bytes} bytes, over delta_bytes_budget ({budget} bytes), and compaction did not catch up within write_stall_ms_max ({waited_ms} ms); retry later")]
    Busy {
        /// Bytes held by the active and frozen delta.
        delta_bytes: usize,
        /// `delta_bytes_budget`.
        budget: usize,
        /// How long the writer waited before giving up.
        waited_ms: u64,
    },
    /// More bytes are queued for the WAL writer than `wal_queue_bytes_max` and the queue did not drain
    /// within `write_stall_ms_max` (the disk is slower than the writers).
    #[error("busy: {queued_bytes} bytes are queued for the WAL, over wal_queue_bytes_max ({max} bytes), and the queue did not drain within write_stall_ms_max; retry later")]
    WalQueueFull {
        /// Bytes queued for the WAL writer.
        queued_bytes: usize,
        /// `wal_queue_bytes_max`.
        max: usize,
    },
    /// A file could not be opened because the process or the system is out of file descriptors
    /// (EMFILE, ENFILE), after retries: nothing was written and writes go on once descriptors are
    /// free again. Back-pressure, never fail-stop.
    #[error("busy: out of file descriptors opening {}: {source}; nothing was written, retry later (raise the open-file limit or lower connections_max)", path.display())]
    OutOfFiles {
        /// The file or directory being opened.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An I/O error on a named file.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The data directory is held by another process.
    #[error("data directory {} is in use by another process (lock file held)", .0.display())]
    Locked(PathBuf),
    /// An option outside its documented range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A conditional write's condition did not hold when the write was sequenced; nothing of its batch
    /// was written.
    #[error("condition failed on key {key} in keyspace {keyspace:?}: expected {expected}, found {}", match current_seq { Some(s) => format!("a live value written at sequence {s}"), None => "no live value".to_owned() })]
    ConditionFailed {
        /// The keyspace's name.
        keyspace: String,
        /// The key whose condition failed (the first one checked that failed).
        key: u64,
        /// What the batch required.
        expected: crate::condition::Condition,
        /// The sequence number of the key's live value when the batch was checked (`None`: absent).
        current_seq: Option<u64>,
    },
    /// The index seam failed: an invalid index configuration (a caller's mistake), or an I/O or build
    /// failure of the index (see [`crate::IndexError`]). The snapshot keeps its previous index.
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    /// The engine was closed.
    #[error("the database is closed")]
    Closed,
    /// Cluster mode: the write could not be ordered (no leader reachable, no quorum); it was not
    /// applied anywhere. Retry.
    #[error("the cluster cannot take writes now: {0}")]
    Unavailable(String),
    /// Cluster mode: the write was handed to the leader but its outcome is unknown (the leader was
    /// lost or the wait timed out): it may or may not be applied. Read before retrying.
    #[error("the write's outcome is unknown: {0}")]
    Indeterminate(String),
}

/// "Too many open files" (per process) and "file table overflow" (system-wide), as on Linux.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// Result with the engine's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An I/O error that says the process or the system has no file descriptor left.
    pub(crate) fn is_out_of_files(&self) -> bool {
        match self {
            Error::OutOfFiles { .. } => true,
            Error::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(EMFILE) | Some(ENFILE))
            }
            _ => false,
        }
    }

    /// An [`Error::OutOfFiles`] saying what `self` says (its own copy: errors are not `Clone`);
    /// call it on an error [`Error::is_out_of_files`] accepted.
    pub(crate) fn out_of_files_copy(&self) -> Error {
        let (path, source) = match self {
            Error::OutOfFiles { path, source } | Error::Io { path, source } => {
                (path.clone(), source)
            }
            other => return Error::io(PathBuf::new(), io::Error::other(other.to_string())),
        };
        Error::OutOfFiles {
            path,
            source: source.raw_os_error().map_or_else(
                || io::Error::other(source.to_string()),
                io::Error::from_raw_os_error,
            ),
        }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Attaches a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

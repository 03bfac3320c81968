//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong building, loading or saving a learned index.
#[derive(Debug, thiserror::Error)]
pub enum RmiError {
    /// The build input is not strictly increasing at `index` (`keys[index - 1] >= keys[index]`).
    #[error("keys must be sorted and deduplicated: keys[{index}] = {key} follows {previous}")]
    NotSortedOrDuplicate {
        /// Position of the first offending key.
        index: usize,
        /// The key before it.
        previous: u64,
        /// The offending key.
        key: u64,
    },
    /// A configuration value is out of its documented range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The index was built over a different number of keys than the slice it is checked against.
    #[error("index covers {index_keys} keys but the key slice has {slice_keys}")]
    KeyCountMismatch {
        /// Keys the model was built over.
        index_keys: u64,
        /// Keys in the slice given.
        slice_keys: u64,
    },
    /// Verification found a key outside its predicted window (a model that does not fit its keys).
    #[error("key {key} at position {position} lies outside its window [{window_lo}, {window_hi})")]
    WindowViolation {
        /// The key.
        key: u64,
        /// Its true position.
        position: usize,
        /// First slot of the window searched.
        window_lo: usize,
        /// One past the last slot of the window searched.
        window_hi: usize,
    },
    /// The requested search kernel is not available on this CPU.
    #[error("search kernel {0:?} is not supported on this CPU")]
    KernelUnsupported(crate::Kernel),
    /// The background rebuild thread could not be started.
    #[error("cannot start the rebuild thread: {0}")]
    Spawn(std::io::Error),
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file ends before a structure it declares.
    #[error("{path}: truncated at byte {offset}: {what}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Byte offset where more bytes were needed (the file length or the expected length).
        offset: u64,
        /// What was being read.
        what: String,
    },
    /// The file's checksum does not match its content.
    #[error("{path}: checksum mismatch at byte {offset}: stored {stored:#018x}, computed {computed:#018x}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Byte offset of the stored checksum.
        offset: u64,
        /// Checksum stored in the file.
        stored: u64,
        /// Checksum of the bytes read.
        computed: u64,
    },
    /// The file is structurally invalid (bad magic, version, counts or model) at `offset`.
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the offending field or section.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = RmiError> = std::result::Result<T, E>;

//! Why a node did not start: one typed error for the cluster crate's start-up path (settings,
//! data directory, engine, Raft state, openraft), below every module that returns it.

/// Why a node did not start (or its configuration was refused). Each kind says what to fix: a
/// setting, the data directory, the engine or the Raft state on disk.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is refused; the message names it.
    #[error("{0}")]
    Config(String),
    /// The data directory holds what a cluster node cannot start on (data written outside a
    /// cluster).
    #[error("{0}")]
    DataDir(String),
    /// The engine refused (creating the cluster's keyspaces, installing a received snapshot).
    #[error("{what}: {source}")]
    Storage {
        /// What was being done.
        what: &'static str,
        /// The engine's error.
        source: kyrodb_storage::Error,
    },
    /// The Raft state on disk (log, vote, snapshots) could not be read or written; the message
    /// names the file.
    #[error("{what}: {reason}")]
    RaftState {
        /// Which part of the state.
        what: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// openraft refused to start (its configuration or its task).
    #[error("raft: {0}")]
    Raft(String),
}

impl StartError {
    pub(crate) fn state(what: &'static str) -> impl FnOnce(String) -> StartError {
        move |reason| StartError::RaftState { what, reason }
    }
}

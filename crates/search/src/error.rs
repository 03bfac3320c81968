//! The crate's one error type. The server maps each variant to an HTTP status and `code`.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a schema, document, filter or query that does not validate. `path` names the
    /// offending part (`documents[3].vectors.text`, `filter.must[0].range`).
    #[error("{path}: {message}")]
    Invalid {
        /// A stable machine-readable code (`invalid_document`, `invalid_filter`, …).
        code: &'static str,
        /// Where in the request.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The collection does not exist.
    #[error("no collection named {0:?}")]
    NoSuchCollection(String),
    /// A collection of that name exists with a different schema.
    #[error("collection {0:?} already exists with a different schema")]
    CollectionExists(String),
    /// The document does not exist.
    #[error("no document with id {0:?}")]
    NoSuchDocument(String),
    /// A configured maximum was exceeded (`what` names it).
    #[error("{what}: {count} is over the maximum of {max}")]
    TooMany {
        /// The limit's name (`documents_per_batch_max`, `collections_max`, …).
        what: &'static str,
        /// What was asked for.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// Writing would take the vector indexes over their memory budget; nothing was written.
    #[error("vector index memory budget reached: {used} bytes in use, this write needs ~{needed} more, budget {budget} (KYRODB_VECTOR_BYTES_BUDGET)")]
    MemoryBudget {
        /// Bytes the indexes hold.
        used: u64,
        /// Estimated bytes the write adds.
        needed: u64,
        /// The budget.
        budget: u64,
    },
    /// Concurrent writers kept changing the same documents; the write was not applied. Retry.
    #[error("write conflict on collection {0:?}: retry")]
    Conflict(String),
    /// The indexer is too far behind (more unlinked vectors than allowed); retry after a moment.
    #[error("the vector indexer is behind ({pending} vectors not linked yet); retry")]
    Busy {
        /// Vectors waiting.
        pending: u64,
    },
    /// A stored document does not decode (the engine verified its checksum, so this is a bug or a
    /// format from a newer version).
    #[error("stored document {key} of collection {collection:?}: {reason}")]
    Corrupt {
        /// The collection.
        collection: String,
        /// The engine key.
        key: u64,
        /// What is wrong.
        reason: String,
    },
    /// The collection is already re-embedding a field; one job at a time.
    #[error(
        "collection {collection:?} is re-embedding vectors.{field}; wait for that job to finish"
    )]
    JobRunning {
        /// The collection.
        collection: String,
        /// The field its job re-embeds.
        field: String,
    },
    /// A key bound to a tenant reached for a document of another tenant, or wrote a document
    /// naming another tenant (`crate::tenant`); nothing was written.
    #[error("{0}")]
    Tenant(String),
    /// The search was cancelled ([`crate::Cancel`]): its request timed out or its client went away.
    /// Nothing was written.
    #[error("the search was cancelled: its request timed out or its client went away")]
    Cancelled,
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] kyrodb_storage::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(
    code: &'static str,
    path: impl Into<String>,
    message: impl Into<String>,
) -> Error {
    Error::Invalid {
        code,
        path: path.into(),
        message: message.into(),
    }
}

/// The JSON kind of `v`, for messages.
pub(crate) fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

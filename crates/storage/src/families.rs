//! The storage engine's metrics: every metric family this crate records, declared once and recorded through these
//! constants (`metrics::counter!(families::X.name)`); the server describes and exports them.

pub use kyrodb_rmi::metrics::{Family, Kind};

/// The learned index's families (kyrodb-rmi records them; the engine is how the server sees them).
pub const RMI_FAMILIES: &[Family] = kyrodb_rmi::metrics::FAMILIES;

/// `kyrodb_wal_bytes_total`.
pub const WAL_BYTES_TOTAL: Family = Family {
    name: "kyrodb_wal_bytes_total",
    kind: Kind::Counter,
    help: "Bytes appended to the write-ahead log",
};

/// `kyrodb_wal_records_total`.
pub const WAL_RECORDS_TOTAL: Family = Family {
    name: "kyrodb_wal_records_total",
    kind: Kind::Counter,
    help: "Records appended to the write-ahead log",
};

/// `kyrodb_wal_fsync_total`.
pub const WAL_FSYNC_TOTAL: Family = Family {
    name: "kyrodb_wal_fsync_total",
    kind: Kind::Counter,
    help: "fdatasync calls on WAL segments (one per group commit with fsync always)",
};

/// `kyrodb_wal_fsync_latency_seconds`.
pub const WAL_FSYNC_LATENCY_SECONDS: Family = Family {
    name: "kyrodb_wal_fsync_latency_seconds",
    kind: Kind::Histogram,
    help: "Time of one WAL fdatasync",
};

/// `kyrodb_wal_group_commit_batch_records`.
pub const WAL_GROUP_COMMIT_BATCH_RECORDS: Family = Family {
    name: "kyrodb_wal_group_commit_batch_records",
    kind: Kind::Histogram,
    help: "Records written by one group commit",
};

/// `kyrodb_wal_group_commit_latency_seconds`.
pub const WAL_GROUP_COMMIT_LATENCY_SECONDS: Family = Family {
    name: "kyrodb_wal_group_commit_latency_seconds",
    kind: Kind::Histogram,
    help: "Time of one group commit: write, fsync, apply, publish",
};

/// `kyrodb_wal_segments_created_total`.
pub const WAL_SEGMENTS_CREATED_TOTAL: Family = Family {
    name: "kyrodb_wal_segments_created_total",
    kind: Kind::Counter,
    help: "WAL segments created",
};

/// `kyrodb_wal_open_out_of_files_total`.
pub const WAL_OPEN_OUT_OF_FILES_TOTAL: Family = Family {
    name: "kyrodb_wal_open_out_of_files_total",
    kind: Kind::EventCounter,
    help: "WAL segment opens that failed for want of file descriptors (retried, then 503 busy)",
};

/// `kyrodb_storage_compaction_out_of_files_total`.
pub const STORAGE_COMPACTION_OUT_OF_FILES_TOTAL: Family = Family {
    name: "kyrodb_storage_compaction_out_of_files_total",
    kind: Kind::EventCounter,
    help: "Compactions that ran out of file descriptors (the frozen delta stays; retried later)",
};

/// `kyrodb_storage_reads_total`.
pub const STORAGE_READS_TOTAL: Family = Family {
    name: "kyrodb_storage_reads_total",
    kind: Kind::Counter,
    help: "Point reads by where the answer came from (delta or index)",
};

/// `kyrodb_storage_write_stalls_total`.
pub const STORAGE_WRITE_STALLS_TOTAL: Family = Family {
    name: "kyrodb_storage_write_stalls_total",
    kind: Kind::EventCounter,
    help: "Writes that waited because the delta was over delta_bytes_budget",
};

/// `kyrodb_storage_compactions_total`.
pub const STORAGE_COMPACTIONS_TOTAL: Family = Family {
    name: "kyrodb_storage_compactions_total",
    kind: Kind::EventCounter,
    help: "Compactions finished (delta merged into a new snapshot)",
};

/// `kyrodb_storage_compaction_duration_seconds`.
pub const STORAGE_COMPACTION_DURATION_SECONDS: Family = Family {
    name: "kyrodb_storage_compaction_duration_seconds",
    kind: Kind::Histogram,
    help: "Time of one compaction",
};

/// `kyrodb_storage_recovery_duration_seconds`.
pub const STORAGE_RECOVERY_DURATION_SECONDS: Family = Family {
    name: "kyrodb_storage_recovery_duration_seconds",
    kind: Kind::Gauge,
    help: "Time the last open took (snapshot load and WAL replay)",
};

/// `kyrodb_storage_recovery_replayed_bytes_total`.
pub const STORAGE_RECOVERY_REPLAYED_BYTES_TOTAL: Family = Family {
    name: "kyrodb_storage_recovery_replayed_bytes_total",
    kind: Kind::Counter,
    help: "WAL bytes replayed at open",
};

/// `kyrodb_storage_delta_bytes`.
pub const STORAGE_DELTA_BYTES: Family = Family {
    name: "kyrodb_storage_delta_bytes",
    kind: Kind::Gauge,
    help: "Bytes held by the in-memory delta (active and frozen)",
};

/// This crate's metric families.
pub const FAMILIES: &[Family] = &[
    WAL_BYTES_TOTAL,
    WAL_RECORDS_TOTAL,
    WAL_FSYNC_TOTAL,
    WAL_FSYNC_LATENCY_SECONDS,
    WAL_GROUP_COMMIT_BATCH_RECORDS,
    WAL_GROUP_COMMIT_LATENCY_SECONDS,
    WAL_SEGMENTS_CREATED_TOTAL,
    WAL_OPEN_OUT_OF_FILES_TOTAL,
    STORAGE_COMPACTION_OUT_OF_FILES_TOTAL,
    STORAGE_READS_TOTAL,
    STORAGE_WRITE_STALLS_TOTAL,
    STORAGE_COMPACTIONS_TOTAL,
    STORAGE_COMPACTION_DURATION_SECONDS,
    STORAGE_RECOVERY_DURATION_SECONDS,
    STORAGE_RECOVERY_REPLAYED_BYTES_TOTAL,
    STORAGE_DELTA_BYTES,
];

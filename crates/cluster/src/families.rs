//! Cluster mode's metrics: every metric family this crate records, declared once and recorded through these
//! constants (`metrics::counter!(families::X.name)`); the server describes and exports them.

use kyrodb_storage::families::{Family, Kind};

/// `kyrodb_cluster_term`.
pub const CLUSTER_TERM: Family = Family {
    name: "kyrodb_cluster_term",
    kind: Kind::Gauge,
    help: "Raft term this node is in",
};

/// `kyrodb_cluster_role_info`.
pub const CLUSTER_ROLE_INFO: Family = Family {
    name: "kyrodb_cluster_role_info",
    kind: Kind::Gauge,
    help: "1 for this node's Raft role (leader, follower, candidate, learner), 0 for the others",
};

/// `kyrodb_cluster_last_log_index`.
pub const CLUSTER_LAST_LOG_INDEX: Family = Family {
    name: "kyrodb_cluster_last_log_index",
    kind: Kind::Gauge,
    help: "Last index in this node's Raft log",
};

/// `kyrodb_cluster_applied_index`.
pub const CLUSTER_APPLIED_INDEX: Family = Family {
    name: "kyrodb_cluster_applied_index",
    kind: Kind::Gauge,
    help: "Last Raft index applied to this node's engine",
};

/// `kyrodb_cluster_commit_index`.
pub const CLUSTER_COMMIT_INDEX: Family = Family {
    name: "kyrodb_cluster_commit_index",
    kind: Kind::Gauge,
    help: "Last Raft index this node knows committed (updated every second)",
};

/// `kyrodb_cluster_replication_lag_entries`.
pub const CLUSTER_REPLICATION_LAG_ENTRIES: Family = Family {
    name: "kyrodb_cluster_replication_lag_entries",
    kind: Kind::Gauge,
    help: "Leader only: entries each follower is behind the leader's log, by follower",
};

/// `kyrodb_cluster_elections_total`.
pub const CLUSTER_ELECTIONS_TOTAL: Family = Family {
    name: "kyrodb_cluster_elections_total",
    kind: Kind::EventCounter,
    help: "Term changes this node has seen",
};

/// `kyrodb_cluster_leader_changes_total`.
pub const CLUSTER_LEADER_CHANGES_TOTAL: Family = Family {
    name: "kyrodb_cluster_leader_changes_total",
    kind: Kind::EventCounter,
    help: "Times this node saw the leader change",
};

/// `kyrodb_cluster_proposals_total`.
pub const CLUSTER_PROPOSALS_TOTAL: Family = Family {
    name: "kyrodb_cluster_proposals_total",
    kind: Kind::EventCounter,
    help: "Raft entries this node proposed as leader (each a batch of client writes)",
};

/// `kyrodb_cluster_snapshots_built_total`.
pub const CLUSTER_SNAPSHOTS_BUILT_TOTAL: Family = Family {
    name: "kyrodb_cluster_snapshots_built_total",
    kind: Kind::EventCounter,
    help: "Raft snapshots (engine checkpoints) this node built",
};

/// `kyrodb_cluster_snapshot_transfers_total`.
pub const CLUSTER_SNAPSHOT_TRANSFERS_TOTAL: Family = Family {
    name: "kyrodb_cluster_snapshot_transfers_total",
    kind: Kind::Counter,
    help: "Raft snapshots sent to lagging or new nodes and received from the leader, by direction",
};

/// `kyrodb_cluster_snapshot_sent_bytes_total`.
pub const CLUSTER_SNAPSHOT_SENT_BYTES_TOTAL: Family = Family {
    name: "kyrodb_cluster_snapshot_sent_bytes_total",
    kind: Kind::EventCounter,
    help: "Bytes of snapshot files this node streamed to other nodes",
};

/// `kyrodb_cluster_rpc_refused_total`.
pub const CLUSTER_RPC_REFUSED_TOTAL: Family = Family {
    name: "kyrodb_cluster_rpc_refused_total",
    kind: Kind::EventCounter,
    help: "Requests to the Raft port refused for a missing or wrong cluster secret",
};

/// This crate's metric families.
pub const FAMILIES: &[Family] = &[
    CLUSTER_TERM,
    CLUSTER_ROLE_INFO,
    CLUSTER_LAST_LOG_INDEX,
    CLUSTER_APPLIED_INDEX,
    CLUSTER_COMMIT_INDEX,
    CLUSTER_REPLICATION_LAG_ENTRIES,
    CLUSTER_ELECTIONS_TOTAL,
    CLUSTER_LEADER_CHANGES_TOTAL,
    CLUSTER_PROPOSALS_TOTAL,
    CLUSTER_SNAPSHOTS_BUILT_TOTAL,
    CLUSTER_SNAPSHOT_TRANSFERS_TOTAL,
    CLUSTER_SNAPSHOT_SENT_BYTES_TOTAL,
    CLUSTER_RPC_REFUSED_TOTAL,
];

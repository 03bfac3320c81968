//! The collections layer's metrics: every metric family this crate records, declared once and recorded through these
//! constants (`metrics::counter!(families::X.name)`); the server describes and exports them.

use kyrodb_storage::families::{Family, Kind};

/// `kyrodb_search_latency_seconds`.
pub const SEARCH_LATENCY_SECONDS: Family = Family {
    name: "kyrodb_search_latency_seconds",
    kind: Kind::Histogram,
    help: "Vector search latency inside the engine, by plan (hnsw, hnsw_filtered, exact_filtered, exact_fallback, empty)",
};

/// `kyrodb_search_plans_total`.
pub const SEARCH_PLANS_TOTAL: Family = Family {
    name: "kyrodb_search_plans_total",
    kind: Kind::Counter,
    help: "Searches answered, by the plan the planner chose",
};

/// `kyrodb_hybrid_search_latency_seconds`.
pub const HYBRID_SEARCH_LATENCY_SECONDS: Family = Family {
    name: "kyrodb_hybrid_search_latency_seconds",
    kind: Kind::Histogram,
    help: "Hybrid searches (POST /v2/search/hybrid), every component and the fusion",
};

/// `kyrodb_text_merges_total`.
pub const TEXT_MERGES_TOTAL: Family = Family {
    name: "kyrodb_text_merges_total",
    kind: Kind::EventCounter,
    help: "Full-text segment merges finished by the indexer threads",
};

/// `kyrodb_learned_ranking_trainings_total`.
pub const LEARNED_RANKING_TRAININGS_TOTAL: Family = Family {
    name: "kyrodb_learned_ranking_trainings_total",
    kind: Kind::EventCounter,
    help: "Learned-ranking models trained from feedback (served or refused by the gate)",
};

/// This crate's metric families.
pub const FAMILIES: &[Family] = &[
    SEARCH_LATENCY_SECONDS,
    SEARCH_PLANS_TOTAL,
    HYBRID_SEARCH_LATENCY_SECONDS,
    TEXT_MERGES_TOTAL,
    LEARNED_RANKING_TRAININGS_TOTAL,
];

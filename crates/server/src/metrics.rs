//! Prometheus metrics: one process-wide recorder (the `metrics` facade the engine also writes to),
//! rendered at `/metrics`. No listener of its own; the server's router serves it.

use std::{sync::OnceLock, time::Duration, time::Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Request latency buckets, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// How often histograms are drained into their rendered form.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once per process (tests start many servers in one process) and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_S)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            describe_all(&recorder);
            // Another recorder may already be installed by an embedding program; then ours only
            // renders what we record through the handle, which is nothing. Say so rather than panic.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            // Counters of rare events exist from the start (at 0), so dashboards and alerts see a
            // series before the first event rather than nothing.
            export_event_counters(|name| !name.starts_with("kyrodb_cluster_"));
            handle
        })
        .clone()
}

pub use kyrodb_storage::families::{Family, Kind};

/// Exports at 0 every [`Kind::EventCounter`] family whose name `pick` accepts.
fn export_event_counters(pick: impl Fn(&str) -> bool) {
    for f in families() {
        if f.kind == Kind::EventCounter && pick(f.name) {
            metrics::counter!(f.name).absolute(0);
        }
    }
}

/// Exports the cluster's event counters at 0 (in cluster mode, once the recorder is installed).
pub fn export_cluster_counters() {
    export_event_counters(|name| name.starts_with("kyrodb_cluster_"));
}

/// `kyrodb_backups_total`.
pub const BACKUPS_TOTAL: Family = Family {
    name: "kyrodb_backups_total",
    kind: Kind::Counter,
    help: "Backups finished, by outcome (done, failed)",
};

/// `kyrodb_backup_sent_bytes_total`.
pub const BACKUP_SENT_BYTES_TOTAL: Family = Family {
    name: "kyrodb_backup_sent_bytes_total",
    kind: Kind::Counter,
    help: "Bytes backups sent to their targets (files the target already held are not sent)",
};

/// `kyrodb_http_requests_total`.
pub const HTTP_REQUESTS_TOTAL: Family = Family {
    name: "kyrodb_http_requests_total",
    kind: Kind::Counter,
    help: "HTTP requests answered, by route template, method and status",
};

/// `kyrodb_http_request_duration_seconds`.
pub const HTTP_REQUEST_DURATION_SECONDS: Family = Family {
    name: "kyrodb_http_request_duration_seconds",
    kind: Kind::Histogram,
    help:
        "HTTP request latency from first byte routed to response head, by route, method and status",
};

/// `kyrodb_http_rate_limited_total`.
pub const HTTP_RATE_LIMITED_TOTAL: Family = Family {
    name: "kyrodb_http_rate_limited_total",
    kind: Kind::EventCounter,
    help: "Requests refused with 429 by the per-IP rate limit",
};

/// `kyrodb_http_rate_limit_clients`.
pub const HTTP_RATE_LIMIT_CLIENTS: Family = Family {
    name: "kyrodb_http_rate_limit_clients",
    kind: Kind::Gauge,
    help: "Client IPs with rate-limit state held in memory",
};

/// `kyrodb_http_connections_refused_total`.
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: Family = Family {
    name: "kyrodb_http_connections_refused_total",
    kind: Kind::EventCounter,
    help: "Connections (HTTP or Raft port) answered 503 and closed because connections_max was reached",
};

/// `kyrodb_http_write_stalls_total`.
pub const HTTP_WRITE_STALLS_TOTAL: Family = Family {
    name: "kyrodb_http_write_stalls_total",
    kind: Kind::EventCounter,
    help: "Connections closed because the client read nothing of a response for write_stall_timeout_ms",
};

/// `kyrodb_tls_handshake_failures_total`.
pub const TLS_HANDSHAKE_FAILURES_TOTAL: Family = Family {
    name: "kyrodb_tls_handshake_failures_total",
    kind: Kind::EventCounter,
    help:
        "TLS handshakes that failed (bad or untrusted client certificate, wrong protocol, cut off)",
};

/// `kyrodb_audit_write_failures_total`.
pub const AUDIT_WRITE_FAILURES_TOTAL: Family = Family {
    name: "kyrodb_audit_write_failures_total",
    kind: Kind::EventCounter,
    help: "Audit log entries that could not be written (the answer still went out; the error is logged)",
};

/// `kyrodb_audit_anonymous_skipped_total`.
pub const AUDIT_ANONYMOUS_SKIPPED_TOTAL: Family = Family {
    name: "kyrodb_audit_anonymous_skipped_total",
    kind: Kind::EventCounter,
    help: "Refusals without a known key (401) on admin routes not logged: at most one a second is",
};

/// `kyrodb_audit_denied_skipped_total`.
pub const AUDIT_DENIED_SKIPPED_TOTAL: Family = Family {
    name: "kyrodb_audit_denied_skipped_total",
    kind: Kind::EventCounter,
    help: "Refusals of a known key (403) on admin routes not logged: at most one a second per key and route is",
};

/// `kyrodb_storage_last_seq`.
pub const STORAGE_LAST_SEQ: Family = Family {
    name: "kyrodb_storage_last_seq",
    kind: Kind::Gauge,
    help: "Sequence number of the newest record appended to the WAL",
};

/// `kyrodb_storage_visible_seq`.
pub const STORAGE_VISIBLE_SEQ: Family = Family {
    name: "kyrodb_storage_visible_seq",
    kind: Kind::Gauge,
    help: "Sequence number up to which writes are visible (and acknowledged)",
};

/// `kyrodb_storage_covered_seq`.
pub const STORAGE_COVERED_SEQ: Family = Family {
    name: "kyrodb_storage_covered_seq",
    kind: Kind::Gauge,
    help: "Sequence number up to which the snapshots cover the WAL",
};

/// `kyrodb_storage_manifest_generation`.
pub const STORAGE_MANIFEST_GENERATION: Family = Family {
    name: "kyrodb_storage_manifest_generation",
    kind: Kind::Gauge,
    help: "Generation of the current manifest",
};

/// `kyrodb_storage_delta_entries`.
pub const STORAGE_DELTA_ENTRIES: Family = Family {
    name: "kyrodb_storage_delta_entries",
    kind: Kind::Gauge,
    help: "Entries in the active in-memory delta",
};

/// `kyrodb_storage_frozen_bytes`.
pub const STORAGE_FROZEN_BYTES: Family = Family {
    name: "kyrodb_storage_frozen_bytes",
    kind: Kind::Gauge,
    help: "Bytes of the frozen delta being compacted",
};

/// `kyrodb_storage_wal_segments`.
pub const STORAGE_WAL_SEGMENTS: Family = Family {
    name: "kyrodb_storage_wal_segments",
    kind: Kind::Gauge,
    help: "WAL segment files on disk",
};

/// `kyrodb_storage_writes_stopped`.
pub const STORAGE_WRITES_STOPPED: Family = Family {
    name: "kyrodb_storage_writes_stopped",
    kind: Kind::Gauge,
    help: "1 when writes are stopped after an I/O failure (fail-stop), else 0",
};

/// `kyrodb_storage_snapshot_keys`.
pub const STORAGE_SNAPSHOT_KEYS: Family = Family {
    name: "kyrodb_storage_snapshot_keys",
    kind: Kind::Gauge,
    help: "Keys in a keyspace's current snapshot",
};

/// `kyrodb_storage_snapshot_data_bytes`.
pub const STORAGE_SNAPSHOT_DATA_BYTES: Family = Family {
    name: "kyrodb_storage_snapshot_data_bytes",
    kind: Kind::Gauge,
    help: "Bytes of a keyspace's current snapshot data file",
};

/// `kyrodb_storage_keys`.
pub const STORAGE_KEYS: Family = Family {
    name: "kyrodb_storage_keys",
    kind: Kind::Gauge,
    help: "Live keys in a keyspace (exact; expired keys excluded)",
};

/// `kyrodb_index_leaves`.
pub const INDEX_LEAVES: Family = Family {
    name: "kyrodb_index_leaves",
    kind: Kind::Gauge,
    help: "Linear models (leaves) of a keyspace's learned index",
};

/// `kyrodb_index_model_bytes`.
pub const INDEX_MODEL_BYTES: Family = Family {
    name: "kyrodb_index_model_bytes",
    kind: Kind::Gauge,
    help: "Bytes of a keyspace's index model beyond the key array",
};

/// `kyrodb_index_epsilon_bound_slots`.
pub const INDEX_EPSILON_BOUND_SLOTS: Family = Family {
    name: "kyrodb_index_epsilon_bound_slots",
    kind: Kind::Gauge,
    help: "Configured error bound ε of a keyspace's learned index, in key slots",
};

/// `kyrodb_index_error_max_slots`.
pub const INDEX_ERROR_MAX_SLOTS: Family = Family {
    name: "kyrodb_index_error_max_slots",
    kind: Kind::Gauge,
    help: "Largest prediction error the learned index measured over its keys, in key slots",
};

/// `kyrodb_index_error_mean_slots`.
pub const INDEX_ERROR_MEAN_SLOTS: Family = Family {
    name: "kyrodb_index_error_mean_slots",
    kind: Kind::Gauge,
    help: "Mean prediction error the learned index measured over its keys, in key slots",
};

/// `kyrodb_search_write_visible_seconds`.
pub const SEARCH_WRITE_VISIBLE_SECONDS: Family = Family {
    name: "kyrodb_search_write_visible_seconds",
    kind: Kind::Histogram,
    help: "Document upsert from parsed request to durable and searchable (the acknowledgement)",
};

/// `kyrodb_embed_request_seconds`.
pub const EMBED_REQUEST_SECONDS: Family = Family {
    name: "kyrodb_embed_request_seconds",
    kind: Kind::Histogram,
    help: "Embedding requests (POST /v2/embed, auto_embed, text searches) from queued to answered",
};

/// `kyrodb_embed_texts_total`.
pub const EMBED_TEXTS_TOTAL: Family = Family {
    name: "kyrodb_embed_texts_total",
    kind: Kind::Counter,
    help: "Texts embedded by the server's model",
};

/// `kyrodb_embed_queue_texts`.
pub const EMBED_QUEUE_TEXTS: Family = Family {
    name: "kyrodb_embed_queue_texts",
    kind: Kind::Gauge,
    help: "Texts waiting in the embedding queue",
};

/// `kyrodb_embed_refused_total`.
pub const EMBED_REFUSED_TOTAL: Family = Family {
    name: "kyrodb_embed_refused_total",
    kind: Kind::EventCounter,
    help: "Embedding requests refused because the queue was full (503 busy)",
};

/// `kyrodb_search_documents`.
pub const SEARCH_DOCUMENTS: Family = Family {
    name: "kyrodb_search_documents",
    kind: Kind::Gauge,
    help: "Live documents in a collection",
};

/// `kyrodb_search_vectors`.
pub const SEARCH_VECTORS: Family = Family {
    name: "kyrodb_search_vectors",
    kind: Kind::Gauge,
    help: "Live vectors in a collection's vector field",
};

/// `kyrodb_search_pending_vectors`.
pub const SEARCH_PENDING_VECTORS: Family = Family {
    name: "kyrodb_search_pending_vectors",
    kind: Kind::Gauge,
    help:
        "Vectors of a field written but not yet linked into its graph (searched exactly meanwhile)",
};

/// `kyrodb_search_tombstone_vectors`.
pub const SEARCH_TOMBSTONE_VECTORS: Family = Family {
    name: "kyrodb_search_tombstone_vectors",
    kind: Kind::Gauge,
    help: "Removed vectors still holding a graph slot in a field's index",
};

/// `kyrodb_search_index_bytes`.
pub const SEARCH_INDEX_BYTES: Family = Family {
    name: "kyrodb_search_index_bytes",
    kind: Kind::Gauge,
    help: "Bytes held by a field's vector index",
};

/// `kyrodb_process_uptime_seconds`.
pub const PROCESS_UPTIME_SECONDS: Family = Family {
    name: "kyrodb_process_uptime_seconds",
    kind: Kind::Gauge,
    help: "Seconds since this server started",
};

/// `kyrodb_build_info`.
pub const BUILD_INFO: Family = Family {
    name: "kyrodb_build_info",
    kind: Kind::Gauge,
    help: "Always 1; the labels carry the version and git commit",
};

/// `kyrodb_disk_free_bytes`.
pub const DISK_FREE_BYTES: Family = Family {
    name: "kyrodb_disk_free_bytes",
    kind: Kind::Gauge,
    help: "Bytes available to the server on the data directory's filesystem",
};

/// `kyrodb_disk_total_bytes`.
pub const DISK_TOTAL_BYTES: Family = Family {
    name: "kyrodb_disk_total_bytes",
    kind: Kind::Gauge,
    help: "Size of the data directory's filesystem",
};

/// The server's own metric families (HTTP, backups, embedding, audit, and the engine's, collections'
/// and process numbers it exports at each scrape).
pub const FAMILIES: &[Family] = &[
    BACKUPS_TOTAL,
    BACKUP_SENT_BYTES_TOTAL,
    HTTP_REQUESTS_TOTAL,
    HTTP_REQUEST_DURATION_SECONDS,
    HTTP_RATE_LIMITED_TOTAL,
    HTTP_RATE_LIMIT_CLIENTS,
    HTTP_CONNECTIONS_REFUSED_TOTAL,
    HTTP_WRITE_STALLS_TOTAL,
    TLS_HANDSHAKE_FAILURES_TOTAL,
    AUDIT_WRITE_FAILURES_TOTAL,
    AUDIT_ANONYMOUS_SKIPPED_TOTAL,
    AUDIT_DENIED_SKIPPED_TOTAL,
    STORAGE_LAST_SEQ,
    STORAGE_VISIBLE_SEQ,
    STORAGE_COVERED_SEQ,
    STORAGE_MANIFEST_GENERATION,
    STORAGE_DELTA_ENTRIES,
    STORAGE_FROZEN_BYTES,
    STORAGE_WAL_SEGMENTS,
    STORAGE_WRITES_STOPPED,
    STORAGE_SNAPSHOT_KEYS,
    STORAGE_SNAPSHOT_DATA_BYTES,
    STORAGE_KEYS,
    INDEX_LEAVES,
    INDEX_MODEL_BYTES,
    INDEX_EPSILON_BOUND_SLOTS,
    INDEX_ERROR_MAX_SLOTS,
    INDEX_ERROR_MEAN_SLOTS,
    SEARCH_WRITE_VISIBLE_SECONDS,
    EMBED_REQUEST_SECONDS,
    EMBED_TEXTS_TOTAL,
    EMBED_QUEUE_TEXTS,
    EMBED_REFUSED_TOTAL,
    SEARCH_DOCUMENTS,
    SEARCH_VECTORS,
    SEARCH_PENDING_VECTORS,
    SEARCH_TOMBSTONE_VECTORS,
    SEARCH_INDEX_BYTES,
    PROCESS_UPTIME_SECONDS,
    BUILD_INFO,
    DISK_FREE_BYTES,
    DISK_TOTAL_BYTES,
];

/// Every metric family the process exports: each crate's list ([`FAMILIES`] and those of the
/// index, the engine, the collections and cluster mode). One family per fact; a test checks that
/// every metric the sources record goes through one of these declarations.
pub fn families() -> impl Iterator<Item = &'static Family> {
    kyrodb_storage::families::RMI_FAMILIES
        .iter()
        .chain(kyrodb_storage::families::FAMILIES)
        .chain(kyrodb_search::families::FAMILIES)
        .chain(kyrodb_cluster::families::FAMILIES)
        .chain(FAMILIES)
}

fn describe_all(recorder: &metrics_exporter_prometheus::PrometheusRecorder) {
    use metrics::{Recorder, SharedString, Unit};
    for &Family { name, kind, help } in families() {
        let key = metrics::KeyName::from_const_str(name);
        let unit = if name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else if name.ends_with("_bytes") {
            Some(Unit::Bytes)
        } else {
            None
        };
        let help = SharedString::const_str(help);
        match kind {
            Kind::Counter | Kind::EventCounter => recorder.describe_counter(key, unit, help),
            Kind::Gauge => recorder.describe_gauge(key, unit, help),
            Kind::Histogram => recorder.describe_histogram(key, unit, help),
        }
    }
}

/// Keeps histograms bounded in memory; runs until the runtime stops.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// Records `kyrodb_http_requests_total{route,method,status}` and
/// `kyrodb_http_request_duration_seconds{route,method,status}` for one answered request (called by
/// [`crate::layers::Track`] around every request).
pub(crate) fn record_request(
    route: &'static str,
    method: &'static str,
    status: axum::http::StatusCode,
    started: Instant,
) {
    let status = status_label(status.as_u16());
    metrics::counter!(HTTP_REQUESTS_TOTAL.name, "route" => route, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS.name, "route" => route, "method" => method, "status" => status)
        .record(started.elapsed().as_secs_f64());
}

pub(crate) fn method_label(m: &axum::http::Method) -> &'static str {
    match *m {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::OPTIONS => "OPTIONS",
        axum::http::Method::HEAD => "HEAD",
        _ => "other",
    }
}

fn status_label(s: u16) -> &'static str {
    match s {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// Collection numbers as gauges, refreshed at every scrape.
pub fn record_search_stats(cs: &kyrodb_search::Collections) {
    use metrics::gauge;
    for c in cs.stats() {
        let name = c.collection.clone();
        gauge!(SEARCH_DOCUMENTS.name, "collection" => name.clone()).set(c.documents as f64);
        for f in c.fields {
            let l = [("collection", name.clone()), ("field", f.field)];
            gauge!(SEARCH_VECTORS.name, &l).set(f.vectors as f64);
            gauge!(SEARCH_PENDING_VECTORS.name, &l).set(f.pending as f64);
            gauge!(SEARCH_TOMBSTONE_VECTORS.name, &l).set(f.tombstones as f64);
            gauge!(SEARCH_INDEX_BYTES.name, &l).set(f.bytes as f64);
        }
    }
}

/// The process's numbers, refreshed at every scrape: uptime, version, the data directory's disk.
pub fn record_process_stats(started: std::time::Instant, data_dir: &std::path::Path) {
    use metrics::gauge;
    gauge!(PROCESS_UPTIME_SECONDS.name).set(started.elapsed().as_secs_f64());
    gauge!(BUILD_INFO.name, "version" => env!("CARGO_PKG_VERSION"), "git_sha" => env!("KYRODB_GIT_SHA"))
        .set(1.0);
    if let Ok(st) = rustix::fs::statvfs(data_dir) {
        let unit = st.f_frsize.max(1) as f64;
        gauge!(DISK_FREE_BYTES.name).set(st.f_bavail as f64 * unit);
        gauge!(DISK_TOTAL_BYTES.name).set(st.f_blocks as f64 * unit);
    }
}

/// Engine numbers as gauges, refreshed at every scrape.
pub fn record_engine_stats(st: &kyrodb_storage::Stats) {
    use metrics::gauge;
    gauge!(STORAGE_LAST_SEQ.name).set(st.last_seq as f64);
    gauge!(STORAGE_VISIBLE_SEQ.name).set(st.visible_seq as f64);
    gauge!(STORAGE_COVERED_SEQ.name).set(st.covered_seq as f64);
    gauge!(STORAGE_MANIFEST_GENERATION.name).set(st.manifest_generation as f64);
    gauge!(kyrodb_storage::families::STORAGE_DELTA_BYTES.name).set(st.delta_bytes as f64);
    gauge!(STORAGE_DELTA_ENTRIES.name).set(st.delta_entries as f64);
    gauge!(STORAGE_FROZEN_BYTES.name).set(st.frozen_bytes as f64);
    gauge!(STORAGE_WAL_SEGMENTS.name).set(st.wal_segments as f64);
    gauge!(STORAGE_WRITES_STOPPED.name).set(if st.writes_stopped.is_some() {
        1.0
    } else {
        0.0
    });
}

/// The per-keyspace gauges, each a function of one keyspace's numbers.
type KeyspaceGauge = (Family, fn(&kyrodb_storage::KeyspaceStats) -> f64);
const KEYSPACE_GAUGES: &[KeyspaceGauge] = &[
    (STORAGE_SNAPSHOT_KEYS, |k| k.snapshot_keys as f64),
    (STORAGE_SNAPSHOT_DATA_BYTES, |k| {
        k.snapshot_data_bytes as f64
    }),
    (STORAGE_KEYS, |k| k.keys as f64),
    (INDEX_LEAVES, |k| k.index.leaves as f64),
    (INDEX_EPSILON_BOUND_SLOTS, |k| {
        f64::from(k.index.epsilon_bound)
    }),
    (INDEX_ERROR_MAX_SLOTS, |k| {
        f64::from(k.index.epsilon_max_measured)
    }),
    (INDEX_ERROR_MEAN_SLOTS, |k| k.index.error_mean_measured),
    (INDEX_MODEL_BYTES, |k| k.index_model_bytes as f64),
];

/// The per-keyspace gauges in the Prometheus text format, from the engine's numbers at this scrape.
/// They are rendered here rather than kept in the recorder (which never forgets a series), so a
/// dropped keyspace's series leave `/metrics` with it. `kyrodb_index_model_bytes` also carries the
/// index builder's name (`index`).
pub fn render_keyspace_stats(st: &kyrodb_storage::Stats) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if st.keyspaces.is_empty() {
        return out;
    }
    for (
        Family {
            name: family, help, ..
        },
        value,
    ) in KEYSPACE_GAUGES
    {
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} gauge");
        for ks in &st.keyspaces {
            let name = label_value(&ks.name);
            let _ = if *family == INDEX_MODEL_BYTES.name {
                writeln!(
                    out,
                    "{family}{{keyspace=\"{name}\",index=\"{}\"}} {}",
                    label_value(st.index),
                    value(ks)
                )
            } else {
                writeln!(out, "{family}{{keyspace=\"{name}\"}} {}", value(ks))
            };
        }
        out.push('\n');
    }
    out
}

/// A label value escaped for the text format (`\`, `"` and newlines).
fn label_value(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: &[&str] = &[
        "_total",
        "_seconds",
        "_bytes",
        "_slots",
        "_keys",
        "_records",
        "_entries",
        "_leaves",
        "_clients",
        "_seq",
        "_documents",
        "_vectors",
        "_texts",
        "_generation",
        "_segments",
        "_stopped",
        "_info",
        "_term",
        "_index",
    ];

    #[test]
    fn keyspace_gauges_are_listed_gauges_rendered_per_live_keyspace() {
        for (family, _) in KEYSPACE_GAUGES {
            assert!(
                families().any(|f| f == family && f.kind == Kind::Gauge),
                "{} is not a listed gauge",
                family.name
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let db = kyrodb_storage::Db::open(dir.path(), kyrodb_storage::Options::default()).unwrap();
        let ks = db.create_keyspace("gone").unwrap();
        ks.put(1, b"v").unwrap();
        let text = render_keyspace_stats(&db.stats());
        assert!(
            text.contains("kyrodb_storage_keys{keyspace=\"gone\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP kyrodb_storage_keys Live keys"),
            "{text}"
        );
        assert!(text.contains("kyrodb_index_model_bytes{keyspace=\"default\",index=\""));
        db.drop_keyspace("gone").unwrap();
        let text = render_keyspace_stats(&db.stats());
        assert!(!text.contains("gone"), "{text}");
        assert!(text.contains("kyrodb_storage_keys{keyspace=\"default\"} 0\n"));
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    /// The event counters are series at 0 from the start (the cluster's once cluster mode starts).
    #[test]
    fn event_counters_are_exported_at_zero() {
        let h = handle();
        export_cluster_counters();
        let text = h.render();
        for &Family { name, kind, .. } in families() {
            if kind == Kind::EventCounter {
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{name} "))),
                    "{name} is not exported"
                );
            }
        }
    }

    #[test]
    fn family_names_end_with_their_unit_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &Family { name, kind, help } in families() {
            assert!(seen.insert(name), "{name} listed twice");
            assert!(name.starts_with("kyrodb_"), "{name}");
            assert!(UNITS.iter().any(|u| name.ends_with(u)), "{name}: unit last");
            assert_eq!(
                name.ends_with("_total"),
                matches!(kind, Kind::Counter | Kind::EventCounter),
                "{name}: counters and only counters end in _total"
            );
            assert!(!help.is_empty());
        }
    }

    /// Every metric the workspace's sources record goes through a declared family (a constant of
    /// the crate that records it): no recording site names a metric by a string of its own.
    #[test]
    fn every_recorded_metric_goes_through_a_declared_family() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut sites = 0;
        let mut by_literal = Vec::new();
        let mut stack: Vec<_> = [
            "storage", "rmi", "server", "search", "embed", "cluster", "backup",
        ]
        .iter()
        .map(|c| root.join(c).join("src"))
        .collect();
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                        for (i, _) in text.match_indices(macro_name) {
                            let rest = text[i + macro_name.len()..].trim_start();
                            sites += 1;
                            if rest.starts_with("\"kyrodb_") {
                                by_literal.push(format!(
                                    "{}: {}",
                                    p.display(),
                                    &rest[..rest.len().min(60)]
                                ));
                            }
                        }
                    }
                }
            }
        }
        assert!(sites > 40, "found only {sites} recording sites");
        assert!(
            by_literal.is_empty(),
            "metrics named by a literal, not a declared family: {by_literal:#?}"
        );
    }
}

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

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter, exported from its first increment.
    Counter,
    /// A counter of rare events, exported at 0 from the start (the cluster's: from when cluster
    /// mode starts, [`export_cluster_counters`]) so dashboards and alerts see a series before the
    /// first event rather than nothing. Unlabelled.
    EventCounter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

/// Exports at 0 every [`Kind::EventCounter`] family whose name `pick` accepts.
fn export_event_counters(pick: impl Fn(&str) -> bool) {
    for (name, kind, _) in FAMILIES {
        if *kind == Kind::EventCounter && pick(name) {
            metrics::counter!(*name).absolute(0);
        }
    }
}

/// Exports the cluster's event counters at 0 (in cluster mode, once the recorder is installed).
pub fn export_cluster_counters() {
    export_event_counters(|name| name.starts_with("kyrodb_cluster_"));
}

/// Every metric family the process exports, engine and index included: name, kind, `# HELP` text.
/// One family per fact; names are `kyrodb_<area>_<what>_<unit>` with the unit last. A test checks
/// that every metric the sources record is listed here and every scraped family has its HELP.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    // Backups (kyrodb-backup, run by the server)
    (
        "kyrodb_backups_total",
        Kind::Counter,
        "Backups finished, by outcome (done, failed)",
    ),
    (
        "kyrodb_backup_sent_bytes_total",
        Kind::Counter,
        "Bytes backups sent to their targets (files the target already held are not sent)",
    ),
    // Cluster mode (kyrodb-cluster)
    ("kyrodb_cluster_term", Kind::Gauge, "Raft term this node is in"),
    (
        "kyrodb_cluster_role_info",
        Kind::Gauge,
        "1 for this node's Raft role (leader, follower, candidate, learner), 0 for the others",
    ),
    ("kyrodb_cluster_last_log_index", Kind::Gauge, "Last index in this node's Raft log"),
    ("kyrodb_cluster_applied_index", Kind::Gauge, "Last Raft index applied to this node's engine"),
    (
        "kyrodb_cluster_commit_index",
        Kind::Gauge,
        "Last Raft index this node knows committed (updated every second)",
    ),
    (
        "kyrodb_cluster_replication_lag_entries",
        Kind::Gauge,
        "Leader only: entries each follower is behind the leader's log, by follower",
    ),
    ("kyrodb_cluster_elections_total", Kind::EventCounter, "Term changes this node has seen"),
    ("kyrodb_cluster_leader_changes_total", Kind::EventCounter, "Times this node saw the leader change"),
    (
        "kyrodb_cluster_proposals_total",
        Kind::EventCounter,
        "Raft entries this node proposed as leader (each a batch of client writes)",
    ),
    (
        "kyrodb_cluster_snapshots_built_total",
        Kind::EventCounter,
        "Raft snapshots (engine checkpoints) this node built",
    ),
    (
        "kyrodb_cluster_snapshot_transfers_total",
        Kind::Counter,
        "Raft snapshots sent to lagging or new nodes and received from the leader, by direction",
    ),
    (
        "kyrodb_cluster_snapshot_sent_bytes_total",
        Kind::EventCounter,
        "Bytes of snapshot files this node streamed to other nodes",
    ),
    (
        "kyrodb_cluster_rpc_refused_total",
        Kind::EventCounter,
        "Requests to the Raft port refused for a missing or wrong cluster secret",
    ),
    // HTTP
    (
        "kyrodb_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by route template, method and status",
    ),
    (
        "kyrodb_http_request_duration_seconds",
        Kind::Histogram,
        "HTTP request latency from first byte routed to response head, by route, method and status",
    ),
    (
        "kyrodb_http_rate_limited_total",
        Kind::EventCounter,
        "Requests refused with 429 by the per-IP rate limit",
    ),
    (
        "kyrodb_http_rate_limit_clients",
        Kind::Gauge,
        "Client IPs with rate-limit state held in memory",
    ),
    (
        "kyrodb_http_connections_refused_total",
        Kind::EventCounter,
        "Connections (HTTP or Raft port) answered 503 and closed because connections_max was reached",
    ),
    (
        "kyrodb_http_write_stalls_total",
        Kind::EventCounter,
        "Connections closed because the client read nothing of a response for write_stall_timeout_ms",
    ),
    (
        "kyrodb_tls_handshake_failures_total",
        Kind::EventCounter,
        "TLS handshakes that failed (bad or untrusted client certificate, wrong protocol, cut off)",
    ),
    (
        "kyrodb_audit_write_failures_total",
        Kind::EventCounter,
        "Audit log entries that could not be written (the answer still went out; the error is logged)",
    ),
    (
        "kyrodb_audit_anonymous_skipped_total",
        Kind::EventCounter,
        "Refusals without a known key (401) on admin routes not logged: at most one a second is",
    ),
    (
        "kyrodb_audit_denied_skipped_total",
        Kind::EventCounter,
        "Refusals of a known key (403) on admin routes not logged: at most one a second per key and route is",
    ),
    // WAL
    (
        "kyrodb_wal_bytes_total",
        Kind::Counter,
        "Bytes appended to the write-ahead log",
    ),
    (
        "kyrodb_wal_records_total",
        Kind::Counter,
        "Records appended to the write-ahead log",
    ),
    (
        "kyrodb_wal_fsync_total",
        Kind::Counter,
        "fdatasync calls on WAL segments (one per group commit with fsync always)",
    ),
    (
        "kyrodb_wal_fsync_latency_seconds",
        Kind::Histogram,
        "Time of one WAL fdatasync",
    ),
    (
        "kyrodb_wal_group_commit_batch_records",
        Kind::Histogram,
        "Records written by one group commit",
    ),
    (
        "kyrodb_wal_group_commit_latency_seconds",
        Kind::Histogram,
        "Time of one group commit: write, fsync, apply, publish",
    ),
    (
        "kyrodb_wal_segments_created_total",
        Kind::Counter,
        "WAL segments created",
    ),
    (
        "kyrodb_wal_open_out_of_files_total",
        Kind::EventCounter,
        "WAL segment opens that failed for want of file descriptors (retried, then 503 busy)",
    ),
    (
        "kyrodb_storage_compaction_out_of_files_total",
        Kind::EventCounter,
        "Compactions that ran out of file descriptors (the frozen delta stays; retried later)",
    ),
    // storage engine
    (
        "kyrodb_storage_reads_total",
        Kind::Counter,
        "Point reads by where the answer came from (delta or index)",
    ),
    (
        "kyrodb_storage_write_stalls_total",
        Kind::EventCounter,
        "Writes that waited because the delta was over delta_bytes_budget",
    ),
    (
        "kyrodb_storage_compactions_total",
        Kind::EventCounter,
        "Compactions finished (delta merged into a new snapshot)",
    ),
    (
        "kyrodb_storage_compaction_duration_seconds",
        Kind::Histogram,
        "Time of one compaction",
    ),
    (
        "kyrodb_storage_recovery_duration_seconds",
        Kind::Gauge,
        "Time the last open took (snapshot load and WAL replay)",
    ),
    (
        "kyrodb_storage_recovery_replayed_bytes_total",
        Kind::Counter,
        "WAL bytes replayed at open",
    ),
    (
        "kyrodb_storage_last_seq",
        Kind::Gauge,
        "Sequence number of the newest record appended to the WAL",
    ),
    (
        "kyrodb_storage_visible_seq",
        Kind::Gauge,
        "Sequence number up to which writes are visible (and acknowledged)",
    ),
    (
        "kyrodb_storage_covered_seq",
        Kind::Gauge,
        "Sequence number up to which the snapshots cover the WAL",
    ),
    (
        "kyrodb_storage_manifest_generation",
        Kind::Gauge,
        "Generation of the current manifest",
    ),
    (
        "kyrodb_storage_delta_bytes",
        Kind::Gauge,
        "Bytes held by the in-memory delta (active and frozen)",
    ),
    (
        "kyrodb_storage_delta_entries",
        Kind::Gauge,
        "Entries in the active in-memory delta",
    ),
    (
        "kyrodb_storage_frozen_bytes",
        Kind::Gauge,
        "Bytes of the frozen delta being compacted",
    ),
    (
        "kyrodb_storage_wal_segments",
        Kind::Gauge,
        "WAL segment files on disk",
    ),
    (
        "kyrodb_storage_writes_stopped",
        Kind::Gauge,
        "1 when writes are stopped after an I/O failure (fail-stop), else 0",
    ),
    (
        "kyrodb_storage_snapshot_keys",
        Kind::Gauge,
        "Keys in a keyspace's current snapshot",
    ),
    (
        "kyrodb_storage_snapshot_data_bytes",
        Kind::Gauge,
        "Bytes of a keyspace's current snapshot data file",
    ),
    (
        "kyrodb_storage_keys",
        Kind::Gauge,
        "Live keys in a keyspace (exact; expired keys excluded)",
    ),
    // learned index (per keyspace, from the index serving reads; present right after a restart)
    (
        "kyrodb_index_leaves",
        Kind::Gauge,
        "Linear models (leaves) of a keyspace's learned index",
    ),
    (
        "kyrodb_index_model_bytes",
        Kind::Gauge,
        "Bytes of a keyspace's index model beyond the key array",
    ),
    (
        "kyrodb_index_epsilon_bound_slots",
        Kind::Gauge,
        "Configured error bound ε of a keyspace's learned index, in key slots",
    ),
    (
        "kyrodb_index_error_max_slots",
        Kind::Gauge,
        "Largest prediction error the learned index measured over its keys, in key slots",
    ),
    (
        "kyrodb_index_error_mean_slots",
        Kind::Gauge,
        "Mean prediction error the learned index measured over its keys, in key slots",
    ),
    // collections (kyrodb-search)
    (
        "kyrodb_search_latency_seconds",
        Kind::Histogram,
        "Vector search latency inside the engine, by plan (hnsw, hnsw_filtered, exact_filtered, exact_fallback, empty)",
    ),
    (
        "kyrodb_search_plans_total",
        Kind::Counter,
        "Searches answered, by the plan the planner chose",
    ),
    (
        "kyrodb_search_write_visible_seconds",
        Kind::Histogram,
        "Document upsert from parsed request to durable and searchable (the acknowledgement)",
    ),
    (
        "kyrodb_embed_request_seconds",
        Kind::Histogram,
        "Embedding requests (POST /v2/embed, auto_embed, text searches) from queued to answered",
    ),
    (
        "kyrodb_embed_texts_total",
        Kind::Counter,
        "Texts embedded by the server's model",
    ),
    (
        "kyrodb_embed_queue_texts",
        Kind::Gauge,
        "Texts waiting in the embedding queue",
    ),
    (
        "kyrodb_embed_refused_total",
        Kind::EventCounter,
        "Embedding requests refused because the queue was full (503 busy)",
    ),
    (
        "kyrodb_search_documents",
        Kind::Gauge,
        "Live documents in a collection",
    ),
    (
        "kyrodb_search_vectors",
        Kind::Gauge,
        "Live vectors in a collection's vector field",
    ),
    (
        "kyrodb_search_pending_vectors",
        Kind::Gauge,
        "Vectors of a field written but not yet linked into its graph (searched exactly meanwhile)",
    ),
    (
        "kyrodb_search_tombstone_vectors",
        Kind::Gauge,
        "Removed vectors still holding a graph slot in a field's index",
    ),
    (
        "kyrodb_search_index_bytes",
        Kind::Gauge,
        "Bytes held by a field's vector index",
    ),
    (
        "kyrodb_rmi_build_duration_seconds",
        Kind::Histogram,
        "Time of one learned-index build",
    ),
    (
        "kyrodb_rmi_probe_length_slots",
        Kind::Histogram,
        "Distance from prediction to position plus one, sampled over keys at each build",
    ),
    (
        "kyrodb_rmi_rebuilds_total",
        Kind::EventCounter,
        "Learned-index rebuilds finished",
    ),
    (
        "kyrodb_rmi_rebuild_failures_total",
        Kind::EventCounter,
        "Learned-index background rebuilds that failed",
    ),
    (
        "kyrodb_hybrid_search_latency_seconds",
        Kind::Histogram,
        "Hybrid searches (POST /v2/search/hybrid), every component and the fusion",
    ),
    (
        "kyrodb_text_merges_total",
        Kind::EventCounter,
        "Full-text segment merges finished by the indexer threads",
    ),
    (
        "kyrodb_learned_ranking_trainings_total",
        Kind::EventCounter,
        "Learned-ranking models trained from feedback (served or refused by the gate)",
    ),
    // Process
    (
        "kyrodb_process_uptime_seconds",
        Kind::Gauge,
        "Seconds since this server started",
    ),
    (
        "kyrodb_build_info",
        Kind::Gauge,
        "Always 1; the labels carry the version and git commit",
    ),
    (
        "kyrodb_disk_free_bytes",
        Kind::Gauge,
        "Bytes available to the server on the data directory's filesystem",
    ),
    (
        "kyrodb_disk_total_bytes",
        Kind::Gauge,
        "Size of the data directory's filesystem",
    ),
];

fn describe_all(recorder: &metrics_exporter_prometheus::PrometheusRecorder) {
    use metrics::{Recorder, SharedString, Unit};
    for &(name, kind, help) in FAMILIES {
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
    metrics::counter!("kyrodb_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("kyrodb_http_request_duration_seconds", "route" => route, "method" => method, "status" => status)
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
        gauge!("kyrodb_search_documents", "collection" => name.clone()).set(c.documents as f64);
        for f in c.fields {
            let l = [("collection", name.clone()), ("field", f.field)];
            gauge!("kyrodb_search_vectors", &l).set(f.vectors as f64);
            gauge!("kyrodb_search_pending_vectors", &l).set(f.pending as f64);
            gauge!("kyrodb_search_tombstone_vectors", &l).set(f.tombstones as f64);
            gauge!("kyrodb_search_index_bytes", &l).set(f.bytes as f64);
        }
    }
}

/// The embedding queue's numbers, refreshed at every scrape.
pub fn record_embed_stats(e: &crate::embed::EmbedState) {
    if let Some(st) = e.stats() {
        metrics::gauge!("kyrodb_embed_queue_texts").set(st.queued_texts as f64);
        metrics::counter!("kyrodb_embed_refused_total").absolute(st.refused);
    }
}

/// The process's numbers, refreshed at every scrape: uptime, version, the data directory's disk.
pub fn record_process_stats(started: std::time::Instant, data_dir: &std::path::Path) {
    use metrics::gauge;
    gauge!("kyrodb_process_uptime_seconds").set(started.elapsed().as_secs_f64());
    gauge!("kyrodb_build_info", "version" => env!("CARGO_PKG_VERSION"), "git_sha" => env!("KYRODB_GIT_SHA"))
        .set(1.0);
    if let Ok(st) = rustix::fs::statvfs(data_dir) {
        let unit = st.f_frsize.max(1) as f64;
        gauge!("kyrodb_disk_free_bytes").set(st.f_bavail as f64 * unit);
        gauge!("kyrodb_disk_total_bytes").set(st.f_blocks as f64 * unit);
    }
}

/// Engine numbers as gauges, refreshed at every scrape.
pub fn record_engine_stats(st: &kyrodb_storage::Stats) {
    use metrics::gauge;
    gauge!("kyrodb_storage_last_seq").set(st.last_seq as f64);
    gauge!("kyrodb_storage_visible_seq").set(st.visible_seq as f64);
    gauge!("kyrodb_storage_covered_seq").set(st.covered_seq as f64);
    gauge!("kyrodb_storage_manifest_generation").set(st.manifest_generation as f64);
    gauge!("kyrodb_storage_delta_bytes").set(st.delta_bytes as f64);
    gauge!("kyrodb_storage_delta_entries").set(st.delta_entries as f64);
    gauge!("kyrodb_storage_frozen_bytes").set(st.frozen_bytes as f64);
    gauge!("kyrodb_storage_wal_segments").set(st.wal_segments as f64);
    gauge!("kyrodb_storage_writes_stopped").set(if st.writes_stopped.is_some() {
        1.0
    } else {
        0.0
    });
}

/// The per-keyspace gauges, each a function of one keyspace's numbers.
type KeyspaceGauge = (&'static str, fn(&kyrodb_storage::KeyspaceStats) -> f64);
const KEYSPACE_GAUGES: &[KeyspaceGauge] = &[
    ("kyrodb_storage_snapshot_keys", |k| k.snapshot_keys as f64),
    ("kyrodb_storage_snapshot_data_bytes", |k| {
        k.snapshot_data_bytes as f64
    }),
    ("kyrodb_storage_keys", |k| k.keys as f64),
    ("kyrodb_index_leaves", |k| k.index.leaves as f64),
    ("kyrodb_index_epsilon_bound_slots", |k| {
        f64::from(k.index.epsilon_bound)
    }),
    ("kyrodb_index_error_max_slots", |k| {
        f64::from(k.index.epsilon_max_measured)
    }),
    ("kyrodb_index_error_mean_slots", |k| {
        k.index.error_mean_measured
    }),
    ("kyrodb_index_model_bytes", |k| k.index_model_bytes as f64),
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
    for (family, value) in KEYSPACE_GAUGES {
        let help = FAMILIES
            .iter()
            .find(|(n, _, _)| n == family)
            .map_or("", |(_, _, h)| h);
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} gauge");
        for ks in &st.keyspaces {
            let name = label_value(&ks.name);
            let _ = if *family == "kyrodb_index_model_bytes" {
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
                FAMILIES
                    .iter()
                    .any(|(n, k, _)| n == family && *k == Kind::Gauge),
                "{family} is not a listed gauge"
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
        for (name, kind, _) in FAMILIES {
            if *kind == Kind::EventCounter {
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
        for (name, kind, help) in FAMILIES {
            assert!(seen.insert(*name), "{name} listed twice");
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

    /// Every metric name recorded anywhere in the workspace's sources is listed in [`FAMILIES`].
    #[test]
    fn every_recorded_metric_is_listed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut recorded = Vec::new();
        let mut stack = vec![
            root.join("storage/src"),
            root.join("rmi/src"),
            root.join("server/src"),
            root.join("search/src"),
            root.join("embed/src"),
            root.join("cluster/src"),
        ];
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
                            if let Some(lit) = rest.strip_prefix('"') {
                                let name = &lit[..lit.find('"').unwrap()];
                                // (This test's own list of macro names is not a metric.)
                                if name.is_empty()
                                    || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                                {
                                    continue;
                                }
                                recorded.push((name.to_owned(), p.display().to_string()));
                            }
                        }
                    }
                }
            }
        }
        assert!(recorded.len() > 20, "found only {recorded:?}");
        for (name, file) in recorded {
            assert!(
                FAMILIES.iter().any(|(n, _, _)| *n == name),
                "{name} (recorded in {file}) is not in FAMILIES"
            );
        }
    }
}

//! Prometheus metrics: one process-wide recorder (the `metrics` facade the engine also writes to),
//! rendered at `/metrics`. No listener of its own; the server's router serves it.

use std::{sync::OnceLock, time::Duration, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
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
            // Another recorder may already be installed by an embedding program; then ours only
            // renders what we record through the handle, which is nothing. Say so rather than panic.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
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
/// `kyrodb_http_request_duration_seconds{route,method,status}` around every request.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route: &'static str = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| crate::routes::intern_route(p.as_str()));
    let method = method_label(req.method());
    let resp = next.run(req).await;
    let status = status_label(resp.status().as_u16());
    metrics::counter!("kyrodb_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("kyrodb_http_request_duration_seconds", "route" => route, "method" => method, "status" => status)
        .record(started.elapsed().as_secs_f64());
    resp
}

fn method_label(m: &axum::http::Method) -> &'static str {
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
    gauge!("kyrodb_storage_compactions").set(st.compactions as f64);
    gauge!("kyrodb_storage_writes_stopped").set(if st.writes_stopped.is_some() {
        1.0
    } else {
        0.0
    });
    for ks in &st.keyspaces {
        let name = ks.name.clone();
        gauge!("kyrodb_storage_snapshot_keys", "keyspace" => name.clone())
            .set(ks.snapshot_keys as f64);
        gauge!("kyrodb_storage_snapshot_data_bytes", "keyspace" => name.clone())
            .set(ks.snapshot_data_bytes as f64);
        gauge!("kyrodb_storage_keys", "keyspace" => name.clone()).set(ks.keys as f64);
        gauge!("kyrodb_index_leaves", "keyspace" => name.clone()).set(ks.index.leaves as f64);
        gauge!("kyrodb_index_epsilon_bound", "keyspace" => name.clone())
            .set(f64::from(ks.index.epsilon_bound));
        gauge!("kyrodb_index_epsilon_max_measured", "keyspace" => name.clone())
            .set(f64::from(ks.index.epsilon_max_measured));
        gauge!("kyrodb_index_error_mean_measured", "keyspace" => name.clone())
            .set(ks.index.error_mean_measured);
        gauge!("kyrodb_index_model_bytes", "keyspace" => name, "index" => st.index)
            .set(ks.index_model_bytes as f64);
    }
}

//! `deploy/`: every metric the Grafana dashboard and the Prometheus alerts query is exported by a
//! running server (after it has done one of each kind of work), the dashboard is well-formed, and
//! the systemd unit starts the binary with flags it has.

mod common;

use std::{collections::BTreeSet, path::Path};

use common::{installed_model_dir, Server};

fn deploy(file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every `kyrodb_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("kyrodb_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        out.insert(text[start..end].to_owned());
        i = end;
    }
    out
}

/// The families of a Prometheus exposition (sample names, `_bucket`/`_sum`/`_count` included).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let models = installed_model_dir();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_MODEL_DIR", models.to_str().unwrap())],
    );
    // One of each kind of work: writes (fsync, group commit), a snapshot (compaction), a
    // learned-index build, a collection with server-side embeddings, searches of both kinds.
    for k in 0..20 {
        let r = s.post("/v1/put", &format!(r#"{{"key": {k}, "value": "v{k}"}}"#));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(s.post("/v1/snapshot", "").status, 200);
    assert_eq!(s.post("/v1/rmi/build", "").status, 200);
    let r = s.req(
        "PUT",
        "/v2/collections/notes",
        &[("content-type", "application/json")],
        br#"{"text_fields": ["body"], "vectors": {"text": {"dim": 384, "metric": "cosine",
            "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}}}}"#,
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    let r = s.post(
        "/v2/collections/notes/documents",
        r#"{"documents": [{"id": "a", "text": "A man is eating food."}, {"id": "b", "text": "Markets fell."}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.post(
        "/v2/collections/notes/search",
        r#"{"text": "a meal", "using": "text"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.post(
        "/v2/search/hybrid",
        r#"{"collection": "notes", "vector_similarity": {"text": "a meal", "using": "text"}, "text_search": "food"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.post("/v2/embed", r#"{"texts": ["hello"]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    let have = exported(&r.text());

    let dashboard = deploy("grafana/kyrodb.json");
    let dash: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"].as_array().expect("every panel queries");
        assert!(!targets.is_empty() && targets.iter().all(|t| t["expr"].is_string()));
    }
    let alerts = deploy("prometheus/alerts.yml");
    for (what, text) in [("dashboard", &dashboard), ("alerts", &alerts)] {
        let wanted = metric_names(text);
        assert!(wanted.len() >= 8, "{what}: {wanted:?}");
        let missing: Vec<_> = wanted.iter().filter(|m| !have.contains(*m)).collect();
        assert!(
            missing.is_empty(),
            "{what} queries metrics the server does not export: {missing:?}\nexported: {have:?}"
        );
    }
    // The dashboard covers what operators asked for.
    for needed in [
        "kyrodb_http_requests_total",
        "kyrodb_http_request_duration_seconds_bucket",
        "kyrodb_wal_fsync_latency_seconds_bucket",
        "kyrodb_storage_compactions_total",
        "kyrodb_rmi_rebuilds_total",
        "kyrodb_search_latency_seconds_bucket",
        "kyrodb_embed_queue_texts",
    ] {
        assert!(dashboard.contains(needed), "dashboard lacks {needed}");
    }
    for needed in [
        "kyrodb_storage_writes_stopped",
        "kyrodb_disk_free_bytes",
        "status=~\"5",
        "histogram_quantile(0.99",
    ] {
        assert!(alerts.contains(needed), "alerts lack {needed}");
    }

    // The systemd unit runs `kyrodb serve` with flags the binary has.
    let unit = deploy("systemd/kyrodb.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    assert_eq!(args[0], "serve");
    let help = common::command()
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag), "kyrodb serve has no {flag}");
    }
}

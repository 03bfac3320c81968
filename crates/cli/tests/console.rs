//! The web console (`/console`) end to end in headless Chromium: `scripts/browser-env` installs
//! Debian's chromium and playwright-core once; `crates/server/console/test/console.test.mjs`
//! drives every page against a filled server (auth off) and checks the token flow (auth on) and
//! what a key scoped to one tenant of one collection sees.
//! Screenshots go to `target/console-screenshots/`, and to `docs/console/` with
//! `KYRODB_UPDATE_SCREENSHOTS=1`.

mod common;

use std::process::Command;

use common::{installed_model_dir, Server};

const READ_TOKEN: &str = "console-read-token";

use common::repo_root as root;

#[test]
fn the_console_renders_every_page_and_runs_a_hybrid_query_in_chromium() {
    let env = common::script_stdout("browser-env", &[], "installing the browser");
    let mut lines = env.lines();
    let (chromium, node_modules) = (lines.next().unwrap(), lines.next().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let models = installed_model_dir();
    let s = Server::start(
        &dir.path().join("open"),
        &[("KYRODB_MODEL_DIR", models.to_str().unwrap())],
    );
    let r = s.post(
        "/v1/put",
        r#"{"key": 7, "value": "hello from the console test"}"#,
    );
    assert_eq!(r.status, 200);
    let r = s.post("/v1/put", r#"{"key": 8, "value_b64": "AP8Q"}"#);
    assert_eq!(r.status, 200);
    let r = s.req(
        "PUT",
        "/v2/collections/news",
        &[("content-type", "application/json")],
        br#"{"text_fields": ["title", "body"], "fields": {"lang": "keyword", "published": "datetime"},
            "timestamp_field": "published",
            "vectors": {"text": {"dim": 384, "metric": "cosine", "embed": {"model": "all-MiniLM-L6-v2", "source": "body"}}}}"#,
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    let topics = [
        "a storage engine written in Rust with a write-ahead log",
        "vector databases and approximate nearest neighbour search",
        "BM25 ranking for full-text search in a database",
        "learned indexes replace B-trees with models",
        "PostgreSQL extensions for embeddings",
        "caching hot keys in memory",
    ];
    let docs: Vec<serde_json::Value> = (0..60)
        .map(|i| {
            serde_json::json!({
                "id": format!("article-{i}"),
                "text": {"title": format!("Article {i}"), "body": topics[i % topics.len()]},
                "fields": {"lang": if i % 3 == 0 { "de" } else { "en" }},
                "timestamp": 1_760_000_000_000i64 + i as i64 * 3_600_000,
            })
        })
        .collect();
    let r = s.post(
        "/v2/collections/news/documents",
        &serde_json::json!({ "documents": docs }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = Server::start(
        &dir.path().join("auth"),
        &[(
            "KYRODB_API_KEYS",
            &format!("admin:console-admin-token,read:{READ_TOKEN}"),
        )],
    );

    // A scoped key bound to one tenant of one collection, for the console to show only that.
    let admin = [
        ("authorization", "Bearer console-admin-token"),
        ("content-type", "application/json"),
    ];
    for (name, schema) in [
        (
            "shared",
            r#"{"text_fields": ["body"], "fields": {"org": "keyword"}, "tenant_field": "org"}"#,
        ),
        ("private", r#"{"text_fields": ["body"]}"#),
    ] {
        let r = auth.req(
            "PUT",
            &format!("/v2/collections/{name}"),
            &admin,
            schema.as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = auth.req(
        "POST",
        "/v2/collections/shared/documents",
        &admin,
        br#"{"documents": [
            {"id": "acme-1", "text": {"body": "acme's first note"}, "fields": {"org": "acme"}},
            {"id": "acme-2", "text": {"body": "acme's second note"}, "fields": {"org": "acme"}},
            {"id": "globex-1", "text": {"body": "globex's secret note"}, "fields": {"org": "globex"}}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = auth.req(
        "POST",
        "/v1/keys",
        &admin,
        br#"{"role": "read", "name": "acme console", "collections": ["shared"], "tenant": "acme"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let scoped: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let scoped = scoped["token"].as_str().unwrap().to_owned();

    let shots = if std::env::var_os("KYRODB_UPDATE_SCREENSHOTS").is_some() {
        root().join("docs/console")
    } else {
        root().join("target/console-screenshots")
    };
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(root().join("crates/server/console/test/console.test.mjs"))
        .env("KYRODB_URL", s.url())
        .env("KYRODB_AUTH_URL", auth.url())
        .env("KYRODB_TOKEN", READ_TOKEN)
        .env("KYRODB_SCOPED_TOKEN", &scoped)
        .env("CHROMIUM", chromium)
        .env("NODE_PATH", node_modules)
        .env("SHOTS", &shots)
        .output()
        .expect("node runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the console test failed:\n{text}");
    assert!(text.contains("7 checks passed"), "{text}");
    for page in [
        "overview",
        "kv",
        "collections",
        "collection",
        "search",
        "token",
        "scoped",
    ] {
        let p = shots.join(format!("{page}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{} missing or empty", p.display());
    }
}

//! The client commands and `import` against a running server.

mod common;

use common::{run, Server};

#[test]
fn put_get_delete_scan_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let out = run(&s, &["put", "42", "hello world"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("offset"));
    let out = run(&s, &["get", "42"]);
    assert_eq!(out.stdout, b"hello world");
    let out = run(&s, &["scan", "--start", "40", "--limit", "5"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["items"][0]["key"], 42);
    assert!(run(&s, &["delete", "42"]).status.success());
    let out = run(&s, &["get", "42"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
}

#[test]
fn import_jsonl_and_csv_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let jsonl = dir.path().join("in.jsonl");
    let mut text = String::new();
    for k in 0..2500 {
        text.push_str(&format!("{{\"key\": {k}, \"value\": \"j{k}\"}}\n"));
    }
    std::fs::write(&jsonl, text).unwrap();
    let out = run(&s, &["import", jsonl.to_str().unwrap(), "--batch", "1000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("imported 2500 records"), "{err}");
    assert_eq!(s.get("/v1/kv/2499").text(), "j2499");

    let csv = dir.path().join("in.csv");
    std::fs::write(
        &csv,
        "key,value\n1,\"a, \"\"quoted\"\" value\"\nnot-a-key,x\n3,plain\n",
    )
    .unwrap();
    let out = run(&s, &["import", csv.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a bad line makes the exit status non-zero"
    );
    assert!(
        err.contains("imported 2 records") && err.contains("line 3"),
        "{err}"
    );
    assert_eq!(s.get("/v1/kv/1").text(), "a, \"quoted\" value");
    assert_eq!(s.get("/v1/kv/3").text(), "plain");
}

#[test]
fn loadgen_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let out = run(
        &s,
        &[
            "loadgen",
            "--mode",
            "fill",
            "--key-count",
            "500",
            "--batch-keys",
            "100",
            "--connections",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.get("/v1/kv/499").body.len(), 100);
    let out = run(
        &s,
        &[
            "loadgen",
            "--key-count",
            "500",
            "--connections",
            "4",
            "--duration-s",
            "0.5",
            "--warmup-s",
            "0.1",
        ],
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["rps"].as_f64().unwrap() > 0.0, "{j}");
    assert_eq!(j["non_2xx"], 0, "{j}");
    assert!(j["p99_ms"].as_f64().unwrap() >= j["p50_ms"].as_f64().unwrap());
}

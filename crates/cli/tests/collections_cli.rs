//! The `/v2` client commands against the real binary: `collection create|list|info|drop`,
//! `docs import|get|delete` and `search`.

mod common;

use std::{io::Write, process::Stdio};

use common::{command, run, Server};
use serde_json::{json, Value};

const SCHEMA: &str = r#"{"vectors": {"emb": {"dim": 4, "metric": "cosine"}},
    "text_fields": ["body"], "fields": {"lang": "keyword", "rank": "integer"}}"#;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must succeed; its stdout.
fn ok(s: &Server, args: &[&str]) -> String {
    let out = run(s, args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
    stdout(&out)
}

/// A server with collection `docs` of [`SCHEMA`], created from the command line.
fn server_with_collection(dir: &std::path::Path) -> Server {
    let s = Server::start(&dir.join("data"), &[]);
    ok(
        &s,
        &["collection", "create", "docs", "--schema-json", SCHEMA],
    );
    s
}

/// Imports `lines` (one JSONL line each) into `collection`; the command's output.
fn import(
    s: &Server,
    dir: &std::path::Path,
    collection: &str,
    lines: &[String],
    extra: &[&str],
) -> std::process::Output {
    let path = dir.join(format!("{collection}-{}.jsonl", lines.len()));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let mut args = vec!["docs", "import", collection, path.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(s, &args)
}

#[test]
fn collections_are_created_listed_described_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let schema_file = dir.path().join("schema.json");
    std::fs::write(&schema_file, SCHEMA).unwrap();

    let out = ok(
        &s,
        &[
            "collection",
            "create",
            "articles",
            "--schema",
            schema_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.trim(), "created collection articles");
    // The server has it, with the schema from the file.
    let info = s.get("/v2/collections/articles");
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["schema"]["vectors"]["emb"]["dim"], 4);
    // Again with the same schema as JSON text: it exists, same schema, still success.
    let out = ok(
        &s,
        &["collection", "create", "articles", "--schema-json", SCHEMA],
    );
    assert!(out.contains("already exists with this schema"), "{out}");
    // A different schema is the server's 409, with its code, and a non-zero exit.
    let out = run(
        &s,
        &[
            "collection",
            "create",
            "articles",
            "--schema-json",
            r#"{"vectors": {"emb": {"dim": 8, "metric": "l2"}}}"#,
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("HTTP 409 collection_exists"),
        "{}",
        stderr(&out)
    );
    // The schema from stdin, and --json prints the server's answer.
    let mut child = command()
        .args([
            "collection",
            "create",
            "notes",
            "--schema",
            "-",
            "--json",
            "--url",
            &s.url(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"vectors": {"v": {"dim": 2, "metric": "dot"}}}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["name"], "notes");
    assert_eq!(created["schema"]["vectors"]["v"]["metric"], "dot");

    let list = ok(&s, &["collection", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines.contains(&"articles\t0 documents\tvectors: emb(4, cosine)"),
        "{list}"
    );
    assert!(
        lines.contains(&"notes\t0 documents\tvectors: v(2, dot)"),
        "{list}"
    );
    let list: Value = serde_json::from_str(&ok(&s, &["collection", "list", "--json"])).unwrap();
    let mut names: Vec<&str> = list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["articles", "notes"]);

    let info: Value = serde_json::from_str(&ok(&s, &["collection", "info", "articles"])).unwrap();
    assert_eq!(info["name"], "articles");
    assert_eq!(info["documents"], 0);
    assert_eq!(info["schema"]["fields"]["lang"], "keyword");

    let out = ok(&s, &["collection", "drop", "articles"]);
    assert_eq!(out.trim(), "dropped collection articles");
    assert_eq!(s.get("/v2/collections/articles").status, 404);
    let out = run(&s, &["collection", "info", "articles"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("HTTP 404 collection_not_found"),
        "{}",
        stderr(&out)
    );
    let list = ok(&s, &["collection", "list"]);
    assert!(
        !list.contains("articles") && list.contains("notes"),
        "{list}"
    );
}

#[test]
fn docs_import_skips_bad_lines_and_refused_documents_and_the_rest_is_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_collection(dir.path());
    let good = [
        ("d1", [1.0, 0.0, 0.0, 0.0], "en"),
        ("d2", [0.0, 1.0, 0.0, 0.0], "de"),
        ("d3", [0.0, 0.0, 1.0, 0.0], "en"),
        ("d4", [0.0, 0.0, 0.0, 1.0], "fr"),
        ("d5", [1.0, 1.0, 0.0, 0.0], "en"),
    ];
    let doc = |(id, v, lang): (&str, [f64; 4], &str)| {
        json!({"id": id, "vector": v, "text": format!("text of {id}"), "fields": {"lang": lang}})
            .to_string()
    };
    let lines = vec![
        doc(good[0]),
        doc(good[1]),
        "{\"id\": \"broken\", ".to_owned(), // line 3: not JSON
        doc(good[2]),
        json!({"id": "short", "vector": [1, 2, 3]}).to_string(), // line 5: wrong dimension
        "[1, 2]".to_owned(),                                     // line 6: not an object
        doc(good[3]),
        doc(good[4]),
    ];
    // Two per request: [1,2] [4,5] (5 refused, 4 resent alone) [7,8] = 4 requests.
    let out = import(&s, dir.path(), "docs", &lines, &["--batch", "2"]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "skipped lines make the exit non-zero: {err}"
    );
    assert!(
        err.contains("imported 5 documents from 8 lines in 4 requests in "),
        "{err}"
    );
    assert!(err.contains("docs/s); 3 skipped, 0 failed"), "{err}");
    assert!(err.contains("line 3: not JSON"), "{err}");
    assert!(
        err.contains("line 5: refused by the server: vector: expected 4 dimensions, got 3"),
        "{err}"
    );
    assert!(err.contains("line 6: not a JSON object"), "{err}");
    assert_eq!(s.get("/v2/collections/docs").json()["documents"], 5);
    assert_eq!(s.get("/v2/collections/docs/documents/short").status, 404);

    // Each good document is the top hit for its own vector, as JSON and as a table.
    for (id, v, lang) in good {
        let vector = serde_json::to_string(&v).unwrap();
        let answer: Value = serde_json::from_str(&ok(
            &s,
            &[
                "search", "docs", "--vector", &vector, "--limit", "3", "--json",
            ],
        ))
        .unwrap();
        assert_eq!(answer["hits"][0]["id"], id, "{answer}");
        assert!((answer["hits"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
        assert_eq!(answer["hits"][0]["fields"]["lang"], lang);
        let table = ok(&s, &["search", "docs", "--vector", &vector, "--limit", "2"]);
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[0].starts_with("RANK  ID  SCORE"), "{table}");
        let first: Vec<&str> = rows[1].split_whitespace().collect();
        assert_eq!(&first[..3], ["1", id, "1.000000"], "{table}");
        assert_eq!(rows.len(), 3, "{table}");
    }
    // The vector from a file, a filter, what hits carry, and the plan.
    let vfile = dir.path().join("q.txt");
    std::fs::write(&vfile, "1 0.9 0 0\n").unwrap();
    let answer: Value = serde_json::from_str(&ok(
        &s,
        &[
            "search",
            "docs",
            "--vector-file",
            vfile.to_str().unwrap(),
            "--filter",
            r#"{"lang": "en"}"#,
            "--with",
            "fields,text",
            "--explain",
            "--json",
        ],
    ))
    .unwrap();
    let ids: Vec<&str> = answer["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d5", "d1", "d3"], "{answer}");
    assert_eq!(answer["hits"][0]["text"]["body"], "text of d5");
    assert!(answer["plan"].is_object(), "{answer}");
    let table = ok(
        &s,
        &[
            "search",
            "docs",
            "--vector",
            "[0,0,1,0]",
            "--with",
            "text",
            "--threshold",
            "0.5",
            "--explain",
        ],
    );
    assert!(table.lines().next().unwrap().ends_with("TEXT"), "{table}");
    assert!(
        table.contains("text of d3") && !table.contains("d1"),
        "{table}"
    );
    assert!(table.contains("plan: {"), "{table}");
    // A query the server refuses: its code and message, non-zero exit.
    let out = run(&s, &["search", "docs", "--vector", "[1, 0]"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("HTTP 400 dimension_mismatch: vector: expected 4 dimensions, got 2"),
        "{}",
        stderr(&out)
    );

    // A clean file exits 0; the documents per request follow --batch.
    let more: Vec<String> = (0..7)
        .map(|i| json!({"id": format!("m{i}"), "vector": [1, i, 0, 0]}).to_string())
        .collect();
    let out = import(&s, dir.path(), "docs", &more, &["--batch", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("imported 7 documents from 7 lines in 3 requests"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("0 skipped, 0 failed"));
    assert_eq!(s.get("/v2/collections/docs").json()["documents"], 12);
}

#[test]
fn docs_import_batches_stay_under_the_servers_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_BODY_BYTES_MAX", "65536")],
    );
    ok(
        &s,
        &["collection", "create", "docs", "--schema-json", SCHEMA],
    );
    // 100 documents of ~5 KB: 500 KB, in requests under 15/16 of 64 KiB (at most 12 per request).
    let body = "b".repeat(5000);
    let lines: Vec<String> = (0..100)
        .map(|i| json!({"id": format!("big{i}"), "vector": [1, i, 0, 0], "text": body}).to_string())
        .collect();
    let out = import(&s, dir.path(), "docs", &lines, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let requests: u64 = err
        .split_once(" requests")
        .and_then(|(head, _)| head.rsplit(' ').next()?.parse().ok())
        .expect(&err);
    assert!(requests >= 9, "{err}");
    assert!(
        err.contains("imported 100 documents from 100 lines"),
        "{err}"
    );
    // --batch-bytes lowers it further: one ~5 KB document per request.
    let out = import(
        &s,
        dir.path(),
        "docs",
        &lines[..10],
        &["--batch-bytes", "6000"],
    );
    assert!(
        stderr(&out).contains("imported 10 documents from 10 lines in 10 requests"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.get("/v2/collections/docs").json()["documents"], 100);
}

#[test]
fn ids_with_slashes_at_signs_spaces_and_any_utf8_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_collection(dir.path());
    let ids = [
        "a/b@c d",
        "user@example.com/x y",
        "ünï cødé/..",
        "?q=1#frag%20",
        "..",
    ];
    let lines: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "vector": [1, i, 0, 0], "fields": {"rank": i}}).to_string())
        .collect();
    let out = import(&s, dir.path(), "docs", &lines, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A plain neighbour, so a route that lost part of the id would find the wrong one or none.
    let plain = dir.path().join("a.jsonl");
    std::fs::write(&plain, r#"{"id": "a", "vector": [0, 0, 0, 1]}"#).unwrap();
    ok(&s, &["docs", "import", "docs", plain.to_str().unwrap()]);
    for (i, id) in ids.iter().enumerate() {
        let doc: Value = serde_json::from_str(&ok(&s, &["docs", "get", "docs", id])).unwrap();
        assert_eq!(doc["id"], *id, "{doc}");
        assert_eq!(doc["fields"]["rank"], i, "{doc}");
    }
    let out = run(&s, &["docs", "get", "docs", "a/b"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("HTTP 404 document_not_found"),
        "{}",
        stderr(&out)
    );
    // Deleting by these ids finds them too.
    let out = ok(&s, &["docs", "delete", "docs", "a/b@c d", ".."]);
    assert_eq!(out.trim(), "deleted 2, absent 0");
    assert_eq!(s.get("/v2/collections/docs").json()["documents"], 4);
}

#[test]
fn docs_delete_prints_deleted_and_absent_counts() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_collection(dir.path());
    let lines: Vec<String> = ["x", "y", "z"]
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "vector": [1, i, 1, 0]}).to_string())
        .collect();
    assert!(import(&s, dir.path(), "docs", &lines, &[]).status.success());
    let out = ok(
        &s,
        &["docs", "delete", "docs", "x", "y", "nope", "also-nope"],
    );
    assert_eq!(out.trim(), "deleted 2, absent 2");
    let out: Value =
        serde_json::from_str(&ok(&s, &["docs", "delete", "docs", "x", "z", "--json"])).unwrap();
    assert_eq!(out, json!({"deleted": 1, "absent": 1}));
    assert_eq!(s.get("/v2/collections/docs").json()["documents"], 0);
    let out = run(&s, &["docs", "get", "docs", "y"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("document_not_found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_collection_is_a_clear_error_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let file = dir.path().join("d.jsonl");
    std::fs::write(
        &file,
        "{\"id\": \"a\", \"vector\": [1, 0, 0, 0]}\nnot json\n",
    )
    .unwrap();
    let cases: [&[&str]; 6] = [
        &["collection", "info", "nope"],
        &["collection", "drop", "nope"],
        &["docs", "import", "nope", file.to_str().unwrap()],
        &["docs", "get", "nope", "a"],
        &["docs", "delete", "nope", "a"],
        &["search", "nope", "--vector", "[1, 0, 0, 0]"],
    ];
    for args in cases {
        let out = run(&s, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("HTTP 404 collection_not_found: no collection named \"nope\""),
            "{args:?}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    // The import stops before reading the file: no per-line messages, no summary.
    let out = run(&s, &["docs", "import", "nope", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(
        err.starts_with("kyrodb: collection nope: HTTP 404"),
        "{err}"
    );
    assert!(
        !err.contains("line 2") && !err.contains("imported"),
        "{err}"
    );
}

#[test]
fn collection_commands_send_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_API_KEYS", "admin:admintoken1,read:readtoken1")],
    );
    let out = run(&s, &["collection", "list"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("HTTP 401"), "{}", stderr(&out));
    let out = run(
        &s,
        &[
            "collection",
            "create",
            "c",
            "--schema-json",
            SCHEMA,
            "--token",
            "readtoken1",
        ],
    );
    assert!(stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    ok(
        &s,
        &[
            "collection",
            "create",
            "c",
            "--schema-json",
            SCHEMA,
            "--token",
            "admintoken1",
        ],
    );
    let out = command()
        .args(["collection", "list", "--url", &s.url()])
        .env("KYRODB_TOKEN", "readtoken1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("c\t0 documents"),
        "{}",
        stdout(&out)
    );
}

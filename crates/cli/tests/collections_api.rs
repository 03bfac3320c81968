//! `/v2` over real HTTP against the real binary: a document acknowledged is returned by the very next
//! search (concurrent writers and readers), hostile input is a 4xx naming the problem and writes
//! nothing, and SIGKILL during ingest loses no acknowledged document.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{try_request, Server};
use serde_json::{json, Value};

const DIM: usize = 16;

fn vector(i: u64) -> Vec<f32> {
    common::pseudo_vector(i, DIM)
}

fn create(s: &Server) {
    let r = s.req(
        "PUT",
        "/v2/collections/docs",
        &[],
        json!({"vectors": {"v": {"dim": DIM, "metric": "cosine"}},
               "text_fields": ["body"],
               "fields": {"author": "keyword", "rank": "integer", "published": "datetime"},
               "timestamp_field": "published"})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

fn doc(i: u64) -> Value {
    json!({"id": format!("d{i}"), "text": format!("body {i}"), "vector": vector(i),
           "fields": {"author": if i.is_multiple_of(2) { "ann" } else { "bob" }, "rank": i}})
}

fn top_id(port: u16, v: &[f32]) -> Option<String> {
    let body = json!({"vector": v, "limit": 1}).to_string();
    let r = try_request(
        port,
        "POST",
        "/v2/collections/docs/search",
        &[],
        body.as_bytes(),
    )
    .ok()?;
    if r.status != 200 {
        return None;
    }
    r.json()["hits"][0]["id"].as_str().map(str::to_owned)
}

#[test]
fn an_acknowledged_document_is_returned_by_the_very_next_search() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    create(&s);
    let port = s.port;
    // Background writers keep the WAL busy while we check visibility of our own writes.
    let stop = Arc::new(AtomicBool::new(false));
    let noise: Vec<_> = (0..2u64)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 1_000_000 * (w + 1);
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"documents": [doc(i)]}).to_string();
                    let r = try_request(
                        port,
                        "POST",
                        "/v2/collections/docs/documents",
                        &[],
                        body.as_bytes(),
                    )
                    .unwrap();
                    assert_eq!(r.status, 200, "{}", r.text());
                    i += 1;
                }
            })
        })
        .collect();
    for i in 0..150u64 {
        let body =
            json!({"collection": "docs", "id": format!("d{i}"), "vector": vector(i)}).to_string();
        let r = try_request(port, "POST", "/v2/documents/stream", &[], body.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            top_id(port, &vector(i)).as_deref(),
            Some(format!("d{i}").as_str()),
            "write {i} not visible to the next search"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for n in noise {
        n.join().unwrap();
    }
}

#[test]
fn hostile_input_is_a_4xx_naming_the_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    create(&s);
    let good = doc(1);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"id": "x", "vector": [1, 2]}),
            "dimension_mismatch",
            "documents[1].vector",
        ),
        (
            json!({"id": "x", "vector": vec![1.0f32; DIM], "fields": {"nope": 1}}),
            "unknown_field",
            "documents[1].fields.nope",
        ),
        (
            json!({"id": "x", "fields": {"rank": "high"}}),
            "invalid_field_type",
            "documents[1].fields.rank",
        ),
        (
            json!({"id": "x", "fields": {"author": 5}}),
            "invalid_field_type",
            "documents[1].fields.author",
        ),
        (
            json!({"id": "x", "timestamp": "not a time"}),
            "invalid_datetime",
            "documents[1].timestamp",
        ),
        (
            json!({"id": "x".repeat(257)}),
            "invalid_id",
            "documents[1].id",
        ),
        (json!({"id": 7}), "invalid_id", "documents[1].id"),
        (json!("a string"), "invalid_document", "documents[1]"),
    ];
    for (bad, code, path) in cases {
        let body = json!({"documents": [good, bad]}).to_string();
        let r = s.post("/v2/collections/docs/documents", &body);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.error_code(), code, "{bad}: {}", r.text());
        assert!(
            r.text().contains(path),
            "{bad}: message should name {path}: {}",
            r.text()
        );
    }
    // NaN / Infinity are not JSON; a huge number overflows f32 to infinity.
    let r = s.post(
        "/v2/collections/docs/documents",
        &format!(
            r#"{{"documents": [{{"id": "x", "vector": [1e39{}]}}]}}"#,
            ", 0".repeat(DIM - 1)
        ),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_vector"),
        "{}",
        r.text()
    );
    let r = s.post(
        "/v2/collections/docs/documents",
        r#"{"documents": [{"id": "x", "vector": [NaN]}]}"#,
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_json"));
    // Unknown collection, oversized batch, bad schema, bad search.
    let r = s.post("/v2/collections/nope/documents", r#"{"documents": []}"#);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "collection_not_found")
    );
    let many: Vec<Value> = (0..1001).map(doc).collect();
    let r = s.post(
        "/v2/collections/docs/documents",
        &json!({"documents": many}).to_string(),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "too_many"),
        "{}",
        r.text()
    );
    for (schema, path) in [
        (
            json!({"vectors": {"v": {"dim": 0, "metric": "cosine"}}}),
            "vectors.v.dim",
        ),
        (
            json!({"vectors": {"v": {"dim": 3, "metric": "hamming"}}}),
            "unknown variant",
        ),
        (
            json!({"fields": {"t": "datetime"}, "timestamp_field": "u"}),
            "timestamp_field",
        ),
        (json!({"fields": {"a b": "keyword"}}), "fields.a b"),
    ] {
        let r = s.req(
            "PUT",
            "/v2/collections/bad",
            &[],
            schema.to_string().as_bytes(),
        );
        assert_eq!(r.status, 400, "{schema}: {}", r.text());
        assert!(r.text().contains(path), "{schema}: {}", r.text());
    }
    let r = s.req("PUT", "/v2/collections/bad%2Fname", &[], b"{}");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_collection_name")
    );
    for (q, code) in [
        (json!({"vector": [1, 2]}), "dimension_mismatch"),
        (
            json!({"vector": vector(1), "filter": {"must": [{"key": "nope", "match": 1}]}}),
            "unknown_field",
        ),
        (
            json!({"vector": vector(1), "filter": {"must": [{"key": "rank", "range": {"gte": "x"}}]}}),
            "invalid_filter",
        ),
        (json!({"vector": vector(1), "limit": 0}), "invalid_query"),
        (json!({"vector": vector(1), "using": "w"}), "unknown_field"),
        (json!({"vector": vector(1), "surprise": 1}), "unknown_field"),
    ] {
        let r = s.post("/v2/collections/docs/search", &q.to_string());
        assert_eq!(
            (r.status, r.error_code()),
            (400, code.to_owned()),
            "{q}: {}",
            r.text()
        );
    }
    // The KV API cannot reach the collections' keyspaces.
    let r = s.get("/v1/kv/1?keyspace=_collections");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "reserved_keyspace")
    );
    // Nothing was written by any of it.
    let info = s.get("/v2/collections/docs").json();
    assert_eq!(info["documents"], 0, "{info}");
    assert_eq!(
        s.get("/v2/collections").json()["collections"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Single delete of an absent id is a 404; batch delete counts.
    assert_eq!(
        s.req("DELETE", "/v2/collections/docs/documents/nope", &[], b"")
            .status,
        404
    );
    let r = s.post(
        "/v2/collections/docs/documents/delete",
        r#"{"ids": ["a", "b"]}"#,
    );
    assert_eq!(r.json(), json!({"deleted": 0, "absent": 2}));
}

#[test]
fn documents_with_any_id_round_trip_and_deletes_are_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    create(&s);
    let ids = ["@scope/name", "a b/c?d#e", "ünï 😀", "%2F"];
    let docs: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "vector": vector(i as u64), "timestamp": 1_700_000_000_123i64}))
        .collect();
    let r = s.post(
        "/v2/collections/docs/documents",
        &json!({"documents": docs}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for id in ids {
        let enc: String = id
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let r = s.get(&format!("/v2/collections/docs/documents/{enc}"));
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.json()["id"], id);
        assert_eq!(r.json()["fields"]["published"], "2023-11-14T22:13:20.123Z");
    }
    let r = s.req(
        "DELETE",
        "/v2/collections/docs/documents/%40scope%2Fname",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.post(
        "/v2/collections/docs/search",
        &json!({"vector": vector(0), "limit": 10}).to_string(),
    );
    let j = r.json();
    let hits: Vec<&str> = j["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert!(!hits.contains(&"@scope/name"), "{hits:?}");
    assert_eq!(hits.len(), 3);
    // Delete by filter.
    let r = s.post(
        "/v2/collections/docs/documents/delete",
        r#"{"filter": {"published": 1700000000123}}"#,
    );
    assert_eq!(r.json()["deleted"], 3, "{}", r.text());
    assert_eq!(s.get("/v2/collections/docs").json()["documents"], 0);
}

#[test]
fn sigkill_during_ingest_keeps_every_acknowledged_document_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"), &[]);
    create(&s);
    let port = s.port;
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for b in 0.. {
                    let ids: Vec<u64> = (0..20).map(|j| w * 1_000_000 + b * 20 + j).collect();
                    let body =
                        json!({"documents": ids.iter().map(|i| doc(*i)).collect::<Vec<_>>()})
                            .to_string();
                    match try_request(
                        port,
                        "POST",
                        "/v2/collections/docs/documents",
                        &[],
                        body.as_bytes(),
                    ) {
                        Ok(r) if r.status == 200 => acked.lock().unwrap().extend(ids),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 600 {
        assert!(Instant::now() < deadline, "ingest made no progress");
        std::thread::yield_now();
    }
    s.kill9();
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    s.restart();
    let info = s.get("/v2/collections/docs").json();
    assert!(
        info["documents"].as_u64().unwrap() >= acked.len() as u64,
        "{info}"
    );
    for i in &acked {
        assert_eq!(
            top_id(s.port, &vector(*i)).as_deref(),
            Some(format!("d{i}").as_str()),
            "acknowledged d{i} not found by its own vector after restart"
        );
    }
}

fn graph_file(data: &std::path::Path) -> std::path::PathBuf {
    let dir = data.join("search");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

#[test]
fn the_graph_file_is_used_only_when_it_verifies_and_rebuilt_when_corrupt_or_missing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data, &[]);
    create(&s);
    let docs: Vec<Value> = (0..400).map(doc).collect();
    assert_eq!(
        s.post(
            "/v2/collections/docs/documents",
            &json!({"documents": docs}).to_string()
        )
        .status,
        200
    );
    // Every document is found by its own vector while the graph is still being linked (a rebuild
    // after restart) and again once linking has settled.
    let check_all = |s: &Server, stage: &str| {
        let check = |when: &str| {
            for i in (0..400).step_by(13) {
                assert_eq!(
                    top_id(s.port, &vector(i)).as_deref(),
                    Some(format!("d{i}").as_str()),
                    "{stage} ({when}): {}",
                    s.get("/v2/collections/docs").text()
                );
            }
        };
        check("right after start");
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.get("/v2/collections/docs").json()["indexes"]["v"]["pending"] != 0 {
            assert!(Instant::now() < deadline, "{stage}: linking did not finish");
            check("while linking");
        }
        check("after linking");
    };
    // A graceful stop writes the graphs; the next start verifies and uses them.
    assert!(s.term().success());
    let file = graph_file(&data);
    s.restart();
    let info = s.get("/v2/collections/docs").json();
    assert!(
        info["graph_source"]
            .as_str()
            .unwrap()
            .starts_with("graph file"),
        "{info}"
    );
    assert_eq!(info["documents"], 400);
    check_all(&s, "stage 1");
    // Written while the server was down, the file no longer matches the documents: a stale file is
    // verified node by node, so documents written after it are still found.
    assert_eq!(
        s.post(
            "/v2/collections/docs/documents",
            &json!({"documents": [doc(1000)]}).to_string()
        )
        .status,
        200
    );
    s.kill9();
    s.restart();
    assert_eq!(top_id(s.port, &vector(1000)).as_deref(), Some("d1000"));
    check_all(&s, "stage 2");
    // A flipped byte: refused with the file and offset, rebuilt from the documents.
    assert!(s.term().success());
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    s.restart();
    let info = s.get("/v2/collections/docs").json();
    let src = info["graph_source"].as_str().unwrap();
    assert!(
        src.starts_with("rebuilt: graph file refused") && src.contains("at byte"),
        "{info}"
    );
    check_all(&s, "stage 3");
    // Missing: rebuilt.
    assert!(s.term().success());
    std::fs::remove_file(&file).unwrap();
    s.restart();
    let info = s.get("/v2/collections/docs").json();
    assert_eq!(info["graph_source"], "rebuilt: no graph file", "{info}");
    assert_eq!(info["documents"], 401);
    check_all(&s, "stage 4");
}

#[test]
fn the_vector_memory_budget_refuses_writes_with_507_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Room for a few hundred 16-d vectors.
    let s = Server::start(
        &dir.path().join("data"),
        &[("KYRODB_VECTOR_BYTES_BUDGET", "60000")],
    );
    create(&s);
    let mut written = 0;
    let refused = loop {
        let docs: Vec<Value> = (written..written + 50).map(doc).collect();
        let r = s.post(
            "/v2/collections/docs/documents",
            &json!({"documents": docs}).to_string(),
        );
        match r.status {
            200 => written += 50,
            _ => break r,
        }
        assert!(written < 10_000, "the budget never applied");
    };
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (507, "memory_budget"),
        "{}",
        refused.text()
    );
    assert!(refused.text().contains("KYRODB_VECTOR_BYTES_BUDGET"));
    let info = s.get("/v2/collections/docs").json();
    assert_eq!(
        info["documents"], written,
        "a refused batch wrote something: {info}"
    );
    // Deleting makes room again.
    let ids: Vec<String> = (0..written).map(|i| format!("d{i}")).collect();
    assert_eq!(
        s.post(
            "/v2/collections/docs/documents/delete",
            &json!({"ids": ids}).to_string()
        )
        .status,
        200
    );
    let docs: Vec<Value> = (20_000..20_050).map(doc).collect();
    let r = s.post(
        "/v2/collections/docs/documents",
        &json!({"documents": docs}).to_string(),
    );
    assert_eq!(r.status, 200, "freed slots are reused: {}", r.text());
}

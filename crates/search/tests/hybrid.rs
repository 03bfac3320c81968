//! Hybrid search through a collection: the fused top k of the indexed components equals the
//! fusion of the exact component lists (vector lists scored exactly over every candidate, text by
//! BM25, which `text_index.rs` checks against the formula) in ≥ 99% of queries, with filters.

mod common;

use kyrodb_search::Cancel;
use kyrodb_search::{HybridRequest, Schema};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

fn vector(rng: &mut StdRng) -> Vec<f32> {
    (0..16).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

const WORDS: [&str; 12] = [
    "vector", "search", "fusion", "ranking", "graph", "index", "query", "learned", "neural",
    "database", "rust", "latency",
];

fn words(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn fused_top_k_equals_the_fusion_of_exact_component_lists() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = common::open(dir.path());
    let schema = Schema::from_json(json!({
        "vectors": {"v": {"dim": 16, "metric": "cosine"}},
        "text_fields": ["body"],
        "fields": {"group": "keyword", "n": "integer", "at": "datetime"},
        "timestamp_field": "at"
    }))
    .unwrap();
    let (c, _) = cs.create("h", schema).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let docs: Vec<Value> = (0..5000)
        .map(|i| {
            let n = rng.gen_range(2..12);
            json!({"id": format!("d{i:05}"), "vector": vector(&mut rng), "text": words(&mut rng, n),
                   "fields": {"group": (["a", "b", "c"][i % 3]), "n": i, "at": 1_700_000_000_000i64 + i as i64 * 1000}})
        })
        .collect();
    for chunk in docs.chunks(1000) {
        c.upsert(&c.parse_documents(&c.schema(), chunk).unwrap())
            .unwrap();
    }
    assert!(c.wait_until_indexed(std::time::Duration::from_secs(60)));
    let schema = c.schema();
    let mut agree = 0;
    let queries = 200;
    for q in 0..queries {
        let mut body = json!({"collection": "h",
            "vector_similarity": {"embedding": vector(&mut rng), "using": "v"},
            "text_search": words(&mut rng, 2),
            "fusion_strategy": (["rrf", "weighted", "dbsf"][q % 3]),
            "limit": 10});
        if q % 2 == 0 {
            body["metadata_filters"] = json!({"group": (["a", "b"][q % 4 / 2])});
        }
        if q % 5 == 0 {
            body["temporal_range"] = json!({"from": 1_700_000_000_000i64 + 1_000_000, "to": 1_700_000_000_000i64 + 4_000_000});
        }
        let req = HybridRequest::parse(&body, &schema, 0).unwrap();
        let got = serde_json::to_value(c.hybrid(&req, &Cancel::never()).unwrap()).unwrap();
        let mut exact = req.clone();
        exact.exact = true;
        let want = serde_json::to_value(c.hybrid(&exact, &Cancel::never()).unwrap()).unwrap();
        let ids = |v: &Value| -> Vec<String> {
            v["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(&want).len(), 10, "{body}");
        if q % 5 == 0 {
            for h in want["hits"].as_array().unwrap() {
                let n: u64 = h["id"].as_str().unwrap()[1..].parse().unwrap();
                assert!((1000..4000).contains(&n), "{h} outside the time range");
            }
        }
        if ids(&got) == ids(&want) {
            agree += 1;
        }
    }
    let rate = agree as f64 / queries as f64;
    eprintln!("agreement with exact fusion: {agree}/{queries}");
    assert!(rate >= 0.99, "agreement with exact fusion {rate}");
}

#[test]
fn datetime_shorthand_means_the_whole_period() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = common::open(dir.path());
    let schema = Schema::from_json(json!({
        "text_fields": ["body"], "fields": {"publish_date": "datetime"}, "timestamp_field": "publish_date"
    }))
    .unwrap();
    let (c, _) = cs.create("p", schema).unwrap();
    let docs = json!([
        {"id": "dec23", "text": "x", "fields": {"publish_date": "2023-12-31T23:59:59.999Z"}},
        {"id": "jan24", "text": "x", "fields": {"publish_date": "2024-01-01T00:00:00Z"}},
        {"id": "feb24", "text": "x", "fields": {"publish_date": "2024-02-29T12:00:00Z"}},
        {"id": "jan25", "text": "x", "fields": {"publish_date": "2025-01-01T00:00:00Z"}}
    ]);
    c.upsert(
        &c.parse_documents(&c.schema(), docs.as_array().unwrap())
            .unwrap(),
    )
    .unwrap();
    let schema = c.schema();
    let run = |f: Value| -> Vec<String> {
        let req = HybridRequest::parse(
            &json!({"collection": "p", "metadata_filters": f}),
            &schema,
            0,
        )
        .unwrap();
        serde_json::to_value(c.hybrid(&req, &Cancel::never()).unwrap()).unwrap()["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Newest first.
    assert_eq!(run(json!({"publish_date": "2024"})), ["feb24", "jan24"]);
    assert_eq!(run(json!({"publish_date": "2024-02"})), ["feb24"]);
    assert_eq!(run(json!({"publish_date": "2023-12-31"})), ["dec23"]);
    assert!(run(json!({"publish_date": "2022"})).is_empty());
}

#[test]
fn identical_vectors_are_all_found_and_tie_by_id() {
    // HNSW keeps few links inside a cluster of identical vectors; the collection adds the
    // duplicates of every hit back, so a search returns the exact answer: the smallest ids of the
    // cluster, all at the same score.
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = common::open(dir.path());
    let schema =
        Schema::from_json(json!({"vectors": {"v": {"dim": 16, "metric": "cosine"}}})).unwrap();
    let (c, _) = cs.create("dups", schema).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let same = vector(&mut rng);
    let docs: Vec<Value> = (0..6000)
        .map(|i| {
            let v = if i % 20 == 0 {
                same.clone()
            } else {
                vector(&mut rng)
            };
            json!({"id": format!("d{i:05}"), "vector": v})
        })
        .collect();
    for chunk in docs.chunks(1000) {
        c.upsert(&c.parse_documents(&c.schema(), chunk).unwrap())
            .unwrap();
    }
    assert!(c.wait_until_indexed(std::time::Duration::from_secs(60)));
    let req = kyrodb_search::SearchRequest::parse(
        &json!({"vector": same, "limit": 100, "ef": 100}),
        &c.schema(),
    )
    .unwrap();
    let out = c.search(&req, &Cancel::never()).unwrap();
    let want: Vec<String> = (0..6000)
        .step_by(20)
        .take(100)
        .map(|i| format!("d{i:05}"))
        .collect();
    let got: Vec<String> = out.hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(got, want);
    // Deleting duplicates removes them from the groups too.
    c.delete_ids(&want[..50]).unwrap();
    let out = c.search(&req, &Cancel::never()).unwrap();
    assert_eq!(
        out.hits.first().map(|h| h.id.as_str()),
        Some(want[50].as_str())
    );
    assert_eq!(out.hits.len(), 100);
    assert!(out.hits.iter().take(250 - 50).all(|h| h.score > 0.999));
}

/// Every component of one hybrid query reads one view of the collection: a document written or
/// deleted while the query runs is in every list that would hold it, or in none. A writer toggles
/// a document that tops both lists (its vector is the query; it alone has the word) while
/// queries run; each answer listing it must show it in both components.
#[test]
fn a_concurrent_write_is_in_every_component_list_or_in_none() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = common::open(dir.path());
    let schema = Schema::from_json(json!({
        "vectors": {"v": {"dim": 16, "metric": "cosine"}},
        "text_fields": ["body"]
    }))
    .unwrap();
    let (c, _) = cs.create("view", schema).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let docs: Vec<Value> = (0..300)
        .map(|i| json!({"id": format!("d{i:03}"), "vector": vector(&mut rng), "text": words(&mut rng, 6)}))
        .collect();
    c.upsert(&c.parse_documents(&c.schema(), &docs).unwrap())
        .unwrap();
    let q = vector(&mut rng);
    let twin = c
        .parse_documents(
            &c.schema(),
            &[json!({"id": "x", "vector": q.clone(), "text": "needle"})],
        )
        .unwrap();
    let req = HybridRequest::parse(
        &json!({"collection": "view", "vector_similarity": {"embedding": q, "using": "v"},
                "text_search": "needle vector", "candidates": 20, "limit": 20,
                "exact": true, "explain": true}),
        &c.schema(),
        0,
    )
    .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut listed, mut split) = (0, Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                c.upsert(&twin).unwrap();
                c.delete_ids(&["x".to_string()]).unwrap();
            }
        });
        for _ in 0..400 {
            let out = serde_json::to_value(c.hybrid(&req, &Cancel::never()).unwrap()).unwrap();
            if let Some(h) = out["hits"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["id"] == "x")
            {
                listed += 1;
                let parts = h["components"].as_object().unwrap();
                if !(parts.contains_key("vector:v") && parts.contains_key("text")) {
                    split.push(h.clone());
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(listed > 0, "no query ran while x was present");
    assert!(
        split.is_empty(),
        "{} of {listed} answers listed x in one component only: {:?}",
        split.len(),
        split.first()
    );
}

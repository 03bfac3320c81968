//! Learned ranking from feedback: when relevance depends on a document feature RRF cannot see
//! (a metadata value), the model trained from feedback beats RRF on nDCG@10 over new queries;
//! when the feedback is noise, it does not lose to RRF; examples survive a restart and the model
//! is retrained from them.

mod common;

use kyrodb_search::Cancel;
use std::{collections::HashSet, time::Duration};

use kyrodb_search::{rank::Feedback, Collection, HybridRequest, Schema};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::{json, Value};

const WORDS: [&str; 10] = [
    "vector", "search", "fusion", "ranking", "graph", "index", "query", "neural", "database",
    "latency",
];

fn vector(rng: &mut StdRng) -> Vec<f32> {
    (0..16).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn words(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn schema() -> Schema {
    Schema::from_json(json!({
        "vectors": {"v": {"dim": 16, "metric": "cosine"}},
        "text_fields": ["body"],
        "fields": {"quality": "float", "at": "datetime"},
        "timestamp_field": "at"
    }))
    .unwrap()
}

/// 3,000 documents; `quality` is uniform in [0, 1) and independent of vectors and text.
fn load(c: &Collection, rng: &mut StdRng) -> std::collections::HashMap<String, f64> {
    let mut quality = std::collections::HashMap::new();
    let docs: Vec<Value> = (0..3000)
        .map(|i| {
            let q: f64 = rng.gen_range(0.0..1.0);
            let id = format!("d{i:04}");
            quality.insert(id.clone(), q);
            let n = rng.gen_range(3..10);
            json!({"id": id, "vector": vector(rng), "text": words(rng, n),
                   "fields": {"quality": q, "at": 1_700_000_000_000i64 + i as i64 * 60_000}})
        })
        .collect();
    for chunk in docs.chunks(1000) {
        c.upsert(&c.parse_documents(&c.schema(), chunk).unwrap())
            .unwrap();
    }
    assert!(c.wait_until_indexed(Duration::from_secs(60)));
    quality
}

fn query(rng: &mut StdRng, fusion: &str) -> Value {
    json!({"vector_similarity": {"embedding": vector(rng), "using": "v"},
           "text_search": words(rng, 2), "fusion_strategy": fusion, "candidates": 50, "limit": 10})
}

fn run(c: &Collection, body: &Value, limit: usize) -> Vec<String> {
    let mut b = body.clone();
    b["limit"] = json!(limit);
    let req = HybridRequest::parse(&b, &c.schema(), 1_800_000_000_000).unwrap();
    serde_json::to_value(c.hybrid(&req, &Cancel::never()).unwrap()).unwrap()["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every candidate of `body`: the union of its component lists (each cut at `candidates`).
fn candidates(c: &Collection, body: &Value) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for part in ["vector_similarity", "text_search"] {
        let mut b = json!({"candidates": body["candidates"], "limit": body["candidates"]});
        b[part] = body[part].clone();
        for id in run(c, &b, 50) {
            if !all.contains(&id) {
                all.push(id);
            }
        }
    }
    all
}

fn feedback(c: &Collection, body: &Value, relevant: &[String]) -> Value {
    let req = HybridRequest::parse(body, &c.schema(), 1_800_000_000_000).unwrap();
    let fb = Feedback::parse(&json!({"query": body, "relevant": relevant})).unwrap();
    serde_json::to_value(c.feedback(&req, &fb, &Cancel::never()).unwrap()).unwrap()
}

/// nDCG@10 of `ranked` with binary relevance `rel`, computed here from its definition.
fn ndcg(ranked: &[String], rel: &HashSet<String>) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, id)| rel.contains(*id))
        .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
        .sum();
    let idcg: f64 = (0..rel.len().min(10))
        .map(|i| 1.0 / ((i + 2) as f64).log2())
        .sum();
    if idcg == 0.0 {
        1.0
    } else {
        dcg / idcg
    }
}

/// The relevant ids of a query, from its candidates and RRF's top 10.
type Truth<'a> = dyn Fn(&[String], &[String]) -> HashSet<String> + 'a;

/// Mean nDCG@10 of learned ranking and of RRF over `n` new queries, relevance by `truth` over
/// each query's fused candidates.
fn compare(c: &Collection, rng: &mut StdRng, n: usize, truth: &Truth<'_>) -> (f64, f64) {
    let (mut learned, mut rrf) = (0.0, 0.0);
    for _ in 0..n {
        let q = query(rng, "rrf");
        let rrf_top = run(c, &q, 10);
        let rel = truth(&candidates(c, &q), &rrf_top);
        let mut lq = q.clone();
        lq["fusion_strategy"] = json!("learned_ranking");
        learned += ndcg(&run(c, &lq, 10), &rel);
        rrf += ndcg(&rrf_top, &rel);
    }
    (learned / n as f64, rrf / n as f64)
}

#[test]
fn learned_ranking_beats_rrf_when_relevance_follows_a_feature_rrf_cannot_see() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = common::open(dir.path());
    let (c, _) = cs.create("l", schema()).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let quality = load(&c, &mut rng);
    // Before any feedback: RRF, and explain says why.
    let mut q = query(&mut rng, "learned_ranking");
    q["explain"] = json!(true);
    let req = HybridRequest::parse(&q, &c.schema(), 1_800_000_000_000).unwrap();
    let out = serde_json::to_value(c.hybrid(&req, &Cancel::never()).unwrap()).unwrap();
    let fusion = out["plan"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "fusion")
        .unwrap()
        .clone();
    assert_eq!(fusion["strategy"], "rrf", "{fusion}");
    assert!(fusion["fallback"]
        .as_str()
        .unwrap()
        .contains("no model trained yet"));
    assert_eq!(
        serde_json::to_value(c.info()).unwrap()["learned_ranking"]["serving"],
        "rrf"
    );

    let good = |cands: &[String], _: &[String]| -> HashSet<String> {
        cands
            .iter()
            .filter(|id| quality[*id] > 0.8)
            .cloned()
            .collect()
    };
    for _ in 0..60 {
        let q = query(&mut rng, "rrf");
        let rel: Vec<String> = good(&candidates(&c, &q), &[]).into_iter().collect();
        if rel.is_empty() {
            continue;
        }
        let r = feedback(&c, &q, &rel);
        assert_eq!(r["relevant"], rel.len(), "{r}");
    }
    assert!(c.wait_ranker(Duration::from_secs(60)));
    let info = serde_json::to_value(c.info()).unwrap()["learned_ranking"].clone();
    assert_eq!(info["serving"], "learned", "{info}");
    assert!(
        info["weights"]["field:quality"].as_f64().unwrap() > 0.0,
        "{info}"
    );
    let (learned, rrf) = compare(&c, &mut rng, 40, &good);
    eprintln!(
        "feature: learned nDCG@10 {learned:.3}, rrf {rrf:.3}; {}",
        info["decision"]
    );
    assert!(
        learned > rrf + 0.3 && learned > 0.8,
        "learned nDCG@10 {learned:.3} vs rrf {rrf:.3}"
    );

    // The examples are durable: after a restart the model is retrained from them.
    let examples = info["examples"].as_u64().unwrap();
    drop(c);
    cs.close();
    drop(cs);
    drop(_db);
    let (_db, cs) = common::open(dir.path());
    let c = cs.get("l").unwrap();
    assert_eq!(
        serde_json::to_value(c.info()).unwrap()["learned_ranking"]["examples"],
        examples
    );
    assert!(c.wait_ranker(Duration::from_secs(60)));
    assert_eq!(
        serde_json::to_value(c.info()).unwrap()["learned_ranking"]["serving"],
        "learned"
    );
    let (learned2, rrf2) = compare(&c, &mut rng, 20, &good);
    assert!(
        learned2 > rrf2 + 0.3,
        "after restart: {learned2:.3} vs {rrf2:.3}"
    );

    // Ids that are not documents are ignored and listed; only unknown ids is a refusal.
    let q = query(&mut rng, "rrf");
    let req = HybridRequest::parse(&q, &c.schema(), 1_800_000_000_000).unwrap();
    let fb = Feedback::parse(&json!({"query": q, "relevant": ["d0001", "nope"]})).unwrap();
    let r = serde_json::to_value(c.feedback(&req, &fb, &Cancel::never()).unwrap()).unwrap();
    assert_eq!(r["ignored_ids"], json!(["nope"]));
    let fb = Feedback::parse(&json!({"query": q, "relevant": ["nope"]})).unwrap();
    assert!(c.feedback(&req, &fb, &Cancel::never()).is_err());
    // A dropped collection's feedback goes with it.
    cs.drop_collection("l").unwrap();
    let (c, _) = cs.create("l", schema()).unwrap();
    assert_eq!(
        serde_json::to_value(c.info()).unwrap()["learned_ranking"]["examples"],
        0
    );
}

#[test]
fn noise_feedback_does_not_lose_to_rrf() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = common::open(dir.path());
    let (c, _) = cs.create("n", schema()).unwrap();
    let mut rng = StdRng::seed_from_u64(12);
    load(&c, &mut rng);
    for _ in 0..80 {
        let q = query(&mut rng, "rrf");
        let cands = candidates(&c, &q);
        let rel: Vec<String> = cands.choose_multiple(&mut rng, 5).cloned().collect();
        feedback(&c, &q, &rel);
    }
    assert!(c.wait_ranker(Duration::from_secs(60)));
    let info = serde_json::to_value(c.info()).unwrap()["learned_ranking"].clone();
    assert!(info["last_training"]["usable_examples"].as_u64().unwrap() >= 20);
    // Truth that RRF gets right (its own top 5): a learned ranking fitted to noise would lose.
    let rrf_top =
        |_: &[String], top: &[String]| -> HashSet<String> { top.iter().take(5).cloned().collect() };
    let (learned, rrf) = compare(&c, &mut rng, 40, &rrf_top);
    eprintln!(
        "noise: learned nDCG@10 {learned:.3}, rrf {rrf:.3}; {}",
        info["decision"]
    );
    assert!(
        learned >= rrf - 0.01,
        "learned {learned:.3} lost to rrf {rrf:.3} on noise feedback ({info})"
    );
}

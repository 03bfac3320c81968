//! `POST /v2/search/hybrid` over real HTTP against the real binary: text, vector, filters and time
//! in one request; each component alone; fusion strategies; hostile input is a 400 naming the
//! problem; a document is found by every component right after its write and never after delete.

mod common;

use common::Server;
use serde_json::{json, Value};

const DAY: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn setup(s: &Server) -> i64 {
    let r = s.req(
        "PUT",
        "/v2/collections/news",
        &[],
        json!({"vectors": {"text": {"dim": 8, "metric": "cosine"}, "image": {"dim": 8, "metric": "cosine"}},
               "text_fields": ["title", "body"],
               "fields": {"author_expertise": "keyword", "rank": "integer", "published": "datetime"},
               "timestamp_field": "published"})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let now = now_ms();
    let topics = [
        "machine learning optimization",
        "database indexing",
        "gardening tips",
        "neural networks",
    ];
    let docs: Vec<Value> = (0..400u64)
        .map(|i| {
            json!({"id": format!("n{i:03}"),
                   "text": {"title": format!("{} part {i}", topics[(i % 4) as usize]),
                            "body": format!("notes about {} number {i}", topics[((i / 4) % 4) as usize])},
                   "vectors": {"text": common::vector8(i), "image": common::vector8(i + 10_000)},
                   "fields": {"author_expertise": if i % 3 == 0 { "senior" } else { "junior" },
                              "rank": i,
                              // one document per 6 hours back from now; n000 is 1 minute old
                              "published": now - 60_000 - (i as i64) * DAY / 4}})
        })
        .collect();
    let r = s.post(
        "/v2/collections/news/documents",
        &json!({"documents": docs}).to_string(),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    now
}

fn hybrid(s: &Server, body: Value) -> Value {
    let r = s.post("/v2/search/hybrid", &body.to_string());
    assert_eq!(r.status, 200, "{body}: {}", r.text());
    r.json()
}

fn ids(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_request_combines_vector_text_filters_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    let t0 = setup(&s);

    // The seed's shape: every component at once, explained.
    let out = hybrid(
        &s,
        json!({"collection": "news",
               "vector_similarity": {"embedding": common::vector8(9), "using": "text"},
               "text_search": "machine learning optimization",
               "metadata_filters": {"author_expertise": "senior"},
               "temporal_range": {"last_7_days": true},
               "fusion_strategy": "rrf", "limit": 10, "explain": true}),
    );
    let hits = out["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 10, "{out}");
    for h in hits {
        let n: i64 = h["id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(h["fields"]["author_expertise"], "senior", "{h}");
        assert!(n < 28, "{h} is older than 7 days"); // 4 per day
        assert!(h["components"].is_object(), "{h}");
    }
    // n009 is the query vector itself (senior, 54 hours old): rank 1 of the vector list.
    let n9 = hits
        .iter()
        .find(|h| h["id"] == "n009")
        .expect("n009 among the hits");
    assert_eq!(n9["components"]["vector:text"]["rank"], 1, "{out}");
    let stages = out["plan"]["stages"].as_array().unwrap();
    assert!(
        stages
            .iter()
            .any(|s| s["component"] == "text" && s["kind"] == "bm25"),
        "{out}"
    );
    assert!(
        stages
            .iter()
            .any(|s| s["stage"] == "fusion" && s["strategy"] == "rrf"),
        "{out}"
    );
    assert!(out["plan"]["time_range"]["from"].is_string(), "{out}");
    // The time range is answered by the learned time index (delta + learned part).
    let ti = &out["plan"]["time_range"]["index"];
    assert!(
        ti["index"].as_str().unwrap().contains("kyrodb-rmi"),
        "{out}"
    );
    assert_eq!(
        ti["base_keys"].as_u64().unwrap() + ti["delta_keys"].as_u64().unwrap(),
        400,
        "{out}"
    );

    // RRF by hand over the explained components: score = Σ 1/(60 + rank).
    for h in hits {
        let want: f64 = h["components"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| 1.0 / (60.0 + c["rank"].as_f64().unwrap()))
            .sum();
        assert!((h["score"].as_f64().unwrap() - want).abs() < 1e-9, "{h}");
    }

    // Text alone: only documents containing a query word; phrases must match.
    let out = hybrid(
        &s,
        json!({"collection": "news", "text_search": "\"gardening tips\"", "limit": 1000}),
    );
    let got = ids(&out);
    assert_eq!(got.len(), 100 + 100 - 25, "{got:?}"); // title or body holds the phrase
                                                      // Per-field boosts through the object form.
    let out = hybrid(
        &s,
        json!({"collection": "news", "text_search": {"query": "gardening", "fields": {"title": 1.0}}, "limit": 1000}),
    );
    assert_eq!(ids(&out).len(), 100);

    // Multi-vector: two named vectors, each its own list, weighted; n007 is first in both.
    let out = hybrid(
        &s,
        json!({"collection": "news",
               "vector_similarity": [{"embedding": common::vector8(7), "using": "text", "weight": 1.0},
                                     {"embedding": common::vector8(10_007), "using": "image", "weight": 3.0}],
               "limit": 3, "explain": true}),
    );
    assert_eq!(ids(&out)[0], "n007", "{out}");
    let top = &out["hits"][0];
    assert_eq!(top["components"]["vector:text"]["rank"], 1, "{out}");
    assert_eq!(top["components"]["vector:image"]["rank"], 1, "{out}");
    assert!(
        (top["score"].as_f64().unwrap() - 4.0 / 61.0).abs() < 1e-9,
        "{out}"
    );

    // Threshold removes documents from the vector list before fusion.
    let out = hybrid(
        &s,
        json!({"collection": "news", "vector_similarity": {"embedding": common::vector8(5), "using": "text", "threshold": 0.999}}),
    );
    assert_eq!(ids(&out), ["n005"]);

    // Only filters and time: newest first.
    let out = hybrid(
        &s,
        json!({"collection": "news", "metadata_filters": {"author_expertise": "senior"}, "temporal_range": {"last": "2d"}}),
    );
    assert_eq!(ids(&out), ["n000", "n003", "n006"]);
    // Absolute bounds: inclusive from, exclusive to, either open; empty range → no hits.
    let out = hybrid(
        &s,
        json!({"collection": "news", "temporal_range": {"to": t0 - 60_000 - 396 * DAY / 4 + 1}, "limit": 100}),
    );
    assert_eq!(ids(&out), ["n396", "n397", "n398", "n399"]);
    let out = hybrid(
        &s,
        json!({"collection": "news", "temporal_range": {"from": t0, "to": t0 - DAY}}),
    );
    assert!(ids(&out).is_empty());

    // Weighted and DBSF fusions answer too, and agree with RRF on the best match here.
    for f in ["weighted", "dbsf"] {
        let out = hybrid(
            &s,
            json!({"collection": "news", "vector_similarity": {"embedding": common::vector8(9), "using": "text"},
                                    "text_search": "database indexing", "fusion_strategy": f}),
        );
        assert_eq!(ids(&out).len(), 10, "{f}: {out}");
    }

    // Found at once after a write, never after delete.
    let r = s.post(
        "/v2/collections/news/documents",
        &json!({"documents": [{"id": "fresh", "text": {"title": "zeppelin maintenance"}, "vectors": {"text": common::vector8(77_777)},
                               "fields": {"author_expertise": "senior", "published": now_ms()}}]}).to_string(),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    let q = json!({"collection": "news", "vector_similarity": {"embedding": common::vector8(77_777), "using": "text"},
                   "text_search": "zeppelin", "metadata_filters": {"author_expertise": "senior"},
                   "temporal_range": {"last": "1h"}, "limit": 1});
    assert_eq!(ids(&hybrid(&s, q.clone())), ["fresh"]);
    let r = s.req("DELETE", "/v2/collections/news/documents/fresh", &[], b"");
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    assert_ne!(
        ids(&hybrid(&s, q)).first().map(String::as_str),
        Some("fresh")
    );
}

#[test]
fn the_get_form_takes_q_filters_and_auto_rank() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    setup(&s);
    let get = |qs: &str| {
        let r = s.get(&format!("/v2/search?{qs}"));
        assert_eq!(r.status, 200, "{qs}: {}", r.text());
        r.json()
    };
    let out = get("collection=news&q=gardening+tips&author_expertise=senior&limit=5");
    assert_eq!(ids(&out).len(), 5, "{out}");
    for h in out["hits"].as_array().unwrap() {
        assert_eq!(h["fields"]["author_expertise"], "senior", "{h}");
    }
    // The same as the POST form with the filter.
    let post = hybrid(
        &s,
        json!({"collection": "news", "text_search": "gardening tips",
               "metadata_filters": {"author_expertise": "senior"}, "limit": 5}),
    );
    assert_eq!(ids(&out), ids(&post));
    // auto_rank: learned ranking falls back to RRF while no model is trained — same hits.
    assert_eq!(
        ids(&get(
            "collection=news&q=gardening+tips&author_expertise=senior&limit=5&auto_rank=true"
        )),
        ids(&post)
    );
    let r = s.post(
        "/v2/search/hybrid",
        &json!({"collection": "news", "text_search": "gardening", "fusion_strategy": "learned_ranking", "explain": true}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("no model trained yet"), "{}", r.text());
    // Unknown parameters are filters on unknown fields: 400; a bad rank value too.
    for (qs, needle) in [
        (
            "collection=news&q=x&user_segment=enterprise",
            "user_segment",
        ),
        ("collection=news&q=x&rank=high", "rank"),
        ("collection=news&q=x&auto_rank=maybe", "auto_rank"),
        ("collection=news&q=x&vector_sim=close", "vector_sim"),
        ("collection=news", "missing"),
    ] {
        let r = s.get(&format!("/v2/search?{qs}"));
        assert_eq!(r.status, 400, "{qs}: {}", r.text());
        assert!(r.text().contains(needle), "{qs}: {}", r.text());
    }
}

#[test]
fn bad_hybrid_requests_are_400_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    setup(&s);
    let cases = [
        (json!({"collection": "news"}), "empty query"),
        (
            json!({"collection": "news", "text_search": "x", "bogus": 1}),
            "bogus",
        ),
        (
            json!({"collection": "news", "metadata_filters": {"nope": "x"}}),
            "nope",
        ),
        (
            json!({"collection": "news", "metadata_filters": {"rank": "high"}}),
            "rank",
        ),
        (
            json!({"collection": "news", "vector_similarity": {"embedding": [1.0, 2.0], "using": "text"}}),
            "dimension",
        ),
        (
            json!({"collection": "news", "vector_similarity": {"embedding": common::vector8(1), "using": "sound"}}),
            "sound",
        ),
        (
            json!({"collection": "news", "text_search": "x", "fusion_strategy": "magic"}),
            "magic",
        ),
        (
            json!({"collection": "news", "text_search": "   "}),
            "empty text query",
        ),
        (
            json!({"collection": "news", "text_search": "the of and"}),
            "no searchable words",
        ),
        (
            json!({"collection": "news", "text_search": {"query": "x", "fields": {"summary": 1.0}}}),
            "summary",
        ),
        (
            json!({"collection": "news", "temporal_range": {"last": "5 parsecs"}}),
            "duration",
        ),
        (
            json!({"collection": "news", "temporal_range": {"from": "yesterday"}}),
            "RFC 3339",
        ),
        (
            json!({"collection": "news", "text_search": "x", "limit": 50, "candidates": 10}),
            "candidates",
        ),
        (json!({"text_search": "x"}), "collection"),
        (json!([1, 2]), "JSON object"),
    ];
    for (body, needle) in cases {
        let r = s.post("/v2/search/hybrid", &body.to_string());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            r.text().contains(needle),
            "{body}: {} does not mention {needle:?}",
            r.text()
        );
    }
    let r = s.post(
        "/v2/search/hybrid",
        &json!({"collection": "nowhere", "text_search": "x"}).to_string(),
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn feedback_trains_learned_ranking_durably_and_bad_feedback_is_400() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"), &[]);
    setup(&s);
    let topics = [
        "machine learning",
        "database indexing",
        "gardening",
        "neural",
    ];
    // Relevance follows the `rank` field (higher is better), which RRF cannot see.
    for i in 0..30u64 {
        let q = json!({"vector_similarity": {"embedding": common::vector8(i * 7 + 3), "using": "text"},
                       "text_search": topics[(i % 4) as usize], "candidates": 60, "limit": 60});
        let mut body = q.clone();
        body["collection"] = json!("news");
        let hits = hybrid(&s, body);
        let mut listed: Vec<(u64, String)> = hits["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["fields"]["rank"].as_u64().unwrap(),
                    h["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        listed.sort();
        let relevant: Vec<&String> = listed.iter().rev().take(5).map(|x| &x.1).collect();
        let shown: Vec<&String> = listed.iter().map(|x| &x.1).collect();
        let r = s.post(
            "/v2/collections/news/feedback",
            &json!({"query": q, "relevant": relevant, "shown": shown}).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["relevant"], 5, "{}", r.text());
    }
    let info = |s: &Server| s.get("/v2/collections/news").json()["learned_ranking"].clone();
    let trained = |s: &Server| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let i = info(s);
            if i["training_due"] == false {
                return i;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "training never finished: {i}"
            );
            std::thread::yield_now();
        }
    };
    let i = trained(&s);
    assert_eq!(i["examples"], 30, "{i}");
    assert_eq!(i["serving"], "learned", "{i}");
    assert!(i["weights"]["field:rank"].as_f64().unwrap() > 0.0, "{i}");
    let q = json!({"collection": "news", "text_search": "gardening", "candidates": 100,
                   "fusion_strategy": "learned_ranking", "limit": 10, "explain": true});
    let out = hybrid(&s, q.clone());
    let ranks: Vec<u64> = out["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["fields"]["rank"].as_u64().unwrap())
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] >= w[1]),
        "learned order follows rank: {ranks:?}"
    );
    assert!(out.to_string().contains("learned model"), "{out}");
    // kill -9: the acknowledged examples are still there and the model is retrained from them.
    s.kill9();
    s.restart();
    let i = trained(&s);
    assert_eq!(i["examples"], 30, "{i}");
    assert_eq!(i["serving"], "learned", "{i}");
    assert_eq!(ids(&hybrid(&s, q)), ids(&out));

    let q = json!({"text_search": "gardening"});
    for (body, needle) in [
        (json!({"query": q}), "no relevant document"),
        (json!({"query": q, "relevant": "n001"}), "array"),
        (json!({"query": q, "relevant": [1]}), "relevant[0]"),
        (json!({"query": q, "labels": {"n001": 11}}), "grade"),
        (
            json!({"query": q, "relevant": ["n001"], "labels": {"n001": 2}}),
            "once",
        ),
        (json!({"relevant": ["n001"]}), "query"),
        (json!({"query": 5, "relevant": ["n001"]}), "query"),
        (
            json!({"query": q, "relevant": ["n001"], "clicks": 3}),
            "clicks",
        ),
        (
            json!({"query": q, "relevant": ["ghost"]}),
            "none of the relevant ids",
        ),
        (
            json!({"query": {"text_search": "x", "fusion_strategy": "magic"}, "relevant": ["n001"]}),
            "magic",
        ),
        (json!([1]), "JSON object"),
    ] {
        let r = s.post("/v2/collections/news/feedback", &body.to_string());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            r.text().contains(needle),
            "{body}: {} lacks {needle:?}",
            r.text()
        );
    }
    assert_eq!(info(&s)["examples"], 30, "refused feedback wrote nothing");
    let r = s.post(
        "/v2/collections/nowhere/feedback",
        &json!({"query": "x", "relevant": ["a"]}).to_string(),
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

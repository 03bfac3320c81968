//! Guards against requests that would exhaust or poison a node (issue 22, items 3a and 5):
//! a cancelled search stops — vector, text, hybrid and feedback alike, whether the token was fired
//! before or fires in the middle of the loops — and vectors whose squared norm is not finite and
//! positive in f32 are refused (nothing written), so no score is ever ±∞ or NaN.

mod common;

use std::time::{Duration, Instant};

use common::open;
use kyrodb_search::{
    rank::Feedback, Cancel, Collection, Document, Error, HybridRequest, Schema, SearchRequest,
};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde_json::{json, Value};

const NOW_MS: i64 = 1_800_000_000_000;

fn schema() -> Schema {
    Schema::from_json(json!({
        "vectors": {"v": {"dim": 8, "metric": "cosine"}, "d": {"dim": 2, "metric": "dot"}},
        "text_fields": ["body"],
        "fields": {"rank": "integer", "published": "datetime"},
        "timestamp_field": "published"
    }))
    .unwrap()
}

/// 3,000 documents with random vectors and short texts, plus one long text of 85,000 words
/// ("ab ab ab …", the only document holding "ab").
fn filled(c: &Collection) {
    let mut rng = SmallRng::seed_from_u64(3);
    let docs: Vec<Value> = (0..3000)
        .map(|i| {
            let v: Vec<f32> = (0..8).map(|_| rng.gen_range(-1.0..1.0)).collect();
            json!({"id": format!("doc-{i}"), "text": format!("body {i} cd"),
                   "vectors": {"v": v, "d": [rng.gen_range(-1.0..1.0), 1.0]},
                   "fields": {"rank": i}, "timestamp": NOW_MS - i as i64})
        })
        .collect();
    for chunk in docs.chunks(500) {
        c.upsert(&c.parse_documents(&c.schema(), chunk).unwrap())
            .unwrap();
    }
    let long = json!({"id": "long", "text": "ab ".repeat(85_000), "fields": {"rank": -1}});
    c.upsert(&c.parse_documents(&c.schema(), &[long]).unwrap())
        .unwrap();
}

fn phrase_1360() -> String {
    format!("\"{}\"", "ab ".repeat(1360).trim_end())
}

fn vector_request(c: &Collection, extra: Value) -> SearchRequest {
    let mut body = json!({"vector": [0.3, -0.2, 0.5, 0.1, 0.9, -0.4, 0.2, 0.7], "using": "v",
                          "limit": 10, "ef": 500});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    SearchRequest::parse(&body, &c.schema()).unwrap()
}

fn hybrid_request(c: &Collection, body: Value) -> HybridRequest {
    HybridRequest::parse(&body, &c.schema(), NOW_MS).unwrap()
}

/// Every search the crate runs for a request, with `cancel`; each result mapped to Ok(()) / Err.
fn every_search(c: &Collection, cancel: &Cancel) -> Vec<(&'static str, Result<(), Error>)> {
    let vector = vector_request(c, json!({}));
    let exact = vector_request(c, json!({"exact": true}));
    let filtered = vector_request(c, json!({"filter": {"key": "rank", "range": {"gte": 100}}}));
    let hybrid = hybrid_request(
        c,
        json!({"vector_similarity": {"embedding": [0.3, -0.2, 0.5, 0.1, 0.9, -0.4, 0.2, 0.7], "using": "v"},
               "text_search": phrase_1360(), "candidates": 200}),
    );
    let newest = hybrid_request(
        c,
        json!({"metadata_filters": {"key": "rank", "range": {"gte": 0}}}),
    );
    let fb_body = json!({"text_search": "body cd", "candidates": 50});
    let fb_req = hybrid_request(c, fb_body.clone());
    let fb = Feedback::parse(&json!({"query": fb_body, "relevant": ["doc-1"]})).unwrap();
    vec![
        ("vector (graph)", c.search(&vector, cancel).map(|_| ())),
        ("vector (exact)", c.search(&exact, cancel).map(|_| ())),
        ("vector (filtered)", c.search(&filtered, cancel).map(|_| ())),
        (
            "text (phrase)",
            c.text_search(&phrase_1360(), &[], None, 10, false, cancel)
                .map(|_| ()),
        ),
        ("hybrid", c.hybrid(&hybrid, cancel).map(|_| ())),
        (
            "hybrid (newest first)",
            c.hybrid(&newest, cancel).map(|_| ()),
        ),
        ("feedback", c.feedback(&fb_req, &fb, cancel).map(|_| ())),
    ]
}

#[test]
fn cancelled_searches_stop_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = open(dir.path());
    let (c, _) = cs.create("guarded", schema()).unwrap();
    filled(&c);
    let examples =
        || serde_json::to_value(c.info()).unwrap()["learned_ranking"]["examples"].clone();
    let before = examples();

    // A token fired before the search, and one whose deadline has passed.
    let fired = Cancel::new();
    fired.cancel();
    let expired = Cancel::new().with_deadline(Instant::now());
    for token in [&fired, &expired] {
        for (what, r) in every_search(&c, token) {
            assert!(matches!(r, Err(Error::Cancelled)), "{what}: {r:?}");
        }
    }
    // Fired in the middle of the loops: a token that fires after it was looked at once (the
    // check on entry) stops each search at its first look from inside a loop.
    for (what, r) in every_search(&c, &Cancel::after_checks(1)) {
        assert!(matches!(r, Err(Error::Cancelled)), "{what}: {r:?}");
    }
    // The phrase over the long document (one posting, so the scoring loops look at the token
    // once at most): still cancelled when the token survives a few looks, so the looks come from
    // inside the phrase matching, not only before and after it.
    for n in [2, 3, 5] {
        let r = c.text_search(
            &phrase_1360(),
            &[],
            None,
            10,
            false,
            &Cancel::after_checks(n),
        );
        assert!(
            matches!(r, Err(Error::Cancelled)),
            "after {n} checks: {r:?}"
        );
    }
    // A cancelled feedback wrote nothing.
    assert_eq!(examples(), before);

    // A token that does not fire (and a distant deadline) changes nothing.
    let live = Cancel::new().with_deadline(Instant::now() + Duration::from_secs(3600));
    for ((what, a), (_, b)) in every_search(&c, &live)
        .into_iter()
        .zip(every_search(&c, &Cancel::never()))
    {
        assert!(a.is_ok() && b.is_ok(), "{what}: {a:?} {b:?}");
    }
    let (hits, _) = c
        .text_search(&phrase_1360(), &[], None, 10, false, &live)
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "long");
}

fn refusal(r: Result<impl std::fmt::Debug, Error>) -> (String, String) {
    match r {
        Err(Error::Invalid { code, path, .. }) => (code.to_owned(), path),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn vectors_whose_squared_norm_overflows_or_underflows_are_refused_and_scores_stay_finite() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = open(dir.path());
    let (c, _) = cs.create("norms", schema()).unwrap();
    let s = c.schema();
    let good = json!({"id": "good", "vectors": {"v": [1, 0, 0, 0, 0, 0, 0, 0], "d": [1, 0]}});
    let with = |v: Value, d: Value| json!({"id": "bad", "vectors": {"v": v, "d": d}});
    let huge = json!([3.4e38, 3.4e38, 3.4e38, 3.4e38, 3.4e38, 3.4e38, 3.4e38, 3.4e38]);
    let tiny = json!([1e-30, 1e-30, 0, 0, 0, 0, 0, 0]);
    let cases = [
        (with(huge.clone(), json!([1, 0])), "documents[1].vectors.v"),
        (with(tiny.clone(), json!([1, 0])), "documents[1].vectors.v"),
        (
            with(json!([0, 0, 0, 0, 0, 0, 0, 0]), json!([1, 0])),
            "documents[1].vectors.v",
        ),
        // dot: the squared norm must stay within 2^124 so products cannot overflow.
        (
            with(json!([1, 0, 0, 0, 0, 0, 0, 0]), json!([3.4e38, 0])),
            "documents[1].vectors.d",
        ),
        (
            with(json!([1, 0, 0, 0, 0, 0, 0, 0]), json!([5e18, 0])),
            "documents[1].vectors.d",
        ),
    ];
    for (bad, path) in cases {
        let r = c.parse_documents(&s, &[good.clone(), bad.clone()]);
        assert_eq!(refusal(r), ("invalid_vector".into(), path.into()), "{bad}");
    }
    assert_eq!(c.count(), 0, "a refused batch writes nothing");
    // Within the bounds: dot vectors may be zero or large, cosine vectors small.
    let fine = [
        good.clone(),
        json!({"id": "small", "vectors": {"v": [1e-18, 0, 0, 0, 0, 0, 0, 0], "d": [0, 0]}}),
        json!({"id": "large", "vectors": {"v": [0, 1, 0, 0, 0, 0, 0, 0], "d": [4e18, 0]}}),
    ];
    c.upsert(&c.parse_documents(&s, &fine).unwrap()).unwrap();
    assert_eq!(c.count(), 3);

    // Query vectors: the same rule, naming the field.
    let r = SearchRequest::parse(&json!({"vector": huge, "using": "v"}), &s);
    assert_eq!(refusal(r), ("invalid_vector".into(), "vector".into()));
    let r = HybridRequest::parse(
        &json!({"vector_similarity": {"embedding": tiny, "using": "v"}}),
        &s,
        NOW_MS,
    );
    assert_eq!(
        refusal(r),
        (
            "invalid_vector".into(),
            "vector_similarity.embedding".into()
        )
    );

    // A vector stored before the rule (written here without the parser's check): it scores 0
    // against every query instead of its magnitude, and no fusion emits a non-finite score.
    let legacy = Document {
        id: "legacy".into(),
        text: Default::default(),
        fields: Default::default(),
        vectors: [
            ("v".to_string(), vec![3.4e38f32; 8]),
            ("d".to_string(), vec![3.4e38f32, 3.4e38]),
        ]
        .into_iter()
        .collect(),
    };
    c.upsert(&[legacy]).unwrap();
    let hits = c
        .search(
            &SearchRequest::parse(
                &json!({"vector": [1, 0, 0, 0, 0, 0, 0, 0], "using": "v", "limit": 10}),
                &s,
            )
            .unwrap(),
            &Cancel::never(),
        )
        .unwrap()
        .hits;
    assert_eq!(hits[0].id, "good");
    let legacy_score = hits.iter().find(|h| h.id == "legacy").unwrap().score;
    assert_eq!(legacy_score, 0.0);
    let dot_hits = c
        .search(
            &SearchRequest::parse(&json!({"vector": [3e18, 3e18], "using": "d"}), &s).unwrap(),
            &Cancel::never(),
        )
        .unwrap()
        .hits;
    assert!(dot_hits.iter().all(|h| h.score.is_finite()), "{dot_hits:?}");
    for fusion in ["rrf", "weighted", "dbsf"] {
        let out = serde_json::to_value(
            c.hybrid(
                &hybrid_request(
                    &c,
                    json!({"vector_similarity": [
                               {"embedding": [1, 0, 0, 0, 0, 0, 0, 0], "using": "v"},
                               {"embedding": [3e18, 3e18], "using": "d"}],
                           "fusion_strategy": fusion, "explain": true}),
                ),
                &Cancel::never(),
            )
            .unwrap(),
        )
        .unwrap();
        let hits = out["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 4, "{fusion}: {out}");
        for h in hits {
            assert!(
                h["score"].as_f64().is_some_and(f64::is_finite),
                "{fusion}: {h}"
            );
            for comp in h["components"].as_object().unwrap().values() {
                assert!(
                    comp["score"].as_f64().is_some_and(f64::is_finite),
                    "{fusion}: {h}"
                );
            }
        }
    }
}

//! Collections end to end over a real engine: upsert, get, filtered search against brute force,
//! deletes, and a reopen that rebuilds every index from the stored documents.

mod common;

use common::open;
use kyrodb_search::Cancel;
use kyrodb_search::{Error, Schema, SearchRequest};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde_json::{json, Value};

fn schema() -> Schema {
    Schema::from_json(json!({
        "vectors": {"v": {"dim": 8, "metric": "cosine"}},
        "text_fields": ["body"],
        "fields": {"author": "keyword", "rank": "integer", "public": "bool", "published": "datetime"},
        "timestamp_field": "published"
    }))
    .unwrap()
}

fn vec8(rng: &mut SmallRng) -> Vec<f32> {
    (0..8).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

fn doc(i: usize, v: &[f32]) -> Value {
    let author = ["ann", "bob", "cy"][i % 3];
    json!({"id": format!("doc-{i}"), "text": format!("body {i}"), "vector": v,
           "fields": {"author": author, "rank": i, "public": i.is_multiple_of(2)},
           "timestamp": 1_700_000_000_000i64 + i as i64})
}

fn search(c: &kyrodb_search::Collection, body: Value) -> Vec<(String, f32)> {
    let req = SearchRequest::parse(&body, &c.schema()).unwrap();
    c.search(&req, &Cancel::never())
        .unwrap()
        .hits
        .into_iter()
        .map(|h| (h.id, h.score))
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    d / (na * nb)
}

#[test]
fn documents_are_searchable_when_acknowledged_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let vecs: Vec<Vec<f32>> = (0..600).map(|_| vec8(&mut rng)).collect();
    {
        let (_db, cs) = open(dir.path());
        let (c, created) = cs.create("news", schema()).unwrap();
        assert!(created);
        assert!(
            !cs.create("news", schema()).unwrap().1,
            "same schema is idempotent"
        );
        assert!(matches!(
            cs.create("news", Schema::from_json(json!({})).unwrap()),
            Err(Error::CollectionExists(_))
        ));
        for chunk in (0..600).collect::<Vec<_>>().chunks(100) {
            let docs: Vec<Value> = chunk.iter().map(|i| doc(*i, &vecs[*i])).collect();
            let docs = c.parse_documents(&c.schema(), &docs).unwrap();
            c.upsert(&docs).unwrap();
        }
        // Each document is the top hit for its own vector the moment it is acknowledged.
        let d = c
            .parse_documents(
                &c.schema(),
                &[json!({"id": "fresh", "vector": vecs[5], "fields": {"rank": 5}})],
            )
            .unwrap();
        c.upsert(&d).unwrap();
        let hits = search(&c, json!({"vector": vecs[5], "limit": 2}));
        let ids: Vec<&str> = hits.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(ids, ["doc-5", "fresh"], "ties break by id ascending");
        assert_eq!(c.count(), 601);

        // Filtered: exact answers against brute force.
        let q = vec8(&mut rng);
        let hits = search(
            &c,
            json!({"vector": q, "limit": 5, "filter": {"must": [{"key": "author", "match": "bob"},
                   {"key": "rank", "range": {"gte": 100, "lt": 400}}]}}),
        );
        let mut want: Vec<(String, f32)> = (0..600)
            .filter(|i| i % 3 == 1 && (100..400).contains(i))
            .map(|i| (format!("doc-{i}"), cosine(&q, &vecs[i])))
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1));
        want.truncate(5);
        assert_eq!(
            hits.iter().map(|h| &h.0).collect::<Vec<_>>(),
            want.iter().map(|h| &h.0).collect::<Vec<_>>()
        );
        // must_not + exists + shorthand.
        let hits = search(
            &c,
            json!({"vector": q, "limit": 1000, "filter": {"must_not": [{"key": "public", "match": true}], "must": [{"key": "author", "exists": true}]}}),
        );
        assert_eq!(hits.len(), 300);
        let hits = search(
            &c,
            json!({"vector": q, "limit": 1000, "filter": {"author": "cy", "public": true}}),
        );
        assert_eq!(hits.len(), 100);
        // Missing field matches exists:false only.
        let hits = search(
            &c,
            json!({"vector": q, "limit": 1000, "filter": {"must": [{"key": "author", "exists": false}]}}),
        );
        assert_eq!(
            hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
            ["fresh"]
        );
        let hits = search(
            &c,
            json!({"vector": q, "limit": 1000, "filter": {"published": "2023-11-14T22:13:20.007Z"}}),
        );
        assert_eq!(
            hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
            ["doc-7"]
        );

        // Deletes: never returned again.
        assert_eq!(
            c.delete_ids(&["doc-5".into(), "nope".into()]).unwrap(),
            (1, 1)
        );
        let hits = search(&c, json!({"vector": vecs[5], "limit": 1}));
        assert_eq!(hits[0].0, "fresh");
        assert_eq!(
            c.delete_matching(
                &kyrodb_search::Filter::parse(&json!({"author": "ann"}), &c.schema(), "filter")
                    .unwrap()
            )
            .unwrap(),
            200
        );
        assert_eq!(c.count(), 601 - 1 - 200);
        // Upsert replaces the whole document.
        let d = c
            .parse_documents(&c.schema(), &[json!({"id": "doc-1", "vector": vecs[1]})])
            .unwrap();
        c.upsert(&d).unwrap();
        assert!(c.get("doc-1").unwrap().fields.is_empty());
        assert_eq!(c.get("doc-2").unwrap().text["body"], "body 2");
        assert!(matches!(c.get("doc-3"), Err(Error::NoSuchDocument(_))));
    }
    let (_db, cs) = open(dir.path());
    let c = cs.get("news").unwrap();
    assert_eq!(c.count(), 400);
    let hits = search(&c, json!({"vector": vecs[4], "limit": 1}));
    assert_eq!(hits[0].0, "doc-4");
    let hits = search(
        &c,
        json!({"vector": vecs[3], "limit": 1000, "filter": {"author": "ann"}}),
    );
    assert!(hits.is_empty(), "deleted documents came back after reopen");
    cs.drop_collection("news").unwrap();
    assert!(matches!(cs.get("news"), Err(Error::NoSuchCollection(_))));
    drop((c, cs, _db));
    let (_db, cs) = open(dir.path());
    assert!(cs.list().is_empty());
}

#[test]
fn bad_documents_are_refused_with_their_path_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = open(dir.path());
    let (c, _) = cs.create("c", schema()).unwrap();
    let good = json!({"id": "a", "vector": [1, 0, 0, 0, 0, 0, 0, 0]});
    let cases = [
        (
            json!({"id": "b", "vector": [1, 0]}),
            "documents[1].vector",
            "dimension_mismatch",
        ),
        (
            json!({"id": "b", "vector": [1, 0, 0, 0, 0, 0, 0, "x"]}),
            "documents[1].vector[7]",
            "invalid_vector",
        ),
        (
            json!({"id": "b", "fields": {"nope": 1}}),
            "documents[1].fields.nope",
            "unknown_field",
        ),
        (
            json!({"id": "b", "fields": {"rank": "high"}}),
            "documents[1].fields.rank",
            "invalid_field_type",
        ),
        (
            json!({"id": "b", "fields": {"rank": 1.5}}),
            "documents[1].fields.rank",
            "invalid_field_type",
        ),
        (
            json!({"id": "", "fields": {}}),
            "documents[1].id",
            "invalid_id",
        ),
        (
            json!({"id": "a\u{1}", "fields": {}}),
            "documents[1].id",
            "invalid_id",
        ),
        (
            json!({"id": "b", "timestamp": "yesterday"}),
            "documents[1].timestamp",
            "invalid_datetime",
        ),
        (
            json!({"id": "b", "timestamp": 5, "fields": {"published": 6}}),
            "documents[1].timestamp",
            "invalid_document",
        ),
        (
            json!({"id": "b", "vectors": {"w": [1]}}),
            "documents[1].vectors.w",
            "unknown_field",
        ),
        (
            json!({"id": "b", "extra": 1}),
            "documents[1].extra",
            "unknown_field",
        ),
        (
            json!({"id": "b", "vector": [0, 0, 0, 0, 0, 0, 0, 0]}),
            "documents[1].vector",
            "invalid_vector",
        ),
    ];
    for (bad, path, code) in cases {
        match c.parse_documents(&c.schema(), &[good.clone(), bad.clone()]) {
            Err(Error::Invalid {
                code: got, path: p, ..
            }) => {
                assert_eq!((got, p.as_str()), (code, path), "for {bad}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert_eq!(c.count(), 0);
    for (f, path) in [
        (
            json!({"must": [{"key": "nope", "match": 1}]}),
            "filter.must[0].key",
        ),
        (
            json!({"must": [{"key": "rank", "range": {"gte": "x"}}]}),
            "filter.must[0].range.gte",
        ),
        (
            json!({"must": [{"key": "author", "range": {"gte": 1}}]}),
            "filter.must[0].range",
        ),
        (json!({"should": 3}), "filter.should"),
    ] {
        match SearchRequest::parse(
            &json!({"vector": [1, 0, 0, 0, 0, 0, 0, 0], "filter": f}),
            &c.schema(),
        ) {
            Err(Error::Invalid { path: p, .. }) => assert_eq!(p, path, "for {f}"),
            other => panic!("{f}: {other:?}"),
        }
    }
}

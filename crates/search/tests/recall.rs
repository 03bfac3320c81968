//! Recall of the planner's answers against brute force, unfiltered and filtered at 50%, 10%, 1% and
//! 0.1% selectivity and with filters correlated (and anti-correlated) with the query; and churn:
//! many rounds of upsert/delete of the same ids keep memory bounded, never return a deleted id, and
//! keep every live id reachable by its own vector.

mod common;

use kyrodb_search::Cancel;
use std::time::Duration;

use common::open;
use kyrodb_search::{Collection, Schema, SearchRequest};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde_json::{json, Value};

const DIM: usize = 24;
const CLUSTERS: usize = 20;

/// Clustered data: cluster centres, points around them.
fn data(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>, Vec<Vec<f32>>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..CLUSTERS)
        .map(|_| (0..DIM).map(|_| rng.gen_range(-1.0..1.0)).collect())
        .collect();
    let mut vs = Vec::with_capacity(n);
    let mut cl = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.gen_range(0..CLUSTERS);
        vs.push(
            centres[c]
                .iter()
                .map(|x| x + rng.gen_range(-0.35..0.35))
                .collect(),
        );
        cl.push(c);
    }
    (vs, cl, centres)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    d / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
}

fn ids(c: &Collection, body: Value) -> Vec<String> {
    let req = SearchRequest::parse(&body, &c.schema()).unwrap();
    c.search(&req, &Cancel::never())
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect()
}

fn brute(vs: &[Vec<f32>], q: &[f32], allow: impl Fn(usize) -> bool, k: usize) -> Vec<String> {
    let mut s: Vec<(f32, usize)> = (0..vs.len())
        .filter(|i| allow(*i))
        .map(|i| (cosine(q, &vs[i]), i))
        .collect();
    s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    s.into_iter().take(k).map(|(_, i)| format!("{i}")).collect()
}

fn recall(got: &[String], want: &[String]) -> f64 {
    if want.is_empty() {
        return 1.0;
    }
    got.iter().filter(|g| want.contains(g)).count() as f64 / want.len() as f64
}

#[test]
fn filtered_and_unfiltered_recall_against_brute_force() {
    let n = 12_000;
    let (vs, cl, centres) = data(n, 1);
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = open(dir.path());
    let schema = Schema::from_json(json!({"vectors": {"v": {"dim": DIM, "metric": "cosine"}},
        "fields": {"label": "integer", "cluster": "keyword"}}))
    .unwrap();
    let (c, _) = cs.create("r", schema).unwrap();
    let labels: Vec<usize> = (0..n).map(|i| (i * 7919) % 1000).collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let docs: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"id": format!("{i}"), "vector": vs[*i], "fields": {"label": labels[*i], "cluster": format!("c{}", cl[*i])}}))
            .collect();
        c.upsert(&c.parse_documents(&c.schema(), &docs).unwrap())
            .unwrap();
    }
    assert!(
        c.wait_until_indexed(Duration::from_secs(600)),
        "indexing did not finish"
    );
    let mut rng = SmallRng::seed_from_u64(99);
    let queries: Vec<Vec<f32>> = (0..40)
        .map(|_| {
            let c = &centres[rng.gen_range(0..CLUSTERS)];
            c.iter().map(|x| x + rng.gen_range(-0.35..0.35)).collect()
        })
        .collect();
    let mut report = Vec::new();
    for sel in [None, Some(0.5), Some(0.1), Some(0.01), Some(0.001)] {
        let mut total = 0.0;
        for q in &queries {
            let (got, want) = match sel {
                None => (
                    ids(&c, json!({"vector": q, "limit": 10, "ef": 64})),
                    brute(&vs, q, |_| true, 10),
                ),
                Some(s) => {
                    let t = (1000.0 * s) as usize;
                    (
                        ids(
                            &c,
                            json!({"vector": q, "limit": 10, "ef": 64, "filter": {"must": [{"key": "label", "range": {"lt": t}}]}}),
                        ),
                        brute(&vs, q, |i| labels[i] < t, 10),
                    )
                }
            };
            total += recall(&got, &want);
        }
        if sel == Some(0.5) {
            // Half the collection matches: the planner must walk the graph with the filter applied
            // during traversal (this is the path whose recall is being checked here).
            let body = json!({"vector": queries[0], "limit": 10, "ef": 64, "explain": true,
                              "filter": {"must": [{"key": "label", "range": {"lt": 500}}]}});
            let req = SearchRequest::parse(&body, &c.schema()).unwrap();
            let plan = c.search(&req, &Cancel::never()).unwrap().plan.unwrap();
            assert_eq!(plan["strategy"], "hnsw_filtered", "{plan}");
        }
        let r = total / queries.len() as f64;
        report.push((sel, r));
        assert!(
            r >= 0.95,
            "recall {r:.3} at selectivity {sel:?} (all: {report:?})"
        );
    }
    // Correlated filters: the query's own cluster (the easy case), and a cluster far from the query
    // (the case where in-traversal filtering breaks down: allowed nodes are far from the entry path).
    for q in &queries {
        let mut by_dist: Vec<(f32, usize)> = centres
            .iter()
            .enumerate()
            .map(|(i, c)| (cosine(q, c), i))
            .collect();
        by_dist.sort_by(|a, b| b.0.total_cmp(&a.0));
        for target in [by_dist[0].1, by_dist[CLUSTERS - 1].1] {
            let got = ids(
                &c,
                json!({"vector": q, "limit": 10, "ef": 64, "filter": {"cluster": format!("c{target}")}}),
            );
            let want = brute(&vs, q, |i| cl[i] == target, 10);
            assert!(
                recall(&got, &want) >= 0.9,
                "correlated filter on cluster {target}: {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn churn_keeps_memory_bounded_and_never_returns_deleted_documents() {
    let n = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = open(dir.path());
    let schema =
        Schema::from_json(json!({"vectors": {"v": {"dim": DIM, "metric": "l2"}}})).unwrap();
    let (c, _) = cs.create("churn", schema).unwrap();
    let mut rng = SmallRng::seed_from_u64(5);
    let mut current: Vec<Option<Vec<f32>>> = vec![None; n];
    let mut first_bytes = 0;
    for round in 0..25 {
        // Replace every vector, then delete a tenth of the ids.
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let docs: Vec<Value> = chunk
                .iter()
                .map(|i| {
                    let v: Vec<f32> = (0..DIM).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    current[*i] = Some(v.clone());
                    json!({"id": format!("{i}"), "vector": v})
                })
                .collect();
            c.upsert(&c.parse_documents(&c.schema(), &docs).unwrap())
                .unwrap();
        }
        let gone: Vec<usize> = (0..n).filter(|_| rng.gen_bool(0.1)).collect();
        let gone_ids: Vec<String> = gone.iter().map(|i| format!("{i}")).collect();
        c.delete_ids(&gone_ids).unwrap();
        for i in &gone {
            current[*i] = None;
        }
        assert!(c.wait_until_indexed(Duration::from_secs(300)));
        let bytes = c.index_bytes();
        if round == 0 {
            first_bytes = bytes;
        }
        assert!(
            bytes <= first_bytes * 3 / 2,
            "round {round}: index holds {bytes} bytes, round 0 held {first_bytes}"
        );
        // Every live id is the top hit for its own vector; deleted ones are never returned.
        for (i, v) in current.iter().enumerate().step_by(7) {
            match v {
                Some(v) => {
                    let got = ids(&c, json!({"vector": v, "limit": 1, "ef": 64}));
                    assert_eq!(
                        got,
                        [format!("{i}")],
                        "round {round}: live id {i} not found by its own vector"
                    );
                }
                None => {
                    let q: Vec<f32> = (0..DIM).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    for id in ids(&c, json!({"vector": q, "limit": 50})) {
                        let k: usize = id.parse().unwrap();
                        assert!(
                            current[k].is_some(),
                            "round {round}: deleted id {k} returned"
                        );
                    }
                }
            }
        }
        assert_eq!(
            c.count() as usize,
            current.iter().filter(|v| v.is_some()).count()
        );
    }
}

//! Times `Document::parse` (wire decode + bind against the schema) on 2,000 documents of a 384-d
//! vector, a 900-byte text and two fields; prints the best of 7 rounds in µs per document.
//! `cargo run --release -p kyrodb-search --example parse_bench`. A/B: build it in two trees with
//! separate `CARGO_TARGET_DIR`s (one target dir reuses artifacts across trees by mtime) and run
//! the binaries alternately.
use kyrodb_search::{Document, Schema};
use serde_json::json;
use std::time::Instant;

fn main() {
    let schema = Schema::from_json(json!({
        "vectors": {"v": {"dim": 384, "metric": "cosine"}},
        "fields": {"rank": "integer", "tag": "keyword"},
        "text_fields": ["body"]
    }))
    .unwrap();
    let docs: Vec<_> = (0..2000).map(|i| json!({
        "id": format!("doc-{i}"),
        "text": "the quick brown fox jumps over the lazy dog ".repeat(20),
        "fields": {"rank": i, "tag": "a"},
        "vector": (0..384).map(|j| ((i * 31 + j) % 97) as f32 / 97.0 + 0.01).collect::<Vec<f32>>(),
    })).collect();
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        for (i, d) in docs.iter().enumerate() {
            std::hint::black_box(
                Document::parse(d, &schema, &format!("documents[{i}]"), &[]).unwrap(),
            );
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / docs.len() as f64);
    }
    println!("{best:.2} us per document");
}

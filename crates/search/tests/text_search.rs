//! Full-text search through a collection: a document is found by its words as soon as its write is
//! acknowledged, never after it is deleted or rewritten, filters restrict the hits, per-field
//! analyzer options apply, and the index is rebuilt from the stored documents on reopen.

mod common;

use kyrodb_search::Cancel;
use kyrodb_search::{Filter, Schema};
use serde_json::json;

fn schema() -> Schema {
    Schema::from_json(json!({
        "text_fields": ["title", "body"],
        "text_options": {"title": {"stemming": false, "stop_words": []}},
        "fields": {"lang": "keyword", "n": "integer"}
    }))
    .unwrap()
}

fn ids(hits: &[kyrodb_search::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}

#[test]
fn documents_are_found_by_text_at_once_and_never_after_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = common::open(dir.path());
    let (c, _) = cs.create("news", schema()).unwrap();
    // Enough documents that most of them sit in sealed segments.
    let docs: Vec<serde_json::Value> = (0..9000)
        .map(|i| {
            json!({"id": format!("d{i}"),
                   "text": {"title": format!("report {i}"), "body": format!("weekly numbers for region {}", i % 50)},
                   "fields": {"lang": if i % 2 == 0 { "en" } else { "de" }, "n": i}})
        })
        .collect();
    for chunk in docs.chunks(1000) {
        c.upsert(&c.parse_documents(&c.schema(), chunk).unwrap())
            .unwrap();
    }
    let search = |q: &str| {
        c.text_search(q, &[], None, 10, true, &Cancel::never())
            .unwrap()
            .0
    };
    // A unique word finds exactly its document, right after the write returned.
    let new = json!([{"id": "fresh", "text": {"body": "Quantum annealing schedules"}, "fields": {"lang": "en", "n": 1}}]);
    c.upsert(
        &c.parse_documents(&c.schema(), new.as_array().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ids(&search("annealing")), ["fresh"]);
    // Stemming on the body: "schedule" matches "schedules".
    assert_eq!(ids(&search("schedule")), ["fresh"]);
    // A rewrite replaces its words.
    let again = json!([{"id": "fresh", "text": {"body": "Classical heuristics"}, "fields": {"lang": "en", "n": 1}}]);
    c.upsert(
        &c.parse_documents(&c.schema(), again.as_array().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(search("annealing").is_empty());
    assert_eq!(ids(&search("heuristics")), ["fresh"]);
    // Deleted: never found again.
    c.delete_ids(&["fresh".to_string()]).unwrap();
    assert!(search("heuristics").is_empty());

    // Title: no stemming and no stop words, so "reports" does not match "report".
    let title = |q: &str| {
        c.text_search(
            q,
            &[("title".to_string(), 1.0)],
            None,
            10,
            false,
            &Cancel::never(),
        )
        .unwrap()
        .0
    };
    assert!(title("reports").is_empty());
    // Any query word matches ("report" is in every title); the document with both ranks first.
    let hits = title("report 4242");
    assert_eq!(hits.len(), 10);
    assert_eq!(hits[0].id, "d4242");
    assert!(hits[0].score > hits[1].score);
    // A document in a sealed segment is deleted: gone.
    c.delete_ids(&["d4242".to_string()]).unwrap();
    assert_ne!(
        title("report 4242").first().map(|h| h.id.as_str()),
        Some("d4242")
    );

    // Filters restrict the candidates before the top k is taken.
    let f = Filter::parse(&json!({"must": [{"key": "lang", "match": "de"}, {"key": "n", "range": {"gte": 100, "lt": 200}}]}), &c.schema(), "filter").unwrap();
    let (hits, _) = c
        .text_search("region 7", &[], Some(&f), 100, true, &Cancel::never())
        .unwrap();
    assert!(!hits.is_empty());
    for h in &hits {
        let n: u64 = h.id[1..].parse().unwrap();
        assert!(
            n % 2 == 1 && (100..200).contains(&n),
            "{} passed the filter",
            h.id
        );
    }
    // Phrases: the words adjacent and in order.
    let (hits, _) = c
        .text_search(
            "\"numbers for region 7\"",
            &[],
            None,
            1000,
            false,
            &Cancel::never(),
        )
        .unwrap();
    assert_eq!(hits.len(), 9000 / 50, "documents of region 7 ({hits:?})");
    let (hits, _) = c
        .text_search("\"region numbers\"", &[], None, 10, false, &Cancel::never())
        .unwrap();
    assert!(hits.is_empty());

    // Bad queries are refused with the field named.
    let body = [("body".to_string(), 1.0)];
    let e = c
        .text_search("the of", &body, None, 10, false, &Cancel::never())
        .unwrap_err();
    assert!(e.to_string().contains("no searchable words"), "{e}");
    let e = c
        .text_search(
            "x",
            &[("nope".to_string(), 1.0)],
            None,
            10,
            false,
            &Cancel::never(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");

    // Reopened: rebuilt from the stored documents, same answers.
    let before = ids(&search("region 7 numbers"));
    let info = serde_json::to_value(c.info()).unwrap();
    assert!(
        info["text_index"]["sealed_segments"].as_u64().unwrap() >= 2,
        "{info}"
    );
    drop(c);
    drop(cs);
    drop(_db);
    let (_db, cs) = common::open(dir.path());
    let c = cs.get("news").unwrap();
    assert_eq!(
        ids(&c
            .text_search("region 7 numbers", &[], None, 10, true, &Cancel::never())
            .unwrap()
            .0),
        before
    );
    assert!(c
        .text_search("heuristics", &[], None, 10, true, &Cancel::never())
        .unwrap()
        .0
        .is_empty());
}

/// (id, score) of a text query's top 20, scores rounded to 1e-4 relative.
fn answers(c: &kyrodb_search::Collection, queries: &[&str]) -> Vec<Vec<(String, i64)>> {
    queries
        .iter()
        .map(|q| {
            c.text_search(q, &[], None, 20, false, &Cancel::never())
                .unwrap()
                .0
                .iter()
                .map(|h| (h.id.clone(), (h.score as f64 * 1e4).round() as i64))
                .collect()
        })
        .collect()
}

#[test]
fn sealed_segments_are_adopted_from_the_checkpoint_only_where_the_text_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (db, cs) = common::open(dir.path());
    let (c, _) = cs.create("news", schema()).unwrap();
    let doc = |i: usize, body: String| {
        json!({"id": format!("d{i}"), "text": {"title": format!("report {i}"), "body": body},
               "fields": {"lang": "en", "n": i}})
    };
    let docs: Vec<serde_json::Value> = (0..12_000)
        .map(|i| {
            doc(
                i,
                format!("weekly numbers for region {} sector {}", i % 50, i % 7),
            )
        })
        .collect();
    for chunk in docs.chunks(1000) {
        c.upsert(&c.parse_documents(&c.schema(), chunk).unwrap())
            .unwrap();
    }
    assert!(
        serde_json::to_value(c.info()).unwrap()["text_index"]["sealed_segments"]
            .as_u64()
            .unwrap()
            >= 2
    );
    cs.checkpoint().unwrap();
    let file = std::fs::read_dir(dir.path().join("search"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "graph"))
        .expect("a checkpoint file");
    let stale = std::fs::read(&file).unwrap();
    // Written after the checkpoint (as if the process died before the next one): rewrites of rows
    // in sealed segments, deletes, new documents.
    let rewrites: Vec<serde_json::Value> = (0..300)
        .map(|i| doc(i * 13, format!("monthly figures for zone {i}")))
        .collect();
    c.upsert(&c.parse_documents(&c.schema(), &rewrites).unwrap())
        .unwrap();
    let gone: Vec<String> = (0..200).map(|i| format!("d{}", i * 17 + 5)).collect();
    c.delete_ids(&gone).unwrap();
    let fresh: Vec<serde_json::Value> = (20_000..20_100)
        .map(|i| doc(i, format!("weekly figures for region {}", i % 50)))
        .collect();
    c.upsert(&c.parse_documents(&c.schema(), &fresh).unwrap())
        .unwrap();
    let queries = [
        "weekly numbers region 7",
        "monthly figures zone 12",
        "sector 3",
        "report 13",
        "report 22",
        "weekly figures",
        "\"numbers for region 9\"",
        "region 5 sector 4",
    ];
    let before = answers(&c, &queries);
    drop(c);
    drop(cs);
    drop(db);
    // The file of the checkpoint before the later writes.
    std::fs::write(&file, &stale).unwrap();
    let (db, cs) = common::open(dir.path());
    let c = cs.get("news").unwrap();
    let info = serde_json::to_value(c.info()).unwrap();
    let source = info["text_source"].as_str().unwrap().to_owned();
    assert!(source.starts_with("checkpoint: "), "{info}");
    let adopted: u64 = source["checkpoint: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Every sealed row of the file but the 300 rewritten and 200 deleted was adopted (some
    // rewrites and deletes hit rows of the mutable segment, so at most 500 fewer).
    let sealed_in_file = 12_000 - 12_000 % 4096;
    assert!(
        adopted <= sealed_in_file as u64 && adopted + 500 >= sealed_in_file as u64,
        "{source}"
    );
    assert_eq!(answers(&c, &queries), before, "answers after adopting");
    assert_eq!(c.count(), 12_000 - 200 + 100);

    // A flipped byte: the whole file is refused and everything analysed again, same answers.
    drop(c);
    drop(cs);
    drop(db);
    let mut bad = std::fs::read(&file).unwrap();
    let at = bad.len() - 100;
    bad[at] ^= 0x40;
    std::fs::write(&file, &bad).unwrap();
    let (_db, cs) = common::open(dir.path());
    let c = cs.get("news").unwrap();
    let info = serde_json::to_value(c.info()).unwrap();
    assert!(
        info["text_source"].as_str().unwrap().starts_with("rebuilt"),
        "{info}"
    );
    assert!(
        info["graph_source"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{info}"
    );
    assert_eq!(answers(&c, &queries), before, "answers after rebuilding");
}

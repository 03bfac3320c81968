//! Re-embed jobs over a real engine with a deterministic stand-in embedder: every document ends with
//! the vector of its own current text, a job interrupted mid-walk resumes after its cursor when the
//! collections reopen, concurrent writers are never overwritten with stale documents, and one job
//! runs at a time.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::open;
use kyrodb_search::{EmbedFailure, EmbedFn, EmbedSpec, Error, JobState, Schema};
use serde_json::json;

const DIM: usize = 4;

fn schema() -> Schema {
    Schema::from_json(json!({
        "vectors": {"v": {"dim": DIM, "metric": "cosine"}},
        "text_fields": ["body"],
        "fields": {"n": "integer"}
    }))
    .unwrap()
}

fn spec() -> EmbedSpec {
    EmbedSpec {
        model: "stand-in".into(),
        source: "body".into(),
        version: Some("1".into()),
        sha256: Some("00".into()),
    }
}

/// The stand-in model: a unit vector derived from the text's hash.
fn fake(text: &str) -> Vec<f32> {
    let h = xxhash(text);
    let v: Vec<f32> = (0..DIM)
        .map(|i| ((h >> (i * 16)) & 0xffff) as f32 + 1.0)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn xxhash(s: &str) -> u64 {
    // FNV-1a: deterministic, no extra dependency.
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// An embedder that answers `pages` calls and then reports it is stopping (as the server's does at
/// shutdown), counting calls.
fn embedder(pages: usize, calls: Arc<AtomicUsize>) -> EmbedFn {
    Arc::new(move |texts: Vec<String>| {
        if calls.fetch_add(1, Ordering::SeqCst) >= pages {
            return Err(EmbedFailure::Stopped("stand-in stopped".into()));
        }
        Ok(texts.iter().map(|t| fake(t)).collect())
    })
}

fn load(c: &kyrodb_search::Collection, n: usize) {
    let docs: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut d =
                json!({"id": format!("d{i}"), "vector": [1.0, 0.0, 0.0, 0.0], "fields": {"n": i}});
            if i % 10 != 0 {
                d["text"] = json!(format!("document number {i}"));
            }
            d
        })
        .collect();
    for chunk in docs.chunks(500) {
        let parsed = c.parse_documents(&c.schema(), chunk).unwrap();
        c.upsert(&parsed).unwrap();
    }
}

/// Every document holds the stand-in vector of its body; those without a body hold none.
fn check_all(c: &kyrodb_search::Collection, n: usize) {
    for i in 0..n {
        let d = c.get(&format!("d{i}")).unwrap();
        match d.text.get("body") {
            Some(t) => assert_eq!(d.vectors.get("v"), Some(&fake(t)), "d{i}"),
            None => assert!(
                !d.vectors.contains_key("v"),
                "d{i} has no text, so no vector"
            ),
        }
    }
}

#[test]
fn a_job_re_embeds_every_document_and_records_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = open(dir.path());
    let (c, _) = cs.create("c", schema()).unwrap();
    load(&c, 300);
    let job = cs
        .reembed("c", "v", spec(), embedder(usize::MAX, Arc::default()))
        .unwrap();
    assert_eq!((job.state, job.total), (JobState::Running, 300));
    assert_eq!(
        c.schema().vectors["v"].embed,
        Some(spec()),
        "the switch is immediate"
    );
    assert!(c.wait_reembed(Duration::from_secs(60)));
    let j = c.job().unwrap();
    assert_eq!(j.state, JobState::Done, "{j:?}");
    assert_eq!((j.done, j.cleared), (300, 30));
    check_all(&c, 300);
    let info = serde_json::to_value(c.info()).unwrap();
    assert_eq!(info["reembed"]["state"], "done");
    assert_eq!(info["reembed"]["progress"], 1.0);
    // Unknown field: refused, nothing changes.
    match cs.reembed("c", "nope", spec(), embedder(1, Arc::default())) {
        Err(Error::Invalid { code, .. }) => assert_eq!(code, "unknown_field"),
        other => panic!("{other:?}"),
    }
    // A source that is not a text field: refused by the schema's rules.
    let mut bad = spec();
    bad.source = "n".into();
    assert!(matches!(
        cs.reembed("c", "v", bad, embedder(1, Arc::default())),
        Err(Error::Invalid { .. })
    ));
    assert_eq!(c.schema().vectors["v"].embed, Some(spec()));
}

#[test]
fn an_interrupted_job_resumes_after_its_cursor_when_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let n = 500;
    let first_calls = Arc::new(AtomicUsize::new(0));
    let done_before;
    {
        let (_db, cs) = open(dir.path());
        let (c, _) = cs.create("c", schema()).unwrap();
        load(&c, n);
        // The stand-in answers 3 pages, then says it is stopping (and tells the test).
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = parking_lot::Mutex::new(tx);
        let inner = embedder(3, first_calls.clone());
        let stopping: EmbedFn = Arc::new(move |texts| {
            let r = inner(texts);
            if r.is_err() {
                let _ = tx.lock().send(());
            }
            r
        });
        cs.reembed("c", "v", spec(), stopping).unwrap();
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the job reached its fourth page");
        cs.close();
        let j = c.job().unwrap();
        assert_eq!(j.state, JobState::Running);
        done_before = j.done;
        assert!(done_before > 0 && done_before < n as u64, "{j:?}");
    }
    let (_db, cs) = open(dir.path());
    let unfinished = cs.unfinished_reembeds();
    assert_eq!(unfinished, vec![("c".to_owned(), "v".to_owned(), spec())]);
    let c = cs.get("c").unwrap();
    assert_eq!(c.job().unwrap().done, done_before, "progress is durable");
    let calls = Arc::new(AtomicUsize::new(0));
    cs.resume_reembed("c", embedder(usize::MAX, calls.clone()))
        .unwrap();
    assert!(c.wait_reembed(Duration::from_secs(60)));
    let j = c.job().unwrap();
    assert_eq!((j.state, j.done, j.resumed), (JobState::Done, n as u64, 1));
    // Resumed after the cursor: the second run embedded only the pages not yet done.
    let pages_left = (n - done_before as usize).div_ceil(kyrodb_search::reembed::REEMBED_PAGE);
    assert!(
        calls.load(Ordering::SeqCst) <= pages_left,
        "{} calls for {pages_left} pages",
        calls.load(Ordering::SeqCst)
    );
    check_all(&c, n);
    assert!(cs.unfinished_reembeds().is_empty());
}

#[test]
fn concurrent_writers_are_not_overwritten_and_one_job_runs_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, cs) = open(dir.path());
    let (c, _) = cs.create("c", schema()).unwrap();
    let n = 400;
    load(&c, n);
    // Slow embedder: the writer below gets to rewrite documents while the job walks.
    let slow: EmbedFn = Arc::new(|texts: Vec<String>| {
        std::thread::sleep(Duration::from_millis(20));
        Ok(texts.iter().map(|t| fake(t)).collect())
    });
    cs.reembed("c", "v", spec(), slow).unwrap();
    match cs.reembed("c", "v", spec(), embedder(1, Arc::default())) {
        Err(Error::JobRunning { field, .. }) => assert_eq!(field, "v"),
        Ok(_) => {} // the job may already have finished on a fast machine
        Err(e) => panic!("{e}"),
    }
    // A writer rewriting documents with new text and the new model's vector (as the server's
    // auto_embed does once the switch is made).
    for round in 0..5 {
        let docs: Vec<serde_json::Value> = (0..n)
            .step_by(7)
            .map(|i| {
                let t = format!("rewritten {round} {i}");
                json!({"id": format!("d{i}"), "text": t, "vector": fake(&t), "fields": {"n": i}})
            })
            .collect();
        let parsed = c.parse_documents(&c.schema(), &docs).unwrap();
        c.upsert(&parsed).unwrap();
    }
    assert!(c.wait_reembed(Duration::from_secs(120)));
    assert_eq!(c.job().unwrap().state, JobState::Done);
    for i in 0..n {
        let d = c.get(&format!("d{i}")).unwrap();
        if i % 7 == 0 {
            assert_eq!(
                d.text["body"],
                format!("rewritten 4 {i}"),
                "d{i}: the newest write wins"
            );
        }
    }
    check_all(&c, n);
}

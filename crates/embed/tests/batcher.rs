//! The batcher with a stand-in model: a full queue refuses at once, closing answers queued requests,
//! and results go back to the request that asked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use kyrodb_embed::{Batcher, BatcherOptions, Embedder, Error, ModelInfo, MINILM};

/// Vectors `[len, first byte]`; each call blocks on `gate` first when set.
struct Stub {
    info: ModelInfo,
    gate: Option<Arc<Barrier>>,
    calls: AtomicUsize,
}

impl Embedder for Stub {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn embed(&self, texts: &[&str]) -> kyrodb_embed::Result<Vec<Vec<f32>>> {
        if let Some(g) = &self.gate {
            g.wait();
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(texts
            .iter()
            .map(|t| vec![t.len() as f32, t.bytes().next().unwrap_or(0) as f32])
            .collect())
    }
    fn token_count(&self, text: &str) -> kyrodb_embed::Result<usize> {
        Ok(text.len())
    }
}

fn stub(gate: Option<Arc<Barrier>>) -> Arc<Stub> {
    Arc::new(Stub {
        info: MINILM.info(std::path::Path::new("/none")),
        gate,
        calls: AtomicUsize::new(0),
    })
}

#[test]
fn a_full_queue_refuses_at_once_and_close_answers_the_queued() {
    let gate = Arc::new(Barrier::new(2));
    let s = stub(Some(gate.clone()));
    let b = Batcher::new(
        s.clone(),
        BatcherOptions {
            queue_texts_max: 3,
            batch_max: 2,
            max_wait: Duration::ZERO,
            workers: 1,
            compute_threads: 1,
        },
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx1 = tx.clone();
    // The worker takes this one and blocks in the model until the gate opens.
    b.submit(vec!["aa".into()], move |r| tx1.send(("first", r)).unwrap())
        .unwrap();
    // Wait until the worker has taken it (the queue is empty again).
    while b.stats().queued_texts > 0 {
        std::thread::yield_now();
    }
    let tx2 = tx.clone();
    b.submit(vec!["b".into(), "c".into(), "d".into()], move |r| {
        tx2.send(("second", r)).unwrap()
    })
    .unwrap();
    match b.submit(vec!["e".into()], |_| {
        panic!("a refused request must not be answered")
    }) {
        Err(Error::Busy { queued: 3, max: 3 }) => {}
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(b.stats().refused, 1);
    gate.wait(); // first batch runs
    let (name, r) = rx.recv().unwrap();
    assert_eq!((name, r.unwrap()), ("first", vec![vec![2.0, 97.0]]));
    gate.wait(); // second batch runs
    let (name, r) = rx.recv().unwrap();
    assert_eq!(name, "second");
    assert_eq!(
        r.unwrap(),
        vec![vec![1.0, 98.0], vec![1.0, 99.0], vec![1.0, 100.0]]
    );
    b.close();
    assert!(matches!(
        b.submit(vec!["x".into()], |_| {}),
        Err(Error::Closed)
    ));
}

#[test]
fn each_request_gets_its_own_answers_under_concurrency() {
    let s = stub(None);
    let b = Arc::new(
        Batcher::new(
            s.clone(),
            BatcherOptions {
                workers: 2,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for r in 0..50u8 {
                    let texts: Vec<String> = (0..=(r % 4))
                        .map(|k| format!("{}{}", (b'a' + t) as char, "x".repeat(k as usize)))
                        .collect();
                    let got = b.embed_blocking(texts.clone()).unwrap();
                    let want: Vec<Vec<f32>> = texts
                        .iter()
                        .map(|x| vec![x.len() as f32, (b'a' + t) as f32])
                        .collect();
                    assert_eq!(got, want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = b.stats();
    assert_eq!(st.queued_texts, 0);
    assert_eq!(st.texts, 8 * (50 / 4 * (1 + 2 + 3 + 4) + (1 + 2)));
}

//! The embedder against reference vectors computed by an independent implementation
//! (bench/embed/reference.py: numpy, float64; cross-checked against sentence-transformers), batching,
//! truncation, and the refusals of missing or corrupt model files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kyrodb_embed::{Embedder, Error, MiniLm, MINILM};
use serde_json::Value;

fn model() -> &'static MiniLm {
    static M: OnceLock<MiniLm> = OnceLock::new();
    M.get_or_init(|| {
        let root = kyrodb_embed::testing::model_root();
        MiniLm::load(&MINILM.dir_in(&root)).expect("load the installed model")
    })
}

fn reference() -> (Vec<String>, Vec<usize>, Vec<Vec<f32>>) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/embed/reference_vectors.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let texts = v["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let counts = v["token_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect();
    let vectors = v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    (texts, counts, vectors)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn single_texts_match_the_reference_vectors() {
    let (texts, counts, want) = reference();
    assert!(texts.len() >= 20 && texts.iter().any(String::is_empty));
    let m = model();
    let mut worst = (1.0f32, String::new());
    for ((t, &count), w) in texts.iter().zip(&counts).zip(&want) {
        assert_eq!(m.token_count(t).unwrap(), count, "token count of {t:?}");
        let got = m.embed(&[t]).unwrap().remove(0);
        assert_eq!(got.len(), 384);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
        let c = cosine(&got, w);
        if c < worst.0 {
            worst = (c, t.chars().take(40).collect());
        }
    }
    assert!(
        worst.0 >= 0.999,
        "lowest cosine vs reference {} for {:?}",
        worst.0,
        worst.1
    );
}

#[test]
fn batched_equals_single_and_the_documented_similarity_holds() {
    let (texts, _, _) = reference();
    let m = model();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batched = m.embed(&refs).unwrap();
    for (t, b) in refs.iter().zip(&batched) {
        let single = m.embed(&[t]).unwrap().remove(0);
        let diff = single
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            diff < 1e-5,
            "batched differs from single by {diff} for {t:?}"
        );
    }
    // sentence-transformers documents 0.7553 for this pair; pooling over padding gives ~0.8 for
    // unrelated sentences instead.
    let v = m
        .embed(&[
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The new movie is awesome.",
        ])
        .unwrap();
    let c = cosine(&v[0], &v[1]);
    assert!((c - 0.7553).abs() < 0.002, "documented pair: {c}");
    assert!(
        cosine(&v[0], &v[2]) < 0.3,
        "unrelated pair: {}",
        cosine(&v[0], &v[2])
    );
}

#[test]
fn inputs_are_truncated_at_256_word_pieces() {
    let m = model();
    let long: String = (0..600).map(|i| format!("word{} ", i % 50)).collect();
    assert_eq!(m.token_count(&long).unwrap(), MINILM.max_tokens);
    let longer = format!("{long} and a tail that is cut off entirely");
    let v = m.embed(&[&long, &longer]).unwrap();
    assert_eq!(v[0], v[1], "text past the window changed the vector");
}

/// A copy of the installed model's small files, and the weights linked, in a temp dir.
fn model_copy() -> (tempfile::TempDir, PathBuf) {
    let src = MINILM.dir_in(&kyrodb_embed::testing::model_root());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    for f in MINILM.files {
        if std::fs::hard_link(src.join(f.name), dir.join(f.name)).is_err() {
            std::fs::copy(src.join(f.name), dir.join(f.name)).unwrap();
        }
    }
    (tmp, dir)
}

#[test]
fn missing_or_corrupt_files_are_refused_naming_the_file() {
    let (_tmp, dir) = model_copy();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    match MiniLm::load(&dir) {
        Err(Error::Missing { path }) => assert!(path.ends_with("tokenizer.json")),
        other => panic!("expected Missing, got {other:?}"),
    }
    let msg = MiniLm::load(&dir).unwrap_err().to_string();
    assert!(msg.contains("kyrodb model install"), "{msg}");

    let (_tmp, dir) = model_copy();
    // Same size, one byte changed (a fresh file: the weights are hard links to the installed copy).
    let cfg = dir.join("config.json");
    let mut bytes = std::fs::read(&cfg).unwrap();
    bytes[10] ^= 0x01;
    std::fs::remove_file(&cfg).unwrap();
    std::fs::write(&cfg, &bytes).unwrap();
    match MiniLm::load(&dir) {
        Err(Error::Corrupt { path, reason }) => {
            assert!(path.ends_with("config.json"));
            assert!(reason.contains("sha256"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let tok = dir.join("tokenizer.json");
    std::fs::remove_file(&tok).unwrap();
    std::fs::write(&tok, b"{}").unwrap();
    std::fs::remove_file(&cfg).unwrap();
    std::fs::write(
        &cfg,
        MINILM_CONFIG.get_or_init(|| {
            std::fs::read(
                MINILM
                    .dir_in(&kyrodb_embed::testing::model_root())
                    .join("config.json"),
            )
            .unwrap()
        }),
    )
    .unwrap();
    match MiniLm::load(&dir) {
        Err(Error::Corrupt { path, reason }) => {
            assert!(path.ends_with("tokenizer.json"));
            assert!(reason.contains("bytes"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

static MINILM_CONFIG: OnceLock<Vec<u8>> = OnceLock::new();

#[test]
fn concurrent_requests_are_batched_and_get_their_own_vectors() {
    let (texts, _, _) = reference();
    let m = model();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = m.embed(&refs).unwrap();
    struct Shared(&'static MiniLm);
    impl Embedder for Shared {
        fn info(&self) -> &kyrodb_embed::ModelInfo {
            self.0.info()
        }
        fn embed(&self, texts: &[&str]) -> kyrodb_embed::Result<Vec<Vec<f32>>> {
            self.0.embed(texts)
        }
        fn token_count(&self, text: &str) -> kyrodb_embed::Result<usize> {
            self.0.token_count(text)
        }
    }
    let b = Arc::new(kyrodb_embed::Batcher::new(Arc::new(Shared(m)), Default::default()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let b = b.clone();
            let texts = texts.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|r| {
                        let i = (t * 5 + r) % texts.len();
                        let j = (i + 7) % texts.len();
                        (
                            i,
                            j,
                            b.embed_blocking(vec![texts[i].clone(), texts[j].clone()])
                                .unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (i, j, got) in t.join().unwrap() {
            for (k, g) in [i, j].into_iter().zip(&got) {
                let diff = g
                    .iter()
                    .zip(&want[k])
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(
                    diff < 1e-5,
                    "request for text {k} got another vector (diff {diff})"
                );
            }
        }
    }
    let s = b.stats();
    assert_eq!(s.texts, 80);
    assert!(s.batches < 40, "no batching happened: {s:?}");
}

//! The full-text index against a direct computation of BM25 over the live documents: same hits,
//! same order (ties by id), scores within 1e-4 relative — across the mutable segment, sealed
//! segments, merges, deletes and rewrites, with filters, boosts and phrases. And the top-k is
//! found without scoring every matching document (block-max WAND).

use kyrodb_search::Cancel;
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use kyrodb_search::text::{index::merge, Analyzer, TextIndex, TextOptions};
use rand::{rngs::StdRng, Rng, SeedableRng};
use roaring::RoaringBitmap;

const FIELDS: [&str; 2] = ["title", "body"];

fn words() -> Vec<String> {
    // A Zipf-like vocabulary: a few very common words, many rare ones, plus stop words.
    let mut w: Vec<String> = [
        "search",
        "vector",
        "database",
        "index",
        "learned",
        "query",
        "fast",
        "rust",
        "graph",
        "neural",
        "network",
        "model",
        "embedding",
        "ranking",
        "fusion",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..400 {
        w.push(format!("term{i}"));
    }
    w
}

fn sentence(rng: &mut StdRng, vocab: &[String], len: usize) -> String {
    let mut out = Vec::new();
    for _ in 0..len {
        if rng.gen_bool(0.15) {
            out.push(["the", "of", "and", "a"][rng.gen_range(0..4)].to_string());
            continue;
        }
        // Skewed: index ~ u^3 · |vocab|.
        let u: f64 = rng.gen();
        out.push(vocab[((u * u * u) * vocab.len() as f64) as usize].clone());
    }
    out.join(" ")
}

/// The direct computation: every live document, every field, the formula as written.
struct Brute {
    docs: HashMap<u32, BTreeMap<String, String>>,
}

impl Brute {
    fn search(
        &self,
        query: &str,
        boosts: &[(usize, f32)],
        allowed: Option<&RoaringBitmap>,
        k: usize,
    ) -> Vec<(u32, f64)> {
        let a = Analyzer::english();
        // Plain terms = all words of the query; phrases = the quoted parts.
        let plain: String = query.replace('"', " ");
        let phrases: Vec<&str> = query.split('"').skip(1).step_by(2).collect();
        let mut qterms: Vec<String> = Vec::new();
        for t in a.tokens(&plain) {
            if !qterms.contains(&t.term) {
                qterms.push(t.term);
            }
        }
        let mut scores: Vec<(u32, f64)> = Vec::new();
        // Per field statistics over live documents.
        let mut stats = Vec::new();
        for &(fi, _) in boosts {
            let f = FIELDS[fi];
            let mut n = 0f64;
            let mut total = 0f64;
            let mut df: HashMap<String, f64> = HashMap::new();
            for text in self.docs.values() {
                let toks = text.get(f).map(|t| a.tokens(t)).unwrap_or_default();
                if !toks.is_empty() {
                    n += 1.0;
                    total += toks.len() as f64;
                }
                let mut seen: Vec<&str> = toks.iter().map(|t| t.term.as_str()).collect();
                seen.sort();
                seen.dedup();
                for t in seen {
                    *df.entry(t.to_string()).or_default() += 1.0;
                }
            }
            stats.push((n, if n > 0.0 { total / n } else { 1.0 }, df));
        }
        for (&row, text) in &self.docs {
            if allowed.is_some_and(|al| !al.contains(row)) {
                continue;
            }
            let mut score = 0f64;
            let mut matched = false;
            for (qi, &(fi, boost)) in boosts.iter().enumerate() {
                let toks = text
                    .get(FIELDS[fi])
                    .map(|t| a.tokens(t))
                    .unwrap_or_default();
                let (n, avgdl, df) = &stats[qi];
                for t in &qterms {
                    let tf = toks.iter().filter(|x| &x.term == t).count() as f64;
                    if tf == 0.0 {
                        continue;
                    }
                    matched = true;
                    let d = df[t];
                    let idf = (1.0 + (n - d + 0.5) / (d + 0.5)).ln();
                    let len = toks.len() as f64;
                    score += boost as f64 * idf * tf * 2.2
                        / (tf + 1.2 * (1.0 - 0.75 + 0.75 * len / avgdl));
                }
            }
            let phrases_ok = phrases.iter().all(|p| {
                let pt = a.tokens(p);
                if pt.is_empty() {
                    return true;
                }
                boosts.iter().any(|&(fi, _)| {
                    let toks = text
                        .get(FIELDS[fi])
                        .map(|t| a.tokens(t))
                        .unwrap_or_default();
                    toks.iter().any(|start| {
                        pt.iter().all(|w| {
                            let want = start.position + w.position - pt[0].position;
                            toks.iter().any(|x| x.position == want && x.term == w.term)
                        })
                    })
                })
            });
            if matched && phrases_ok {
                scores.push((row, score));
            }
        }
        scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scores.truncate(k);
        scores
    }
}

fn id_of(row: u32) -> Option<Arc<str>> {
    Some(Arc::from(format!("d{row:08}")))
}

fn options() -> Vec<(String, TextOptions)> {
    FIELDS
        .iter()
        .map(|f| (f.to_string(), TextOptions::default()))
        .collect()
}

fn run_merges(ix: &mut TextIndex) -> usize {
    let mut n = 0;
    while let Some(plan) = ix.merge_plan() {
        ix.install_merge(merge(plan));
        n += 1;
    }
    n
}

fn check(
    ix: &TextIndex,
    brute: &Brute,
    rng: &mut StdRng,
    vocab: &[String],
    queries: usize,
    strategies: &mut std::collections::BTreeSet<&'static str>,
) {
    for qn in 0..queries {
        let n = rng.gen_range(1..5);
        let mut q = sentence(rng, vocab, n);
        if qn % 5 == 0 {
            // A phrase taken from a live document's body.
            let rows: Vec<&u32> = brute.docs.keys().collect();
            let doc = &brute.docs[rows[rng.gen_range(0..rows.len())]];
            if let Some(body) = doc.get("body") {
                let w: Vec<&str> = body.split(' ').collect();
                let s = rng.gen_range(0..w.len());
                let e = (s + 2).min(w.len());
                q = format!("{q} \"{}\"", w[s..e].join(" "));
            }
        }
        let boosts: Vec<(usize, f32)> = match qn % 3 {
            0 => vec![(0, 1.0), (1, 1.0)],
            1 => vec![(0, 2.5), (1, 1.0)],
            _ => vec![(1, 1.0)],
        };
        // Filters: a wide one (the WAND path) and a narrow one (rows scored directly).
        let allowed = (qn % 4 == 0 || qn % 4 == 2).then(|| {
            let p = if qn % 4 == 0 { 0.3 } else { 0.02 };
            let mut b = RoaringBitmap::new();
            for &r in brute.docs.keys() {
                if rng.gen_bool(p) {
                    b.insert(r);
                }
            }
            b
        });
        let k = [1, 10, 50][qn % 3];
        let want = brute.search(&q, &boosts, allowed.as_ref(), k);
        let got = match ix.query(&q, &boosts) {
            Err(e) => {
                assert!(want.is_empty(), "{q:?}: {e} but brute force found {want:?}");
                continue;
            }
            Ok(None) => Vec::new(),
            Ok(Some(tq)) => {
                let (hits, stats) = ix
                    .search(&tq, k, allowed.as_ref(), &id_of, &Cancel::never())
                    .unwrap();
                strategies.insert(stats.strategy);
                hits
            }
        };
        // The same score sequence as the exact top k, and every hit has its exact score: ids may
        // differ only between documents whose scores tie within float rounding (f32 sums in
        // another order), which then break by id on each side.
        assert_eq!(got.len(), want.len(), "{q:?} k {k}: {got:?} vs {want:?}");
        let exact: HashMap<u32, f64> = brute
            .search(&q, &boosts, allowed.as_ref(), usize::MAX)
            .into_iter()
            .collect();
        let close = |a: f64, b: f64| ((a - b) / b).abs() < 1e-4;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                close(g.1 as f64, w.1),
                "{q:?} boosts {boosts:?} k {k}: hit {i} scores {} but the exact top k has {} (got {got:?}, want {want:?})",
                g.1,
                w.1
            );
            let e = exact.get(&g.0).copied();
            assert!(
                e.is_some_and(|e| close(g.1 as f64, e)),
                "{q:?}: row {} scored {} but its exact score is {e:?}",
                g.0,
                g.1
            );
            if g.0 != w.0 {
                assert!(
                    close(exact[&g.0], w.1),
                    "{q:?}: hit {i} is row {} not {}",
                    g.0,
                    w.0
                );
            }
        }
    }
}

#[test]
fn bm25_top_k_equals_the_direct_computation_across_segments_merges_and_deletes() {
    let mut rng = StdRng::seed_from_u64(7);
    let vocab = words();
    let mut ix = TextIndex::new(&options());
    ix.set_seal_docs(64);
    let mut brute = Brute {
        docs: HashMap::new(),
    };
    let mut merges = 0;
    let mut strategies = std::collections::BTreeSet::new();
    for round in 0..6 {
        for _ in 0..600 {
            let row = rng.gen_range(0..2500u32);
            if rng.gen_bool(0.2) {
                ix.remove(row);
                brute.docs.remove(&row);
                continue;
            }
            let mut text = BTreeMap::new();
            if rng.gen_bool(0.8) {
                let n = rng.gen_range(1..6);
                text.insert("title".to_string(), sentence(&mut rng, &vocab, n));
            }
            if rng.gen_bool(0.9) {
                let n = rng.gen_range(3..40);
                text.insert("body".to_string(), sentence(&mut rng, &vocab, n));
            }
            // A rewrite: remove the old version first (as the collection does).
            ix.remove(row);
            ix.insert(row, &text);
            brute.docs.insert(row, text);
        }
        if round == 1 || round == 3 {
            merges += run_merges(&mut ix);
        }
        check(&ix, &brute, &mut rng, &vocab, 60, &mut strategies);
    }
    assert!(merges > 0, "the test never merged");
    assert_eq!(
        strategies.into_iter().collect::<Vec<_>>(),
        ["exact_over_filter", "wand"],
        "both plans are checked"
    );
    let info = serde_json::to_value(ix.info()).unwrap();
    assert!(info["sealed_segments"].as_u64().unwrap() > 1, "{info}");
    assert!(info["mutable_docs"].as_u64().unwrap() > 0, "{info}");
}

#[test]
fn the_top_k_of_a_frequent_term_is_found_without_scoring_every_match() {
    let mut rng = StdRng::seed_from_u64(11);
    let vocab = words();
    let mut ix = TextIndex::new(&options());
    let mut brute = Brute {
        docs: HashMap::new(),
    };
    for row in 0..20_000u32 {
        let mut text = BTreeMap::new();
        let n = rng.gen_range(3..30);
        text.insert("body".to_string(), sentence(&mut rng, &vocab, n));
        ix.insert(row, &text);
        brute.docs.insert(row, text);
    }
    run_merges(&mut ix);
    let boosts = [(1usize, 1.0f32)];
    // A very common word and a rarer one: most matches hold only the common word, and their
    // bound stays below the top 10's once documents with both are found.
    let text = "search term40";
    let q = ix.query(text, &boosts).unwrap().unwrap();
    let (hits, stats) = ix.search(&q, 10, None, &id_of, &Cancel::never()).unwrap();
    let matching = brute.search(text, &boosts, None, usize::MAX).len() as u64;
    assert_eq!(
        hits.iter().map(|h| h.0).collect::<Vec<_>>(),
        brute
            .search(text, &boosts, None, 10)
            .iter()
            .map(|w| w.0)
            .collect::<Vec<_>>()
    );
    assert!(matching > 5_000, "{matching} matching documents");
    assert!(
        stats.scored * 4 < matching,
        "scored {} of {matching} matching documents ({stats:?})",
        stats.scored
    );
}

#[test]
fn queries_without_words_are_refused_and_unknown_words_find_nothing() {
    let mut ix = TextIndex::new(&options());
    let mut text = BTreeMap::new();
    text.insert("body".to_string(), "The quick brown fox".to_string());
    ix.insert(0, &text);
    let b = [(1usize, 1.0f32)];
    assert!(ix.query("the of and", &b).is_err());
    assert!(ix.query("  ,,, ", &b).is_err());
    assert!(ix.query("zebra", &b).unwrap().is_none());
    // Bounded work per query: at most 64 distinct words and 16 phrases.
    let many: String = (0..65).map(|i| format!("w{i} ")).collect();
    assert!(ix.query(&many, &b).unwrap_err().contains("at most 64"));
    let ok: String = (0..64).map(|i| format!("w{i} w{i} ")).collect();
    assert!(ix.query(&ok, &b).unwrap().is_none());
    let phrases: String = (0..17).map(|i| format!("\"w{i}\" ")).collect();
    assert!(ix.query(&phrases, &b).unwrap_err().contains("at most 16"));
    // A phrase whose words exist but not adjacently finds nothing; adjacent finds the document.
    let q = ix.query("\"quick fox\"", &b).unwrap().unwrap();
    assert!(ix
        .search(&q, 10, None, &id_of, &Cancel::never())
        .unwrap()
        .0
        .is_empty());
    let q = ix.query("\"quick brown\"", &b).unwrap().unwrap();
    assert_eq!(
        ix.search(&q, 10, None, &id_of, &Cancel::never())
            .unwrap()
            .0
            .len(),
        1
    );
    // Deleted documents are never found and no longer count in N.
    ix.remove(0);
    assert!(ix.query("fox", &b).unwrap().is_none());
}

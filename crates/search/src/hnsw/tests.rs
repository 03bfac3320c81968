//! Scenarios the index must survive: recall against brute force per metric and data shape, filtered
//! search, the pending path, updates, churn, concurrent writers and readers, persistence and corruption.

use super::*;
use crate::distance::score;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const DIM: usize = 24;

fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect())
        .collect()
}

/// `clusters` Gaussian-ish blobs; returns vectors and each one's cluster.
fn clustered_vectors(
    n: usize,
    dim: usize,
    clusters: usize,
    seed: u64,
) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres = random_vectors(clusters, dim, seed ^ 0xC1);
    let mut out = Vec::with_capacity(n);
    let mut which = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.gen_range(0..clusters);
        out.push(
            centres[c]
                .iter()
                .map(|x| x * 3.0 + rng.gen_range(-0.5..0.5) + rng.gen_range(-0.5..0.5))
                .collect(),
        );
        which.push(c);
    }
    (out, which)
}

fn params() -> HnswParams {
    HnswParams {
        m: 16,
        ef_construction: 100,
        seed: 7,
    }
}

fn build(vectors: &[Vec<f32>], metric: Metric) -> Hnsw {
    let index = Hnsw::new(vectors[0].len(), metric, params());
    for (i, v) in vectors.iter().enumerate() {
        index.set(i as u32, v);
    }
    assert_eq!(index.pending(), vectors.len());
    assert_eq!(index.link_pending(usize::MAX), vectors.len());
    assert_eq!(index.pending(), 0);
    index
}

fn brute_force(
    vectors: &[Vec<f32>],
    metric: Metric,
    q: &[f32],
    k: usize,
    allow: &dyn Fn(u32) -> bool,
) -> Vec<u32> {
    let mut all: Vec<(f32, u32)> = vectors
        .iter()
        .enumerate()
        .filter(|(i, _)| allow(*i as u32))
        .map(|(i, v)| (score(metric, q, v), i as u32))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.into_iter().take(k).map(|(_, i)| i).collect()
}

fn recall(got: &[(u32, f32)], want: &[u32]) -> f64 {
    if want.is_empty() {
        return 1.0;
    }
    let got: HashSet<u32> = got.iter().map(|h| h.0).collect();
    want.iter().filter(|w| got.contains(w)).count() as f64 / want.len() as f64
}

fn mean_recall(
    index: &Hnsw,
    vectors: &[Vec<f32>],
    queries: &[Vec<f32>],
    ef: usize,
    allow: Option<&(dyn Fn(u32) -> bool + Sync)>,
) -> f64 {
    let all = |_: u32| true;
    let mut total = 0.0;
    for q in queries {
        let out = index.search(q, 10, ef, allow);
        if let Some(f) = allow {
            assert!(
                out.hits.iter().all(|h| f(h.0)),
                "a filtered-out node was returned"
            );
        }
        let want = brute_force(vectors, index.metric(), q, 10, allow.unwrap_or(&all));
        total += recall(&out.hits, &want);
    }
    total / queries.len() as f64
}

fn check_recall(metric: Metric, clustered: bool) {
    let n = 20_000;
    let vectors = if clustered {
        clustered_vectors(n, DIM, 50, 11).0
    } else {
        random_vectors(n, DIM, 11)
    };
    let queries = if clustered {
        clustered_vectors(100, DIM, 50, 11).0
    } else {
        random_vectors(100, DIM, 12)
    };
    let index = build(&vectors, metric);
    let r = mean_recall(&index, &vectors, &queries, 128, None);
    eprintln!("{metric:?} clustered={clustered}: recall@10 {r:.4}");
    assert!(r >= 0.95, "{metric:?} clustered={clustered}: recall@10 {r}");
}

#[test]
fn recall_at_10_cosine_random_and_clustered() {
    check_recall(Metric::Cosine, false);
    check_recall(Metric::Cosine, true);
}

#[test]
fn recall_at_10_dot_random_and_clustered() {
    check_recall(Metric::Dot, false);
    check_recall(Metric::Dot, true);
}

#[test]
fn recall_at_10_l2_random_and_clustered() {
    check_recall(Metric::L2, false);
    check_recall(Metric::L2, true);
}

#[test]
fn filtered_search_returns_only_allowed_nodes_with_recall() {
    let (vectors, cluster) = clustered_vectors(20_000, DIM, 20, 21);
    let (queries, query_cluster) = clustered_vectors(100, DIM, 20, 21);
    let index = build(&vectors, Metric::L2);
    for modulus in [2u32, 10, 100] {
        let allow = move |n: u32| n.wrapping_mul(2_654_435_761).is_multiple_of(modulus);
        let r = mean_recall(&index, &vectors, &queries, 64, Some(&allow));
        eprintln!("selectivity 1/{modulus}: recall@10 {r:.4}");
        assert!(r >= 0.9, "selectivity 1/{modulus}: recall {r}");
    }
    // Correlated with the query: only another cluster than the query's is allowed, so every allowed
    // node is far from the query and the walk must cross rejected ones to reach them.
    let mut total = 0.0;
    for (q, qc) in queries.iter().zip(&query_cluster) {
        let target = (qc + 1) % 20;
        let allow = |n: u32| cluster[n as usize] == target;
        let out = index.search(q, 10, 64, Some(&allow));
        assert!(out.hits.iter().all(|h| allow(h.0)));
        total += recall(&out.hits, &brute_force(&vectors, Metric::L2, q, 10, &allow));
    }
    let r = total / queries.len() as f64;
    eprintln!("correlated filter: recall@10 {r:.4}");
    assert!(r >= 0.9, "correlated filter: recall {r}");
}

#[test]
fn set_is_visible_at_once_then_linked() {
    let vectors = random_vectors(2_000, DIM, 31);
    let index = build(&vectors, Metric::Cosine);
    let fresh = random_vectors(1, DIM, 32).remove(0);
    index.set(5_000, &fresh);
    assert_eq!(index.pending(), 1);
    let out = index.search(&fresh, 1, 32, None);
    assert_eq!(out.hits[0].0, 5_000, "pending node not found");
    assert!(out.exact_scanned >= 1);
    assert!((out.hits[0].1 - 1.0).abs() < 1e-5);
    assert_eq!(index.link_pending(10), 1);
    assert_eq!(index.pending(), 0);
    let out = index.search(&fresh, 1, 32, None);
    assert_eq!(out.hits[0].0, 5_000, "linked node not found");
    assert_eq!(out.exact_scanned, 0);
    // A filter applies to pending nodes too.
    index.set(5_001, &fresh);
    let out = index.search(&fresh, 5, 32, Some(&|n| n != 5_001));
    assert!(out.hits.iter().all(|h| h.0 != 5_001));
}

#[test]
fn update_of_a_linked_node_scores_the_new_vector_only() {
    let vectors = random_vectors(3_000, DIM, 41);
    let index = build(&vectors, Metric::L2);
    let node = 17u32;
    let old = vectors[node as usize].clone();
    let new: Vec<f32> = old.iter().map(|x| -x + 0.25).collect();
    index.set(node, &new);
    assert_eq!(index.pending(), 1);
    for linked in [false, true] {
        let out = index.search(&new, 3, 64, None);
        assert_eq!(out.hits[0].0, node, "linked={linked}");
        assert!(out.hits[0].1.abs() < 1e-5, "new vector scores 0 distance");
        let out = index.search(&old, 50, 64, None);
        for &(n, s) in &out.hits {
            if n == node {
                let want = score(Metric::L2, &old, &new);
                assert!((s - want).abs() < 1e-4, "old vector scored: {s} vs {want}");
            }
        }
        assert_eq!(index.vector(node).unwrap(), new);
        if !linked {
            assert_eq!(index.link_pending(100), 1);
        }
    }
}

#[test]
fn churn_keeps_memory_bounded_and_every_live_node_findable() {
    let ids = 2_000u32;
    let index = Hnsw::new(DIM, Metric::Cosine, params());
    let mut rng = StdRng::seed_from_u64(51);
    let mut current: Vec<Vec<f32>> = random_vectors(ids as usize, DIM, 52);
    for (i, v) in current.iter().enumerate() {
        index.set(i as u32, v);
    }
    index.link_pending(usize::MAX);
    let mut bytes_round_one = 0;
    for round in 0..30 {
        // Remove a third for good, replace the rest: remove then set with a new vector.
        let mut removed = HashSet::new();
        for id in 0..ids {
            index.remove(id);
            if rng.gen_range(0..3) == 0 && round % 2 == 0 {
                removed.insert(id);
            } else {
                current[id as usize] = (0..DIM).map(|_| rng.gen_range(-1.0..1.0)).collect();
                index.set(id, &current[id as usize]);
            }
        }
        index.link_pending(usize::MAX);
        index.maintain();
        let stats = index.stats();
        assert_eq!(stats.live, ids as usize - removed.len());
        assert_eq!(stats.pending, 0);
        if round == 0 {
            bytes_round_one = stats.bytes;
        }
        assert!(
            stats.bytes * 2 <= bytes_round_one * 3,
            "round {round}: {} bytes vs {bytes_round_one}",
            stats.bytes
        );
        let mut misses = 0;
        for id in 0..ids {
            let out = index.search(&current[id as usize], 10, 64, None);
            assert!(
                out.hits.iter().all(|h| !removed.contains(&h.0)),
                "removed node returned"
            );
            if removed.contains(&id) {
                continue;
            }
            if out.hits.first().map(|h| h.0) != Some(id) {
                misses += 1;
            }
        }
        assert_eq!(
            misses, 0,
            "round {round}: live nodes not top-1 for their own vector"
        );
    }
}

#[test]
fn maintain_repairs_tombstones() {
    let vectors = random_vectors(5_000, DIM, 61);
    let index = build(&vectors, Metric::L2);
    let removed: HashSet<u32> = (0..5_000u32).filter(|n| n % 3 == 0).collect();
    for &n in &removed {
        index.remove(n);
    }
    assert_eq!(index.stats().tombstones, removed.len());
    index.maintain();
    assert_eq!(index.stats().tombstones, 0);
    let allow_live = |n: u32| !removed.contains(&n);
    let queries = random_vectors(50, DIM, 62);
    let mut total = 0.0;
    for q in &queries {
        let out = index.search(q, 10, 64, None);
        assert!(out.hits.iter().all(|h| allow_live(h.0)));
        total += recall(
            &out.hits,
            &brute_force(&vectors, Metric::L2, q, 10, &allow_live),
        );
    }
    let r = total / queries.len() as f64;
    assert!(r >= 0.95, "recall after repair {r}");
    // No list points at a removed node any more.
    let mut links = Vec::new();
    for n in (0..5_000u32).filter(|n| !removed.contains(n)) {
        index.links_into(n, 0, &mut links);
        assert!(
            links.iter().all(|l| !removed.contains(l)),
            "node {n} links a tombstone"
        );
    }
}

#[test]
fn concurrent_writers_linker_and_searchers() {
    let index = Arc::new(Hnsw::new(DIM, Metric::Cosine, params()));
    let vectors = random_vectors(3_000, DIM, 71);
    for (i, v) in vectors.iter().enumerate().take(1_000) {
        index.set(i as u32, v);
    }
    index.link_pending(usize::MAX);
    // Ids in `gone` were removed and never set again; a search that starts later must not see them.
    let gone: Arc<Vec<AtomicBool>> = Arc::new((0..3_000).map(|_| AtomicBool::new(false)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (index, gone, stop, vectors) =
            (index.clone(), gone.clone(), stop.clone(), vectors.clone());
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(72);
            for step in 0..6_000u32 {
                let id = rng.gen_range(0..3_000u32);
                if id < 1_500 && rng.gen_range(0..4) == 0 {
                    index.remove(id);
                    gone[id as usize].store(true, Ordering::SeqCst);
                } else if id >= 1_500 || !gone[id as usize].load(Ordering::SeqCst) {
                    index.set(id, &vectors[((id + step) % 3_000) as usize]);
                }
                if step % 200 == 0 {
                    index.link_pending(150);
                    index.maintain();
                }
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let searchers: Vec<_> = (0..2)
        .map(|t| {
            let (index, gone, stop, vectors) =
                (index.clone(), gone.clone(), stop.clone(), vectors.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::SeqCst) {
                    let before: Vec<bool> = gone.iter().map(|g| g.load(Ordering::SeqCst)).collect();
                    let out = index.search(&vectors[i % 3_000], 10, 32, None);
                    for h in &out.hits {
                        assert!(
                            !before[h.0 as usize],
                            "node {} returned after its remove",
                            h.0
                        );
                    }
                    i += 7;
                }
            })
        })
        .collect();
    writer.join().expect("writer panicked");
    for s in searchers {
        s.join().expect("searcher panicked");
    }
    index.link_pending(usize::MAX);
    assert_eq!(index.pending(), 0);
}

fn saved(index: &Hnsw) -> Vec<u8> {
    let mut bytes = Vec::new();
    index.write_to(&mut bytes).expect("write to a Vec");
    bytes
}

#[test]
fn persistence_round_trip_gives_identical_results() {
    let vectors = random_vectors(3_000, DIM, 81);
    let index = build(&vectors, Metric::Dot);
    index.remove(3);
    index.set(2_999, &vectors[5]);
    index.set(4_000, &vectors[6]);
    assert_eq!(index.pending(), 2);
    let bytes = saved(&index);
    let loaded = Hnsw::read_from(&bytes, DIM, Metric::Dot).expect("round trip");
    assert_eq!(loaded.stats().live, index.stats().live);
    assert_eq!(loaded.pending(), 2);
    assert_eq!(loaded.stats().tombstones, 1);
    for q in random_vectors(50, DIM, 82) {
        assert_eq!(
            index.search(&q, 10, 40, None),
            loaded.search(&q, 10, 40, None)
        );
    }
    assert_eq!(saved(&loaded), bytes, "a loaded index saves the same bytes");
    assert!(loaded.link_pending(usize::MAX) == 2 && loaded.pending() == 0);
}

#[test]
fn corrupt_or_foreign_files_are_refused_with_offset() {
    let vectors = random_vectors(200, 8, 91);
    let index = build(&vectors, Metric::Cosine);
    index.set(300, &vectors[0]);
    let bytes = saved(&index);
    assert!(Hnsw::read_from(&bytes, 8, Metric::Cosine).is_ok());
    let err = Hnsw::read_from(&bytes, 9, Metric::Cosine).unwrap_err();
    assert_eq!((err.offset, err.reason), (12, "dimension mismatch"));
    let err = Hnsw::read_from(&bytes, 8, Metric::L2).unwrap_err();
    assert_eq!((err.offset, err.reason), (16, "metric mismatch"));
    assert_eq!(err.to_string(), "hnsw file: metric mismatch at byte 16");
    for len in 0..bytes.len() {
        let err =
            Hnsw::read_from(&bytes[..len], 8, Metric::Cosine).expect_err("truncated accepted");
        assert!(
            err.offset <= len as u64,
            "offset {} past the end {len}",
            err.offset
        );
    }
    let mut rng = StdRng::seed_from_u64(92);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 1 << rng.gen_range(0..8);
        assert!(
            Hnsw::read_from(&bad, 8, Metric::Cosine).is_err(),
            "flip at {i} accepted"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Hnsw::read_from(&longer, 8, Metric::Cosine).is_err());
}

#[test]
fn index_is_send_and_sync_and_tiny_parameters_still_link() {
    fn assert_send_sync<T: Send + Sync + std::fmt::Debug>() {}
    assert_send_sync::<Hnsw>();
    let vectors = random_vectors(500, DIM, 111);
    let index = Hnsw::new(
        DIM,
        Metric::L2,
        HnswParams {
            m: 8,
            ef_construction: 0,
            seed: 1,
        },
    );
    for (i, v) in vectors.iter().enumerate() {
        index.set(i as u32, v);
    }
    assert_eq!(index.link_pending(usize::MAX), 500);
    for node in [0u32, 42, 499] {
        let hits = index.search(&vectors[node as usize], 1, 200, None).hits;
        assert_eq!(hits[0].0, node);
    }
    assert!(format!("{index:?}").contains("live: 500"));
}

#[test]
fn search_exact_skips_removed_and_unknown() {
    let vectors = random_vectors(100, DIM, 101);
    let index = build(&vectors, Metric::L2);
    index.remove(1);
    let out = index.search_exact(&vectors[1], 5, &mut [1u32, 2, 3, 9_999].into_iter());
    assert_eq!(out.exact_scanned, 2);
    let want = brute_force(&vectors, Metric::L2, &vectors[1], 2, &|n| n == 2 || n == 3);
    assert_eq!(out.hits.iter().map(|h| h.0).collect::<Vec<_>>(), want);
    assert!(out.hits.windows(2).all(|w| w[0].1 >= w[1].1));
}

/// A node being linked while a search runs is found by that search: either the pending scan scores it
/// or, once linked, the walk reaches it. (The walk-then-scan order missed nodes linked in between.)
#[test]
fn a_node_linked_during_a_search_is_not_missed() {
    let dim = 16;
    let vectors = random_vectors(3000, dim, 11);
    let index = Arc::new(build(&vectors[..500], Metric::Cosine));
    let done = Arc::new(AtomicBool::new(false));
    let linker = {
        let (index, done) = (index.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                index.link_pending(1);
            }
        })
    };
    let mut missed = Vec::new();
    for (i, v) in vectors.iter().enumerate().skip(500) {
        index.set(i as u32, v);
        for _ in 0..3 {
            let out = index.search(v, 1, 64, None);
            if out.hits.first().map(|h| h.0) != Some(i as u32) {
                missed.push(i);
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    linker.join().unwrap();
    assert!(
        missed.is_empty(),
        "nodes not found by their own vector while being linked: {missed:?}"
    );
}

/// While a graph is being built (a rebuild at start: every node pending, the linker taking them one
/// at a time), every node is found by its own vector, whichever stage the linker is at. A node being
/// connected on an upper level must not be reachable there before its level-0 list exists, or a
/// search descending onto it starts its level-0 beam from a node without links and finds nothing else.
#[test]
fn every_node_is_found_while_the_graph_is_being_built() {
    let dim = 8;
    let n = 400;
    let mut missed = Vec::new();
    for round in 0..6u64 {
        let vectors = random_vectors(n, dim, 100 + round);
        let index = Arc::new(Hnsw::new(
            dim,
            Metric::Cosine,
            HnswParams {
                m: 4,
                ef_construction: 200,
                seed: round,
            },
        ));
        for (i, v) in vectors.iter().enumerate() {
            index.set(i as u32, v);
        }
        // Odd rounds link with two threads at once.
        let linkers: Vec<_> = (0..1 + round % 2)
            .map(|_| {
                let index = index.clone();
                std::thread::spawn(move || while index.link_pending(1) > 0 {})
            })
            .collect();
        // Search every node, over and over, until the linker is done (and once more after).
        loop {
            let finished = index.pending() == 0;
            for (i, v) in vectors.iter().enumerate() {
                let out = index.search(v, 1, 100, None);
                if out.hits.first().map(|h| h.0) != Some(i as u32) {
                    missed.push((round, i, index.pending()));
                }
            }
            if finished {
                break;
            }
        }
        for l in linkers {
            l.join().unwrap();
        }
    }
    assert!(
        missed.is_empty(),
        "{} searches missed their own node during linking (round, node, pending): {:?}",
        missed.len(),
        &missed[..missed.len().min(20)]
    );
}

/// Several threads linking one index at once build a graph as good as one thread does: recall@10
/// against brute force, every node top-1 for its own vector, every pending node linked exactly once.
#[test]
fn concurrent_linkers_build_a_graph_as_good_as_one() {
    let (mut vectors, _) = clustered_vectors(12_200, DIM, 30, 21);
    let queries = vectors.split_off(12_000);
    let index = Arc::new(Hnsw::new(DIM, Metric::Cosine, params()));
    for (i, v) in vectors.iter().enumerate() {
        index.set(i as u32, v);
    }
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let index = index.clone();
            std::thread::spawn(move || {
                let mut linked = 0;
                loop {
                    let n = index.link_pending(16);
                    if n == 0 {
                        break linked;
                    }
                    linked += n;
                }
            })
        })
        .collect();
    let linked: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(linked, vectors.len(), "each node linked exactly once");
    assert_eq!(index.pending(), 0);
    let single = build(&vectors, Metric::Cosine);
    let r_many = mean_recall(&index, &vectors, &queries, 64, None);
    let r_one = mean_recall(&single, &vectors, &queries, 64, None);
    assert!(
        r_many >= 0.95 && r_many >= r_one - 0.02,
        "recall with 3 linkers {r_many:.3}, with one {r_one:.3}"
    );
    let missed: Vec<usize> = (0..vectors.len())
        .step_by(7)
        .filter(|&i| index.search(&vectors[i], 1, 100, None).hits[0].0 != i as u32)
        .collect();
    assert!(
        missed.is_empty(),
        "not top-1 for their own vector: {missed:?}"
    );
}

#[test]
fn a_cluster_of_identical_vectors_links_outward_and_does_not_trap_searches() {
    // 400 copies of one vector among 3,000 others. hnswlib's heuristic keeps every copy a copy
    // finds (similarity 1 to the base and to the kept copies alike), so a copy's list held only
    // copies and the cluster became a clique that beams entered and could not leave.
    let (mut vectors, _) = clustered_vectors(3_000, DIM, 30, 21);
    let copy = vectors[0].clone();
    let mut copies = HashSet::new();
    for i in 0..400 {
        // Interleaved with the others, as real duplicates arrive.
        let at = 1 + i * 7;
        vectors.insert(at, copy.clone());
        copies.insert(at as u32);
    }
    copies.insert(0);
    let index = build(&vectors, Metric::Cosine);
    let mut links = Vec::new();
    let (mut twin_links, mut all_links) = (0, 0);
    for &node in &copies {
        index.links_into(node, 0, &mut links);
        twin_links += links.iter().filter(|n| copies.contains(n)).count();
        all_links += links.len();
    }
    let share = twin_links as f64 / all_links as f64;
    eprintln!(
        "identical cluster: {twin_links} of {all_links} level-0 links of copies go to copies"
    );
    let mut missed = 0;
    for (i, v) in vectors.iter().enumerate() {
        if copies.contains(&(i as u32)) {
            continue;
        }
        let hits = index.search(v, 10, 64, None);
        if !hits.hits.iter().any(|h| h.0 == i as u32) {
            missed += 1;
        }
    }
    eprintln!("identical cluster: {missed} of 3000 not found by their own vector");
    assert!(
        missed <= 3,
        "{missed} of 3000 nodes not found by their own vector"
    );
    assert!(
        share < 0.5,
        "{share:.2} of the copies' links stay inside the cluster"
    );
}

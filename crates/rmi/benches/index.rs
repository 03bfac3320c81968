//! bench/index: the learned index against BTreeMap, binary search and a hash map on five generated
//! distributions standing in for SOSD's plus one real one (`pypi_prefix`: the first 8 bytes of every
//! PyPI package name, big-endian), each at several sizes. Progress on stderr; the last stdout line is
//! one JSON object.
//!
//! Usage: `cargo bench -p kyrodb-rmi --bench index -- [--quick] [--n N] [--queries Q] [--eps E]
//! [--only DIST] [--pypi NAMES_FILE]` (`NAMES_FILE`: one package name a line; `bench/index/run` extracts
//! it from `pypi_summaries.tsv.gz`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use kyrodb_rmi::{Rmi, RmiConfig, Shape};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

struct Args {
    sizes: Vec<usize>,
    pypi: Option<String>,
    queries: usize,
    eps: u32,
    only: Option<String>,
    diag: bool,
    compare: bool,
    buckets: u32,
}

fn parse_args() -> Args {
    let mut args = Args {
        sizes: vec![10_000, 100_000, 1_000_000, 10_000_000, 100_000_000],
        pypi: None,
        queries: 2_000_000,
        eps: RmiConfig::default().epsilon_max_slots,
        only: None,
        diag: false,
        compare: false,
        buckets: RmiConfig::default().router_buckets_per_leaf,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.sizes = vec![10_000, 100_000, 1_000_000, 10_000_000],
            "--n" => {
                args.sizes = it
                    .next()
                    .map(|v| {
                        v.split(',')
                            .map(|n| n.parse().expect("--n N[,N…]"))
                            .collect()
                    })
                    .expect("--n N[,N…]")
            }
            "--pypi" => args.pypi = it.next(),
            "--queries" => {
                args.queries = it.next().and_then(|v| v.parse().ok()).expect("--queries Q")
            }
            "--eps" => args.eps = it.next().and_then(|v| v.parse().ok()).expect("--eps E"),
            "--only" => args.only = it.next(),
            "--diag" => args.diag = true,
            "--compare" => args.compare = true,
            "--buckets" => {
                args.buckets = it.next().and_then(|v| v.parse().ok()).expect("--buckets B")
            }
            _ => {} // `cargo bench` appends `--bench`
        }
    }
    args
}

fn normal(rng: &mut SmallRng) -> f64 {
    let u: f64 = rng.gen::<f64>().max(1e-300);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.gen::<f64>()).cos()
}

fn pareto(rng: &mut SmallRng, alpha: f64) -> f64 {
    rng.gen::<f64>().max(1e-12).powf(-1.0 / alpha)
}

/// Draws from `gen` until `n` distinct keys exist; returns them sorted.
fn distinct(n: usize, rng: &mut SmallRng, mut gen: impl FnMut(&mut SmallRng) -> u64) -> Vec<u64> {
    let mut keys: Vec<u64> = Vec::with_capacity(n + n / 8);
    while keys.len() < n {
        let missing = n - keys.len();
        keys.extend((0..missing + missing / 16 + 16).map(|_| gen(rng)));
        keys.sort_unstable();
        keys.dedup();
    }
    // Drop evenly spaced extras so the shape is kept.
    let extra = keys.len() - n;
    if let Some(step) = keys.len().checked_div(extra) {
        let mut i = 0usize;
        keys.retain(|_| {
            i += 1;
            !(i.is_multiple_of(step) && i / step <= extra)
        });
        keys.truncate(n);
    }
    keys
}

fn uniform(n: usize, rng: &mut SmallRng) -> Vec<u64> {
    distinct(n, rng, |r| r.gen())
}

fn lognormal(n: usize, rng: &mut SmallRng) -> Vec<u64> {
    // σ = 2; e^(2·6.5) is beyond any sample of 10^9 normals, so it maps to 2^63.
    let scale = 2f64.powi(63) / (2.0f64 * 6.5).exp();
    distinct(n, rng, |r| {
        ((2.0 * normal(r)).exp() * scale).min(2f64.powi(63)) as u64
    })
}

/// Clustered cell ids: regions (cities) with heavy-tailed sizes and widths, each holding streets of
/// heavy-tailed widths whose popularity is skewed.
fn osm_like(n: usize, rng: &mut SmallRng) -> Vec<u64> {
    let regions = (n / 20_000).max(1);
    let weights: Vec<f64> = (0..regions).map(|_| pareto(rng, 1.1)).collect();
    let total: f64 = weights.iter().sum();
    let mut specs = Vec::with_capacity(regions);
    for w in &weights {
        let size = ((w / total) * n as f64 * 1.05).ceil() as usize;
        let centre = rng.gen::<u64>() >> 2;
        let width_bits = rng.gen_range(28..52u32);
        let streets = (size / 48).max(1);
        specs.push((size, centre, width_bits, streets));
    }
    let mut spec_i = 0usize;
    let mut left = 0usize;
    let mut street_seed = 0u64;
    distinct(n, rng, move |r| {
        while left == 0 {
            spec_i = (spec_i + 1) % specs.len();
            left = specs[spec_i].0;
            street_seed = r.gen();
        }
        left -= 1;
        let (_, centre, width_bits, streets) = specs[spec_i];
        let street = ((streets as f64) * r.gen::<f64>().powi(3)) as u64;
        let h = (street ^ street_seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let street_start = centre + (h >> (64 - width_bits));
        let street_bits = 8 + (h % 23) as u32;
        street_start + (r.gen::<u64>() >> (64 - street_bits))
    })
}

/// Near-uniform ids below 2^50 (density varying by block) plus a few dozen outliers near 2^64.
fn fb_like(n: usize, rng: &mut SmallRng) -> Vec<u64> {
    let blocks: Vec<f64> = (0..1024).map(|_| 0.5 + rng.gen::<f64>()).collect();
    let total: f64 = blocks.iter().sum();
    let cdf: Vec<f64> = blocks
        .iter()
        .scan(0.0, |acc, b| {
            *acc += b / total;
            Some(*acc)
        })
        .collect();
    let mut keys = distinct(n - 48, rng, |r| {
        let u: f64 = r.gen();
        let block = cdf.partition_point(|c| *c < u).min(1023) as u64;
        (block << 40) + (r.gen::<u64>() >> 24)
    });
    keys.extend((0..48).map(|_| u64::MAX - rng.gen_range(0..1u64 << 36)));
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Bursty edit timestamps in seconds: activity level switches per hour (lognormal), gaps exponential
/// within; equal seconds dedup away.
fn wiki_ts_like(n: usize, rng: &mut SmallRng) -> Vec<u64> {
    let mut t = 1_000_000_000f64;
    let mut rate = 1.0f64;
    let mut next_switch = t;
    distinct(n, rng, move |r| {
        if t >= next_switch {
            rate = (1.5 * normal(r)).exp() * 0.5;
            next_switch = t + 3600.0;
        }
        t += -r.gen::<f64>().max(1e-300).ln() / rate;
        t as u64
    })
}

fn queries(keys: &[u64], count: usize, rng: &mut SmallRng) -> Vec<u64> {
    (0..count)
        .map(|i| {
            let k = keys[rng.gen_range(0..keys.len())];
            if i % 10 != 9 {
                return k;
            }
            // Absent: a neighbour that is not a key, else a random non-key.
            let candidate = k.wrapping_add(1);
            if keys.binary_search(&candidate).is_err() {
                return candidate;
            }
            loop {
                let r: u64 = rng.gen();
                if keys.binary_search(&r).is_err() {
                    return r;
                }
            }
        })
        .collect()
}

/// Timed passes per measurement; the fastest is reported (the machine is shared with builds).
const PASSES: usize = 5;

/// Mean ns per query of `f` over all queries (best of [`PASSES`], after a warm-up); also returns the
/// checksum of the results.
fn time_ns(queries: &[u64], mut f: impl FnMut(u64) -> u64) -> (f64, u64) {
    let mut sum = 0u64;
    for &q in queries.iter().take(queries.len() / 4) {
        sum = sum.wrapping_add(f(q));
    }
    black_box(sum);
    let mut best = f64::INFINITY;
    for _ in 0..PASSES {
        let started = Instant::now();
        sum = 0;
        for &q in queries {
            sum = sum.wrapping_add(f(black_box(q)));
        }
        black_box(sum);
        best = best.min(started.elapsed().as_nanos() as f64 / queries.len() as f64);
    }
    (best, sum)
}

/// One timed pass of `f` over the first `count` queries: ns per query and the checksum.
fn one_pass(queries: &[u64], count: usize, mut f: impl FnMut(u64) -> u64) -> (f64, u64) {
    let started = Instant::now();
    let mut sum = 0u64;
    for &q in &queries[..count] {
        sum = sum.wrapping_add(f(black_box(q)));
    }
    black_box(sum);
    (started.elapsed().as_nanos() as f64 / count as f64, sum)
}

/// Like [`time_ns`] for two functions whose ratio is reported, passes interleaved (f, g, f, g, …) so a
/// noisy stretch of the shared machine hits both rather than one.
fn time_pair(
    queries: &[u64],
    mut f: impl FnMut(u64) -> u64,
    mut g: impl FnMut(u64) -> u64,
) -> ((f64, u64), (f64, u64)) {
    one_pass(queries, queries.len() / 4, &mut f);
    one_pass(queries, queries.len() / 4, &mut g);
    let (mut best_f, mut best_g) = ((f64::INFINITY, 0), (f64::INFINITY, 0));
    for _ in 0..PASSES {
        let a = one_pass(queries, queries.len(), &mut f);
        let b = one_pass(queries, queries.len(), &mut g);
        best_f = (best_f.0.min(a.0), a.1);
        best_g = (best_g.0.min(b.0), b.1);
    }
    (best_f, best_g)
}

fn pos(p: Option<usize>) -> u64 {
    p.map_or(0, |p| p as u64 + 1)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn run(name: &str, keys: &[u64], args: &Args, rng: &mut SmallRng) -> String {
    let n = keys.len();
    let qs = queries(keys, args.queries, rng);
    let config = RmiConfig {
        epsilon_max_slots: args.eps,
        router_buckets_per_leaf: args.buckets,
    };
    let started = Instant::now();
    let rmi = Rmi::build(keys, &config).expect("build");
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let stats = *rmi.stats();
    let window_max = rmi.window_max_slots();
    let model_bytes = rmi.model_bytes();
    let shape = rmi.shape().to_string();
    eprintln!(
        "  {name}/{n}: shape {shape}, built in {build_ms:.0} ms: {} leaves, {} tables, eps {} (mean leaf {:.1}, mean err {:.1}), {:.3} B/key, kernel {:?}",
        stats.leaf_count, stats.table_count, rmi.epsilon(), stats.epsilon_mean_slots, stats.error_mean_slots,
        rmi.model_bytes() as f64 / n as f64, rmi.kernel()
    );
    let ((rmi_ns, rmi_sum), (binary_ns, binary_sum)) = time_pair(
        &qs,
        |q| pos(rmi.find(keys, q)),
        |q| pos(keys.binary_search(&q).ok()),
    );
    let (lb_ns, _) = time_ns(&qs, |q| rmi.lower_bound(keys, q) as u64);
    let (predict_ns, _) = time_ns(&qs, |q| rmi.predict(q).unwrap_or(0) as u64);
    if args.diag {
        diagnose(&rmi, keys, &qs);
    }
    if args.compare {
        compare_shapes(keys, &config, &qs[..qs.len().min(500_000)]);
    }
    let mut out = vec![None; qs.len()];
    let mut batch_ns = f64::INFINITY;
    for _ in 0..PASSES {
        let started = Instant::now();
        rmi.find_batch(keys, &qs, &mut out);
        batch_ns = batch_ns.min(started.elapsed().as_nanos() as f64 / qs.len() as f64);
    }
    let batch_sum = out.iter().fold(0u64, |a, p| a.wrapping_add(pos(*p)));
    eprintln!("  {name}: rmi {rmi_ns:.1} ns (route+predict {predict_ns:.1}, lower_bound {lb_ns:.1}, batch {batch_ns:.1}), binary {binary_ns:.1} ns");
    assert_eq!(rmi_sum, binary_sum, "rmi disagrees with binary search");
    assert_eq!(batch_sum, binary_sum, "batch disagrees with binary search");
    drop(rmi);
    let btree: BTreeMap<u64, u64> = keys
        .iter()
        .enumerate()
        .map(|(i, &k)| (k, i as u64))
        .collect();
    let (btree_ns, btree_sum) = time_ns(&qs, |q| btree.get(&q).map_or(0, |p| p + 1));
    drop(btree);
    let mut hash: hashbrown::HashMap<u64, u64> = hashbrown::HashMap::with_capacity(n);
    hash.extend(keys.iter().enumerate().map(|(i, &k)| (k, i as u64)));
    let (hash_ns, hash_sum) = time_ns(&qs, |q| hash.get(&q).map_or(0, |p| p + 1));
    drop(hash);
    assert_eq!(btree_sum, binary_sum);
    assert_eq!(hash_sum, binary_sum);
    eprintln!(
        "  {name}: btree {btree_ns:.1} ns, hash {hash_ns:.1} ns -> rmi/btree {:.2}, rmi/binary {:.2}, rmi/hash {:.2}",
        rmi_ns / btree_ns, rmi_ns / binary_ns, rmi_ns / hash_ns
    );
    format!(
        "\"{name}/{n}\":{{\"dist\":\"{name}\",\"n\":{n},\"shape\":\"{}\",\"rmi_binary\":{},\"rmi_btree\":{},\"rmi_ns\":{},\"btree_ns\":{},\"binary_ns\":{},\"hash_ns\":{},\"window_max\":{},\"build_ms\":{},\"model_bytes_per_key\":{},\"rmi_lower_bound_ns\":{},\"rmi_batch_ns\":{},\"leaf_count\":{}}}",
        shape, round2(rmi_ns / binary_ns), round2(rmi_ns / btree_ns),
        round2(rmi_ns), round2(btree_ns), round2(binary_ns), round2(hash_ns), window_max, round2(build_ms),
        (model_bytes as f64 / n as f64 * 1e4).round() / 1e4, round2(lb_ns), round2(batch_ns), stats.leaf_count
    )
}

/// Every candidate shape forced, timed: what the chooser should have picked.
fn compare_shapes(keys: &[u64], config: &RmiConfig, qs: &[u64]) {
    let mut shapes: Vec<Shape> = vec![Shape::BinarySearch];
    shapes.extend([16, 32, 64].map(|b| Shape::SearchTree { block_keys: b }));
    shapes.extend([8, 16, 32, 64].map(|e| Shape::Learned { epsilon_max: e }));
    let mut line = String::new();
    for shape in shapes {
        let Ok(r) = Rmi::build_shape(keys, config, shape) else {
            continue;
        };
        let ((ns, _), (binary_ns, _)) = time_pair(
            qs,
            |q| pos(r.find(keys, q)),
            |q| pos(keys.binary_search(&q).ok()),
        );
        line += &format!(
            " {shape} {ns:.1} ns (binary {binary_ns:.1}) {:.2} B/key;",
            r.model_bytes() as f64 / keys.len() as f64
        );
    }
    eprintln!("    compare:{line}");
}

/// Where single-lookup time goes: each kernel, and probes that isolate the model from the window.
fn diagnose(rmi: &Rmi, keys: &[u64], qs: &[u64]) {
    for kernel in kyrodb_rmi::Kernel::ALL
        .into_iter()
        .filter(|k| k.is_supported())
    {
        let mut r = rmi.clone();
        r.set_kernel(kernel).expect("supported");
        let (find_ns, _) = time_ns(qs, |q| pos(r.find(keys, q)));
        let (lb_ns, _) = time_ns(qs, |q| r.lower_bound(keys, q) as u64);
        eprintln!("    diag {kernel:?}: find {find_ns:.1} ns, lower_bound {lb_ns:.1} ns");
    }
    let n = keys.len();
    let (probe_ns, _) = time_ns(qs, |q| keys[rmi.predict(q).unwrap_or(0)]);
    let (interp_ns, _) = time_ns(qs, |q| keys[((q as u128 * n as u128) >> 64) as usize]);
    eprintln!("    diag one key read at the prediction {probe_ns:.1} ns; at a one-multiply guess {interp_ns:.1} ns");
}

/// The first 8 bytes of each name (zero-padded), big-endian: clustered string-prefix keys, like a
/// document-id map or a name index produces. Sorted, deduplicated.
fn pypi_prefixes(path: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut keys: Vec<u64> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|name| {
            let mut b = [0u8; 8];
            let n = name.len().min(8);
            b[..n].copy_from_slice(&name.as_bytes()[..n]);
            u64::from_be_bytes(b)
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// `n` evenly spaced keys of `all` (all of them when `n >= all.len()`).
fn evenly(all: &[u64], n: usize) -> Vec<u64> {
    if n >= all.len() {
        return all.to_vec();
    }
    (0..n).map(|i| all[i * all.len() / n]).collect()
}

type Generator = fn(usize, &mut SmallRng) -> Vec<u64>;

fn main() {
    let args = parse_args();
    let dists: [(&str, Generator); 5] = [
        ("uniform", uniform),
        ("lognormal", lognormal),
        ("osm_like", osm_like),
        ("fb_like", fb_like),
        ("wiki_ts_like", wiki_ts_like),
    ];
    eprintln!(
        "bench/index: sizes {:?}, {} queries (10% absent), eps_max = {}",
        args.sizes, args.queries, args.eps
    );
    let pypi = args.pypi.as_deref().map(pypi_prefixes);
    let mut results = Vec::new();
    for &n in &args.sizes {
        for (i, (name, generate)) in dists.iter().enumerate() {
            if args.only.as_deref().is_some_and(|o| o != *name) {
                continue;
            }
            let mut rng = SmallRng::seed_from_u64(0x4b59_524f + i as u64);
            let started = Instant::now();
            let keys = generate(n, &mut rng);
            eprintln!(
                "{name}: {} keys generated in {:.1} s",
                keys.len(),
                started.elapsed().as_secs_f64()
            );
            results.push(run(name, &keys, &args, &mut rng));
        }
        let Some(all) = &pypi else { continue };
        if args.only.as_deref().is_some_and(|o| o != "pypi_prefix") {
            continue;
        }
        // The real set has ~513K distinct prefixes: smaller sizes are evenly spaced subsets, the first
        // size at or above it runs the whole set, larger ones are skipped.
        let previous_covered = args.sizes.iter().any(|&m| m < n && m >= all.len());
        if previous_covered {
            continue;
        }
        let keys = evenly(all, n);
        eprintln!("pypi_prefix: {} keys", keys.len());
        let mut rng = SmallRng::seed_from_u64(0x4b59_5250);
        results.push(run("pypi_prefix", &keys, &args, &mut rng));
    }
    println!(
        "{{\"suite\":\"index\",\"sizes\":{:?},\"results\":{{{}}}}}",
        args.sizes,
        results.join(",")
    );
}

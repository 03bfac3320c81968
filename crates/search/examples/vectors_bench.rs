//! Vector index benchmark: builds an index single-threaded from an `.fvecs` file, then measures
//! recall@10 and single-thread QPS (one query at a time) per `ef`, optionally with label filters.
//!
//! ```text
//! cargo run --release -p kyrodb-search --example vectors_bench -- \
//!   --base B.fvecs --queries Q.fvecs --truth T.ivecs [--labels L.u32 --selectivity 0.1,0.01
//!   --filtered-truth-prefix P] [--ef 10,20,40] [--metric cosine] [--m 16 --ef-construction 200]
//!   [--k 10] [--filtered-queries 1000] [--save F | --load F (skips the build)]
//!   [--repeat R (unfiltered curve: best QPS of R runs, for a machine shared with other work)]
//! ```
//! Prints one JSON line per measurement, then one JSON object with everything.

use std::collections::HashSet;
use std::time::Instant;

use kyrodb_search::distance::{kernel_name, Metric};
use kyrodb_search::hnsw::{Hnsw, HnswParams};
use serde_json::json;

struct Args {
    base: String,
    queries: String,
    truth: String,
    labels: Option<String>,
    selectivity: Vec<String>,
    filtered_truth_prefix: Option<String>,
    ef: Vec<usize>,
    metric: Metric,
    m: usize,
    ef_construction: usize,
    k: usize,
    filtered_queries: usize,
    save: Option<String>,
    load: Option<String>,
    repeat: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        base: String::new(),
        queries: String::new(),
        truth: String::new(),
        labels: None,
        selectivity: Vec::new(),
        filtered_truth_prefix: None,
        ef: vec![10, 20, 40, 80, 160, 320],
        metric: Metric::Cosine,
        m: 16,
        ef_construction: 200,
        k: 10,
        filtered_queries: 1000,
        save: None,
        load: None,
        repeat: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--base" => a.base = value,
            "--queries" => a.queries = value,
            "--truth" => a.truth = value,
            "--labels" => a.labels = Some(value),
            "--selectivity" => a.selectivity = value.split(',').map(str::to_owned).collect(),
            "--filtered-truth-prefix" => a.filtered_truth_prefix = Some(value),
            "--ef" => a.ef = value.split(',').map(num).collect::<Result<_, _>>()?,
            "--metric" => {
                a.metric =
                    serde_json::from_value(json!(value)).map_err(|e| format!("--metric: {e}"))?
            }
            "--m" => a.m = num(&value)?,
            "--ef-construction" => a.ef_construction = num(&value)?,
            "--k" => a.k = num(&value)?,
            "--filtered-queries" => a.filtered_queries = num(&value)?,
            "--save" => a.save = Some(value),
            "--load" => a.load = Some(value),
            "--repeat" => a.repeat = num(&value)?.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.base.is_empty() || a.queries.is_empty() || a.truth.is_empty() {
        return Err("--base, --queries and --truth are required".into());
    }
    Ok(a)
}

/// Rows of an `.fvecs` / `.ivecs` file: per row a little-endian i32 dimension, then the values.
fn read_vecs<T>(path: &str, convert: fn([u8; 4]) -> T) -> Result<Vec<Vec<T>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let mut rows = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let word = |at: usize| -> Result<[u8; 4], String> {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or(format!("{path}: truncated at byte {at}"))
        };
        let dim = i32::from_le_bytes(word(pos)?);
        let dim = usize::try_from(dim).map_err(|_| format!("{path}: bad dim at byte {pos}"))?;
        pos += 4;
        let mut row = Vec::with_capacity(dim);
        for _ in 0..dim {
            row.push(convert(word(pos)?));
            pos += 4;
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Nanoseconds this thread has run on a CPU (Linux `schedstat`), so a loaded machine does not count
/// the time other processes held the core; `None` elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn cpu_seconds_since(start: Option<u64>) -> Option<f64> {
    Some((thread_cpu_ns()? - start?) as f64 / 1e9)
}

fn measure(
    index: &Hnsw,
    queries: &[Vec<f32>],
    truth: &[Vec<i32>],
    k: usize,
    ef: usize,
    allow: Option<&(dyn Fn(u32) -> bool + Sync)>,
) -> (f64, f64, Option<f64>) {
    let mut results = Vec::with_capacity(queries.len());
    let cpu_start = thread_cpu_ns();
    let start = Instant::now();
    for q in queries {
        results.push(index.search(q, k, ef, allow).hits);
    }
    let seconds = start.elapsed().as_secs_f64();
    let qps_cpu = cpu_seconds_since(cpu_start).map(|cpu| queries.len() as f64 / cpu);
    let mut recall = 0.0;
    for (hits, want) in results.iter().zip(truth) {
        let want: HashSet<u32> = want
            .iter()
            .take(k)
            .filter(|&&t| t >= 0)
            .map(|&t| t as u32)
            .collect();
        if want.is_empty() {
            recall += 1.0;
            continue;
        }
        let found = hits.iter().filter(|h| want.contains(&h.0)).count();
        recall += found as f64 / want.len() as f64;
    }
    (
        recall / queries.len() as f64,
        queries.len() as f64 / seconds,
        qps_cpu,
    )
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    let base = read_vecs(&args.base, f32::from_le_bytes)?;
    let queries = read_vecs(&args.queries, f32::from_le_bytes)?;
    let truth = read_vecs(&args.truth, i32::from_le_bytes)?;
    let dim = base.first().ok_or("empty base")?.len();
    let params = HnswParams {
        m: args.m,
        ef_construction: args.ef_construction,
        ..HnswParams::default()
    };
    let cpu_start = thread_cpu_ns();
    let start = Instant::now();
    let index = match &args.load {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            Hnsw::read_from(&bytes, dim, args.metric).map_err(|e| format!("{path}: {e}"))?
        }
        None => {
            let index = Hnsw::new(dim, args.metric, params);
            for (i, v) in base.iter().enumerate() {
                index.set(i as u32, v);
            }
            index.link_pending(usize::MAX);
            index
        }
    };
    let build_s = start.elapsed().as_secs_f64();
    let build_cpu_s = cpu_seconds_since(cpu_start);
    let stats = index.stats();
    let bytes_per_vector = stats.bytes as f64 / base.len() as f64;
    println!(
        "{}",
        json!({"build_s": build_s, "build_cpu_s": build_cpu_s, "n": base.len(), "dim": dim, "kernel": kernel_name(),
               "index_bytes_per_vector": bytes_per_vector})
    );
    if let Some(path) = &args.save {
        let mut file = std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?;
        index
            .write_to(&mut file)
            .map_err(|e| format!("{path}: {e}"))?;
    }
    let mut curve = Vec::new();
    for &ef in &args.ef {
        let (mut recall, mut qps, mut qps_cpu) = (0.0, 0.0f64, None::<f64>);
        for _ in 0..args.repeat {
            let (r, q, c) = measure(&index, &queries, &truth, args.k, ef, None);
            recall = r;
            qps = qps.max(q);
            qps_cpu = match (qps_cpu, c) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        let point = json!({"ef": ef, "recall": recall, "qps": qps, "qps_cpu": qps_cpu});
        println!("{point}");
        curve.push(point);
    }
    let mut filtered = Vec::new();
    let mut exact_filtered = Vec::new();
    if let (Some(labels), Some(prefix)) = (&args.labels, &args.filtered_truth_prefix) {
        let bytes = std::fs::read(labels).map_err(|e| format!("{labels}: {e}"))?;
        let labels: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        for s in &args.selectivity {
            let selectivity: f64 = s.parse().map_err(|e| format!("--selectivity {s}: {e}"))?;
            let threshold = (1000.0 * selectivity).round() as u32;
            let truth = read_vecs(&format!("{prefix}{s}.ivecs"), i32::from_le_bytes)?;
            let allow = |n: u32| labels.get(n as usize).is_some_and(|&l| l < threshold);
            // Filtered walks at low selectivity visit ~ef/selectivity nodes: fewer queries.
            let n = args.filtered_queries.min(queries.len());
            for &ef in &args.ef {
                let (recall, qps, qps_cpu) =
                    measure(&index, &queries[..n], &truth, args.k, ef, Some(&allow));
                let point = json!({"selectivity": selectivity, "ef": ef, "recall": recall,
                                   "qps": qps, "qps_cpu": qps_cpu});
                println!("{point}");
                filtered.push(point);
            }
            // The planner's other path: score every allowed vector exactly (its cost constant,
            // GRAPH_STEP_COST in collection.rs, is set from these two numbers).
            let allowed: Vec<u32> = (0..base.len() as u32).filter(|n| allow(*n)).collect();
            let t = Instant::now();
            let mut hits = 0;
            for q in &queries[..n] {
                hits += index
                    .search_exact(q, args.k, &mut allowed.iter().copied())
                    .hits
                    .len();
            }
            let point = json!({"selectivity": selectivity, "allowed": allowed.len(),
                               "exact_qps": n as f64 / t.elapsed().as_secs_f64(), "hits": hits});
            println!("{point}");
            exact_filtered.push(point);
        }
    }
    println!(
        "{}",
        json!({"build_s": build_s, "build_cpu_s": build_cpu_s, "index_bytes_per_vector": bytes_per_vector,
               "curve": curve, "filtered": filtered, "exact_filtered": exact_filtered})
    );
    Ok(())
}

//! Embedding throughput and latency in process: texts/s at several batch sizes for short and long
//! texts, single-text latency percentiles, and the cosine against the reference vectors.
//!
//! ```text
//! cargo run --release -p kyrodb-embed --example embed_bench -- --model-dir DIR --texts T.json \
//!   [--reference bench/embed/reference_vectors.json] [--batches 1,8,32] [--seconds 5] [--single 200] \
//!   [--impl kyrodb|candle-transformers]
//! ```
//! `T.json` is `{"short": [...], "long": [...]}`. Uses the global rayon pool (all cores, or
//! `RAYON_NUM_THREADS`). Prints one JSON object.
//!
//! `--impl candle-transformers` runs the same model through candle-transformers' `BertModel`
//! (padded, masked batches sorted by length) instead of KyroDB's own forward pass (`bert.rs`): the
//! measurement behind writing our own (docs/design/embed.md).

use std::time::Instant;

// The kyrodb binary's allocator: candle allocates a tensor per operation, and with glibc's malloc
// every large one is a fresh mmap (page faults and zeroing showed up as ~8% of a profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};
use kyrodb_embed::{Embedder, MiniLm, ModelInfo, MINILM};
use serde_json::{json, Value};
use tokenizers::{Tokenizer, TruncationParams};

/// all-MiniLM-L6-v2 through candle-transformers' BERT, as KyroDB ran it before `bert.rs`.
struct CandleBert {
    model: BertModel,
    tokenizer: Tokenizer,
    info: ModelInfo,
}

impl CandleBert {
    fn load(dir: &std::path::Path) -> CandleBert {
        let info = MINILM.verify(dir).expect("verify the model files");
        let config: Config =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MINILM.max_tokens,
                ..Default::default()
            }))
            .unwrap();
        // SAFETY: the file was just verified; nothing rewrites it while the benchmark runs.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
            .unwrap()
        };
        CandleBert {
            model: BertModel::load(vb, &config).unwrap(),
            tokenizer,
            info,
        }
    }

    fn forward(&self, encs: &[&tokenizers::Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let len = encs.iter().map(|e| e.len()).max().unwrap_or(1);
        let mut ids = vec![0u32; encs.len() * len];
        let mut mask = vec![0u32; encs.len() * len];
        for (i, e) in encs.iter().enumerate() {
            ids[i * len..i * len + e.len()].copy_from_slice(e.get_ids());
            mask[i * len..i * len + e.len()].copy_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (encs.len(), len), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (encs.len(), len), &Device::Cpu)?;
        let hidden = self.model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let mean = hidden
            .broadcast_mul(&m)?
            .sum(1)?
            .broadcast_div(&m.sum(1)?.clamp(1e-9f32, f32::MAX)?)?;
        let mut rows: Vec<Vec<f32>> = mean.to_vec2()?;
        for r in &mut rows {
            let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            r.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(rows)
    }
}

impl Embedder for CandleBert {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn embed(&self, texts: &[&str]) -> kyrodb_embed::Result<Vec<Vec<f32>>> {
        let encs: Vec<tokenizers::Encoding> = texts
            .iter()
            .map(|t| self.tokenizer.encode(*t, true).unwrap())
            .collect();
        // Sorted by length and cut into groups of similar length, so that padding stays small.
        let mut order: Vec<usize> = (0..encs.len()).collect();
        order.sort_by_key(|&i| encs[i].len());
        let mut out = vec![Vec::new(); encs.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len()
                && end - start < 32
                && encs[order[end]].len() * 4 <= encs[order[start]].len() * 5
            {
                end += 1;
            }
            let group: Vec<&tokenizers::Encoding> =
                order[start..end].iter().map(|&i| &encs[i]).collect();
            let rows = self
                .forward(&group)
                .map_err(|e| kyrodb_embed::Error::Inference(e.to_string()))?;
            for (&i, r) in order[start..end].iter().zip(rows) {
                out[i] = r;
            }
            start = end;
        }
        Ok(out)
    }

    fn token_count(&self, text: &str) -> kyrodb_embed::Result<usize> {
        Ok(self.tokenizer.encode(text, true).unwrap().len())
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn throughput(m: &dyn Embedder, texts: &[String], batch: usize, seconds: f64) -> f64 {
    let started = Instant::now();
    let mut done = 0usize;
    let mut i = 0;
    // At least 3 batches, then until the time is up.
    while done < 3 * batch || started.elapsed().as_secs_f64() < seconds {
        let chunk: Vec<&str> = (0..batch)
            .map(|k| texts[(i + k) % texts.len()].as_str())
            .collect();
        i += batch;
        m.embed(&chunk).expect("embed");
        done += batch;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model_dir = arg(&args, "--model-dir").expect("--model-dir DIR");
    let texts: Value = serde_json::from_str(
        &std::fs::read_to_string(arg(&args, "--texts").expect("--texts FILE")).expect("read texts"),
    )
    .expect("texts JSON");
    let list = |k: &str| -> Vec<String> {
        texts[k]
            .as_array()
            .expect("short/long lists")
            .iter()
            .map(|t| t.as_str().expect("string").to_owned())
            .collect()
    };
    let (short, long) = (list("short"), list("long"));
    let batches: Vec<usize> = arg(&args, "--batches")
        .unwrap_or_else(|| "1,8,32".into())
        .split(',')
        .map(|b| b.parse().expect("batch size"))
        .collect();
    let seconds: f64 = arg(&args, "--seconds").map_or(5.0, |s| s.parse().expect("seconds"));
    let singles: usize = arg(&args, "--single").map_or(200, |s| s.parse().expect("count"));

    let t = Instant::now();
    let dir = std::path::Path::new(&model_dir);
    let m: Box<dyn Embedder> = match arg(&args, "--impl").as_deref() {
        None | Some("kyrodb") => Box::new(MiniLm::load(dir).expect("load the model")),
        Some("candle-transformers") => Box::new(CandleBert::load(dir)),
        Some(other) => panic!("--impl {other}: kyrodb or candle-transformers"),
    };
    let load_s = t.elapsed().as_secs_f64();
    // Warm up (page in the weights, size the allocator).
    m.embed(&[short[0].as_str(), long[0].as_str()])
        .expect("warm up");

    let mut out = json!({"threads": rayon::current_num_threads(), "load_s": load_s});
    for &b in &batches {
        let s = throughput(m.as_ref(), &short, b, seconds);
        let l = throughput(m.as_ref(), &long, b, seconds);
        eprintln!("[embed_bench] batch {b}: short {s:.1} texts/s, long {l:.1} texts/s");
        out[format!("texts_per_s_b{b}")] = json!(s);
        out[format!("texts_per_s_b{b}_long")] = json!(l);
    }
    let mut lat: Vec<f64> = (0..singles)
        .map(|i| {
            let t = Instant::now();
            m.embed(&[short[i % short.len()].as_str()]).expect("embed");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    out["single_p50_ms"] = json!(percentile(&lat, 0.5));
    out["single_p99_ms"] = json!(percentile(&lat, 0.99));
    eprintln!(
        "[embed_bench] single text: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    if let Some(r) = arg(&args, "--reference") {
        let r: Value = serde_json::from_str(&std::fs::read_to_string(r).expect("read reference"))
            .expect("json");
        let mut min = f64::MAX;
        for (t, v) in r["texts"]
            .as_array()
            .unwrap()
            .iter()
            .zip(r["vectors"].as_array().unwrap())
        {
            let got = m.embed(&[t.as_str().unwrap()]).expect("embed").remove(0);
            let want: Vec<f64> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let dot: f64 = got.iter().zip(&want).map(|(a, b)| f64::from(*a) * b).sum();
            let na: f64 = got
                .iter()
                .map(|a| f64::from(*a).powi(2))
                .sum::<f64>()
                .sqrt();
            let nb: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
            min = min.min(dot / (na * nb));
        }
        out["cosine_min_vs_reference"] = json!(min);
    }
    println!("{out}");
}

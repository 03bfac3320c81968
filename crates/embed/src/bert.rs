//! A BERT encoder forward pass written for CPU inference of small sentence models.
//!
//! Why not candle-transformers' `BertModel`: measured on all-MiniLM-L6-v2 (docs/design/embed.md),
//! a fifth of its time went to `gemm` re-packing every weight matrix on every call (candle hands
//! gemm the weight as a transposed view), another sixth to rayon workers spinning between many
//! tiny parallel ops, and the exact GELU ran a scalar `erf`. Here:
//!
//! - weights are transposed once at load into contiguous `[in, out]` matrices (Q, K and V fused
//!   into one `[hidden, 3·hidden]`), which gemm reads without packing, and the bias is the
//!   accumulator's starting value;
//! - a batch is **not padded**: linear layers run over the concatenated tokens of all texts, and
//!   attention runs per text over its own tokens, so a text's vector is independent of its batch
//!   by construction, and no pad token is ever computed;
//! - GELU (erf form), softmax's `exp` and layer norm are branch-free loops the compiler
//!   vectorises; `erf` and `exp` use rational/polynomial approximations accurate to ~1e-7;
//! - small batches run single-threaded (thread hand-offs cost more than they save).
//!
//! The weights are copied out of the memory-mapped safetensors file at load (~90 MB for MiniLM).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use gemm::Parallelism;
use serde::Deserialize;

use crate::{Error, Result};

/// The fields of a BERT `config.json` this forward pass uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

/// Below this many tokens in a batch, every step runs on the calling thread.
const PARALLEL_MIN_TOKENS: usize = 8;

struct Linear {
    /// `[inp, out]`, row-major.
    wt: Vec<f32>,
    bias: Vec<f32>,
    inp: usize,
    out: usize,
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    ln_attn: LayerNorm,
    inter: Linear,
    out: Linear,
    ln_out: LayerNorm,
}

/// A loaded BERT encoder.
pub(crate) struct Bert {
    cfg: BertConfig,
    eps: f32,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    ln_emb: LayerNorm,
    layers: Vec<Layer>,
}

fn to_vec(t: Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

fn linear(vb: &VarBuilder, names: &[&str], inp: usize, out_each: usize) -> Result<Linear> {
    // Each named weight is [out_each, inp]; stacked on the output axis then transposed.
    let mut ws = Vec::new();
    let mut bs = Vec::new();
    for n in names {
        ws.push(vb.get((out_each, inp), &format!("{n}.weight"))?);
        bs.push(vb.get(out_each, &format!("{n}.bias"))?);
    }
    let w = Tensor::cat(&ws, 0)?; // [out, inp]
    let b = Tensor::cat(&bs, 0)?;
    Ok(Linear {
        wt: to_vec(w.t()?.contiguous()?)?,
        bias: to_vec(b)?,
        inp,
        out: out_each * names.len(),
    })
}

fn layer_norm(vb: &VarBuilder, name: &str, dim: usize) -> Result<LayerNorm> {
    Ok(LayerNorm {
        gamma: to_vec(vb.get(dim, &format!("{name}.weight"))?)?,
        beta: to_vec(vb.get(dim, &format!("{name}.bias"))?)?,
    })
}

impl Bert {
    /// Reads the weights (names without a `bert.` prefix, as sentence-transformers saves them).
    pub(crate) fn load(vb: VarBuilder, cfg: BertConfig) -> Result<Bert> {
        let h = cfg.hidden_size;
        if cfg.hidden_act != "gelu" {
            return Err(Error::Inference(format!(
                "hidden_act {:?} is not supported (only the exact \"gelu\")",
                cfg.hidden_act
            )));
        }
        if cfg.num_attention_heads == 0 || !h.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::Inference(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                cfg.num_attention_heads
            )));
        }
        let e = vb.pp("embeddings");
        let word = to_vec(e.get((cfg.vocab_size, h), "word_embeddings.weight")?)?;
        let position = to_vec(e.get(
            (cfg.max_position_embeddings, h),
            "position_embeddings.weight",
        )?)?;
        let types = to_vec(e.get((2, h), "token_type_embeddings.weight")?)?;
        let ln_emb = layer_norm(&e, "LayerNorm", h)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                qkv: linear(&a.pp("self"), &["query", "key", "value"], h, h)?,
                attn_out: linear(&a.pp("output"), &["dense"], h, h)?,
                ln_attn: layer_norm(&a.pp("output"), "LayerNorm", h)?,
                inter: linear(&l.pp("intermediate"), &["dense"], h, cfg.intermediate_size)?,
                out: linear(&l.pp("output"), &["dense"], cfg.intermediate_size, h)?,
                ln_out: layer_norm(&l.pp("output"), "LayerNorm", h)?,
            });
        }
        Ok(Bert {
            eps: cfg.layer_norm_eps as f32,
            token_type0: types[..h].to_vec(),
            cfg,
            word,
            position,
            ln_emb,
            layers,
        })
    }

    /// Loads from a memory-mapped safetensors file.
    pub(crate) fn load_file(path: &std::path::Path, cfg: BertConfig) -> Result<Bert> {
        // SAFETY: see MiniLm::load — the file was verified and is never rewritten in place; the
        // mapping lives only while the weights are copied out.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu)? };
        Bert::load(vb, cfg)
    }

    /// Hidden size (the output width).
    pub(crate) fn hidden(&self) -> usize {
        self.cfg.hidden_size
    }

    /// Mean-pooled, L2-normalised vectors of `seqs` (token ids, special tokens included; each at
    /// most `max_position_embeddings` long and non-empty).
    pub(crate) fn embed(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.cfg.hidden_size;
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        for s in seqs {
            if s.is_empty() || s.len() > self.cfg.max_position_embeddings {
                return Err(Error::Inference(format!(
                    "a sequence of {} tokens (1..={} allowed)",
                    s.len(),
                    self.cfg.max_position_embeddings
                )));
            }
            if let Some(&bad) = s.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
                return Err(Error::Inference(format!(
                    "token id {bad} outside the vocabulary"
                )));
            }
        }
        let par = if total >= PARALLEL_MIN_TOKENS {
            Parallelism::Rayon(0) // the current pool's threads
        } else {
            Parallelism::None
        };
        // Embeddings.
        let mut x = vec![0f32; total * h];
        let mut row = 0;
        for s in seqs {
            for (p, &t) in s.iter().enumerate() {
                let dst = &mut x[row * h..(row + 1) * h];
                let w = &self.word[t as usize * h..(t as usize + 1) * h];
                let pe = &self.position[p * h..(p + 1) * h];
                for i in 0..h {
                    dst[i] = w[i] + pe[i] + self.token_type0[i];
                }
                row += 1;
            }
        }
        norm_rows(&mut x, h, &self.ln_emb.gamma, &self.ln_emb.beta, self.eps);
        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        let mut inter = vec![0f32; total * self.cfg.intermediate_size];
        for l in &self.layers {
            matmul(&x, &l.qkv, &mut qkv, total, par);
            self.attention(seqs, &qkv, &mut ctx, par);
            matmul(&ctx, &l.attn_out, &mut tmp, total, par);
            add_assign(&mut tmp, &x);
            norm_rows(&mut tmp, h, &l.ln_attn.gamma, &l.ln_attn.beta, self.eps);
            std::mem::swap(&mut x, &mut tmp); // x = attention block output
            matmul(&x, &l.inter, &mut inter, total, par);
            gelu(&mut inter);
            matmul(&inter, &l.out, &mut tmp, total, par);
            add_assign(&mut tmp, &x);
            norm_rows(&mut tmp, h, &l.ln_out.gamma, &l.ln_out.beta, self.eps);
            std::mem::swap(&mut x, &mut tmp);
        }
        // Mean pooling over each text's tokens, then L2 normalisation.
        let mut out = Vec::with_capacity(seqs.len());
        let mut row = 0;
        for s in seqs {
            let mut v = vec![0f32; h];
            for r in row..row + s.len() {
                add_assign(&mut v, &x[r * h..(r + 1) * h]);
            }
            row += s.len();
            let inv = 1.0 / s.len() as f32;
            v.iter_mut().for_each(|a| *a *= inv);
            let norm = dot(&v, &v).sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
            out.push(v);
        }
        Ok(out)
    }

    /// Self-attention of every text over its own tokens: `ctx[t] = softmax(q·kᵀ/√d)·v` per head.
    /// Texts run in parallel (on the current rayon pool) when `par` says so: each owns its rows
    /// of `ctx`.
    fn attention(&self, seqs: &[&[u32]], qkv: &[f32], ctx: &mut [f32], par: Parallelism) {
        let h = self.cfg.hidden_size;
        let mut jobs: Vec<(&[f32], &mut [f32])> = Vec::with_capacity(seqs.len());
        let (mut q_rest, mut c_rest) = (qkv, ctx);
        for s in seqs {
            let (q, qr) = q_rest.split_at(s.len() * 3 * h);
            let (c, cr) = std::mem::take(&mut c_rest).split_at_mut(s.len() * h);
            jobs.push((q, c));
            q_rest = qr;
            c_rest = cr;
        }
        if matches!(par, Parallelism::Rayon(_)) && seqs.len() > 1 {
            use rayon::prelude::*;
            jobs.into_par_iter()
                .for_each_init(Vec::new, |scores, (q, c)| self.attend(q, c, scores));
        } else {
            let mut scores = Vec::new();
            for (q, c) in jobs {
                self.attend(q, c, &mut scores);
            }
        }
    }

    /// Attention of one text: `qkv` its rows `[n, 3·hidden]`, `ctx` its rows `[n, hidden]`.
    fn attend(&self, qkv: &[f32], ctx: &mut [f32], scores: &mut Vec<f32>) {
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let stride = 3 * h;
        let n = ctx.len() / h;
        assert!(qkv.len() == n * stride && ctx.len() == n * h);
        scores.resize(n * n, 0.0);
        for hd in 0..heads {
            let q = &qkv[hd * d..];
            let k = &qkv[h + hd * d..];
            let v = &qkv[2 * h + hd * d..];
            // SAFETY: every index gemm touches is inside the slices: q/k/v rows 0..n
            // with `stride` between rows (asserted above) and `d` columns from the head's offset; scores is
            // n×n; ctx rows 0..n, columns hd·d..hd·d+d.
            unsafe {
                gemm::gemm(
                    n,
                    n,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q.as_ptr(),
                    1,
                    stride as isize,
                    k.as_ptr(),
                    stride as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            softmax_rows(scores, n);
            let dst = &mut ctx[hd * d..];
            // SAFETY: as above.
            unsafe {
                gemm::gemm(
                    n,
                    d,
                    n,
                    dst.as_mut_ptr(),
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    n as isize,
                    v.as_ptr(),
                    1,
                    stride as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
    }
}

/// `dst[rows, l.out] = x[rows, l.inp] · l.wt + l.bias`.
fn matmul(x: &[f32], l: &Linear, dst: &mut [f32], rows: usize, par: Parallelism) {
    assert!(x.len() >= rows * l.inp && dst.len() >= rows * l.out);
    for r in dst[..rows * l.out].chunks_exact_mut(l.out) {
        r.copy_from_slice(&l.bias);
    }
    // SAFETY: dst is rows×out, x rows×inp and wt inp×out, all row-major and in bounds (asserted).
    unsafe {
        gemm::gemm(
            rows,
            l.out,
            l.inp,
            dst.as_mut_ptr(),
            1,
            l.out as isize,
            true,
            x.as_ptr(),
            1,
            l.inp as isize,
            l.wt.as_ptr(),
            1,
            l.out as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

const LANES: usize = 16;

/// 2 = AVX-512, 1 = AVX2+FMA, 0 = neither (detected once).
#[cfg(target_arch = "x86_64")]
fn simd_level() -> u8 {
    static LEVEL: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            2
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            1
        } else {
            0
        }
    })
}

/// Defines `fn $name(args)` whose body is compiled three times — for AVX-512, for AVX2+FMA and
/// for the baseline — and picks the widest the CPU has (the loops below are written so the
/// compiler vectorises them; the baseline build alone would use 4-lane SSE2).
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) {
                    body($($arg),*)
                }
                match simd_level() {
                    // SAFETY: the CPU has the features v4 was compiled for (detected above).
                    2 => return unsafe { v4($($arg),*) },
                    // SAFETY: the CPU has the features v3 was compiled for (detected above).
                    1 => return unsafe { v3($($arg),*) },
                    _ => {}
                }
            }
            body($($arg),*)
        }
    };
}

#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = a.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[inline(always)]
fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = a.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter()
        .chain(chunks.remainder())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>()
        + ca.remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum::<f32>()
}

#[inline(always)]
fn add_assign(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

multiversion! {
    /// Softmax of each row of `m` (rows of `n`).
    fn softmax_rows(m: &mut [f32], n: usize) {
        for r in m.chunks_exact_mut(n) {
            let top = max(r);
            r.iter_mut().for_each(|a| *a = exp_approx(*a - top));
            let inv = 1.0 / sum(r);
            r.iter_mut().for_each(|a| *a *= inv);
        }
    }
}

multiversion! {
    /// `x·Φ(x)`, the exact (erf) GELU, in place.
    fn gelu(a: &mut [f32]) {
        const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
        a.iter_mut()
            .for_each(|x| *x = 0.5 * *x * (1.0 + erf_approx(*x * FRAC_1_SQRT_2)));
    }
}

multiversion! {
    /// Layer norm of each row of `x` (rows of `h`), in place.
    fn norm_rows(x: &mut [f32], h: usize, gamma: &[f32], beta: &[f32], eps: f32) {
        for r in x.chunks_exact_mut(h) {
            let mean = sum(r) / h as f32;
            r.iter_mut().for_each(|a| *a -= mean);
            let var = dot(r, r) / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((a, g), b) in r.iter_mut().zip(gamma).zip(beta) {
                *a = *a * inv * g + b;
            }
        }
    }
}

/// erf as an odd rational function of x on [-4, 4] (erf is ±1 in f32 beyond); max error ~1e-7.
/// The coefficients are the published minimax fit used by Eigen and XLA for f32.
#[inline(always)]
fn erf_approx(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// e^x for x ≤ 0 (softmax after subtracting the row's max): e^x = 2^n · e^r with
/// n = round(x·log2 e) and r = x − n·ln 2 (Cody–Waite: ln 2 split in two so r stays exact),
/// |r| ≤ ln2/2, e^r by its degree-7 Taylor polynomial; relative error ~3e-7; 2^n is built in the
/// exponent bits. Underflows to ~e^-87 (the smallest normal) below -87.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75; // ln 2 with its low 12 bits zero: n·LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round to nearest without a libm call (vectorises): valid for |t| < 2^22.
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0_f32;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Maclaurin series in f64 (exact to ~1e-9 on [-4, 4]).
    fn erf_series(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_approximation_is_within_1e6_everywhere() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f64 / 1000.0;
            let want = if x.abs() > 4.0 {
                x.signum()
            } else {
                erf_series(x)
            };
            worst = worst.max((erf_approx(x as f32) as f64 - want).abs());
        }
        assert!(worst < 1e-6, "worst erf error {worst}");
    }

    #[test]
    fn exp_approximation_is_within_1e6_relative() {
        let mut worst = 0f64;
        for i in 0..=90_000 {
            let x = -(i as f32) / 1000.0;
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            if want > 1e-30 {
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 1e-6, "worst exp relative error {worst}");
        assert_eq!(exp_approx(-200.0), exp_approx(-87.0));
        assert!(exp_approx(-200.0) < 1e-37);
    }

    #[test]
    fn reductions_match_naive_sums() {
        let a: Vec<f32> = (0..389).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..389).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive_sum: f32 = a.iter().sum();
        let naive_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((sum(&a) - naive_sum).abs() < 1e-4);
        assert!((dot(&a, &b) - naive_dot).abs() < 1e-4);
    }
}

//! Vector distances with runtime-detected SIMD kernels (AVX-512, AVX2+FMA, NEON, scalar), chosen once
//! per process. The kernels live in [`simd`] — the only `unsafe` of this crate — each with the scalar
//! twin in this file as the reference its test compares against.
//!
//! Two shapes of kernel: `&[f32]` × `&[f32]` (the public functions) and `&[f32]` × `&[AtomicU32]` (the
//! HNSW arena, whose vectors may be rewritten in place by `Hnsw::set` while searches read them).
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// How two vectors are compared. Every score is "higher is better".
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity; the index stores normalised vectors, so this is their dot product.
    Cosine,
    /// Dot product (maximum inner product search).
    Dot,
    /// Negative Euclidean distance.
    L2,
}

/// A query vector against a vector stored in the HNSW arena.
pub(crate) type SharedKernel = fn(&[f32], &[AtomicU32]) -> f32;

/// The kernels of one instruction set. Built only by [`detect`] (or as the scalar set), so a table
/// holding SIMD functions exists only on a CPU that has their features.
#[derive(Clone, Copy)]
struct Kernels {
    name: &'static str,
    dot: fn(&[f32], &[f32]) -> f32,
    l2: fn(&[f32], &[f32]) -> f32,
    dot_shared: SharedKernel,
    neg_l2_shared: SharedKernel,
}

const SCALAR: Kernels = Kernels {
    name: "scalar",
    dot: dot_scalar,
    l2: l2_scalar,
    dot_shared: dot_shared_scalar,
    neg_l2_shared: neg_l2_shared_scalar,
};

fn detect() -> Kernels {
    simd::detect().unwrap_or(SCALAR)
}

fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(detect)
}

/// The kernel family in use: `"avx512"`, `"avx2"`, `"neon"` or `"scalar"`.
pub fn kernel_name() -> &'static str {
    kernels().name
}

/// Dot product. Panics if the lengths differ.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: vector lengths differ");
    (kernels().dot)(a, b)
}

/// Squared Euclidean distance. Panics if the lengths differ.
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "l2_squared: vector lengths differ");
    (kernels().l2)(a, b)
}

/// Scales `v` to unit length; false (and `v` untouched) if its norm is 0 or not finite.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = dot(v, v).sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return false;
    }
    let inv = 1.0 / norm;
    v.iter_mut().for_each(|x| *x *= inv);
    true
}

/// The squared Euclidean norm, summed in f64 (exact enough for any f32 vector: it neither
/// overflows nor underflows where the f32 kernels would). Input validation uses it.
pub fn squared_norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum()
}

/// A score as served: finite whatever the stored vectors (+∞ → `f32::MAX`, −∞ and NaN →
/// `f32::MIN`, the worst). Input validation keeps new vectors from producing such scores; this
/// covers vectors stored before it.
pub fn finite_score(s: f32) -> f32 {
    if s.is_nan() {
        f32::MIN
    } else {
        s.clamp(f32::MIN, f32::MAX)
    }
}

/// Higher is better for all three: cosine similarity, dot product, negative L2 distance (`-sqrt`).
/// Cosine is computed in full here (a zero vector scores 0); the index normalises once at `set`.
pub fn score(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Cosine => {
            let norms = dot(a, a) * dot(b, b);
            if norms > 0.0 {
                dot(a, b) / norms.sqrt()
            } else {
                0.0
            }
        }
        Metric::Dot => dot(a, b),
        Metric::L2 => -l2_squared(a, b).sqrt(),
    }
}

/// The internal similarity of `metric` over arena vectors: the dot product for cosine (normalised) and
/// dot, the negative *squared* distance for L2 (same order as the score, no square root per visit).
pub(crate) fn similarity_kernel(metric: Metric) -> SharedKernel {
    match metric {
        Metric::Cosine | Metric::Dot => kernels().dot_shared,
        Metric::L2 => kernels().neg_l2_shared,
    }
}

/// Turns an internal similarity (see [`similarity_kernel`]) into the public score.
pub(crate) fn similarity_to_score(metric: Metric, similarity: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => similarity,
        Metric::L2 => -(-similarity).max(0.0).sqrt(),
    }
}

/// Asks the CPU to start loading every cache line of `words`. A hint: never faults, never required.
#[inline(always)]
pub(crate) fn prefetch(words: &[AtomicU32]) {
    simd::prefetch(words);
}

fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ta.iter().zip(tb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

fn l2_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let tail: f32 = ta.iter().zip(tb).map(|(x, y)| (x - y) * (x - y)).sum();
    acc.iter().sum::<f32>() + tail
}

fn load(w: &AtomicU32) -> f32 {
    f32::from_bits(w.load(Ordering::Relaxed))
}

fn dot_shared_scalar(a: &[f32], b: &[AtomicU32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * load(y)).sum()
}

fn neg_l2_shared_scalar(a: &[f32], b: &[AtomicU32]) -> f32 {
    -a.iter()
        .zip(b)
        .map(|(x, y)| (x - load(y)) * (x - load(y)))
        .sum::<f32>()
}

/// The SIMD kernels. Every `unsafe` of the crate's vector search is in here.
#[allow(unsafe_code)]
mod simd {
    use super::Kernels;
    use std::sync::atomic::AtomicU32;

    /// The best kernel family this CPU supports, if any beats scalar.
    pub(super) fn detect() -> Option<Kernels> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(x86::AVX512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(x86::AVX2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Some(arm::NEON);
        }
        None
    }

    /// Every kernel family the CPU supports (scalar excluded), for the tests.
    #[cfg(test)]
    pub(super) fn all_supported() -> Vec<Kernels> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(x86::AVX512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(x86::AVX2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            out.push(arm::NEON);
        }
        out
    }

    /// A `&[AtomicU32]` as the f32 pointer the kernels read through.
    ///
    /// The arena's vectors are `AtomicU32` so that `Hnsw::set` can rewrite them in place with atomic
    /// stores while searches read them. The kernels read them with plain (vector) loads: `AtomicU32`
    /// has the size and alignment of `u32` and `f32`, and every aligned 4-byte lane is read whole on
    /// x86_64 and aarch64, so each lane is a value some store wrote. A read racing a rewrite of the
    /// *same* node can mix old and new lanes; that only happens while `set` of that node is in
    /// progress, and the caller re-reads the node's state before it returns the node.
    fn shared_ptr(b: &[AtomicU32]) -> *const f32 {
        b.as_ptr().cast::<f32>()
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) fn prefetch(words: &[AtomicU32]) {
        use std::arch::x86_64 as arch;
        let start = words.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(words);
        let mut offset = 0;
        while offset < bytes {
            // SAFETY: prefetch never faults and has no effect on program state; the address is inside
            // `words` (offset < its length in bytes). SSE is baseline on x86_64.
            unsafe { arch::_mm_prefetch::<{ arch::_MM_HINT_T0 }>(start.add(offset)) };
            offset += 64;
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn prefetch(words: &[AtomicU32]) {
        let _ = words;
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::super::Kernels;
        use super::shared_ptr;
        use std::arch::x86_64 as arch;
        use std::sync::atomic::AtomicU32;

        pub(in super::super) const AVX512: Kernels = Kernels {
            name: "avx512",
            dot: dot_avx512,
            l2: l2_avx512,
            dot_shared: dot_shared_avx512,
            neg_l2_shared: neg_l2_shared_avx512,
        };
        pub(in super::super) const AVX2: Kernels = Kernels {
            name: "avx2",
            dot: dot_avx2,
            l2: l2_avx2,
            dot_shared: dot_shared_avx2,
            neg_l2_shared: neg_l2_shared_avx2,
        };

        // The safe wrappers below are reachable only through the `AVX512` / `AVX2` tables, which
        // `detect` and `all_supported` hand out only after `is_x86_feature_detected!` confirmed the
        // features; each passes pointers to `min(a.len(), b.len())` readable f32s.

        fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: AVX-512F detected (see above); both pointers cover `n` readable f32s.
            unsafe { dot512(a.as_ptr(), b.as_ptr(), a.len().min(b.len())) }
        }
        fn l2_avx512(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: AVX-512F detected; both pointers cover `n` readable f32s.
            unsafe { l2_512(a.as_ptr(), b.as_ptr(), a.len().min(b.len())) }
        }
        fn dot_shared_avx512(a: &[f32], b: &[AtomicU32]) -> f32 {
            // SAFETY: AVX-512F detected; both pointers cover `n` readable 4-byte lanes (`shared_ptr`
            // explains reading atomics as f32).
            unsafe { dot512(a.as_ptr(), shared_ptr(b), a.len().min(b.len())) }
        }
        fn neg_l2_shared_avx512(a: &[f32], b: &[AtomicU32]) -> f32 {
            // SAFETY: as in `dot_shared_avx512`.
            -unsafe { l2_512(a.as_ptr(), shared_ptr(b), a.len().min(b.len())) }
        }
        fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: AVX2 and FMA detected; both pointers cover `n` readable f32s.
            unsafe { dot256(a.as_ptr(), b.as_ptr(), a.len().min(b.len())) }
        }
        fn l2_avx2(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: AVX2 and FMA detected; both pointers cover `n` readable f32s.
            unsafe { l2_256(a.as_ptr(), b.as_ptr(), a.len().min(b.len())) }
        }
        fn dot_shared_avx2(a: &[f32], b: &[AtomicU32]) -> f32 {
            // SAFETY: AVX2 and FMA detected; both pointers cover `n` readable 4-byte lanes.
            unsafe { dot256(a.as_ptr(), shared_ptr(b), a.len().min(b.len())) }
        }
        fn neg_l2_shared_avx2(a: &[f32], b: &[AtomicU32]) -> f32 {
            // SAFETY: as in `dot_shared_avx2`.
            -unsafe { l2_256(a.as_ptr(), shared_ptr(b), a.len().min(b.len())) }
        }

        /// Callers guarantee AVX-512F and `n` readable f32s behind `a` and `b`.
        #[target_feature(enable = "avx512f")]
        unsafe fn dot512(a: *const f32, b: *const f32, n: usize) -> f32 {
            let mut acc0 = arch::_mm512_setzero_ps();
            let mut acc1 = arch::_mm512_setzero_ps();
            let mut i = 0;
            while i + 32 <= n {
                // SAFETY: i + 32 <= n, so lanes i..i+32 are readable; loadu needs no alignment.
                unsafe {
                    let x0 = arch::_mm512_loadu_ps(a.add(i));
                    let y0 = arch::_mm512_loadu_ps(b.add(i));
                    let x1 = arch::_mm512_loadu_ps(a.add(i + 16));
                    let y1 = arch::_mm512_loadu_ps(b.add(i + 16));
                    acc0 = arch::_mm512_fmadd_ps(x0, y0, acc0);
                    acc1 = arch::_mm512_fmadd_ps(x1, y1, acc1);
                }
                i += 32;
            }
            if i + 16 <= n {
                // SAFETY: i + 16 <= n.
                unsafe {
                    let x = arch::_mm512_loadu_ps(a.add(i));
                    let y = arch::_mm512_loadu_ps(b.add(i));
                    acc0 = arch::_mm512_fmadd_ps(x, y, acc0);
                }
                i += 16;
            }
            if i < n {
                let mask = ((1u32 << (n - i)) - 1) as u16;
                // SAFETY: only the n - i (< 16) masked lanes are read, all in bounds; masked-off lanes
                // are neither read nor faulted on.
                unsafe {
                    let x = arch::_mm512_maskz_loadu_ps(mask, a.add(i));
                    let y = arch::_mm512_maskz_loadu_ps(mask, b.add(i));
                    acc1 = arch::_mm512_fmadd_ps(x, y, acc1);
                }
            }
            arch::_mm512_reduce_add_ps(arch::_mm512_add_ps(acc0, acc1))
        }

        /// Callers guarantee AVX-512F and `n` readable f32s behind `a` and `b`.
        #[target_feature(enable = "avx512f")]
        unsafe fn l2_512(a: *const f32, b: *const f32, n: usize) -> f32 {
            let mut acc0 = arch::_mm512_setzero_ps();
            let mut acc1 = arch::_mm512_setzero_ps();
            let mut i = 0;
            while i + 32 <= n {
                // SAFETY: i + 32 <= n, so lanes i..i+32 are readable.
                unsafe {
                    let d0 = arch::_mm512_sub_ps(
                        arch::_mm512_loadu_ps(a.add(i)),
                        arch::_mm512_loadu_ps(b.add(i)),
                    );
                    let d1 = arch::_mm512_sub_ps(
                        arch::_mm512_loadu_ps(a.add(i + 16)),
                        arch::_mm512_loadu_ps(b.add(i + 16)),
                    );
                    acc0 = arch::_mm512_fmadd_ps(d0, d0, acc0);
                    acc1 = arch::_mm512_fmadd_ps(d1, d1, acc1);
                }
                i += 32;
            }
            if i + 16 <= n {
                // SAFETY: i + 16 <= n.
                unsafe {
                    let d = arch::_mm512_sub_ps(
                        arch::_mm512_loadu_ps(a.add(i)),
                        arch::_mm512_loadu_ps(b.add(i)),
                    );
                    acc0 = arch::_mm512_fmadd_ps(d, d, acc0);
                }
                i += 16;
            }
            if i < n {
                let mask = ((1u32 << (n - i)) - 1) as u16;
                // SAFETY: only the n - i (< 16) masked lanes are read, all in bounds.
                unsafe {
                    let d = arch::_mm512_sub_ps(
                        arch::_mm512_maskz_loadu_ps(mask, a.add(i)),
                        arch::_mm512_maskz_loadu_ps(mask, b.add(i)),
                    );
                    acc1 = arch::_mm512_fmadd_ps(d, d, acc1);
                }
            }
            arch::_mm512_reduce_add_ps(arch::_mm512_add_ps(acc0, acc1))
        }

        #[target_feature(enable = "avx2,fma")]
        fn hsum256(v: arch::__m256) -> f32 {
            let lo = arch::_mm256_castps256_ps128(v);
            let hi = arch::_mm256_extractf128_ps::<1>(v);
            let s = arch::_mm_add_ps(lo, hi);
            let s = arch::_mm_add_ps(s, arch::_mm_movehl_ps(s, s));
            let s = arch::_mm_add_ss(s, arch::_mm_shuffle_ps::<0b01>(s, s));
            arch::_mm_cvtss_f32(s)
        }

        /// Callers guarantee AVX2, FMA and `n` readable f32s behind `a` and `b`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn dot256(a: *const f32, b: *const f32, n: usize) -> f32 {
            let mut acc0 = arch::_mm256_setzero_ps();
            let mut acc1 = arch::_mm256_setzero_ps();
            let mut i = 0;
            while i + 16 <= n {
                // SAFETY: i + 16 <= n, so lanes i..i+16 are readable.
                unsafe {
                    let x0 = arch::_mm256_loadu_ps(a.add(i));
                    let y0 = arch::_mm256_loadu_ps(b.add(i));
                    let x1 = arch::_mm256_loadu_ps(a.add(i + 8));
                    let y1 = arch::_mm256_loadu_ps(b.add(i + 8));
                    acc0 = arch::_mm256_fmadd_ps(x0, y0, acc0);
                    acc1 = arch::_mm256_fmadd_ps(x1, y1, acc1);
                }
                i += 16;
            }
            if i + 8 <= n {
                // SAFETY: i + 8 <= n.
                unsafe {
                    let x = arch::_mm256_loadu_ps(a.add(i));
                    let y = arch::_mm256_loadu_ps(b.add(i));
                    acc0 = arch::_mm256_fmadd_ps(x, y, acc0);
                }
                i += 8;
            }
            let mut sum = hsum256(arch::_mm256_add_ps(acc0, acc1));
            while i < n {
                // SAFETY: i < n.
                sum += unsafe { *a.add(i) * *b.add(i) };
                i += 1;
            }
            sum
        }

        /// Callers guarantee AVX2, FMA and `n` readable f32s behind `a` and `b`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn l2_256(a: *const f32, b: *const f32, n: usize) -> f32 {
            let mut acc0 = arch::_mm256_setzero_ps();
            let mut acc1 = arch::_mm256_setzero_ps();
            let mut i = 0;
            while i + 16 <= n {
                // SAFETY: i + 16 <= n, so lanes i..i+16 are readable.
                unsafe {
                    let d0 = arch::_mm256_sub_ps(
                        arch::_mm256_loadu_ps(a.add(i)),
                        arch::_mm256_loadu_ps(b.add(i)),
                    );
                    let d1 = arch::_mm256_sub_ps(
                        arch::_mm256_loadu_ps(a.add(i + 8)),
                        arch::_mm256_loadu_ps(b.add(i + 8)),
                    );
                    acc0 = arch::_mm256_fmadd_ps(d0, d0, acc0);
                    acc1 = arch::_mm256_fmadd_ps(d1, d1, acc1);
                }
                i += 16;
            }
            if i + 8 <= n {
                // SAFETY: i + 8 <= n.
                unsafe {
                    let d = arch::_mm256_sub_ps(
                        arch::_mm256_loadu_ps(a.add(i)),
                        arch::_mm256_loadu_ps(b.add(i)),
                    );
                    acc0 = arch::_mm256_fmadd_ps(d, d, acc0);
                }
                i += 8;
            }
            let mut sum = hsum256(arch::_mm256_add_ps(acc0, acc1));
            while i < n {
                // SAFETY: i < n.
                let d = unsafe { *a.add(i) - *b.add(i) };
                sum += d * d;
                i += 1;
            }
            sum
        }
    }

    #[cfg(target_arch = "aarch64")]
    mod arm {
        use super::super::Kernels;
        use super::shared_ptr;
        use std::arch::aarch64 as arch;
        use std::sync::atomic::AtomicU32;

        pub(in super::super) const NEON: Kernels = Kernels {
            name: "neon",
            dot: dot_neon,
            l2: l2_neon,
            dot_shared: dot_shared_neon,
            neg_l2_shared: neg_l2_shared_neon,
        };

        // Reachable only through `NEON`, handed out after `is_aarch64_feature_detected!("neon")`.
        fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: NEON detected; both pointers cover `n` readable f32s.
            unsafe { dot128(a.as_ptr(), b.as_ptr(), a.len().min(b.len())) }
        }
        fn l2_neon(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: NEON detected; both pointers cover `n` readable f32s.
            unsafe { l2_128(a.as_ptr(), b.as_ptr(), a.len().min(b.len())) }
        }
        fn dot_shared_neon(a: &[f32], b: &[AtomicU32]) -> f32 {
            // SAFETY: NEON detected; both pointers cover `n` readable 4-byte lanes.
            unsafe { dot128(a.as_ptr(), shared_ptr(b), a.len().min(b.len())) }
        }
        fn neg_l2_shared_neon(a: &[f32], b: &[AtomicU32]) -> f32 {
            // SAFETY: as in `dot_shared_neon`.
            -unsafe { l2_128(a.as_ptr(), shared_ptr(b), a.len().min(b.len())) }
        }

        /// Callers guarantee NEON and `n` readable f32s behind `a` and `b`.
        #[target_feature(enable = "neon")]
        unsafe fn dot128(a: *const f32, b: *const f32, n: usize) -> f32 {
            let mut acc0 = arch::vdupq_n_f32(0.0);
            let mut acc1 = arch::vdupq_n_f32(0.0);
            let mut i = 0;
            while i + 8 <= n {
                // SAFETY: i + 8 <= n; vld1q has no alignment requirement.
                unsafe {
                    acc0 =
                        arch::vfmaq_f32(acc0, arch::vld1q_f32(a.add(i)), arch::vld1q_f32(b.add(i)));
                    acc1 = arch::vfmaq_f32(
                        acc1,
                        arch::vld1q_f32(a.add(i + 4)),
                        arch::vld1q_f32(b.add(i + 4)),
                    );
                }
                i += 8;
            }
            let mut sum = arch::vaddvq_f32(arch::vaddq_f32(acc0, acc1));
            while i < n {
                // SAFETY: i < n.
                sum += unsafe { *a.add(i) * *b.add(i) };
                i += 1;
            }
            sum
        }

        /// Callers guarantee NEON and `n` readable f32s behind `a` and `b`.
        #[target_feature(enable = "neon")]
        unsafe fn l2_128(a: *const f32, b: *const f32, n: usize) -> f32 {
            let mut acc0 = arch::vdupq_n_f32(0.0);
            let mut acc1 = arch::vdupq_n_f32(0.0);
            let mut i = 0;
            while i + 8 <= n {
                // SAFETY: i + 8 <= n.
                unsafe {
                    let d0 = arch::vsubq_f32(arch::vld1q_f32(a.add(i)), arch::vld1q_f32(b.add(i)));
                    let d1 = arch::vsubq_f32(
                        arch::vld1q_f32(a.add(i + 4)),
                        arch::vld1q_f32(b.add(i + 4)),
                    );
                    acc0 = arch::vfmaq_f32(acc0, d0, d0);
                    acc1 = arch::vfmaq_f32(acc1, d1, d1);
                }
                i += 8;
            }
            let mut sum = arch::vaddvq_f32(arch::vaddq_f32(acc0, acc1));
            while i < n {
                // SAFETY: i < n.
                let d = unsafe { *a.add(i) - *b.add(i) };
                sum += d * d;
                i += 1;
            }
            sum
        }
    }
}

/// Makes `v` what an index stores and searches with: for cosine, unit length — or all zeros
/// when it cannot be normalised (zero, or a squared norm that overflows or underflows in f32:
/// input validation refuses those, this covers vectors stored before it), so it scores 0 against
/// everything instead of its raw magnitude; other metrics as given.
pub fn prepare(metric: Metric, v: &mut [f32]) {
    if metric == Metric::Cosine && !normalize(v) {
        v.fill(0.0);
    }
}

/// The vector as an index stores it ([`prepare`]) — what `Hnsw::set` stores, so a loaded graph's
/// node can be compared bit for bit.
pub fn prepared(metric: Metric, v: &[f32]) -> Vec<f32> {
    let mut out = v.to_vec();
    prepare(metric, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn close(got: f32, want: f32, scale: f32) -> bool {
        (got - want).abs() <= 1e-5 * scale.max(1.0)
    }

    #[test]
    fn every_kernel_agrees_with_scalar_on_every_length() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let families = simd::all_supported();
        eprintln!(
            "kernel in use: {}; tested: {:?}",
            kernel_name(),
            families.iter().map(|k| k.name).collect::<Vec<_>>()
        );
        for len in (1..=1000usize).chain([0]) {
            let a: Vec<f32> = (0..len).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let shared: Vec<AtomicU32> = b.iter().map(|x| AtomicU32::new(x.to_bits())).collect();
            let dot_want = dot_scalar(&a, &b);
            let l2_want = l2_scalar(&a, &b);
            let scale: f32 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x * y).abs() + (x - y) * (x - y))
                .sum();
            for k in families.iter().chain([&SCALAR]) {
                assert!(
                    close((k.dot)(&a, &b), dot_want, scale),
                    "{} dot len {len}",
                    k.name
                );
                assert!(
                    close((k.l2)(&a, &b), l2_want, scale),
                    "{} l2 len {len}",
                    k.name
                );
                assert!(
                    close((k.dot_shared)(&a, &shared), dot_want, scale),
                    "{} dot_shared len {len}",
                    k.name
                );
                assert!(
                    close((k.neg_l2_shared)(&a, &shared), -l2_want, scale),
                    "{} neg_l2_shared len {len}",
                    k.name
                );
            }
        }
    }

    #[test]
    fn vectors_that_cannot_be_normalised_are_prepared_as_zeros_and_scores_stay_finite() {
        for bad in [
            vec![3.4e38f32, 3.4e38],
            vec![1e-30f32, -1e-30],
            vec![0.0f32; 2],
        ] {
            let p = prepared(Metric::Cosine, &bad);
            assert_eq!(p, vec![0.0, 0.0], "{bad:?}");
            assert_eq!(dot(&p, &[1.0, 0.0]), 0.0);
        }
        assert_eq!(prepared(Metric::Dot, &[3.4e38, 1.0]), vec![3.4e38, 1.0]);
        assert!(squared_norm(&[3.4e38, 3.4e38]).is_finite());
        assert!(squared_norm(&[1e-30, 1e-30]) > 0.0);
        assert_eq!(finite_score(f32::INFINITY), f32::MAX);
        assert_eq!(finite_score(f32::NEG_INFINITY), f32::MIN);
        assert_eq!(finite_score(f32::NAN), f32::MIN);
        assert_eq!(finite_score(0.5), 0.5);
    }

    #[test]
    fn normalize_refuses_zero_and_non_finite() {
        let mut zero = vec![0.0f32; 7];
        assert!(!normalize(&mut zero));
        let mut inf = vec![f32::INFINITY, 1.0];
        assert!(!normalize(&mut inf));
        let mut v = vec![3.0f32, 4.0];
        assert!(normalize(&mut v));
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn scores_are_higher_is_better() {
        let a = [1.0f32, 0.0];
        let near = [0.9f32, 0.1];
        let far = [-1.0f32, 0.0];
        for m in [Metric::Cosine, Metric::Dot, Metric::L2] {
            assert!(score(m, &a, &near) > score(m, &a, &far), "{m:?}");
        }
        assert!((score(Metric::L2, &a, &far) + 2.0).abs() < 1e-6);
        assert!((score(Metric::Cosine, &[2.0, 0.0], &[0.0, 3.0])).abs() < 1e-6);
        assert_eq!(similarity_to_score(Metric::L2, -4.0), -2.0);
        assert_eq!(
            serde_json::to_string(&Metric::Cosine).unwrap(),
            "\"cosine\""
        );
    }
}

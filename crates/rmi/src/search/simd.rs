//! SIMD kernels and prefetch: the only `unsafe` in the crate besides the file module.
//!
//! Each kernel reads only the slice it is given (full-width loads over `chunks_exact`, then a masked
//! load or a scalar loop for the tail), so the window bound holds for the vector paths too.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64 as arch;

use crate::model::Rmi;
#[cfg(not(target_arch = "x86_64"))]
use crate::search::count_less_scalar;
#[cfg(target_arch = "x86_64")]
use crate::search::{lower_bound_branchless, LINEAR_WINDOW_SLOTS_MAX};
use crate::search::{Avx2Detected, Avx512Detected};

/// Whole lookups compiled for AVX-512 (F, DQ: one-instruction u64↔f64 conversions) and AVX2, so the
/// window count inlines instead of being a call across a target-feature boundary. Each takes the proof
/// that its CPU features were detected (`$proof`, made only by `CheckedKernel::dispatch` from a kernel
/// checked in every build profile when the index was built, loaded or given a kernel): no per-lookup
/// check, and no way to reach the `unsafe` call without the check having run.
macro_rules! specialised {
    ($name:ident, $inner:ident, $features:literal, $proof:ident, $count:ident, $generic:ident, $ret:ty) => {
        /// Reached only with the proof that this CPU has the features `$inner` is compiled for.
        #[inline(always)]
        pub(crate) fn $name(_detected: $proof, rmi: &Rmi, keys: &[u64], key: u64) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: `_detected` exists only if `CheckedKernel::new` found the features `$inner`
                // is compiled for on this CPU (`is_x86_feature_detected!`, checked in release too).
                return unsafe { $inner(rmi, keys, key) };
            }
            #[cfg(not(target_arch = "x86_64"))]
            rmi.$generic(keys, key, count_less_scalar)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        fn $inner(rmi: &Rmi, keys: &[u64], key: u64) -> $ret {
            rmi.$generic(keys, key, |window, key| {
                if window.len() > LINEAR_WINDOW_SLOTS_MAX {
                    lower_bound_branchless(window, key)
                } else {
                    $count(window, key)
                }
            })
        }
    };
}

specialised!(
    find_avx512,
    find_avx512_inner,
    "avx512f,avx512dq,popcnt",
    Avx512Detected,
    avx512,
    find_generic,
    Option<usize>
);
specialised!(
    find_avx2,
    find_avx2_inner,
    "avx2,popcnt",
    Avx2Detected,
    avx2,
    find_generic,
    Option<usize>
);
specialised!(
    lower_bound_avx512,
    lower_bound_avx512_inner,
    "avx512f,avx512dq,popcnt",
    Avx512Detected,
    avx512,
    lower_bound_generic,
    usize
);
specialised!(
    lower_bound_avx2,
    lower_bound_avx2_inner,
    "avx2,popcnt",
    Avx2Detected,
    avx2,
    lower_bound_generic,
    usize
);

/// Batch lookups compiled for AVX-512, like [`find_avx512`].
pub(crate) fn find_batch_avx512(
    _detected: Avx512Detected,
    rmi: &Rmi,
    keys: &[u64],
    queries: &[u64],
    out: &mut [Option<usize>],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_detected` exists only if `CheckedKernel::new` found the features
    // `find_batch_avx512_inner` is compiled for on this CPU.
    unsafe {
        find_batch_avx512_inner(rmi, keys, queries, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    rmi.find_batch_with(keys, queries, out, count_less_scalar)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,popcnt")]
fn find_batch_avx512_inner(rmi: &Rmi, keys: &[u64], queries: &[u64], out: &mut [Option<usize>]) {
    rmi.find_batch_with(keys, queries, out, |w, k| {
        if w.len() > LINEAR_WINDOW_SLOTS_MAX {
            lower_bound_branchless(w, k)
        } else {
            avx512(w, k)
        }
    })
}

/// Batch lower bounds compiled for AVX-512, like [`lower_bound_avx512`].
pub(crate) fn lower_bound_batch_avx512(
    _detected: Avx512Detected,
    rmi: &Rmi,
    keys: &[u64],
    queries: &[u64],
    out: &mut [usize],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_detected` exists only if `CheckedKernel::new` found the features
    // `lower_bound_batch_avx512_inner` is compiled for on this CPU.
    unsafe {
        lower_bound_batch_avx512_inner(rmi, keys, queries, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    rmi.lower_bound_batch_with(keys, queries, out, count_less_scalar)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,popcnt")]
fn lower_bound_batch_avx512_inner(rmi: &Rmi, keys: &[u64], queries: &[u64], out: &mut [usize]) {
    rmi.lower_bound_batch_with(keys, queries, out, |w, k| {
        if w.len() > LINEAR_WINDOW_SLOTS_MAX {
            lower_bound_branchless(w, k)
        } else {
            avx512(w, k)
        }
    })
}

pub(crate) fn avx2_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("popcnt");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

pub(crate) fn avx512_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("popcnt");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

pub(crate) fn neon_supported() -> bool {
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("neon");
    #[cfg(not(target_arch = "aarch64"))]
    return false;
}

/// AVX2 count of keys `< key`; scalar when AVX2 is absent.
#[inline(always)]
pub fn count_less_avx2(window: &[u64], key: u64) -> usize {
    #[cfg(target_arch = "x86_64")]
    if avx2_supported() {
        // SAFETY: AVX2 was detected on this CPU just above.
        return unsafe { avx2(window, key) };
    }
    super::count_less_scalar(window, key)
}

/// AVX-512F count of keys `< key`; scalar when AVX-512F is absent.
#[inline(always)]
pub fn count_less_avx512(window: &[u64], key: u64) -> usize {
    #[cfg(target_arch = "x86_64")]
    if avx512_supported() {
        // SAFETY: AVX-512F was detected on this CPU just above.
        return unsafe { avx512(window, key) };
    }
    super::count_less_scalar(window, key)
}

/// NEON count of keys `< key`; scalar elsewhere.
#[inline(always)]
pub fn count_less_neon(window: &[u64], key: u64) -> usize {
    #[cfg(target_arch = "aarch64")]
    if neon_supported() {
        // SAFETY: NEON was detected on this CPU just above.
        return unsafe { neon(window, key) };
    }
    super::count_less_scalar(window, key)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2(window: &[u64], key: u64) -> usize {
    // Unsigned a < b  ⇔  signed (a ^ MIN) < (b ^ MIN); AVX2 only has a signed 64-bit compare.
    let bias = arch::_mm256_set1_epi64x(i64::MIN);
    let probe = arch::_mm256_xor_si256(arch::_mm256_set1_epi64x(key as i64), bias);
    let chunks = window.chunks_exact(4);
    let tail = chunks.remainder();
    let mut count = 0u32;
    for chunk in chunks {
        // SAFETY: `chunk` is 4 in-bounds u64 = 32 readable bytes; `loadu` needs no alignment.
        let v = unsafe { arch::_mm256_loadu_si256(chunk.as_ptr().cast()) };
        let less = arch::_mm256_cmpgt_epi64(probe, arch::_mm256_xor_si256(v, bias));
        count += (arch::_mm256_movemask_pd(arch::_mm256_castsi256_pd(less)) as u32).count_ones();
    }
    count as usize + super::count_less_scalar(tail, key)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn avx512(window: &[u64], key: u64) -> usize {
    let probe = arch::_mm512_set1_epi64(key as i64);
    let chunks = window.chunks_exact(8);
    let tail = chunks.remainder();
    let mut count = 0u32;
    for chunk in chunks {
        // SAFETY: `chunk` is 8 in-bounds u64 = 64 readable bytes; `loadu` needs no alignment.
        let v = unsafe { arch::_mm512_loadu_epi64(chunk.as_ptr().cast()) };
        count += arch::_mm512_cmplt_epu64_mask(v, probe).count_ones();
    }
    let mask: u8 = ((1u16 << tail.len()) - 1) as u8;
    // SAFETY: lanes outside `mask` are neither read nor faulted on, and the `tail.len()` lanes inside it
    // are in-bounds elements of `tail` (an empty tail gives mask 0: no access at all).
    let v = unsafe { arch::_mm512_maskz_loadu_epi64(mask, tail.as_ptr().cast()) };
    count += arch::_mm512_mask_cmplt_epu64_mask(mask, v, probe).count_ones();
    count as usize
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn neon(window: &[u64], key: u64) -> usize {
    use std::arch::aarch64 as a;
    let probe = a::vdupq_n_u64(key);
    let chunks = window.chunks_exact(2);
    let tail = chunks.remainder();
    let mut acc = a::vdupq_n_u64(0);
    for chunk in chunks {
        // SAFETY: `chunk` is 2 in-bounds u64 = 16 readable bytes; vld1q has no alignment requirement.
        let v = unsafe { a::vld1q_u64(chunk.as_ptr()) };
        acc = a::vaddq_u64(acc, a::vshrq_n_u64::<63>(a::vcltq_u64(v, probe)));
    }
    a::vaddvq_u64(acc) as usize + super::count_less_scalar(tail, key)
}

/// Asks the CPU to start loading the cache line holding `value`. A hint: never faults, never required.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: prefetch never faults and `value` is a valid reference; SSE is baseline on x86_64.
        unsafe { arch::_mm_prefetch::<{ arch::_MM_HINT_T0 }>((value as *const T).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

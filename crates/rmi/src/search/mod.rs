//! Last-mile search inside the error window: count the keys below the probe.
//!
//! The window of a lookup is sorted, so `count of keys < key` *is* the lower bound inside it. Narrow
//! windows are counted with wide compares (one SIMD compare per 4 or 8 keys, no branches, every cache
//! line of the window requested at once); wide windows use a branchless binary search. The SIMD kernels
//! live in [`simd`] with `unsafe`; [`count_less_scalar`] is their twin and the reference in tests.

pub mod simd;

/// Windows wider than this (in keys) are searched by branchless binary search instead of a full count.
pub const LINEAR_WINDOW_SLOTS_MAX: usize = 72;

/// Which last-mile kernel a lookup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Portable scalar count (the compiler may still vectorise it for the baseline target).
    Scalar,
    /// x86_64 AVX2: 4 keys per compare (sign-flipped signed compare).
    Avx2,
    /// x86_64 AVX-512F: 8 keys per unsigned compare, masked tail load.
    Avx512,
    /// aarch64 NEON: 2 keys per unsigned compare.
    Neon,
}

impl Kernel {
    /// Every kernel, for tests and benchmarks.
    pub const ALL: [Kernel; 4] = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512, Kernel::Neon];

    /// The fastest kernel this CPU supports, detected at run time.
    pub fn detect() -> Kernel {
        Kernel::ALL
            .into_iter()
            .rev()
            .find(|k| k.is_supported())
            .unwrap_or(Kernel::Scalar)
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Scalar => true,
            Kernel::Avx2 => simd::avx2_supported(),
            Kernel::Avx512 => simd::avx512_supported(),
            Kernel::Neon => simd::neon_supported(),
        }
    }
}

/// A kernel this CPU supports. The only constructors ([`CheckedKernel::new`], [`CheckedKernel::detect`])
/// check [`Kernel::is_supported`] in every build profile — once, when an index is built, loaded or
/// given a kernel, never per lookup. The `unsafe` calls into `#[target_feature]` code rest on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckedKernel(Kernel);

/// Proof that AVX-512F, AVX-512DQ and POPCNT were detected: only [`CheckedKernel::dispatch`] makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512Detected(());

/// Proof that AVX2 and POPCNT were detected: only [`CheckedKernel::dispatch`] makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2Detected(());

/// Where a lookup goes: a whole-lookup copy compiled for the detected features, or the portable body.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dispatch {
    Avx512(Avx512Detected),
    Avx2(Avx2Detected),
    Portable(Kernel),
}

impl CheckedKernel {
    /// `kernel` if this CPU runs it.
    pub(crate) fn new(kernel: Kernel) -> Option<CheckedKernel> {
        kernel.is_supported().then_some(CheckedKernel(kernel))
    }

    /// The fastest kernel this CPU runs (checked like [`CheckedKernel::new`]; scalar always runs).
    pub(crate) fn detect() -> CheckedKernel {
        CheckedKernel::new(Kernel::detect()).unwrap_or(CheckedKernel(Kernel::Scalar))
    }

    /// The kernel.
    #[inline(always)]
    pub(crate) fn get(self) -> Kernel {
        self.0
    }

    /// The lookup path for this kernel, with the proof the specialised paths require.
    #[inline(always)]
    pub(crate) fn dispatch(self) -> Dispatch {
        match self.0 {
            // The proofs are sound because `self` was checked at construction.
            Kernel::Avx512 => Dispatch::Avx512(Avx512Detected(())),
            Kernel::Avx2 => Dispatch::Avx2(Avx2Detected(())),
            other => Dispatch::Portable(other),
        }
    }
}

/// Number of keys in `window` that are `< key`. `kernel` must be supported (checked by the caller once,
/// when it was chosen); an unsupported kernel falls back to scalar rather than faulting.
#[inline(always)]
pub fn count_less(kernel: Kernel, window: &[u64], key: u64) -> usize {
    if window.len() > LINEAR_WINDOW_SLOTS_MAX {
        return lower_bound_branchless(window, key);
    }
    match kernel {
        Kernel::Scalar => count_less_scalar(window, key),
        Kernel::Avx2 => simd::count_less_avx2(window, key),
        Kernel::Avx512 => simd::count_less_avx512(window, key),
        Kernel::Neon => simd::count_less_neon(window, key),
    }
}

/// Scalar twin of the SIMD kernels.
#[inline]
pub fn count_less_scalar(window: &[u64], key: u64) -> usize {
    window.iter().map(|&k| usize::from(k < key)).sum()
}

/// First index in sorted `window` whose key is `>= key`, without data-dependent branches.
#[inline]
pub fn lower_bound_branchless(window: &[u64], key: u64) -> usize {
    if window.is_empty() {
        return 0;
    }
    let mut base = 0usize;
    let mut len = window.len();
    while len > 1 {
        let half = len / 2;
        base += usize::from(window[base + half - 1] < key) * half;
        len -= half;
    }
    base + usize::from(window[base] < key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_kernel_agrees_with_scalar() {
        let mut window: Vec<u64> = vec![0, 1, 2, 1 << 63, (1 << 63) + 1, u64::MAX - 1, u64::MAX];
        window.extend((0..200u64).map(|i| (1 << 40) + i * 17));
        window.sort_unstable();
        window.dedup();
        let mut probes = window.clone();
        probes.extend(window.iter().map(|k| k.wrapping_add(1)));
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_supported()) {
            for len in 0..=window.len().min(80) {
                for start in [0usize, 1, 3] {
                    let w = &window[start.min(len)..len];
                    for &p in &probes {
                        let want = count_less_scalar(w, p);
                        assert_eq!(
                            count_less(kernel, w, p),
                            want,
                            "{kernel:?} len {len} probe {p}"
                        );
                        assert_eq!(lower_bound_branchless(w, p), want);
                    }
                }
            }
        }
    }

    #[test]
    fn detected_kernel_is_supported() {
        assert!(Kernel::detect().is_supported());
        assert!(CheckedKernel::detect().get().is_supported());
    }

    #[test]
    fn unsupported_kernels_cannot_be_checked_in() {
        for kernel in Kernel::ALL {
            assert_eq!(
                CheckedKernel::new(kernel).is_some(),
                kernel.is_supported(),
                "{kernel:?}"
            );
        }
        // Every target lacks one of NEON and AVX2.
        assert!(Kernel::ALL.iter().any(|k| CheckedKernel::new(*k).is_none()));
    }
}

//! Vector distances with runtime-detected SIMD kernels.

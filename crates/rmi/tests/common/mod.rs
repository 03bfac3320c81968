//! Key-set shapes shared by the scenario tests.
#![allow(dead_code)]

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Shapes that break naive learned indexes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    Uniform,
    EqualGaps,
    Clustered,
    Outliers,
    NearMax,
    Lognormal,
    DuplicatesRemoved,
    Dense,
}

pub(crate) const SHAPES: [Shape; 8] = [
    Shape::Uniform,
    Shape::EqualGaps,
    Shape::Clustered,
    Shape::Outliers,
    Shape::NearMax,
    Shape::Lognormal,
    Shape::DuplicatesRemoved,
    Shape::Dense,
];

/// Sorted, deduplicated keys of the given shape (at most `n`).
pub(crate) fn keys(shape: Shape, n: usize, seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut keys: Vec<u64> = match shape {
        Shape::Uniform => (0..n).map(|_| rng.gen()).collect(),
        Shape::EqualGaps => {
            let gap = rng.gen_range(1..1u64 << 40);
            (0..n as u64).map(|i| i * gap).collect()
        }
        Shape::Dense => (0..n as u64).collect(),
        Shape::Clustered => {
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                let centre: u64 = rng.gen();
                let width = 1u64 << rng.gen_range(0..48);
                let size = 1 + (rng.gen::<f64>().powi(4) * 500.0) as usize;
                out.extend((0..size).map(|_| centre.saturating_add(rng.gen_range(0..=width))));
            }
            out
        }
        Shape::Outliers => {
            let mut out: Vec<u64> = (0..n).map(|_| rng.gen_range(0..1u64 << 30)).collect();
            for _ in 0..(n / 100).max(1) {
                out.push(u64::MAX - rng.gen_range(0..1u64 << 20));
            }
            out
        }
        Shape::NearMax => (0..n)
            .map(|_| u64::MAX - rng.gen_range(0..(n as u64 * 3).max(1)))
            .collect(),
        Shape::Lognormal => (0..n)
            .map(|_| {
                let z: f64 = (-2.0 * rng.gen::<f64>().max(1e-300).ln()).sqrt()
                    * (std::f64::consts::TAU * rng.gen::<f64>()).cos();
                ((2.0 * z).exp() * 1e12) as u64
            })
            .collect(),
        Shape::DuplicatesRemoved => (0..n)
            .map(|_| rng.gen_range(0..(n as u64 / 2).max(1)))
            .collect(),
    };
    keys.truncate(n);
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Present keys, their neighbours, extremes and random probes.
pub(crate) fn probes(keys: &[u64], seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x9e37_79b9);
    let mut out = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63];
    for &k in keys {
        out.extend([k, k.wrapping_sub(1), k.wrapping_add(1)]);
    }
    out.extend((0..64).map(|_| rng.gen::<u64>()));
    out
}

//! Vector distances (scalar stand-in; SIMD kernels land with the HNSW branch).

/// How vectors are compared. Scores are higher-is-better for all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity (vectors are stored normalised).
    Cosine,
    /// Dot product.
    Dot,
    /// Negative Euclidean distance.
    L2,
}

/// The kernel in use.
pub fn kernel_name() -> &'static str {
    "scalar"
}

/// Dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Squared Euclidean distance.
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Scales `v` to unit length; false if its norm is zero or not finite.
pub fn normalize(v: &mut [f32]) -> bool {
    let n = dot(v, v).sqrt();
    if !n.is_finite() || n == 0.0 {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= n);
    true
}

/// Higher is better: cosine similarity (of stored normalised vectors), dot product, or −L2 distance.
pub fn score(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => dot(a, b),
        Metric::L2 => -l2_squared(a, b).sqrt(),
    }
}

/// The vector as an index stores it: a normalised copy for cosine, else as given.
pub fn prepared(metric: Metric, v: &[f32]) -> Vec<f32> {
    let mut out = v.to_vec();
    if metric == Metric::Cosine {
        normalize(&mut out);
    }
    out
}

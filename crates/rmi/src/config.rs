//! Build configuration. Every limit is named with its unit last.

use crate::error::{Result, RmiError};

/// Largest `epsilon_max_slots` accepted: windows beyond this are binary-search territory anyway, and the
/// bound keeps `2·ε + 2` far from overflow.
pub const EPSILON_SLOTS_LIMIT: u32 = 1 << 20;

/// How a learned index is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RmiConfig {
    /// Largest prediction error of any key, in slots, and so the bound on keys a lookup reads:
    /// `2·epsilon_max_slots + 1`, whatever shape the build chooses. A learned shape is fitted at this ε
    /// or a half or a quarter of it, so each key lies within `epsilon_max_slots` of its prediction
    /// (`2·ε + 2` candidate answers); the model-free shapes are candidates only when their reads (a
    /// block, or the probes of a binary search) fit the same bound. Range `0..=EPSILON_SLOTS_LIMIT`.
    pub epsilon_max_slots: u32,
    /// Router buckets per leaf when sizing a radix table (rounded up to a power of two). Range `1..=16`.
    pub router_buckets_per_leaf: u32,
}

impl Default for RmiConfig {
    fn default() -> Self {
        // The build tries 32, 16 and 8 (and the model-free shapes): see docs/design/rmi.md,
        // "Choosing the shape".
        Self {
            epsilon_max_slots: 32,
            router_buckets_per_leaf: 2,
        }
    }
}

impl RmiConfig {
    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<()> {
        if self.epsilon_max_slots > EPSILON_SLOTS_LIMIT {
            return Err(RmiError::InvalidConfig(format!(
                "epsilon_max_slots {} exceeds {EPSILON_SLOTS_LIMIT}",
                self.epsilon_max_slots
            )));
        }
        if !(1..=16).contains(&self.router_buckets_per_leaf) {
            return Err(RmiError::InvalidConfig(format!(
                "router_buckets_per_leaf {} outside 1..=16",
                self.router_buckets_per_leaf
            )));
        }
        Ok(())
    }
}

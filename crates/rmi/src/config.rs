//! Build configuration. Every limit is named with its unit last.

use crate::error::{Result, RmiError};

/// Largest `epsilon_max_slots` accepted: windows beyond this are binary-search territory anyway, and the
/// bound keeps `2·ε + 2` far from overflow.
pub const EPSILON_SLOTS_LIMIT: u32 = 1 << 20;

/// How a learned index is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RmiConfig {
    /// Largest prediction error of any key, in slots. Every leaf is fitted so that each of its keys lies
    /// within `epsilon_max_slots` of its predicted position, so a lookup reads at most
    /// `2·epsilon_max_slots + 1` keys (`2·ε + 2` candidate answers). Range `0..=EPSILON_SLOTS_LIMIT`.
    pub epsilon_max_slots: u32,
    /// Router buckets per leaf when sizing a radix table (rounded up to a power of two). Range `1..=16`.
    pub router_buckets_per_leaf: u32,
}

impl Default for RmiConfig {
    fn default() -> Self {
        // Picked by bench/index: see docs/design/rmi.md, "Choosing ε".
        Self {
            epsilon_max_slots: 16,
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

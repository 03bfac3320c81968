//! The seam for derived state (search indexes): an [`Applier`] attached to a keyspace is called by the
//! WAL thread with every change to that keyspace, in log order, after the change is durable and
//! applied to the delta and before the writers of its group are woken. Storage knows nothing of what
//! the applier derives.

use std::sync::Arc;

/// One applied change to a keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// `key` now holds `value`.
    Put {
        /// The key.
        key: u64,
        /// The value written.
        value: &'a [u8],
        /// When the value expires (Unix ms), if it was written with a TTL. Expiry removes a value
        /// without a [`Change::Delete`]; keyspaces that feed appliers should not be written with TTLs.
        expires_at_ms: Option<u64>,
    },
    /// `key` was deleted (also each key a delete-range removed).
    Delete {
        /// The key.
        key: u64,
    },
}

impl Change<'_> {
    /// The key changed.
    pub fn key(&self) -> u64 {
        match self {
            Change::Put { key, .. } | Change::Delete { key } => *key,
        }
    }
}

/// Derived state kept in step with one keyspace.
///
/// Contract: after [`Keyspace::attach`](crate::Keyspace::attach) returns, the applier has seen every
/// live entry of the keyspace (through its load) and then every change, exactly once and in sequence
/// order; a write is acknowledged only after `apply` returned for it. So after any crash, rebuilding
/// by attaching again yields derived state equal to the stored data.
pub trait Applier: Send + Sync + 'static {
    /// The changes one record made to the keyspace, in order, with the record's sequence number.
    /// Runs on the WAL thread (or, for the load, on the attaching thread while writes wait): it must
    /// not block for long, must not panic, and must not write to the database.
    fn apply(&self, seq: u64, changes: &[Change<'_>]);
}

/// The appliers by keyspace id.
#[derive(Default)]
pub(crate) struct Appliers {
    by_keyspace: Vec<Option<Arc<dyn Applier>>>,
    /// How many are attached: the WAL thread checks this per record, so it must not scan.
    attached: usize,
}

impl Appliers {
    pub(crate) fn get(&self, keyspace: u32) -> Option<&Arc<dyn Applier>> {
        self.by_keyspace.get(keyspace as usize)?.as_ref()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.attached == 0
    }

    pub(crate) fn set(&mut self, keyspace: u32, applier: Option<Arc<dyn Applier>>) {
        let i = keyspace as usize;
        if self.by_keyspace.len() <= i {
            self.by_keyspace.resize(i + 1, None);
        }
        let was = self.by_keyspace[i].is_some();
        self.attached = self.attached + usize::from(applier.is_some()) - usize::from(was);
        self.by_keyspace[i] = applier;
    }
}

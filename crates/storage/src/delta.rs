//! The in-memory delta: recent writes, multi-versioned, in one lock-free ordered map.
//!
//! Entries are keyed `(keyspace, key, !seq)` so that all versions of a key sit together, newest first.
//! The single WAL writer thread inserts; readers see a version only when its sequence number is at or
//! below the published watermark, which makes a write batch visible all at once.

use std::{
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Instant,
};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

/// Bytes charged per entry on top of the value, for the skiplist node and key.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct DeltaKey {
    keyspace: u32,
    key: u64,
    /// `u64::MAX - seq`, so newer versions sort first.
    inv_seq: u64,
}

/// A version found in the delta: `None` is a tombstone.
pub(crate) type Version = Option<Bytes>;

/// Read access to a frozen generation of writes: the skiplist delta, or the sorted run recovery builds.
pub(crate) trait DeltaRead: Send + Sync {
    /// The newest version of `key` with sequence `<= visible`, if there is one.
    fn get(&self, keyspace: u32, key: u64, visible: u64) -> Option<Version>;
    /// Newest visible versions in `[start, end]`, in key order, tombstones included.
    fn range(
        &self,
        keyspace: u32,
        start: u64,
        end: u64,
        visible: u64,
    ) -> Box<dyn Iterator<Item = (u64, Version)> + '_>;
    fn has_keyspace(&self, keyspace: u32) -> bool;
    fn bytes(&self) -> usize;
}

impl DeltaRead for Delta {
    fn get(&self, keyspace: u32, key: u64, visible: u64) -> Option<Version> {
        Delta::get(self, keyspace, key, visible)
    }
    fn range(
        &self,
        keyspace: u32,
        start: u64,
        end: u64,
        visible: u64,
    ) -> Box<dyn Iterator<Item = (u64, Version)> + '_> {
        Box::new(Delta::range(self, keyspace, start, end, visible))
    }
    fn has_keyspace(&self, keyspace: u32) -> bool {
        Delta::has_keyspace(self, keyspace)
    }
    fn bytes(&self) -> usize {
        Delta::bytes(self)
    }
}

/// One generation of recent writes.
pub(crate) struct Delta {
    map: SkipMap<DeltaKey, Version>,
    bytes: AtomicUsize,
    max_seq: AtomicU64,
    created: Instant,
}

impl Delta {
    pub(crate) fn new() -> Self {
        Self {
            map: SkipMap::new(),
            bytes: AtomicUsize::new(0),
            max_seq: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    /// Records a version. Only the WAL writer thread (or recovery) calls this.
    pub(crate) fn insert(&self, keyspace: u32, key: u64, seq: u64, value: Version) {
        let size = ENTRY_OVERHEAD_BYTES + value.as_ref().map_or(0, Bytes::len);
        self.map.insert(
            DeltaKey {
                keyspace,
                key,
                inv_seq: u64::MAX - seq,
            },
            value,
        );
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.max_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// The newest version of `key` with sequence `<= visible`, if the delta has one.
    pub(crate) fn get(&self, keyspace: u32, key: u64, visible: u64) -> Option<Version> {
        let from = DeltaKey {
            keyspace,
            key,
            inv_seq: u64::MAX - visible,
        };
        let e = self.map.lower_bound(std::ops::Bound::Included(&from))?;
        let k = e.key();
        (k.keyspace == keyspace && k.key == key).then(|| e.value().clone())
    }

    /// The newest visible version of each key in `[start, end]` of a keyspace, lazily, in key order.
    /// Tombstones are yielded too, so a merge can hide older data with them.
    pub(crate) fn range(
        &self,
        keyspace: u32,
        start: u64,
        end: u64,
        visible: u64,
    ) -> impl Iterator<Item = (u64, Version)> + '_ {
        let lo = DeltaKey {
            keyspace,
            key: start,
            inv_seq: 0,
        };
        let hi = DeltaKey {
            keyspace,
            key: end,
            inv_seq: u64::MAX,
        };
        let mut last: Option<u64> = None;
        self.map.range(lo..=hi).filter_map(move |e| {
            let k = e.key();
            if u64::MAX - k.inv_seq > visible || last == Some(k.key) {
                return None;
            }
            last = Some(k.key);
            Some((k.key, e.value().clone()))
        })
    }

    /// Whether the delta holds anything for a keyspace.
    pub(crate) fn has_keyspace(&self, keyspace: u32) -> bool {
        let lo = DeltaKey {
            keyspace,
            key: 0,
            inv_seq: 0,
        };
        self.map
            .lower_bound(std::ops::Bound::Included(&lo))
            .is_some_and(|e| e.key().keyspace == keyspace)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn age(&self) -> std::time::Duration {
        self.created.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_visible_version_wins_and_tombstones_hide() {
        let d = Delta::new();
        d.insert(0, 5, 1, Some(Bytes::from_static(b"a")));
        d.insert(0, 5, 3, Some(Bytes::from_static(b"b")));
        d.insert(0, 5, 4, None);
        d.insert(1, 5, 2, Some(Bytes::from_static(b"other keyspace")));
        assert_eq!(d.get(0, 5, 2), Some(Some(Bytes::from_static(b"a"))));
        assert_eq!(d.get(0, 5, 3), Some(Some(Bytes::from_static(b"b"))));
        assert_eq!(d.get(0, 5, 4), Some(None));
        assert_eq!(d.get(0, 6, 9), None);
        assert_eq!(d.get(0, 5, 0), None);
        let r: Vec<_> = d.range(0, 0, u64::MAX, 3).collect();
        assert_eq!(r, vec![(5, Some(Bytes::from_static(b"b")))]);
        let other: Vec<_> = d.range(1, 0, u64::MAX, u64::MAX).collect();
        assert_eq!(
            other,
            vec![(5, Some(Bytes::from_static(b"other keyspace")))]
        );
        assert!(d.has_keyspace(1) && !d.has_keyspace(2));
    }
}

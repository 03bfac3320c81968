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

/// One version of a key: a value (or a tombstone), the sequence number of the write that made it and
/// its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    /// The sequence number of the write (0: unknown, from a snapshot written before versions were
    /// recorded).
    pub seq: u64,
    /// Unix milliseconds at which the value stops being visible; 0 = never.
    pub expires_ms: u64,
}

impl Version {
    /// The value if it is live at `now_ms`: neither a tombstone nor expired.
    pub(crate) fn live(&self, now_ms: u64) -> Option<&Bytes> {
        self.value
            .as_ref()
            .filter(|_| !expired(self.expires_ms, now_ms))
    }
}

/// Whether a value with expiry `expires_ms` (0 = never) is expired at `now_ms`.
pub(crate) fn expired(expires_ms: u64, now_ms: u64) -> bool {
    expires_ms != 0 && expires_ms <= now_ms
}

/// The wall clock for one read, taken only when a value with an expiry is met (most values have none,
/// and a clock read is a measurable share of a point read), and then at most once.
#[derive(Debug, Default)]
pub(crate) struct Now(std::cell::Cell<u64>);

impl Now {
    /// A clock that reads `ms`.
    pub(crate) fn at(ms: u64) -> Self {
        Self(std::cell::Cell::new(ms.max(1)))
    }

    /// Whether a value with expiry `expires_ms` (0 = never) is expired now.
    pub(crate) fn expired(&self, expires_ms: u64) -> bool {
        if expires_ms == 0 {
            return false;
        }
        if self.0.get() == 0 {
            self.0.set(now_ms().max(1));
        }
        expires_ms <= self.0.get()
    }

    /// The value of `v` if it is live now.
    pub(crate) fn live<'a>(&self, v: &'a Version) -> Option<&'a Bytes> {
        v.value.as_ref().filter(|_| !self.expired(v.expires_ms))
    }
}

/// The wall clock in Unix milliseconds (expiry is wall-clock time, so that it survives a restart).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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
    /// Value (`None`: tombstone) and expiry; the sequence number is in the key.
    map: SkipMap<DeltaKey, (Option<Bytes>, u64)>,
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

    /// Records a version. Only the WAL writer thread (or recovery) calls this. Returns whether the key's
    /// previous version in this delta is a value, if there is one: a version of the same record (same
    /// sequence number, which this one replaces), else the next older one.
    pub(crate) fn insert(
        &self,
        keyspace: u32,
        key: u64,
        seq: u64,
        value: Option<Bytes>,
        expires_ms: u64,
    ) -> Option<bool> {
        let size = ENTRY_OVERHEAD_BYTES + value.as_ref().map_or(0, Bytes::len);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.max_seq.fetch_max(seq, Ordering::Relaxed);
        let dk = DeltaKey {
            keyspace,
            key,
            inv_seq: u64::MAX - seq,
        };
        let mut version = Some((value, expires_ms));
        let e = self
            .map
            .get_or_insert_with(dk, || version.take().expect("called at most once"));
        if let Some(v) = version {
            // The same record wrote this key before (same sequence number): that version is the previous
            // one, and this one replaces it.
            let prev = e.value().0.is_some();
            self.map.insert(dk, v);
            return Some(prev);
        }
        // Versions of a key sort newest first, so the entry after the new one is the key's previous
        // version in this delta, if it has one: one step, not a second search.
        let next = e.next()?;
        let k = next.key();
        (k.keyspace == keyspace && k.key == key).then(|| next.value().0.is_some())
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
        (k.keyspace == keyspace && k.key == key).then(|| version(k, e.value()))
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
            Some((k.key, version(k, e.value())))
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

    /// Whether the delta holds any version of `key`, whatever its sequence number.
    pub(crate) fn contains(&self, keyspace: u32, key: u64) -> bool {
        self.get(keyspace, key, u64::MAX).is_some()
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

fn version(k: &DeltaKey, v: &(Option<Bytes>, u64)) -> Version {
    Version {
        value: v.0.clone(),
        seq: u64::MAX - k.inv_seq,
        expires_ms: v.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_visible_version_wins_and_tombstones_hide() {
        let v = |b: &'static [u8], seq| Version {
            value: Some(Bytes::from_static(b)),
            seq,
            expires_ms: 0,
        };
        let d = Delta::new();
        d.insert(0, 5, 1, Some(Bytes::from_static(b"a")), 0);
        d.insert(0, 5, 3, Some(Bytes::from_static(b"b")), 0);
        d.insert(0, 5, 4, None, 0);
        d.insert(1, 5, 2, Some(Bytes::from_static(b"other keyspace")), 0);
        assert_eq!(d.get(0, 5, 2), Some(v(b"a", 1)));
        assert_eq!(d.get(0, 5, 3), Some(v(b"b", 3)));
        assert_eq!(d.get(0, 5, 4).unwrap().value, None);
        assert_eq!(d.get(0, 6, 9), None);
        assert_eq!(d.get(0, 5, 0), None);
        let r: Vec<_> = d.range(0, 0, u64::MAX, 3).collect();
        assert_eq!(r, vec![(5, v(b"b", 3))]);
        let other: Vec<_> = d.range(1, 0, u64::MAX, u64::MAX).collect();
        assert_eq!(other, vec![(5, v(b"other keyspace", 2))]);
        assert!(d.has_keyspace(1) && !d.has_keyspace(2));
    }

    #[test]
    fn insert_reports_the_previous_version_in_the_delta() {
        let d = Delta::new();
        let v = || Some(Bytes::from_static(b"v"));
        assert_eq!(d.insert(0, 1, 1, v(), 0), None, "nothing before");
        assert_eq!(
            d.insert(0, 2, 2, v(), 0),
            None,
            "another key is not a previous version"
        );
        assert_eq!(d.insert(0, 1, 3, None, 0), Some(true), "the put at 1");
        assert_eq!(d.insert(0, 1, 4, v(), 0), Some(false), "the delete at 3");
        // The same record writing the key again: its own earlier version is the previous one.
        assert_eq!(d.insert(0, 1, 4, None, 0), Some(true));
        assert_eq!(d.get(0, 1, 4).unwrap().value, None, "and it is replaced");
        assert_eq!(d.insert(1, 1, 5, v(), 0), None, "keyspaces are apart");
    }

    #[test]
    fn an_expired_version_is_not_live() {
        let d = Delta::new();
        d.insert(0, 1, 1, Some(Bytes::from_static(b"x")), 1_000);
        let v = d.get(0, 1, 1).unwrap();
        assert_eq!(v.live(999).map(|b| &b[..]), Some(&b"x"[..]));
        assert_eq!(v.live(1_000), None);
    }
}

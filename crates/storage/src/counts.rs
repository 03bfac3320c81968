//! Exact live-key counts per keyspace, maintained by the WAL thread as it applies records.
//!
//! `present` counts the keys whose newest stored version is a value (expired or not); the keys among
//! them with an expiry are indexed by expiry time. The live count at an instant is `present` minus the
//! indexed keys already expired at that instant, so an expired key leaves the count at once, before any
//! compaction drops it. Compaction drops expired keys and removes them from both (under the same lock
//! the WAL thread applies under).

use std::collections::{BTreeSet, HashMap};

/// One keyspace's numbers.
#[derive(Debug, Default, Clone)]
struct KeyspaceCount {
    present: u64,
    expiry_of: HashMap<u64, u64>,
    by_expiry: BTreeSet<(u64, u64)>,
}

impl KeyspaceCount {
    /// See [`Counts::write`].
    fn write(&mut self, key: u64, prev_present: bool, new: Option<u64>) {
        if prev_present {
            self.present = self.present.saturating_sub(1);
            if let Some(e) = self.expiry_of.remove(&key) {
                self.by_expiry.remove(&(e, key));
            }
        }
        if let Some(expires_ms) = new {
            self.present += 1;
            if expires_ms != 0 {
                self.expiry_of.insert(key, expires_ms);
                self.by_expiry.insert((expires_ms, key));
            }
        }
    }
}

/// Live-key counts of every keyspace.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    by_keyspace: HashMap<u32, KeyspaceCount>,
}

impl Counts {
    /// A write of `key` whose previous newest version was a value (`prev_present`), now a value
    /// expiring at `new` (`Some(0)`: never) or a tombstone (`None`).
    pub(crate) fn write(&mut self, keyspace: u32, key: u64, prev_present: bool, new: Option<u64>) {
        self.by_keyspace
            .entry(keyspace)
            .or_default()
            .write(key, prev_present, new);
    }

    /// Adds the newest operations of a replayed run, in (keyspace, key) order: `present(keyspace, key)`
    /// says whether the key's version below the run (in the snapshot) is a value; `new` is `None` for a
    /// delete, else the put's expiry (0 = never). One map lookup per keyspace, not per key.
    pub(crate) fn add_run(
        &mut self,
        run: impl Iterator<Item = (u32, u64, Option<u64>)>,
        mut present: impl FnMut(u32, u64) -> bool,
    ) {
        let mut run = run.peekable();
        while let Some(&(ks, _, _)) = run.peek() {
            let c = self.by_keyspace.entry(ks).or_default();
            while let Some((_, key, new)) = run.next_if(|(id, _, _)| *id == ks) {
                c.write(key, present(ks, key), new);
            }
        }
    }

    /// A snapshot's keys (all values), `expiring` the `(key, expires_ms)` of those with an expiry.
    pub(crate) fn add_snapshot(
        &mut self,
        keyspace: u32,
        keys: u64,
        expiring: impl Iterator<Item = (u64, u64)>,
    ) {
        let c = self.by_keyspace.entry(keyspace).or_default();
        c.present += keys;
        for (key, e) in expiring {
            c.expiry_of.insert(key, e);
            c.by_expiry.insert((e, key));
        }
    }

    /// Compaction dropped `key`, a value that expired at `expires_ms`.
    pub(crate) fn dropped(&mut self, keyspace: u32, key: u64, expires_ms: u64) {
        let c = self.by_keyspace.entry(keyspace).or_default();
        if c.expiry_of.get(&key) == Some(&expires_ms) {
            c.expiry_of.remove(&key);
            c.by_expiry.remove(&(expires_ms, key));
            c.present = c.present.saturating_sub(1);
        }
    }

    /// Forgets a keyspace (dropped, or created under an id an earlier keyspace held).
    pub(crate) fn remove(&mut self, keyspace: u32) {
        self.by_keyspace.remove(&keyspace);
    }

    /// Live keys at `now_ms`: present minus those expired by then. Costs O(expired keys not yet
    /// compacted away).
    pub(crate) fn live(&self, keyspace: u32, now_ms: u64) -> u64 {
        self.by_keyspace.get(&keyspace).map_or(0, |c| {
            let expired = c.by_expiry.range(..=(now_ms, u64::MAX)).count() as u64;
            c.present - expired
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_puts_deletes_and_expiry() {
        let mut c = Counts::default();
        c.write(0, 1, false, Some(0));
        c.write(0, 2, false, Some(100));
        c.write(0, 1, true, Some(0)); // overwrite: no change
        assert_eq!(c.live(0, 50), 2);
        assert_eq!(c.live(0, 100), 1, "expired at 100");
        c.write(0, 2, true, Some(0)); // rewritten without expiry
        assert_eq!(c.live(0, 100), 2);
        c.write(0, 1, true, None);
        assert_eq!(c.live(0, 100), 1);
        c.write(0, 3, false, Some(10));
        c.dropped(0, 3, 10);
        assert_eq!(c.live(0, 5), 1, "dropped by compaction");
        assert_eq!(c.live(7, 5), 0);
        c.remove(0);
        assert_eq!(c.live(0, 5), 0, "forgotten");
    }
}

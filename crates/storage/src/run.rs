//! A sorted run: the immutable form recovery gives the records it replays. Appending decoded ops to a
//! vector and sorting once is several times faster than inserting each into the skiplist, and the run
//! is handed straight to compaction as a frozen delta.

use bytes::Bytes;

use crate::delta::{DeltaRead, Version, ENTRY_OVERHEAD_BYTES};

/// Collects replayed operations in sequence order.
#[derive(Default)]
pub(crate) struct RunBuilder {
    /// `(keyspace, seq − seq_base, key, value)`: 48 bytes an op. The sequence number is kept as an
    /// offset (a run's records are contiguous, so offsets fit in 32 bits; any that does not goes to
    /// `seq_far`) and the rare expiry in `expiring`, so that replay moves no more bytes per op than it
    /// did before versions carried them.
    ops: Vec<(u32, u32, u64, Option<Bytes>)>,
    seq_base: u64,
    seq_far: std::collections::HashMap<u32, u64>,
    /// Bit `i`: the op at replay position `i` is a delete (kept as ops arrive: no second pass over
    /// the ops, which are the largest thing recovery holds).
    deletes: Vec<u64>,
    /// Replay position → expiry, for the puts that have one.
    expiring: std::collections::HashMap<u32, u64>,
    bytes: usize,
}

impl RunBuilder {
    pub(crate) fn push(&mut self, keyspace: u32, key: u64, version: Version) {
        self.bytes += ENTRY_OVERHEAD_BYTES + version.value.as_ref().map_or(0, Bytes::len);
        let i = self.ops.len();
        if i == 0 {
            self.seq_base = version.seq;
        }
        if i.is_multiple_of(64) {
            self.deletes.push(0);
        }
        if version.value.is_none() {
            self.deletes[i / 64] |= 1 << (i % 64);
        } else if version.expires_ms != 0 {
            self.expiring.insert(i as u32, version.expires_ms);
        }
        let off = version
            .seq
            .checked_sub(self.seq_base)
            .and_then(|d| u32::try_from(d).ok())
            .unwrap_or_else(|| {
                self.seq_far.insert(i as u32, version.seq);
                u32::MAX
            });
        self.ops.push((keyspace, off, key, version.value));
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Sorts by (keyspace, key), keeping only the newest operation of each key. Only 16-byte positions
    /// are sorted; the values stay where replay put them (no gather pass on the recovery path). What the
    /// key counts need of each op is kept apart and small — a bit per op for "is a delete" (L2-sized
    /// for millions of ops) and a map of the rare puts with an expiry — so counting the run never
    /// reads the values.
    pub(crate) fn finish(self) -> SortedRun {
        // Ties on (keyspace, key) put the later (newer) op first. Packed into one u128, so the sort
        // compares one integer, not a 3-field tuple (the sort is most of replay's instructions).
        let mut order: Vec<u128> = self
            .ops
            .iter()
            .enumerate()
            .map(|(i, (ks, _, k, _))| pack(*ks, *k, u32::MAX - i as u32))
            .collect();
        order.sort_unstable();
        order.dedup_by_key(|e| *e >> 32);
        let values = self
            .ops
            .into_iter()
            .map(|(_, off, _, v)| (off, v))
            .collect();
        SortedRun {
            order,
            values,
            seq_base: self.seq_base,
            seq_far: self.seq_far,
            deletes: self.deletes,
            expiring: self.expiring,
            bytes: self.bytes,
        }
    }
}

/// `(keyspace, key, inverted position)` as one integer ordered like the tuple.
fn pack(keyspace: u32, key: u64, inv: u32) -> u128 {
    (u128::from(keyspace) << 96) | (u128::from(key) << 32) | u128::from(inv)
}

fn unpack(e: u128) -> (u32, u64, u32) {
    ((e >> 96) as u32, (e >> 32) as u64, e as u32)
}

/// Newest version per (keyspace, key): sorted positions into the values in replay order.
pub(crate) struct SortedRun {
    /// `(keyspace, key, u32::MAX - replay position)`, [`pack`]ed.
    order: Vec<u128>,
    /// `(seq − seq_base, value)` in replay order (`u32::MAX`: look in `seq_far`).
    values: Vec<(u32, Option<Bytes>)>,
    seq_base: u64,
    seq_far: std::collections::HashMap<u32, u64>,
    /// Bit `i`: the op at replay position `i` is a delete.
    deletes: Vec<u64>,
    /// Replay position → expiry, for the puts that have one.
    expiring: std::collections::HashMap<u32, u64>,
    bytes: usize,
}

impl SortedRun {
    fn lower_bound(&self, keyspace: u32, key: u64) -> usize {
        let at = pack(keyspace, key, 0) >> 32;
        self.order.partition_point(|e| *e >> 32 < at)
    }

    /// Every key's newest operation in (keyspace, key) order: `None` for a delete, else the put's
    /// expiry (0 = never). Reads no value.
    pub(crate) fn newest(&self) -> impl Iterator<Item = (u32, u64, Option<u64>)> + '_ {
        self.order.iter().map(|e| {
            let (ks, k, inv) = unpack(*e);
            let i = u32::MAX - inv;
            let deleted = self.deletes[i as usize / 64] & (1 << (i % 64)) != 0;
            let expiry = || {
                if self.expiring.is_empty() {
                    0
                } else {
                    self.expiring.get(&i).copied().unwrap_or(0)
                }
            };
            (ks, k, (!deleted).then(expiry))
        })
    }

    fn value(&self, inv: u32) -> Version {
        let i = u32::MAX - inv;
        let (off, value) = &self.values[i as usize];
        let seq = match *off {
            u32::MAX => self
                .seq_far
                .get(&i)
                .copied()
                .unwrap_or(self.seq_base + u64::from(u32::MAX)),
            o => self.seq_base + u64::from(o),
        };
        let expires_ms = if self.expiring.is_empty() {
            0
        } else {
            self.expiring.get(&i).copied().unwrap_or(0)
        };
        Version {
            value: value.clone(),
            seq,
            expires_ms,
        }
    }
}

impl DeltaRead for SortedRun {
    fn get(&self, keyspace: u32, key: u64, _visible: u64) -> Option<Version> {
        let (ks, k, inv) = unpack(*self.order.get(self.lower_bound(keyspace, key))?);
        (ks == keyspace && k == key).then(|| self.value(inv))
    }

    fn range(
        &self,
        keyspace: u32,
        start: u64,
        end: u64,
        _visible: u64,
    ) -> Box<dyn Iterator<Item = (u64, Version)> + '_> {
        let from = self.lower_bound(keyspace, start);
        Box::new(
            self.order[from..]
                .iter()
                .map(|e| unpack(*e))
                .take_while(move |(ks, k, _)| *ks == keyspace && *k <= end)
                .map(|(_, k, inv)| (k, self.value(inv))),
        )
    }

    fn has_keyspace(&self, keyspace: u32) -> bool {
        self.order
            .get(self.lower_bound(keyspace, 0))
            .is_some_and(|e| unpack(*e).0 == keyspace)
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_positions_order_like_the_tuples() {
        let tuples = [
            (0u32, 0u64, 0u32),
            (0, 0, u32::MAX),
            (0, 1, 0),
            (0, u64::MAX, 7),
            (1, 0, 0),
            (u32::MAX, u64::MAX, u32::MAX),
        ];
        for w in tuples.windows(2) {
            assert!(pack(w[0].0, w[0].1, w[0].2) < pack(w[1].0, w[1].1, w[1].2));
        }
        for t in tuples {
            assert_eq!(unpack(pack(t.0, t.1, t.2)), t);
        }
    }

    #[test]
    fn newest_op_per_key_wins_in_key_order() {
        let put = |b: &'static [u8], seq| Version {
            value: Some(Bytes::from_static(b)),
            seq,
            expires_ms: 0,
        };
        let del = |seq| Version {
            value: None,
            seq,
            expires_ms: 0,
        };
        let mut b = RunBuilder::default();
        b.push(0, 9, put(b"old", 1));
        b.push(1, 1, put(b"ks1", 2));
        b.push(0, 3, put(b"three", 3));
        b.push(0, 9, put(b"new", 4));
        b.push(0, 3, del(5));
        let r = b.finish();
        assert_eq!(r.get(0, 9, 0), Some(put(b"new", 4)));
        assert_eq!(r.get(0, 3, 0), Some(del(5)));
        assert_eq!(r.get(0, 4, 0), None);
        let all: Vec<_> = r.range(0, 0, u64::MAX, 0).collect();
        assert_eq!(all, vec![(3, del(5)), (9, put(b"new", 4))]);
        assert!(r.has_keyspace(1) && !r.has_keyspace(2));
        assert_eq!(
            r.newest().collect::<Vec<_>>(),
            vec![(0, 3, None), (0, 9, Some(0)), (1, 1, Some(0))]
        );
    }

    #[test]
    fn newest_reports_the_expiry_of_the_newest_put() {
        let v = |value: Option<&'static [u8]>, seq, expires_ms| Version {
            value: value.map(Bytes::from_static),
            seq,
            expires_ms,
        };
        let mut b = RunBuilder::default();
        b.push(0, 1, v(Some(b"a"), 1, 500));
        b.push(0, 1, v(Some(b"b"), 2, 900));
        b.push(0, 2, v(Some(b"c"), 3, 700));
        b.push(0, 2, v(None, 4, 0));
        b.push(0, 3, v(None, 5, 0));
        b.push(0, 3, v(Some(b"d"), 6, 0));
        let r = b.finish();
        assert_eq!(
            r.newest().collect::<Vec<_>>(),
            vec![(0, 1, Some(900)), (0, 2, None), (0, 3, Some(0))]
        );
    }

    #[test]
    fn sequence_numbers_and_expiries_come_back_exactly_even_far_from_the_first() {
        let v = |seq, expires_ms| Version {
            value: Some(Bytes::from_static(b"x")),
            seq,
            expires_ms,
        };
        let mut b = RunBuilder::default();
        b.push(0, 1, v(100, 0));
        b.push(0, 2, v(100 + u64::from(u32::MAX), 7)); // offset exactly u32::MAX
        b.push(0, 3, v(100 + (1 << 40), 0)); // beyond 32 bits
        b.push(0, 4, v(50, 0)); // below the first
        let r = b.finish();
        for (key, want) in [
            (1, v(100, 0)),
            (2, v(100 + u64::from(u32::MAX), 7)),
            (3, v(100 + (1 << 40), 0)),
            (4, v(50, 0)),
        ] {
            assert_eq!(r.get(0, key, 0), Some(want), "key {key}");
        }
    }
}

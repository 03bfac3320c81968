//! What readers see: one consistent [`ReadState`] (active delta, frozen delta, the keyspaces'
//! snapshots) published by the WAL thread through `core.rs`, and the read paths over it — point
//! reads and range scans newest-first (active → frozen → snapshot), yielding [`Entry`] and
//! [`Value`]. Below `core.rs` (whose delete-range resolution scans) and `db.rs` (the API).

use std::{ops::Deref, sync::Arc};

use bytes::Bytes;

use crate::{
    delta::{Delta, DeltaRead, Now},
    merge::{Merge, Source},
    snapshot::Snapshot,
    Result,
};

/// A delta that no longer takes writes, waiting to be merged into new snapshots.
pub(crate) struct Frozen {
    pub delta: Arc<dyn DeltaRead>,
    /// Every record up to here is in `delta` (or in the snapshots already).
    pub covered_seq: u64,
}

/// The snapshots of every keyspace at one manifest generation, indexed by keyspace id (ids stay below
/// `keyspaces_max`: a creation takes the lowest id no live keyspace holds), so a read finds its
/// snapshot without hashing.
#[derive(Default, Clone)]
pub(crate) struct SnapshotSet {
    by_keyspace: Vec<Option<Arc<Snapshot>>>,
}

impl SnapshotSet {
    pub(crate) fn get(&self, keyspace: u32) -> Option<&Arc<Snapshot>> {
        self.by_keyspace.get(keyspace as usize)?.as_ref()
    }

    pub(crate) fn insert(&mut self, keyspace: u32, snap: Arc<Snapshot>) {
        let i = keyspace as usize;
        if self.by_keyspace.len() <= i {
            self.by_keyspace.resize(i + 1, None);
        }
        self.by_keyspace[i] = Some(snap);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Arc<Snapshot>)> {
        self.by_keyspace
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as u32, s.as_ref()?)))
    }
}

/// One consistent view for readers: newest data first.
pub(crate) struct ReadState {
    pub active: Arc<Delta>,
    pub frozen: Option<Arc<Frozen>>,
    pub snapshots: Arc<SnapshotSet>,
}

impl ReadState {
    pub(crate) fn delta_bytes(&self) -> usize {
        self.active.bytes() + self.frozen.as_ref().map_or(0, |f| f.delta.bytes())
    }

    /// Whether `key`'s newest version below the active delta (frozen delta, then snapshot) is a value,
    /// expired or not. Reads only the frozen delta and the snapshot's key array.
    pub(crate) fn present_below_active(&self, keyspace: u32, key: u64) -> bool {
        if let Some(v) = self
            .frozen
            .as_ref()
            .and_then(|f| f.delta.get(keyspace, key, u64::MAX))
        {
            return v.value.is_some();
        }
        self.snapshots
            .get(keyspace)
            .is_some_and(|s| s.contains(key))
    }

    /// The sequence number of `key`'s value if it is live at `now_ms` (every applied version counts:
    /// only the WAL thread calls this, between groups).
    pub(crate) fn live_seq(&self, keyspace: u32, key: u64, now_ms: u64) -> Result<Option<u64>> {
        let newest = self
            .active
            .get(keyspace, key, u64::MAX)
            .or_else(|| self.frozen.as_ref()?.delta.get(keyspace, key, u64::MAX));
        if let Some(v) = newest {
            return Ok(v.live(now_ms).map(|_| v.seq));
        }
        let Some(snap) = self.snapshots.get(keyspace) else {
            return Ok(None);
        };
        Ok(snap
            .get(key)?
            .filter(|e| !crate::delta::expired(e.expires_ms, now_ms))
            .map(|e| e.seq))
    }
}

/// A live value with its metadata, from [`Keyspace::get_entry`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// The value.
    pub value: Value,
    /// The sequence number of the write that stored it (0 if it predates recorded sequence numbers).
    /// Pass it to [`Condition::Seq`] for a compare-and-set.
    pub seq: u64,
    /// When it expires, in Unix milliseconds; `None` if it never does.
    pub expires_at_ms: Option<u64>,
}

/// A value read from the engine: either a delta buffer or a slice of a snapshot's mmap'd data file
/// (already verified against its checksum). Cheap to clone; derefs to bytes.
#[derive(Clone)]
pub struct Value(pub(crate) Repr);

#[derive(Clone)]
pub(crate) enum Repr {
    Delta(Bytes),
    Snapshot {
        snap: Arc<Snapshot>,
        start: usize,
        end: usize,
    },
}

impl Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Delta(b) => b,
            Repr::Snapshot { snap, start, end } => &snap.data()[*start..*end],
        }
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Value({} bytes)", self.len())
    }
}

impl PartialEq<[u8]> for Value {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

/// Calls `f` with the live entries of `keyspace` in `[start, end]`, ascending, at most `limit`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scan_in(
    st: &Arc<ReadState>,
    id: u32,
    start: u64,
    end: u64,
    visible: u64,
    now: &Now,
    limit: usize,
    mut f: impl FnMut(u64, Entry),
) -> Result<()> {
    let snap = st.snapshots.get(id).cloned();
    let mut sources: Vec<Box<dyn Iterator<Item = (u64, Source)> + '_>> = vec![Box::new(
        st.active
            .range(id, start, end, visible)
            .map(|(k, v)| (k, Source::Delta(v))),
    )];
    if let Some(fz) = &st.frozen {
        sources.push(Box::new(
            fz.delta
                .range(id, start, end, u64::MAX)
                .map(|(k, v)| (k, Source::Delta(v))),
        ));
    }
    if let Some(s) = &snap {
        let keys = s.keys();
        let lo = s.index().lower_bound(keys, start);
        let hi = if end == u64::MAX {
            keys.len()
        } else {
            s.index().lower_bound(keys, end + 1)
        };
        sources.push(Box::new(
            (lo..hi.max(lo)).map(|i| (keys[i], Source::Snapshot(i))),
        ));
    }
    let mut n = 0;
    for (key, src) in Merge::new(sources) {
        if n == limit {
            break;
        }
        let entry = match src {
            Source::Delta(v) => now.live(&v).map(|b| Entry {
                value: Value(Repr::Delta(b.clone())),
                seq: v.seq,
                expires_at_ms: (v.expires_ms != 0).then_some(v.expires_ms),
            }),
            Source::Snapshot(i) => {
                let s = snap.as_ref().expect("snapshot source implies a snapshot");
                let e = s.entry_at(i)?;
                (!now.expired(e.expires_ms)).then(|| snapshot_entry(s, e))
            }
        };
        if let Some(e) = entry {
            f(key, e);
            n += 1;
        }
    }
    Ok(())
}

/// The live keys of `keyspace` in `[start, end]` at `now`, at most `limit`, against everything
/// applied (the WAL thread resolving a delete-range).
pub(crate) fn live_keys(
    st: &Arc<ReadState>,
    keyspace: u32,
    start: u64,
    end: u64,
    now: u64,
    limit: usize,
) -> Result<Vec<u64>> {
    let mut keys = Vec::new();
    scan_in(
        st,
        keyspace,
        start,
        end,
        u64::MAX,
        &Now::at(now),
        limit,
        |k, _| keys.push(k),
    )?;
    Ok(keys)
}

pub(crate) fn snapshot_entry(snap: &Arc<Snapshot>, e: crate::snapshot::SnapEntry) -> Entry {
    Entry {
        value: Value(Repr::Snapshot {
            snap: snap.clone(),
            start: e.start,
            end: e.end,
        }),
        seq: e.seq,
        expires_at_ms: (e.expires_ms != 0).then_some(e.expires_ms),
    }
}

/// Where point reads were answered, counted per thread and flushed to the `metrics` facade every
/// `READ_COUNT_FLUSH` reads, so the hot path pays a thread-local add, not a registry lookup.
const READ_COUNT_FLUSH: u64 = 1024;

thread_local! {
    static READS_BY_SOURCE: std::cell::Cell<[u64; 2]> = const { std::cell::Cell::new([0, 0]) };
}

pub(crate) fn count_read(from_index: bool) {
    READS_BY_SOURCE.with(|c| {
        let mut v = c.get();
        v[from_index as usize] += 1;
        if v[0] + v[1] >= READ_COUNT_FLUSH {
            metrics::counter!(crate::families::STORAGE_READS_TOTAL.name, "source" => "delta")
                .increment(v[0]);
            metrics::counter!(crate::families::STORAGE_READS_TOTAL.name, "source" => "index")
                .increment(v[1]);
            v = [0, 0];
        }
        c.set(v);
    });
}

/// The newest version in the active or frozen delta: `Some(None)` is a tombstone or an expired value,
/// `None` means the deltas do not know the key and the snapshot decides.
pub(crate) fn delta_get(
    st: &ReadState,
    keyspace: u32,
    key: u64,
    visible: u64,
    now: &Now,
) -> Option<Option<Entry>> {
    let found = st
        .active
        .get(keyspace, key, visible)
        .or_else(|| st.frozen.as_ref()?.delta.get(keyspace, key, u64::MAX))?;
    count_read(false);
    Some(now.live(&found).map(|b| Entry {
        value: Value(Repr::Delta(b.clone())),
        seq: found.seq,
        expires_at_ms: (found.expires_ms != 0).then_some(found.expires_ms),
    }))
}

pub(crate) fn get_in(
    st: &ReadState,
    keyspace: u32,
    key: u64,
    visible: u64,
    now: &Now,
) -> Result<Option<Entry>> {
    if let Some(v) = delta_get(st, keyspace, key, visible, now) {
        return Ok(v);
    }
    count_read(true);
    let Some(snap) = st.snapshots.get(keyspace) else {
        return Ok(None);
    };
    Ok(snap
        .get(key)?
        .filter(|e| !now.expired(e.expires_ms))
        .map(|e| snapshot_entry(snap, e)))
}

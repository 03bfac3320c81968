//! The public handle: keyspaces, writes through the WAL, reads through delta → snapshot.

use std::{
    ops::{Bound, RangeBounds},
    path::Path,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use crate::{
    applier::{Applier, Change},
    compaction::SnapshotInfo,
    condition::Condition,
    core::{Incarnation, KIND_DROP_KEYSPACE},
    delta::{now_ms, Now},
    inner::Inner,
    options::Options,
    view::{
        count_read, delta_get, get_in, scan_in, snapshot_entry, Entry, ReadState, SnapshotSet,
        Value,
    },
    wal::record::{encode_create_keyspace, BatchEncoder, KIND_CREATE_KEYSPACE},
    Error, Result,
};

use crate::core::{validate_keyspace_name, DEFAULT_KEYSPACE};

/// Puts and deletes applied all-or-nothing, across keyspaces, under one sequence number.
#[derive(Default, Clone)]
pub struct WriteBatch {
    pub(crate) enc: BatchEncoder,
    /// The keyspaces it writes (ids and incarnations): a batch for a dropped keyspace is refused.
    keyspaces: Vec<(u32, Arc<Incarnation>)>,
}

impl std::fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBatch")
            .field("ops", &self.len())
            .field("bytes", &self.enc.encoded_len())
            .finish()
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyspace")
            .field("id", &self.id)
            .field("name", &self.inc.name)
            .finish()
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a put of `value` under `key` in `keyspace`. Later operations on the same key win.
    pub fn put(&mut self, keyspace: &Keyspace, key: u64, value: &[u8]) -> &mut Self {
        self.uses(keyspace);
        self.enc.put(keyspace.id, key, value);
        self
    }
    /// Adds a delete of `key` in `keyspace` (a tombstone; deleting an absent key is not an error).
    pub fn delete(&mut self, keyspace: &Keyspace, key: u64) -> &mut Self {
        self.uses(keyspace);
        self.enc.delete(keyspace.id, key);
        self
    }
    /// Adds a put whose value stops being visible `ttl` from now (wall clock; survives restarts).
    /// Expired keys are invisible to every read and count at once, and compaction drops them. A zero
    /// `ttl` stores a value that is already expired.
    pub fn put_with_ttl(
        &mut self,
        keyspace: &Keyspace,
        key: u64,
        value: &[u8],
        ttl: Duration,
    ) -> &mut Self {
        let at = now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self.uses(keyspace);
        self.enc.put_expiring(keyspace.id, key, value, at.max(1));
        self
    }
    /// Adds a put that expires at `expires_at_ms` (Unix milliseconds; 0 = never).
    pub fn put_expiring_at(
        &mut self,
        keyspace: &Keyspace,
        key: u64,
        value: &[u8],
        expires_at_ms: u64,
    ) -> &mut Self {
        self.uses(keyspace);
        self.enc
            .put_expiring(keyspace.id, key, value, expires_at_ms);
        self
    }
    /// Adds a delete of every key in `range` of `keyspace` that is live when the batch is sequenced
    /// (and of keys this batch put there before it). Resolved to point deletes in the WAL thread, so
    /// it is atomic with the rest of the batch; a range holding more than `batch_ops_max` keys (with
    /// the batch's other operations) is refused whole with [`Error::BatchTooManyOps`]: delete it in
    /// smaller ranges.
    pub fn delete_range(&mut self, keyspace: &Keyspace, range: impl RangeBounds<u64>) -> &mut Self {
        if let Some((start, end)) = inclusive(range) {
            self.uses(keyspace);
            self.enc.delete_range(keyspace.id, start, end);
        }
        self
    }
    /// Makes the whole batch conditional on `key` in `keyspace`: if the condition does not hold when
    /// the batch is sequenced, nothing is written and the write fails with
    /// [`Error::ConditionFailed`]. Conditions are checked against the state before the batch.
    pub fn require(&mut self, keyspace: &Keyspace, key: u64, condition: Condition) -> &mut Self {
        self.uses(keyspace);
        self.enc.check(keyspace.id, key, condition);
        self
    }
    /// Operations in the batch.
    pub fn len(&self) -> usize {
        self.enc.count()
    }
    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.enc.count() == 0
    }
    /// Notes that the batch writes `keyspace` (one entry per incarnation: two handles of one id
    /// from different lives are both checked).
    fn uses(&mut self, keyspace: &Keyspace) {
        if !self
            .keyspaces
            .iter()
            .any(|k| Arc::ptr_eq(&k.1, &keyspace.inc))
        {
            self.keyspaces.push((keyspace.id, keyspace.inc.clone()));
        }
    }
    /// Refuses the batch if a keyspace it writes was dropped.
    fn check_live(&self) -> Result<()> {
        match self.keyspaces.iter().find(|k| k.1.is_dropped()) {
            Some(k) => Err(Error::NoSuchKeyspace(k.1.name.to_string())),
            None => Ok(()),
        }
    }
}

/// One keyspace's numbers.
#[derive(Debug, Clone)]
pub struct KeyspaceStats {
    /// The keyspace's id (the lowest free one at creation; a dropped keyspace's id is reused).
    pub id: u32,
    /// The keyspace's name.
    pub name: String,
    /// Keys in its current snapshot (not counting the delta).
    pub snapshot_keys: u64,
    /// Bytes of its current snapshot's data file.
    pub snapshot_data_bytes: u64,
    /// Bytes of its snapshot's index beyond the key array (`index.model_bytes`).
    pub index_model_bytes: usize,
    /// Its snapshot's index.
    pub index: crate::index::IndexInfo,
    /// Live keys (see [`Keyspace::count`]).
    pub keys: u64,
}

/// What [`Db::warm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmReport {
    /// Bytes of snapshot files (index and values) now resident.
    pub bytes: u64,
    /// 4 KiB pages read to make them so.
    pub pages_touched: u64,
}

/// What [`Db::rebuild_index`] did for one keyspace.
#[derive(Debug, Clone)]
pub struct IndexReport {
    /// The keyspace's name.
    pub keyspace: String,
    /// Keys the index was built over.
    pub keys: u64,
    /// The new index.
    pub index: crate::index::IndexInfo,
    /// Wall time of the build, persisting included, in milliseconds.
    pub build_ms: f64,
}

/// Engine numbers for `/metrics`, `/ready` and tests.
#[derive(Debug, Clone)]
pub struct Stats {
    /// The last sequence number handed out (durable or not yet).
    pub last_seq: u64,
    /// The visibility watermark: every write at or below it is durable and visible.
    pub visible_seq: u64,
    /// Generation of the current manifest.
    pub manifest_generation: u64,
    /// Every write at or below this is in the snapshots.
    pub covered_seq: u64,
    /// Bytes charged to the active delta.
    pub delta_bytes: usize,
    /// Versions in the active delta.
    pub delta_entries: usize,
    /// Bytes charged to the frozen delta being compacted.
    pub frozen_bytes: usize,
    /// WAL segment files on disk.
    pub wal_segments: usize,
    /// Compactions since open.
    pub compactions: u64,
    /// The index builder's name.
    pub index: &'static str,
    /// Per keyspace, by id.
    pub keyspaces: Vec<KeyspaceStats>,
    /// Why writes stopped (fail-stop), if they did.
    pub writes_stopped: Option<String>,
}

/// A KyroDB storage engine over one data directory.
pub struct Db {
    pub(crate) inner: Arc<Inner>,
    default: Keyspace,
}

/// A handle to one keyspace: an independent u64 key space sharing the database's WAL. A handle keeps
/// the engine's files open (and the directory locked) until it is dropped, even after `Db::close`.
/// Once its keyspace is dropped ([`Db::drop_keyspace`]) the handle reads and writes nothing: its
/// reads and writes fail with [`Error::NoSuchKeyspace`], even if a new keyspace takes the name or id.
#[derive(Clone)]
pub struct Keyspace {
    inner: Arc<Inner>,
    id: u32,
    inc: Arc<Incarnation>,
}

impl Db {
    /// Opens (or creates) the database in `dir`, recovering from the manifest, snapshots and WAL.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Self> {
        let inner = crate::recovery::open(dir.as_ref(), opts)?;
        let inc = inner.core.registry.read().incarnations.get(&0).cloned();
        let default = Keyspace {
            inner: inner.clone(),
            id: 0,
            inc: inc.unwrap_or_else(|| Arc::new(Incarnation::new(DEFAULT_KEYSPACE))),
        };
        Ok(Self { inner, default })
    }

    /// The keyspace the HTTP v1 API uses.
    pub fn default_keyspace(&self) -> &Keyspace {
        &self.default
    }

    /// An existing keyspace.
    pub fn keyspace(&self, name: &str) -> Result<Keyspace> {
        let found = self.inner.core.registry.read().lookup(name);
        found
            .map(|(id, inc)| Keyspace {
                inner: self.inner.clone(),
                id,
                inc,
            })
            .ok_or_else(|| Error::NoSuchKeyspace(name.to_owned()))
    }

    /// The keyspace called `name`, created (durably) if it does not exist. It takes the lowest id no
    /// live keyspace holds; at most `keyspaces_max` keyspaces are live at once
    /// ([`Error::TooManyKeyspaces`]), dropped ones do not count.
    pub fn create_keyspace(&self, name: &str) -> Result<Keyspace> {
        validate_keyspace_name(name)?;
        if let Some(r) = self.inner.replicator.get() {
            if let Ok(ks) = self.keyspace(name) {
                return Ok(ks);
            }
            r.replicate(crate::LoggedWrite::create_keyspace(name))?;
            return self.keyspace(name);
        }
        self.create_keyspace_local(name)
    }

    /// [`Db::create_keyspace`] on this node only (applying a replicated creation).
    pub(crate) fn create_keyspace_local(&self, name: &str) -> Result<Keyspace> {
        validate_keyspace_name(name)?;
        let _g = self.inner.create_mu.lock();
        if let Ok(ks) = self.keyspace(name) {
            return Ok(ks);
        }
        let (id, live, dropped_at) = {
            let r = self.inner.core.registry.read();
            let id = r.free_id();
            (id, r.by_id.len(), r.dropped.get(&id).copied())
        };
        let max = self.inner.core.opts.keyspaces_max;
        if live >= max {
            return Err(Error::TooManyKeyspaces(max));
        }
        if let Some(seq) = dropped_at {
            self.inner.cover_drop(seq)?;
        }
        self.inner
            .append(KIND_CREATE_KEYSPACE, encode_create_keyspace(id, name))?;
        self.keyspace(name)
    }

    /// Drops the keyspace called `name`, durably (one WAL record): it leaves the list at once, its
    /// keys are never read again, its snapshot files are deleted by the next compaction, and its id
    /// and its place under `keyspaces_max` are free for the next [`Db::create_keyspace`] — a keyspace
    /// created later under the same name starts empty, also after a restart. Handles to it fail from
    /// then on with [`Error::NoSuchKeyspace`]; writes to it that were already under way are logged
    /// before the drop (it waits for them). Its applier, if any, is detached. The default keyspace
    /// cannot be dropped ([`Error::InvalidOption`]). With a replicator the drop is a replicated
    /// write, applied on every node in log order (a write ordered after it finds no keyspace).
    pub fn drop_keyspace(&self, name: &str) -> Result<()> {
        validate_keyspace_name(name)?;
        if name == DEFAULT_KEYSPACE {
            return Err(Error::InvalidOption(
                "the default keyspace cannot be dropped".into(),
            ));
        }
        if let Some(r) = self.inner.replicator.get() {
            // Refused here as the local drop would (absent, the default), before the hand-over.
            if self.inner.core.registry.read().lookup(name).is_none() {
                return Err(Error::NoSuchKeyspace(name.to_owned()));
            }
            return r
                .replicate(crate::LoggedWrite::drop_keyspace(name))
                .map(|_| ());
        }
        self.drop_keyspace_local(name).map(|_| ())
    }

    /// [`Db::drop_keyspace`] on this node only; returns the drop's sequence number.
    pub(crate) fn drop_keyspace_local(&self, name: &str) -> Result<u64> {
        let _g = self.inner.create_mu.lock();
        let found = self.inner.core.registry.read().lookup(name);
        let Some((id, inc)) = found else {
            return Err(Error::NoSuchKeyspace(name.to_owned()));
        };
        if id == 0 {
            return Err(Error::InvalidOption(
                "the default keyspace cannot be dropped".into(),
            ));
        }
        {
            // Once the write side is held, every write that found the keyspace live is logged.
            let _all_logged = self.inner.gate.write();
            inc.set_dropped(true);
        }
        let seq = match self
            .inner
            .append(KIND_DROP_KEYSPACE, encode_create_keyspace(id, name))
        {
            Ok(seq) => seq,
            Err(e) => {
                // Not applied: the keyspace lives on.
                inc.set_dropped(false);
                return Err(e);
            }
        };
        self.inner.core.appliers.write().set(id, None);
        if self.inner.core.opts.background_compaction {
            // Frees the keyspace's snapshot files soon (the compaction's manifest no longer names
            // them) and makes its id ready for reuse. Best effort: a later compaction does it too.
            let _ = self.inner.wal.freeze(false);
        }
        Ok(seq)
    }

    /// Names of all keyspaces, by id.
    pub fn keyspace_names(&self) -> Vec<String> {
        self.inner
            .core
            .registry
            .read()
            .by_id
            .values()
            .cloned()
            .collect()
    }

    /// Applies a batch atomically; returns its sequence number. An empty batch writes nothing and
    /// returns the last visible sequence number.
    pub fn write(&self, batch: WriteBatch) -> Result<u64> {
        self.inner.write(batch)
    }

    /// [`Keyspace::put`] in the default keyspace.
    pub fn put(&self, key: u64, value: &[u8]) -> Result<u64> {
        self.default.put(key, value)
    }
    /// [`Keyspace::delete`] in the default keyspace.
    pub fn delete(&self, key: u64) -> Result<u64> {
        self.default.delete(key)
    }
    /// [`Keyspace::get`] in the default keyspace.
    pub fn get(&self, key: u64) -> Result<Option<Value>> {
        self.default.get(key)
    }
    /// [`Keyspace::multi_get`] in the default keyspace.
    pub fn multi_get(&self, keys: &[u64]) -> Result<Vec<Option<Value>>> {
        self.default.multi_get(keys)
    }
    /// [`Keyspace::scan`] in the default keyspace.
    pub fn scan(&self, range: impl RangeBounds<u64>, limit: usize) -> Result<Vec<(u64, Value)>> {
        self.default.scan(range, limit)
    }
    /// [`Keyspace::get_entry`] in the default keyspace.
    pub fn get_entry(&self, key: u64) -> Result<Option<Entry>> {
        self.default.get_entry(key)
    }
    /// [`Keyspace::delete_range`] in the default keyspace.
    pub fn delete_range(&self, range: impl RangeBounds<u64>) -> Result<u64> {
        self.default.delete_range(range)
    }
    /// [`Keyspace::count`] of the default keyspace.
    pub fn count(&self) -> u64 {
        self.default.count()
    }

    /// Compacts everything written so far into snapshots and waits until the manifest covers it.
    pub fn snapshot(&self) -> Result<SnapshotInfo> {
        self.inner.snapshot()
    }

    /// Rebuilds every snapshot's index in the calling thread, persists it, then swaps it in
    /// atomically. Reads keep using the old index until the swap; none waits.
    pub fn rebuild_index(&self) -> Result<Vec<IndexReport>> {
        self.inner.rebuild_index()
    }

    /// Numbers for monitoring.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Reads every snapshot file into memory (readahead advice, then one byte of every page), so the
    /// first lookups do not fault.
    pub fn warm(&self) -> WarmReport {
        let st = self.inner.core.state.load_full();
        let (bytes, pages_touched) = st
            .snapshots
            .iter()
            .map(|(_, s)| s.warm())
            .fold((0, 0), |(b, p), (sb, sp)| (b + sb, p + sp));
        WarmReport {
            bytes,
            pages_touched,
        }
    }

    /// Verifies every snapshot value's checksum (a full scrub); the first failure names file and offset.
    pub fn verify(&self) -> Result<()> {
        let st = self.inner.core.state.load_full();
        let result = st.snapshots.iter().try_for_each(|(_, s)| s.verify_values());
        result
    }

    /// The options the database was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.core.opts
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// Flushes and stops background work. Also done on drop.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.inner.close();
    }
}

impl Keyspace {
    /// The keyspace's name.
    pub fn name(&self) -> &str {
        &self.inc.name
    }
    /// The keyspace's id (what WAL records and snapshot files name it by). After a drop, a new
    /// keyspace may get the same id.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// Whether the keyspace was dropped (then this handle reads and writes nothing).
    pub fn is_dropped(&self) -> bool {
        self.inc.is_dropped()
    }
    /// `Err(NoSuchKeyspace)` once dropped. Readers check it after loading the state: a state holding
    /// a later keyspace's versions under this id is published after the drop marked this one.
    fn live(&self) -> Result<()> {
        if self.inc.is_dropped() {
            return Err(Error::NoSuchKeyspace(self.name().to_owned()));
        }
        Ok(())
    }

    /// Writes `value` under `key`; returns the sequence number once durable and visible.
    pub fn put(&self, key: u64, value: &[u8]) -> Result<u64> {
        let mut b = WriteBatch::new();
        b.put(self, key, value);
        self.inner.write(b)
    }

    /// Deletes `key` (a tombstone); returns the sequence number.
    pub fn delete(&self, key: u64) -> Result<u64> {
        let mut b = WriteBatch::new();
        b.delete(self, key);
        self.inner.write(b)
    }

    /// Writes `value` under `key`, expiring `ttl` from now (see [`WriteBatch::put_with_ttl`]).
    pub fn put_with_ttl(&self, key: u64, value: &[u8], ttl: Duration) -> Result<u64> {
        let mut b = WriteBatch::new();
        b.put_with_ttl(self, key, value, ttl);
        self.inner.write(b)
    }

    /// Writes `value` under `key` only if the key has no live value (`SET NX`); otherwise
    /// [`Error::ConditionFailed`] and nothing is written.
    pub fn put_if_absent(&self, key: u64, value: &[u8]) -> Result<u64> {
        let mut b = WriteBatch::new();
        b.require(self, key, Condition::Absent)
            .put(self, key, value);
        self.inner.write(b)
    }

    /// Writes `value` under `key` only if its live value was written at sequence `if_seq`
    /// (compare-and-set); otherwise [`Error::ConditionFailed`] and nothing is written.
    pub fn put_if_seq(&self, key: u64, value: &[u8], if_seq: u64) -> Result<u64> {
        let mut b = WriteBatch::new();
        b.require(self, key, Condition::Seq(if_seq))
            .put(self, key, value);
        self.inner.write(b)
    }

    /// Deletes `key` only if its live value was written at sequence `if_seq`; otherwise
    /// [`Error::ConditionFailed`] and nothing is written.
    pub fn delete_if_seq(&self, key: u64, if_seq: u64) -> Result<u64> {
        let mut b = WriteBatch::new();
        b.require(self, key, Condition::Seq(if_seq))
            .delete(self, key);
        self.inner.write(b)
    }

    /// Deletes every key in `keys` in one atomic batch (at most `batch_ops_max` keys).
    pub fn delete_many(&self, keys: &[u64]) -> Result<u64> {
        let mut b = WriteBatch::new();
        for k in keys {
            b.delete(self, *k);
        }
        self.inner.write(b)
    }

    /// Deletes every live key in `range` atomically (see [`WriteBatch::delete_range`]: at most
    /// `batch_ops_max` keys, otherwise refused whole).
    pub fn delete_range(&self, range: impl RangeBounds<u64>) -> Result<u64> {
        let mut b = WriteBatch::new();
        b.delete_range(self, range);
        self.inner.write(b)
    }

    /// Live keys in the keyspace: exact, and cheap to read. The WAL thread maintains the number of keys
    /// whose newest version is a value as it applies each write (a lookup of the key's previous version
    /// in the deltas and the snapshot's key array), and indexes the ones with an expiry by expiry time;
    /// the count is that number minus the keys already expired (O(expired keys compaction has not yet
    /// dropped)). Includes the writes of the group being applied, a few microseconds before they are
    /// acknowledged.
    pub fn count(&self) -> u64 {
        let counts = self.inner.core.counts.lock();
        if self.inc.is_dropped() {
            return 0;
        }
        counts.live(self.id, now_ms())
    }

    /// The newest live value of `key`.
    pub fn get(&self, key: u64) -> Result<Option<Value>> {
        Ok(self.get_entry(key)?.map(|e| e.value))
    }

    /// The newest live value of `key` with the sequence number of the write that stored it and its
    /// expiry.
    pub fn get_entry(&self, key: u64) -> Result<Option<Entry>> {
        let st = self.inner.core.state.load();
        let visible = self.inner.core.visible_seq.load(Ordering::Acquire);
        self.live()?;
        get_in(&st, self.id, key, visible, &Now::default())
    }

    /// `get` for many keys against one consistent view.
    pub fn multi_get(&self, keys: &[u64]) -> Result<Vec<Option<Value>>> {
        let st = self.inner.core.state.load();
        let visible = self.inner.core.visible_seq.load(Ordering::Acquire);
        self.live()?;
        let now = Now::default();
        let mut out = Vec::with_capacity(keys.len());
        // Keys the deltas do not answer go to the snapshot's index in one batch.
        let (mut rest_at, mut rest_keys) = (Vec::new(), Vec::new());
        for (i, k) in keys.iter().enumerate() {
            match delta_get(&st, self.id, *k, visible, &now) {
                Some(v) => out.push(v.map(|e| e.value)),
                None => {
                    out.push(None);
                    rest_at.push(i);
                    rest_keys.push(*k);
                }
            }
        }
        let Some(snap) = st.snapshots.get(self.id) else {
            return Ok(out);
        };
        let mut found = vec![None; rest_keys.len()];
        snap.index().find_batch(snap.keys(), &rest_keys, &mut found);
        for (at, pos) in rest_at.into_iter().zip(found) {
            count_read(true);
            if let Some(pos) = pos {
                let e = snap.entry_at(pos)?;
                if !now.expired(e.expires_ms) {
                    out[at] = Some(snapshot_entry(snap, e).value);
                }
            }
        }
        Ok(out)
    }

    /// Attaches derived state to this keyspace (see [`Applier`]): hands `applier` every live entry
    /// (`apply` with one [`Change::Put`] per key, carrying that entry's sequence number, in key order),
    /// then every later change as the WAL thread applies it. No write to any keyspace is applied while
    /// the entries are loaded, so nothing is missed or seen twice; keep the load cheap (writes wait).
    /// Returns the sequence number the load reflects. A keyspace has at most one applier: attaching
    /// replaces the previous one.
    pub fn attach(&self, applier: Arc<dyn Applier>) -> Result<u64> {
        let core = &self.inner.core;
        let mut appliers = core.appliers.write();
        // A drop marks the keyspace before it detaches under this lock: no applier outlives it.
        self.live()?;
        // Holding the lock the WAL thread applies under: every applied record is in the state and no
        // record is half applied. Entries applied but not yet published are durable, so they count.
        let st = core.state.load_full();
        let seq = core.applied_seq.load(Ordering::Acquire);
        scan_in(
            &st,
            self.id,
            0,
            u64::MAX,
            u64::MAX,
            &Now::default(),
            usize::MAX,
            |key, e| {
                applier.apply(
                    e.seq,
                    &[Change::Put {
                        key,
                        value: &e.value,
                        expires_at_ms: e.expires_at_ms,
                    }],
                )
            },
        )?;
        appliers.set(self.id, Some(applier));
        Ok(seq)
    }

    /// Detaches this keyspace's applier, if any; it gets no further changes. (A dropped keyspace's
    /// applier is detached by the drop; its id may hold another keyspace's now.)
    pub fn detach(&self) {
        let mut appliers = self.inner.core.appliers.write();
        if !self.inc.is_dropped() {
            appliers.set(self.id, None);
        }
    }

    /// Live keys in `range`, ascending, at most `limit`.
    pub fn scan(&self, range: impl RangeBounds<u64>, limit: usize) -> Result<Vec<(u64, Value)>> {
        let Some((start, end)) = inclusive(range) else {
            return Ok(Vec::new());
        };
        let st = self.inner.core.state.load_full();
        let visible = self.inner.core.visible_seq.load(Ordering::Acquire);
        self.live()?;
        let mut out = Vec::with_capacity(limit.min(1024));
        scan_in(
            &st,
            self.id,
            start,
            end,
            visible,
            &Now::default(),
            limit,
            |k, e| out.push((k, e.value)),
        )?;
        Ok(out)
    }
}

fn inclusive(range: impl RangeBounds<u64>) -> Option<(u64, u64)> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => *e,
        Bound::Excluded(e) => e.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (start <= end).then_some((start, end))
}

impl Inner {
    fn write(&self, batch: WriteBatch) -> Result<u64> {
        let o = &self.core.opts;
        if batch.is_empty() {
            return Ok(self.core.visible_seq.load(Ordering::Acquire));
        }
        if batch.enc.value_len_max() > o.value_bytes_max {
            return Err(Error::ValueTooLarge {
                len: batch.enc.value_len_max(),
                max: o.value_bytes_max,
            });
        }
        if batch.len() > o.batch_ops_max {
            return Err(Error::BatchTooManyOps {
                count: batch.len(),
                max: o.batch_ops_max,
            });
        }
        if batch.enc.encoded_len() > o.batch_bytes_max {
            return Err(Error::BatchTooLarge {
                len: batch.enc.encoded_len(),
                max: o.batch_bytes_max,
            });
        }
        if let Some(r) = self.replicator.get() {
            // At apply, every node refuses a batch for a keyspace that is gone by then — or whose
            // id names another keyspace by then (dropped, and the id given to a new one): the
            // batch carries the names it meant.
            batch.check_live()?;
            let names: Vec<(u32, &str)> = batch
                .keyspaces
                .iter()
                .map(|(id, inc)| (*id, &*inc.name))
                .collect();
            return r.replicate(crate::LoggedWrite::named_batch(&names, &batch.enc.finish()));
        }
        let _gate = self.gate.read();
        batch.check_live()?;
        self.log_batch(batch.enc)
    }

    fn rebuild_index(&self) -> Result<Vec<IndexReport>> {
        // Compaction replaces snapshots; holding its lock keeps the rebuilt ones current.
        let _c = self.compaction_mu.lock();
        let st = self.core.state.load_full();
        let builder = &*self.core.opts.index_builder;
        let mut rebuilt = Vec::new();
        for (id, snap) in st.snapshots.iter() {
            let started = Instant::now();
            let fresh = Arc::new(snap.rebuild_index(builder)?);
            let build_ms = started.elapsed().as_secs_f64() * 1e3;
            metrics::counter!(kyrodb_rmi::metrics::RMI_REBUILDS_TOTAL.name).increment(1);
            rebuilt.push((id, fresh, build_ms));
        }
        let _g = self.core.state_mu.lock();
        let cur = self.core.state.load_full();
        let mut set = SnapshotSet::clone(&cur.snapshots);
        for (id, fresh, _) in &rebuilt {
            set.insert(*id, fresh.clone());
        }
        self.core.state.store(Arc::new(ReadState {
            active: cur.active.clone(),
            frozen: cur.frozen.clone(),
            snapshots: Arc::new(set),
        }));
        let names = self.core.registry.read();
        Ok(rebuilt
            .into_iter()
            .map(|(id, s, build_ms)| IndexReport {
                keyspace: names.by_id.get(&id).cloned().unwrap_or_default(),
                keys: s.meta.key_count,
                index: s.index().info(),
                build_ms,
            })
            .collect())
    }

    fn stats(&self) -> Stats {
        let st = self.core.state.load_full();
        let m = self.manifest.lock().clone();
        // Not under the registry lock: the WAL thread takes `counts`, then the registry (a keyspace
        // creation), so the other order could deadlock.
        let names: Vec<(u32, String)> = self
            .core
            .registry
            .read()
            .by_id
            .iter()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        let now = now_ms();
        let counts = self.core.counts.lock();
        let keyspaces = names
            .iter()
            .map(|(id, name)| {
                let s = st.snapshots.get(*id);
                KeyspaceStats {
                    id: *id,
                    name: name.clone(),
                    snapshot_keys: s.map_or(0, |s| s.meta.key_count),
                    snapshot_data_bytes: s.map_or(0, |s| s.meta.data_bytes),
                    index_model_bytes: s.map_or(0, |s| s.index().info().model_bytes),
                    index: s.map(|s| s.index().info()).unwrap_or_default(),
                    keys: counts.live(*id, now),
                }
            })
            .collect();
        Stats {
            last_seq: self.wal.last_seq(),
            visible_seq: self.core.visible_seq.load(Ordering::Acquire),
            manifest_generation: m.generation,
            covered_seq: m.covered_seq,
            delta_bytes: st.active.bytes(),
            delta_entries: st.active.len(),
            frozen_bytes: st.frozen.as_ref().map_or(0, |f| f.delta.bytes()),
            wal_segments: self.wal.segments().len(),
            compactions: self.compactions.load(Ordering::Relaxed),
            index: self.core.opts.index_builder.name(),
            keyspaces,
            writes_stopped: self.wal.stopped().map(|s| s.to_string()),
        }
    }
}

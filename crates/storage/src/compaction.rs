//! Compaction: merge the frozen delta into new snapshot files, commit them with a new manifest, swap the
//! read state, then drop covered WAL segments and unreferenced snapshot files. Readers and writers never
//! wait on it: readers keep the state they loaded, writers go to the new active delta meanwhile.

use std::{collections::HashMap, path::Path, sync::Arc, time::Instant};

use crate::{
    core::Core,
    inner::Inner,
    manifest::{KeyspaceEntry, Manifest},
    merge::{Merge, Source},
    snapshot::{Snapshot, SnapshotWriter},
    view::{ReadState, SnapshotSet},
    Error, Result,
};

/// A value compaction dropped because it had expired: `(keyspace, key, expires_ms)`.
type Expired = (u32, u64, u64);

/// Compacts the frozen delta if there is one. Any error but running out of file descriptors stops
/// writes (fail-stop): the WAL still holds everything, and a restart retries from the last good
/// manifest. Out of descriptors, the frozen delta stays and the next attempt retries.
pub(crate) fn compact_frozen(inner: &Inner) -> Result<()> {
    let _running = inner.compaction_mu.lock();
    let st = inner.core.state.load_full();
    let Some(frozen) = st.frozen.clone() else {
        return Ok(());
    };
    let started = Instant::now();
    let old = inner.manifest.lock().clone();
    let result = merge_and_commit(
        &inner.core,
        &inner.dir,
        &inner.snap_dir,
        &old,
        &st,
        &*frozen.delta,
        frozen.covered_seq,
    );
    let (manifest, set, expired) = match result {
        Ok(v) => v,
        Err(e) if e.is_out_of_files() => {
            // Nothing is in doubt: the frozen delta stays and the next tick (or snapshot) tries
            // again; half-written files are unreferenced and removed by the next commit or open.
            metrics::counter!(crate::families::STORAGE_COMPACTION_OUT_OF_FILES_TOTAL.name)
                .increment(1);
            tracing::warn!(error = %e, "compaction could not open a file (out of descriptors); retrying later");
            inner.core.wake_waiting_writers();
            return Err(e.out_of_files_copy());
        }
        Err(e) => {
            inner.wal.stop(&format!("compaction failed: {e}"));
            inner.core.wake_waiting_writers();
            return Err(e);
        }
    };
    install(&inner.core, set, &expired);
    let covered = manifest.covered_seq;
    *inner.manifest.lock() = manifest.clone();
    inner
        .compactions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    inner.core.wake_waiting_writers();
    metrics::histogram!(crate::families::STORAGE_COMPACTION_DURATION_SECONDS.name)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::families::STORAGE_COMPACTIONS_TOTAL.name).increment(1);
    // Clean-up after the commit point: a crash here leaves files that the next open deletes.
    inner
        .wal
        .remove_covered(covered, inner.core.opts.wal_retain_segments)?;
    remove_unreferenced_snapshots(&inner.snap_dir, &manifest)?;
    Ok(())
}

/// Swaps in the new snapshots and drops the frozen delta, keeping the current active delta. Keys the
/// compaction dropped because they expired leave the key counts in the same step, under the counts
/// lock the WAL thread applies under, so a count never sees them twice or not at all.
fn install(core: &Core, set: Arc<SnapshotSet>, expired: &[Expired]) {
    let mut counts = core.counts.lock();
    let _g = core.state_mu.lock();
    let cur = core.state.load_full();
    for (ks, key, expires_ms) in expired {
        // A newer version in the active delta was counted against the expired one when it was applied.
        if !cur.active.contains(*ks, *key) {
            counts.dropped(*ks, *key, *expires_ms);
        }
    }
    core.state.store(Arc::new(ReadState {
        active: cur.active.clone(),
        frozen: None,
        snapshots: set,
    }));
}

/// Compaction while the WAL replays (no writer thread yet), to keep replay within the delta budget.
pub(crate) fn compact_frozen_during_recovery(
    core: &Core,
    dir: &Path,
    snap_dir: &Path,
    manifest: &mut Manifest,
) -> Result<()> {
    let st = core.state.load_full();
    let Some(frozen) = st.frozen.clone() else {
        return Ok(());
    };
    let (m, set, _expired) = merge_and_commit(
        core,
        dir,
        snap_dir,
        manifest,
        &st,
        &*frozen.delta,
        frozen.covered_seq,
    )?;
    // Recovery counts keys from the final state once replay ends.
    install(core, set, &[]);
    *manifest = m;
    remove_unreferenced_snapshots(snap_dir, manifest)
}

/// Writes new snapshots for every keyspace the frozen delta touches and stores the manifest naming them.
fn merge_and_commit(
    core: &Core,
    dir: &Path,
    snap_dir: &Path,
    old: &Manifest,
    st: &ReadState,
    frozen: &dyn crate::delta::DeltaRead,
    covered_seq: u64,
) -> Result<(Manifest, Arc<SnapshotSet>, Vec<Expired>)> {
    let generation = old.generation + 1;
    // Values expired at this instant are dropped; later expiries stay in the new snapshot.
    let now_ms = crate::delta::now_ms();
    let mut expired = Vec::new();
    let (registry, next_keyspace_id): (Vec<(u32, String)>, u32) = {
        let r = core.registry.read();
        (
            r.by_id.iter().map(|(id, n)| (*id, n.clone())).collect(),
            r.next_id,
        )
    };
    let old_meta: HashMap<u32, _> = old
        .keyspaces
        .iter()
        .filter_map(|k| Some((k.id, k.snapshot?)))
        .collect();
    let mut set = SnapshotSet::default();
    let mut keyspaces = Vec::with_capacity(registry.len());
    for (id, name) in registry {
        let old_snap = st.snapshots.get(id).cloned();
        let snapshot = if frozen.has_keyspace(id) {
            let meta = write_merged(
                snap_dir,
                id,
                generation,
                covered_seq,
                frozen,
                old_snap.as_deref(),
                now_ms,
                &mut expired,
            )?;
            let snap = Snapshot::open(snap_dir, id, meta, &*core.opts.index_builder)?;
            set.insert(id, Arc::new(snap));
            Some(meta)
        } else {
            if let Some(s) = old_snap {
                set.insert(id, s);
            }
            old_meta.get(&id).copied()
        };
        keyspaces.push(KeyspaceEntry { id, name, snapshot });
    }
    let manifest = Manifest {
        generation,
        covered_seq,
        next_keyspace_id,
        keyspaces,
    };
    fail::fail_point!("compaction::before_manifest");
    fail::fail_point!("compaction::out_of_files", |_| Err(crate::Error::io(
        dir,
        std::io::Error::from_raw_os_error(24)
    )));
    manifest.store(dir)?;
    fail::fail_point!("compaction::after_manifest");
    Ok((manifest, Arc::new(set), expired))
}

/// Merges one keyspace into a new snapshot. Tombstones and values expired at `now_ms` are not carried
/// forward; the expired ones are added to `expired` as `(keyspace, key, expires_ms)`.
#[allow(clippy::too_many_arguments)]
fn write_merged(
    snap_dir: &Path,
    keyspace: u32,
    generation: u64,
    covered_seq: u64,
    frozen: &dyn crate::delta::DeltaRead,
    old: Option<&Snapshot>,
    now_ms: u64,
    expired: &mut Vec<Expired>,
) -> Result<crate::snapshot::SnapshotMeta> {
    let mut w = SnapshotWriter::create(snap_dir, keyspace, generation, covered_seq)?;
    type Src<'a> = Box<dyn Iterator<Item = (u64, Source)> + 'a>;
    let mut sources: Vec<Src<'_>> = vec![Box::new(
        frozen
            .range(keyspace, 0, u64::MAX, u64::MAX)
            .map(|(k, v)| (k, Source::Delta(v))),
    )];
    if let Some(s) = old {
        sources.push(Box::new(
            s.keys()
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, Source::Snapshot(i))),
        ));
    }
    for (key, src) in Merge::new(sources) {
        match src {
            Source::Delta(v) => match &v.value {
                None => {}
                Some(_) if crate::delta::expired(v.expires_ms, now_ms) => {
                    expired.push((keyspace, key, v.expires_ms));
                }
                Some(b) => w.push(key, b, v.seq, v.expires_ms)?,
            },
            Source::Snapshot(i) => {
                let s = old.expect("snapshot source implies a snapshot");
                // Verified before it is copied: corruption is never carried into a new snapshot.
                let e = s.entry_at(i)?;
                if crate::delta::expired(e.expires_ms, now_ms) {
                    expired.push((keyspace, key, e.expires_ms));
                } else {
                    w.push(key, &s.data()[e.start..e.end], e.seq, e.expires_ms)?;
                }
            }
        }
    }
    w.finish()
}

/// Deletes snapshot files the manifest does not name, and leftover temporary files.
pub(crate) fn remove_unreferenced_snapshots(
    snap_dir: &std::path::Path,
    manifest: &Manifest,
) -> Result<()> {
    let live: std::collections::HashSet<(u32, u64)> = manifest
        .keyspaces
        .iter()
        .filter_map(|k| Some((k.id, k.snapshot?.generation)))
        .collect();
    for entry in std::fs::read_dir(snap_dir).map_err(|e| crate::Error::io(snap_dir, e))? {
        let entry = entry.map_err(|e| crate::Error::io(snap_dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let keep = crate::snapshot::parse_name(&name).is_some_and(|id| live.contains(&id));
        if !keep {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::Error::io(entry.path(), e)),
            }
        }
    }
    Ok(())
}

/// The background thread: compacts frozen deltas, and freezes the active delta when it is old or,
/// after a compaction, already over the size threshold.
pub(crate) fn background_loop(inner: Arc<Inner>) {
    let age_ms = inner.core.opts.delta_age_compact_ms;
    let tick = std::time::Duration::from_millis(if age_ms == 0 {
        1000
    } else {
        age_ms.clamp(10, 1000)
    });
    loop {
        {
            let mut bg = inner.core.bg.lock();
            if !bg.frozen_ready && !bg.closing {
                inner.core.bg_cv.wait_for(&mut bg, tick);
            }
            if bg.closing {
                return;
            }
            bg.frozen_ready = false;
        }
        if inner.wal.stopped().is_some() {
            continue;
        }
        if compact_frozen(&inner).is_err() {
            continue;
        }
        let st = inner.core.state.load_full();
        let aged =
            age_ms > 0 && !st.active.is_empty() && st.active.age().as_millis() as u64 >= age_ms;
        if st.frozen.is_none() && (aged || inner.core.over_compact_threshold()) {
            let _ = inner.wal.freeze(false);
        }
    }
}

/// What [`Db::snapshot`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Generation of the manifest that commits the snapshot.
    pub manifest_generation: u64,
    /// Every write with a sequence number at or below this is in the snapshots.
    pub covered_seq: u64,
    /// Keys in all keyspaces' snapshots.
    pub keys: u64,
    /// Bytes of all keyspaces' snapshot data files.
    pub data_bytes: u64,
}

impl Inner {
    /// Compacts now: every write so far into snapshots under a durable manifest ([`Db::snapshot`]).
    ///
    /// [`Db::snapshot`]: crate::Db::snapshot
    pub(crate) fn snapshot(&self) -> Result<SnapshotInfo> {
        // Rotating makes every record up to `target` sit in closed segments, which the compaction that
        // commits the covering manifest then deletes (see the retention rule in docs/design/storage.md).
        let target = self.wal.freeze(true)?;
        // A compaction already running may cover less than `target`; then freeze again after it.
        for _ in 0..3 {
            compact_frozen(self)?;
            let m = self.manifest.lock().clone();
            if m.covered_seq >= target {
                let st = self.core.state.load();
                let snaps = st.snapshots.iter().map(|(_, s)| s);
                let (keys, data_bytes) = snaps.fold((0, 0), |(k, d), s| {
                    (k + s.meta.key_count, d + s.meta.data_bytes)
                });
                return Ok(SnapshotInfo {
                    manifest_generation: m.generation,
                    covered_seq: m.covered_seq,
                    keys,
                    data_bytes,
                });
            }
            self.wal.freeze(false)?;
        }
        Err(Error::Busy {
            delta_bytes: self.core.state.load().delta_bytes(),
            budget: self.core.opts.delta_bytes_budget,
            waited_ms: 0,
        })
    }

    /// Makes sure a durable manifest covers the drop logged at `seq` (compacting now if none does),
    /// so that none of the dropped keyspace's versions is left anywhere — deltas, snapshots, the
    /// log replay would read — before its id is given to a new keyspace.
    pub(crate) fn cover_drop(&self, seq: u64) -> Result<()> {
        if self.manifest.lock().covered_seq < seq {
            self.snapshot()?;
        }
        let covered = self.manifest.lock().covered_seq;
        self.core
            .registry
            .write()
            .dropped
            .retain(|_, s| *s > covered);
        Ok(())
    }
}

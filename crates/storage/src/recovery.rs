//! Opening a database: lock the directory, load and verify the manifest and snapshots, replay the WAL
//! after the covered sequence (truncating a torn tail, refusing corruption), then start the writer.

use std::{
    fs::{self, File, OpenOptions},
    path::Path,
    sync::{atomic::AtomicU64, Arc},
    time::Instant,
};

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::{
    compaction::{compact_frozen_during_recovery, remove_unreferenced_snapshots},
    core::DEFAULT_KEYSPACE,
    core::{BgSignal, Core, Registry},
    delta::Delta,
    error::IoContext,
    fsutil,
    inner::Inner,
    manifest::{KeyspaceEntry, Manifest},
    options::Options,
    run::RunBuilder,
    snapshot::Snapshot,
    view::{ReadState, SnapshotSet},
    wal::{
        record::{decode_create_keyspace, HEADER_BYTES, KIND_CREATE_KEYSPACE},
        segment::{list_segments, scan_ahead, truncate_tail, Scanned, ScannedRecord, SegmentMeta},
        Wal, WalStart,
    },
    Error, Result,
};

pub(crate) fn open(dir: &Path, opts: Options) -> Result<Arc<Inner>> {
    let started = Instant::now();
    opts.validate()?;
    fs::create_dir_all(dir).at(dir)?;
    let lock = lock_dir(dir)?;
    let snap_dir = dir.join("snap");
    let wal_dir = dir.join("wal");
    for d in [&snap_dir, &wal_dir] {
        fs::create_dir_all(d).at(d)?;
    }
    fsutil::sync_dir(dir)?;
    let manifest = load_or_init_manifest(dir, &snap_dir, &wal_dir)?;
    remove_unreferenced_snapshots(&snap_dir, &manifest)?;

    let mut registry = Registry::default();
    let mut snapshots = SnapshotSet::default();
    for ks in &manifest.keyspaces {
        registry.insert(ks.id, &ks.name);
        if let Some(meta) = ks.snapshot {
            let snap = Snapshot::open(&snap_dir, ks.id, meta, &*opts.index_builder)?;
            snapshots.insert(ks.id, Arc::new(snap));
        }
    }
    registry.next_id = registry.next_id.max(manifest.next_keyspace_id);
    let core = Arc::new(Core {
        opts: opts.clone(),
        state: ArcSwap::from_pointee(ReadState {
            active: Arc::new(Delta::new()),
            frozen: None,
            snapshots: Arc::new(snapshots),
        }),
        state_mu: Mutex::new(()),
        visible_seq: AtomicU64::new(manifest.covered_seq),
        applied_seq: AtomicU64::new(manifest.covered_seq),
        registry: RwLock::new(registry),
        counts: Mutex::new(crate::counts::Counts::default()),
        appliers: RwLock::new(crate::applier::Appliers::default()),
        bg: Mutex::new(BgSignal::default()),
        bg_cv: Condvar::new(),
        room: Mutex::new(()),
        room_cv: Condvar::new(),
    });
    let mut manifest = manifest;
    let replay = replay_wal(&core, &wal_dir, &snap_dir, dir, &mut manifest)?;
    core.visible_seq
        .store(replay.last_seq, std::sync::atomic::Ordering::Release);
    core.applied_seq
        .store(replay.last_seq, std::sync::atomic::Ordering::Relaxed);
    let wal = Wal::start(
        WalStart {
            dir: wal_dir,
            segments: replay.segments,
            file: replay.append_to,
            next_seq: replay.last_seq + 1,
            fsync: opts.fsync,
            segment_bytes: opts.wal_segment_bytes,
            queue_bytes_max: opts.wal_queue_bytes_max,
        },
        core.clone(),
    )?;
    let inner = Arc::new(Inner {
        dir: dir.to_owned(),
        snap_dir,
        core,
        wal,
        manifest: Mutex::new(manifest.clone()),
        compaction_mu: Mutex::new(()),
        compactions: AtomicU64::new(0),
        create_mu: Mutex::new(()),
        gate: RwLock::new(()),
        bg_thread: Mutex::new(None),
        _lock: lock,
        replicator: std::sync::OnceLock::new(),
    });
    inner
        .wal
        .remove_covered(manifest.covered_seq, opts.wal_retain_segments)?;
    if opts.background_compaction {
        let bg = inner.clone();
        let t = std::thread::Builder::new()
            .name("kyrodb-compaction".into())
            .spawn(move || crate::compaction::background_loop(bg))
            .map_err(|e| Error::io("kyrodb-compaction thread", e))?;
        *inner.bg_thread.lock() = Some(t);
        if inner.core.over_compact_threshold() {
            inner.core.bg_cv.notify_all();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    metrics::gauge!(crate::families::STORAGE_RECOVERY_DURATION_SECONDS.name).set(secs);
    metrics::counter!(crate::families::STORAGE_RECOVERY_REPLAYED_BYTES_TOTAL.name)
        .increment(replay.bytes);
    tracing::info!(dir = %dir.display(), seconds = secs, replayed_records = replay.records, "storage opened");
    Ok(inner)
}

/// Counts live keys from what recovery produced: the snapshots, and the replayed run over them (read
/// in key order, values untouched).
fn count_keys(core: &Core, run: Option<&crate::run::SortedRun>) {
    let st = core.state.load_full();
    let mut counts = crate::counts::Counts::default();
    for (id, snap) in st.snapshots.iter() {
        counts.add_snapshot(id, snap.meta.key_count, snap.expiring());
    }
    if let Some(run) = run {
        counts.add_run(run.newest(), |id, key| {
            st.snapshots.get(id).is_some_and(|s| s.contains(key))
        });
    }
    *core.counts.lock() = counts;
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

fn load_or_init_manifest(dir: &Path, snap_dir: &Path, wal_dir: &Path) -> Result<Manifest> {
    if let Some(m) = Manifest::load(dir)? {
        return Ok(m);
    }
    let has_files = |d: &Path| -> Result<bool> { Ok(fs::read_dir(d).at(d)?.next().is_some()) };
    if !list_segments(wal_dir)?.is_empty() || has_files(snap_dir)? {
        return Err(Error::corrupt(
            dir.join(crate::manifest::FILE_NAME),
            0,
            "manifest missing while WAL or snapshot files exist; refusing to guess",
        ));
    }
    let m = Manifest {
        generation: 1,
        covered_seq: 0,
        next_keyspace_id: 1,
        keyspaces: vec![KeyspaceEntry {
            id: 0,
            name: DEFAULT_KEYSPACE.into(),
            snapshot: None,
        }],
    };
    m.store(dir)?;
    Ok(m)
}

struct Replay {
    last_seq: u64,
    records: u64,
    bytes: u64,
    segments: Vec<SegmentMeta>,
    append_to: Option<(File, u64)>,
}

fn replay_wal(
    core: &Arc<Core>,
    wal_dir: &Path,
    snap_dir: &Path,
    dir: &Path,
    manifest: &mut Manifest,
) -> Result<Replay> {
    let segments = list_segments(wal_dir)?;
    let covered = manifest.covered_seq;
    let mut next = covered + 1;
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut append_to = None;
    let mut run = RunBuilder::default();
    // Reading, framing and checksums run one thread ahead of applying (`scan_ahead`).
    let (tx, rx) = std::sync::mpsc::sync_channel::<Scanned>(4);
    let segments_ref = &segments;
    std::thread::scope(|scope| -> Result<()> {
        std::thread::Builder::new()
            .name("kyrodb-wal-scan".into())
            .spawn_scoped(scope, move || scan_ahead(segments_ref, tx))
            .map_err(|e| Error::io(wal_dir, e))?;
        let rx = rx;
        for (i, seg) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            // The first segment may start anywhere up to the covered point (covered records are skipped); so
            // may a later one when, after a power loss under a relaxed fsync policy, the WAL ended before
            // what the manifest covers. Anything else is a gap: records are missing.
            let jump_ok = next <= covered + 1 && seg.first <= covered + 1;
            if seg.first != next && !jump_ok {
                return Err(Error::corrupt(
                    &seg.path,
                    0,
                    format!(
                        "segment starts at sequence {} where {next} was expected",
                        seg.first
                    ),
                ));
            }
            next = seg.first;
            let mut apply = |r: ScannedRecord| -> Result<()> {
                next = r.header.seq + 1;
                if r.header.seq <= covered {
                    return Ok(());
                }
                if r.header.kind == KIND_CREATE_KEYSPACE {
                    // A creation reusing the id of a keyspace dropped earlier in this log: first compact
                    // what was replayed (the registry no longer holds the dropped keyspace, so its
                    // versions and snapshot are left out), so none of them is taken for the new one's.
                    let id = decode_create_keyspace(&r.payload).map(|(id, _)| id).ok();
                    let dropped_at =
                        id.and_then(|id| core.registry.read().dropped.get(&id).copied());
                    if dropped_at.is_some_and(|d| d > manifest.covered_seq) {
                        core.install_frozen(
                            Arc::new(std::mem::take(&mut run).finish()),
                            r.header.seq - 1,
                        );
                        compact_frozen_during_recovery(core, dir, snap_dir, manifest)?;
                        let c = manifest.covered_seq;
                        core.registry.write().dropped.retain(|_, s| *s > c);
                    }
                }
                core.apply_record(r.header.kind, &r.payload, r.header.seq, |ks, key, v| {
                    run.push(ks, key, v)
                })
                .map_err(|e| {
                    Error::corrupt(
                        &seg.path,
                        r.offset + (HEADER_BYTES + e.offset_in_payload) as u64,
                        e.reason,
                    )
                })?;
                records += 1;
                bytes += (HEADER_BYTES + r.payload.len()) as u64;
                // Bounded memory: a log larger than the delta budget is compacted while it replays.
                if run.bytes() > core.opts.delta_bytes_budget {
                    core.install_frozen(Arc::new(std::mem::take(&mut run).finish()), r.header.seq);
                    compact_frozen_during_recovery(core, dir, snap_dir, manifest)?;
                }
                Ok(())
            };
            // This segment's records from the scan-ahead thread, then its end.
            let scan = loop {
                match rx.recv() {
                    Ok(Scanned::Records(batch)) => {
                        for r in batch {
                            apply(r)?;
                        }
                    }
                    Ok(Scanned::End(scan)) => break scan?,
                    Err(_) => {
                        return Err(Error::corrupt(
                            &seg.path,
                            0,
                            "the WAL scan thread stopped before the segment's end",
                        ))
                    }
                }
            };
            if segments.len() > 4 && (i + 1) % 8 == 0 {
                tracing::info!(
                    segment = i + 1,
                    of = segments.len(),
                    records,
                    "replaying the WAL"
                );
            }
            if scan.torn {
                truncate_tail(seg, scan.valid_bytes)?;
            }
            if is_last && next > covered {
                let len = scan
                    .valid_bytes
                    .max(crate::wal::segment::SEGMENT_HEADER_BYTES as u64);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .at(&seg.path)?;
                append_to = Some((file, len));
            }
        }
        Ok(())
    })?;
    let last_seq = (next - 1).max(covered);
    if run.is_empty() {
        count_keys(core, None);
    } else {
        // The replayed records become the frozen delta; the background thread compacts them.
        let run = run.finish();
        count_keys(core, Some(&run));
        core.install_frozen(Arc::new(run), last_seq);
    }
    Ok(Replay {
        last_seq,
        records,
        bytes,
        segments,
        append_to,
    })
}

//! The engine's shared insides ([`Inner`]): the directories, the state readers see, the WAL, the
//! manifest and the locks that order compaction and keyspace changes. `db.rs` (the API),
//! `compaction.rs` and `recovery.rs` all work on it; it sits below them so none imports another
//! back. The write path's common steps live here (back-pressure, logging a batch); snapshots and
//! drops' coverage are in `compaction.rs`.

use std::{
    fs::File,
    path::PathBuf,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::{core::Core, manifest::Manifest, wal::record::KIND_BATCH, wal::Wal, Error, Result};

/// The shared insides of a [`Db`]; keyspace handles hold it too.
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub snap_dir: PathBuf,
    pub core: Arc<Core>,
    pub wal: Wal,
    pub manifest: Mutex<Manifest>,
    /// Held while a compaction runs, so the background thread and `snapshot()` never overlap.
    pub compaction_mu: Mutex<()>,
    pub compactions: std::sync::atomic::AtomicU64,
    /// Serialises keyspace creations and drops.
    pub create_mu: Mutex<()>,
    /// Local writes hold the read side from checking that their keyspaces are live until they are
    /// logged; a drop takes the write side to mark its keyspace dropped, so every write that found
    /// it live is logged before the drop and every later one is refused.
    pub gate: RwLock<()>,
    pub bg_thread: Mutex<Option<JoinHandle<()>>>,
    pub _lock: File,
    /// Set in cluster mode: writes go through it instead of straight to the WAL.
    pub replicator: std::sync::OnceLock<Arc<dyn crate::Replicator>>,
}

impl Inner {
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.core.opts.write_stall_ms_max)
    }

    pub(crate) fn append(&self, kind: u8, payload: Bytes) -> Result<u64> {
        let deadline = self.deadline();
        self.wait_for_room(deadline)?;
        self.wal.append(kind, payload, deadline, false)
    }

    /// Logs a validated batch here (the local write path, and replicated writes being applied).
    pub(crate) fn log_batch(&self, enc: crate::wal::record::BatchEncoder) -> Result<u64> {
        let resolve = enc.needs_resolve();
        let deadline = self.deadline();
        self.wait_for_room(deadline)?;
        let payload = enc.finish();
        if resolve {
            return self.wal.append(KIND_BATCH, payload, deadline, true);
        }
        // The key-count lookups are made here, on the writer's thread, so the WAL thread (which every
        // writer waits on) does not make them one record at a time.
        match crate::core::CountHint::compute(&self.core, &payload) {
            Some(h) => self
                .wal
                .append_with_hint(KIND_BATCH, payload, deadline, Box::new(h)),
            None => self.wal.append(KIND_BATCH, payload, deadline, false),
        }
    }

    /// Back-pressure: waits while active + frozen delta exceed the budget, then `Busy`.
    pub(crate) fn wait_for_room(&self, deadline: Instant) -> Result<()> {
        let budget = self.core.opts.delta_bytes_budget;
        let used = || self.core.state.load().delta_bytes();
        if used() <= budget {
            return Ok(());
        }
        metrics::counter!(crate::families::STORAGE_WRITE_STALLS_TOTAL.name).increment(1);
        let started = Instant::now();
        let mut g = self.core.room.lock();
        loop {
            if let Some(why) = self.wal.stopped() {
                return Err(Error::WritesStopped(why));
            }
            if self.core.bg.lock().closing {
                return Err(Error::Closed);
            }
            let now = used();
            if now <= budget {
                return Ok(());
            }
            if self.core.room_cv.wait_until(&mut g, deadline).timed_out() && used() > budget {
                return Err(Error::Busy {
                    delta_bytes: now,
                    budget,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
        }
    }

    pub(crate) fn close(&self) {
        {
            let mut bg = self.core.bg.lock();
            if bg.closing {
                return;
            }
            bg.closing = true;
        }
        self.core.bg_cv.notify_all();
        self.core.wake_waiting_writers();
        if let Some(t) = self.bg_thread.lock().take() {
            let _ = t.join();
        }
        self.wal.close();
    }
}

//! What every collection runs in: the engine, the options, the vector budget and the indexer's
//! wake-up. Below the collections (each holds a `Weak<Env>`) and the registry above them
//! ([`crate::manager`]), so no module imports one that imports it back: what the environment needs
//! to know of the collections (their index bytes and pending vectors, for the budget and the
//! writers' back-pressure) it asks through [`Tally`], which the registry implements.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock, Weak,
    },
    time::{Duration, Instant},
};

use kyrodb_storage::Db;
use parking_lot::{Condvar, Mutex};

use crate::{hnsw::HnswParams, Error, Result};

/// Limits and tuning of the collections layer.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Bytes all vector indexes together may hold; writes beyond it are refused (507).
    pub vector_bytes_budget: u64,
    /// Vectors written but not yet linked into a graph (searched exactly meanwhile) before writers
    /// wait for the indexer.
    pub pending_max: usize,
    /// How long a writer waits for the indexer before a 503.
    pub pending_wait_ms: u64,
    /// Documents per upsert request.
    pub documents_per_batch_max: usize,
    /// Collections per database.
    pub collections_max: usize,
    /// Graph parameters of new indexes.
    pub hnsw: HnswParams,
    /// Threads linking new vectors into the graphs (1..=64).
    pub index_threads: usize,
    /// Documents per second a re-embed job walks at most (0: as fast as the embedder allows).
    pub reembed_docs_per_s: u32,
}

/// The default number of indexer threads: one. More link faster (two doubled the rate on 2 cores),
/// but under heavy upsert churn the churn test saw a node missed at ef 64 about once in ten runs with
/// two linkers (never with one), so concurrent linking is opt-in until that is understood.
pub fn default_index_threads() -> usize {
    1
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            vector_bytes_budget: 8 << 30,
            pending_max: 50_000,
            pending_wait_ms: 30_000,
            documents_per_batch_max: 1000,
            collections_max: 1000,
            hnsw: HnswParams::default(),
            index_threads: default_index_threads(),
            reembed_docs_per_s: 0,
        }
    }
}

/// Estimated index bytes of one vector of `dim` dimensions (vector + level-0 links + overhead).
pub(crate) fn vector_cost(dim: usize, m: usize) -> u64 {
    (dim * 4 + 2 * m * 4 + 64) as u64
}

/// What the environment asks of the collections it serves (the registry answers).
pub(crate) trait Tally: Send + Sync {
    /// Bytes every collection's vector indexes hold.
    fn index_bytes(&self) -> u64;
    /// Vectors written and not yet linked, over every collection.
    fn pending(&self) -> usize;
}

/// The collections' shared environment.
pub(crate) struct Env {
    pub db: Arc<Db>,
    pub opts: SearchOptions,
    /// The engine's largest value (a document's encoding must fit).
    pub value_bytes_max: usize,
    tally: OnceLock<Weak<dyn Tally>>,
    /// Set when there is linking to do; the indexer threads wait on it.
    wake: Mutex<bool>,
    wake_cv: Condvar,
    /// Notified whenever the indexer links a slice or a job advances: writers waiting for room
    /// and `wait_*` callers re-check.
    room: Mutex<()>,
    room_cv: Condvar,
    closing: AtomicBool,
    stop_mu: Mutex<()>,
    stop_cv: Condvar,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("opts", &self.opts)
            .field("closing", &self.is_closing())
            .finish_non_exhaustive()
    }
}

impl Env {
    pub(crate) fn new(db: Arc<Db>, opts: SearchOptions) -> Env {
        let value_bytes_max = db.options().value_bytes_max;
        Env {
            db,
            opts,
            value_bytes_max,
            tally: OnceLock::new(),
            wake: Mutex::new(false),
            wake_cv: Condvar::new(),
            room: Mutex::new(()),
            room_cv: Condvar::new(),
            closing: AtomicBool::new(false),
            stop_mu: Mutex::new(()),
            stop_cv: Condvar::new(),
        }
    }

    /// Who answers for the collections' totals (set once, by the registry that owns them).
    pub(crate) fn set_tally(&self, tally: Weak<dyn Tally>) {
        assert!(
            self.tally.set(tally).is_ok(),
            "the environment's tally is set once"
        );
    }

    fn tally(&self) -> Option<Arc<dyn Tally>> {
        self.tally.get().and_then(Weak::upgrade)
    }

    pub(crate) fn wake_indexer(&self) {
        *self.wake.lock() = true;
        self.wake_cv.notify_all();
    }

    /// The indexer's rest: waits until woken (or `d` passes), then clears the wake-up.
    pub(crate) fn wait_for_work(&self, d: Duration) {
        let mut w = self.wake.lock();
        if !*w {
            self.wake_cv.wait_for(&mut w, d);
        }
        *w = false;
    }

    /// Wakes everyone waiting in [`Env::wait_indexer`] or [`Env::wait_for_indexer`].
    pub(crate) fn notify_room(&self) {
        let _r = self.room.lock();
        self.room_cv.notify_all();
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Marks the environment closing and wakes every sleeper (indexers, jobs, writers waiting).
    /// False if it was closing already.
    pub(crate) fn close(&self) -> bool {
        if self.closing.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.wake_indexer();
        let _g = self.stop_mu.lock();
        self.stop_cv.notify_all();
        true
    }

    /// Waits `d`, or less if the collections close meanwhile.
    pub(crate) fn sleep_unless_closing(&self, d: Duration) {
        let mut g = self.stop_mu.lock();
        if !self.is_closing() {
            self.stop_cv.wait_for(&mut g, d);
        }
    }

    pub(crate) fn check_budget(&self, needed: u64) -> Result<()> {
        if needed == 0 {
            return Ok(()); // reusing freed slots: no growth
        }
        let used = self.tally().map_or(0, |t| t.index_bytes());
        if used + needed > self.opts.vector_bytes_budget {
            return Err(Error::MemoryBudget {
                used,
                needed,
                budget: self.opts.vector_bytes_budget,
            });
        }
        Ok(())
    }

    /// Waits until `done()` holds, re-checking whenever the indexer links a slice; false on timeout.
    pub(crate) fn wait_indexer(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.room.lock();
        while !done() {
            if self.room_cv.wait_until(&mut g, deadline).timed_out() {
                return done();
            }
        }
        true
    }

    /// Waits (bounded) while more vectors than `pending_max` wait to be linked.
    pub(crate) fn wait_for_indexer(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_millis(self.opts.pending_wait_ms);
        let mut g = self.room.lock();
        loop {
            let pending = self.tally().map_or(0, |t| t.pending());
            if pending <= self.opts.pending_max {
                return Ok(());
            }
            if self.room_cv.wait_until(&mut g, deadline).timed_out() {
                return Err(Error::Busy {
                    pending: pending as u64,
                });
            }
        }
    }
}

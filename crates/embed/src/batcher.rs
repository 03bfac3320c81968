//! Micro-batching of concurrent embedding requests: a bounded queue (counted in texts), worker
//! threads that each take whole requests until a batch is full, and a bounded rayon pool for the
//! matrix work, so embedding never takes more cores than it is given. A full queue refuses at once
//! ([`Error::Busy`]) instead of growing.
//!
//! Waiting for companions: a worker that finds one request waits up to `max_wait` for more only when
//! its previous batch held several requests (there is concurrency to gain from); a lone client's
//! sequential requests are never delayed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::{Embedder, Error, Result};

/// Limits of a [`Batcher`].
#[derive(Debug, Clone)]
pub struct BatcherOptions {
    /// Texts waiting (queued, not yet taken by a worker) before new requests are refused.
    pub queue_texts_max: usize,
    /// Texts per batch a worker aims for.
    pub batch_max: usize,
    /// Longest a worker waits for more requests to fill a batch.
    pub max_wait: Duration,
    /// Worker threads (batches run at once).
    pub workers: usize,
    /// Threads of the compute pool the workers share.
    pub compute_threads: usize,
}

impl Default for BatcherOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        BatcherOptions {
            queue_texts_max: 4096,
            batch_max: 32,
            max_wait: Duration::from_millis(2),
            workers: 1,
            compute_threads: cores,
        }
    }
}

/// Counters of a [`Batcher`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Texts waiting now.
    pub queued_texts: usize,
    /// Batches run.
    pub batches: u64,
    /// Texts embedded.
    pub texts: u64,
    /// Requests refused because the queue was full.
    pub refused: u64,
}

type Reply = Box<dyn FnOnce(Result<Vec<Vec<f32>>>) + Send>;

struct Job {
    texts: Vec<String>,
    reply: Reply,
}

struct Queue {
    jobs: VecDeque<Job>,
    texts: usize,
    closed: bool,
}

struct Inner {
    embedder: Arc<dyn Embedder>,
    opts: BatcherOptions,
    queue: Mutex<Queue>,
    cv: Condvar,
    pool: rayon::ThreadPool,
    batches: AtomicU64,
    texts: AtomicU64,
    refused: AtomicU64,
}

/// A micro-batching front of an [`Embedder`].
pub struct Batcher {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("opts", &self.inner.opts)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the workers and the compute pool.
    pub fn new(embedder: Arc<dyn Embedder>, opts: BatcherOptions) -> Result<Batcher> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.compute_threads.max(1))
            .thread_name(|i| format!("kyrodb-embed-{i}"))
            .build()
            .map_err(|e| Error::Inference(format!("embedding thread pool: {e}")))?;
        let inner = Arc::new(Inner {
            embedder,
            opts: opts.clone(),
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                texts: 0,
                closed: false,
            }),
            cv: Condvar::new(),
            pool,
            batches: AtomicU64::new(0),
            texts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let mut workers = Vec::new();
        for i in 0..opts.workers.max(1) {
            let inner = inner.clone();
            let h = std::thread::Builder::new()
                .name(format!("kyrodb-embed-batch-{i}"))
                .spawn(move || worker(&inner))
                .map_err(|e| Error::Inference(format!("embedding worker thread: {e}")))?;
            workers.push(h);
        }
        Ok(Batcher {
            inner,
            workers: Mutex::new(workers),
        })
    }

    /// The model behind this batcher.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.inner.embedder
    }

    /// Queues `texts`; `reply` is called once with their vectors (in order) or the error, on a
    /// worker thread. A full queue is [`Error::Busy`] at once (and `reply` is dropped uncalled).
    pub fn submit(
        &self,
        texts: Vec<String>,
        reply: impl FnOnce(Result<Vec<Vec<f32>>>) + Send + 'static,
    ) -> Result<()> {
        let mut q = self.inner.queue.lock();
        if q.closed {
            return Err(Error::Closed);
        }
        // One request larger than the whole queue is still taken when the queue is empty.
        if q.texts > 0 && q.texts + texts.len() > self.inner.opts.queue_texts_max {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Busy {
                queued: q.texts,
                max: self.inner.opts.queue_texts_max,
            });
        }
        q.texts += texts.len();
        q.jobs.push_back(Job {
            texts,
            reply: Box::new(reply),
        });
        drop(q);
        self.inner.cv.notify_one();
        Ok(())
    }

    /// `submit` and wait for the answer.
    pub fn embed_blocking(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(texts, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Counters.
    pub fn stats(&self) -> BatcherStats {
        BatcherStats {
            queued_texts: self.inner.queue.lock().texts,
            batches: self.inner.batches.load(Ordering::Relaxed),
            texts: self.inner.texts.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
        }
    }

    /// Refuses new requests, answers queued ones with [`Error::Closed`], joins the workers.
    pub fn close(&self) {
        let jobs: Vec<Job> = {
            let mut q = self.inner.queue.lock();
            q.closed = true;
            q.texts = 0;
            q.jobs.drain(..).collect()
        };
        self.inner.cv.notify_all();
        for j in jobs {
            (j.reply)(Err(Error::Closed));
        }
        for h in std::mem::take(&mut *self.workers.lock()) {
            let _ = h.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.close();
    }
}

/// Moves whole jobs from the front of the queue into `jobs` while they fit in a batch (the first job
/// always fits, however large).
fn take_fitting(q: &mut Queue, jobs: &mut Vec<Job>, texts: &mut usize, batch_max: usize) {
    while let Some(j) = q.jobs.front() {
        if !jobs.is_empty() && *texts + j.texts.len() > batch_max {
            break;
        }
        let j = q.jobs.pop_front().expect("front exists");
        *texts += j.texts.len();
        q.texts -= j.texts.len();
        jobs.push(j);
    }
}

fn worker(inner: &Inner) {
    let mut last_batch_jobs = 0;
    loop {
        let jobs = {
            let mut q = inner.queue.lock();
            while q.jobs.is_empty() && !q.closed {
                inner.cv.wait(&mut q);
            }
            if q.closed {
                return;
            }
            let mut jobs = Vec::new();
            let mut texts = 0;
            let deadline = Instant::now() + inner.opts.max_wait;
            loop {
                take_fitting(&mut q, &mut jobs, &mut texts, inner.opts.batch_max);
                let full = texts >= inner.opts.batch_max || !q.jobs.is_empty();
                if full || last_batch_jobs <= 1 || q.closed {
                    break;
                }
                if inner.cv.wait_until(&mut q, deadline).timed_out() {
                    // Take what arrived by the deadline, then go.
                    take_fitting(&mut q, &mut jobs, &mut texts, inner.opts.batch_max);
                    break;
                }
            }
            jobs
        };
        last_batch_jobs = jobs.len();
        run(inner, jobs);
    }
}

fn run(inner: &Inner, jobs: Vec<Job>) {
    let all: Vec<&str> = jobs
        .iter()
        .flat_map(|j| j.texts.iter().map(String::as_str))
        .collect();
    let n = all.len();
    let result = inner.pool.install(|| inner.embedder.embed(&all));
    drop(all);
    inner.batches.fetch_add(1, Ordering::Relaxed);
    inner.texts.fetch_add(n as u64, Ordering::Relaxed);
    match result {
        Ok(vectors) => {
            // Hand each job its slice, front to back.
            let mut rest = vectors;
            for j in jobs {
                let tail = rest.split_off(j.texts.len().min(rest.len()));
                (j.reply)(Ok(rest));
                rest = tail;
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for j in jobs {
                (j.reply)(Err(Error::Inference(msg.clone())));
            }
        }
    }
}

//! The group-commit WAL writer: one thread takes every queued append, assigns sequence numbers, writes
//! them with one write(2) and one fdatasync, hands them to the commit sink (which applies them to the
//! delta) and only then wakes the waiting writers. An I/O error stops all writes for good (fail-stop).

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::{
    record::{decode_batch, put_header, Op, HEADER_BYTES, KIND_BATCH},
    segment::{create_segment, segment_path, SegmentMeta},
};
use crate::{fsutil, options::FsyncPolicy, Error, Result};

/// Receives durable records from the writer thread, in sequence order.
pub(crate) trait CommitSink: Send + Sync + 'static {
    /// Applies one durable record. Called before any writer of its group is acknowledged. `hint` is
    /// what the record's writer computed ahead for the sink (see [`Wal::append_with_hint`]); the sink
    /// must check it is still valid before using it.
    fn apply(&self, seq: u64, kind: u8, payload: &Bytes, hint: Option<&Hint>);
    /// The whole group up to `last_seq` is applied; publish it to readers.
    fn publish(&self, last_seq: u64);
    /// A freeze barrier: every record up to `last_seq` is applied and durable.
    fn freeze(&self, last_seq: u64);
    /// Resolves a batch that holds conditions or delete-ranges against everything applied so far
    /// (nothing queued in the current group touches its keys): checks the conditions and returns the
    /// payload to write, with conditions removed and ranges expanded into point deletes; or refuses
    /// the batch (`ConditionFailed`, `BatchTooManyOps`), which then takes no sequence number.
    fn resolve(&self, payload: &Bytes) -> Result<Bytes>;
}

/// One waiter's outcome slot.
/// Work a writer did ahead for the sink, on its own thread, so the writer thread does less per record.
pub(crate) type Hint = dyn std::any::Any + Send + Sync;

#[derive(Default)]
pub(crate) struct Completion {
    slot: Mutex<Option<Result<u64>>>,
    cv: Condvar,
    /// Carried from the writer to [`CommitSink::apply`].
    hint: Option<Box<Hint>>,
}

impl Completion {
    fn complete(&self, r: Result<u64>) {
        *self.slot.lock() = Some(r);
        self.cv.notify_one();
    }

    fn stopped(&self, why: Arc<str>) {
        self.complete(Err(Error::WritesStopped(why)));
    }

    pub(crate) fn wait(&self) -> Result<u64> {
        let mut slot = self.slot.lock();
        loop {
            if let Some(r) = slot.take() {
                return r;
            }
            self.cv.wait(&mut slot);
        }
    }
}

enum Item {
    Append {
        kind: u8,
        payload: Bytes,
        payload_crc: u32,
        done: Arc<Completion>,
        /// A batch with conditions or delete-ranges: resolved by the sink before it is sequenced.
        resolve: bool,
    },
    Freeze {
        done: Arc<Completion>,
        /// Also close the segment being written and start a new one, so that every record the freeze
        /// covers sits in segments a snapshot can release.
        rotate: bool,
    },
}

struct Queue {
    items: Vec<Item>,
    bytes: usize,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    room: Condvar,
    queue_bytes_max: usize,
    /// Why writes stopped, once an I/O error happened.
    stopped: Mutex<Option<Arc<str>>>,
    segments: Mutex<Vec<SegmentMeta>>,
    /// The last sequence number handed out (durable or not).
    last_seq: Mutex<u64>,
}

/// Where the writer continues after recovery.
pub(crate) struct WalStart {
    pub dir: PathBuf,
    pub segments: Vec<SegmentMeta>,
    /// The last segment, opened for append, positioned at its verified end.
    pub file: Option<(File, u64)>,
    pub next_seq: u64,
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
    pub queue_bytes_max: usize,
}

/// Handle to the WAL writer thread.
pub(crate) struct Wal {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Wal {
    pub(crate) fn start(start: WalStart, sink: Arc<dyn CommitSink>) -> Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: Vec::new(),
                bytes: 0,
                closing: false,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
            queue_bytes_max: start.queue_bytes_max,
            stopped: Mutex::new(None),
            segments: Mutex::new(start.segments.clone()),
            last_seq: Mutex::new(start.next_seq - 1),
        });
        let (file, len) = match start.file {
            Some(f) => f,
            None => {
                let (file, meta) = create_segment(&start.dir, start.next_seq)?;
                shared.segments.lock().push(meta);
                (file, super::segment::SEGMENT_HEADER_BYTES as u64)
            }
        };
        let path = shared
            .segments
            .lock()
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        let mut leader = Leader {
            shared: shared.clone(),
            sink,
            dir: start.dir,
            file,
            path,
            len,
            next_seq: start.next_seq,
            fsync: start.fsync,
            segment_bytes: start.segment_bytes,
            dirty_since: None,
            buf: Vec::with_capacity(1 << 20),
        };
        let thread = std::thread::Builder::new()
            .name("kyrodb-wal".into())
            .spawn(move || leader.run())
            .map_err(|e| Error::io("kyrodb-wal thread", e))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a record and waits until it is durable (per the fsync policy) and applied. Returns its
    /// sequence number. With `resolve`, the writer thread first has the sink resolve the batch (see
    /// [`CommitSink::resolve`]), which may refuse it.
    pub(crate) fn append(
        &self,
        kind: u8,
        payload: Bytes,
        deadline: Instant,
        resolve: bool,
    ) -> Result<u64> {
        self.enqueue(kind, payload, deadline, resolve, None)
    }

    /// [`Wal::append`] of a record that needs no resolving, with a hint for [`CommitSink::apply`].
    pub(crate) fn append_with_hint(
        &self,
        kind: u8,
        payload: Bytes,
        deadline: Instant,
        hint: Box<Hint>,
    ) -> Result<u64> {
        self.enqueue(kind, payload, deadline, false, Some(hint))
    }

    /// Queues batch records in order, all before waiting for any (they are written and applied
    /// in this order, typically as one group), then waits for each. A record that finds the queue
    /// full until `deadline` fails with [`Error::WalQueueFull`], and so does every record after it
    /// (none of those is queued): the caller retries the tail.
    pub(crate) fn append_many(
        &self,
        records: Vec<(Bytes, bool)>,
        deadline: Instant,
    ) -> Vec<Result<u64>> {
        let mut dones = Vec::with_capacity(records.len());
        let mut refused = None;
        {
            let mut q = self.shared.queue.lock();
            for (payload, resolve) in records {
                if refused.is_none() {
                    loop {
                        if let Some(why) = self.shared.stopped.lock().clone() {
                            refused = Some(Error::WritesStopped(why));
                            break;
                        }
                        if q.closing {
                            refused = Some(Error::Closed);
                            break;
                        }
                        if q.bytes == 0 || q.bytes + payload.len() <= self.shared.queue_bytes_max {
                            break;
                        }
                        // Let the writer drain what is queued so far.
                        self.shared.work.notify_one();
                        if self.shared.room.wait_until(&mut q, deadline).timed_out() {
                            refused = Some(Error::WalQueueFull {
                                queued_bytes: q.bytes,
                                max: self.shared.queue_bytes_max,
                            });
                            break;
                        }
                    }
                }
                if let Some(e) = &refused {
                    dones.push(Err(match e {
                        Error::WritesStopped(w) => Error::WritesStopped(w.clone()),
                        Error::WalQueueFull { queued_bytes, max } => Error::WalQueueFull {
                            queued_bytes: *queued_bytes,
                            max: *max,
                        },
                        _ => Error::Closed,
                    }));
                    continue;
                }
                let done = Arc::new(Completion::default());
                q.bytes += payload.len();
                q.items.push(Item::Append {
                    kind: super::record::KIND_BATCH,
                    payload_crc: crc32c::crc32c(&payload),
                    payload,
                    done: done.clone(),
                    resolve,
                });
                dones.push(Ok(done));
            }
        }
        self.shared.work.notify_one();
        dones
            .into_iter()
            .map(|d| d.and_then(|d| d.wait()))
            .collect()
    }

    fn enqueue(
        &self,
        kind: u8,
        payload: Bytes,
        deadline: Instant,
        resolve: bool,
        hint: Option<Box<Hint>>,
    ) -> Result<u64> {
        let payload_crc = crc32c::crc32c(&payload);
        // A resolved payload is rewritten by the writer thread: a hint about it would not match.
        let hint = if resolve { None } else { hint };
        let done = Arc::new(Completion {
            hint,
            ..Completion::default()
        });
        {
            let mut q = self.shared.queue.lock();
            loop {
                if let Some(why) = self.shared.stopped.lock().clone() {
                    return Err(Error::WritesStopped(why));
                }
                if q.closing {
                    return Err(Error::Closed);
                }
                // An append larger than the whole queue budget still goes in alone.
                if q.bytes == 0 || q.bytes + payload.len() <= self.shared.queue_bytes_max {
                    break;
                }
                if self.shared.room.wait_until(&mut q, deadline).timed_out() {
                    return Err(Error::WalQueueFull {
                        queued_bytes: q.bytes,
                        max: self.shared.queue_bytes_max,
                    });
                }
            }
            q.bytes += payload.len();
            q.items.push(Item::Append {
                kind,
                payload,
                payload_crc,
                done: done.clone(),
                resolve,
            });
        }
        self.shared.work.notify_one();
        done.wait()
    }

    /// Asks the writer to call `CommitSink::freeze` after everything queued so far. Returns the last
    /// sequence number the freeze covers. With `rotate`, the writer first starts a new segment (when the
    /// current one holds any record), so that the segments before it hold only records the freeze
    /// covers: once a manifest covering them is durable, they can all be deleted.
    pub(crate) fn freeze(&self, rotate: bool) -> Result<u64> {
        let done = Arc::new(Completion::default());
        {
            let mut q = self.shared.queue.lock();
            if q.closing {
                return Err(Error::Closed);
            }
            q.items.push(Item::Freeze {
                done: done.clone(),
                rotate,
            });
        }
        self.shared.work.notify_one();
        done.wait()
    }

    /// Stops writes for good with a reason (used when background work hits an I/O error).
    pub(crate) fn stop(&self, why: &str) {
        let mut s = self.shared.stopped.lock();
        if s.is_none() {
            tracing::error!(why, "writes stopped (fail-stop)");
            *s = Some(Arc::from(why));
        }
    }

    pub(crate) fn stopped(&self) -> Option<Arc<str>> {
        self.shared.stopped.lock().clone()
    }

    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.shared.queue.lock().bytes
    }

    pub(crate) fn last_seq(&self) -> u64 {
        *self.shared.last_seq.lock()
    }

    pub(crate) fn segments(&self) -> Vec<SegmentMeta> {
        self.shared.segments.lock().clone()
    }

    /// Deletes segments whose every record is `<= covered_seq`, keeping `retain` of them and never the
    /// segment being written.
    pub(crate) fn remove_covered(&self, covered_seq: u64, retain: usize) -> Result<usize> {
        let doomed: Vec<SegmentMeta> = {
            let segs = self.shared.segments.lock();
            let covered = segs
                .windows(2)
                .take_while(|w| w[1].first <= covered_seq + 1)
                .count();
            segs[..covered.saturating_sub(retain)].to_vec()
        };
        for s in &doomed {
            match std::fs::remove_file(&s.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&s.path, e)),
            }
        }
        if !doomed.is_empty() {
            self.shared.segments.lock().drain(..doomed.len());
        }
        Ok(doomed.len())
    }

    /// Drains the queue, fsyncs and joins the writer thread.
    pub(crate) fn close(&self) {
        self.shared.queue.lock().closing = true;
        self.shared.work.notify_one();
        self.shared.room.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

struct Leader {
    shared: Arc<Shared>,
    sink: Arc<dyn CommitSink>,
    dir: PathBuf,
    file: File,
    path: PathBuf,
    len: u64,
    next_seq: u64,
    fsync: FsyncPolicy,
    segment_bytes: u64,
    /// Set when bytes were written but not yet fsynced (interval and never policies).
    dirty_since: Option<Instant>,
    buf: Vec<u8>,
}

impl Leader {
    fn run(&mut self) {
        loop {
            let (items, closing) = {
                let mut q = self.shared.queue.lock();
                while q.items.is_empty() && !q.closing {
                    match (self.fsync, self.dirty_since) {
                        (FsyncPolicy::IntervalMs(ms), Some(since)) => {
                            let due = since + Duration::from_millis(ms);
                            if self.shared.work.wait_until(&mut q, due).timed_out() {
                                break;
                            }
                        }
                        _ => self.shared.work.wait(&mut q),
                    }
                }
                q.bytes = 0;
                (std::mem::take(&mut q.items), q.closing)
            };
            self.shared.room.notify_all();
            self.process(items);
            self.maybe_interval_sync();
            if closing && self.shared.queue.lock().items.is_empty() {
                if self.dirty_since.is_some() {
                    self.sync();
                }
                return;
            }
        }
    }

    fn process(&mut self, items: Vec<Item>) {
        let mut group: Vec<(u64, u8, Bytes, Arc<Completion>)> = Vec::with_capacity(items.len());
        // Keys the records of `group` write; built only once a batch to resolve arrives.
        let mut touched: Option<Touched> = None;
        for item in items {
            match item {
                Item::Append {
                    kind,
                    mut payload,
                    mut payload_crc,
                    done,
                    resolve,
                } => {
                    let stopped = self.shared.stopped.lock().clone();
                    if let Some(why) = stopped {
                        done.stopped(why);
                        continue;
                    }
                    if resolve && kind == KIND_BATCH {
                        // The sink resolves against what is applied. If a record still waiting in this
                        // group writes a key the batch depends on, commit the group first, so that the
                        // check sees it: the check and the sequencing are then atomic with respect to
                        // every other writer (they all go through this thread).
                        let t = touched.get_or_insert_with(|| Touched::of(&group));
                        if t.conflicts(&payload) {
                            self.commit_group(std::mem::take(&mut group));
                            touched = Some(Touched::default());
                            if let Some(why) = self.shared.stopped.lock().clone() {
                                done.stopped(why);
                                continue;
                            }
                        }
                        match self.sink.resolve(&payload) {
                            Ok(p) => {
                                payload_crc = crc32c::crc32c(&p);
                                payload = p;
                            }
                            Err(e) => {
                                done.complete(Err(e));
                                continue;
                            }
                        }
                    }
                    if let Some(t) = &mut touched {
                        t.add(kind, &payload);
                    }
                    group.push((payload_crc as u64, kind, payload, done));
                }
                Item::Freeze { done, rotate } => {
                    if !group.is_empty() {
                        self.commit_group(std::mem::take(&mut group));
                    }
                    touched = None;
                    if rotate {
                        if let Err(e) = self.rotate() {
                            if e.is_out_of_files() {
                                done.complete(Err(e.out_of_files_copy()));
                                continue;
                            }
                            self.stop(&e);
                        }
                    }
                    match self.shared.stopped.lock().clone() {
                        Some(why) => done.stopped(why),
                        None => {
                            self.sink.freeze(self.next_seq - 1);
                            done.complete(Ok(self.next_seq - 1));
                        }
                    }
                }
            }
        }
        if !group.is_empty() {
            self.commit_group(group);
        }
    }

    /// Writes, syncs and applies one group; the first field of each entry is the payload CRC.
    ///
    /// The safety argument rests on three facts, asserted here in release builds too (once per group,
    /// so they cost nothing measurable): the group is not empty (so `last_seq` below is a real record),
    /// its first sequence number follows the last one handed out (no gap and no reuse across groups:
    /// recovery refuses a gap as corruption, and a reused number would let replay apply a record twice
    /// or not at all), and the numbers inside the group are consecutive (each record's header carries
    /// `first_seq + i`, and the sink checks it receives them in that order).
    fn commit_group(&mut self, group: Vec<(u64, u8, Bytes, Arc<Completion>)>) {
        assert!(!group.is_empty(), "group commit of an empty group");
        let handed_out = *self.shared.last_seq.lock();
        assert_eq!(
            self.next_seq,
            handed_out + 1,
            "group would start at {} after {handed_out} was handed out",
            self.next_seq
        );
        let group_bytes: usize = group.iter().map(|g| HEADER_BYTES + g.2.len()).sum();
        if let Err(e) = self.rotate_if_full(group_bytes as u64) {
            if e.is_out_of_files() {
                // No sequence number was handed out and nothing written: refuse, don't stop.
                tracing::warn!(error = %e, records = group.len(), "WAL segment could not be opened; writes refused until descriptors are free");
                for (.., done) in group {
                    done.complete(Err(e.out_of_files_copy()));
                }
                return;
            }
            self.fail(group, &e);
            return;
        }
        self.buf.clear();
        let first_seq = self.next_seq;
        for (i, (crc, kind, payload, _)) in group.iter().enumerate() {
            let seq = first_seq + i as u64;
            let len = payload.len() as u32;
            put_header(&mut self.buf, len, seq, *kind, *crc as u32);
            self.buf.extend_from_slice(payload);
        }
        let last_seq = first_seq + group.len() as u64 - 1;
        assert!(
            last_seq >= first_seq && last_seq - first_seq + 1 == group.len() as u64,
            "sequence numbers {first_seq}..={last_seq} do not match a group of {}",
            group.len()
        );
        *self.shared.last_seq.lock() = last_seq;
        let started = Instant::now();
        if let Err(e) = self.write_and_sync() {
            self.fail(group, &e);
            return;
        }
        metrics::histogram!(crate::families::WAL_GROUP_COMMIT_LATENCY_SECONDS.name)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(crate::families::WAL_BYTES_TOTAL.name).increment(self.buf.len() as u64);
        metrics::counter!(crate::families::WAL_RECORDS_TOTAL.name).increment(group.len() as u64);
        metrics::histogram!(crate::families::WAL_GROUP_COMMIT_BATCH_RECORDS.name)
            .record(group.len() as f64);
        self.next_seq = last_seq + 1;
        for (i, (_, kind, payload, done)) in group.iter().enumerate() {
            self.sink
                .apply(first_seq + i as u64, *kind, payload, done.hint.as_deref());
        }
        self.sink.publish(last_seq);
        for (i, (_, _, _, done)) in group.into_iter().enumerate() {
            done.complete(Ok(first_seq + i as u64));
        }
    }

    fn write_and_sync(&mut self) -> Result<()> {
        fsutil::write_all(&mut self.file, &self.path, &self.buf)?;
        self.len += self.buf.len() as u64;
        fail::fail_point!("wal::after_write");
        match self.fsync {
            FsyncPolicy::Always => self.sync_now(),
            FsyncPolicy::IntervalMs(_) | FsyncPolicy::Never => {
                self.dirty_since.get_or_insert_with(Instant::now);
                Ok(())
            }
        }
    }

    fn sync_now(&mut self) -> Result<()> {
        let started = Instant::now();
        fsutil::sync_file(&self.file, &self.path)?;
        metrics::counter!(crate::families::WAL_FSYNC_TOTAL.name).increment(1);
        metrics::histogram!(crate::families::WAL_FSYNC_LATENCY_SECONDS.name)
            .record(started.elapsed().as_secs_f64());
        self.dirty_since = None;
        Ok(())
    }

    /// Background fsync for the interval policy; an error stops writes.
    fn sync(&mut self) {
        if let Err(e) = self.sync_now() {
            self.stop(&e);
        }
    }

    fn maybe_interval_sync(&mut self) {
        if let (FsyncPolicy::IntervalMs(ms), Some(since)) = (self.fsync, self.dirty_since) {
            if since.elapsed() >= Duration::from_millis(ms) {
                self.sync();
            }
        }
    }

    fn rotate_if_full(&mut self, incoming: u64) -> Result<()> {
        if self.len + incoming <= self.segment_bytes {
            return Ok(());
        }
        self.rotate()
    }

    /// Closes the current segment and starts a new one at `next_seq`, unless the current one holds no
    /// record yet.
    fn rotate(&mut self) -> Result<()> {
        let header = super::segment::SEGMENT_HEADER_BYTES as u64;
        if self.len <= header {
            return Ok(());
        }
        // The old segment must be durable before records continue in the new one: recovery treats only
        // the last segment's tail as possibly torn.
        if self.dirty_since.is_some() {
            self.sync_now()?;
        }
        let (file, meta) = create_segment_retrying(&self.dir, self.next_seq)?;
        self.file = file;
        self.path = meta.path.clone();
        self.len = header;
        self.shared.segments.lock().push(meta);
        metrics::counter!(crate::families::WAL_SEGMENTS_CREATED_TOTAL.name).increment(1);
        fail::fail_point!("wal::after_rotate");
        Ok(())
    }

    fn stop(&self, e: &Error) {
        let mut s = self.shared.stopped.lock();
        if s.is_none() {
            tracing::error!(error = %e, "WAL I/O failed; writes stopped (fail-stop)");
            *s = Some(Arc::from(e.to_string()));
        }
    }

    fn fail(&mut self, group: Vec<(u64, u8, Bytes, Arc<Completion>)>, e: &Error) {
        self.stop(e);
        let why = self
            .shared
            .stopped
            .lock()
            .clone()
            .unwrap_or_else(|| Arc::from(e.to_string()));
        for (.., done) in group {
            done.stopped(why.clone());
        }
    }
}

/// How often a segment open that ran out of file descriptors is retried (waits 5, 10, 20, 40 ms)
/// before the writes waiting for it are refused as busy.
const OPEN_RETRIES: u32 = 4;

/// [`create_segment`], retried while the process is out of file descriptors (connections or other
/// files may free some); a half-created segment is removed so none is left behind.
fn create_segment_retrying(dir: &Path, first_seq: u64) -> Result<(File, SegmentMeta)> {
    let mut wait = Duration::from_millis(5);
    let mut attempt = 0;
    loop {
        let created = create_segment_or_fault(dir, first_seq);
        match created {
            Err(e) if e.is_out_of_files() => {
                let _ = std::fs::remove_file(segment_path(dir, first_seq));
                metrics::counter!(crate::families::WAL_OPEN_OUT_OF_FILES_TOTAL.name).increment(1);
                if attempt == OPEN_RETRIES {
                    return Err(e);
                }
                attempt += 1;
                std::thread::sleep(wait);
                wait *= 2;
            }
            r => return r,
        }
    }
}

/// [`create_segment`], or EMFILE when the fail point `wal::open_segment` is armed (tests).
fn create_segment_or_fault(dir: &Path, first_seq: u64) -> Result<(File, SegmentMeta)> {
    fail::fail_point!("wal::open_segment", |_| Err(Error::io(
        dir,
        std::io::Error::from_raw_os_error(24)
    )));
    create_segment(dir, first_seq)
}

/// The keys a group's records write, to tell whether a batch to resolve depends on one of them.
#[derive(Default)]
struct Touched {
    keys: std::collections::HashSet<(u32, u64)>,
}

impl Touched {
    fn of(group: &[(u64, u8, Bytes, Arc<Completion>)]) -> Self {
        let mut t = Self::default();
        for (_, kind, payload, _) in group {
            t.add(*kind, payload);
        }
        t
    }

    /// Adds the keys of a resolved record (puts and deletes only).
    fn add(&mut self, kind: u8, payload: &Bytes) {
        if kind != KIND_BATCH {
            return;
        }
        for op in decode_batch(payload).unwrap_or_default() {
            match op {
                Op::Put { keyspace, key, .. } | Op::Delete { keyspace, key } => {
                    self.keys.insert((keyspace, key));
                }
                Op::DeleteRange { .. } | Op::Check { .. } => {}
            }
        }
    }

    /// Whether an unresolved batch checks a key written here or deletes a range holding one.
    fn conflicts(&self, payload: &Bytes) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        decode_batch(payload)
            .unwrap_or_default()
            .iter()
            .any(|op| match op {
                Op::Check { keyspace, key, .. } => self.keys.contains(&(*keyspace, *key)),
                Op::DeleteRange {
                    keyspace,
                    start,
                    end,
                } => self
                    .keys
                    .iter()
                    .any(|(ks, k)| ks == keyspace && (start..=end).contains(&k)),
                _ => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A sink that blocks in `apply` until released, standing in for a leader stuck on a slow disk, and
    /// records what the leader asked of it.
    struct Gate {
        entered: Mutex<Option<mpsc::Sender<()>>>,
        release: Mutex<mpsc::Receiver<()>>,
        events: Mutex<Vec<String>>,
    }

    impl Gate {
        fn new(entered: mpsc::Sender<()>, release: mpsc::Receiver<()>) -> Self {
            Self {
                entered: Mutex::new(Some(entered)),
                release: Mutex::new(release),
                events: Mutex::new(Vec::new()),
            }
        }
    }

    impl CommitSink for Gate {
        fn apply(&self, seq: u64, _: u8, _: &Bytes, _: Option<&Hint>) {
            self.events.lock().push(format!("apply {seq}"));
            if let Some(tx) = self.entered.lock().take() {
                let _ = tx.send(());
                let _ = self.release.lock().recv();
            }
        }
        fn publish(&self, _: u64) {}
        fn freeze(&self, _: u64) {}
        fn resolve(&self, payload: &Bytes) -> Result<Bytes> {
            self.events.lock().push("resolve".into());
            Ok(payload.clone())
        }
    }

    fn start(dir: &std::path::Path, sink: Arc<Gate>) -> Wal {
        let start = WalStart {
            dir: dir.to_owned(),
            segments: Vec::new(),
            file: None,
            next_seq: 1,
            fsync: FsyncPolicy::Never,
            segment_bytes: 1 << 20,
            queue_bytes_max: 1 << 20,
        };
        Wal::start(start, sink).unwrap()
    }

    fn batch(f: impl FnOnce(&mut crate::wal::record::BatchEncoder)) -> Bytes {
        let mut e = crate::wal::record::BatchEncoder::default();
        f(&mut e);
        e.finish()
    }

    /// With the leader held in `apply`, queues a put of key 7 and then a conditional batch on
    /// `checked`, so that both are taken in one drain; returns the sink's events.
    fn conditional_after_put(checked: u64) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let gate = Arc::new(Gate::new(entered_tx, release_rx));
        let wal = start(dir.path(), gate.clone());
        let later = || Instant::now() + Duration::from_secs(30);
        let put7 = batch(|e| e.put(0, 7, b"seven"));
        let cond = batch(|e| {
            e.check(0, checked, crate::wal::record::Cond::Absent);
            e.put(0, 8, b"eight");
        });
        let (n7, ncond) = (put7.len(), cond.len());
        std::thread::scope(|s| {
            let first =
                s.spawn(|| wal.append(KIND_BATCH, batch(|e| e.put(0, 1, b"x")), later(), false));
            entered_rx.recv().unwrap();
            let a = s.spawn(|| wal.append(KIND_BATCH, put7, later(), false));
            let wait_for = |bytes: usize| {
                let mut spins = 0u32;
                while wal.queued_bytes() != bytes {
                    spins += 1;
                    assert!(spins < 10_000_000, "append never queued");
                    std::thread::yield_now();
                }
            };
            wait_for(n7);
            let b = s.spawn(|| wal.append(KIND_BATCH, cond, later(), true));
            wait_for(n7 + ncond);
            release_tx.send(()).unwrap();
            assert_eq!(first.join().unwrap().unwrap(), 1);
            assert_eq!(a.join().unwrap().unwrap(), 2);
            assert_eq!(b.join().unwrap().unwrap(), 3);
        });
        wal.close();
        let events = gate.events.lock().clone();
        events
    }

    #[test]
    fn a_conditional_batch_on_a_key_queued_in_its_group_is_checked_after_that_key_is_applied() {
        assert_eq!(
            conditional_after_put(7),
            ["apply 1", "apply 2", "resolve", "apply 3"],
            "the group was committed before the check"
        );
    }

    #[test]
    fn a_conditional_batch_on_another_key_joins_the_group() {
        assert_eq!(
            conditional_after_put(9),
            ["apply 1", "resolve", "apply 2", "apply 3"],
            "no extra group commit"
        );
    }

    #[test]
    fn a_full_queue_turns_writers_away_with_wal_queue_full() {
        let dir = tempfile::tempdir().unwrap();
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let gate = Arc::new(Gate::new(entered_tx, release_rx));
        let start = WalStart {
            dir: dir.path().to_owned(),
            segments: Vec::new(),
            file: None,
            next_seq: 1,
            fsync: FsyncPolicy::Never,
            segment_bytes: 1 << 20,
            queue_bytes_max: 4096,
        };
        let wal = Wal::start(start, gate).unwrap();
        let later = || Instant::now() + Duration::from_secs(30);
        std::thread::scope(|s| {
            let first =
                s.spawn(|| wal.append(KIND_BATCH, Bytes::from_static(b"first"), later(), false));
            entered_rx.recv().unwrap(); // the leader is now stuck applying the first group
                                        // Larger than the whole queue budget: admitted because the queue is empty.
            let big =
                s.spawn(|| wal.append(KIND_BATCH, Bytes::from(vec![7u8; 5000]), later(), false));
            // Bounded wait for the big append to be queued (observable state, no sleep).
            let mut spins = 0u32;
            while wal.queued_bytes() == 0 {
                spins += 1;
                assert!(spins < 10_000_000, "the big append never reached the queue");
                std::thread::yield_now();
            }
            let r = wal.append(
                KIND_BATCH,
                Bytes::from_static(b"turned away"),
                Instant::now() + Duration::from_millis(20),
                false,
            );
            assert!(
                matches!(
                    r,
                    Err(Error::WalQueueFull {
                        queued_bytes: 5000,
                        max: 4096
                    })
                ),
                "{r:?}"
            );
            release_tx.send(()).unwrap();
            assert_eq!(first.join().unwrap().unwrap(), 1);
            assert_eq!(
                big.join().unwrap().unwrap(),
                2,
                "the refused append took no sequence number"
            );
        });
        wal.close();
    }
}

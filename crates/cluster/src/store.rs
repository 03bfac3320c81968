//! openraft's log storage over [`RaftLog`]: entries, the vote, the committed index. Appends and
//! truncations run their fsync on this task (in `block_in_place`), then tell openraft.
//!
//! openraft numbers entries from 0 (the initial membership); the log store from 1: the store holds
//! Raft index `i` at its index `i + 1`.

use std::{fmt::Debug, ops::RangeBounds, path::PathBuf, sync::Arc};

use openraft::{
    storage::{LogFlushed, RaftLogStorage},
    AnyError, CommittedLeaderId, LeaderId, LogId, LogState, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use parking_lot::Mutex;

use crate::{
    log::{self, RaftLog},
    types::{decode_entry, encode_entry, Entry, NodeId, TypeConfig},
};

/// Bytes per Raft log segment file (a segment is deleted whole once a snapshot covers it).
pub(crate) const RAFT_SEGMENT_BYTES: u64 = 64 << 20;

pub(crate) fn io_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::error(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::error(e.to_string())).into()
}

/// The log store (cloned as its own reader).
#[derive(Clone)]
pub(crate) struct LogStore {
    log: Arc<Mutex<RaftLog>>,
    dir: PathBuf,
    committed_saved: Arc<Mutex<Option<std::time::Instant>>>,
    flusher: std::sync::mpsc::Sender<Flush>,
}

/// Written entries waiting for their `fdatasync`, and whom to tell.
struct Flush {
    file: std::fs::File,
    path: PathBuf,
    done: LogFlushed<TypeConfig>,
}

/// The flusher thread: `fdatasync`s written entries in order (one sync for all that queued up
/// meanwhile: a segment before the last one was fsynced when it was closed) and only then tells
/// openraft they are durable. openraft replicates them to followers meanwhile, so the leader's
/// fsync and the followers' overlap instead of adding up.
fn flusher(rx: std::sync::mpsc::Receiver<Flush>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let last = batch.last().expect("one job");
        let r = last
            .file
            .sync_data()
            .map_err(|e| format!("{}: {e}", last.path.display()));
        for job in batch {
            job.done
                .log_io_completed(r.clone().map_err(std::io::Error::other));
        }
    }
}

impl LogStore {
    pub(crate) fn open(dir: &std::path::Path, segment_bytes: u64) -> Result<LogStore, log::Error> {
        let (log, rec) = RaftLog::open(dir, segment_bytes)?;
        if rec.torn_bytes > 0 {
            tracing::warn!(
                dir = %dir.display(),
                bytes = rec.torn_bytes,
                "raft log: cut a torn tail"
            );
        }
        let (flusher_tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("kyrodb-raft-flush".into())
            .spawn(move || flusher(rx))
            .map_err(|e| log::Error::Invalid(format!("flusher thread: {e}")))?;
        Ok(LogStore {
            log: Arc::new(Mutex::new(log)),
            dir: dir.to_owned(),
            committed_saved: Arc::default(),
            flusher: flusher_tx,
        })
    }

    fn purged_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        match std::fs::read(self.dir.join("purged-id")) {
            Ok(b) if b.len() == 28 && crc32c::crc32c(&b[..24]).to_le_bytes() == b[24..] => {
                Ok(log_id_at(&b))
            }
            Ok(_) => Err(read_err(format!(
                "{}: corrupt at byte 0: checksum mismatch",
                self.dir.join("purged-id").display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(read_err(e)),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        use std::ops::Bound;
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let log = self.log.clone();
        let raw = tokio::task::block_in_place(|| {
            log.lock()
                .read(from.saturating_add(1), to.saturating_add(1))
        })
        .map_err(read_err)?;
        raw.into_iter()
            .map(|mut r| {
                r.index -= 1;
                decode_entry(r).map_err(read_err)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged = self.purged_id()?;
        let last = self.log.lock().last_index();
        let last_log_id = match last.map(|i| i - 1) {
            Some(i) => {
                let e = self.try_get_log_entries(i..=i).await?;
                e.first().map(|e| e.log_id)
            }
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let v = log::Vote {
            term: vote.leader_id.term,
            voted_for: Some(vote.leader_id.node_id),
            committed: vote.committed,
        };
        let log = self.log.clone();
        tokio::task::block_in_place(|| log.lock().save_vote(v)).map_err(io_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let rec = crate::log::RaftLog::read_meta(&self.dir).map_err(read_err)?;
        Ok(rec.vote.voted_for.map(|n| Vote {
            leader_id: LeaderId::new(rec.vote.term, n),
            committed: rec.vote.committed,
        }))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Only saves replay work after a restart (openraft re-learns the commit index from the
        // leader), so it is written at most every 200 ms instead of at every commit.
        let now = std::time::Instant::now();
        if self
            .committed_saved
            .lock()
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_millis(200))
        {
            return Ok(());
        }
        *self.committed_saved.lock() = Some(now);
        if let Some(c) = committed {
            let mut b = Vec::with_capacity(24);
            b.extend_from_slice(&c.leader_id.term.to_le_bytes());
            b.extend_from_slice(&c.leader_id.node_id.to_le_bytes());
            b.extend_from_slice(&c.index.to_le_bytes());
            let log = self.log.clone();
            log.lock().save_committed(&b).map_err(io_err)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let rec = crate::log::RaftLog::read_meta(&self.dir).map_err(read_err)?;
        Ok(rec
            .committed
            .and_then(|b| (b.len() == 24).then(|| log_id_at(&b)).flatten()))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let recs: Vec<log::Entry> = entries
            .into_iter()
            .map(|e| {
                let mut r = encode_entry(&e);
                r.index += 1;
                r
            })
            .collect();
        let log = self.log.clone();
        let r = tokio::task::block_in_place(|| log.lock().append_unsynced(&recs));
        match r {
            Ok(Some((file, path))) => {
                let job = Flush {
                    file,
                    path,
                    done: callback,
                };
                if let Err(std::sync::mpsc::SendError(job)) = self.flusher.send(job) {
                    job.done
                        .log_io_completed(Err(std::io::Error::other("the flusher stopped")));
                    return Err(io_err("the raft log flusher stopped"));
                }
                Ok(())
            }
            Ok(None) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let log = self.log.clone();
        tokio::task::block_in_place(|| log.lock().truncate_from(log_id.index + 1)).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let (log, dir) = (self.log.clone(), self.dir.clone());
        tokio::task::block_in_place(|| purge_log(&mut log.lock(), &dir, log_id)).map_err(io_err)
    }
}

/// Records `log_id` as the purge point (durably, with its term and leader) and drops the entries
/// through it.
fn purge_log(
    log: &mut RaftLog,
    dir: &std::path::Path,
    log_id: LogId<NodeId>,
) -> Result<(), String> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&log_id.leader_id.term.to_le_bytes());
    b.extend_from_slice(&log_id.leader_id.node_id.to_le_bytes());
    b.extend_from_slice(&log_id.index.to_le_bytes());
    b.extend_from_slice(&crc32c::crc32c(&b).to_le_bytes());
    kyrodb_storage::write_file_atomic(&dir.join("purged-id"), &b).map_err(|e| e.to_string())?;
    log.purge_to(log_id.index + 1).map_err(|e| e.to_string())
}

/// [`LogStore::purge`] before the store is open (installing a snapshot at start).
pub(crate) fn purge_sync(dir: &std::path::Path, log_id: LogId<NodeId>) -> Result<(), String> {
    let (mut log, _) = RaftLog::open(dir, RAFT_SEGMENT_BYTES).map_err(|e| e.to_string())?;
    purge_log(&mut log, dir, log_id)
}

/// A log id stored as `term u64 | node u64 | index u64` (24 bytes; None when shorter).
fn log_id_at(b: &[u8]) -> Option<LogId<NodeId>> {
    let u = |i: usize| kyrodb_storage::codec::u64_at(b, i);
    Some(LogId::new(CommittedLeaderId::new(u(0)?, u(8)?), u(16)?))
}

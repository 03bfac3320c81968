//! The state machine: committed entries applied to the engine, each write as one engine write that
//! also records how far this node has applied (`_raft` keyspace, key 0), so the engine's state and
//! the index it reflects never disagree — across a crash too (docs/design/cluster.md, "Applying").

use std::{sync::Arc, time::Duration};

use kyrodb_storage::{Db, Keyspace, LoggedWrite, WriteBatch};
use openraft::{
    storage::RaftStateMachine, CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use tokio::sync::watch;

use kyrodb_storage::codec::{u32_at, u64_at};

use crate::{
    store::io_err,
    types::{Entry, NodeAddr, NodeId, Outcome, Outcomes, Refusal, SnapshotData, TypeConfig},
};

/// A write to apply, with the keyspace, key and value of its apply marker.
type Write = (LoggedWrite, Keyspace, u64, Vec<u8>);

/// The reserved keyspace holding the apply marker and the membership.
pub const RAFT_KEYSPACE: &str = "_raft";
pub(crate) const KEY_MARKER: u64 = 0;
const KEY_MEMBERSHIP: u64 = 1;
/// Present (and the marker absent) in a restored backup that may seed a new cluster; written by
/// `kyrodb backup restore` (`kyrodb-backup`), which cannot depend on this crate.
pub(crate) const KEY_SEED: u64 = 2;

/// How far the engine reflects the log: every entry through `full`, plus, of the entry after it,
/// the writes through `partial` (an entry's writes are separate engine writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Marker {
    full: Option<LogId<NodeId>>,
    partial: Option<(u64, u32)>,
}

impl Marker {
    /// `u8 version=1 | u8 has_full | u64 term | u64 node | u64 index | u8 has_partial | u64 index | u32 write`
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(39);
        b.push(1);
        let f = self.full.unwrap_or_default();
        b.push(u8::from(self.full.is_some()));
        b.extend_from_slice(&f.leader_id.term.to_le_bytes());
        b.extend_from_slice(&f.leader_id.node_id.to_le_bytes());
        b.extend_from_slice(&f.index.to_le_bytes());
        let (pi, pj) = self.partial.unwrap_or_default();
        b.push(u8::from(self.partial.is_some()));
        b.extend_from_slice(&pi.to_le_bytes());
        b.extend_from_slice(&pj.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Marker> {
        if b.len() != 39 || b[0] != 1 {
            return None;
        }
        let u = |i: usize| u64_at(b, i);
        Some(Marker {
            full: match b[1] {
                1 => Some(LogId::new(CommittedLeaderId::new(u(2)?, u(10)?), u(18)?)),
                _ => None,
            },
            partial: match b[26] {
                1 => Some((u(27)?, u32_at(b, 35)?)),
                _ => None,
            },
        })
    }
}

pub(crate) struct StateMachine {
    db: Arc<Db>,
    raft_dir: std::path::PathBuf,
    /// Set once a received snapshot is staged: the node restarts to install it and applies
    /// nothing more to the old state meanwhile.
    installing: Arc<std::sync::atomic::AtomicBool>,
    restart: Arc<tokio::sync::Notify>,
    ks: Keyspace,
    marker: Marker,
    membership: StoredMembership<NodeId, NodeAddr>,
    applied_tx: watch::Sender<u64>,
}

fn engine_err(e: kyrodb_storage::Error) -> StorageError<NodeId> {
    io_err(e)
}

impl StateMachine {
    /// Reads the marker and membership from the engine (the `_raft` keyspace must exist).
    pub(crate) fn open(
        db: Arc<Db>,
        raft_dir: std::path::PathBuf,
        restart: Arc<tokio::sync::Notify>,
        applied_tx: watch::Sender<u64>,
    ) -> kyrodb_storage::Result<Self> {
        let ks = db.keyspace(RAFT_KEYSPACE)?;
        let marker = match ks.get(KEY_MARKER)? {
            Some(v) => Marker::decode(&v).ok_or_else(|| kyrodb_storage::Error::Corrupt {
                file: db.path().join("<_raft keyspace, key 0>"),
                offset: 0,
                reason: "apply marker is malformed".into(),
            })?,
            None => Marker::default(),
        };
        let membership = match ks.get(KEY_MEMBERSHIP)? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| kyrodb_storage::Error::Corrupt {
                file: db.path().join("<_raft keyspace, key 1>"),
                offset: e.column() as u64,
                reason: format!("membership: {e}"),
            })?,
            None => StoredMembership::default(),
        };
        let _ = applied_tx.send(marker.full.map_or(0, |l| l.index));
        Ok(StateMachine {
            db,
            raft_dir,
            installing: Arc::default(),
            restart,
            ks,
            marker,
            membership,
            applied_tx,
        })
    }

    /// Applies `todo` (each write's index in its entry, and the write with its marker) as one
    /// engine group, filling `results`; what finds no room (back-pressure: the entry is committed
    /// and must be applied) is retried, in order, until it is applied. Deterministic refusals are
    /// outcomes; anything else is this node's failure.
    fn apply_writes(
        &self,
        mut todo: Vec<(usize, Write)>,
        results: &mut [Option<Outcome>],
    ) -> Result<(), StorageError<NodeId>> {
        while !todo.is_empty() {
            let batch: Vec<Write> = todo.iter().map(|(_, w)| w.clone()).collect();
            let mut retry_from = None;
            for (k, r) in self
                .db
                .apply_replicated_many(&batch)
                .into_iter()
                .enumerate()
            {
                let j = todo[k].0;
                match r {
                    Ok(seq) => results[j] = Some(Ok(seq)),
                    Err(
                        kyrodb_storage::Error::Busy { .. }
                        | kyrodb_storage::Error::WalQueueFull { .. }
                        | kyrodb_storage::Error::OutOfFiles { .. },
                    ) => {
                        retry_from = Some(k);
                        break;
                    }
                    Err(err) => match Refusal::from_engine(&err) {
                        Some(r) => results[j] = Some(Err(r)),
                        None => return Err(engine_err(err)),
                    },
                }
            }
            match retry_from {
                Some(k) => {
                    todo.drain(..k);
                    std::thread::sleep(Duration::from_millis(5));
                }
                None => todo.clear(),
            }
        }
        Ok(())
    }

    /// Applies one write of the state machine's own (blank and membership entries): it cannot
    /// be refused.
    fn apply_own(&self, b: &WriteBatch, marker: &Marker) -> Result<(), StorageError<NodeId>> {
        let mut result = [None];
        let w = (
            LoggedWrite::from_batch(b),
            self.ks.clone(),
            KEY_MARKER,
            marker.encode(),
        );
        self.apply_writes(vec![(0, w)], &mut result)?;
        match result[0].take() {
            Some(Ok(_)) => Ok(()),
            other => Err(io_err(format!(
                "the apply marker was not written: {other:?}"
            ))),
        }
    }

    fn apply_entry(&mut self, e: &Entry) -> Result<Outcomes, StorageError<NodeId>> {
        let prev = self.marker.full;
        // Entries are applied once each, in log order, each right after the last applied (or the
        // snapshot installed): anything else would apply a write twice or skip one.
        debug_assert!(
            prev.is_none_or(|p| e.log_id.index == p.index + 1),
            "entry {} applied after {prev:?}",
            e.log_id.index
        );
        let done = Marker {
            full: Some(e.log_id),
            partial: None,
        };
        let mut outcomes = Vec::new();
        match &e.payload {
            EntryPayload::Blank => {
                self.apply_own(&WriteBatch::new(), &done)?;
            }
            EntryPayload::Membership(m) => {
                let sm = StoredMembership::new(Some(e.log_id), m.clone());
                let mut b = WriteBatch::new();
                b.put(
                    &self.ks,
                    KEY_MEMBERSHIP,
                    &serde_json::to_vec(&sm).expect("membership serialises"),
                );
                self.apply_own(&b, &done)?;
                self.membership = sm;
            }
            EntryPayload::Normal(p) => {
                let n = p.writes.len();
                let skip_through = self
                    .marker
                    .partial
                    .filter(|(i, _)| *i == e.log_id.index)
                    .map(|(_, j)| j);
                let mut results: Vec<Option<Outcome>> = vec![None; n];
                let mut todo = Vec::with_capacity(n);
                for (j, bytes) in p.writes.iter().enumerate() {
                    if skip_through.is_some_and(|s| j as u32 <= s) {
                        // Applied before a crash; its outcome went to its client then.
                        results[j] =
                            Some(Err(Refusal::Malformed("applied before a restart".into())));
                        continue;
                    }
                    let marker = if j + 1 == n {
                        done
                    } else {
                        Marker {
                            full: prev,
                            partial: Some((e.log_id.index, j as u32)),
                        }
                    };
                    match LoggedWrite::from_bytes(bytes.clone()) {
                        Ok(w) => todo.push((j, (w, self.ks.clone(), KEY_MARKER, marker.encode()))),
                        Err(err) => results[j] = Some(Err(Refusal::Malformed(err.to_string()))),
                    }
                }
                // All of the entry's writes go to the engine as one group.
                self.apply_writes(todo, &mut results)?;
                outcomes = results
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| Err(Refusal::Malformed("not applied".into()))))
                    .collect();
            }
        }
        self.marker = done;
        Ok(Outcomes(outcomes))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeAddr>), StorageError<NodeId>>
    {
        Ok((self.marker.full, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcomes>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        if self.installing.load(std::sync::atomic::Ordering::Acquire) {
            return Err(io_err("restarting to install a received snapshot"));
        }
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut out = Vec::with_capacity(entries.len());
        tokio::task::block_in_place(|| {
            for e in &entries {
                out.push(self.apply_entry(e)?);
                let _ = self.applied_tx.send(e.log_id.index);
            }
            Ok::<_, StorageError<NodeId>>(())
        })?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        // Built here, while no entry is being applied: the checkpoint reflects exactly the marker.
        let (db, dir, last, membership) = (
            self.db.clone(),
            self.raft_dir.clone(),
            self.marker.full,
            self.membership.clone(),
        );
        Builder(Some(tokio::task::block_in_place(|| {
            crate::snapshot::build(&db, &dir, last, membership)
        })))
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotData>, StorageError<NodeId>> {
        Ok(Box::new(SnapshotData {
            dir: self.raft_dir.join(crate::snapshot::INCOMING),
        }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeAddr>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError<NodeId>> {
        if snapshot.dir != self.raft_dir.join(crate::snapshot::INCOMING) {
            return Err(io_err(format!(
                "snapshot to install is in {}, not the incoming directory",
                snapshot.dir.display()
            )));
        }
        let dir = self.raft_dir.clone();
        tokio::task::block_in_place(|| crate::snapshot::stage_install(&dir)).map_err(io_err)?;
        self.installing
            .store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "snapshot received and verified; restarting to install it");
        self.restart.notify_one();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let dir = self.raft_dir.clone();
        tokio::task::block_in_place(|| crate::snapshot::current(&dir)).map_err(io_err)
    }
}

/// The snapshot built by `get_snapshot_builder`.
pub(crate) struct Builder(Option<Result<Snapshot<TypeConfig>, String>>);

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        self.0
            .take()
            .unwrap_or_else(|| Err("snapshot already taken".into()))
            .map_err(io_err)
    }
}

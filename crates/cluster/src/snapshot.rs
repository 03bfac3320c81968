//! Raft snapshots as engine checkpoints (docs/design/cluster.md, "Snapshots").
//!
//! Layout under the Raft directory: `snap-<index>-<covered seq>/` — a checkpoint (`MANIFEST`,
//! `snap/…` hard links, empty `wal/`) and `meta.json` (openraft's snapshot meta and each file's
//! size and xxh3); the newest complete one is the current snapshot, the one before it is kept
//! while it may still be streaming. `incoming/` — a transfer being received. `install/` — a
//! received, verified snapshot; `install/READY` marks it complete: at the next start
//! ([`prepare_data_dir`]) its files replace the engine's and it becomes the current snapshot.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use openraft::{LogId, Snapshot, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::types::{NodeAddr, NodeId, SnapshotData, TypeConfig};

const META: &str = "meta.json";
pub(crate) const INCOMING: &str = "incoming";
pub(crate) const INSTALL: &str = "install";
const READY: &str = "READY";

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileSum {
    pub name: String,
    pub size: u64,
    pub xxh3: u64,
}

/// `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapMeta {
    pub meta: SnapshotMeta<NodeId, NodeAddr>,
    pub files: Vec<FileSum>,
}

/// Size and xxh3 of a file, read once.
pub(crate) fn sum_file(path: &Path) -> std::io::Result<(u64, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            return Ok((n, h.digest()));
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
}

pub(crate) fn read_meta(dir: &Path) -> Result<SnapMeta, String> {
    let p = dir.join(META);
    let b = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_slice(&b)
        .map_err(|e| format!("{}: corrupt at byte {}: {e}", p.display(), e.column()))
}

pub(crate) fn write_meta(dir: &Path, m: &SnapMeta) -> Result<(), String> {
    let b = serde_json::to_vec(m).map_err(|e| e.to_string())?;
    kyrodb_storage::write_file_atomic(&dir.join(META), &b).map_err(|e| e.to_string())
}

/// Snapshot directories, newest (highest index, then covered sequence) last.
fn snapshot_dirs(raft_dir: &Path) -> Vec<(u64, u64, PathBuf)> {
    let mut v: Vec<(u64, u64, PathBuf)> = std::fs::read_dir(raft_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (i, s) = name.strip_prefix("snap-")?.split_once('-')?;
            Some((i.parse().ok()?, s.parse().ok()?, e.path()))
        })
        .filter(|(_, _, p)| p.join(META).exists())
        .collect();
    v.sort();
    v
}

/// The current snapshot, if any.
pub(crate) fn current(raft_dir: &Path) -> Result<Option<Snapshot<TypeConfig>>, String> {
    let Some((_, _, dir)) = snapshot_dirs(raft_dir).pop() else {
        return Ok(None);
    };
    let m = read_meta(&dir)?;
    Ok(Some(Snapshot {
        meta: m.meta,
        snapshot: Box::new(SnapshotData { dir }),
    }))
}

/// Checkpoints the engine (the state machine is paused: it reflects exactly `last`, plus the
/// partial entry its marker records) and makes it the current snapshot.
pub(crate) fn build(
    db: &kyrodb_storage::Db,
    raft_dir: &Path,
    last: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
) -> Result<Snapshot<TypeConfig>, String> {
    let building = raft_dir.join("snap.building");
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(|e| format!("{}: {e}", building.display()))?;
    }
    let (names, covered) = db.checkpoint(&building).map_err(|e| e.to_string())?;
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let (size, xxh3) = sum_file(&building.join(&name)).map_err(|e| format!("{name}: {e}"))?;
        files.push(FileSum { name, size, xxh3 });
    }
    let index = last.map_or(0, |l| l.index);
    let meta = SnapshotMeta {
        last_log_id: last,
        last_membership: membership,
        snapshot_id: format!("{index}-{covered}"),
    };
    write_meta(
        &building,
        &SnapMeta {
            meta: meta.clone(),
            files,
        },
    )?;
    let dir = raft_dir.join(format!("snap-{index}-{covered}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::rename(&building, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    kyrodb_storage::sync_dir(raft_dir).map_err(|e| e.to_string())?;
    prune(raft_dir);
    metrics::counter!(crate::families::CLUSTER_SNAPSHOTS_BUILT_TOTAL.name).increment(1);
    tracing::info!(index, covered_seq = covered, dir = %dir.display(), "raft snapshot built (engine checkpoint)");
    Ok(Snapshot {
        meta,
        snapshot: Box::new(SnapshotData { dir }),
    })
}

/// Keeps the two newest snapshots (the older may still be streaming to a follower).
fn prune(raft_dir: &Path) {
    let dirs = snapshot_dirs(raft_dir);
    for (_, _, d) in dirs.iter().take(dirs.len().saturating_sub(2)) {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Marks a received, verified snapshot (in `incoming/`) for installation at the next start.
pub(crate) fn stage_install(raft_dir: &Path) -> Result<(), String> {
    let install = raft_dir.join(INSTALL);
    if install.exists() {
        std::fs::remove_dir_all(&install).map_err(|e| format!("{}: {e}", install.display()))?;
    }
    std::fs::rename(raft_dir.join(INCOMING), &install).map_err(|e| e.to_string())?;
    kyrodb_storage::write_file_atomic(&install.join(READY), b"ready").map_err(|e| e.to_string())?;
    kyrodb_storage::sync_dir(raft_dir).map_err(|e| e.to_string())
}

/// At start, before the engine opens: finishes installing a received snapshot (idempotent; a
/// crash midway is finished by the next start). Returns the installed snapshot's log id.
pub fn prepare_data_dir(data_dir: &Path) -> Result<Option<u64>, crate::error::StartError> {
    let state = |reason: String| crate::error::StartError::RaftState {
        what: "installing the received snapshot",
        reason,
    };
    let raft_dir = data_dir.join("raft");
    let install = raft_dir.join(INSTALL);
    if !install.join(READY).exists() {
        if install.exists() {
            let _ = std::fs::remove_dir_all(&install);
        }
        return Ok(None);
    }
    let m = read_meta(&install).map_err(state)?;
    kyrodb_storage::install_checkpoint(data_dir, &install).map_err(|source| {
        crate::error::StartError::Storage {
            what: "installing the received snapshot",
            source,
        }
    })?;
    // The log up to the snapshot is covered by it.
    if let Some(last) = m.meta.last_log_id {
        crate::store::purge_sync(&raft_dir, last).map_err(state)?;
    }
    let index = m.meta.last_log_id.map_or(0, |l| l.index);
    let covered = m
        .meta
        .snapshot_id
        .split_once('-')
        .map_or("0", |(_, c)| c)
        .to_owned();
    let dir = raft_dir.join(format!("snap-{index}-{covered}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| state(format!("{}: {e}", dir.display())))?;
    }
    std::fs::rename(&install, &dir).map_err(|e| state(format!("{}: {e}", dir.display())))?;
    kyrodb_storage::sync_dir(&raft_dir).map_err(|e| state(e.to_string()))?;
    prune(&raft_dir);
    tracing::info!(index, "installed the snapshot received from the leader");
    Ok(Some(index))
}

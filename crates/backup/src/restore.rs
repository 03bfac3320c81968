//! Restoring a backup into a new data directory: every object streamed to a temporary file while
//! its checksums are checked, renamed into place only when whole and right, the engine's
//! `MANIFEST` written last, then the directory opened as a database and scrubbed. Anything wrong
//! and the directory is left as it was found (removed, or emptied when it existed empty): nothing
//! a node could start from.

use std::{io::Write, path::Path};

use kyrodb_storage::{Db, Options};

use crate::{verify::read_checked, Error, FileEntry, IoAt, Manifest, Result, Target};

/// The reserved keyspace a cluster node keeps its Raft apply marker in (`kyrodb-cluster`).
const RAFT_KEYSPACE: &str = "_raft";
/// The key in it that marks a restored backup that may seed a cluster (`kyrodb_cluster`'s
/// `KEY_SEED`; `a_restored_backup_seeds_a_new_cluster_that_a_new_node_joins` fails if they differ).
const SEED_KEY: u64 = 2;

/// Restores backup `id` (the newest when `None`) from `target` into `data_dir`, which must not
/// exist or be empty. `on_file` is told each file once it is in place. Returns the manifest.
///
/// The result is a data directory holding exactly the writes up to the backup's sequence number
/// (plus the reset of the reserved `_raft` keyspace): a standalone node starts on it, or it seeds a
/// new cluster (a node started on it with `--cluster` listing only itself, then `cluster init`).
/// A cluster node's apply marker and membership are dropped.
pub fn restore(
    target: &dyn Target,
    id: Option<&str>,
    data_dir: &Path,
    on_file: &dyn Fn(&FileEntry),
) -> Result<Manifest> {
    let created = match std::fs::read_dir(data_dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::Invalid(format!(
                    "{} is not empty: restore into a new data directory",
                    data_dir.display()
                )));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(Error::Io {
                path: data_dir.to_owned(),
                source: e,
            })
        }
    };
    let manifest = crate::load_manifest(target, id)?;
    std::fs::create_dir_all(data_dir).at(data_dir)?;
    let result = fill(target, &manifest, data_dir, on_file);
    if result.is_err() {
        let cleaned = if created {
            std::fs::remove_dir_all(data_dir)
        } else {
            empty_dir(data_dir)
        };
        if let Err(e) = cleaned {
            tracing::warn!(dir = %data_dir.display(), %e, "restore: could not clean up");
        }
    }
    result.map(|()| manifest)
}

fn empty_dir(d: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(d)? {
        let p = e?.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

fn fill(
    target: &dyn Target,
    m: &Manifest,
    data_dir: &Path,
    on_file: &dyn Fn(&FileEntry),
) -> Result<()> {
    for sub in ["snap", "search", "wal"] {
        let d = data_dir.join(sub);
        std::fs::create_dir_all(&d).at(&d)?;
    }
    // The engine's MANIFEST last: until it exists the directory opens as nothing.
    let mut order: Vec<&FileEntry> = m.files.iter().filter(|f| f.path != "MANIFEST").collect();
    order.extend(m.files.iter().filter(|f| f.path == "MANIFEST"));
    for f in order {
        let dst = data_dir.join(&f.path);
        let tmp = data_dir.join(format!("{}.partial", f.path));
        let mut out = std::fs::File::create(&tmp).at(&tmp)?;
        read_checked(target, f, &mut |chunk| out.write_all(chunk).at(&tmp))?;
        out.sync_all().at(&tmp)?;
        drop(out);
        std::fs::rename(&tmp, &dst).at(&dst)?;
        on_file(f);
    }
    for sub in ["snap", "search", "wal"] {
        kyrodb_storage::sync_dir(&data_dir.join(sub))?;
    }
    kyrodb_storage::sync_dir(data_dir)?;
    // Open it as the engine will (every snapshot file verified), scrub every value, and leave
    // `_raft` holding only the seed key: a cluster node's apply marker and membership are dropped
    // (they describe the old cluster), and the key lets the directory seed a new cluster.
    let db = Db::open(data_dir, Options::default())?;
    db.verify()?;
    let raft = db.create_keyspace(RAFT_KEYSPACE)?;
    let stale: Vec<u64> = raft
        .scan(.., usize::MAX)?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| *k != SEED_KEY)
        .collect();
    if !stale.is_empty() {
        raft.delete_many(&stale)?;
    }
    raft.put(SEED_KEY, b"restored")?;
    db.snapshot()?;
    db.close();
    Ok(())
}

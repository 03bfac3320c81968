//! Checkpoints: a directory holding a copy of the engine's durable state (the manifest and the
//! snapshot files it names, hard-linked), which opens as a database of its own and can replace
//! another engine's files. Replication ships them to a node too far behind to catch up from the
//! log (docs/design/cluster.md, "Snapshots").

use std::path::Path;

use crate::{
    db::Db,
    error::IoContext,
    fsutil,
    manifest::{self, Manifest},
    snapshot::{bin_path, data_path},
    Error, Result,
};

impl Db {
    /// Compacts everything written so far into snapshot files ([`Db::snapshot`]) and makes `dest`
    /// (created; must not exist) a checkpoint of them: `dest/MANIFEST` and `dest/snap/…` hard links
    /// to the files the manifest names, taken under the compaction lock so none is deleted
    /// meanwhile; `dest/wal/` empty. Returns the files (relative to `dest`) and the sequence
    /// number the checkpoint covers. `dest` must be on the same file system as the database.
    pub fn checkpoint(&self, dest: &Path) -> Result<(Vec<String>, u64)> {
        self.snapshot()?;
        let inner = &self.inner;
        let _c = inner.compaction_mu.lock();
        let m: Manifest = inner.manifest.lock().clone();
        if dest.exists() {
            return Err(Error::InvalidOption(format!(
                "checkpoint directory {} already exists",
                dest.display()
            )));
        }
        let snap = dest.join("snap");
        std::fs::create_dir_all(&snap).at(&snap)?;
        std::fs::create_dir_all(dest.join("wal")).at(dest)?;
        let mut files = Vec::new();
        for ks in &m.keyspaces {
            let Some(s) = ks.snapshot else { continue };
            for p in [
                bin_path(&inner.snap_dir, ks.id, s.generation),
                data_path(&inner.snap_dir, ks.id, s.generation),
            ] {
                let name = p.file_name().expect("a file name").to_owned();
                let to = snap.join(&name);
                std::fs::hard_link(&p, &to).at(&to)?;
                files.push(format!("snap/{}", name.to_string_lossy()));
            }
        }
        fsutil::write_atomic(&dest.join(manifest::FILE_NAME), &m.encode())?;
        files.push(manifest::FILE_NAME.to_owned());
        fsutil::sync_dir(&snap)?;
        fsutil::sync_dir(dest)?;
        Ok((files, m.covered_seq))
    }
}

/// Replaces the engine files of the database in `data_dir` (not open) with the checkpoint in
/// `src`: the write-ahead log and snapshot files are deleted, the checkpoint's snapshot files
/// hard-linked in, and its manifest written last (atomically). Idempotent: after a crash midway,
/// calling it again finishes the job (the caller keeps `src` until it returns).
pub fn install_checkpoint(data_dir: &Path, src: &Path) -> Result<()> {
    let src_manifest = src.join(manifest::FILE_NAME);
    let bytes = std::fs::read(&src_manifest).at(&src_manifest)?;
    let m = Manifest::decode(&src_manifest, &bytes)?;
    // The checkpoint must hold every file its manifest names, at the recorded sizes.
    for ks in &m.keyspaces {
        let Some(s) = ks.snapshot else { continue };
        for (p, want) in [
            (
                bin_path(&src.join("snap"), ks.id, s.generation),
                s.bin_bytes,
            ),
            (
                data_path(&src.join("snap"), ks.id, s.generation),
                s.data_bytes,
            ),
        ] {
            let len = std::fs::metadata(&p).at(&p)?.len();
            if len != want {
                return Err(Error::Corrupt {
                    file: p,
                    offset: len.min(want),
                    reason: format!("{len} bytes where the manifest records {want}"),
                });
            }
        }
    }
    let manifest_path = data_dir.join(manifest::FILE_NAME);
    if manifest_path.exists() {
        std::fs::remove_file(&manifest_path).at(&manifest_path)?;
    }
    for sub in ["wal", "snap"] {
        let d = data_dir.join(sub);
        std::fs::create_dir_all(&d).at(&d)?;
        for e in std::fs::read_dir(&d).at(&d)? {
            let p = e.at(&d)?.path();
            std::fs::remove_file(&p).at(&p)?;
        }
    }
    let from = src.join("snap");
    let to = data_dir.join("snap");
    for e in std::fs::read_dir(&from).at(&from)? {
        let p = e.at(&from)?.path();
        let dst = to.join(p.file_name().expect("a file name"));
        std::fs::hard_link(&p, &dst).at(&dst)?;
    }
    fsutil::sync_dir(&to)?;
    fsutil::sync_dir(&data_dir.join("wal"))?;
    fsutil::write_atomic(&manifest_path, &bytes)
}

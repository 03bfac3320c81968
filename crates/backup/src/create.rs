//! Making a backup: an engine checkpoint (plus the collections' graph files) in a temporary
//! directory inside the data directory, each file hashed and sent unless the target has it, the
//! manifest written last, the temporary directory removed.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
};

use kyrodb_storage::Db;

use crate::{
    data_key,
    manifest::{FileEntry, Manifest, FORMAT},
    manifest_key, Error, Hasher, IoAt, Result, Target,
};

/// Prefix of the temporary checkpoint directories inside the data directory.
const TMP_PREFIX: &str = ".backup-";

/// What to back up.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    /// The engine.
    pub db: &'a Db,
    /// The collections over it, whose graph files go along (a verified cache: the restored node
    /// checks them against the documents and rebuilds what differs). `None`: indexes are rebuilt
    /// from the documents when the restored node starts.
    pub collections: Option<&'a kyrodb_search::Collections>,
}

/// Where a backup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Taking the engine checkpoint.
    Checkpoint = 0,
    /// Hashing and sending files.
    Sending = 1,
    /// Finished: the manifest is written.
    Done = 2,
    /// Failed; no manifest was written.
    Failed = 3,
}

impl State {
    /// The name reported by the API.
    pub fn name(self) -> &'static str {
        match self {
            State::Checkpoint => "checkpoint",
            State::Sending => "sending",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

/// A backup's progress, readable while it runs (every counter only grows).
#[derive(Debug)]
pub struct Progress {
    state: AtomicU8,
    /// The sequence number covered (0 until the checkpoint is taken).
    pub seq: AtomicU64,
    /// Files in the backup (known after the checkpoint).
    pub files_total: AtomicU64,
    /// Files hashed and, where needed, sent.
    pub files_done: AtomicU64,
    /// Files sent to the target.
    pub files_sent: AtomicU64,
    /// Files the target already held (not sent again).
    pub files_skipped: AtomicU64,
    /// Bytes of all the files.
    pub bytes_total: AtomicU64,
    /// Bytes of the files done.
    pub bytes_done: AtomicU64,
    /// Bytes sent to the target.
    pub bytes_sent: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: AtomicU8::new(State::Checkpoint as u8),
            seq: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            files_sent: AtomicU64::new(0),
            files_skipped: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// The current state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Checkpoint,
            1 => State::Sending,
            2 => State::Done,
            _ => State::Failed,
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }
}

/// Removes the temporary directory on every way out.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                tracing::warn!(dir = %self.0.display(), %e, "backup: temporary checkpoint not removed");
            }
        }
    }
}

/// Makes backup `id` ([`crate::id_for`] of `created_ms`, its start time) of `src` in `target`, reporting
/// through `progress`. Online: writers go on meanwhile; the backup holds exactly the writes up to
/// the checkpoint's sequence number. On failure nothing names the objects already sent (they are
/// reused by the next backup).
pub fn create(
    src: Source<'_>,
    target: &dyn Target,
    id: &str,
    created_ms: u64,
    progress: &Progress,
) -> Result<Manifest> {
    let result = run(src, target, id, created_ms, progress);
    progress.set_state(match result {
        Ok(_) => State::Done,
        Err(_) => State::Failed,
    });
    result
}

fn run(
    src: Source<'_>,
    target: &dyn Target,
    id: &str,
    created_ms: u64,
    progress: &Progress,
) -> Result<Manifest> {
    if !crate::manifest::valid_id(id) {
        return Err(Error::Invalid(format!("bad backup id {id:?}")));
    }
    if target.size(&manifest_key(id))?.is_some() {
        return Err(Error::Invalid(format!(
            "{} already holds a backup {id}",
            target.location()
        )));
    }
    let data_dir = src.db.path().to_path_buf();
    remove_stale_tmp(&data_dir);
    let tmp = TmpDir(data_dir.join(format!("{TMP_PREFIX}{id}")));
    progress.set_state(State::Checkpoint);
    let (_, seq) = src.db.checkpoint(&tmp.0)?;
    progress.seq.store(seq, Ordering::Release);
    if let Some(cs) = src.collections {
        link_graphs(cs, &data_dir, &tmp.0);
    }
    let files = files_under(&tmp.0)?;
    let mut total = 0;
    for (_, p) in &files {
        total += std::fs::metadata(p).at(p)?.len();
    }
    progress
        .files_total
        .store(files.len() as u64, Ordering::Release);
    progress.bytes_total.store(total, Ordering::Release);
    progress.set_state(State::Sending);

    let mut entries = Vec::with_capacity(files.len());
    for (rel, path) in &files {
        let (hash, blocks, bytes) = hash_file(path)?;
        let key = data_key(&hash);
        if target.size(&key)? == Some(bytes) {
            progress.files_skipped.fetch_add(1, Ordering::AcqRel);
        } else {
            target.put_file(&key, path, &|n| {
                progress.bytes_sent.fetch_add(n, Ordering::AcqRel);
            })?;
            progress.files_sent.fetch_add(1, Ordering::AcqRel);
        }
        progress.bytes_done.fetch_add(bytes, Ordering::AcqRel);
        progress.files_done.fetch_add(1, Ordering::AcqRel);
        entries.push(FileEntry {
            path: rel.clone(),
            hash,
            bytes,
            blocks,
        });
    }
    let mut m = Manifest {
        format: FORMAT,
        id: id.to_owned(),
        created_ms,
        seq,
        kyrodb_version: env!("CARGO_PKG_VERSION").to_owned(),
        files: entries,
        checksum: String::new(),
    };
    m.seal();
    // Last: the manifest names only objects that are already whole in the target.
    target.put_bytes(&manifest_key(id), &m.encode())?;
    Ok(m)
}

/// Removes temporary checkpoints a crashed backup left in the data directory.
fn remove_stale_tmp(data_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Writes the collections' graphs and hard-links them into `tmp/search/`. A failure only means the
/// restored node rebuilds those indexes from its documents, so it is logged, not fatal.
fn link_graphs(cs: &kyrodb_search::Collections, data_dir: &Path, tmp: &Path) {
    if let Err(e) = cs.checkpoint() {
        tracing::warn!(%e, "backup: graphs not written; the restored node rebuilds them");
        return;
    }
    let from = data_dir.join("search");
    let Ok(rd) = std::fs::read_dir(&from) else {
        return;
    };
    let to = tmp.join("search");
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".graph") || !crate::manifest::valid_path(&format!("search/{name}")) {
            continue;
        }
        let r = std::fs::create_dir_all(&to)
            .and_then(|()| std::fs::hard_link(e.path(), to.join(&name)));
        if let Err(e) = r {
            tracing::warn!(file = %name, %e, "backup: graph file left out; the restored node rebuilds it");
        }
    }
}

/// Every file under `dir` as (path relative to it with `/`, path), sorted; `MANIFEST` last.
fn files_under(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for sub in ["snap", "search"] {
        let d = dir.join(sub);
        if !d.is_dir() {
            continue;
        }
        for e in std::fs::read_dir(&d).at(&d)? {
            let e = e.at(&d)?;
            let rel = format!("{sub}/{}", e.file_name().to_string_lossy());
            if !crate::manifest::valid_path(&rel) {
                return Err(Error::Invalid(format!(
                    "checkpoint holds a file no backup can name: {rel}"
                )));
            }
            out.push((rel, e.path()));
        }
    }
    out.sort();
    out.push(("MANIFEST".to_owned(), dir.join("MANIFEST")));
    Ok(out)
}

/// (xxh3-128 hex, block hashes, length) of a file, read in 1 MiB chunks.
pub(crate) fn hash_file(path: &Path) -> Result<(String, Vec<String>, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).at(path)?;
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let bytes = h.bytes();
    let (hash, blocks) = h.finish();
    Ok((hash, blocks, bytes))
}

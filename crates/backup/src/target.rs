//! Where backups go: a directory ([`DirTarget`]) or an S3 bucket prefix ([`S3Target`], through the
//! `object_store` crate). Objects are named by relative keys (`data/<hash>`,
//! `backups/<id>/manifest.json`); a put is all or nothing — a reader never sees part of an object.

use std::{
    fs::File,
    io::{Read, Write},
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use object_store::ObjectStoreExt as _;

use crate::{Error, IoAt, Result};

/// Bytes read or sent at a time when streaming a file.
const CHUNK_BYTES: usize = 1 << 20;

/// A place that holds backup objects.
pub trait Target: Send + Sync + std::fmt::Debug {
    /// The target as a user names it (a directory path or `s3://bucket/prefix`).
    fn location(&self) -> String;
    /// The object's size, or `None` when there is no such object.
    fn size(&self, key: &str) -> Result<Option<u64>>;
    /// Writes a small object (all or nothing).
    fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// Writes the content of a local file (streamed; all or nothing); `sent` is told each chunk's
    /// length as it goes out.
    fn put_file(&self, key: &str, path: &Path, sent: &dyn Fn(u64)) -> Result<()>;
    /// Streams an object's bytes to `sink`, chunk by chunk; [`Error::NotFound`] when absent.
    fn read(&self, key: &str, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>;
    /// Keys of the objects whose key starts with `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes an object (absent is fine).
    fn delete(&self, key: &str) -> Result<()>;

    /// A small object's bytes, or `None` when absent.
    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        match self.read(key, &mut |c| {
            out.extend_from_slice(c);
            Ok(())
        }) {
            Ok(()) => Ok(Some(out)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A target as named by a user, parsed but not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A local directory (created when needed).
    Dir(PathBuf),
    /// `s3://bucket/prefix`: the bucket and the key prefix (no leading or trailing `/`; may be
    /// empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
}

impl TargetSpec {
    /// Parses `s3://bucket[/prefix]` or a directory path (`file://` URLs too). Refuses other
    /// schemes, empty names and `..` components.
    pub fn parse(s: &str) -> Result<TargetSpec> {
        let bad = |why: &str| Err(Error::Invalid(format!("backup target {s:?}: {why}")));
        if s.is_empty() {
            return bad("empty");
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                return bad("the bucket name must be 3 to 63 characters of a-z 0-9 . -");
            }
            let prefix = prefix.trim_end_matches('/');
            if prefix
                .split('/')
                .any(|seg| (seg.is_empty() && !prefix.is_empty()) || seg == "." || seg == "..")
            {
                return bad("the prefix has an empty, `.` or `..` segment");
            }
            return Ok(TargetSpec::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if s.contains("://") && !s.starts_with("file://") {
            return bad("only s3:// URLs and directories are supported");
        }
        let p = Path::new(s.strip_prefix("file://").unwrap_or(s));
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return bad("`..` is not allowed in a backup directory");
        }
        Ok(TargetSpec::Dir(p.to_owned()))
    }

    /// The target as a user names it.
    pub fn location(&self) -> String {
        match self {
            TargetSpec::Dir(p) => p.display().to_string(),
            TargetSpec::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            TargetSpec::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// Whether this target lies inside `allowed` (a directory and everything under it, or an S3
    /// prefix and everything under it, segment-wise). Directories compare after resolving
    /// symbolic links of the parts that exist.
    pub fn is_inside(&self, allowed: &TargetSpec) -> bool {
        match (self, allowed) {
            (TargetSpec::Dir(p), TargetSpec::Dir(a)) => {
                p.is_absolute() && a.is_absolute() && resolve(p).starts_with(resolve(a))
            }
            (
                TargetSpec::S3 { bucket, prefix },
                TargetSpec::S3 {
                    bucket: ab,
                    prefix: ap,
                },
            ) => {
                bucket == ab
                    && (ap.is_empty()
                        || prefix == ap
                        || prefix
                            .strip_prefix(ap.as_str())
                            .is_some_and(|r| r.starts_with('/')))
            }
            _ => false,
        }
    }
}

/// `p` with its longest existing ancestor canonicalized (symbolic links resolved), the rest
/// appended as written.
fn resolve(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (existing.file_name(), existing.parent()) {
            (Some(n), Some(parent)) => {
                rest.push(n.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Opens the target `s` names (see [`TargetSpec::parse`]).
pub fn open_target(s: &str) -> Result<Box<dyn Target>> {
    match TargetSpec::parse(s)? {
        TargetSpec::Dir(p) => Ok(Box::new(DirTarget::new(p))),
        TargetSpec::S3 { bucket, prefix } => Ok(Box::new(S3Target::new(&bucket, &prefix)?)),
    }
}

/// Objects as files under a directory: written to a temporary name in the same directory,
/// fsynced, renamed, and the directory fsynced — so an object that exists is whole and durable.
#[derive(Debug)]
pub struct DirTarget {
    root: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl DirTarget {
    /// A target at `root` (created on the first write).
    pub fn new(root: impl Into<PathBuf>) -> DirTarget {
        DirTarget { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let ok = !key.is_empty()
            && key.split('/').all(|s| {
                !s.is_empty() && s != "." && s != ".." && !s.starts_with('.') && !s.contains('\\')
            });
        if !ok {
            return Err(Error::Invalid(format!("bad object key {key:?}")));
        }
        Ok(self.root.join(key))
    }

    /// Writes `fill`'s bytes to `key` through a temporary file, then fsync, rename, fsync dir.
    fn put_with(&self, key: &str, fill: impl FnOnce(&mut File, &Path) -> Result<()>) -> Result<()> {
        let dst = self.path(key)?;
        let dir = dst.parent().expect("a key has a parent").to_path_buf();
        create_dirs_synced(&dir)?;
        let tmp = dir.join(format!(
            ".{}.{}-{}.partial",
            dst.file_name().expect("a file name").to_string_lossy(),
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut f = File::create(&tmp).at(&tmp)?;
            fill(&mut f, &tmp)?;
            f.sync_all().at(&tmp)?;
            drop(f);
            std::fs::rename(&tmp, &dst).at(&dst)?;
            kyrodb_storage::sync_dir(&dir)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Creates `dir` and fsyncs the parent of each directory it created.
fn create_dirs_synced(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut d = dir.to_path_buf();
    while !d.is_dir() {
        missing.push(d.clone());
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p.to_path_buf(),
            _ => break,
        }
    }
    std::fs::create_dir_all(dir).at(dir)?;
    for m in missing.iter().rev() {
        if let Some(parent) = m.parent().filter(|p| !p.as_os_str().is_empty()) {
            kyrodb_storage::sync_dir(parent)?;
        }
    }
    Ok(())
}

impl Target for DirTarget {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let p = self.path(key)?;
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.put_with(key, |f, tmp| f.write_all(bytes).at(tmp))
    }

    fn put_file(&self, key: &str, path: &Path, sent: &dyn Fn(u64)) -> Result<()> {
        self.put_with(key, |f, tmp| {
            let mut src = File::open(path).at(path)?;
            let mut buf = vec![0u8; CHUNK_BYTES];
            loop {
                let n = src.read(&mut buf).at(path)?;
                if n == 0 {
                    return Ok(());
                }
                f.write_all(&buf[..n]).at(tmp)?;
                sent(n as u64);
            }
        })
    }

    fn read(&self, key: &str, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let p = self.path(key)?;
        let mut f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "{}: no object {key}",
                    self.location()
                )))
            }
            Err(e) => return Err(Error::Io { path: p, source: e }),
        };
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = f.read(&mut buf).at(&p)?;
            if n == 0 {
                return Ok(());
            }
            sink(&buf[..n])?;
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        // Start at the prefix's directory (`backups/` need not walk `data/`).
        let start = match prefix.rfind('/') {
            Some(i) => self.path(&prefix[..i])?,
            None => self.root.clone(),
        };
        let mut stack = vec![start];
        while let Some(d) = stack.pop() {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Io { path: d, source: e }),
            };
            for e in rd {
                let e = e.at(&d)?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // temporary files of puts in progress (or of a crashed one)
                }
                let p = e.path();
                if e.file_type().at(&p)?.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p
                    .strip_prefix(&self.root)
                    .expect("under the root")
                    .to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/");
                if rel.starts_with(prefix) {
                    out.push(rel);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }
}

/// Objects in an S3 bucket under a prefix, through `object_store`'s `AmazonS3`. Credentials and
/// endpoint come from the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` (an S3-compatible
/// server; path-style requests are used then), `AWS_ALLOW_HTTP=true` (plain-HTTP endpoints).
/// A single put is atomic in S3; files above 16 MiB go up as a multipart upload, which becomes
/// visible only when completed.
pub struct S3Target {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    prefix: String,
    location: String,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("location", &self.location)
            .finish()
    }
}

/// Files up to this size are sent in one PUT; larger ones as a multipart upload.
const SINGLE_PUT_BYTES_MAX: u64 = 16 << 20;
/// Part size of multipart uploads.
const PART_BYTES: usize = 8 << 20;

impl S3Target {
    /// Opens `s3://bucket/prefix` with the settings from the environment (see the type).
    pub fn new(bucket: &str, prefix: &str) -> Result<S3Target> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        // reqwest's rustls runs on the process-wide provider: ring, like the rest of KyroDB
        // (deprecated by rustls for lacking post-quantum key exchange: see server/src/tls.rs).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let location = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT").is_some()
        {
            b = b.with_virtual_hosted_style_request(false);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            b = b.with_config(AmazonS3ConfigKey::Region, "us-east-1");
        }
        let store = b.build().map_err(|e| Error::Target {
            target: location.clone(),
            key: String::new(),
            message: e.to_string(),
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                path: PathBuf::from("<tokio runtime>"),
                source: e,
            })?;
        Ok(S3Target {
            store: std::sync::Arc::new(store),
            prefix: prefix.to_owned(),
            location,
            rt,
        })
    }

    fn path(&self, key: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(key)
        } else {
            object_store::path::Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn err(&self, key: &str, e: impl std::fmt::Display) -> Error {
        Error::Target {
            target: self.location.clone(),
            key: key.to_owned(),
            message: e.to_string(),
        }
    }
}

impl Target for S3Target {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.rt.block_on(self.store.head(&self.path(key))) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let payload = object_store::PutPayload::from(bytes::Bytes::copy_from_slice(bytes));
        self.rt
            .block_on(self.store.put(&self.path(key), payload))
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    fn put_file(&self, key: &str, path: &Path, sent: &dyn Fn(u64)) -> Result<()> {
        let len = std::fs::metadata(path).at(path)?.len();
        if len <= SINGLE_PUT_BYTES_MAX {
            let bytes = std::fs::read(path).at(path)?;
            self.put_bytes(key, &bytes)?;
            sent(bytes.len() as u64);
            return Ok(());
        }
        let p = self.path(key);
        self.rt.block_on(async {
            let upload = self
                .store
                .put_multipart(&p)
                .await
                .map_err(|e| self.err(key, e))?;
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let result: Result<()> = async {
                let mut src = File::open(path).at(path)?;
                let mut buf = vec![0u8; CHUNK_BYTES];
                loop {
                    let n = src.read(&mut buf).at(path)?;
                    if n == 0 {
                        break;
                    }
                    // At most two parts in flight: memory stays bounded whatever the file size.
                    w.wait_for_capacity(2).await.map_err(|e| self.err(key, e))?;
                    w.write(&buf[..n]);
                    sent(n as u64);
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => w.finish().await.map(|_| ()).map_err(|e| self.err(key, e)),
                Err(e) => {
                    let _ = w.abort().await;
                    Err(e)
                }
            }
        })
    }

    fn read(&self, key: &str, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        use futures_util::StreamExt;
        self.rt.block_on(async {
            let r = match self.store.get(&self.path(key)).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(Error::NotFound(format!(
                        "{}: no object {key}",
                        self.location
                    )))
                }
                Err(e) => return Err(self.err(key, e)),
            };
            let mut s = r.into_stream();
            while let Some(chunk) = s.next().await {
                sink(&chunk.map_err(|e| self.err(key, e))?)?;
            }
            Ok(())
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        use futures_util::StreamExt;
        let root = if self.prefix.is_empty() {
            None
        } else {
            Some(object_store::path::Path::from(self.prefix.as_str()))
        };
        // List under the prefix's directory only (`backups/` need not page through `data/`).
        let base = match prefix.rfind('/') {
            Some(i) => Some(self.path(&prefix[..i])),
            None => root.clone(),
        };
        let mut out = Vec::new();
        self.rt.block_on(async {
            let mut s = self.store.list(base.as_ref());
            while let Some(m) = s.next().await {
                let m = m.map_err(|e| self.err(prefix, e))?;
                let full = m.location.to_string();
                let rel = match &root {
                    Some(_) => full
                        .strip_prefix(&format!("{}/", self.prefix))
                        .unwrap_or(&full)
                        .to_owned(),
                    None => full,
                };
                if rel.starts_with(prefix) {
                    out.push(rel);
                }
            }
            Ok::<(), Error>(())
        })?;
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        match self.rt.block_on(self.store.delete(&self.path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_allowed_prefixes_match_whole_segments() {
        let s3 = |s: &str| TargetSpec::parse(s).unwrap();
        assert_eq!(
            s3("s3://bkt/a/b/"),
            TargetSpec::S3 {
                bucket: "bkt".into(),
                prefix: "a/b".into()
            }
        );
        assert!(TargetSpec::parse("s3://B/x").is_err());
        assert!(TargetSpec::parse("s3://bkt/a/../b").is_err());
        assert!(TargetSpec::parse("http://x/y").is_err());
        assert!(TargetSpec::parse("/a/../b").is_err());
        assert!(s3("s3://bkt/a/b").is_inside(&s3("s3://bkt/a")));
        assert!(s3("s3://bkt/a").is_inside(&s3("s3://bkt/a")));
        assert!(s3("s3://bkt/a").is_inside(&s3("s3://bkt")));
        assert!(!s3("s3://bkt/ab").is_inside(&s3("s3://bkt/a")));
        assert!(!s3("s3://other/a").is_inside(&s3("s3://bkt/a")));
        let d = tempfile::tempdir().unwrap();
        let allowed = TargetSpec::Dir(d.path().join("backups"));
        let inside = TargetSpec::Dir(d.path().join("backups/nightly/x"));
        assert!(inside.is_inside(&allowed));
        assert!(!TargetSpec::Dir(d.path().join("backups2")).is_inside(&allowed));
        assert!(!TargetSpec::Dir("relative/backups".into()).is_inside(&allowed));
        assert!(!s3("s3://bkt/a").is_inside(&allowed));
        // A symbolic link inside the allowed directory that leads out of it is out.
        std::fs::create_dir_all(d.path().join("backups")).unwrap();
        std::os::unix::fs::symlink("/tmp", d.path().join("backups/escape")).unwrap();
        assert!(!TargetSpec::Dir(d.path().join("backups/escape/x")).is_inside(&allowed));
    }

    #[test]
    fn a_dir_target_writes_whole_objects_and_lists_them() {
        let d = tempfile::tempdir().unwrap();
        let t = DirTarget::new(d.path().join("t"));
        assert_eq!(t.size("data/x").unwrap(), None);
        t.put_bytes("data/x", b"hello").unwrap();
        assert_eq!(t.size("data/x").unwrap(), Some(5));
        let src = d.path().join("src");
        std::fs::write(&src, vec![7u8; 3 << 20]).unwrap();
        let sent = AtomicU64::new(0);
        t.put_file("data/y", &src, &|n| {
            sent.fetch_add(n, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(sent.load(Ordering::Relaxed), 3 << 20);
        assert_eq!(t.get_bytes("data/y").unwrap().unwrap(), vec![7u8; 3 << 20]);
        // A leftover temporary file (a crashed put) is not an object.
        std::fs::write(d.path().join("t/data/.z.1-1.partial"), b"half").unwrap();
        assert_eq!(t.list("data/").unwrap(), vec!["data/x", "data/y"]);
        assert!(matches!(
            t.read("data/none", &mut |_| Ok(())),
            Err(Error::NotFound(_))
        ));
        assert!(t.put_bytes("../escape", b"x").is_err());
        t.delete("data/x").unwrap();
        t.delete("data/x").unwrap();
        assert_eq!(t.list("").unwrap(), vec!["data/y"]);
    }
}

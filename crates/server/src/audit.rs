//! The audit log: every admin action (keys, collections and keyspaces created or dropped,
//! snapshots, index builds, warmups, re-embeds, cluster changes, reads of the audit log itself) as
//! one JSON line — who (key id and where the key comes from, or none for a missing/unknown token),
//! what (method, route, path), when, from where, and the outcome (the status; `ok`, `denied` or
//! `failed`). Refused attempts are logged too, rate-limited so that refusals cannot become a stream
//! of disk syncs: those without a known key (401) at most once a second
//! (`kyrodb_audit_anonymous_skipped_total` counts the rest), those of a known key (403) at most
//! once a second for each key and route (`kyrodb_audit_denied_skipped_total`); requests refused by
//! the per-IP rate limit are not.
//!
//! `<data dir>/audit/audit.log`, appended and fsynced per entry (admin actions are rare); at
//! [`ROTATE_BYTES`] it becomes `audit.log.1` (replacing the previous one), so the log holds the
//! last 8–16 MiB of entries. Each node logs what it was asked; a torn last line after a crash is
//! skipped when read. `GET /v1/audit` reads it.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use serde::{Deserialize, Serialize};

use crate::auth::Who;

/// The log is rotated when it reaches this size.
pub const ROTATE_BYTES: u64 = 8 << 20;
/// Longest path recorded (the rest is cut).
const PATH_CHARS_MAX: usize = 200;

/// One entry.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The key's id (`config:<16 hex>` for a `KYRODB_API_KEYS` key), or null: no token, an
    /// unknown one, or a server without keys.
    pub who: Option<String>,
    /// `config` or `key`; null with `who`.
    pub source: Option<String>,
    /// The client's address.
    pub remote: Option<String>,
    /// The HTTP method (`GET`, `POST`, `DELETE`, ...).
    pub method: String,
    /// The route's template (`/v2/collections/{name}`).
    pub route: String,
    /// The path asked for.
    pub path: String,
    /// The HTTP status answered.
    pub status: u16,
    /// `ok` (2xx), `denied` (401, 403) or `failed`.
    pub outcome: String,
}

/// The log file.
#[derive(Debug)]
pub struct Audit {
    dir: PathBuf,
    file: Mutex<Option<File>>,
    /// Unix second of the last refusal logged, per (key id, route); `("", "")` for every refusal
    /// without a known key. Cleared when it passes [`REFUSAL_SLOTS_MAX`].
    refusals_s: Mutex<std::collections::HashMap<(String, String), u64>>,
}

/// Distinct (key, route) pairs whose last refusal time is kept.
const REFUSAL_SLOTS_MAX: usize = 10_000;

impl Audit {
    /// The log in `dir` (created when the first entry is written).
    pub fn new(dir: &Path) -> Arc<Audit> {
        Arc::new(Audit {
            dir: dir.to_owned(),
            file: Mutex::new(None),
            refusals_s: Mutex::new(Default::default()),
        })
    }

    /// Whether a refusal of `who` on `route` may be logged now: at most one per second for each
    /// pair (a refusal without a known key is `("", "")`: one per second for all of them).
    fn refusal_due(&self, who: &str, route: &str) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut last = self.refusals_s.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= REFUSAL_SLOTS_MAX {
            last.clear();
        }
        last.insert((who.to_owned(), route.to_owned()), now) != Some(now)
    }

    fn path(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// Appends one entry durably (write + fsync).
    pub fn append(&self, e: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut g = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(self.path())?;
            // A crash mid-append left a partial line: end it, so the next entry stands alone.
            let len = f.metadata()?.len();
            if len > 0 {
                use std::io::{Read, Seek, SeekFrom};
                let mut last = [0u8];
                f.seek(SeekFrom::Start(len - 1))?;
                f.read_exact(&mut last)?;
                if last[0] != b'\n' {
                    f.write_all(b"\n")?;
                }
            }
            *g = Some(f);
        }
        let f = g.as_mut().expect("opened above");
        if f.metadata()?.len() + line.len() as u64 > ROTATE_BYTES {
            std::fs::rename(self.path(), self.dir.join("audit.log.1"))?;
            *f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path())?;
            kyrodb_storage::sync_dir(&self.dir).map_err(std::io::Error::other)?;
        }
        f.write_all(&line)?;
        f.sync_data()
    }

    /// The newest `limit` entries at or after `since_ms`, oldest first.
    pub fn read(&self, since_ms: i64, limit: usize) -> std::io::Result<Vec<Entry>> {
        // Appends wait meanwhile, so a rotation cannot slip between the two reads.
        let _g = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for p in [self.dir.join("audit.log.1"), self.path()] {
            let text = match std::fs::read(&p) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.extend(
                text.split(|b| *b == b'\n')
                    .filter_map(|l| serde_json::from_slice::<Entry>(l).ok())
                    .filter(|e| e.at_ms >= since_ms),
            );
        }
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }
}

/// The middleware on admin routes: runs the request, then logs it with its outcome. A failure to
/// write the log is logged (error) and counted, and the answer still goes out.
pub async fn track(State(audit): State<Arc<Audit>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let path = crate::error::cut_echo(req.uri().path(), PATH_CHARS_MAX);
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let resp = next.run(req).await;
    let who = resp.extensions().get::<Who>();
    let status = resp.status();
    // Refusals cost their sender nothing, so they are rate-limited before they become disk syncs:
    // without a known key (no token, an unknown one) at most one per second per node; by a known
    // key (403) at most one per second for each key and route. The rest are counted.
    if matches!(status.as_u16(), 401 | 403) {
        let (id, r) = who.map_or(("", ""), |w| (w.id.as_str(), route.as_str()));
        if !audit.refusal_due(id, r) {
            let skipped = if who.is_some() {
                "kyrodb_audit_denied_skipped_total"
            } else {
                "kyrodb_audit_anonymous_skipped_total"
            };
            metrics::counter!(skipped).increment(1);
            return resp;
        }
    }
    let e = Entry {
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        who: who.map(|w| w.id.clone()),
        source: who.map(|w| {
            match w.source {
                crate::keys::Source::Config => "config",
                crate::keys::Source::Key => "key",
            }
            .to_owned()
        }),
        remote,
        method,
        route,
        path,
        status: status.as_u16(),
        outcome: if status.is_success() {
            "ok"
        } else if status.as_u16() == 401 || status.as_u16() == 403 {
            "denied"
        } else {
            "failed"
        }
        .to_owned(),
    };
    let a = audit.clone();
    let written = tokio::task::spawn_blocking(move || a.append(&e)).await;
    if !matches!(written, Ok(Ok(()))) {
        metrics::counter!(crate::metrics::AUDIT_WRITE_FAILURES_TOTAL.name).increment(1);
        tracing::error!(dir = %audit.dir.display(), "could not write the audit log: {written:?}");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ms: i64) -> Entry {
        Entry {
            at_ms,
            who: Some("abc".into()),
            source: Some("key".into()),
            remote: None,
            method: "POST".into(),
            route: "/v1/keys".into(),
            path: "/v1/keys".into(),
            status: 200,
            outcome: "ok".into(),
        }
    }

    #[test]
    fn entries_come_back_newest_last_and_a_torn_line_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let a = Audit::new(&d.path().join("audit"));
        assert!(a.read(0, 10).unwrap().is_empty());
        for t in 1..=5 {
            a.append(&entry(t)).unwrap();
        }
        // A crash mid-append leaves a partial line.
        let mut f = OpenOptions::new().append(true).open(a.path()).unwrap();
        f.write_all(b"{\"at_ms\":6,\"wh").unwrap();
        let got: Vec<i64> = a.read(0, 3).unwrap().iter().map(|e| e.at_ms).collect();
        assert_eq!(got, vec![3, 4, 5]);
        let got: Vec<i64> = a.read(4, 10).unwrap().iter().map(|e| e.at_ms).collect();
        assert_eq!(got, vec![4, 5]);
        // After a restart the next entry is whole.
        let a = Audit::new(&d.path().join("audit"));
        a.append(&entry(7)).unwrap();
        let got: Vec<i64> = a.read(0, 2).unwrap().iter().map(|e| e.at_ms).collect();
        assert_eq!(got, vec![5, 7]);
    }
}

//! Backups (`kyrodb-backup`): `POST /v1/backups` starts one into a directory or S3 prefix listed in
//! `backup_dirs` (none by default: a leaked admin token cannot make the server write anywhere), one
//! at a time, on a thread of its own; `GET /v1/backups/{id}` follows it.

use crate::error::ErrorCode;
use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc, Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use kyrodb_backup::{Progress, TargetSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{extract::JsonBody, AppState};
use crate::error::{ApiError, ErrorBody};

/// Finished backups remembered for `GET /v1/backups/{id}`.
const FINISHED_KEPT: usize = 32;

/// The backups this server runs: where it may write, and the jobs.
#[derive(Debug, Default)]
pub struct Backups {
    allowed: Vec<TargetSpec>,
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

#[derive(Debug)]
struct Job {
    id: String,
    to: String,
    started_ms: u64,
    progress: Progress,
    finished: Mutex<Option<Finished>>,
}

/// When a backup ended (Unix ms) and, when it failed, the error's code and message.
type Finished = (u64, Option<(&'static str, String)>);

impl Backups {
    /// `allowed`: the directories and S3 prefixes backups may go to (and below).
    pub fn new(allowed: Vec<TargetSpec>) -> Backups {
        Backups {
            allowed,
            jobs: Mutex::default(),
        }
    }
}

/// The lock, whether or not a holder panicked (the data is counters and a slot: always usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `POST /v1/backups`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    /// An absolute directory path or `s3://bucket/prefix`, inside one of the server's
    /// `backup_dirs` (`--backup-dirs`, `KYRODB_BACKUP_DIRS`).
    #[schema(min_length = 1)]
    #[serde(deserialize_with = "de_to")]
    pub to: String,
}

/// `to` as a string, or an error naming the field.
fn de_to<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    String::deserialize(d).map_err(|e| D::Error::custom(format!("to: {e}")))
}

/// Why a backup failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupFailure {
    /// `backup_target_failed`, `backup_io`, `engine`, ...
    pub code: String,
    /// What went wrong, for humans.
    pub message: String,
}

/// A backup's state and progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupStatus {
    /// The backup's id (its UTC start time), the name of its manifest in the target.
    pub id: String,
    /// The target.
    pub to: String,
    /// `checkpoint`, `sending`, `done` or `failed`.
    pub state: String,
    /// Every write up to this sequence number is in the backup, and no later one (null until the
    /// engine checkpoint is taken).
    pub seq: Option<u64>,
    /// Files in the backup (0 until the checkpoint is taken).
    pub files_total: u64,
    /// Files hashed and, where needed, sent.
    pub files_done: u64,
    /// Files sent to the target.
    pub files_sent: u64,
    /// Files the target already held (not sent again).
    pub files_skipped: u64,
    /// Bytes of all the files.
    pub bytes_total: u64,
    /// Bytes of the files done.
    pub bytes_done: u64,
    /// Bytes sent to the target.
    pub bytes_sent: u64,
    /// Unix milliseconds.
    pub started_ms: u64,
    /// When the backup finished (done or failed), in Unix milliseconds; null while it runs.
    pub finished_ms: Option<u64>,
    /// Why the backup failed; null unless it did.
    pub error: Option<BackupFailure>,
}

impl Job {
    fn status(&self) -> BackupStatus {
        let p = &self.progress;
        let finished = lock(&self.finished).clone();
        use kyrodb_backup::State;
        // Done or failed only once `finished` is set (so a client that saw "done" may start the
        // next backup at once).
        let state = match (&finished, p.state()) {
            (Some((_, None)), _) => State::Done,
            (Some((_, Some(_))), _) => State::Failed,
            (None, State::Done | State::Failed) => State::Sending,
            (None, s) => s,
        };
        let seq = p.seq.load(Ordering::Acquire);
        BackupStatus {
            id: self.id.clone(),
            to: self.to.clone(),
            state: state.name().to_owned(),
            // Known once the checkpoint is taken (it always holds at least the engine MANIFEST).
            seq: (p.files_total.load(Ordering::Acquire) > 0).then_some(seq),
            files_total: p.files_total.load(Ordering::Acquire),
            files_done: p.files_done.load(Ordering::Acquire),
            files_sent: p.files_sent.load(Ordering::Acquire),
            files_skipped: p.files_skipped.load(Ordering::Acquire),
            bytes_total: p.bytes_total.load(Ordering::Acquire),
            bytes_done: p.bytes_done.load(Ordering::Acquire),
            bytes_sent: p.bytes_sent.load(Ordering::Acquire),
            started_ms: self.started_ms,
            finished_ms: finished.as_ref().map(|f| f.0),
            error: finished
                .and_then(|f| f.1)
                .map(|(code, message)| BackupFailure {
                    code: code.to_owned(),
                    message,
                }),
        }
    }
}

/// Starts a backup of this node (engine checkpoint at one sequence number, plus the collections'
/// graph files) into `to`; answers at once (202) with the backup's id — follow it with
/// `GET /v1/backups/{id}`. Files the target already holds are not sent again.
#[utoipa::path(post, path = "/v1/backups", tag = "admin", request_body = CreateBackup,
    responses((status = 202, body = BackupStatus),
        (status = 400, description = "`to` is not an absolute directory or s3://bucket/prefix", body = ErrorBody),
        (status = 403, description = "`to` is not inside the server's backup_dirs (backup_dir_not_allowed)", body = ErrorBody),
        (status = 409, description = "a backup is running (backup_in_progress)", body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<CreateBackup>,
) -> Result<Response, ApiError> {
    let spec = TargetSpec::parse(&req.to)
        .map_err(|e| ApiError::of(ErrorCode::InvalidBackupTarget, format!("to: {e}")))?;
    if let TargetSpec::Dir(p) = &spec {
        if !p.is_absolute() {
            return Err(ApiError::of(
                ErrorCode::InvalidBackupTarget,
                format!("to: {:?} is not an absolute path", req.to),
            ));
        }
    }
    let b = &s.backups;
    if !b.allowed.iter().any(|a| spec.is_inside(a)) {
        return Err(ApiError::of(
            ErrorCode::BackupDirNotAllowed,
            format!(
                "to: {} is not inside a directory or prefix of the server's backup_dirs ({})",
                spec.location(),
                if b.allowed.is_empty() {
                    "none configured: start the server with --backup-dirs or KYRODB_BACKUP_DIRS"
                        .to_owned()
                } else {
                    b.allowed
                        .iter()
                        .map(TargetSpec::location)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ));
    }
    let job = {
        let mut jobs = lock(&b.jobs);
        if let Some(running) = jobs.iter().find(|j| lock(&j.finished).is_none()) {
            return Err(ApiError::of(
                ErrorCode::BackupInProgress,
                format!("backup {} is running; one backup at a time", running.id),
            ));
        }
        // Ids are start times to the millisecond; one backup at a time keeps them distinct here.
        let mut started_ms = now_ms();
        if let Some(last) = jobs.back() {
            started_ms = started_ms.max(last.started_ms + 1);
        }
        let job = Arc::new(Job {
            id: kyrodb_backup::id_for(started_ms),
            to: spec.location(),
            started_ms,
            progress: Progress::default(),
            finished: Mutex::new(None),
        });
        while jobs.len() >= FINISHED_KEPT {
            jobs.pop_front();
        }
        jobs.push_back(job.clone());
        job
    };
    let (db, collections, job2) = (s.db.clone(), s.collections.clone(), job.clone());
    // A thread of its own, not the blocking pool: the S3 client runs its own runtime, which
    // cannot start inside one of tokio's threads.
    let spawned = std::thread::Builder::new()
        .name("kyrodb-backup".into())
        .spawn(move || run(&db, &collections, &job2));
    if let Err(e) = spawned {
        *lock(&job.finished) = Some((now_ms(), Some(("internal", e.to_string()))));
        return Err(ApiError::internal(format!("backup thread: {e}")));
    }
    Ok((StatusCode::ACCEPTED, Json(job.status())).into_response())
}

fn run(db: &kyrodb_storage::Db, collections: &kyrodb_search::Collections, job: &Job) {
    // A panic must still end the job (else every later backup would be 409 for good).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        attempt(db, collections, job)
    }))
    .unwrap_or_else(|_| {
        Err(kyrodb_backup::Error::Invalid(
            "the backup thread panicked".into(),
        ))
    });
    finish(job, result);
}

fn attempt(
    db: &kyrodb_storage::Db,
    collections: &kyrodb_search::Collections,
    job: &Job,
) -> kyrodb_backup::Result<kyrodb_backup::Manifest> {
    kyrodb_backup::open_target(&job.to).and_then(|t| {
        kyrodb_backup::create(
            kyrodb_backup::Source {
                db,
                collections: Some(collections),
            },
            t.as_ref(),
            &job.id,
            job.started_ms,
            &job.progress,
        )
    })
}

fn finish(job: &Job, result: kyrodb_backup::Result<kyrodb_backup::Manifest>) {
    let sent = job.progress.bytes_sent.load(Ordering::Acquire);
    metrics::counter!(crate::metrics::BACKUP_SENT_BYTES_TOTAL.name).increment(sent);
    let outcome = match &result {
        Ok(m) => {
            tracing::info!(id = %job.id, to = %job.to, seq = m.seq, files = m.files.len(), sent, "backup done");
            None
        }
        Err(e) => {
            job.progress.set_state(kyrodb_backup::State::Failed);
            tracing::warn!(id = %job.id, to = %job.to, %e, "backup failed");
            Some((e.code(), e.to_string()))
        }
    };
    metrics::counter!(crate::metrics::BACKUPS_TOTAL.name, "outcome" => if outcome.is_none() { "done" } else { "failed" })
        .increment(1);
    *lock(&job.finished) = Some((now_ms(), outcome));
}

/// A backup this server ran or runs: state, sequence number, files and bytes done and sent.
#[utoipa::path(get, path = "/v1/backups/{id}", tag = "admin",
    params(("id" = String, Path, description = "the id POST /v1/backups answered")),
    responses((status = 200, body = BackupStatus),
        (status = 404, description = "no such backup on this server (no_such_backup)", body = ErrorBody)))]
pub async fn status(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BackupStatus>, ApiError> {
    let jobs = lock(&s.backups.jobs);
    jobs.iter()
        .find(|j| j.id == id)
        .map(|j| Json(j.status()))
        .ok_or_else(|| {
            ApiError::of(
                ErrorCode::NoSuchBackup,
                format!(
                    "no backup {} on this server (it keeps the last {FINISHED_KEPT})",
                    crate::error::cut_echo(&id, 64)
                ),
            )
        })
}

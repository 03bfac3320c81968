//! Re-embed jobs: changing an embedded vector field's model (or making a field of client vectors an
//! embedded one) recomputes every stored document's vector from its source text.
//!
//! The job's switch is one durable catalog write: the field's new `embed` spec and the job record
//! (state, cursor, counts) together, so from then on new writes and text queries use the new model.
//! The job then walks the collection's keyspace in key order, a page at a time; each page's
//! documents (each conditional on the sequence number it was read at) and the job record with the
//! cursor advanced past the page are one atomic engine write. A crash loses at most the page in
//! flight: the next start finds the job `running` in the catalog and resumes after its cursor.
//! The embedding itself is a function the server supplies (this crate knows nothing of models).

use std::{
    ops::Bound,
    sync::{atomic::Ordering, Arc, Weak},
    time::{Duration, Instant},
};

use kyrodb_storage::{Condition, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::{collection::Collection, doc::Document, manager::Shared, Error};

/// Documents per page (one atomic write each).
pub const REEMBED_PAGE: usize = 32;

/// Attempts at a page whose documents concurrent writers keep changing, before the conflicting
/// document is left to its writer (who writes it under the new spec).
const PAGE_ATTEMPTS: usize = 16;

/// Why an embedding call failed.
#[derive(Debug, Clone)]
pub enum EmbedFailure {
    /// Worth retrying after a moment (the embedder is busy).
    Retry(String),
    /// The embedder is shutting down: the job stops and resumes at the next start.
    Stopped(String),
    /// Will not succeed (the job fails with this message).
    Fatal(String),
}

/// Embeds texts, one vector per text, in order.
pub type EmbedFn =
    Arc<dyn Fn(Vec<String>) -> std::result::Result<Vec<Vec<f32>>, EmbedFailure> + Send + Sync>;

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Walking the documents (or waiting to resume).
    Running,
    /// Every document was re-embedded.
    Done,
    /// Stopped for good; `error` says why.
    Failed,
    /// Only in a [`JobView`], never stored: a running job waiting (`paused` says why).
    Paused,
}

/// A re-embed job's durable record (in the collection's catalog entry) and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReembedJob {
    /// The vector field.
    pub field: String,
    /// The model it is re-embedded with.
    pub model: String,
    /// The text field embedded.
    pub source: String,
    /// Running, done or failed.
    pub state: JobState,
    /// The last engine key done (the walk resumes after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
    /// Documents walked so far (re-embedded, cleared or left to a concurrent writer).
    pub done: u64,
    /// Live documents when the job started.
    pub total: u64,
    /// Documents whose vector was removed: no source text, or the document would outgrow the
    /// value limit with it.
    #[serde(default)]
    pub cleared: u64,
    /// Documents left to a concurrent writer that kept changing them.
    #[serde(default)]
    pub left_to_writers: u64,
    /// When it started (epoch ms).
    pub started_ms: i64,
    /// When it finished (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Restarts it resumed after.
    #[serde(default)]
    pub resumed: u32,
}

impl ReembedJob {
    /// The job as `GET /v2/collections/{name}` shows it (`paused` says why a running job waits).
    pub fn to_json(&self, paused: Option<&str>) -> serde_json::Value {
        serde_json::to_value(self.view(paused)).expect("jobs serialise")
    }

    /// Whether this record of a job should replace `current` in memory: another job (field or
    /// start differs) always does; for the same job, a finished record beats a running one and,
    /// between running ones, more progress wins. The catalog follower mirrors records
    /// asynchronously, so without this rule a page's stale "running" record mirrored after the
    /// job's "done" was set would show the finished job running again (and refuse a new one).
    pub fn supersedes(&self, current: &ReembedJob) -> bool {
        if self.field != current.field || self.started_ms != current.started_ms {
            return true;
        }
        let finished = |j: &ReembedJob| j.state != JobState::Running;
        match (finished(self), finished(current)) {
            (true, false) => true,
            (false, true) => false,
            _ => self.done >= current.done,
        }
    }

    /// The job with its progress and times for people (`paused` says why a running job waits).
    pub fn view(&self, paused: Option<&str>) -> JobView {
        let mut job = self.clone();
        let paused = match (self.state, paused) {
            (JobState::Running, Some(p)) => {
                job.state = JobState::Paused;
                Some(p.to_owned())
            }
            _ => None,
        };
        JobView {
            progress: if self.total == 0 {
                1.0
            } else {
                (self.done as f64 / self.total as f64).min(1.0)
            },
            started_at: crate::doc::format_datetime(self.started_ms),
            finished_at: self.finished_ms.map(crate::doc::format_datetime),
            paused,
            job,
        }
    }
}

/// A re-embed job as the API shows it (`POST …/reembed`'s 202, the collection's info).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// The durable record (`state` reads `paused` while a running job waits).
    #[serde(flatten)]
    pub job: ReembedJob,
    /// `done / total`, 0..=1.
    pub progress: f64,
    /// `started_ms` as RFC 3339.
    pub started_at: String,
    /// `finished_ms` as RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why a running job waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

/// One page's outcome.
enum Page {
    /// Written; the job record advanced.
    Written,
    /// No documents after the cursor: the job is done.
    End,
    /// Stop now (closing, dropped, embedder stopped); the job resumes at the next start.
    Stop,
}

/// Runs a job until done, failed or stopped. Progress is durable after every page.
pub(crate) fn run(shared: Weak<Shared>, c: Arc<Collection>, embed: EmbedFn) {
    let started = Instant::now();
    let mut walked_here: u64 = 0;
    let mut page = REEMBED_PAGE;
    let mut attempts = 0;
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.is_closing() || c.dropped.load(Ordering::Acquire) {
            return;
        }
        let rate = s.opts.reembed_docs_per_s;
        if rate > 0 {
            // Paced: wait until the docs done so far fit the rate (woken early by close).
            let due = Duration::from_secs_f64(walked_here as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                s.sleep_unless_closing(wait);
                continue;
            }
        }
        let before = c.job().map_or(0, |j| j.done);
        match step(&s, &c, &embed, page, attempts >= PAGE_ATTEMPTS) {
            Ok(Page::Written) => {
                walked_here += c.job().map_or(0, |j| j.done).saturating_sub(before);
                page = REEMBED_PAGE;
                attempts = 0;
            }
            Ok(Page::End) => {
                tracing::info!(collection = c.name(), "re-embed job done");
                return;
            }
            Ok(Page::Stop) => return,
            Err(StepError::Conflict) => {
                // Concurrent writers: retry with fresh reads, one document at a time once retries pile up.
                attempts += 1;
                if attempts >= PAGE_ATTEMPTS / 2 {
                    page = 1;
                }
            }
            Err(StepError::Retry(why)) => {
                c.set_paused(Some(why));
                s.sleep_unless_closing(Duration::from_millis(200));
            }
            Err(StepError::Fatal(why)) => {
                tracing::warn!(collection = c.name(), %why, "re-embed job failed");
                let _ = finish(&s, &c, JobState::Failed, Some(why));
                return;
            }
        }
    }
}

enum StepError {
    Conflict,
    Retry(String),
    Fatal(String),
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        match e {
            Error::Busy { .. } | Error::MemoryBudget { .. } => StepError::Retry(e.to_string()),
            _ => StepError::Fatal(e.to_string()),
        }
    }
}

/// Re-embeds the page after the cursor. `give_way`: the first document conflicts again and again;
/// skip it (its writer writes it under the new spec).
fn step(
    s: &Shared,
    c: &Collection,
    embed: &EmbedFn,
    page: usize,
    give_way: bool,
) -> std::result::Result<Page, StepError> {
    let Some(mut job) = c.job() else {
        return Ok(Page::Stop);
    };
    let after = job.cursor.map_or(Bound::Unbounded, Bound::Excluded);
    let keys: Vec<u64> = c
        .keyspace()
        .scan((after, Bound::Unbounded), page)
        .map_err(Error::from)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let Some(&last) = keys.last() else {
        finish(s, c, JobState::Done, None)?;
        return Ok(Page::End);
    };
    let schema = c.schema();
    let Some(spec) = schema.vectors.get(&job.field) else {
        return Err(StepError::Fatal(format!(
            "the field {:?} is no longer in the schema",
            job.field
        )));
    };
    let mut entries: Vec<(u64, u64, Document)> = Vec::with_capacity(keys.len());
    for &key in &keys {
        if give_way && key == keys[0] {
            job.left_to_writers += 1;
            continue;
        }
        let Some(e) = c.keyspace().get_entry(key).map_err(Error::from)? else {
            continue; // deleted since the scan
        };
        let doc = Document::decode(&e.value, &schema).map_err(|err| {
            StepError::Fatal(format!(
                "stored document {key} of collection {:?}: {err}",
                c.name()
            ))
        })?;
        entries.push((key, e.seq, doc));
    }
    let texts: Vec<String> = entries
        .iter()
        .filter_map(|(_, _, d)| d.text.get(&job.source).cloned())
        .collect();
    let vectors = if texts.is_empty() {
        Vec::new()
    } else {
        match embed(texts) {
            Ok(v) => v,
            Err(EmbedFailure::Retry(m)) => return Err(StepError::Retry(m)),
            Err(EmbedFailure::Stopped(_)) => return Ok(Page::Stop),
            Err(EmbedFailure::Fatal(m)) => return Err(StepError::Fatal(m)),
        }
    };
    c.set_paused(None);
    let mut vectors = vectors.into_iter();
    let mut batch = WriteBatch::new();
    let mut grows = 0u64;
    for (key, seq, mut doc) in entries {
        let had = doc.vectors.contains_key(&job.field);
        match doc.text.get(&job.source) {
            Some(_) => {
                let v = vectors.next().ok_or_else(|| {
                    StepError::Fatal("the embedder returned too few vectors".into())
                })?;
                if v.len() != spec.dim as usize {
                    return Err(StepError::Fatal(format!(
                        "the model made {} dimensions; the field has {}",
                        v.len(),
                        spec.dim
                    )));
                }
                doc.vectors.insert(job.field.clone(), v);
            }
            None => {
                doc.vectors.remove(&job.field);
                job.cleared += 1;
            }
        }
        let mut value = doc.encode();
        if value.len() > s.value_bytes_max {
            doc.vectors.remove(&job.field);
            job.cleared += 1;
            value = doc.encode();
        }
        if !had && doc.vectors.contains_key(&job.field) {
            grows += crate::manager::vector_cost(spec.dim as usize, s.opts.hnsw.m);
        }
        batch
            .require(c.keyspace(), key, Condition::Seq(seq))
            .put(c.keyspace(), key, &value);
    }
    s.check_budget(grows)?;
    s.wait_for_indexer()?;
    job.cursor = Some(last);
    job.done += keys.len() as u64;
    match s.write_job(c, job, batch) {
        Ok(true) => Ok(Page::Written),
        Ok(false) => Ok(Page::Stop),
        Err(Error::Storage(kyrodb_storage::Error::ConditionFailed { .. })) => {
            Err(StepError::Conflict)
        }
        Err(e) => Err(e.into()),
    }
}

/// Records the job's end durably.
fn finish(
    s: &Shared,
    c: &Collection,
    state: JobState,
    error: Option<String>,
) -> std::result::Result<(), StepError> {
    let Some(mut job) = c.job() else {
        return Ok(());
    };
    job.state = state;
    job.error = error;
    job.finished_ms = Some(crate::doc::now_ms());
    s.write_job(c, job, WriteBatch::new())?;
    c.set_paused(None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState, done: u64, started_ms: i64) -> ReembedJob {
        ReembedJob {
            field: "v".into(),
            model: "m".into(),
            source: "body".into(),
            state,
            cursor: None,
            done,
            total: 300,
            cleared: 0,
            left_to_writers: 0,
            started_ms,
            finished_ms: None,
            error: None,
            resumed: 0,
        }
    }

    #[test]
    fn a_stale_record_of_the_same_job_never_undoes_newer_progress() {
        let done = job(JobState::Done, 300, 1);
        let page = job(JobState::Running, 200, 1);
        assert!(!page.supersedes(&done), "a page written before the end");
        assert!(done.supersedes(&page));
        assert!(job(JobState::Running, 250, 1).supersedes(&page));
        assert!(!page.supersedes(&job(JobState::Running, 250, 1)));
        assert!(job(JobState::Failed, 10, 1).supersedes(&page));
        // Another job (a later start, or another field) always replaces the record.
        assert!(job(JobState::Running, 0, 2).supersedes(&done));
        let mut other = job(JobState::Running, 0, 1);
        other.field = "w".into();
        assert!(other.supersedes(&done));
    }
}

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

pub use crate::job::{EmbedFailure, EmbedFn, JobState, JobView, ReembedJob};
use crate::{collection::Collection, doc::Document, env::Env, Error};
use kyrodb_storage::{Condition, WriteBatch};

/// Documents per page (one atomic write each).
pub const REEMBED_PAGE: usize = 32;

/// Attempts at a page whose documents concurrent writers keep changing, before the conflicting
/// document is left to its writer (who writes it under the new spec).
const PAGE_ATTEMPTS: usize = 16;

/// One page's outcome.
enum Page {
    /// Written; the job record advanced.
    Written,
    /// No documents after the cursor: the job is done.
    End,
    /// Stop now (closing, dropped, embedder stopped); the job resumes at the next start.
    Stop,
}

/// Where a job's progress becomes durable: the registry's catalog, which holds each collection's
/// job in its entry ([`crate::manager`] implements it; the runner never names the registry).
pub(crate) trait JobLedger: Send + Sync {
    /// The collections' environment.
    fn env(&self) -> &Env;
    /// Writes `batch` together with the collection's catalog entry holding `job` (one atomic
    /// engine write), then makes `job` the collection's. False (nothing written) if the
    /// collection was dropped meanwhile.
    fn write_job(&self, c: &Collection, job: ReembedJob, batch: WriteBatch) -> Result<bool, Error>;
}

/// Runs a job until done, failed or stopped. Progress is durable after every page.
pub(crate) fn run(ledger: Weak<dyn JobLedger>, c: Arc<Collection>, embed: EmbedFn) {
    let started = Instant::now();
    let mut walked_here: u64 = 0;
    let mut page = REEMBED_PAGE;
    let mut attempts = 0;
    loop {
        let Some(s) = ledger.upgrade() else { return };
        if s.env().is_closing() || c.dropped.load(Ordering::Acquire) {
            return;
        }
        let rate = s.env().opts.reembed_docs_per_s;
        if rate > 0 {
            // Paced: wait until the docs done so far fit the rate (woken early by close).
            let due = Duration::from_secs_f64(walked_here as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                s.env().sleep_unless_closing(wait);
                continue;
            }
        }
        let before = c.job().map_or(0, |j| j.done);
        match step(&*s, &c, &embed, page, attempts >= PAGE_ATTEMPTS) {
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
                s.env().sleep_unless_closing(Duration::from_millis(200));
            }
            Err(StepError::Fatal(why)) => {
                tracing::warn!(collection = c.name(), %why, "re-embed job failed");
                let _ = finish(&*s, &c, JobState::Failed, Some(why));
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
    s: &dyn JobLedger,
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
        if value.len() > s.env().value_bytes_max {
            doc.vectors.remove(&job.field);
            job.cleared += 1;
            value = doc.encode();
        }
        if !had && doc.vectors.contains_key(&job.field) {
            grows += crate::env::vector_cost(spec.dim as usize, s.env().opts.hnsw.m);
        }
        batch
            .require(c.keyspace(), key, Condition::Seq(seq))
            .put(c.keyspace(), key, &value);
    }
    s.env().check_budget(grows)?;
    s.env().wait_for_indexer()?;
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
    s: &dyn JobLedger,
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

//! A re-embed job's durable record and what the API shows of it; the runner is in
//! [`crate::reembed`]. Below the collections (each holds its last job), so the runner can use both.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

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

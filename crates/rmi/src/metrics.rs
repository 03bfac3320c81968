//! Metrics through the `metrics` facade. Names: `kyrodb_rmi_<what>_<unit>`.
//!
//! - `kyrodb_rmi_build_duration_seconds` (histogram): wall time of each build.
//! - The shape of the index serving reads (leaves, model bytes, ε bound, measured error) is not
//!   recorded here: the embedder exports it per keyspace from the loaded index (`kyrodb_index_*`), so
//!   it is present after a restart too, and one fact has one metric family.
//! - `kyrodb_rmi_probe_length_slots` (histogram): |prediction − position| + 1 of up to
//!   [`PROBE_SAMPLES_MAX`] keys per build, evenly spaced — the distance a last-mile search walks from the
//!   prediction to a present key. Sampled at build so the lookup path carries no instrumentation.
//! - `kyrodb_rmi_rebuilds_total` / `kyrodb_rmi_rebuild_failures_total` (counters): background rebuilds.

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter.
    Counter,
    /// A counter of rare events, exported at 0 from the start (the cluster's: from when cluster
    /// mode starts) so dashboards and alerts see a series before the first event. Unlabelled.
    EventCounter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

/// One metric family, declared once — a constant of the crate that records it — and recorded
/// through that constant (`metrics::counter!(WAL_FSYNC_TOTAL.name)`). The server describes and
/// exports every crate's list. Names are `kyrodb_<area>_<what>_<unit>`, the unit last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The metric's name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its `# HELP` text.
    pub help: &'static str,
}

/// `kyrodb_rmi_build_duration_seconds`.
pub const RMI_BUILD_DURATION_SECONDS: Family = Family {
    name: "kyrodb_rmi_build_duration_seconds",
    kind: Kind::Histogram,
    help: "Time of one learned-index build",
};

/// `kyrodb_rmi_probe_length_slots`.
pub const RMI_PROBE_LENGTH_SLOTS: Family = Family {
    name: "kyrodb_rmi_probe_length_slots",
    kind: Kind::Histogram,
    help: "Distance from prediction to position plus one, sampled over keys at each build",
};

/// `kyrodb_rmi_rebuilds_total`.
pub const RMI_REBUILDS_TOTAL: Family = Family {
    name: "kyrodb_rmi_rebuilds_total",
    kind: Kind::EventCounter,
    help: "Learned-index rebuilds finished",
};

/// `kyrodb_rmi_rebuild_failures_total`.
pub const RMI_REBUILD_FAILURES_TOTAL: Family = Family {
    name: "kyrodb_rmi_rebuild_failures_total",
    kind: Kind::EventCounter,
    help: "Learned-index background rebuilds that failed",
};

/// This crate's metric families.
pub const FAMILIES: &[Family] = &[
    RMI_BUILD_DURATION_SECONDS,
    RMI_PROBE_LENGTH_SLOTS,
    RMI_REBUILDS_TOTAL,
    RMI_REBUILD_FAILURES_TOTAL,
];

/// Keys sampled per build for the probe-length histogram.
pub const PROBE_SAMPLES_MAX: usize = 1024;

/// Records one build: its wall time, and the probe lengths of `predict` (the built index's
/// prediction; `None` for a shape that predicts nothing) over a sample of `keys`.
pub(crate) fn record_build(
    took: std::time::Duration,
    keys: &[u64],
    predict: impl Fn(u64) -> Option<usize>,
) {
    metrics::histogram!(RMI_BUILD_DURATION_SECONDS.name).record(took.as_secs_f64());
    let step = (keys.len() / PROBE_SAMPLES_MAX).max(1);
    let probes = metrics::histogram!(RMI_PROBE_LENGTH_SLOTS.name);
    for position in (0..keys.len()).step_by(step) {
        // The search tree has no prediction: nothing to record.
        let Some(predicted) = predict(keys[position]) else {
            break;
        };
        probes.record((predicted.abs_diff(position) + 1) as f64);
    }
}

pub(crate) fn record_rebuild(ok: bool) {
    if ok {
        metrics::counter!(RMI_REBUILDS_TOTAL.name).increment(1);
    } else {
        metrics::counter!(RMI_REBUILD_FAILURES_TOTAL.name).increment(1);
    }
}

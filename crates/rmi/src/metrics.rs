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

/// Keys sampled per build for the probe-length histogram.
pub const PROBE_SAMPLES_MAX: usize = 1024;

/// Records one build: its wall time, and the probe lengths of `predict` (the built index's
/// prediction; `None` for a shape that predicts nothing) over a sample of `keys`.
pub(crate) fn record_build(
    took: std::time::Duration,
    keys: &[u64],
    predict: impl Fn(u64) -> Option<usize>,
) {
    metrics::histogram!("kyrodb_rmi_build_duration_seconds").record(took.as_secs_f64());
    let step = (keys.len() / PROBE_SAMPLES_MAX).max(1);
    let probes = metrics::histogram!("kyrodb_rmi_probe_length_slots");
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
        metrics::counter!("kyrodb_rmi_rebuilds_total").increment(1);
    } else {
        metrics::counter!("kyrodb_rmi_rebuild_failures_total").increment(1);
    }
}

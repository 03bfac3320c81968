//! A build and a rebuild report the documented metrics, named kyrodb_rmi_<what>_<unit>.

use std::sync::Mutex;

use kyrodb_rmi::{RmiConfig, RmiHandle};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

#[derive(Default)]
struct Names(Mutex<Vec<String>>);

impl Names {
    fn note(&self, key: &Key) {
        self.0.lock().expect("lock").push(key.name().to_string());
    }
}

impl Recorder for Names {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.note(key);
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.note(key);
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.note(key);
        Histogram::noop()
    }
}

#[test]
fn build_and_rebuild_report_documented_metrics() {
    let names = Names::default();
    metrics::with_local_recorder(&names, || {
        let keys: Vec<u64> = (0..10_000u64).map(|i| i * i).collect();
        let handle = RmiHandle::new(keys.clone(), RmiConfig::default()).expect("build");
        handle.rebuild(keys).expect("rebuild");
        assert!(handle.rebuild(vec![2, 1]).is_err());
    });
    let seen = names.0.lock().expect("lock");
    for want in [
        "kyrodb_rmi_build_duration_seconds",
        "kyrodb_rmi_probe_length_slots",
        "kyrodb_rmi_rebuilds_total",
        "kyrodb_rmi_rebuild_failures_total",
    ] {
        assert!(
            seen.iter().any(|n| n == want),
            "{want} not reported; saw {seen:?}"
        );
    }
    assert!(seen.iter().all(|n| n.starts_with("kyrodb_rmi_")));
    // The index's shape is exported by the embedder per keyspace (kyrodb_index_*): one family per fact.
    for gone in [
        "kyrodb_rmi_leaves_count",
        "kyrodb_rmi_epsilon_max_slots",
        "kyrodb_rmi_model_bytes",
    ] {
        assert!(
            !seen.iter().any(|n| n == gone),
            "{gone} repeats kyrodb_index_*"
        );
    }
}

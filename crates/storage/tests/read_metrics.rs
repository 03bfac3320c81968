//! Reads are counted by where they were answered (`kyrodb_storage_reads_total{source=delta|index}`),
//! per thread and flushed to the metrics facade every 1,024 reads.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use kyrodb_storage::{Db, FsyncPolicy, Options};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

#[derive(Default)]
struct Counting(Mutex<HashMap<String, Arc<Cell>>>);

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl Counting {
    fn get(&self, name: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }
}

impl Recorder for Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Counter::from_arc(self.0.lock().unwrap().entry(name).or_default().clone())
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn point_reads_are_counted_by_the_source_that_answered() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        Options {
            fsync: FsyncPolicy::Never,
            background_compaction: false,
            ..Options::default()
        },
    )
    .unwrap();
    db.put(1, b"in the snapshot").unwrap();
    db.snapshot().unwrap();
    db.put(2, b"in the delta").unwrap();
    let rec = Counting::default();
    metrics::with_local_recorder(&rec, || {
        for _ in 0..1024 {
            assert!(db.get(1).unwrap().is_some());
        }
        for _ in 0..1024 {
            assert!(db.get(2).unwrap().is_some());
        }
    });
    assert_eq!(rec.get("kyrodb_storage_reads_total{source=index}"), 1024);
    assert_eq!(rec.get("kyrodb_storage_reads_total{source=delta}"), 1024);
}

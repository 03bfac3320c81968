//! The learned index behind the `SortedIndex` seam: every snapshot gets one, persisted beside it; a
//! missing or corrupt index file is rebuilt from the snapshot, never served; rebuilds swap atomically
//! while readers keep reading.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use std::sync::Arc;

use kyrodb_rmi::{Rmi, RmiConfig};
use kyrodb_storage::{
    Db, Error, FsyncPolicy, IndexBuilder, IndexError, LearnedIndexBuilder, Options, SortedIndex,
    WriteBatch,
};

fn opts() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        background_compaction: false,
        ..Options::default()
    }
}

/// Keys spread unevenly over the u64 space: dense runs plus far outliers.
fn key(i: u64) -> u64 {
    if i.is_multiple_of(97) {
        u64::MAX - i
    } else {
        (i / 50) * 1_000_003 + (i % 50) * 3
    }
}

fn load(dir: &Path, n: u64) -> Db {
    load_with(dir, n, opts())
}

/// [`load`] with other options.
fn load_with(dir: &Path, n: u64, opts: Options) -> Db {
    let db = Db::open(dir, opts).unwrap();
    let ks = db.default_keyspace().clone();
    let mut b = WriteBatch::new();
    for i in 0..n {
        b.put(&ks, key(i), &i.to_le_bytes());
    }
    db.write(b).unwrap();
    db.snapshot().unwrap();
    db
}

fn rmi_file(dir: &Path) -> PathBuf {
    fs::read_dir(dir.join("snap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "rmi"))
        .expect("an index file beside the snapshot")
}

fn check_all(db: &Db, n: u64) {
    let present: std::collections::HashSet<u64> = (0..n).map(key).collect();
    for i in 0..n {
        assert_eq!(
            db.get(key(i)).unwrap().unwrap().to_vec(),
            i.to_le_bytes(),
            "key #{i}"
        );
        let absent = key(i).wrapping_add(1);
        if !present.contains(&absent) {
            assert!(
                db.get(absent).unwrap().is_none(),
                "absent key {absent} found"
            );
        }
    }
    let scanned = db.scan(key(10)..=key(60), usize::MAX).unwrap();
    let mut want: Vec<u64> = (0..n)
        .map(key)
        .filter(|k| (key(10)..=key(60)).contains(k))
        .collect();
    want.sort_unstable();
    assert_eq!(scanned.iter().map(|(k, _)| *k).collect::<Vec<_>>(), want);
}

#[test]
fn every_snapshot_is_served_through_a_persisted_learned_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = load(dir.path(), 20_000);
    let ks = &db.stats().keyspaces[0];
    assert_eq!(ks.index.kind, "rmi");
    // The build chooses the index's shape from the keys; 20K keys fit in cache, where the model-free
    // shapes (search tree, binary search) can win and carry no leaves.
    assert!(ks.index.epsilon_bound > 0);
    check_all(&db, 20_000);
    assert!(rmi_file(dir.path()).exists());
}

#[test]
fn corrupt_or_missing_index_file_is_rebuilt_not_served() {
    let dir = tempfile::tempdir().unwrap();
    drop(load(dir.path(), 20_000));
    let path = rmi_file(dir.path());
    let good = fs::read(&path).unwrap();
    // A flipped byte in the model: the checksum refuses it, the engine rebuilds it.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    fs::write(&path, &bad).unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    check_all(&db, 20_000);
    assert_eq!(
        fs::read(&path).unwrap(),
        good,
        "the corrupt file was replaced by a rebuilt one"
    );
    drop(db);
    fs::remove_file(&path).unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    check_all(&db, 20_000);
    assert!(path.exists(), "a missing index is rebuilt and persisted");
    // Truncated.
    drop(db);
    fs::write(&path, &good[..good.len() / 3]).unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    check_all(&db, 20_000);
    assert_eq!(db.stats().keyspaces[0].index.kind, "rmi");
}

#[test]
fn reads_stay_correct_while_the_index_is_rebuilt_and_compactions_swap_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let n = 30_000u64;
    let db = load(dir.path(), n);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (db, stop) = (&db, &stop);
            s.spawn(move || {
                let mut i = t;
                // Bounded: stops when the writer side is done, or after 50M lookups at most.
                for _ in 0..50_000_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let k = i % n;
                    let got = db
                        .get(key(k))
                        .unwrap()
                        .expect("present key missing during rebuild");
                    assert_eq!(got.to_vec(), k.to_le_bytes());
                    i = i.wrapping_add(7919);
                }
            });
        }
        for round in 0..6u64 {
            let reports = db.rebuild_index().unwrap();
            assert_eq!(reports.len(), 1);
            assert_eq!(reports[0].keys, n + round * 100);
            // New keys beyond the old ones, then a compaction that swaps the snapshot under the readers.
            let ks = db.default_keyspace().clone();
            let mut b = WriteBatch::new();
            for j in 0..100 {
                b.put(&ks, u64::MAX / 2 + round * 1000 + j, b"new");
            }
            db.write(b).unwrap();
            db.snapshot().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    check_all(&db, n);
}

#[test]
fn reported_epsilon_is_the_measured_error_before_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000;
    // A tight bound (ε = 4) keeps the model-free shapes out, so the index is a learned one with a
    // non-zero measured error (at the default bound 20K keys get plain binary search).
    let config = RmiConfig {
        epsilon_max_slots: 4,
        ..RmiConfig::default()
    };
    let tight = || Options {
        index_builder: Arc::new(LearnedIndexBuilder { config }),
        ..opts()
    };
    drop(load_with(dir.path(), n, tight()));
    let mut keys: Vec<u64> = (0..n).map(key).collect();
    keys.sort_unstable();
    // The same build the engine ran, measured by the index itself.
    let rmi = Rmi::build(&keys, &config).unwrap();
    let check = |db: &Db, when: &str| {
        let info = db.stats().keyspaces[0].index;
        assert_eq!(info.epsilon_bound, config.epsilon_max_slots, "{when}");
        assert_eq!(info.epsilon_max_measured, rmi.epsilon(), "{when}");
        assert_eq!(
            info.error_mean_measured,
            rmi.stats().error_mean_slots,
            "{when}"
        );
        assert!(info.epsilon_max_measured <= info.epsilon_bound, "{when}");
        assert!(info.error_mean_measured > 0.0, "{when}");
    };
    // Loaded from the persisted `.rmi` file: the numbers are the measured ones, not 0 or the bound.
    let db = Db::open(dir.path(), tight()).unwrap();
    check(&db, "after a restart");
    let reports = db.rebuild_index().unwrap();
    assert_eq!(reports[0].index, db.stats().keyspaces[0].index);
    check(&db, "after a rebuild");
}

#[test]
fn eleven_keys_report_the_bound_and_the_measured_error_apart() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let keys = [
        1u64,
        2,
        3,
        10,
        11,
        400,
        401,
        9_000,
        9_001,
        1 << 40,
        u64::MAX,
    ];
    for k in keys {
        db.put(k, b"v").unwrap();
    }
    db.snapshot().unwrap();
    let info = db.stats().keyspaces[0].index;
    let rmi = Rmi::build(&keys, &RmiConfig::default()).unwrap();
    assert_eq!(info.epsilon_bound, RmiConfig::default().epsilon_max_slots);
    assert_eq!(info.epsilon_max_measured, rmi.epsilon());
    assert_eq!(info.error_mean_measured, rmi.stats().error_mean_slots);
}

#[test]
fn an_invalid_index_configuration_is_refused_at_open_as_an_invalid_option() {
    let dir = tempfile::tempdir().unwrap();
    let bad = LearnedIndexBuilder {
        config: RmiConfig {
            router_buckets_per_leaf: 0,
            ..RmiConfig::default()
        },
    };
    let r = Db::open(
        dir.path(),
        Options {
            index_builder: Arc::new(bad),
            ..opts()
        },
    );
    assert!(
        matches!(r, Err(Error::InvalidOption(ref m)) if m.contains("router_buckets_per_leaf")),
        "{r:?}"
    );
}

/// Builds fine at open, then refuses its configuration when asked to rebuild.
struct RefusesRebuild;

impl IndexBuilder for RefusesRebuild {
    fn build(&self, _keys: &[u64]) -> Result<Arc<dyn SortedIndex>, IndexError> {
        Ok(Arc::new(kyrodb_storage::index::BinarySearch))
    }
    fn rebuild(&self, _keys: &[u64], _path: &Path) -> Result<Arc<dyn SortedIndex>, IndexError> {
        Err(IndexError::InvalidConfig(
            "epsilon too small for these keys".into(),
        ))
    }
    fn name(&self) -> &'static str {
        "refuses_rebuild"
    }
}

#[test]
fn an_index_configuration_error_stays_typed_through_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        Options {
            index_builder: Arc::new(RefusesRebuild),
            ..opts()
        },
    )
    .unwrap();
    db.put(1, b"one").unwrap();
    db.snapshot().unwrap();
    let r = db.rebuild_index();
    assert!(
        matches!(r, Err(Error::Index(IndexError::InvalidConfig(_)))),
        "an invalid configuration is not an I/O error: {r:?}"
    );
    assert_eq!(
        db.get(1).unwrap().unwrap().to_vec(),
        b"one",
        "the old index still serves"
    );
}

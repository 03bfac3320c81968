//! The key-value API a Redis user expects: delete-range and batch delete, exact key counts,
//! compare-and-set (`if_absent`, `if_seq`) and per-key TTL. Each goes through the WAL like every
//! other write, is visible on acknowledgement and survives a restart.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use kyrodb_storage::{Condition, Db, Error, FsyncPolicy, Options, WriteBatch};

fn opts() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        background_compaction: false,
        ..Options::default()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn keys(db: &Db) -> Vec<u64> {
    db.scan(.., usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn delete_range_deletes_live_keys_in_delta_and_snapshot_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    for k in 0..50 {
        db.put(k, b"snap").unwrap();
    }
    db.snapshot().unwrap();
    for k in 50..100 {
        db.put(k, b"delta").unwrap();
    }
    let seq = db.delete_range(40..60).unwrap();
    assert!(seq > 0);
    let want: Vec<u64> = (0..40).chain(60..100).collect();
    assert_eq!(keys(&db), want);
    assert_eq!(db.count(), 80);
    // In a batch, a put before the range is deleted by it; one after survives.
    let ks = db.default_keyspace().clone();
    let mut b = WriteBatch::new();
    b.put(&ks, 1_000, b"x")
        .delete_range(&ks, 900..=1_100)
        .put(&ks, 1_001, b"y");
    db.write(b).unwrap();
    assert!(db.get(1_000).unwrap().is_none());
    assert!(db.get(1_001).unwrap().is_some());
    drop(ks);
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    let mut want = want;
    want.push(1_001);
    assert_eq!(keys(&db), want, "survives a restart");
    assert_eq!(db.count(), 81);
    db.snapshot().unwrap();
    assert_eq!(db.stats().keyspaces[0].snapshot_keys, 81);
}

#[test]
fn a_delete_range_over_batch_ops_max_keys_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        Options {
            batch_ops_max: 10,
            ..opts()
        },
    )
    .unwrap();
    for k in 0..20 {
        db.put(k, b"v").unwrap();
    }
    let before = db.stats().last_seq;
    let r = db.delete_range(..);
    assert!(
        matches!(r, Err(Error::BatchTooManyOps { max: 10, .. })),
        "{r:?}"
    );
    assert_eq!(db.count(), 20, "nothing was deleted");
    assert_eq!(
        db.stats().last_seq,
        before,
        "the refused batch took no sequence number"
    );
    db.delete_range(0..10).unwrap();
    assert_eq!(db.count(), 10);
}

#[test]
fn delete_many_is_one_atomic_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    for k in 0..10 {
        db.put(k, b"v").unwrap();
    }
    let before = db.stats().last_seq;
    let seq = db.default_keyspace().delete_many(&[1, 3, 5, 77]).unwrap();
    assert_eq!(seq, before + 1, "one record");
    assert_eq!(keys(&db), vec![0, 2, 4, 6, 7, 8, 9]);
    assert_eq!(db.count(), 7);
}

#[test]
fn count_is_exact_through_overwrites_deletes_snapshots_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let docs = db.create_keyspace("docs").unwrap();
    assert_eq!(db.count(), 0);
    for k in 0..100 {
        db.put(k, b"v").unwrap();
    }
    for k in 0..50 {
        db.put(k, b"overwrite").unwrap();
    }
    for k in 90..110 {
        db.delete(k).unwrap();
    }
    docs.put(1, b"d").unwrap();
    assert_eq!(db.count(), 90);
    assert_eq!(docs.count(), 1);
    db.snapshot().unwrap();
    assert_eq!(db.count(), 90);
    db.put(5, b"again").unwrap();
    db.put(500, b"new").unwrap();
    db.delete(6).unwrap();
    assert_eq!(db.count(), 90);
    drop(docs);
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(db.count(), 90, "recovered from snapshot + replayed log");
    assert_eq!(db.keyspace("docs").unwrap().count(), 1);
    assert_eq!(db.count() as usize, keys(&db).len());
    let st = db.stats();
    assert_eq!(st.keyspaces.iter().map(|k| k.keys).sum::<u64>(), 91);
}

#[test]
fn compare_and_set_checks_the_sequence_number_of_the_live_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let ks = db.default_keyspace().clone();
    let s1 = ks.put_if_absent(7, b"one").unwrap();
    match ks.put_if_absent(7, b"two") {
        Err(Error::ConditionFailed {
            key: 7,
            expected: Condition::Absent,
            current_seq: Some(s),
            ..
        }) => assert_eq!(s, s1),
        other => panic!("{other:?}"),
    }
    assert_eq!(db.get(7).unwrap().unwrap().to_vec(), b"one");
    let e = db.get_entry(7).unwrap().unwrap();
    assert_eq!((e.seq, e.expires_at_ms), (s1, None));
    let s2 = ks.put_if_seq(7, b"two", s1).unwrap();
    assert!(matches!(
        ks.put_if_seq(7, b"stale", s1),
        Err(Error::ConditionFailed { current_seq: Some(s), .. }) if s == s2
    ));
    // The sequence number is kept in the snapshot and across a restart.
    db.snapshot().unwrap();
    drop(ks);
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    let ks = db.default_keyspace().clone();
    assert_eq!(db.get_entry(7).unwrap().unwrap().seq, s2);
    assert!(matches!(
        ks.delete_if_seq(7, s1),
        Err(Error::ConditionFailed { .. })
    ));
    ks.delete_if_seq(7, s2).unwrap();
    assert!(db.get(7).unwrap().is_none());
    assert!(matches!(
        ks.put_if_seq(7, b"x", s2),
        Err(Error::ConditionFailed {
            current_seq: None,
            ..
        })
    ));
    ks.put_if_absent(7, b"back").unwrap();
    // A failed condition in a batch writes nothing of it.
    let mut b = WriteBatch::new();
    b.put(&ks, 8, b"eight").require(&ks, 7, Condition::Absent);
    assert!(matches!(db.write(b), Err(Error::ConditionFailed { .. })));
    assert!(db.get(8).unwrap().is_none());
}

#[test]
fn concurrent_compare_and_set_loses_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), opts()).unwrap());
    db.put(1, &0u64.to_le_bytes()).unwrap();
    let threads = 4;
    let per_thread = 200;
    std::thread::scope(|s| {
        for _ in 0..threads {
            let db = db.clone();
            s.spawn(move || {
                let ks = db.default_keyspace();
                let mut done = 0;
                while done < per_thread {
                    let e = ks.get_entry(1).unwrap().unwrap();
                    let n = u64::from_le_bytes(e.value[..8].try_into().unwrap());
                    match ks.put_if_seq(1, &(n + 1).to_le_bytes(), e.seq) {
                        Ok(_) => done += 1,
                        Err(Error::ConditionFailed { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
        // A plain writer of other keys in the same groups.
        let db = db.clone();
        s.spawn(move || {
            for k in 100..600 {
                db.put(k, b"noise").unwrap();
            }
        });
    });
    let v = db.get(1).unwrap().unwrap();
    assert_eq!(
        u64::from_le_bytes(v[..8].try_into().unwrap()),
        threads * per_thread
    );
}

#[test]
fn expired_keys_are_invisible_at_once_and_dropped_by_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let ks = db.default_keyspace().clone();
    let far = now_ms() + 3_600_000;
    let mut b = WriteBatch::new();
    b.put_expiring_at(&ks, 1, b"past", now_ms() - 1)
        .put_expiring_at(&ks, 2, b"future", far)
        .put(&ks, 3, b"forever")
        .put_with_ttl(&ks, 4, b"zero ttl", Duration::ZERO);
    db.write(b).unwrap();
    let check = |db: &Db, when: &str| {
        assert!(db.get(1).unwrap().is_none(), "{when}");
        assert!(db.get(4).unwrap().is_none(), "{when}");
        assert_eq!(db.get(2).unwrap().unwrap().to_vec(), b"future", "{when}");
        let got: Vec<bool> = db
            .multi_get(&[1, 2, 3, 4])
            .unwrap()
            .iter()
            .map(Option::is_some)
            .collect();
        assert_eq!(got, [false, true, true, false], "{when}");
        assert_eq!(keys(db), vec![2, 3], "{when}");
        assert_eq!(db.count(), 2, "{when}");
        assert_eq!(
            db.get_entry(2).unwrap().unwrap().expires_at_ms,
            Some(far),
            "{when}"
        );
        assert_eq!(
            db.get_entry(3).unwrap().unwrap().expires_at_ms,
            None,
            "{when}"
        );
    };
    check(&db, "in the delta");
    // An expired key is absent for if_absent.
    ks.put_if_absent(1, b"reborn").unwrap();
    ks.delete(1).unwrap();
    drop(ks);
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    check(&db, "replayed");
    db.snapshot().unwrap();
    check(&db, "in the snapshot");
    assert_eq!(
        db.stats().keyspaces[0].snapshot_keys,
        2,
        "expired keys dropped"
    );
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    check(&db, "snapshot after restart");
}

#[test]
fn a_key_expires_while_stored_in_delta_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let ks = db.default_keyspace().clone();
    let at = now_ms() + 200;
    let mut b = WriteBatch::new();
    b.put_expiring_at(&ks, 1, b"soon", at);
    db.write(b).unwrap();
    db.snapshot().unwrap();
    let mut b = WriteBatch::new();
    b.put_expiring_at(&ks, 2, b"soon", at);
    db.write(b).unwrap();
    let (count, scanned) = (db.count(), keys(&db));
    // Only meaningful if both reads finished before the expiry instant (no assumption about speed).
    if now_ms() < at {
        assert_eq!(count, 2);
        assert_eq!(scanned, vec![1, 2]);
    }
    // Wait for the wall clock to pass the expiry (expiry is defined by the clock; nothing to signal).
    while now_ms() <= at {
        std::thread::sleep(Duration::from_millis((at + 1).saturating_sub(now_ms())));
    }
    assert!(db.get(1).unwrap().is_none());
    assert!(db.get(2).unwrap().is_none());
    assert_eq!(db.count(), 0);
    assert!(keys(&db).is_empty());
    db.snapshot().unwrap();
    assert_eq!(db.stats().keyspaces[0].snapshot_keys, 0);
    assert_eq!(db.count(), 0);
}

#[test]
fn count_is_exact_when_a_batch_writes_a_key_more_than_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let ks = db.default_keyspace().clone();
    db.put(1, b"old").unwrap();
    let mut b = WriteBatch::new();
    b.put(&ks, 2, b"a")
        .delete(&ks, 2)
        .put(&ks, 3, b"b")
        .put(&ks, 2, b"c")
        .delete(&ks, 1)
        .put(&ks, 1, b"d")
        .delete(&ks, 3);
    db.write(b).unwrap();
    assert_eq!(keys(&db), vec![1, 2]);
    assert_eq!(db.count(), 2);
    db.snapshot().unwrap();
    let mut b = WriteBatch::new();
    b.delete(&ks, 1)
        .put(&ks, 1, b"e")
        .delete(&ks, 2)
        .delete(&ks, 2);
    db.write(b).unwrap();
    assert_eq!(db.count(), 1);
    drop(ks);
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(db.count(), 1);
    assert_eq!(keys(&db), vec![1]);
}

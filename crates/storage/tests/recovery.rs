//! Recovery scenarios beyond corruption: replaying a log larger than the delta budget compacts while it
//! replays, and replayed writes are readable at once and compacted in the background.

use kyrodb_storage::{Db, FsyncPolicy, Options, WriteBatch};

fn big() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        delta_bytes_compact: 1 << 30,
        delta_bytes_budget: 1 << 30,
        background_compaction: false,
        ..Options::default()
    }
}

fn fill(db: &Db, n: u64) {
    let ks = db.default_keyspace().clone();
    for chunk in 0..n / 1000 {
        let mut b = WriteBatch::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            b.put(&ks, i * 7, &i.to_le_bytes().repeat(8));
        }
        db.write(b).unwrap();
    }
    // Overwrite and delete some, so the newest version must win after replay.
    for i in (0..n).step_by(10) {
        db.put(i * 7, b"overwritten").unwrap();
    }
    for i in (5..n).step_by(10) {
        db.delete(i * 7).unwrap();
    }
}

fn check(db: &Db, n: u64) {
    for i in 0..n {
        let got = db.get(i * 7).unwrap().map(|v| v.to_vec());
        let want = match i % 10 {
            0 => Some(b"overwritten".to_vec()),
            5 => None,
            _ => Some(i.to_le_bytes().repeat(8)),
        };
        assert_eq!(got, want, "key {}", i * 7);
    }
}

#[test]
fn replay_larger_than_the_delta_budget_compacts_as_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), big()).unwrap();
    fill(&db, 20_000);
    drop(db);
    let small = Options {
        delta_bytes_compact: 64 << 10,
        delta_bytes_budget: 256 << 10,
        ..big()
    };
    let db = Db::open(dir.path(), small.clone()).unwrap();
    let s = db.stats();
    assert!(
        s.manifest_generation > 2,
        "replay should have compacted several times, generation {}",
        s.manifest_generation
    );
    check(&db, 20_000);
    drop(db);
    let db = Db::open(dir.path(), small).unwrap();
    check(&db, 20_000);
}

#[test]
fn replayed_writes_are_served_then_compacted_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), big()).unwrap();
    fill(&db, 5_000);
    drop(db);
    let db = Db::open(dir.path(), big()).unwrap();
    check(&db, 5_000);
    assert!(
        db.stats().frozen_bytes > 0,
        "the replayed run waits as the frozen delta"
    );
    // New writes go to the active delta meanwhile and win over the replayed run.
    db.put(7, b"newest").unwrap();
    assert_eq!(db.get(7).unwrap().unwrap().to_vec(), b"newest");
    db.snapshot().unwrap();
    assert_eq!(db.stats().frozen_bytes, 0);
    assert_eq!(db.get(7).unwrap().unwrap().to_vec(), b"newest");
    db.put(7, &1u64.to_le_bytes().repeat(8)).unwrap();
    check(&db, 5_000);
}

#[test]
fn every_fsync_policy_keeps_acknowledged_writes_across_close_and_reopen() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::IntervalMs(5),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let o = Options {
            fsync: policy,
            ..big()
        };
        let db = Db::open(dir.path(), o.clone()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let db = &db;
                s.spawn(move || {
                    for i in 0..200u64 {
                        db.put(t * 1000 + i, &i.to_le_bytes()).unwrap();
                    }
                });
            }
        });
        assert_eq!(
            db.stats().visible_seq,
            800,
            "{policy:?}: every write got its own sequence number"
        );
        drop(db);
        let db = Db::open(dir.path(), o).unwrap();
        for t in 0..4u64 {
            for i in 0..200u64 {
                let got = db.get(t * 1000 + i).unwrap().map(|v| v.to_vec());
                assert_eq!(
                    got,
                    Some(i.to_le_bytes().to_vec()),
                    "{policy:?}: key {}",
                    t * 1000 + i
                );
            }
        }
    }
}

#[test]
fn a_version_1_wal_segment_still_replays() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), big()).unwrap();
    for k in 0..100u64 {
        db.put(k, &k.to_le_bytes()).unwrap();
    }
    db.delete(5).unwrap();
    drop(db);
    // Rewrite every segment's header as the engine wrote it before version 2 (puts and deletes only).
    let mut h = Vec::from(*b"KYROWAL1");
    h.extend_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    for e in std::fs::read_dir(dir.path().join("wal")).unwrap() {
        let p = e.unwrap().path();
        let mut b = std::fs::read(&p).unwrap();
        b[..16].copy_from_slice(&h);
        std::fs::write(&p, b).unwrap();
    }
    let db = Db::open(dir.path(), big()).unwrap();
    assert_eq!(db.count(), 99);
    assert_eq!(db.get(7).unwrap().unwrap().to_vec(), 7u64.to_le_bytes());
    assert!(db.get(5).unwrap().is_none());
    // Appends continue in the old segment, and reopen again.
    db.put(500, b"new").unwrap();
    drop(db);
    let db = Db::open(dir.path(), big()).unwrap();
    assert_eq!(db.count(), 100);
}

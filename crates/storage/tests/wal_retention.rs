//! The WAL retention rule: a segment is deleted once a durable manifest covers every record in it
//! (keeping `wal_retain_segments` of them), and `Db::snapshot` rotates the segment being written so that
//! the log it covers is released at once.

use std::path::Path;

use kyrodb_storage::{Db, FsyncPolicy, Options, WriteBatch};

fn opts(retain: usize) -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        background_compaction: false,
        wal_retain_segments: retain,
        ..Options::default()
    }
}

/// Bytes of WAL segment files, and how many there are.
fn wal_usage(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut files = 0;
    for e in std::fs::read_dir(dir.join("wal")).unwrap() {
        let e = e.unwrap();
        bytes += e.metadata().unwrap().len();
        files += 1;
    }
    (bytes, files)
}

fn load(db: &Db, n: u64) {
    let ks = db.default_keyspace().clone();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut b = WriteBatch::new();
        for k in chunk {
            b.put(&ks, *k, &[*k as u8; 100]);
        }
        db.write(b).unwrap();
    }
}

#[test]
fn snapshot_releases_the_log_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts(0)).unwrap();
    load(&db, 20_000);
    let (before, _) = wal_usage(dir.path());
    assert!(before > 2_000_000, "the log holds the writes: {before}");
    let info = db.snapshot().unwrap();
    assert_eq!(info.keys, 20_000);
    let (after, files) = wal_usage(dir.path());
    assert_eq!(files, 1, "only the fresh segment is left");
    assert_eq!(after, 16, "it holds only its header");
    assert_eq!(db.stats().wal_segments, 1);
    // Writes continue in the new segment and everything survives a reopen.
    db.put(7, b"after").unwrap();
    drop(db);
    let db = Db::open(dir.path(), opts(0)).unwrap();
    assert_eq!(db.get(7).unwrap().unwrap().to_vec(), b"after");
    assert_eq!(
        db.get(19_999).unwrap().unwrap().to_vec(),
        [19_999u64 as u8; 100]
    );
    // Nothing new since the last snapshot: a second one rotates nothing and leaves one segment.
    db.snapshot().unwrap();
    db.snapshot().unwrap();
    assert_eq!(wal_usage(dir.path()).1, 1);
}

#[test]
fn retained_segments_are_kept_after_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts(1)).unwrap();
    load(&db, 5_000);
    let (before, _) = wal_usage(dir.path());
    db.snapshot().unwrap();
    let (after, files) = wal_usage(dir.path());
    assert_eq!(
        files, 2,
        "the covered segment is retained, plus the new one"
    );
    assert_eq!(after, before + 16);
    load(&db, 10);
    db.snapshot().unwrap();
    assert_eq!(
        wal_usage(dir.path()).1,
        2,
        "still one retained, one being written"
    );
}

//! Fault injection through fail points: fsync errors, ENOSPC and short writes in the WAL and in
//! compaction. In every case no write is acknowledged that is not durable, writes stop (fail-stop) with
//! the reason, and a reopen recovers every acknowledged write.

use std::sync::Mutex;

use kyrodb_storage::{Db, Error, FsyncPolicy, Options};

/// Fail points are process-global: these tests run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn opts() -> Options {
    Options {
        fsync: FsyncPolicy::Always,
        background_compaction: false,
        ..Options::default()
    }
}

/// Puts keys 0..n, then arms `point` with `action` and tries more puts. Returns the dir and the keys
/// whose put was acknowledged.
fn acked_then_fault(point: &str, action: &str) -> (tempfile::TempDir, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let mut acked = Vec::new();
    for k in 0..20 {
        db.put(k, format!("v{k}").as_bytes()).unwrap();
        acked.push(k);
    }
    fail::cfg(point, action).unwrap();
    let first = db.put(100, b"during fault");
    assert!(
        matches!(first, Err(Error::WritesStopped(_))),
        "{point}: write under fault gave {first:?}"
    );
    fail::remove(point);
    // Fail-stop: even with the fault gone, this engine instance takes no more writes.
    let after = db.put(101, b"after fault");
    assert!(
        matches!(after, Err(Error::WritesStopped(_))),
        "{point}: write after fault gave {after:?}"
    );
    let why = db
        .stats()
        .writes_stopped
        .expect("stats report why writes stopped");
    assert!(!why.is_empty());
    // Reads keep working.
    assert_eq!(db.get(3).unwrap().unwrap().to_vec(), b"v3");
    drop(db);
    (dir, acked)
}

fn check_recovers(dir: &tempfile::TempDir, acked: &[u64]) -> Db {
    let db = Db::open(dir.path(), opts()).unwrap();
    for k in acked {
        assert_eq!(
            db.get(*k).unwrap().unwrap().to_vec(),
            format!("v{k}").as_bytes(),
            "acked key {k} lost"
        );
    }
    assert!(
        db.get(101).unwrap().is_none(),
        "a write refused after fail-stop appeared"
    );
    // The reopened engine accepts writes again, durably.
    db.put(102, b"fresh").unwrap();
    db
}

#[test]
fn fsync_error_stops_writes_without_false_acknowledgement() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, acked) = acked_then_fault("fs::sync_file", "return");
    drop(check_recovers(&dir, &acked));
}

#[test]
fn enospc_on_wal_write_stops_writes() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, acked) = acked_then_fault("fs::write", "return");
    let db = check_recovers(&dir, &acked);
    assert!(
        db.get(100).unwrap().is_none(),
        "nothing of the failed write reached the file"
    );
}

#[test]
fn short_write_leaves_a_torn_tail_that_recovery_truncates() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (dir, acked) = acked_then_fault("fs::write", "return(short)");
    let db = check_recovers(&dir, &acked);
    assert!(db.get(100).unwrap().is_none(), "half a record was served");
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(
        db.get(102).unwrap().unwrap().to_vec(),
        b"fresh",
        "writes after the truncated tail survive"
    );
}

#[test]
fn fsync_error_during_compaction_stops_writes_and_keeps_the_old_state() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    for k in 0..50 {
        db.put(k, format!("v{k}").as_bytes()).unwrap();
    }
    fail::cfg("fs::sync_file", "return").unwrap();
    let r = db.snapshot();
    fail::remove("fs::sync_file");
    assert!(
        r.is_err(),
        "compaction reported success despite an fsync error"
    );
    assert!(matches!(db.put(1000, b"x"), Err(Error::WritesStopped(_))));
    assert_eq!(
        db.get(7).unwrap().unwrap().to_vec(),
        b"v7",
        "reads still served from the frozen delta"
    );
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    for k in 0..50 {
        assert_eq!(
            db.get(k).unwrap().unwrap().to_vec(),
            format!("v{k}").as_bytes()
        );
    }
    assert_eq!(
        db.stats().manifest_generation,
        1,
        "the failed compaction committed no manifest"
    );
    db.snapshot().unwrap();
    assert_eq!(db.stats().covered_seq, 50);
}

#[test]
fn delta_over_budget_backpressures_with_busy_and_writes_nothing() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        fsync: FsyncPolicy::Never,
        delta_bytes_compact: 4096,
        delta_bytes_budget: 16384,
        write_stall_ms_max: 30,
        background_compaction: false,
        ..Options::default()
    };
    let db = Db::open(dir.path(), o).unwrap();
    let mut busy_at = None;
    for k in 0..10_000u64 {
        match db.put(k, &[7u8; 200]) {
            Ok(_) => {}
            Err(Error::Busy { budget, .. }) => {
                assert_eq!(budget, 16384);
                busy_at = Some(k);
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let k = busy_at.expect("writes were never back-pressured");
    assert!(
        db.get(k).unwrap().is_none(),
        "a refused write is not visible"
    );
    assert!(
        db.stats().delta_bytes + db.stats().frozen_bytes <= 16384 + 4096,
        "delta stayed near its budget"
    );
    db.snapshot().unwrap();
    db.put(k, b"after compaction").unwrap();
}

#[test]
fn oversize_value_is_a_typed_error_and_writes_nothing() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        Options {
            value_bytes_max: 1024,
            ..opts()
        },
    )
    .unwrap();
    let before = db.stats().last_seq;
    assert!(matches!(
        db.put(1, &[0u8; 1025]),
        Err(Error::ValueTooLarge {
            len: 1025,
            max: 1024
        })
    ));
    db.put(2, &[0u8; 1024]).unwrap();
    assert_eq!(
        db.stats().last_seq,
        before + 1,
        "the refused value took no sequence number"
    );
    assert!(db.get(1).unwrap().is_none());
}

/// Out of file descriptors when the WAL needs a new segment (EMFILE: idle connections, a flood):
/// the write is refused as busy — nothing written, no sequence number taken — and writes go on once
/// descriptors are free again. Never fail-stop.
#[test]
fn out_of_file_descriptors_on_a_segment_open_is_back_pressure_not_fail_stop() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let small = Options {
        wal_segment_bytes: 4096,
        ..opts()
    };
    let db = Db::open(dir.path(), small.clone()).unwrap();
    let value = vec![b'v'; 1000];
    let mut acked = Vec::new();
    for k in 0..3 {
        acked.push((k, db.put(k, &value).unwrap()));
    }
    fail::cfg("wal::open_segment", "return").unwrap();
    // Enough to fill the segment: a put that needs the next one is refused as busy.
    let mut refused = None;
    for k in 3..10 {
        match db.put(k, &value) {
            Ok(seq) => acked.push((k, seq)),
            Err(e) => {
                refused = Some((k, e));
                break;
            }
        }
    }
    let (k_refused, e) = refused.expect("a put needed a new segment");
    assert!(matches!(e, Error::OutOfFiles { .. }), "{e:?}");
    assert!(e.to_string().contains("busy"), "{e}");
    assert!(
        db.stats().writes_stopped.is_none(),
        "out of files stopped writes"
    );
    assert!(
        db.get(k_refused).unwrap().is_none(),
        "a refused put was written"
    );
    // A snapshot needs a new segment too: refused the same way.
    assert!(matches!(db.snapshot(), Err(Error::OutOfFiles { .. })));
    fail::remove("wal::open_segment");
    // Descriptors are back: the same put goes through, numbered right after the last acknowledged.
    let last = acked.last().unwrap().1;
    assert_eq!(db.put(k_refused, &value).unwrap(), last + 1);
    db.snapshot().unwrap();
    acked.push((k_refused, last + 1));
    drop(db);
    let db = Db::open(dir.path(), small).unwrap();
    for (k, _) in &acked {
        assert_eq!(db.get(*k).unwrap().unwrap().to_vec(), value, "key {k}");
    }
}

/// Out of file descriptors inside a compaction (new snapshot files, the manifest): the compaction
/// is refused as busy and retried later; writes never stop and nothing is lost.
#[test]
fn out_of_file_descriptors_in_a_compaction_is_retried_not_fail_stop() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    for k in 0..50 {
        db.put(k, format!("v{k}").as_bytes()).unwrap();
    }
    fail::cfg("compaction::out_of_files", "return").unwrap();
    let e = db.snapshot().unwrap_err();
    assert!(matches!(e, Error::OutOfFiles { .. }), "{e:?}");
    assert!(
        db.stats().writes_stopped.is_none(),
        "out of files stopped writes"
    );
    db.put(50, b"v50").unwrap();
    fail::remove("compaction::out_of_files");
    let info = db.snapshot().unwrap();
    assert!(info.covered_seq >= 51, "{info:?}");
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    for k in 0..51 {
        assert_eq!(
            db.get(k).unwrap().unwrap().to_vec(),
            format!("v{k}").as_bytes()
        );
    }
}

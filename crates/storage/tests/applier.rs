//! The derived-state seam: an attached applier sees every live entry, then every change in log order
//! before the write is acknowledged, exactly once — across compaction, delete-ranges, conditional
//! batches and a reopen.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
};

use common::contents as stored;
use kyrodb_storage::{Applier, Change, Db, FsyncPolicy, Options, WriteBatch};
use parking_lot::Mutex;

/// A mirror of the keyspace, as an index would keep one.
#[derive(Default)]
struct Mirror {
    map: Mutex<BTreeMap<u64, Vec<u8>>>,
    last_seq: AtomicU64,
    out_of_order: AtomicU64,
    calls: AtomicU64,
}

impl Applier for Mirror {
    fn apply(&self, seq: u64, changes: &[Change<'_>]) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if seq < self.last_seq.swap(seq, Ordering::Relaxed) {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        let mut m = self.map.lock();
        for c in changes {
            match c {
                Change::Put { key, value, .. } => {
                    m.insert(*key, value.to_vec());
                }
                Change::Delete { key } => {
                    m.remove(key);
                }
            }
        }
    }
}

fn opts() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        delta_bytes_compact: 64 << 10,
        ..Options::default()
    }
}

#[test]
fn an_attached_applier_mirrors_the_keyspace_through_load_writes_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), opts()).unwrap();
        let docs = db.create_keyspace("docs").unwrap();
        let other = db.create_keyspace("other").unwrap();
        for k in 0..500u64 {
            docs.put(k, &k.to_le_bytes()).unwrap();
        }
        db.snapshot().unwrap();
        for k in 400..600u64 {
            docs.put(k, &[1; 300]).unwrap();
        }
        let m = Arc::new(Mirror::default());
        db.keyspace("docs").unwrap().attach(m.clone()).unwrap();
        assert_eq!(
            *m.map.lock(),
            stored(&db, "docs"),
            "the load missed entries"
        );
        m.last_seq.store(0, Ordering::Relaxed);

        // Concurrent writers to this keyspace and another: every acknowledged write is in the mirror
        // the moment it is acknowledged.
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let (docs, other, m) = (docs.clone(), other.clone(), m.clone());
                thread::spawn(move || {
                    for i in 0..300u64 {
                        let k = t * 10_000 + i;
                        docs.put(k, &[t as u8; 200]).unwrap();
                        assert_eq!(
                            m.map.lock().get(&k).map(Vec::as_slice),
                            Some(&[t as u8; 200][..]),
                            "acknowledged before the applier saw it"
                        );
                        other.put(k, b"x").unwrap();
                        if i % 7 == 0 {
                            docs.delete(k).unwrap();
                            assert!(!m.map.lock().contains_key(&k));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Batches across keyspaces, conditions, delete-ranges.
        let mut b = WriteBatch::new();
        b.put(&docs, 1, b"batched").put(&other, 1, b"not mine");
        db.write(b).unwrap();
        docs.put_if_absent(1, b"refused").unwrap_err();
        docs.delete_range(100..200).unwrap();
        assert_eq!(m.out_of_order.load(Ordering::Relaxed), 0);
        assert_eq!(*m.map.lock(), stored(&db, "docs"));
        // Nothing of `other` reached the mirror.
        assert_eq!(
            m.map.lock().get(&1).map(Vec::as_slice),
            Some(&b"batched"[..])
        );

        docs.detach();
        docs.put(7_777_777, b"unseen").unwrap();
        assert!(!m.map.lock().contains_key(&7_777_777));
    }
    // After a reopen (recovery from snapshot + WAL), attaching again rebuilds the same state.
    let db = Db::open(dir.path(), opts()).unwrap();
    let m = Arc::new(Mirror::default());
    db.keyspace("docs").unwrap().attach(m.clone()).unwrap();
    let s = stored(&db, "docs");
    assert!(s.contains_key(&7_777_777));
    assert_eq!(*m.map.lock(), s);
}

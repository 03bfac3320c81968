//! Backups of a real engine into a directory target: restore equals the source at the backup's
//! sequence number, incremental sends, crash leftovers, damage named and refused.

use std::{collections::BTreeMap, path::Path};

use kyrodb_backup::{DirTarget, Error, Progress, Source, Target};
use kyrodb_storage::{Db, Options};

fn open(dir: &Path) -> Db {
    Db::open(dir, Options::default()).unwrap()
}

fn contents(db: &Db) -> BTreeMap<(String, u64), Vec<u8>> {
    let mut out = BTreeMap::new();
    for name in db.keyspace_names() {
        let ks = db.keyspace(&name).unwrap();
        for (k, v) in ks.scan(.., usize::MAX).unwrap() {
            out.insert((name.clone(), k), v.to_vec());
        }
    }
    out
}

fn backup(db: &Db, t: &dyn Target, ms: u64) -> (kyrodb_backup::Manifest, Progress) {
    let p = Progress::default();
    let id = kyrodb_backup::id_for(ms);
    let m = kyrodb_backup::create(
        Source {
            db,
            collections: None,
        },
        t,
        &id,
        ms,
        &p,
    )
    .unwrap();
    (m, p)
}

#[test]
fn restore_equals_the_source_at_the_backup_and_later_backups_send_only_new_files() {
    let d = tempfile::tempdir().unwrap();
    let db = open(&d.path().join("src"));
    let a = db.create_keyspace("a").unwrap();
    let b = db.create_keyspace("b").unwrap();
    for i in 0..2_000u64 {
        a.put(i, &format!("a{i}").into_bytes()).unwrap();
        b.put(i, &format!("b{i}").into_bytes()).unwrap();
    }
    let t = DirTarget::new(d.path().join("t"));
    let (m1, p1) = backup(&db, &t, 1_000);
    let at_first = contents(&db);
    assert_eq!(m1.seq, db.stats().visible_seq, "covers every write so far");
    assert_eq!(
        p1.files_sent.load(std::sync::atomic::Ordering::Relaxed),
        m1.files.len() as u64
    );

    b.put(5, b"changed").unwrap();
    let (m2, p2) = backup(&db, &t, 2_000);
    assert!(m2.seq > m1.seq);
    // a's snapshot files are unchanged: only b's two files and the engine MANIFEST are new.
    assert_eq!(p2.files_sent.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(
        p2.files_skipped.load(std::sync::atomic::Ordering::Relaxed),
        m2.files.len() as u64 - 3
    );
    let at_second = contents(&db);
    // Never part of a backup: a write after it.
    a.put(9_999, b"later").unwrap();

    let listed = kyrodb_backup::list(&t).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, m1.id);
    kyrodb_backup::verify(&t, None, &|_| {}).unwrap();

    for (m, want) in [(&m1, &at_first), (&m2, &at_second)] {
        let dst = d.path().join(format!("restored-{}", m.id));
        kyrodb_backup::restore(&t, Some(&m.id), &dst, &|_| {}).unwrap();
        let r = open(&dst);
        let mut got = contents(&r);
        // The restore's one addition: the seed key in the reserved `_raft` keyspace.
        assert_eq!(
            got.remove(&("_raft".to_owned(), 2)).as_deref(),
            Some(&b"restored"[..])
        );
        assert_eq!(&got, want);
        assert!(r.stats().visible_seq > m.seq);
    }
    // No temporary checkpoint is left in the data directory.
    let left: Vec<_> = std::fs::read_dir(db.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".backup-"))
        .collect();
    assert!(left.is_empty());
}

#[test]
fn objects_without_a_manifest_are_not_a_backup_and_damage_is_named_and_refused() {
    let d = tempfile::tempdir().unwrap();
    let db = open(&d.path().join("src"));
    let ks = db.keyspace("default").unwrap();
    for i in 0..5_000u64 {
        ks.put(i, &[(i % 251) as u8; 100]).unwrap();
    }
    let t = DirTarget::new(d.path().join("t"));
    // A crashed backup's leftovers: an object and a temporary file, no manifest.
    t.put_bytes("data/0123456789abcdef0123456789abcdef", b"orphan")
        .unwrap();
    std::fs::write(d.path().join("t/data/.x.1-1.partial"), b"half").unwrap();
    assert!(kyrodb_backup::list(&t).unwrap().is_empty());
    assert!(matches!(
        kyrodb_backup::restore(&t, None, &d.path().join("r0"), &|_| {}),
        Err(Error::NotFound(_))
    ));

    let (m, _) = backup(&db, &t, 5_000);
    let f = m.files.iter().find(|f| f.path.ends_with(".data")).unwrap();
    let obj = d.path().join("t").join(kyrodb_backup::data_key(&f.hash));
    let mut bytes = std::fs::read(&obj).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&obj, &bytes).unwrap();
    match kyrodb_backup::verify(&t, None, &|_| {}) {
        Err(Error::Damaged {
            path,
            object,
            offset,
            ..
        }) => {
            assert_eq!(path, f.path);
            assert_eq!(object, kyrodb_backup::data_key(&f.hash));
            assert_eq!(offset, 0);
        }
        other => panic!("{other:?}"),
    }
    let dst = d.path().join("r1");
    let e = kyrodb_backup::restore(&t, None, &dst, &|_| {}).unwrap_err();
    assert!(e.to_string().contains(&f.path), "{e}");
    assert!(!dst.exists());
    // Truncated: named with the length it has.
    std::fs::write(&obj, &bytes[..50]).unwrap();
    let e = kyrodb_backup::verify(&t, None, &|_| {}).unwrap_err();
    assert!(
        e.to_string()
            .contains("50 bytes where the manifest records"),
        "{e}"
    );
}

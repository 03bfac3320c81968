//! Checkpoints: a copy of the durable state that opens as a database, and installing one over
//! another database's files (what a Raft snapshot is; docs/design/cluster.md, "Snapshots").

use kyrodb_storage::{install_checkpoint, Db, Options};

#[test]
fn a_checkpoint_holds_exactly_what_was_written_before_it_and_installs_over_other_data() {
    let d = tempfile::tempdir().unwrap();
    let db = Db::open(d.path().join("a"), Options::default()).unwrap();
    let ks = db.create_keyspace("docs").unwrap();
    let mut seqs = Vec::new();
    for k in 0..500u64 {
        seqs.push(ks.put(k, format!("v{k}").as_bytes()).unwrap());
    }
    ks.delete(7).unwrap();
    let cp = d.path().join("cp");
    let (files, covered) = db.checkpoint(&cp).unwrap();
    assert!(files.iter().any(|f| f == "MANIFEST"), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with(".data")), "{files:?}");
    assert!(
        db.checkpoint(&cp).is_err(),
        "an existing directory is refused"
    );
    // Later writes and compactions do not reach the checkpoint, nor remove its files.
    for k in 0..500u64 {
        ks.put(k, b"later").unwrap();
    }
    db.snapshot().unwrap();
    assert!(covered >= seqs[499]);

    // Another database, with other data (and a WAL), gets the checkpoint installed over it.
    let other = d.path().join("b");
    {
        let o = Db::open(&other, Options::default()).unwrap();
        let oks = o.create_keyspace("other").unwrap();
        for k in 0..50u64 {
            oks.put(k, b"old").unwrap();
        }
    }
    install_checkpoint(&other, &cp).unwrap();
    // Idempotent: a second call (a crash midway, then the next start) finishes the same way.
    install_checkpoint(&other, &cp).unwrap();
    let o = Db::open(&other, Options::default()).unwrap();
    assert!(o.keyspace("other").is_err(), "the old data is gone");
    let oks = o.keyspace("docs").unwrap();
    assert_eq!(oks.count(), 499);
    for k in [0u64, 1, 250, 499] {
        let e = oks.get_entry(k).unwrap().unwrap();
        assert_eq!(&*e.value, format!("v{k}").as_bytes());
        assert_eq!(
            e.seq, seqs[k as usize],
            "sequence numbers travel with the data"
        );
    }
    assert!(oks.get(7).unwrap().is_none());
    // It takes writes after the checkpoint's sequence numbers.
    assert!(oks.put(1, b"next").unwrap() > covered);

    // A checkpoint missing a file (or with one cut short) is refused, naming it.
    let cp2 = d.path().join("cp2");
    let (files2, _) = db.checkpoint(&cp2).unwrap();
    let data = files2.iter().find(|f| f.ends_with(".data")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(cp2.join(data))
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 1).unwrap();
    let e = install_checkpoint(&d.path().join("c"), &cp2)
        .unwrap_err()
        .to_string();
    assert!(e.contains(data.trim_start_matches("snap/")), "{e}");
}

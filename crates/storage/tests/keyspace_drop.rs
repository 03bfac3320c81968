//! Dropping keyspaces frees them: create/drop cycles go on far past `keyspaces_max`, across
//! snapshots, reopens and kill -9; a keyspace created again under a dropped one's name (and id)
//! starts empty, whatever of the old one sat in the delta, the snapshots or the log; handles to a
//! dropped keyspace read and write nothing, also when writes race the drop.

mod common;

use common::contents;

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use kyrodb_storage::{Applier, Change, Db, Error, FsyncPolicy, Options, WriteBatch};
use rand::{rngs::SmallRng, Rng, SeedableRng};

/// `default` and seven more.
const MAX: usize = 8;

fn opts() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        background_compaction: false,
        keyspaces_max: MAX,
        ..Options::default()
    }
}

fn names(db: &Db) -> Vec<String> {
    let mut n = db.keyspace_names();
    n.sort();
    n
}

#[test]
fn create_drop_cycles_go_on_past_keyspaces_max_across_snapshots_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(dir.path(), opts()).unwrap();
    // Three keyspaces stay live throughout; the other slots are created and dropped over and over.
    for n in ["keep0", "keep1", "keep2"] {
        db.create_keyspace(n).unwrap().put(1, n.as_bytes()).unwrap();
    }
    let cycles = 10 * MAX;
    for i in 0..cycles {
        let name = format!("tmp{i}");
        let ks = db
            .create_keyspace(&name)
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        assert!((ks.id() as usize) < MAX, "cycle {i}: id {}", ks.id());
        for k in 0..20u64 {
            ks.put(k, format!("{name}:{k}").as_bytes()).unwrap();
        }
        // A second one beside it, left for a later cycle to drop.
        let other = db.create_keyspace(&format!("other{i}")).unwrap();
        other.put(7, b"other").unwrap();
        if i > 0 {
            db.drop_keyspace(&format!("other{}", i - 1)).unwrap();
        }
        match i % 4 {
            0 => {
                db.snapshot().unwrap();
            }
            1 => {
                // Handles keep the directory locked.
                drop((ks, other));
                db = reopen(db, dir.path());
            }
            _ => {}
        }
        db.drop_keyspace(&name).unwrap();
        assert!(matches!(db.keyspace(&name), Err(Error::NoSuchKeyspace(_))));
    }
    db.snapshot().unwrap();
    let db = reopen(db, dir.path());
    let want: Vec<String> = ["default", "keep0", "keep1", "keep2"]
        .into_iter()
        .map(String::from)
        .chain([format!("other{}", cycles - 1)])
        .collect();
    let mut want = want;
    want.sort();
    assert_eq!(names(&db), want);
    for n in ["keep0", "keep1", "keep2"] {
        assert_eq!(
            contents(&db, n),
            BTreeMap::from([(1, n.as_bytes().to_vec())])
        );
    }
    let stats = db.stats();
    assert_eq!(stats.keyspaces.len(), 5, "only live keyspaces are reported");
    assert!(stats.keyspaces.iter().all(|k| (k.id as usize) < MAX));
    // The dropped keyspaces' snapshot files are gone: one file set per live keyspace at most.
    let bins = std::fs::read_dir(dir.path().join("snap"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "bin")
        .count();
    assert!(bins <= 5, "{bins} snapshot .bin files for 5 live keyspaces");
    // Full again: 8 live keyspaces is the cap, and dropping one makes room.
    for i in 0..3 {
        db.create_keyspace(&format!("fill{i}")).unwrap();
    }
    assert!(matches!(
        db.create_keyspace("one-too-many"),
        Err(Error::TooManyKeyspaces(MAX))
    ));
    db.drop_keyspace("fill0").unwrap();
    db.create_keyspace("one-too-many").unwrap();
}

/// Closes `db` and opens the directory again.
fn reopen(db: Db, dir: &std::path::Path) -> Db {
    drop(db);
    Db::open(dir, opts()).unwrap()
}

/// Where the dropped keyspace's data was when it was dropped, and when the new one is checked.
#[derive(Debug, Clone, Copy)]
enum Where {
    /// Only in the active delta (the log), then read live.
    Delta,
    /// In a snapshot and the delta, then read live.
    Snapshot,
    /// In the delta; drop and recreate, then reopen (replay holds drop and creation).
    DeltaReopen,
    /// In a snapshot and the delta; drop, reopen, then recreate.
    SnapshotReopenBetween,
    /// In a snapshot; drop and recreate, write, snapshot, reopen.
    SnapshotAfter,
}

#[test]
fn a_keyspace_created_again_under_a_dropped_name_starts_empty() {
    for w in [
        Where::Delta,
        Where::Snapshot,
        Where::DeltaReopen,
        Where::SnapshotReopenBetween,
        Where::SnapshotAfter,
    ] {
        for background in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let o = Options {
                background_compaction: background,
                ..opts()
            };
            let open = || Db::open(dir.path(), o.clone()).unwrap();
            let mut db = open();
            db.create_keyspace("before").unwrap().put(1, b"b").unwrap();
            let old = db.create_keyspace("docs").unwrap();
            let old_id = old.id();
            for k in 0..100u64 {
                old.put(k, b"old").unwrap();
            }
            if matches!(
                w,
                Where::Snapshot | Where::SnapshotReopenBetween | Where::SnapshotAfter
            ) {
                db.snapshot().unwrap();
                for k in 50..150u64 {
                    old.put(k, b"old, in the delta").unwrap();
                }
            }
            db.drop_keyspace("docs").unwrap();
            // (Handles keep the directory locked.)
            drop(old);
            if matches!(w, Where::SnapshotReopenBetween) {
                db = reopen_with(db, open);
            }
            let new = db.create_keyspace("docs").unwrap();
            assert_eq!(new.id(), old_id, "{w:?}: the lowest free id is reused");
            new.put(1_000, b"new").unwrap();
            drop(new);
            if matches!(w, Where::SnapshotAfter) {
                db.snapshot().unwrap();
            }
            if matches!(w, Where::DeltaReopen | Where::SnapshotAfter) {
                db = reopen_with(db, open);
            }
            let ks = db.keyspace("docs").unwrap();
            assert_eq!(
                contents(&db, "docs"),
                BTreeMap::from([(1_000, b"new".to_vec())]),
                "{w:?} (background compaction {background}): old keys resurrected"
            );
            assert_eq!(ks.count(), 1, "{w:?}");
            assert!(ks.get(5).unwrap().is_none(), "{w:?}");
            assert!(ks.get_entry(120).unwrap().is_none(), "{w:?}");
            assert_eq!(
                ks.multi_get(&[0, 60, 1_000]).unwrap()[2].as_deref(),
                Some(&b"new"[..])
            );
            assert!(ks.multi_get(&[0, 60]).unwrap().iter().all(Option::is_none));
            assert_eq!(
                contents(&db, "before"),
                BTreeMap::from([(1, b"b".to_vec())])
            );
            // And so after a last snapshot and reopen.
            db.snapshot().unwrap();
            drop(ks);
            let db = reopen_with(db, open);
            assert_eq!(
                contents(&db, "docs"),
                BTreeMap::from([(1_000, b"new".to_vec())]),
                "{w:?} (background compaction {background}) after reopen"
            );
            assert_eq!(db.keyspace("docs").unwrap().count(), 1);
        }
    }
}

fn reopen_with(db: Db, open: impl FnOnce() -> Db) -> Db {
    drop(db);
    open()
}

#[test]
fn a_handle_to_a_dropped_keyspace_reads_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let a = db.create_keyspace("a").unwrap();
    a.put(1, b"a").unwrap();
    db.drop_keyspace("a").unwrap();
    assert!(a.is_dropped());
    let b = db.create_keyspace("b").unwrap();
    assert_eq!(b.id(), a.id(), "b took a's id");
    b.put(2, b"b").unwrap();
    let gone = |r: Result<u64, Error>| matches!(r, Err(Error::NoSuchKeyspace(n)) if n == "a");
    assert!(gone(a.put(3, b"stale")));
    assert!(gone(a.delete(2)));
    assert!(gone(a.delete_range(..)));
    let mut batch = WriteBatch::new();
    batch.put(&b, 4, b"b").put(&a, 4, b"stale");
    assert!(gone(db.write(batch)), "a batch naming a dropped keyspace");
    assert!(matches!(a.get(2), Err(Error::NoSuchKeyspace(_))));
    assert!(matches!(a.scan(.., 10), Err(Error::NoSuchKeyspace(_))));
    assert!(matches!(a.multi_get(&[2]), Err(Error::NoSuchKeyspace(_))));
    assert_eq!(a.count(), 0);
    assert_eq!(contents(&db, "b"), BTreeMap::from([(2, b"b".to_vec())]));
    assert!(matches!(
        db.drop_keyspace("a"),
        Err(Error::NoSuchKeyspace(_))
    ));
    assert!(matches!(
        db.drop_keyspace("default"),
        Err(Error::InvalidOption(_))
    ));
    assert!(matches!(
        db.drop_keyspace("no spaces"),
        Err(Error::InvalidKeyspaceName(_))
    ));
    // The default keyspace is untouched by all of it.
    db.put(9, b"d").unwrap();
    assert_eq!(db.count(), 1);
}

#[derive(Default)]
struct Counter {
    changes: AtomicU64,
}

impl Applier for Counter {
    fn apply(&self, _seq: u64, changes: &[Change<'_>]) {
        self.changes
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
    }
}

#[test]
fn a_drop_detaches_the_applier_and_a_stale_detach_leaves_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let a = db.create_keyspace("a").unwrap();
    let seen = Arc::new(Counter::default());
    a.attach(seen.clone()).unwrap();
    a.put(1, b"x").unwrap();
    assert_eq!(seen.changes.load(Ordering::Relaxed), 1);
    db.drop_keyspace("a").unwrap();
    let b = db.create_keyspace("b").unwrap();
    assert_eq!(b.id(), a.id());
    let seen_b = Arc::new(Counter::default());
    b.attach(seen_b.clone()).unwrap();
    assert!(
        a.attach(seen.clone()).is_err(),
        "attach to a dropped keyspace"
    );
    a.detach();
    b.put(1, b"y").unwrap();
    assert_eq!(
        seen.changes.load(Ordering::Relaxed),
        1,
        "a's applier got b's write"
    );
    assert_eq!(
        seen_b.changes.load(Ordering::Relaxed),
        1,
        "a stale detach detached b's"
    );
}

/// Writers hammer a keyspace while it is dropped and another takes its id: every write either
/// landed before the drop or was refused, and the new keyspace holds none of them, before and
/// after a reopen.
#[test]
fn writes_racing_a_drop_never_land_in_the_keyspace_that_reuses_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        background_compaction: true,
        delta_bytes_compact: 32 << 10,
        ..opts()
    };
    let db = Db::open(dir.path(), o.clone()).unwrap();
    for round in 0..20u64 {
        let name = format!("hot{round}");
        let hot = db.create_keyspace(&name).unwrap();
        let stop = AtomicBool::new(false);
        let refused = AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (hot, stop, refused) = (&hot, &stop, &refused);
                s.spawn(move || {
                    let mut k = t << 32;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        match hot.put(k, b"stale") {
                            Ok(_) => {}
                            Err(Error::NoSuchKeyspace(_)) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(5));
            db.drop_keyspace(&name).unwrap();
            let fresh = db.create_keyspace(&format!("fresh{round}")).unwrap();
            assert_eq!(fresh.id(), hot.id());
            std::thread::sleep(Duration::from_millis(5));
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(
            refused.load(Ordering::Relaxed),
            4,
            "round {round}: every writer was refused"
        );
        let fresh = format!("fresh{round}");
        assert!(
            contents(&db, &fresh).is_empty(),
            "round {round}: a racing write landed"
        );
        assert_eq!(db.keyspace(&fresh).unwrap().count(), 0);
        db.drop_keyspace(&fresh).unwrap();
    }
    drop(db);
    let db = Db::open(dir.path(), o).unwrap();
    assert_eq!(names(&db), vec!["default".to_owned()]);
}

// ---- kill -9 ----

/// Names the child creates and drops; at most `LIVE_MAX` live at once with `keyspaces_max` =
/// `LIVE_MAX + 1` (default), so the cycles pass the cap many times.
const KILL_NAMES: &[&str] = &["n0", "n1", "n2", "n3", "n4"];
const LIVE_MAX: usize = 3;
const KILL_KEYS: u64 = 16;
const KILL_POINTS: &[&str] = &[
    "compaction::before_manifest",
    "compaction::after_manifest",
    "manifest::before_write",
    "fs::after_rename",
    "wal::after_write",
    "wal::after_rotate",
];

fn kill_opts() -> Options {
    Options {
        fsync: FsyncPolicy::Always,
        keyspaces_max: LIVE_MAX + 1,
        delta_bytes_compact: 8 << 10,
        wal_segment_bytes: 16 << 10,
        ..Options::default()
    }
}

/// The value of `key` written at `version` into the incarnation created at `tag`.
fn kill_value(tag: u64, version: u64) -> Vec<u8> {
    format!("{tag}:{version}").into_bytes()
}

#[test]
fn drop_kill_child() {
    let Ok(dir) = std::env::var("KYRODB_DROP_CHILD_DIR") else {
        return;
    };
    let mut version: u64 = std::env::var("KYRODB_DROP_VERSION")
        .unwrap()
        .parse()
        .unwrap();
    common::stop_at_kill_point();
    // The incarnation tag of each live keyspace, as the parent knows it.
    let mut tags: HashMap<String, u64> = std::env::var("KYRODB_DROP_TAGS")
        .unwrap()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (n, t) = s.split_once('=').unwrap();
            (n.to_owned(), t.parse().unwrap())
        })
        .collect();
    let db = Db::open(&dir, kill_opts()).unwrap();
    let mut live: Vec<String> = db
        .keyspace_names()
        .into_iter()
        .filter(|n| n != "default")
        .collect();
    live.sort();
    let mut known: Vec<String> = tags.keys().cloned().collect();
    known.sort();
    assert_eq!(live, known, "the parent's view of the live keyspaces");
    println!("READY");
    let mut rng = SmallRng::seed_from_u64(version);
    loop {
        version += 1;
        let live: Vec<&str> = KILL_NAMES
            .iter()
            .copied()
            .filter(|n| tags.contains_key(*n))
            .collect();
        let roll = rng.gen_range(0..20);
        if live.is_empty() || (live.len() < LIVE_MAX && roll < 4) {
            let free: Vec<&str> = KILL_NAMES
                .iter()
                .copied()
                .filter(|n| !tags.contains_key(*n))
                .collect();
            let name = free[rng.gen_range(0..free.len())];
            say(format!("I C {name} {version}"));
            db.create_keyspace(name).unwrap();
            tags.insert(name.to_owned(), version);
            say(format!("A C {name} {version}"));
        } else if roll < 7 {
            let name = live[rng.gen_range(0..live.len())];
            say(format!("I D {name}"));
            db.drop_keyspace(name).unwrap();
            tags.remove(name);
            say(format!("A D {name}"));
        } else if roll < 8 {
            say("I S".into());
            db.snapshot().unwrap();
            say("A S".into());
        } else {
            let name = live[rng.gen_range(0..live.len())];
            let key = rng.gen_range(0..KILL_KEYS);
            let v = kill_value(tags[name], version);
            say(format!("I P {name} {key} {version}"));
            db.keyspace(name).unwrap().put(key, &v).unwrap();
            say(format!("A P {name} {key} {version}"));
        }
    }
}

/// One line to the parent, flushed (not holding stdout: a fail point's callback prints too).
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// What the parent knows of one name.
#[derive(Debug, Default, Clone)]
struct KsModel {
    live: bool,
    /// The tag of its live incarnation.
    tag: u64,
    /// Acknowledged values: key → version.
    keys: HashMap<u64, u64>,
}

#[derive(Debug, Clone)]
enum Pending {
    Create(String, u64),
    Drop(String),
    Put(String, u64, u64),
}

fn run_drop_cycle(
    dir: &std::path::Path,
    model: &mut HashMap<String, KsModel>,
    version: u64,
    kill_at: Option<&str>,
    rng: &mut SmallRng,
) -> (usize, Option<Pending>) {
    let tags: Vec<String> = model
        .iter()
        .filter(|(_, m)| m.live)
        .map(|(n, m)| format!("{n}={}", m.tag))
        .collect();
    let lines = common::run_child(
        "drop_kill_child",
        &[
            ("KYRODB_DROP_CHILD_DIR", dir.display().to_string()),
            ("KYRODB_DROP_VERSION", version.to_string()),
            ("KYRODB_DROP_TAGS", tags.join(",")),
        ],
        kill_at,
        Duration::from_millis(rng.gen_range(0..300)),
    );
    // (A kill point may be reached while it opens: the compaction of the replayed log.)
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("READY") || l.ends_with("AT")),
        "the child did not start: {:?}",
        &lines[..lines.len().min(20)]
    );
    let mut pending = None;
    let mut acks = 0;
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        match f.as_slice() {
            ["I", "C", n, t] => pending = Some(Pending::Create(n.to_string(), t.parse().unwrap())),
            ["I", "D", n] => pending = Some(Pending::Drop(n.to_string())),
            ["I", "P", n, k, v] => {
                pending = Some(Pending::Put(
                    n.to_string(),
                    k.parse().unwrap(),
                    v.parse().unwrap(),
                ))
            }
            ["I", "S"] | ["A", "S"] => {}
            ["A", "C", n, t] => {
                let m = model.entry(n.to_string()).or_default();
                assert!(!m.live);
                *m = KsModel {
                    live: true,
                    tag: t.parse().unwrap(),
                    keys: HashMap::new(),
                };
                pending = None;
                acks += 1;
            }
            ["A", "D", n] => {
                let m = model.get_mut(*n).unwrap();
                m.live = false;
                m.keys.clear();
                pending = None;
                acks += 1;
            }
            ["A", "P", n, k, v] => {
                model
                    .get_mut(*n)
                    .unwrap()
                    .keys
                    .insert(k.parse().unwrap(), v.parse().unwrap());
                pending = None;
                acks += 1;
            }
            _ => {}
        }
    }
    (acks, pending)
}

fn verify_drop_cycle(
    dir: &std::path::Path,
    model: &mut HashMap<String, KsModel>,
    pending: Option<Pending>,
    cycle: usize,
) {
    let db = Db::open(dir, kill_opts()).unwrap_or_else(|e| panic!("cycle {cycle}: reopen: {e}"));
    let live: Vec<String> = db.keyspace_names();
    for name in KILL_NAMES {
        let m = model.entry(name.to_string()).or_default();
        let is_live = live.iter().any(|n| n == name);
        match &pending {
            Some(Pending::Create(n, t)) if n == name => {
                assert!(!m.live, "cycle {cycle}: created while live");
                if is_live {
                    // The creation was durable: the new incarnation, empty.
                    *m = KsModel {
                        live: true,
                        tag: *t,
                        keys: HashMap::new(),
                    };
                }
            }
            Some(Pending::Drop(n)) if n == name => {
                if !is_live {
                    m.live = false;
                    m.keys.clear();
                }
            }
            _ => assert_eq!(
                is_live, m.live,
                "cycle {cycle}: {name} live {is_live}, acknowledged {}",
                m.live
            ),
        }
        if !is_live {
            continue;
        }
        let ks = db.keyspace(name).unwrap();
        let found: BTreeMap<u64, Vec<u8>> = ks
            .scan(.., usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(
            ks.count(),
            found.len() as u64,
            "cycle {cycle}: {name}'s count is not what a scan finds"
        );
        for (k, v) in &found {
            let text = String::from_utf8_lossy(v);
            let tag: u64 = text.split(':').next().unwrap().parse().unwrap();
            assert_eq!(
                tag, m.tag,
                "cycle {cycle}: {name} key {k} holds {text} from an earlier incarnation (live one: {})",
                m.tag
            );
        }
        let mut want: BTreeMap<u64, Vec<u8>> = m
            .keys
            .iter()
            .map(|(k, v)| (*k, kill_value(m.tag, *v)))
            .collect();
        if let Some(Pending::Put(n, k, v)) = &pending {
            if n == name && found.get(k) == Some(&kill_value(m.tag, *v)) {
                want.insert(*k, kill_value(m.tag, *v));
                m.keys.insert(*k, *v);
            }
        }
        assert_eq!(found, want, "cycle {cycle}: {name}");
    }
    db.verify()
        .unwrap_or_else(|e| panic!("cycle {cycle}: scrub: {e}"));
}

#[test]
fn kill9_during_create_drop_cycles_never_resurrects_a_dropped_keyspace() {
    if std::env::var("KYRODB_DROP_CHILD_DIR").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cycles: usize = std::env::var("KYRODB_KILL_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(60);
    let mut rng = SmallRng::seed_from_u64(0xd209);
    let mut model: HashMap<String, KsModel> = HashMap::new();
    let mut acks = 0;
    for cycle in 0..cycles {
        let kill_at = (cycle % 3 == 2).then(|| KILL_POINTS[rng.gen_range(0..KILL_POINTS.len())]);
        let version = (cycle as u64 + 1) << 32;
        let (a, pending) = run_drop_cycle(dir.path(), &mut model, version, kill_at, &mut rng);
        acks += a;
        verify_drop_cycle(dir.path(), &mut model, pending, cycle);
    }
    assert!(acks > cycles * 5, "too few acknowledged operations: {acks}");
}

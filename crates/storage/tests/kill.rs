//! kill -9 at random moments — and at named points inside compaction, snapshot writing, manifest
//! replacement and WAL rotation — never loses an acknowledged write. One writer also calls
//! `Db::snapshot` now and then, which rotates the WAL and deletes the segments it covers.
//!
//! The test binary re-runs itself as the writer child (`KYRODB_KILL_CHILD_DIR` set). The child prints
//! an intent line before each write and an ack line after it returns; the parent SIGKILLs it, reopens
//! the database and checks every key against what was acknowledged, and that the exact key count
//! equals the keys a scan finds. Writes mix plain puts, puts with a (long) TTL, compare-and-set puts
//! on the sequence number of the writer's own last acknowledged write, and deletes. Cycles: 200, or
//! `KYRODB_KILL_CYCLES`.

mod common;

use std::{collections::HashMap, time::Duration};

use kyrodb_storage::{Db, FsyncPolicy, Options};
use rand::{rngs::SmallRng, Rng, SeedableRng};

const KEYS_PER_WRITER: u64 = 64;
const WRITERS: u64 = 4;
/// Fail points the child can be told to stop at (the parent kills it there).
const KILL_POINTS: &[&str] = &[
    "snapshot::after_data_sync",
    "snapshot::after_rename",
    "compaction::before_manifest",
    "manifest::before_write",
    "fs::before_rename",
    "fs::after_rename",
    "compaction::after_manifest",
    "wal::after_write",
    "wal::after_rotate",
];

fn opts() -> Options {
    Options {
        fsync: FsyncPolicy::Always,
        delta_bytes_compact: 16 << 10,
        wal_segment_bytes: 32 << 10,
        ..Options::default()
    }
}

/// The value written for (key, version): its length and bytes depend on both.
fn value(key: u64, version: u64) -> Vec<u8> {
    let len = ((key * 131 + version * 31) % 700) as usize;
    let mut v = format!("{key}:{version}:").into_bytes();
    v.extend((0..len).map(|i| (i as u64 ^ key ^ version) as u8));
    v
}

#[test]
fn kill_child() {
    let Ok(dir) = std::env::var("KYRODB_KILL_CHILD_DIR") else {
        return;
    };
    let start_version: u64 = std::env::var("KYRODB_KILL_VERSION")
        .unwrap()
        .parse()
        .unwrap();
    common::stop_at_kill_point();
    let db = Db::open(&dir, opts()).unwrap();
    println!("READY");
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let db = &db;
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(start_version ^ (w << 40));
                let mut version = start_version;
                // Sequence number of this run's last acknowledged put of each key (this writer owns
                // its keys, so a compare-and-set on it must hold).
                let mut last_put: HashMap<u64, u64> = HashMap::new();
                loop {
                    version += 1;
                    let key = w * KEYS_PER_WRITER + rng.gen_range(0..KEYS_PER_WRITER);
                    let delete = rng.gen_ratio(1, 8);
                    // Intent first: once the write is durable the parent may see it, acked or not.
                    println!("I {key} {} {}", version * WRITERS + w, delete as u8);
                    let v = value(key, version * WRITERS + w);
                    let r = if delete {
                        last_put.remove(&key);
                        db.delete(key)
                    } else {
                        let r = match (rng.gen_range(0..3), last_put.get(&key)) {
                            (0, _) => db.default_keyspace().put_with_ttl(
                                key,
                                &v,
                                Duration::from_secs(24 * 3600),
                            ),
                            (1, Some(&seq)) => db.default_keyspace().put_if_seq(key, &v, seq),
                            _ => db.put(key, &v),
                        };
                        match r {
                            Ok(seq) => {
                                last_put.insert(key, seq);
                            }
                            Err(_) => {
                                last_put.remove(&key);
                            }
                        }
                        r
                    };
                    // Writer 0 also takes a snapshot now and then: it rotates the WAL and deletes the
                    // segments the new manifest covers, which a kill may interrupt anywhere.
                    if w == 0 && version.is_multiple_of(50) {
                        if let Err(e) = db.snapshot() {
                            println!("E {e}");
                            return;
                        }
                    }
                    match r {
                        Ok(seq) => println!("A {key} {} {seq}", version * WRITERS + w),
                        Err(e) => {
                            println!("E {e}");
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// Per key: the acknowledged state and writes in flight after it.
#[derive(Default, Clone)]
struct KeyModel {
    /// `Some(Some(v))` acked value version, `Some(None)` acked delete, `None` nothing acked yet.
    acked: Option<Option<u64>>,
    /// Versions written after the last ack whose outcome is unknown (`None` = delete).
    in_flight: Vec<Option<u64>>,
}

fn run_cycle(
    dir: &std::path::Path,
    model: &mut HashMap<u64, KeyModel>,
    version: u64,
    kill_at: Option<&str>,
    rng: &mut SmallRng,
) -> (usize, bool) {
    let lines = common::run_child(
        "kill_child",
        &[
            ("KYRODB_KILL_CHILD_DIR", dir.display().to_string()),
            ("KYRODB_KILL_VERSION", version.to_string()),
        ],
        kill_at,
        Duration::from_millis(rng.gen_range(0..40)),
    );
    let acks = lines.iter().filter(|l| l.starts_with("A ")).count();
    let stopped_at_point = lines.iter().any(|l| l == "AT");
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        match f.as_slice() {
            ["I", key, ver, del] => {
                let m = model.entry(key.parse().unwrap()).or_default();
                m.in_flight
                    .push((*del == "0").then(|| ver.parse().unwrap()));
            }
            ["A", key, _ver, _seq] => {
                let m = model.entry(key.parse().unwrap()).or_default();
                let done = m.in_flight.pop().expect("ack without intent");
                assert!(
                    m.in_flight.is_empty(),
                    "one writer per key writes sequentially"
                );
                m.acked = Some(done);
            }
            ["E", ..] => panic!("child write failed: {l}"),
            _ => {}
        }
    }
    (acks, stopped_at_point)
}

fn verify(dir: &std::path::Path, model: &mut HashMap<u64, KeyModel>, cycle: usize) {
    let db = Db::open(dir, opts()).unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
    for key in 0..WRITERS * KEYS_PER_WRITER {
        let got = db
            .get(key)
            .unwrap_or_else(|e| panic!("cycle {cycle}: get {key}: {e}"))
            .map(|v| v.to_vec());
        let m = model.entry(key).or_default();
        let mut allowed: Vec<Option<u64>> = m.in_flight.clone();
        allowed.push(m.acked.unwrap_or(None));
        let found = allowed.iter().find(|a| a.map(|ver| value(key, ver)) == got);
        let Some(found) = found else {
            panic!(
                "cycle {cycle}: key {key} holds {:?}; acked {:?}, in flight {:?}",
                got.map(|g| g.len()),
                m.acked,
                m.in_flight
            )
        };
        // What recovery shows is now the acknowledged state for the next cycle.
        m.acked = Some(*found);
        m.in_flight.clear();
    }
    let live = db
        .scan(.., usize::MAX)
        .unwrap_or_else(|e| panic!("cycle {cycle}: scan: {e}"))
        .len() as u64;
    assert_eq!(
        db.count(),
        live,
        "cycle {cycle}: the key count is not the keys a scan finds"
    );
    db.verify()
        .unwrap_or_else(|e| panic!("cycle {cycle}: scrub: {e}"));
}

#[test]
fn kill9_at_random_moments_loses_no_acknowledged_write() {
    if std::env::var("KYRODB_KILL_CHILD_DIR").is_ok() {
        return;
    }
    let cycles: usize = std::env::var("KYRODB_KILL_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let mut model = HashMap::new();
    let mut rng = SmallRng::seed_from_u64(0x6b696c6c);
    let mut acks_total = 0usize;
    let mut points_hit = std::collections::HashSet::new();
    for cycle in 0..cycles {
        // Every third cycle stops at a named point inside compaction or manifest replacement.
        let kill_at = (cycle % 3 == 2).then(|| KILL_POINTS[(cycle / 3) % KILL_POINTS.len()]);
        let (acks, hit) = run_cycle(
            dir.path(),
            &mut model,
            (cycle as u64 + 1) << 32,
            kill_at,
            &mut rng,
        );
        acks_total += acks;
        if hit {
            points_hit.insert(kill_at.unwrap_or_default());
        }
        verify(dir.path(), &mut model, cycle);
        if cycle % 20 == 0 {
            eprintln!(
                "kill cycle {cycle}/{cycles}: {acks_total} acknowledged writes checked so far"
            );
        }
    }
    let db = Db::open(dir.path(), opts()).unwrap();
    let s = db.stats();
    assert!(
        s.compactions > 0 || s.manifest_generation > 1,
        "compaction never ran: the test did not exercise it"
    );
    assert!(
        acks_total > cycles,
        "too few acknowledged writes ({acks_total}) to mean anything"
    );
    if cycles >= 3 * KILL_POINTS.len() {
        for p in KILL_POINTS {
            assert!(points_hit.contains(p), "no cycle was killed at {p}");
        }
    }
    eprintln!("{cycles} kill cycles, {acks_total} acknowledged writes, all present after recovery");
}

//! Model-based property test: random operation sequences against a `BTreeMap` per keyspace, including
//! compactions (explicit and size-triggered in the background) and close/reopen. The model tracks each
//! key's sequence number too, so compare-and-set, delete-range, TTL puts and key counts are checked
//! against it.

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use kyrodb_storage::{Db, Error, FsyncPolicy, Options, WriteBatch};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    MultiGet {
        ks: usize,
        keys: Vec<u64>,
    },
    Put {
        ks: usize,
        key: u64,
        len: usize,
    },
    Delete {
        ks: usize,
        key: u64,
    },
    Batch {
        ks: usize,
        keys: Vec<(u64, bool)>,
    },
    Get {
        ks: usize,
        key: u64,
    },
    Scan {
        ks: usize,
        start: u64,
        len: u64,
        limit: usize,
    },
    /// A put that expires an hour from now, or one already expired (a delete, for the model).
    PutTtl {
        ks: usize,
        key: u64,
        expired: bool,
    },
    DeleteRange {
        ks: usize,
        start: u64,
        len: u64,
    },
    PutIfAbsent {
        ks: usize,
        key: u64,
    },
    /// Compare-and-set with the key's current sequence number, or a stale one.
    PutIfSeq {
        ks: usize,
        key: u64,
        stale: bool,
    },
    Count {
        ks: usize,
    },
    Snapshot,
    Reopen,
}

fn key() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..64, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, key(), 0..300usize).prop_map(|(ks, key, len)| Op::Put { ks, key, len }),
        2 => (0..2usize, key()).prop_map(|(ks, key)| Op::Delete { ks, key }),
        2 => (0..2usize, prop::collection::vec((key(), any::<bool>()), 0..8)).prop_map(|(ks, keys)| Op::Batch { ks, keys }),
        4 => (0..2usize, key()).prop_map(|(ks, key)| Op::Get { ks, key }),
        2 => (0..2usize, prop::collection::vec(key(), 0..12)).prop_map(|(ks, keys)| Op::MultiGet { ks, keys }),
        2 => (0..2usize, key(), prop_oneof![0u64..80, Just(u64::MAX)], 0..20usize)
            .prop_map(|(ks, start, len, limit)| Op::Scan { ks, start, len, limit }),
        2 => (0..2usize, key(), any::<bool>()).prop_map(|(ks, key, expired)| Op::PutTtl { ks, key, expired }),
        1 => (0..2usize, key(), prop_oneof![0u64..20, Just(u64::MAX)]).prop_map(|(ks, start, len)| Op::DeleteRange { ks, start, len }),
        2 => (0..2usize, key()).prop_map(|(ks, key)| Op::PutIfAbsent { ks, key }),
        2 => (0..2usize, key(), any::<bool>()).prop_map(|(ks, key, stale)| Op::PutIfSeq { ks, key, stale }),
        1 => (0..2usize).prop_map(|ks| Op::Count { ks }),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Reopen),
    ]
}

fn opts() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        delta_bytes_compact: 4096,
        delta_bytes_budget: 1 << 20,
        wal_segment_bytes: 8192,
        ..Options::default()
    }
}

fn value(key: u64, step: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (key as usize ^ step ^ i) as u8).collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(dir.path(), opts()).unwrap();
    let names = ["default", "docs"];
    let mut model: [BTreeMap<u64, Vec<u8>>; 2] = Default::default();
    // The sequence number of each live key's write.
    let mut seqs: [BTreeMap<u64, u64>; 2] = Default::default();
    for (step, op) in ops.into_iter().enumerate() {
        let ks = |i: usize, db: &Db| db.create_keyspace(names[i]).unwrap();
        match op {
            Op::Put { ks: i, key, len } => {
                let v = value(key, step, len);
                let seq = ks(i, &db).put(key, &v).unwrap();
                model[i].insert(key, v);
                seqs[i].insert(key, seq);
            }
            Op::Delete { ks: i, key } => {
                ks(i, &db).delete(key).unwrap();
                model[i].remove(&key);
                seqs[i].remove(&key);
            }
            Op::PutTtl {
                ks: i,
                key,
                expired,
            } => {
                let k = ks(i, &db);
                let v = value(key, step, 9);
                let at = if expired {
                    now_ms() - 1
                } else {
                    now_ms() + 3_600_000
                };
                let mut b = WriteBatch::new();
                b.put_expiring_at(&k, key, &v, at);
                let seq = db.write(b).unwrap();
                if expired {
                    model[i].remove(&key);
                    seqs[i].remove(&key);
                } else {
                    model[i].insert(key, v);
                    seqs[i].insert(key, seq);
                }
            }
            Op::DeleteRange { ks: i, start, len } => {
                let end = start.saturating_add(len);
                ks(i, &db).delete_range(start..=end).unwrap();
                let doomed: Vec<u64> = model[i].range(start..=end).map(|(k, _)| *k).collect();
                for k in doomed {
                    model[i].remove(&k);
                    seqs[i].remove(&k);
                }
            }
            Op::PutIfAbsent { ks: i, key } => {
                let v = value(key, step, 5);
                match (
                    ks(i, &db).put_if_absent(key, &v),
                    model[i].contains_key(&key),
                ) {
                    (Ok(seq), false) => {
                        model[i].insert(key, v);
                        seqs[i].insert(key, seq);
                    }
                    (Err(Error::ConditionFailed { current_seq, .. }), true) => {
                        prop_assert_eq!(current_seq, seqs[i].get(&key).copied());
                    }
                    (r, present) => {
                        prop_assert!(false, "put_if_absent {}: {:?}, present {}", key, r, present)
                    }
                }
            }
            Op::PutIfSeq { ks: i, key, stale } => {
                let v = value(key, step, 6);
                let current = seqs[i].get(&key).copied();
                let ask = match current {
                    Some(s) if !stale => s,
                    Some(s) => s - 1,
                    None => 1,
                };
                match ks(i, &db).put_if_seq(key, &v, ask) {
                    Ok(seq) => {
                        prop_assert_eq!(Some(ask), current, "put_if_seq {} succeeded", key);
                        model[i].insert(key, v);
                        seqs[i].insert(key, seq);
                    }
                    Err(Error::ConditionFailed { current_seq, .. }) => {
                        prop_assert_eq!(current_seq, current);
                        prop_assert!(Some(ask) != current, "put_if_seq {} refused", key);
                    }
                    Err(e) => prop_assert!(false, "{}", e),
                }
            }
            Op::Count { ks: i } => {
                prop_assert_eq!(
                    ks(i, &db).count(),
                    model[i].len() as u64,
                    "count of {}",
                    names[i]
                );
            }
            Op::Batch { ks: i, keys } => {
                let k = ks(i, &db);
                let mut b = WriteBatch::new();
                for (key, put) in &keys {
                    if *put {
                        b.put(&k, *key, &value(*key, step, 17));
                    } else {
                        b.delete(&k, *key);
                    }
                }
                let seq = db.write(b).unwrap();
                for (key, put) in keys {
                    if put {
                        model[i].insert(key, value(key, step, 17));
                        seqs[i].insert(key, seq);
                    } else {
                        model[i].remove(&key);
                        seqs[i].remove(&key);
                    }
                }
            }
            Op::Get { ks: i, key } => {
                let got = ks(i, &db).get_entry(key).unwrap();
                prop_assert_eq!(
                    got.as_ref().map(|e| e.value.to_vec()),
                    model[i].get(&key).cloned(),
                    "get {} in {}",
                    key,
                    names[i]
                );
                prop_assert_eq!(
                    got.map(|e| e.seq),
                    seqs[i].get(&key).copied(),
                    "seq of {}",
                    key
                );
            }
            Op::MultiGet { ks: i, keys } => {
                let got: Vec<Option<Vec<u8>>> = ks(i, &db)
                    .multi_get(&keys)
                    .unwrap()
                    .into_iter()
                    .map(|v| v.map(|v| v.to_vec()))
                    .collect();
                let want: Vec<Option<Vec<u8>>> =
                    keys.iter().map(|k| model[i].get(k).cloned()).collect();
                prop_assert_eq!(got, want, "multi_get {:?} in {}", keys, names[i]);
            }
            Op::Scan {
                ks: i,
                start,
                len,
                limit,
            } => {
                let end = start.saturating_add(len);
                let got: Vec<(u64, Vec<u8>)> = ks(i, &db)
                    .scan(start..=end, limit)
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| (k, v.to_vec()))
                    .collect();
                let want: Vec<(u64, Vec<u8>)> = model[i]
                    .range(start..=end)
                    .take(limit)
                    .map(|(k, v)| (*k, v.clone()))
                    .collect();
                prop_assert_eq!(got, want, "scan {}..={} limit {}", start, end, limit);
            }
            Op::Snapshot => {
                let info = db.snapshot().unwrap();
                prop_assert_eq!(
                    info.covered_seq,
                    db.stats().visible_seq,
                    "snapshot covers every acknowledged write"
                );
                let on_disk: u64 = db.stats().keyspaces.iter().map(|k| k.snapshot_keys).sum();
                prop_assert_eq!(on_disk, (model[0].len() + model[1].len()) as u64);
            }
            Op::Reopen => {
                drop(db);
                db = Db::open(dir.path(), opts()).unwrap();
            }
        }
    }
    // Everything agrees at the end, after a final reopen.
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    db.verify().unwrap();
    for (i, name) in names.iter().enumerate() {
        let Ok(k) = db.keyspace(name) else {
            prop_assert!(model[i].is_empty());
            continue;
        };
        let got: Vec<(u64, Vec<u8>)> = k
            .scan(.., usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        let want: Vec<(u64, Vec<u8>)> = model[i].iter().map(|(k, v)| (*k, v.clone())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(k.count(), model[i].len() as u64);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES raises it for a longer soak.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48), ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_btreemap_model(ops in prop::collection::vec(op(), 1..160)) {
        run(ops)?;
    }
}

//! `bench/run storage`: KyroDB's side of the storage benchmark (the script adds PostgreSQL's).
//!
//! Prints progress to stderr and one JSON object as the last stdout line:
//! durable puts/s and p99 ack latency at 1/16/64 writers (fsync always, 100-byte values), WAL replay
//! speed on open, and get latency p50/p99 over 10M keys after compaction.
//!
//! Args: `--quick`, `--dir PATH` (default: a temp dir under $TMPDIR), `--secs N`, `--replay-mb N`,
//! `--keys N`.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use kyrodb_storage::{Db, FsyncPolicy, Options, WriteBatch};
use rand::{rngs::SmallRng, Rng, SeedableRng};

const VALUE_BYTES: usize = 100;

struct Args {
    quick: bool,
    dir: PathBuf,
    secs: u64,
    replay_mb: u64,
    keys: u64,
    only: Option<String>,
    /// Leave the replay's data directory in place (to replay it again under a profiler:
    /// `storage-* --replay-open DIR` prints the seconds one open takes).
    keep_replay_dir: bool,
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        dir: std::env::temp_dir(),
        secs: 10,
        replay_mb: 1024,
        keys: 10_000_000,
        only: None,
        keep_replay_dir: false,
    };
    let mut it = std::env::args().skip(1);
    let mut explicit_replay = None;
    let mut explicit_secs = None;
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => a.quick = true,
            "--dir" => a.dir = PathBuf::from(it.next().expect("--dir PATH")),
            "--secs" => explicit_secs = it.next().and_then(|s| s.parse().ok()),
            "--replay-mb" => explicit_replay = it.next().and_then(|s| s.parse().ok()),
            "--only" => a.only = it.next(),
            "--keep-replay-dir" => a.keep_replay_dir = true,
            "--keys" => a.keys = it.next().and_then(|s| s.parse().ok()).expect("--keys N"),
            _ => {} // cargo bench passes --bench
        }
    }
    if a.quick {
        a.secs = 4;
        a.replay_mb = 256;
    }
    a.secs = explicit_secs.unwrap_or(a.secs);
    a.replay_mb = explicit_replay.unwrap_or(a.replay_mb);
    a
}

fn value(key: u64) -> [u8; VALUE_BYTES] {
    let mut v = [0u8; VALUE_BYTES];
    v[..8].copy_from_slice(&key.to_le_bytes());
    v
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `writers` threads put random keys for `secs`; returns (puts/s, p50 µs, p99 µs).
fn durable_puts(base: &Path, writers: usize, secs: u64) -> (f64, f64, f64) {
    let dir = fresh(base, &format!("puts-{writers}"));
    let db = Db::open(
        &dir,
        Options {
            fsync: FsyncPolicy::Always,
            ..Options::default()
        },
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let mut lat: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (db, stop) = (&db, &stop);
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(w as u64);
                    let mut lat = Vec::with_capacity(1 << 16);
                    while !stop.load(Ordering::Relaxed) {
                        let k = rng.gen::<u64>();
                        let t = Instant::now();
                        db.put(k, &value(k)).unwrap();
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    (
        lat.len() as f64 / elapsed,
        percentile(&lat, 0.5) as f64 / 1e3,
        percentile(&lat, 0.99) as f64 / 1e3,
    )
}

/// No fsync and no compaction: the whole log stays in the WAL to be replayed.
fn replay_opts() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        delta_bytes_compact: 64 << 30,
        delta_bytes_budget: 64 << 30,
        background_compaction: false,
        ..Options::default()
    }
}

/// Writes about `mb` MiB of WAL (100-byte puts in batches of 1000, no fsync, no compaction), then times
/// reopening. Returns (wal bytes, seconds, records).
fn replay(base: &Path, mb: u64, keep: bool) -> (u64, f64, u64) {
    let dir = fresh(base, "replay");
    let opts = replay_opts();
    let db = Db::open(&dir, opts.clone()).unwrap();
    let ks = db.default_keyspace().clone();
    let mut rng = SmallRng::seed_from_u64(7);
    let target = mb << 20;
    let mut written = 0u64;
    let mut records = 0u64;
    while written < target {
        let mut b = WriteBatch::new();
        for _ in 0..1000 {
            let k = rng.gen::<u64>();
            b.put(&ks, k, &value(k));
        }
        db.write(b).unwrap();
        written += 1000 * (VALUE_BYTES as u64 + 17) + 17 + 4;
        records += 1000;
    }
    drop(ks);
    drop(db);
    // A log being replayed after a crash is on disk: flush it first, so replay does not compete with
    // the kernel writing back the gigabyte just written.
    for e in std::fs::read_dir(dir.join("wal")).unwrap() {
        std::fs::File::open(e.unwrap().path())
            .unwrap()
            .sync_all()
            .unwrap();
    }
    let wal_bytes: u64 = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    // Reopen in a fresh process, as a restart after a crash does (page cache warm from the writes). In
    // this process the freed delta would leave glibc consolidating millions of free chunks on the next
    // large allocation, which a real restart never pays.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--replay-open")
        .arg(&dir)
        .output()
        .unwrap();
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("replay child prints seconds");
    if keep {
        eprintln!("  kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    (wal_bytes, secs, records)
}

/// Child mode: open `dir` (replaying its WAL), print the seconds it took.
fn replay_open(dir: &Path) {
    let opts = replay_opts();
    let t = Instant::now();
    let db = Db::open(dir, opts).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(db.stats().visible_seq > 0);
    println!("{secs}");
    std::process::exit(0);
}

/// Loads `n` keys, compacts, then measures single gets of random present keys.
fn gets(base: &Path, n: u64) -> (f64, f64, f64) {
    let dir = fresh(base, "gets");
    let opts = Options {
        fsync: FsyncPolicy::Never,
        delta_bytes_compact: 256 << 20,
        delta_bytes_budget: 2 << 30,
        ..Options::default()
    };
    let db = Db::open(&dir, opts).unwrap();
    let ks = db.default_keyspace().clone();
    // Keys spread over the u64 space (a multiplicative hash of 0..n), not a dense 0..n.
    let key_of = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    for chunk in 0..n.div_ceil(10_000) {
        let mut b = WriteBatch::new();
        for i in chunk * 10_000..((chunk + 1) * 10_000).min(n) {
            b.put(&ks, key_of(i), &value(i));
        }
        db.write(b).unwrap();
        if chunk % 100 == 0 {
            eprintln!(
                "  loaded {} of {n} keys ({:.0}s)",
                chunk * 10_000,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let info = db.snapshot().unwrap();
    eprintln!(
        "  compacted: {} keys, {} data bytes, {:.1}s total",
        info.keys,
        info.data_bytes,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(info.keys, n);
    drop(ks);
    let mut rng = SmallRng::seed_from_u64(11);
    let samples = 2_000_000usize;
    let probes: Vec<u64> = (0..samples).map(|_| key_of(rng.gen_range(0..n))).collect();
    // Warm the mapping once so we measure lookups, not first-touch page faults.
    db.warm();
    let mut checksum = 0usize;
    for k in probes.iter().take(200_000) {
        checksum += db.get(*k).unwrap().map_or(0, |v| v.len());
    }
    let mut lat = Vec::with_capacity(samples);
    let t_all = Instant::now();
    for k in &probes {
        let t = Instant::now();
        let v = db.get(*k).unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
        checksum += v.map_or(0, |v| v.len());
    }
    let mean = t_all.elapsed().as_nanos() as f64 / samples as f64;
    assert_eq!(
        checksum,
        (samples + 200_000) * VALUE_BYTES,
        "every probed key was found"
    );
    lat.sort_unstable();
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    (
        percentile(&lat, 0.5) as f64,
        percentile(&lat, 0.99) as f64,
        mean,
    )
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == "--replay-open") {
        return replay_open(Path::new(&argv[i + 1]));
    }
    let a = args();
    let base = a
        .dir
        .join(format!("kyrodb-bench-storage-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let mut out = serde_like::Obj::default();
    out.str("suite", "storage");
    out.num("value_bytes", VALUE_BYTES as f64);
    let run = |part: &str| a.only.as_deref().is_none_or(|o| o == part);
    for writers in [1usize, 16, 64].into_iter().filter(|_| run("puts")) {
        eprintln!(
            "durable puts, {writers} writers, fsync always, {}s ...",
            a.secs
        );
        let (rate, p50, p99) = durable_puts(&base, writers, a.secs);
        eprintln!("  {rate:.0} puts/s, p50 {p50:.0} µs, p99 {p99:.0} µs");
        out.num(&format!("puts_per_s_{writers}"), rate);
        out.num(&format!("put_p50_us_{writers}"), p50);
        out.num(&format!("put_p99_us_{writers}"), p99);
    }
    if run("replay") {
        eprintln!("WAL replay of {} MiB ...", a.replay_mb);
        let (bytes, secs, records) = replay(&base, a.replay_mb, a.keep_replay_dir);
        eprintln!("  {bytes} bytes, {records} records in {secs:.2}s");
        out.num("replay_bytes", bytes as f64);
        out.num("replay_records", records as f64);
        out.num("replay_s", secs);
        out.num("replay_gb_per_s", bytes as f64 / 1e9 / secs);
        out.num("replay_records_per_s", records as f64 / secs);
    }
    if run("gets") {
        eprintln!("gets over {} keys after compaction ...", a.keys);
        let (p50, p99, mean) = gets(&base, a.keys);
        eprintln!("  p50 {p50} ns, p99 {p99} ns, mean {mean:.0} ns");
        out.num("get_keys", a.keys as f64);
        out.num("get_p50_ns", p50);
        out.num("get_p99_ns", p99);
        out.num("get_mean_ns", mean);
    }
    if !a.keep_replay_dir {
        let _ = std::fs::remove_dir_all(&base);
    }
    println!("{}", out.finish());
}

/// A tiny JSON object writer (numbers and strings only), so the bench needs no serde.
mod serde_like {
    #[derive(Default)]
    pub(crate) struct Obj(Vec<String>);
    impl Obj {
        pub(crate) fn str(&mut self, k: &str, v: &str) {
            self.0.push(format!("\"{k}\":\"{v}\""));
        }
        pub(crate) fn num(&mut self, k: &str, v: f64) {
            let v = if v.is_finite() {
                format!("{}", (v * 1000.0).round() / 1000.0)
            } else {
                "null".into()
            };
            self.0.push(format!("\"{k}\":{v}"));
        }
        pub(crate) fn finish(self) -> String {
            format!("{{{}}}", self.0.join(","))
        }
    }
}

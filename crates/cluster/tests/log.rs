//! The Raft log store: round trips across segments, torn tails cut, damage refused with file and
//! offset, suffix truncation, purges, vote and committed index, and appends that survive kill -9.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use kyrodb_cluster::{Entry, Error, RaftLog, Vote};

fn payload(index: u64, term: u64) -> Vec<u8> {
    let n = (index % 97) as usize + 1;
    (0..n)
        .map(|i| (index as u8).wrapping_mul(31).wrapping_add(i as u8) ^ term as u8)
        .collect()
}

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..to)
        .map(|index| Entry {
            index,
            term,
            payload: payload(index, term),
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn entries_round_trip_across_segments_and_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, rec) = RaftLog::open(d.path(), 4096).unwrap();
    assert_eq!((rec.first, rec.last), (None, None));
    for chunk in entries(1, 1001, 3).chunks(37) {
        log.append(chunk).unwrap();
    }
    assert!(segments(d.path()).len() > 5, "rolled over");
    assert_eq!(log.read(1, 1001).unwrap(), entries(1, 1001, 3));
    assert_eq!(log.read(500, 510).unwrap(), entries(500, 510, 3));
    // Not consecutive, or not where the log ends: refused, nothing written.
    assert!(matches!(
        log.append(&entries(1002, 1003, 3)),
        Err(Error::Invalid(_))
    ));
    drop(log);
    let (log, rec) = RaftLog::open(d.path(), 4096).unwrap();
    assert_eq!(
        (rec.first, rec.last, rec.torn_bytes),
        (Some(1), Some(1000), 0)
    );
    assert_eq!(log.read(1, 1001).unwrap(), entries(1, 1001, 3));
}

#[test]
fn a_torn_tail_is_cut_and_appends_continue() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = RaftLog::open(d.path(), 1 << 20).unwrap();
    log.append(&entries(1, 101, 1)).unwrap();
    drop(log);
    let last = segments(d.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - 5).unwrap(); // the last record loses its end
    drop(f);
    let (mut log, rec) = RaftLog::open(d.path(), 1 << 20).unwrap();
    assert_eq!(rec.last, Some(99));
    assert!(rec.torn_bytes > 0);
    assert_eq!(log.read(1, 100).unwrap(), entries(1, 100, 1));
    log.append(&entries(100, 120, 2)).unwrap();
    drop(log);
    let (log, rec) = RaftLog::open(d.path(), 1 << 20).unwrap();
    assert_eq!((rec.last, rec.torn_bytes), (Some(119), 0));
    assert_eq!(log.read(100, 120).unwrap(), entries(100, 120, 2));
}

#[test]
fn damage_before_the_tail_is_refused_with_file_and_offset() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = RaftLog::open(d.path(), 2048).unwrap();
    for chunk in entries(1, 301, 1).chunks(10) {
        log.append(chunk).unwrap();
    }
    drop(log);
    let segs = segments(d.path());
    assert!(segs.len() >= 3);
    for victim in [&segs[1], segs.last().unwrap()] {
        let good = std::fs::read(victim).unwrap();
        let mut bad = good.clone();
        bad[16 + 30] ^= 0x01; // inside the first record's payload
        std::fs::write(victim, &bad).unwrap();
        let e = RaftLog::open(d.path(), 2048).unwrap_err();
        match &e {
            Error::Corrupt { path, offset, .. } => {
                assert_eq!(path, victim);
                assert_eq!(*offset, 16, "{e}");
            }
            other => panic!("{other}"),
        }
        std::fs::write(victim, &good).unwrap();
    }
    assert_eq!(RaftLog::open(d.path(), 2048).unwrap().1.last, Some(300));
}

#[test]
fn a_conflicting_suffix_is_truncated_durably() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = RaftLog::open(d.path(), 1024).unwrap();
    for chunk in entries(1, 201, 1).chunks(9) {
        log.append(chunk).unwrap();
    }
    log.truncate_from(57).unwrap();
    assert_eq!(log.last_index(), Some(56));
    log.append(&entries(57, 80, 2)).unwrap();
    let mut want = entries(1, 57, 1);
    want.extend(entries(57, 80, 2));
    assert_eq!(log.read(1, 1000).unwrap(), want);
    drop(log);
    let (log, rec) = RaftLog::open(d.path(), 1024).unwrap();
    assert_eq!(rec.last, Some(79));
    assert_eq!(log.read(1, 1000).unwrap(), want);
}

#[test]
fn purges_drop_whole_segments_and_survive_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = RaftLog::open(d.path(), 1024).unwrap();
    for chunk in entries(1, 401, 1).chunks(13) {
        log.append(chunk).unwrap();
    }
    let before = segments(d.path()).len();
    log.purge_to(250).unwrap();
    assert!(segments(d.path()).len() < before);
    assert_eq!(log.first_index(), Some(251));
    assert_eq!(log.read(1, 260).unwrap(), entries(251, 260, 1));
    assert!(log.truncate_from(200).is_err(), "below the purge point");
    drop(log);
    let (mut log, rec) = RaftLog::open(d.path(), 1024).unwrap();
    assert_eq!(
        (rec.first, rec.last, rec.purged),
        (Some(251), Some(400), 250)
    );
    // A snapshot past everything held: purge all, then the log continues after the snapshot.
    log.purge_to(1000).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (None, None));
    log.append(&entries(1001, 1010, 5)).unwrap();
    drop(log);
    let (log, rec) = RaftLog::open(d.path(), 1024).unwrap();
    assert_eq!((rec.first, rec.last), (Some(1001), Some(1009)));
    assert_eq!(log.read(0, u64::MAX).unwrap(), entries(1001, 1010, 5));
}

#[test]
fn vote_and_committed_index_are_kept() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, rec) = RaftLog::open(d.path(), 1024).unwrap();
    assert_eq!((rec.vote, rec.committed), (Vote::default(), None));
    log.save_vote(Vote {
        term: 7,
        voted_for: Some(0),
        committed: true,
    })
    .unwrap();
    log.save_committed(&42u64.to_le_bytes()).unwrap();
    drop(log);
    let (_, rec) = RaftLog::open(d.path(), 1024).unwrap();
    assert_eq!(
        rec.vote,
        Vote {
            term: 7,
            voted_for: Some(0),
            committed: true,
        }
    );
    assert_eq!(rec.committed, Some(42u64.to_le_bytes().to_vec()));
    let vote = d.path().join("vote");
    let mut b = std::fs::read(&vote).unwrap();
    b[3] ^= 0xff;
    std::fs::write(&vote, b).unwrap();
    assert!(matches!(
        RaftLog::open(d.path(), 1024),
        Err(Error::Corrupt { .. })
    ));
}

/// The child side of the kill test (run only by it, hence ignored): appends batches after whatever
/// the log holds, printing each acknowledged last index, until killed.
#[test]
#[ignore = "run by acknowledged_appends_survive_kill_9 as its child process"]
fn child_appender() {
    let Some(dir) = std::env::var_os("KYRODB_RAFTLOG_CHILD") else {
        return;
    };
    let (mut log, rec) = RaftLog::open(Path::new(&dir), 64 << 10).unwrap();
    let mut next = rec.last.map_or(1, |l| l + 1);
    loop {
        let batch = entries(next, next + 1 + next % 7, 1);
        log.append(&batch).unwrap();
        next = batch.last().unwrap().index + 1;
        println!("acked {}", next - 1);
    }
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let d = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = 0u64;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    use rand::{Rng, SeedableRng};
    for cycle in 0..20 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_appender",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("KYRODB_RAFTLOG_CHILD", d.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_millis(rng.gen_range(20..200));
        let mut seen = 0;
        for line in out.lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("acked ") {
                acked = acked.max(n.parse().unwrap());
                seen += 1;
            }
            if seen > 0 && Instant::now() > deadline {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (log, rec) = RaftLog::open(d.path(), 64 << 10).unwrap();
        let last = rec.last.unwrap_or(0);
        assert!(
            last >= acked,
            "cycle {cycle}: acknowledged {acked}, recovered only {last}"
        );
        assert_eq!(
            log.read(1, last + 1).unwrap(),
            entries(1, last + 1, 1),
            "cycle {cycle}"
        );
    }
    assert!(acked > 20, "the child made progress ({acked})");
}

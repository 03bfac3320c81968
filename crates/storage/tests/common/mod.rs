//! What the storage tests share. The kill -9 tests: the test binary runs one of its own tests as a
//! child process (told so by environment variables), and the parent SIGKILLs it at a random moment
//! or at a named fail point, then checks what recovery shows against what the child printed.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use kyrodb_storage::Db;

/// Every live entry of keyspace `name`.
pub(crate) fn contents(db: &Db, name: &str) -> BTreeMap<u64, Vec<u8>> {
    db.keyspace(name)
        .unwrap()
        .scan(.., usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.to_vec()))
        .collect()
}

/// In the child: if `KYRODB_KILL_AT` names a fail point, reaching it prints `AT` and blocks there
/// (for the parent to kill it).
pub(crate) fn stop_at_kill_point() {
    if let Ok(point) = std::env::var("KYRODB_KILL_AT") {
        let _scenario = Box::leak(Box::new(fail::FailScenario::setup()));
        fail::cfg_callback(point, || {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "AT");
            let _ = out.flush();
            drop(out);
            std::thread::sleep(Duration::from_secs(3600));
        })
        .unwrap();
    }
}

/// In the parent: runs this binary's test `child` with `env` (and `KYRODB_KILL_AT` = `kill_at`),
/// reads its output until a line ends with `AT` (with a kill point) or `READY` (then lets it run
/// `after_ready` more), or 20 s pass; SIGKILLs it and returns every line it finished printing.
pub(crate) fn run_child(
    child: &str,
    env: &[(&str, String)],
    kill_at: Option<&str>,
    after_ready: Duration,
) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", child, "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(p) = kill_at {
        cmd.env("KYRODB_KILL_AT", p);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            // A line cut by the kill has no newline: it never completed.
            if line.last() == Some(&b'\n') {
                let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            line.clear();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    let trigger = if kill_at.is_some() { "AT" } else { "READY" };
    // Until the trigger line (the harness may print the test's name on the same line), or the
    // deadline (the child exited or never reached the point): kill anyway.
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let hit = l.ends_with(trigger);
        lines.push(l);
        if hit {
            break;
        }
    }
    if kill_at.is_none() {
        // Random kill timing is the point, not synchronisation.
        std::thread::sleep(after_ready);
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    lines
}

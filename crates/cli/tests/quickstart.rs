//! `docs/quickstart-rag.md` runs as written: every ```sh block is one command, run in order from the
//! repository root with bash, verbatim. Only the environment differs from a user's: a scratch data
//! directory, a free port (`KYRODB_DATA_DIR`, `KYRODB_PORT`, and `KYRODB_URL` for the SDK) and the
//! model directory the other tests share (so the install verifies instead of downloading again).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The commands of the tutorial: the contents of its ```sh blocks, in order.
fn commands(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in md.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```sh") => block = Some(String::new()),
            (Some(b), "```") => {
                out.push(b.trim().to_owned());
                block = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// The server a step started in the background: stopped (SIGTERM, as a user's `kill %1`) at the end.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_rag_quickstart_runs_verbatim() {
    let md = std::fs::read_to_string(root().join("docs/quickstart-rag.md")).unwrap();
    let cmds = commands(&md);
    assert!(
        (1..=6).contains(&cmds.len()),
        "at most six commands: {cmds:?}"
    );
    for c in &cmds {
        assert!(!c.contains('\n'), "one command per block: {c:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let models = common::installed_model_dir();
    let env = [
        (
            "KYRODB_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("KYRODB_PORT", port.to_string()),
        ("KYRODB_URL", format!("http://127.0.0.1:{port}")),
        ("KYRODB_MODEL_DIR", models.display().to_string()),
        ("KYRODB_DISABLE_HTTP_LOG", "1".into()),
    ];
    let mut server: Option<Background> = None;
    let mut outputs = Vec::new();
    for (i, c) in cmds.iter().enumerate() {
        // A step ending in `&` runs in the background: here, bash `exec`s the command itself (the
        // text before the `&`), so the child is the server and is stopped on its own.
        let background = c.trim_end().strip_suffix('&').map(str::trim_end);
        let mut cmd = Command::new("bash");
        match background {
            Some(fg) => cmd.arg("-c").arg(format!("exec {fg}")),
            None => cmd.arg("-c").arg(c),
        };
        cmd.current_dir(root());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        // As a user's shell: no token, and cargo builds into ./target (which the steps name).
        cmd.env_remove("KYRODB_API_KEYS")
            .env_remove("KYRODB_TOKEN")
            .env_remove("CARGO_TARGET_DIR");
        if background.is_some() {
            // Wait (bounded) until it answers before the next command, as a user would.
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            server = Some(Background(cmd.spawn().unwrap()));
            let deadline = Instant::now() + Duration::from_secs(120);
            while common::try_request(port, "GET", "/health", &[], b"").is_err() {
                assert!(
                    Instant::now() < deadline,
                    "the server of step {} never answered",
                    i + 1
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            outputs.push(String::new());
            continue;
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "step {} `{c}` failed:\n{text}", i + 1);
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert!(server.is_some(), "the tutorial starts a server");
    // Step 4 indexed the docs folder; step 5's answer ranks a chunk about durability first.
    let indexed = &outputs[3];
    assert!(
        indexed.starts_with("indexed ") && indexed.contains(" chunks of "),
        "{indexed}"
    );
    let answer = &outputs[4];
    let first = answer.lines().next().unwrap_or_default();
    assert!(first.starts_with("1. "), "{answer}");
    let top3: Vec<&str> = answer
        .lines()
        .filter(|l| !l.starts_with(' '))
        .take(3)
        .collect();
    assert!(
        top3.iter()
            .any(|l| l.contains("storage.md") || l.contains("README") || l.contains("durab")),
        "no chunk about storage or durability in the top 3:\n{answer}"
    );
}

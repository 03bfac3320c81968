//! The OpenAPI document tells the truth: schemathesis (PyPI, pinned) generates requests from
//! `/openapi.json` and runs all of its checks against the real binary, with auth off and on.
//! `scripts/pyenv` installs it into `target/pyenv/` once.

mod common;

use std::{path::PathBuf, process::Command};

use common::Server;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const ADMIN: &str = "admin-contract-token";

fn schemathesis() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/pyenv"))
        .args(["schemathesis", SCHEMATHESIS])
        .output()
        .expect("scripts/pyenv runs");
    assert!(
        out.status.success(),
        "installing {SCHEMATHESIS} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("st")
}

fn run(s: &Server, token: Option<&str>) {
    // schemathesis keeps a cache in its working directory: give it a scratch one.
    let scratch = tempfile::tempdir().unwrap();
    let mut c = Command::new(schemathesis());
    c.current_dir(scratch.path())
        .arg("run")
        .arg(format!("{}/openapi.json", s.url()))
        .args(["--checks", "all", "--max-examples", "40", "--workers", "2"])
        .args(["--seed", "20261125", "--no-color"])
        .env("SCHEMATHESIS_TELEMETRY", "false");
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c.output().expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found contract failures (auth {}):\n{text}\n{}",
        if token.is_some() { "on" } else { "off" },
        String::from_utf8_lossy(&out.stderr)
    );
    // It really ran: a summary with generated cases and no failures.
    assert!(text.contains("passed"), "{text}");
}

#[test]
fn schemathesis_finds_no_contract_failure_with_auth_off_and_on() {
    let dir = tempfile::tempdir().unwrap();
    let open = Server::start(&dir.path().join("open"), &[]);
    run(&open, None);
    let keys = format!("admin:{ADMIN},read:read-contract-token");
    let closed = Server::start(
        &dir.path().join("closed"),
        &[
            ("KYRODB_API_KEYS", &keys),
            ("KYRODB_RATE_LIMIT_PER_SEC", "100000"),
        ],
    );
    run(&closed, Some(ADMIN));
}

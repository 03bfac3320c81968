//! The OpenAPI document tells the truth: schemathesis (PyPI, pinned) generates requests from
//! `/openapi.json` and runs all of its checks against the real binary, with auth off and on.
//! `scripts/pyenv` installs it into `target/pyenv/` once.

mod common;

use std::{path::PathBuf, process::Command};

use common::{installed_model_dir, Server};

const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const ADMIN: &str = "admin-contract-token";

fn schemathesis() -> PathBuf {
    let bin = common::script_stdout(
        "pyenv",
        &["schemathesis", SCHEMATHESIS],
        &format!("installing {SCHEMATHESIS}"),
    );
    PathBuf::from(bin).join("st")
}

fn run(s: &Server, token: Option<&str>) {
    // schemathesis keeps a cache in its working directory: give it a scratch one.
    let scratch = tempfile::tempdir().unwrap();
    // A /v2 body is valid only against the named collection's schema (its vector dimensions, its
    // fields), which OpenAPI cannot express: a schema-valid body may still be refused with a 400
    // that names the field (or a 409 for a name taken with another schema), so for the collections
    // tag those count as accepted answers. Likewise a keyspace name that fits the pattern may be
    // one that cannot be dropped (`default`, which a pattern cannot exclude): 400 reserved_keyspace;
    // and a new API key's names, globs and tenant are checked per item and across fields (a
    // documents quota needs a tenant), which OpenAPI cannot state: 400 invalid_api_key.
    // A backup target that fits the schema (any string) may lie outside the server's backup_dirs
    // (403; none are configured here) or not be an absolute path (400 naming `to`).
    // Every check still runs on every route.
    std::fs::write(
        scratch.path().join("schemathesis.toml"),
        "[[operations]]\ninclude-tag = \"collections\"\n\
         checks.positive_data_acceptance.expected-statuses = [\"2XX\", 400, 401, 403, 404, 409]\n\
         \n[[operations]]\ninclude-name = \"DELETE /v1/keyspaces/{name}\"\n\
         checks.positive_data_acceptance.expected-statuses = [\"2XX\", 400, 401, 403, 404]\n\
         \n[[operations]]\ninclude-name = \"POST /v1/keys\"\n\
         checks.positive_data_acceptance.expected-statuses = [\"2XX\", 400, 401, 403, 409]\n\
         \n[[operations]]\ninclude-name = \"POST /v1/backups\"\n\
         checks.positive_data_acceptance.expected-statuses = [\"2XX\", 400, 401, 403, 409]\n",
    )
    .unwrap();
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
    let summary: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    eprintln!(
        "schemathesis (auth {}):\n{}",
        if token.is_some() { "on" } else { "off" },
        summary.join("\n")
    );
}

#[test]
fn schemathesis_finds_no_contract_failure_with_auth_off_and_on() {
    let dir = tempfile::tempdir().unwrap();
    // With the embedding model loaded, as a production server runs: /v2/embed answers 200.
    let models = installed_model_dir();
    let models = models.to_str().unwrap();
    let open = Server::start(&dir.path().join("open"), &[("KYRODB_MODEL_DIR", models)]);
    run(&open, None);
    let keys = format!("admin:{ADMIN},read:read-contract-token");
    let closed = Server::start(
        &dir.path().join("closed"),
        &[
            ("KYRODB_API_KEYS", &keys),
            ("KYRODB_RATE_LIMIT_PER_SEC", "100000"),
            ("KYRODB_MODEL_DIR", models),
        ],
    );
    run(&closed, Some(ADMIN));
}

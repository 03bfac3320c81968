//! The Python SDK (`clients/python`) against this build of the binary: `pip install` of the package
//! into a venv (`scripts/pyenv`, with the package's `dev` extra: pytest, mypy, langchain-core,
//! langchain-tests, unasync), the generated sync client checked against the async source,
//! `mypy --strict`, then its pytest suite (real servers started by the suite from this binary, the
//! embedding model installed, LangChain's standard vector store tests included).

mod common;

use std::{
    hash::{Hash, Hasher},
    path::PathBuf,
    process::Command,
};

use common::repo_root as root;

/// The venv's bin directory: created once per version of the package's requirements.
fn venv() -> PathBuf {
    let sdk = root().join("clients/python");
    let pyproject = std::fs::read(sdk.join("pyproject.toml")).unwrap();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pyproject.hash(&mut h);
    let name = format!("sdk-{:08x}", h.finish() as u32);
    let spec = format!("{}[dev]", sdk.canonicalize().unwrap().display());
    PathBuf::from(common::script_stdout(
        "pyenv",
        &[&name, &spec],
        "creating the SDK's venv",
    ))
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn python_sdk_installs_type_checks_and_passes_its_suite_against_this_binary() {
    let bin = venv();
    let sdk = root().join("clients/python");
    // The package as a user installs it (this checkout's sources, not the venv's first copy).
    run(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--no-deps", "--no-build-isolation"])
            .args(["--force-reinstall", "--disable-pip-version-check"])
            .arg(&sdk),
        "pip install ./clients/python",
    );
    run(
        Command::new(bin.join("python"))
            .current_dir(&sdk)
            .args(["tools/gen_sync.py", "--check"]),
        "the generated sync client is current",
    );
    let mypy = run(
        Command::new(bin.join("mypy")).current_dir(&sdk).args([
            "--strict",
            "--cache-dir",
            "/dev/null",
            "src",
        ]),
        "mypy --strict",
    );
    assert!(mypy.contains("Success: no issues found"), "{mypy}");
    let models = common::installed_model_dir();
    let scratch = tempfile::tempdir().unwrap();
    let out = run(
        Command::new(bin.join("python"))
            .current_dir(scratch.path())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"])
            .arg(sdk.join("tests"))
            .args(["--rootdir", sdk.to_str().unwrap()])
            .env("KYRODB_BIN", common::bin())
            .env("KYRODB_MODEL_DIR", &models)
            .env("KYRODB_REQUIRE_MODEL", "1"),
        "the SDK's pytest suite",
    );
    let summary = out.lines().last().unwrap_or_default().to_owned();
    eprintln!("python SDK: {summary}");
    let passed: u32 = summary
        .split_whitespace()
        .zip(summary.split_whitespace().skip(1))
        .find(|(_, w)| w.starts_with("passed"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0);
    // LangChain's standard suite alone is 25 tests; nothing skipped or failed.
    assert!(passed >= 40, "{out}");
    assert!(
        !summary.contains("skipped") && !summary.contains("failed"),
        "{out}"
    );
}

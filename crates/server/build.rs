//! Bakes the git commit, rustc version, target and profile into the binary for `/build_info`.
//! Falls back to `KYRODB_GIT_SHA` from the environment, then "unknown" (a source tarball has no .git).

use std::{path::Path, process::Command};

fn main() {
    println!("cargo:rerun-if-env-changed=KYRODB_GIT_SHA");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let git_dir = Path::new(&manifest_dir).join("../../.git");
    // Only watch files that exist: a missing one would rerun this script on every build.
    for f in ["HEAD", "refs/heads", "packed-refs"] {
        let p = git_dir.join(f);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    let sha = std::env::var("KYRODB_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            run(
                "git",
                &["-C", &manifest_dir, "rev-parse", "--short=12", "HEAD"],
            )
        })
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KYRODB_GIT_SHA={sha}");
    println!("cargo:rustc-env=KYRODB_RUSTC_VERSION={rustc_version}");
    println!(
        "cargo:rustc-env=KYRODB_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=KYRODB_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

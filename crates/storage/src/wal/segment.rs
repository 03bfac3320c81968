//! WAL segment files: naming, the 16-byte segment header, and the recovery scan that verifies every
//! record, truncates a torn tail and refuses corruption anywhere else.

use std::{
    fs::{self, File, OpenOptions},
    path::{Path, PathBuf},
};

use bytes::Bytes;

use super::record::{parse_header, Header, HEADER_BYTES};
use crate::{
    error::{IoContext, Result},
    fsutil, Error,
};

/// `magic[8] = "KYROWAL1" | version u32 | crc32c(first 12 bytes) u32`.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 16;
const MAGIC: &[u8; 8] = b"KYROWAL1";
/// The version new segments get: 2 may hold puts with an expiry (op tag 3). Version 1 segments (tags 1
/// and 2 only) are still read; a binary that knows only version 1 refuses a version-2 segment by its
/// header instead of failing on an op tag it does not know.
const VERSION: u32 = 2;
const VERSION_1: u32 = 1;

pub(crate) fn segment_header() -> [u8; SEGMENT_HEADER_BYTES] {
    segment_header_version(VERSION)
}

fn segment_header_version(version: u32) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A segment on disk: its path and the sequence number its first record has (or will have).
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub first_seq: u64,
    pub path: PathBuf,
}

pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

/// Segments in `dir`, ordered by first sequence number. Stray `.tmp` files are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentMeta>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        let Ok(first_seq) = stem.parse::<u64>() else {
            continue;
        };
        out.push(SegmentMeta {
            first_seq,
            path: entry.path(),
        });
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Creates a new segment holding only its header, durable (file and directory fsynced).
pub(crate) fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, SegmentMeta)> {
    let path = segment_path(dir, first_seq);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .at(&path)?;
    fsutil::write_all(&mut file, &path, &segment_header())?;
    fsutil::sync_file(&file, &path)?;
    fsutil::sync_dir(dir)?;
    Ok((file, SegmentMeta { first_seq, path }))
}

/// One verified record found by the scan.
pub(crate) struct ScannedRecord {
    /// Byte offset of the record in its segment.
    pub offset: u64,
    pub header: Header,
    pub payload: Bytes,
}

/// What the scan of one segment found.
pub(crate) struct SegmentScan {
    /// Byte length of the verified prefix (where the next record goes).
    pub valid_bytes: u64,
    /// A torn tail was found at `valid_bytes` and must be truncated.
    pub torn: bool,
}

/// Reads and verifies one segment, calling `f` for every record in order. `expect_seq` is the
/// sequence number the first record must carry (`None` for the first segment, which may start
/// anywhere at or below what the manifest covers). In the last segment, a record that runs past the end
/// of the file, that fails its checksum as the file's final record, or that is followed only by zero
/// bytes is a torn tail (never acknowledged: its fsync never returned). Anything else that fails is
/// corruption and is refused with the file and byte offset.
pub(crate) fn scan_segment(
    meta: &SegmentMeta,
    is_last: bool,
    mut f: impl FnMut(ScannedRecord) -> Result<()>,
) -> Result<SegmentScan> {
    // Mapped, not copied: replayed values are slices of the mapping (which outlives an unlink).
    let map = crate::mmap::MappedFile::open_populated(&meta.path)?;
    let bytes = Bytes::from_owner(map);
    let path = &meta.path;
    if bytes.len() < SEGMENT_HEADER_BYTES {
        if is_last {
            return Ok(SegmentScan {
                valid_bytes: 0,
                torn: true,
            });
        }
        return Err(Error::corrupt(
            path,
            bytes.len() as u64,
            "segment shorter than its header",
        ));
    }
    let header = &bytes[..SEGMENT_HEADER_BYTES];
    if header != segment_header() && header != segment_header_version(VERSION_1) {
        return Err(Error::corrupt(
            path,
            0,
            "bad segment header (magic, version or checksum)",
        ));
    }
    let mut at = SEGMENT_HEADER_BYTES;
    let mut expect = meta.first_seq;
    while at < bytes.len() {
        let torn = |reason: &str| -> Result<SegmentScan> {
            if is_last {
                tracing::warn!(file = %path.display(), offset = at, reason, "truncating torn WAL tail");
                Ok(SegmentScan {
                    valid_bytes: at as u64,
                    torn: true,
                })
            } else {
                Err(Error::corrupt(path, at as u64, reason.to_owned()))
            }
        };
        let Some(h) = parse_header(&bytes[at..]) else {
            return torn("record header runs past end of file");
        };
        // Appends only ever add bytes to a zero-length region, so a torn write leaves zeros or a short
        // file, never a damaged but complete header: a header that fails its checksum is corruption.
        if !h.verified() {
            if bytes[at..].iter().all(|b| *b == 0) {
                return torn("zero-filled tail");
            }
            return Err(Error::corrupt(
                path,
                at as u64,
                "record header checksum mismatch",
            ));
        }
        let end = at + HEADER_BYTES + h.payload_len as usize;
        if end > bytes.len() {
            return torn("record runs past end of file");
        }
        let payload = bytes.slice(at + HEADER_BYTES..end);
        if crc32c::crc32c(&payload) != h.payload_crc {
            // A payload cut short by a crash can read back zero-filled only as the file's final record.
            if end == bytes.len() {
                return torn("payload checksum mismatch in the final record");
            }
            return Err(Error::corrupt(
                path,
                at as u64,
                "record payload checksum mismatch",
            ));
        }
        if h.seq != expect {
            return Err(Error::corrupt(
                path,
                at as u64,
                format!(
                    "sequence {} where {} was expected (a record or segment is missing)",
                    h.seq, expect
                ),
            ));
        }
        f(ScannedRecord {
            offset: at as u64,
            header: h,
            payload,
        })?;
        expect += 1;
        at = end;
    }
    Ok(SegmentScan {
        valid_bytes: at as u64,
        torn: false,
    })
}

/// Records per message of [`scan_ahead`].
const SCAN_BATCH: usize = 4096;

/// What [`scan_ahead`] passes along, in log order.
pub(crate) enum Scanned {
    /// Verified records of the current segment, in order.
    Records(Vec<ScannedRecord>),
    /// The current segment's scan ended: what [`scan_segment`] returned for it. After an error
    /// nothing follows.
    End(Result<SegmentScan>),
}

/// Scans `segments` in order ([`scan_segment`], the last one as the log's last), sending their
/// verified records in batches, then each segment's end, to `tx`: replay runs it on a second
/// thread, so reading, framing and checksums overlap applying (the bounded channel keeps it a few
/// batches ahead). It stops at the first error, or when the receiver hangs up.
pub(crate) fn scan_ahead(segments: &[SegmentMeta], tx: std::sync::mpsc::SyncSender<Scanned>) {
    for (i, seg) in segments.iter().enumerate() {
        let mut batch = Vec::with_capacity(SCAN_BATCH);
        let scan = scan_segment(seg, i + 1 == segments.len(), |r| {
            batch.push(r);
            if batch.len() == SCAN_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(SCAN_BATCH));
                // The receiver left (replay failed): stop scanning.
                tx.send(Scanned::Records(full)).map_err(|_| Error::Closed)?;
            }
            Ok(())
        });
        if !batch.is_empty() && tx.send(Scanned::Records(batch)).is_err() {
            return;
        }
        let failed = scan.is_err();
        if tx.send(Scanned::End(scan)).is_err() || failed {
            return;
        }
    }
}

/// Cuts a torn tail off the last segment, durably, so new records follow the verified prefix.
pub(crate) fn truncate_tail(meta: &SegmentMeta, valid_bytes: u64) -> Result<()> {
    let path = &meta.path;
    if valid_bytes < SEGMENT_HEADER_BYTES as u64 {
        // Even the header is torn: rewrite the segment from scratch.
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .at(path)?;
        fsutil::write_all(&mut file, path, &segment_header())?;
        return fsutil::sync_file(&file, path);
    }
    let file = OpenOptions::new().write(true).open(path).at(path)?;
    file.set_len(valid_bytes).at(path)?;
    fsutil::sync_file(&file, path)
}

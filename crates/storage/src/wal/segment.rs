//! WAL segment files: the WAL's [`Format`] and record [`Framing`] over the shared segmented-log
//! code (`seglog.rs`: segment files, the recovery scan, the one torn-tail rule), and the scan-ahead
//! thread replay reads through.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use bytes::Bytes;

use super::record::{parse_header, Header, HEADER_BYTES};
use crate::{
    error::Result,
    seglog::{self, Format, Framing},
    Error,
};

pub(crate) use crate::seglog::SEGMENT_HEADER_BYTES;

/// The WAL's segments: `<first seq, 20 digits>.wal`, magic `KYROWAL1`. Version 2 may hold puts with
/// an expiry (op tag 3); version 1 segments (tags 1 and 2 only) are still read, and a binary that
/// knows only version 1 refuses a version-2 segment by its header instead of failing on an op tag it
/// does not know.
pub(crate) const FORMAT: Format = Format {
    what: "WAL",
    magic: *b"KYROWAL1",
    version: 2,
    readable: &[1, 2],
    prefix: "",
    suffix: ".wal",
};

/// The WAL's record header (`record.rs`).
pub(crate) struct WalFraming;

impl Framing for WalFraming {
    type Header = Header;
    const HEADER_BYTES: usize = HEADER_BYTES;
    /// A payload length is a u32.
    const PAYLOAD_MAX: usize = u32::MAX as usize;

    #[inline]
    fn parse(bytes: &[u8]) -> Option<Header> {
        parse_header(bytes).filter(Header::verified)
    }

    #[inline]
    fn payload_len(h: &Header) -> usize {
        h.payload_len as usize
    }

    #[inline]
    fn seq(h: &Header) -> u64 {
        h.seq
    }

    #[inline]
    fn payload_crc(h: &Header) -> u32 {
        h.payload_crc
    }
}

/// A segment on disk: its path and the sequence number its first record has (or will have).
pub(crate) type SegmentMeta = seglog::Segment;

pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    FORMAT.path(dir, first_seq)
}

/// Segments in `dir`, ordered by first sequence number. Stray `.tmp` files are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentMeta>> {
    FORMAT.list(dir)
}

/// Creates a new segment holding only its header, durable (file and directory fsynced).
pub(crate) fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, SegmentMeta)> {
    FORMAT.create(dir, first_seq)
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

/// Reads and verifies one segment, calling `f` for every record in order ([`seglog::scan`]: the
/// first record carries the segment's first sequence number, the rest follow one by one; only the
/// last segment may end in a torn tail, and damage anywhere else is refused with the file and byte
/// offset).
pub(crate) fn scan_segment(
    meta: &SegmentMeta,
    is_last: bool,
    mut f: impl FnMut(ScannedRecord) -> Result<()>,
) -> Result<SegmentScan> {
    // Mapped, not copied: replayed values are slices of the mapping (which outlives an unlink).
    let map = crate::mmap::MappedFile::open_populated(&meta.path)?;
    let bytes = Bytes::from_owner(map);
    let scan = seglog::scan::<WalFraming>(&FORMAT, meta, &bytes, is_last, |offset, header, at| {
        f(ScannedRecord {
            offset,
            header,
            payload: bytes.slice(at..at + header.payload_len as usize),
        })
    })?;
    Ok(SegmentScan {
        valid_bytes: scan.valid_bytes,
        torn: scan.torn.is_some(),
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
    FORMAT.truncate(&meta.path, valid_bytes)
}

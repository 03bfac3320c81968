//! Segmented, checksummed logs: what the WAL (`wal/`) and the Raft log (kyrodb-cluster's `log.rs`)
//! share — segment files and their header, record framing checks, the recovery scan, the one
//! torn-tail rule and its repair. Each log keeps its own record header layout (a [`Framing`]); the
//! rest is written once, here. Crash argument: docs/design/storage.md, "Segmented logs".
//!
//! A segment is `<prefix><first sequence number, 20 digits><suffix>`: a 16-byte header
//! (`magic[8] | version u32 | crc32c(the 12 bytes before) u32`), then records, each a header the
//! [`Framing`] reads (its payload length, sequence number and payload CRC32C, under a checksum of
//! its own) and the payload. Sequence numbers are consecutive within and across segments.
//!
//! **The torn-tail rule.** Records are only ever appended, and a segment is fsynced (and its
//! successor created and the directory fsynced) before any record goes into the successor, so a
//! crash can leave damage only after the last fsync of the last segment. A record that does not
//! check — its header or payload runs past the end of the file, or its header or payload checksum
//! fails — is therefore a torn tail if, and only if, it is in the last segment and no whole,
//! checked record with the next sequence number or a later one starts anywhere after it. Then the
//! segment is cut where that record starts. Anything else is damage and is refused with the file and
//! the record's byte offset: a checksum failure in an earlier segment, or one followed by a whole
//! later record (a flipped bit mid-log, or a damaged length that would otherwise read as "runs past
//! the end" and cut every record after it), a sequence number out of order, a bad segment header.

use std::{
    fs::{self, File, OpenOptions},
    path::{Path, PathBuf},
};

use crate::{
    error::{IoContext, Result},
    fsutil, Error,
};

/// Bytes of a segment's header.
pub const SEGMENT_HEADER_BYTES: usize = 16;

/// One log's segment files: their names, magic and versions.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// What the log is called in messages ("WAL", "Raft log").
    pub what: &'static str,
    /// The header's first 8 bytes.
    pub magic: [u8; 8],
    /// The version new segments get.
    pub version: u32,
    /// Every version this binary reads (including `version`).
    pub readable: &'static [u32],
    /// A segment file's name before and after its first sequence number.
    pub prefix: &'static str,
    /// See `prefix`.
    pub suffix: &'static str,
}

/// A segment on disk: its path and the sequence number its first record has (or will have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The first record's sequence number.
    pub first: u64,
    /// The file.
    pub path: PathBuf,
}

impl Format {
    /// The 16-byte segment header of `version`.
    pub fn header(&self, version: u32) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut h = [0u8; SEGMENT_HEADER_BYTES];
        h[0..8].copy_from_slice(&self.magic);
        h[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..12]);
        h[12..16].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The path of the segment whose first record is `first`.
    pub fn path(&self, dir: &Path, first: u64) -> PathBuf {
        dir.join(format!("{}{first:020}{}", self.prefix, self.suffix))
    }

    /// The segments in `dir`, ordered by first sequence number; other files are ignored.
    pub fn list(&self, dir: &Path) -> Result<Vec<Segment>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let name = entry.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_prefix(self.prefix))
                .and_then(|n| n.strip_suffix(self.suffix))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push(Segment {
                first,
                path: entry.path(),
            });
        }
        out.sort_by_key(|s| s.first);
        Ok(out)
    }

    /// Creates the segment whose first record will be `first`, holding only its header, durable
    /// (the file and the directory fsynced) before this returns: a record is never written to a
    /// segment whose creation could still be lost. The file is open for appending after the header.
    pub fn create(&self, dir: &Path, first: u64) -> Result<(File, Segment)> {
        let path = self.path(dir, first);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .at(&path)?;
        fsutil::write_all(&mut file, &path, &self.header(self.version))?;
        fsutil::sync_file(&file, &path)?;
        fsutil::sync_dir(dir)?;
        Ok((file, Segment { first, path }))
    }

    /// The version of a segment whose bytes are `bytes` (at least a header's worth), or the
    /// refusal (offset 0) when its header is not one of this log's readable ones.
    fn check_header(&self, path: &Path, bytes: &[u8]) -> Result<u32> {
        let header = &bytes[..SEGMENT_HEADER_BYTES];
        self.readable
            .iter()
            .copied()
            .find(|v| header == self.header(*v))
            .ok_or_else(|| {
                Error::corrupt(
                    path,
                    0,
                    format!(
                        "not a {} segment: bad header (magic, version or checksum)",
                        self.what
                    ),
                )
            })
    }

    /// Cuts a torn tail: the segment keeps its first `valid_bytes`, durably (a segment whose very
    /// header was torn is rewritten as an empty segment).
    pub fn truncate(&self, path: &Path, valid_bytes: u64) -> Result<()> {
        if valid_bytes < SEGMENT_HEADER_BYTES as u64 {
            let mut file = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .at(path)?;
            fsutil::write_all(&mut file, path, &self.header(self.version))?;
            return fsutil::sync_file(&file, path);
        }
        let file = OpenOptions::new().write(true).open(path).at(path)?;
        file.set_len(valid_bytes).at(path)?;
        fsutil::sync_file(&file, path)
    }
}

/// The record header of one log.
pub trait Framing {
    /// What the log's code reads from a header (the kind of record, a term, …).
    type Header: Copy;
    /// Bytes before the payload.
    const HEADER_BYTES: usize;
    /// The largest payload length a header may give (a larger one is damage).
    const PAYLOAD_MAX: usize;
    /// The header at the start of `bytes` (exactly [`Framing::HEADER_BYTES`] long), if its own
    /// checksum holds: only then are its length and sequence number trusted.
    fn parse(bytes: &[u8]) -> Option<Self::Header>;
    /// The payload's length.
    fn payload_len(h: &Self::Header) -> usize;
    /// The record's sequence number (the Raft log's index).
    fn seq(h: &Self::Header) -> u64;
    /// The payload's CRC32C.
    fn payload_crc(h: &Self::Header) -> u32;
}

/// One record read at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<H> {
    /// A whole record that checks: its header, and where its payload is.
    Whole {
        /// The header.
        header: H,
        /// Payload start (the record's offset + the header's length).
        payload: usize,
        /// Where the next record starts.
        next: usize,
    },
    /// The bytes end before the record does.
    Short,
    /// A checksum fails (the reason).
    Damaged(&'static str),
}

/// Reads the record at `at` of `bytes` and checks it.
#[inline]
pub fn decode<F: Framing>(bytes: &[u8], at: usize) -> Record<F::Header> {
    let Some(head) = bytes.get(at..at.saturating_add(F::HEADER_BYTES)) else {
        return Record::Short;
    };
    let Some(h) = F::parse(head) else {
        return Record::Damaged("record header checksum mismatch");
    };
    let len = F::payload_len(&h);
    if len > F::PAYLOAD_MAX {
        return Record::Damaged("record length over the largest payload");
    }
    let payload = at + F::HEADER_BYTES;
    let Some(body) = bytes.get(payload..payload + len) else {
        return Record::Short;
    };
    if crc32c::crc32c(body) != F::payload_crc(&h) {
        return Record::Damaged("record payload checksum mismatch");
    }
    Record::Whole {
        header: h,
        payload,
        next: payload + len,
    }
}

/// Whether a whole record with sequence number `want` or later starts anywhere after `at`: then the
/// bytes at `at` are damage in the middle of the log, not a torn tail.
fn whole_record_after<F: Framing>(bytes: &[u8], at: usize, want: u64) -> bool {
    let last_start = bytes.len().saturating_sub(F::HEADER_BYTES);
    (at + 1..=last_start).any(|p| {
        matches!(decode::<F>(bytes, p), Record::Whole { header, .. } if F::seq(&header) >= want)
    })
}

/// What the scan of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Length of the checked prefix (where the next record goes).
    pub valid_bytes: u64,
    /// Set when a torn tail starts at `valid_bytes` (why it is torn); the caller cuts it
    /// ([`Format::truncate`]) before appending.
    pub torn: Option<&'static str>,
    /// The segment's version (0 when even its header was torn).
    pub version: u32,
}

/// Checks one segment whose bytes are `bytes`, calling `f(offset, header, payload start)` for every
/// record in order. The first record must carry `first` (the segment's name says so), the rest
/// follow one by one; `is_last` says whether this is the log's last segment, the only one that may
/// end in a torn tail (the rule is in the module doc).
pub fn scan<F: Framing>(
    format: &Format,
    segment: &Segment,
    bytes: &[u8],
    is_last: bool,
    mut f: impl FnMut(u64, F::Header, usize) -> Result<()>,
) -> Result<Scan> {
    let path = &segment.path;
    if bytes.len() < SEGMENT_HEADER_BYTES {
        if is_last {
            return Ok(Scan {
                valid_bytes: 0,
                torn: Some("segment shorter than its header"),
                version: 0,
            });
        }
        return Err(Error::corrupt(
            path,
            bytes.len() as u64,
            "segment shorter than its header",
        ));
    }
    let version = format.check_header(path, bytes)?;
    let mut at = SEGMENT_HEADER_BYTES;
    let mut expect = segment.first;
    while at < bytes.len() {
        match decode::<F>(bytes, at) {
            Record::Whole {
                header,
                payload,
                next,
            } => {
                let seq = F::seq(&header);
                if seq != expect {
                    return Err(Error::corrupt(
                        path,
                        at as u64,
                        format!(
                            "sequence {seq} where {expect} was expected (a record or segment is missing)"
                        ),
                    ));
                }
                f(at as u64, header, payload)?;
                expect += 1;
                at = next;
            }
            failed => {
                let reason = match failed {
                    Record::Damaged(why) => why,
                    _ => "record runs past the end of the file",
                };
                if is_last && !whole_record_after::<F>(bytes, at, expect) {
                    tracing::warn!(file = %path.display(), offset = at, reason, log = format.what, "cutting a torn tail");
                    return Ok(Scan {
                        valid_bytes: at as u64,
                        torn: Some(reason),
                        version,
                    });
                }
                return Err(Error::corrupt(path, at as u64, reason));
            }
        }
    }
    debug_assert_eq!(at, bytes.len(), "the scan ends at the end of the segment");
    Ok(Scan {
        valid_bytes: at as u64,
        torn: None,
        version,
    })
}

//! The Raft log store: entries `(index, term, payload)` in segment files under one directory, each
//! append made durable by one `write` and one `fdatasync`; the vote and the committed index beside
//! them.
//!
//! Layout: `<dir>/seg-<first index, 20 digits>.log`, each a 16-byte header (`"KYRORAFT"`, u32
//! version = 1, u32 CRC32C of the 12 bytes before) then records of a 28-byte header — u32 payload
//! length, u64 index, u64 term, u32 CRC32C of those 20 bytes, u32 CRC32C of the payload — and the
//! payload. Indexes are consecutive within and across segments. `vote` (u64 term, u64 node + 1 or 0,
//! u8 committed, u32 CRC32C) is replaced atomically and fsynced before `save_vote` returns; `committed` (u64 index,
//! u32 CRC32C) is replaced atomically but not fsynced (Raft does not need it durable; it only saves
//! replay after a restart).
//!
//! Segment files, the recovery scan and the torn-tail rule are the WAL's: `kyrodb_storage::seglog`
//! (this file gives the format and the record framing). Recovery: every segment is read and checked.
//! The last segment may end in a torn record (a crash during a write): it is cut at the last whole
//! record and the cut is fsynced. Anything else that fails a check — a bad header, a bad checksum with
//! a whole record after it, indexes out of order, a gap between segments — is refused with the file
//! and byte offset, never skipped. Only the tail can be torn because a segment is fsynced, and its
//! successor created and the directory fsynced, before any record is written to the successor.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use kyrodb_storage::{
    codec::{u32_at, u64_at},
    seglog::{self, Format, Framing, Record, SEGMENT_HEADER_BYTES},
};

/// The Raft log's segments: `seg-<first index, 20 digits>.log`, magic `KYRORAFT`, version 1.
const FORMAT: Format = Format {
    what: "Raft log",
    magic: *b"KYRORAFT",
    version: 1,
    readable: &[1],
    prefix: "seg-",
    suffix: ".log",
};
const SEG_HEADER: u64 = SEGMENT_HEADER_BYTES as u64;
const REC_HEADER: usize = 28;
/// Largest payload accepted (a batch of client writes; the engine's value limit is far below).
pub const PAYLOAD_MAX: usize = 256 << 20;

/// A log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its log index (from 1).
    pub index: u64,
    /// The term it was proposed in.
    pub term: u64,
    /// The caller's encoding of the entry.
    pub payload: Vec<u8>,
}

/// The durable vote: the term and whom this node voted for in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vote {
    /// The term.
    pub term: u64,
    /// The node voted for in it.
    pub voted_for: Option<u64>,
    /// Whether a quorum granted it (the node it names is the leader of `term`).
    pub committed: bool,
}

/// What `open` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// First and last index held (None when empty).
    pub first: Option<u64>,
    /// The last index held.
    pub last: Option<u64>,
    /// Index after the last purge (entries at or below it are gone; 0 when never purged).
    pub purged: u64,
    /// The durable vote.
    pub vote: Vote,
    /// What `save_committed` last stored (the caller's encoding of the committed log id).
    pub committed: Option<Vec<u8>>,
    /// Bytes cut from a torn tail.
    pub torn_bytes: u64,
}

/// Errors: I/O, refused files (with file and offset), misuse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is refused: what is wrong, where.
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The byte offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A call the log cannot honour (an append that leaves a gap, a truncation below the purge).
    #[error("{0}")]
    Invalid(String),
}

/// The log's result.
pub type Result<T> = std::result::Result<T, Error>;

impl From<kyrodb_storage::Error> for Error {
    fn from(e: kyrodb_storage::Error) -> Self {
        match e {
            kyrodb_storage::Error::Corrupt {
                file,
                offset,
                reason,
            } => Error::Corrupt {
                path: file,
                offset,
                reason,
            },
            kyrodb_storage::Error::Io { path, source } => Error::Io { path, source },
            other => Error::Invalid(other.to_string()),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first: u64,
    /// Byte offset of each record, by index − first.
    offsets: Vec<u64>,
    len: u64,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }
}

/// The log. One writer (`&mut self`); reads take `&self`.
#[derive(Debug)]
pub struct RaftLog {
    dir: PathBuf,
    segments: Vec<Segment>,
    file: Option<File>,
    segment_bytes: u64,
    purged: u64,
}

/// The Raft log's record header: `payload_len u32 | index u64 | term u64 | crc32c(those 20 bytes)
/// u32 | crc32c(payload) u32`.
struct RaftFraming;

/// A record header's fields.
#[derive(Debug, Clone, Copy)]
struct RecordHeader {
    len: u32,
    index: u64,
    term: u64,
    payload_crc: u32,
}

impl Framing for RaftFraming {
    type Header = RecordHeader;
    const HEADER_BYTES: usize = REC_HEADER;
    const PAYLOAD_MAX: usize = PAYLOAD_MAX;

    fn parse(h: &[u8]) -> Option<RecordHeader> {
        if crc32c::crc32c(h.get(..20)?) != u32_at(h, 20)? {
            return None;
        }
        Some(RecordHeader {
            len: u32_at(h, 0)?,
            index: u64_at(h, 4)?,
            term: u64_at(h, 12)?,
            payload_crc: u32_at(h, 24)?,
        })
    }

    fn payload_len(h: &RecordHeader) -> usize {
        h.len as usize
    }

    fn seq(h: &RecordHeader) -> u64 {
        h.index
    }

    fn payload_crc(h: &RecordHeader) -> u32 {
        h.payload_crc
    }
}

fn encode(e: &Entry, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(e.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.index.to_le_bytes());
    out.extend_from_slice(&e.term.to_le_bytes());
    let hcrc = crc32c::crc32c(&out[start..start + 20]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&e.payload).to_le_bytes());
    out.extend_from_slice(&e.payload);
}

impl RaftLog {
    /// Opens (creating) the log in `dir`, recovering as the module doc says. Segments roll over at
    /// `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(RaftLog, Recovered)> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let found = FORMAT.list(dir)?;
        let mut rec = Recovered::default();
        let mut segments: Vec<Segment> = Vec::new();
        let count = found.len();
        for (i, file) in found.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let path = file.path.clone();
            let first = file.first;
            let bytes = fs::read(&path).map_err(io(&path))?;
            if let Some(prev) = segments.last() {
                let want = prev.last().map_or(prev.first, |l| l + 1);
                if first != want {
                    return Err(Error::Corrupt {
                        path,
                        offset: 0,
                        reason: format!("starts at index {first}, expected {want}"),
                    });
                }
            }
            let mut offsets = Vec::new();
            let scan = seglog::scan::<RaftFraming>(&FORMAT, &file, &bytes, is_last, |at, _, _| {
                offsets.push(at);
                Ok(())
            })?;
            if scan.torn.is_some() {
                rec.torn_bytes = bytes.len() as u64 - scan.valid_bytes;
                if scan.valid_bytes < SEG_HEADER {
                    // Created, crashed before its header was durable: nothing was ever in it.
                    fs::remove_file(&path).map_err(io(&path))?;
                    kyrodb_storage::sync_dir(dir)?;
                    continue;
                }
                // The one torn-tail rule (kyrodb_storage::seglog): cut at the last whole record.
                FORMAT.truncate(&path, scan.valid_bytes)?;
            }
            segments.push(Segment {
                path,
                first,
                offsets,
                len: scan.valid_bytes,
            });
        }
        let purged = match read_small(&dir.join("purged"))? {
            Some(b) => u64_at(&b, 0).expect("read_small holds at least 8 bytes"),
            None => 0,
        };
        let meta = RaftLog::read_meta(dir)?;
        rec.vote = meta.vote;
        rec.committed = meta.committed;
        let mut log = RaftLog {
            dir: dir.to_owned(),
            segments,
            file: None,
            segment_bytes: segment_bytes.max(SEG_HEADER + 1),
            purged,
        };
        // Entries a purge meant to drop may linger in the first segment: hide them.
        log.trim_front();
        rec.first = log.first_index();
        rec.last = log.last_index();
        rec.purged = log.purged;
        Ok((log, rec))
    }

    /// The vote and committed index saved in `dir` (checked; absent files read as defaults).
    pub fn read_meta(dir: &Path) -> Result<Recovered> {
        let vote = match read_small(&dir.join("vote"))? {
            Some(b) => {
                let short = || Error::Corrupt {
                    path: dir.join("vote"),
                    offset: 0,
                    reason: "vote shorter than a term and a node".into(),
                };
                Vote {
                    term: u64_at(&b, 0).ok_or_else(short)?,
                    voted_for: match u64_at(&b, 8).ok_or_else(short)? {
                        0 => None,
                        n => Some(n - 1),
                    },
                    committed: b.get(16) == Some(&1),
                }
            }
            None => Vote::default(),
        };
        Ok(Recovered {
            vote,
            committed: read_small(&dir.join("committed"))?,
            ..Recovered::default()
        })
    }

    fn trim_front(&mut self) {
        while let Some(s) = self.segments.first() {
            if s.last().is_some_and(|l| l <= self.purged) && self.segments.len() > 1 {
                self.segments.remove(0);
            } else {
                break;
            }
        }
    }

    /// First index held.
    pub fn first_index(&self) -> Option<u64> {
        let seg = self.segments.iter().find(|s| s.last().is_some())?;
        Some(seg.first.max(self.purged + 1)).filter(|f| self.last_index().is_some_and(|l| *f <= l))
    }

    /// Last index held (entries at or below the purge point are not held).
    pub fn last_index(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .find_map(Segment::last)
            .filter(|l| *l > self.purged)
    }

    /// The purge point: entries at or below it are gone (0 when never purged).
    pub fn purged(&self) -> u64 {
        self.purged
    }

    /// Appends `entries` (consecutive, starting one past the last index — or anywhere above the
    /// purge point when the log is empty) and makes them durable before returning.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        if let Some((f, path)) = self.append_unsynced(entries)? {
            f.sync_data().map_err(io(&path))?;
        }
        Ok(())
    }

    /// [`RaftLog::append`] without the final `fdatasync`: the entries are written (readable at
    /// once) and the tail segment's file is returned for the caller to `sync_data` — they are
    /// durable only after that. Segments filled on the way are fsynced here, as `append` does.
    pub fn append_unsynced(&mut self, entries: &[Entry]) -> Result<Option<(File, PathBuf)>> {
        let Some(first) = entries.first() else {
            return Ok(None);
        };
        self.open_tail()?;
        let want = self.last_index().map_or(first.index, |l| l + 1);
        let physical = self.segments.iter().rev().find_map(Segment::last);
        if physical.is_some_and(|p| p + 1 != first.index) && self.last_index().is_none() {
            // Everything held was purged (e.g. a snapshot installed past it): drop those segments
            // and start afresh at this index.
            self.file = None;
            for seg in self.segments.drain(..) {
                fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            }
            sync_dir(&self.dir)?;
        }
        if first.index != want || first.index <= self.purged {
            return Err(Error::Invalid(format!(
                "append at index {} but the log expects {want} (purged through {})",
                first.index, self.purged
            )));
        }
        for w in entries.windows(2) {
            if w[1].index != w[0].index + 1 {
                return Err(Error::Invalid("entries are not consecutive".into()));
            }
        }
        if let Some(e) = entries.iter().find(|e| e.payload.len() > PAYLOAD_MAX) {
            return Err(Error::Invalid(format!(
                "entry {}: payload of {} bytes over {PAYLOAD_MAX}",
                e.index,
                e.payload.len()
            )));
        }
        let mut at = 0;
        while at < entries.len() {
            if self.segments.is_empty()
                || self
                    .segments
                    .last()
                    .is_some_and(|s| s.len >= self.segment_bytes)
            {
                self.roll(entries[at].index)?;
            }
            let seg = self.segments.last_mut().expect("a segment");
            let mut buf = Vec::new();
            let mut offsets = Vec::new();
            while at < entries.len() && seg.len + (buf.len() as u64) < self.segment_bytes {
                offsets.push(seg.len + buf.len() as u64);
                encode(&entries[at], &mut buf);
                at += 1;
            }
            let file = self.file.as_mut().expect("the tail segment is open");
            file.write_all(&buf).map_err(io(&seg.path))?;
            seg.len += buf.len() as u64;
            seg.offsets.extend(offsets);
        }
        let seg = self.segments.last().expect("a segment");
        let f = self
            .file
            .as_ref()
            .expect("the tail segment is open")
            .try_clone()
            .map_err(io(&seg.path))?;
        Ok(Some((f, seg.path.clone())))
    }

    /// Starts a new tail segment at `first`: the old one fsynced, the new one's header and the
    /// directory fsynced before any record goes in.
    fn roll(&mut self, first: u64) -> Result<()> {
        if let (Some(f), Some(s)) = (self.file.as_ref(), self.segments.last()) {
            f.sync_all().map_err(io(&s.path))?;
        }
        // An empty tail segment is reused rather than followed.
        if let Some(s) = self.segments.last() {
            if s.offsets.is_empty() {
                let path = s.path.clone();
                fs::remove_file(&path).map_err(io(&path))?;
                self.segments.pop();
            }
        }
        let (f, seglog::Segment { path, .. }) = FORMAT.create(&self.dir, first)?;
        self.segments.push(Segment {
            path,
            first,
            offsets: Vec::new(),
            len: SEG_HEADER,
        });
        self.file = Some(f);
        Ok(())
    }

    fn open_tail(&mut self) -> Result<()> {
        if self.file.is_none() {
            if let Some(s) = self.segments.last() {
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&s.path)
                    .map_err(io(&s.path))?;
                f.seek(SeekFrom::Start(s.len)).map_err(io(&s.path))?;
                self.file = Some(f);
            }
        }
        Ok(())
    }

    /// Reads entries `[from, to)` (clamped to what is held).
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let lo = from.max(self.first_index().unwrap_or(u64::MAX));
        for s in &self.segments {
            let Some(last) = s.last() else { continue };
            if last < lo || s.first >= to {
                continue;
            }
            let start = lo.max(s.first);
            let end = to.min(last + 1);
            if start >= end {
                continue;
            }
            let a = s.offsets[(start - s.first) as usize];
            let b = if end > last {
                s.len
            } else {
                s.offsets[(end - s.first) as usize]
            };
            let mut f = File::open(&s.path).map_err(io(&s.path))?;
            f.seek(SeekFrom::Start(a)).map_err(io(&s.path))?;
            let mut bytes = vec![0u8; (b - a) as usize];
            f.read_exact(&mut bytes).map_err(io(&s.path))?;
            let mut at = 0;
            while at < bytes.len() {
                match seglog::decode::<RaftFraming>(&bytes, at) {
                    Record::Whole {
                        header,
                        payload,
                        next,
                    } => {
                        out.push(Entry {
                            index: header.index,
                            term: header.term,
                            payload: bytes[payload..next].to_vec(),
                        });
                        at = next;
                    }
                    Record::Short | Record::Damaged(_) => {
                        return Err(Error::Corrupt {
                            path: s.path.clone(),
                            offset: a + at as u64,
                            reason: "record changed on disk since it was checked".into(),
                        })
                    }
                }
            }
        }
        Ok(out)
    }

    /// Drops every entry at or above `index` (a follower's conflicting suffix) durably.
    pub fn truncate_from(&mut self, index: u64) -> Result<()> {
        if self.last_index().is_none_or(|l| index > l) {
            return Ok(());
        }
        if index <= self.purged {
            return Err(Error::Invalid(format!(
                "truncate at {index}, at or below the purge point {}",
                self.purged
            )));
        }
        self.file = None;
        while let Some(s) = self.segments.last() {
            if s.first >= index && self.segments.len() > 1 {
                let path = s.path.clone();
                fs::remove_file(&path).map_err(io(&path))?;
                self.segments.pop();
            } else {
                break;
            }
        }
        sync_dir(&self.dir)?;
        let s = self.segments.last_mut().expect("a segment");
        if index >= s.first {
            let keep = (index - s.first) as usize;
            if keep < s.offsets.len() {
                let cut = s.offsets[keep];
                let f = OpenOptions::new()
                    .write(true)
                    .open(&s.path)
                    .map_err(io(&s.path))?;
                f.set_len(cut).map_err(io(&s.path))?;
                f.sync_all().map_err(io(&s.path))?;
                s.offsets.truncate(keep);
                s.len = cut;
            }
        }
        self.open_tail()
    }

    /// Forgets entries at or below `index` (covered by a durable snapshot): whole segments are
    /// deleted; the rest are hidden (the point is recorded durably first).
    pub fn purge_to(&mut self, index: u64) -> Result<()> {
        if index <= self.purged {
            return Ok(());
        }
        kyrodb_storage::write_file_atomic(&self.dir.join("purged"), &small(&index.to_le_bytes()))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        self.purged = index;
        while self.segments.len() > 1 && self.segments[0].last().is_some_and(|l| l <= index) {
            let path = self.segments[0].path.clone();
            fs::remove_file(&path).map_err(io(&path))?;
            self.segments.remove(0);
        }
        sync_dir(&self.dir)
    }

    /// Saves the vote durably (before a vote reply may be sent).
    pub fn save_vote(&mut self, v: Vote) -> Result<()> {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&v.term.to_le_bytes());
        b.extend_from_slice(&v.voted_for.map_or(0, |n| n + 1).to_le_bytes());
        b.push(u8::from(v.committed));
        kyrodb_storage::write_file_atomic(&self.dir.join("vote"), &small(&b))
            .map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Records the committed index (not fsynced: an optimisation for restart, not for safety).
    pub fn save_committed(&mut self, committed: &[u8]) -> Result<()> {
        let tmp = self.dir.join("committed.tmp");
        fs::write(&tmp, small(committed)).map_err(io(&tmp))?;
        fs::rename(&tmp, self.dir.join("committed")).map_err(io(&tmp))
    }
}

/// `bytes` followed by their CRC32C.
fn small(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
    b
}

/// A file written by [`small`], checked; None when absent.
fn read_small(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => {
            let ok = b.len() >= 12
                && crc32c::crc32c(&b[..b.len() - 4]).to_le_bytes() == b[b.len() - 4..];
            if !ok {
                return Err(Error::Corrupt {
                    path: path.to_owned(),
                    offset: 0,
                    reason: "checksum mismatch".into(),
                });
            }
            Ok(Some(b[..b.len() - 4].to_vec()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

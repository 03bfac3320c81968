//! `backups/<id>/manifest.json`: what a backup holds, checksummed over its canonical form.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Block size of the per-block checksums that locate damage inside a file.
pub const BLOCK_BYTES: u64 = 4 << 20;

/// A backup's manifest. Its `checksum` is xxh3-128 (32 hex digits) of the JSON of the manifest
/// with `checksum` set to the empty string (serde's field order, no whitespace), so any change to
/// the file — a flipped byte, a truncation, an edit — is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The backup's id: its UTC start time, `YYYYMMDDTHHMMSS.mmmZ` (sorts by time).
    pub id: String,
    /// Unix milliseconds when the backup started.
    pub created_ms: u64,
    /// Every write with a sequence number up to this one is in the backup, and no later one.
    pub seq: u64,
    /// The version of the kyrodb that wrote it.
    pub kyrodb_version: String,
    /// The files, by their path inside a data directory.
    pub files: Vec<FileEntry>,
    /// See the type's documentation.
    pub checksum: String,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// The path inside the data directory: `MANIFEST`, `snap/<name>` or `search/<name>`.
    pub path: String,
    /// xxh3-128 of the content, 32 hex digits; the object is `data/<hash>`.
    pub hash: String,
    /// The file's length.
    pub bytes: u64,
    /// xxh3-64 of each [`BLOCK_BYTES`] block, 16 hex digits each.
    pub blocks: Vec<String>,
}

impl Manifest {
    /// Sets `checksum` over the rest.
    pub fn seal(&mut self) {
        self.checksum = self.compute_checksum();
    }

    fn compute_checksum(&self) -> String {
        let mut body = self.clone();
        body.checksum = String::new();
        let bytes = serde_json::to_vec(&body).expect("a manifest serializes");
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
    }

    /// The bytes written to the target.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        v.push(b'\n');
        v
    }

    /// Parses and checks a manifest read from `key`: the JSON, the format, the checksum, and that
    /// every path is one a data directory can hold (never outside it).
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Manifest> {
        let damaged = |offset: u64, reason: String| Error::Damaged {
            path: "manifest.json".into(),
            object: key.to_owned(),
            offset,
            reason,
        };
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json reports line and column; give the byte offset of that line's start.
            let offset = bytes
                .split(|b| *b == b'\n')
                .take(e.line().saturating_sub(1))
                .map(|l| l.len() as u64 + 1)
                .sum::<u64>()
                + e.column().saturating_sub(1) as u64;
            damaged(offset, format!("not a manifest: {e}"))
        })?;
        if m.format != FORMAT {
            return Err(damaged(
                0,
                format!("format {} (this kyrodb reads format {FORMAT})", m.format),
            ));
        }
        let want = m.compute_checksum();
        if m.checksum != want {
            return Err(damaged(
                0,
                format!(
                    "manifest checksum {} where its content hashes to {want}",
                    m.checksum
                ),
            ));
        }
        for f in &m.files {
            if !valid_path(&f.path) {
                return Err(damaged(
                    0,
                    format!("file path {:?} is not one a data directory holds", f.path),
                ));
            }
            let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex(&f.hash, 32) || !f.blocks.iter().all(|b| hex(b, 16)) {
                return Err(damaged(0, format!("{}: malformed checksums", f.path)));
            }
            if f.blocks.len() as u64 != f.bytes.div_ceil(BLOCK_BYTES) {
                return Err(damaged(
                    0,
                    format!(
                        "{}: {} block checksums for {} bytes",
                        f.path,
                        f.blocks.len(),
                        f.bytes
                    ),
                ));
            }
        }
        if !m.files.iter().any(|f| f.path == "MANIFEST") {
            return Err(damaged(0, "no engine MANIFEST among the files".into()));
        }
        Ok(m)
    }

    /// Total bytes of the files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// `MANIFEST`, or `snap/<name>` / `search/<name>` with a plain file name.
pub(crate) fn valid_path(p: &str) -> bool {
    if p == "MANIFEST" {
        return true;
    }
    let Some((dir, name)) = p.split_once('/') else {
        return false;
    };
    matches!(dir, "snap" | "search")
        && !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `YYYYMMDDTHHMMSS.mmmZ` for Unix milliseconds (UTC, proleptic Gregorian).
pub fn id_for(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// Whether `id` has the shape [`id_for`] gives (the only ids accepted from a user).
pub(crate) fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            8 => *c == b'T',
            15 => *c == b'.',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut m = Manifest {
            format: FORMAT,
            id: id_for(1_764_000_000_123),
            created_ms: 1_764_000_000_123,
            seq: 42,
            kyrodb_version: "0.1.0".into(),
            files: vec![FileEntry {
                path: "MANIFEST".into(),
                hash: "0".repeat(32),
                bytes: 10,
                blocks: vec!["1".repeat(16)],
            }],
            checksum: String::new(),
        };
        m.seal();
        m
    }

    #[test]
    fn ids_are_utc_times_that_sort() {
        assert_eq!(id_for(0), "19700101T000000.000Z");
        assert_eq!(id_for(1_764_000_000_123), "20251124T160000.123Z");
        assert_eq!(id_for(951_782_400_000), "20000229T000000.000Z");
        assert!(valid_id(&id_for(1_764_000_000_123)));
        assert!(!valid_id("../../etc"));
        assert!(id_for(1_000) < id_for(999_999_999_999));
    }

    #[test]
    fn a_manifest_round_trips_and_any_edit_is_refused() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode("k", &bytes).unwrap(), m);
        let text = String::from_utf8(bytes).unwrap();
        let edited = text.replace("\"seq\": 42", "\"seq\": 43");
        assert_ne!(edited, text);
        let e = Manifest::decode("k", edited.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let e = Manifest::decode("k", &text.as_bytes()[..text.len() / 2]).unwrap_err();
        assert!(matches!(e, Error::Damaged { .. }), "{e}");
    }

    #[test]
    fn paths_outside_a_data_directory_are_refused() {
        for ok in [
            "MANIFEST",
            "snap/00000001-0000000000000002.bin",
            "search/_c.x.graph",
        ] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in [
            "../x",
            "snap/../x",
            "snap/",
            "/etc/passwd",
            "wal/1.wal",
            "snap/a/b",
            "search/..",
            "LOCK",
        ] {
            assert!(!valid_path(bad), "{bad}");
        }
        let mut m = sample();
        m.files[0].path = "snap/../../x".into();
        m.seal();
        assert!(Manifest::decode("k", &m.encode()).is_err());
    }
}

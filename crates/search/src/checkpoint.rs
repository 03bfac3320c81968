//! Persisted graphs: a collection's vector indexes and the row → key table they are keyed by, written
//! at shutdown and with every engine snapshot, loaded at start **only after verification** against the
//! stored documents (a node whose stored vector differs from the document's is re-set; rows whose
//! document is gone are removed; documents without a row get one). A missing, corrupt or mismatched
//! file means the graph is rebuilt from the documents — it is a cache, never a source of truth.
//!
//! The same file carries the text index's sealed segments (`text/persist.rs`), adopted at start row
//! by row only where the stored document's text hashes as written.
//!
//! Layout (little-endian): `"KYROGRPH"`, u32 version = 2, u32 row_count, row_count × (u32 row, u64 key),
//! u16 field_count, per field: u16 name_len, name, u32 dim, u8 metric, u64 graph_len, graph bytes
//! (`Hnsw::write_to`, itself checksummed), u64 text_len, text section (`text/persist.rs`; 0 bytes =
//! none), then u64 xxh3-64 of everything before. Version 1 files (no text section) are still read.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use kyrodb_storage::codec::{ReadError, Reader};

use crate::{
    distance::Metric,
    hnsw::Hnsw,
    text::{persist::LoadedText, TextOptions},
};

const MAGIC: &[u8; 8] = b"KYROGRPH";
const VERSION: u32 = 2;

/// What a verified file gives back.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// key → row, as the graphs were written.
    pub rows: HashMap<u64, u32>,
    /// Graph per vector field name.
    pub graphs: HashMap<String, Hnsw>,
    /// The text index's sealed segments, when the section was written and matches the schema.
    pub text: Option<LoadedText>,
    /// Why there is no text section to adopt from (empty when there is one).
    pub text_note: String,
}

/// Why a file was not used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason} at byte {offset}")]
pub(crate) struct Refused {
    pub path: String,
    pub offset: u64,
    pub reason: String,
}

pub(crate) fn path(dir: &Path, keyspace: &str) -> PathBuf {
    dir.join("search").join(format!("{keyspace}.graph"))
}

fn metric_byte(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::Dot => 1,
        Metric::L2 => 2,
    }
}

/// Serialises rows and graphs.
pub(crate) fn encode(
    rows: &[(u32, u64)],
    graphs: &[(&str, &Hnsw)],
    text: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for (r, k) in rows {
        out.extend_from_slice(&r.to_le_bytes());
        out.extend_from_slice(&k.to_le_bytes());
    }
    out.extend_from_slice(&(graphs.len() as u16).to_le_bytes());
    for (name, g) in graphs {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(g.dim() as u32).to_le_bytes());
        out.push(metric_byte(g.metric()));
        let mut gb = Vec::new();
        g.write_to(&mut gb)?;
        out.extend_from_slice(&(gb.len() as u64).to_le_bytes());
        out.extend_from_slice(&gb);
    }
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text);
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// Parses and verifies a file; `fields` gives each expected field's dimension and metric,
/// `text_fields` the text fields with their analyzer options.
pub(crate) fn decode(
    file: &Path,
    bytes: &[u8],
    fields: &[(String, usize, Metric)],
    text_fields: &[(String, TextOptions)],
) -> Result<Loaded, Refused> {
    let refuse = |offset: usize, reason: String| Refused {
        path: file.display().to_string(),
        offset: offset as u64,
        reason,
    };
    if bytes.len() < MAGIC.len() + 8 + 8 {
        return Err(refuse(0, "truncated".into()));
    }
    let body = &bytes[..bytes.len() - 8];
    let want = kyrodb_storage::codec::u64_at(bytes, bytes.len() - 8)
        .expect("checked: longer than 8 bytes");
    if xxhash_rust::xxh3::xxh3_64(body) != want {
        return Err(refuse(body.len(), "checksum mismatch".into()));
    }
    let mut r = Reader::new(body);
    let bad = |e: ReadError| refuse(e.offset(), e.reason().to_owned());
    if r.take(8).map_err(bad)? != MAGIC {
        return Err(refuse(0, "not a KyroDB graph file".into()));
    }
    let version = r.u32().map_err(bad)?;
    if version != VERSION && version != 1 {
        return Err(refuse(8, format!("unknown version {version}")));
    }
    let n = r.u32().map_err(bad)? as usize;
    let mut rows = HashMap::with_capacity(n.min(1 << 24));
    for _ in 0..n {
        let row = r.u32().map_err(bad)?;
        let key = r.u64().map_err(bad)?;
        rows.insert(key, row);
    }
    let nf = r.u16().map_err(bad)? as usize;
    let mut graphs = HashMap::new();
    for _ in 0..nf {
        let name = r.str16().map_err(bad)?.to_owned();
        let dim = r.u32().map_err(bad)? as usize;
        let metric = r.take(1).map_err(bad)?[0];
        let glen = r.u64().map_err(bad)? as usize;
        let start = r.at();
        let gbytes = r.take(glen).map_err(bad)?;
        let Some((_, fdim, fmetric)) = fields.iter().find(|(n, ..)| *n == name) else {
            continue; // a field the schema no longer has
        };
        if *fdim != dim || metric_byte(*fmetric) != metric {
            return Err(refuse(
                start,
                format!("field {name:?} has another dimension or metric"),
            ));
        }
        let g = Hnsw::read_from(gbytes, dim, *fmetric).map_err(|e| {
            refuse(
                start + e.offset as usize,
                format!("field {name:?}: {}", e.reason),
            )
        })?;
        graphs.insert(name, g);
    }
    let (mut text, mut text_note) = (None, String::new());
    if version == 1 {
        text_note = "rebuilt: the checkpoint predates text sections".into();
    } else {
        let len = r.u64().map_err(bad)? as usize;
        let start = r.at();
        let section = r.take(len).map_err(bad)?;
        if len == 0 {
            text_note = "rebuilt: the checkpoint has no text section".into();
        } else {
            match crate::text::persist::decode(section, text_fields) {
                Ok(t) => text = Some(t),
                Err((off, reason)) => {
                    let e = refuse(start + off, format!("text section: {reason}"));
                    tracing::warn!(%e, "text section not used; analysing the documents again");
                    text_note = format!("rebuilt: {e}");
                }
            }
        }
    }
    if r.remaining() != 0 {
        return Err(refuse(r.at(), "trailing bytes".into()));
    }
    Ok(Loaded {
        rows,
        graphs,
        text,
        text_note,
    })
}

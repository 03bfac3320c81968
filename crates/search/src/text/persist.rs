//! The persisted form of a text index's sealed segments (a section of the collection's checkpoint
//! file, `checkpoint.rs`), and their adoption at start.
//!
//! Only sealed segments are written, and in them only the postings of live rows: the mutable
//! segment (at most `SEAL_DOCS` (`index.rs`) writes) is analysed again at start. Each written
//! row carries its key and a hash of its text ([`text_hash`]); at start a stored document adopts its
//! row's postings only when the row, key and text hash all match (the document is then known to be
//! exactly what was analysed), otherwise it is analysed afresh and the file's postings of that row
//! stay dead. So a file written before later writes (a crash between checkpoints) is repaired, never
//! served stale. The section is used only when the fields and their analyzer options are the
//! schema's and [`ANALYZER_VERSION`] is this build's.
//!
//! Layout (little-endian): u32 analyzer version, u16 field count, per field: u16 name length, name,
//! u32 options length, options (JSON), u32 term-id count, per id: u16 length, term (empty = free
//! id); u64 next segment id; u32 segment count, per segment: u64 id, u32 row count, per row: u32
//! row, u64 key, u64 text hash; then per field: u32 list count, per list: u32 term id, u32 posting
//! count, per posting: u32 row, u32 length, u32 tf, tf × u32 position.

use std::collections::{BTreeMap, HashMap};

use kyrodb_storage::codec::{ReadError, Reader};

use super::{analyzer::TextOptions, postings::PostingList};

/// Bumped whenever the analyzer's output for the same text and options can change.
pub(crate) const ANALYZER_VERSION: u32 = 1;

/// The hash that ties a row's persisted postings to its text: xxh3-64 over, per indexed field in
/// order, a presence byte, the text's length and bytes.
pub(crate) fn text_hash<'a>(
    fields: impl Iterator<Item = &'a str>,
    text: &BTreeMap<String, String>,
) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for f in fields {
        match text.get(f) {
            Some(t) => {
                h.update(&[1]);
                h.update(&(t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
            None => h.update(&[0]),
        }
    }
    h.digest()
}

/// One posting as written: row, the row's length in the field, positions (tf = their count).
pub(crate) struct PostingOut<'a> {
    pub row: u32,
    pub len: u32,
    pub positions: &'a [u32],
}

/// Writes the section header: analyzer version, fields with options and dictionaries, next id.
pub(crate) fn write_header(
    out: &mut Vec<u8>,
    fields: &[(String, TextOptions)],
    dicts: &[Vec<&str>],
    next_id: u64,
) {
    out.extend_from_slice(&ANALYZER_VERSION.to_le_bytes());
    out.extend_from_slice(&(fields.len() as u16).to_le_bytes());
    for ((name, opts), dict) in fields.iter().zip(dicts) {
        put_str16(out, name);
        let o = serde_json::to_vec(opts).expect("options serialise");
        out.extend_from_slice(&(o.len() as u32).to_le_bytes());
        out.extend_from_slice(&o);
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        for t in dict {
            put_str16(out, t);
        }
    }
    out.extend_from_slice(&next_id.to_le_bytes());
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    // Terms are at most 100 bytes, field names at most a few hundred: u16 is ample.
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

/// Writes one segment: its id, its rows (row, key, text hash) and per field its lists.
pub(crate) fn write_segment<'a>(
    out: &mut Vec<u8>,
    id: u64,
    rows: &[(u32, u64, u64)],
    fields: impl Iterator<Item = Vec<(u32, Vec<PostingOut<'a>>)>>,
) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for (r, k, h) in rows {
        out.extend_from_slice(&r.to_le_bytes());
        out.extend_from_slice(&k.to_le_bytes());
        out.extend_from_slice(&h.to_le_bytes());
    }
    for lists in fields {
        out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
        for (t, postings) in lists {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&(postings.len() as u32).to_le_bytes());
            for p in postings {
                out.extend_from_slice(&p.row.to_le_bytes());
                out.extend_from_slice(&p.len.to_le_bytes());
                out.extend_from_slice(&(p.positions.len() as u32).to_le_bytes());
                for x in p.positions {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
}

/// A row a stored document may adopt.
#[derive(Debug)]
pub(crate) struct PendingRow {
    /// Index of its segment among the loaded ones.
    pub seg: usize,
    pub key: u64,
    pub hash: u64,
    /// Per field: length and distinct term ids (ascending).
    pub fields: Vec<(u32, Vec<u32>)>,
    /// Per field: positions seen in its postings (checked against the length, then unused).
    tokens: Vec<u32>,
}

/// A decoded, structurally verified section.
#[derive(Debug)]
pub(crate) struct LoadedText {
    /// Per field, term id → term (empty = free id).
    pub dicts: Vec<Vec<Box<str>>>,
    pub next_id: u64,
    /// (id, per field its lists), built as the index holds them.
    pub segments: Vec<(u64, Vec<FieldLists>)>,
    pub pending: HashMap<u32, PendingRow>,
}

/// One field's lists of a segment: (term id, its postings), ascending by term id.
pub(crate) type FieldLists = Vec<(u32, PostingList)>;

/// Why a section was not used: the reason and its byte offset within the section.
pub(crate) type Refusal = (usize, String);

/// A failed read as a [`Refusal`].
fn refusal(e: ReadError) -> Refusal {
    (e.offset(), e.reason().to_owned())
}

/// Reads a section. `fields` are the schema's text fields with their options; a section written
/// for other fields or options (or another analyzer version) is refused without reading further.
pub(crate) fn decode(
    bytes: &[u8],
    fields: &[(String, TextOptions)],
) -> Result<LoadedText, Refusal> {
    let mut r = Reader::new(bytes);
    let version = r.u32().map_err(refusal)?;
    if version != ANALYZER_VERSION {
        return Err((
            0,
            format!("analyzer version {version}, this build's is {ANALYZER_VERSION}"),
        ));
    }
    let nf = r.u16().map_err(refusal)? as usize;
    if nf != fields.len() {
        return Err((
            r.at(),
            format!("{nf} text fields, the schema has {}", fields.len()),
        ));
    }
    let mut dicts = Vec::with_capacity(nf);
    for (name, opts) in fields {
        let at = r.at();
        let n = r.str16().map_err(refusal)?;
        if n != name.as_str() {
            return Err((
                at,
                format!("text field {n:?} where the schema has {name:?}"),
            ));
        }
        let olen = r.u32().map_err(refusal)? as usize;
        let at = r.at();
        let o: TextOptions = serde_json::from_slice(r.take(olen).map_err(refusal)?)
            .map_err(|e| (at, format!("field {name:?}: options: {e}")))?;
        if &o != opts {
            return Err((at, format!("field {name:?}: analyzer options changed")));
        }
        let nt = r.u32().map_err(refusal)? as usize;
        let mut dict = Vec::with_capacity(nt.min(bytes.len() / 2));
        for _ in 0..nt {
            dict.push(Box::<str>::from(r.str16().map_err(refusal)?));
        }
        dicts.push(dict);
    }
    let next_id = r.u64().map_err(refusal)?;
    let ns = r.u32().map_err(refusal)? as usize;
    let mut segments = Vec::with_capacity(ns.min(1 << 16));
    let mut pending: HashMap<u32, PendingRow> = HashMap::new();
    for seg in 0..ns {
        let id = r.u64().map_err(refusal)?;
        if id >= next_id {
            return Err((
                r.at() - 8,
                format!("segment id {id} not below next id {next_id}"),
            ));
        }
        let nr = r.u32().map_err(refusal)? as usize;
        for _ in 0..nr {
            let at = r.at();
            let (row, key, hash) = (
                r.u32().map_err(refusal)?,
                r.u64().map_err(refusal)?,
                r.u64().map_err(refusal)?,
            );
            let p = PendingRow {
                seg,
                key,
                hash,
                fields: vec![(0, Vec::new()); nf],
                tokens: vec![0; nf],
            };
            if pending.insert(row, p).is_some() {
                return Err((at, format!("row {row} listed twice")));
            }
        }
        let mut per_field = Vec::with_capacity(nf);
        for (fi, dict) in dicts.iter().enumerate() {
            let nl = r.u32().map_err(refusal)? as usize;
            let mut lists = Vec::with_capacity(nl.min(dict.len()));
            let mut prev_term = None;
            for _ in 0..nl {
                let at = r.at();
                let term = r.u32().map_err(refusal)?;
                if dict.get(term as usize).is_none_or(|t| t.is_empty()) {
                    return Err((at, format!("term id {term} is not in the dictionary")));
                }
                if prev_term.is_some_and(|p| p >= term) {
                    return Err((at, "term ids out of order".into()));
                }
                prev_term = Some(term);
                let np = r.u32().map_err(refusal)? as usize;
                let mut l = PostingList::default();
                let (mut prev_row, mut positions) = (None, Vec::new());
                for _ in 0..np {
                    let at = r.at();
                    let (row, len, tf) = (
                        r.u32().map_err(refusal)?,
                        r.u32().map_err(refusal)?,
                        r.u32().map_err(refusal)? as usize,
                    );
                    if prev_row.is_some_and(|p| p >= row) {
                        return Err((at, format!("term {term}: rows out of order")));
                    }
                    let Some(p) = pending.get_mut(&row).filter(|p| p.seg == seg) else {
                        return Err((
                            at,
                            format!("posting of row {row}, not a row of its segment"),
                        ));
                    };
                    let f = &mut p.fields[fi];
                    if tf == 0 || (f.0 != 0 && f.0 != len) {
                        return Err((at, format!("row {row}: inconsistent length or tf")));
                    }
                    f.0 = len;
                    f.1.push(term);
                    p.tokens[fi] += tf as u32;
                    prev_row = Some(row);
                    positions.clear();
                    for _ in 0..tf {
                        positions.push(r.u32().map_err(refusal)?);
                    }
                    l.push(row, len, &positions);
                }
                lists.push((term, l));
            }
            per_field.push(lists);
        }
        segments.push((id, per_field));
    }
    if r.at() != bytes.len() {
        return Err((r.at(), "trailing bytes".into()));
    }
    // A row's tfs in a field add up to its length (its tokens are exactly its postings).
    for (row, p) in &pending {
        if let Some(fi) = (0..nf).find(|&fi| p.tokens[fi] != p.fields[fi].0) {
            return Err((
                0,
                format!("row {row}: field {fi}: positions do not add up to its length"),
            ));
        }
    }
    Ok(LoadedText {
        dicts,
        next_id,
        segments,
        pending,
    })
}

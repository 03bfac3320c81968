//! The full-text index of a collection: every text field, BM25 top-k with block-max WAND.
//!
//! - **Rows** are the collection's rows (dense u32). A row's tokens live in exactly one segment:
//!   the mutable segment when it was written since the last seal, else one sealed segment.
//! - **Mutable segment** ([`Building`]): postings appended per write, so an acknowledged write is
//!   searchable at once; scored exhaustively (it holds at most [`SEAL_DOCS`] writes). When that
//!   many documents were written to it, it is sealed: postings sorted by row, cut into blocks of
//!   [`BLOCK`] with each block's largest tf and shortest document (the block-max bound).
//! - **Sealed segments** are immutable ([`Arc`]) apart from their `live` bitmaps (a deleted or
//!   rewritten row is cleared there and never scored again). Segments are merged in the
//!   background ([`TextIndex::merge_plan`] / [`merge`] / [`TextIndex::install_merge`]): 8 of a
//!   size class into one, dropping dead rows.
//! - **Statistics** per field, from live documents only: N (documents with at least one token in
//!   the field), the sum of lengths (tokens after stop-word removal), and each term's document
//!   frequency — so deletes are honoured exactly.
//!
//! BM25: k1 = 1.2, b = 0.75, idf = ln(1 + (N − n + 0.5)/(n + 0.5)); a document's score is the sum,
//! over the searched fields f (boost w_f) and the query's distinct terms t, of
//! w_f · idf_f(t) · tf·(k1+1) / (tf + k1·(1 − b + b·len/avgdl_f)).
//!
//! All of this is derived state: rebuilt from the stored documents when a collection is attached.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BinaryHeap, HashMap},
    sync::Arc,
};

use roaring::RoaringBitmap;

use super::{
    analyzer::{Analyzer, TextOptions},
    persist::{self, text_hash, LoadedText, PendingRow, PostingOut},
    phrase::{self, Phrase, Positions},
    postings::PostingList,
};
use crate::cancel::{Cancel, Poll};

pub use super::postings::BLOCK;
/// Documents written to the mutable segment before it is sealed.
pub const SEAL_DOCS: usize = 4096;
/// Segments of one size class merged together.
pub const MERGE_FACTOR: usize = 8;
/// Most distinct words a text query may hold (each is a posting-list cursor per segment).
pub const QUERY_TERMS_MAX: usize = 64;
/// Most phrases in one text query.
pub const QUERY_PHRASES_MAX: usize = 16;
/// A filter allowing fewer rows than the query's postings / this is answered by scoring its rows.
pub const EXACT_OVER_FILTER_FACTOR: u64 = 8;
/// Loop iterations (postings, WAND steps, rows, phrase steps) between looks at the cancellation
/// token.
const POLL_EVERY: u32 = 256;

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// A sealed segment's postings: per field, term id → list.
#[derive(Debug, Default)]
pub struct SegmentData {
    fields: Vec<HashMap<u32, PostingList>>,
}

#[derive(Debug)]
struct Sealed {
    id: u64,
    data: Arc<SegmentData>,
    live: RoaringBitmap,
}

/// The mutable segment.
#[derive(Debug, Default)]
struct Building {
    /// Live rows: per field, (term id, position) sorted.
    rows: BTreeMap<u32, Vec<Vec<(u32, u32)>>>,
    /// Per field, term id → (row, tf) of the live rows (unordered).
    postings: Vec<HashMap<u32, Vec<(u32, u32)>>>,
    writes: usize,
}

/// One field's dictionary and statistics.
#[derive(Debug)]
struct FieldIndex {
    name: String,
    analyzer: Analyzer,
    dict: HashMap<Box<str>, u32>,
    /// By term id: the text (empty when the id is free) and live document frequency.
    terms: Vec<(Box<str>, u32)>,
    free_ids: Vec<u32>,
    /// By row: length (0 = no tokens) and distinct term ids.
    lens: Vec<u32>,
    row_terms: Vec<Box<[u32]>>,
    docs: u64,
    total_len: u64,
}

impl FieldIndex {
    fn term_id(&mut self, term: &str) -> u32 {
        if let Some(&id) = self.dict.get(term) {
            return id;
        }
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.terms[id as usize] = (term.into(), 0);
                id
            }
            None => {
                self.terms.push((term.into(), 0));
                (self.terms.len() - 1) as u32
            }
        };
        self.dict.insert(term.into(), id);
        id
    }

    fn avgdl(&self) -> f32 {
        if self.docs == 0 {
            1.0
        } else {
            (self.total_len as f64 / self.docs as f64).max(1e-9) as f32
        }
    }

    fn idf(&self, df: u32) -> f32 {
        let n = self.docs as f64;
        let df = df as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln() as f32
    }
}

/// The text index's state, as a collection's info shows it (keys in alphabetical order, as the
/// answer has always had them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TextIndexInfo {
    /// Bytes the index holds.
    pub bytes: u64,
    /// Per text field.
    pub fields: Vec<TextFieldInfo>,
    /// Documents in the mutable segment (searchable, not yet sealed).
    pub mutable_docs: usize,
    /// Live documents in sealed segments.
    pub sealed_docs: u64,
    /// Sealed segments.
    pub sealed_segments: usize,
}

/// One text field's statistics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TextFieldInfo {
    /// Average length (tokens after stop words) of the documents with this field.
    pub avg_len: f32,
    /// Documents with at least one token in the field.
    pub docs: u64,
    /// The field.
    pub name: String,
    /// Distinct terms.
    pub terms: usize,
}

/// The text index of one collection.
#[derive(Debug)]
pub struct TextIndex {
    fields: Vec<FieldIndex>,
    building: Building,
    sealed: Vec<Sealed>,
    next_id: u64,
    seal_docs: usize,
    /// By row: [`text_hash`] of the text it was indexed with (what the checkpoint writes).
    hashes: Vec<u64>,
    /// At start from a checkpoint: rows stored documents may adopt, and the counts so far.
    preload: Option<Preload>,
}

#[derive(Debug, Default)]
struct Preload {
    pending: HashMap<u32, PendingRow>,
    adopted: u64,
    analysed: u64,
}

/// A parsed text query for one request (see [`TextIndex::query`]).
#[derive(Debug, Clone)]
pub struct TextQuery {
    /// (field position, boost, distinct term ids with their idf-weighted weight, phrases).
    fields: Vec<FieldQuery>,
}

#[derive(Debug, Clone)]
struct FieldQuery {
    field: usize,
    avgdl: f32,
    /// (term id, boost × idf).
    terms: Vec<(u32, f32)>,
    /// Each phrase: its distinct term ids with their offsets from the phrase's first word; empty
    /// when the phrase has no words in this field's analysis (no constraint). A phrase with a term
    /// the field does not hold cannot match in it (`None`).
    phrases: Vec<Option<Phrase>>,
}

/// What a text search did (for `explain`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TextStats {
    /// Segments searched (the mutable one included).
    pub segments: usize,
    /// Postings in the lists of the query's terms, over all segments.
    pub postings: u64,
    /// Documents fully scored.
    pub scored: u64,
    /// Documents that passed the score bound but lacked a phrase.
    pub phrase_rejected: u64,
    /// `wand` (block-max WAND over the posting lists) or `exact_over_filter` (each row the filter
    /// allows scored directly: chosen when those are few against the query's postings).
    pub strategy: &'static str,
}

/// The BM25 term-frequency part: tf·(k1+1) / (tf + k1·(1 − b + b·len/avgdl)).
#[inline]
fn tf_part(tf: u32, len: u32, avgdl: f32) -> f32 {
    let tf = tf as f32;
    tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len as f32 / avgdl))
}

/// Is `bound` possibly enough to enter a heap whose threshold is `theta`? (A margin covers float
/// rounding between the bound's sum and a score's; ties are kept, so they can break by id.)
#[inline]
fn may_beat(bound: f32, theta: f32) -> bool {
    bound >= theta * (1.0 - 1e-5)
}

struct Cand {
    score: f32,
    id: Arc<str>,
    row: u32,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    /// "Better" is greater: higher score, then smaller id.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.id.cmp(&self.id))
    }
}

/// The top-k heap (a min-heap of the best k), and the search's look at its cancellation token.
struct TopK<'a> {
    k: usize,
    heap: BinaryHeap<std::cmp::Reverse<Cand>>,
    id_of: &'a dyn Fn(u32) -> Option<Arc<str>>,
    poll: Poll<'a>,
}

impl TopK<'_> {
    /// Best first.
    fn into_sorted(self) -> Vec<(u32, f32)> {
        let mut out: Vec<Cand> = self.heap.into_iter().map(|c| c.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out.into_iter().map(|c| (c.row, c.score)).collect()
    }

    fn theta(&self) -> f32 {
        if self.heap.len() < self.k {
            0.0
        } else {
            self.heap.peek().map_or(0.0, |c| c.0.score)
        }
    }

    fn offer(&mut self, row: u32, score: f32) {
        let Some(id) = (self.id_of)(row) else {
            return;
        };
        let c = Cand { score, id, row };
        if self.heap.len() < self.k {
            self.heap.push(std::cmp::Reverse(c));
        } else if self.heap.peek().is_some_and(|m| c > m.0) {
            self.heap.pop();
            self.heap.push(std::cmp::Reverse(c));
        }
        debug_assert!(self.heap.len() <= self.k);
    }
}

/// A cursor over one posting list inside block-max WAND.
struct Cursor<'a> {
    list: &'a PostingList,
    weight: f32,
    avgdl: f32,
    i: usize,
    upper: f32,
}

impl Cursor<'_> {
    fn doc(&self) -> u32 {
        self.list.rows.get(self.i).copied().unwrap_or(u32::MAX)
    }

    /// The block holding the first posting ≥ `target` at or after the cursor (shallow: the cursor
    /// does not move), or None past the end.
    fn block_of(&self, target: u32) -> Option<usize> {
        let mut b = self.i / BLOCK;
        while b < self.list.blocks.len() && self.list.blocks[b].last < target {
            b += 1;
        }
        (b < self.list.blocks.len()).then_some(b)
    }

    fn block_bound(&self, b: usize) -> f32 {
        let m = self.list.blocks[b];
        self.weight * tf_part(m.max_tf, m.min_len, self.avgdl)
    }

    fn advance_to(&mut self, target: u32) {
        if self.doc() >= target {
            return;
        }
        match self.block_of(target) {
            None => self.i = self.list.rows.len(),
            Some(b) => {
                let start = self.i.max(b * BLOCK);
                let end = ((b + 1) * BLOCK).min(self.list.rows.len());
                let off = self.list.rows[start..end].partition_point(|&r| r < target);
                self.i = start + off;
            }
        }
    }

    fn score(&self) -> f32 {
        self.weight * tf_part(self.list.tfs[self.i], self.list.lens[self.i], self.avgdl)
    }
}

impl TextIndex {
    /// An empty index over `fields` (name and analyzer options, in schema order).
    pub fn new(fields: &[(String, TextOptions)]) -> TextIndex {
        TextIndex {
            fields: fields
                .iter()
                .map(|(name, o)| FieldIndex {
                    name: name.clone(),
                    analyzer: Analyzer::new(o),
                    dict: HashMap::new(),
                    terms: Vec::new(),
                    free_ids: Vec::new(),
                    lens: Vec::new(),
                    row_terms: Vec::new(),
                    docs: 0,
                    total_len: 0,
                })
                .collect(),
            building: Building {
                postings: vec![HashMap::new(); fields.len()],
                ..Building::default()
            },
            sealed: Vec::new(),
            next_id: 0,
            seal_docs: SEAL_DOCS,
            hashes: Vec::new(),
            preload: None,
        }
    }

    /// An index over `fields` holding a checkpoint's sealed segments with no live rows yet: each
    /// stored document then either [`adopt`](Self::adopt)s its row or is inserted, and
    /// [`finish_load`](Self::finish_load) ends the load.
    pub(crate) fn from_loaded(fields: &[(String, TextOptions)], l: LoadedText) -> TextIndex {
        let mut ix = TextIndex::new(fields);
        for (f, dict) in ix.fields.iter_mut().zip(l.dicts) {
            for (id, t) in dict.into_iter().enumerate() {
                if t.is_empty() {
                    f.free_ids.push(id as u32);
                } else {
                    f.dict.insert(t.clone(), id as u32);
                }
                f.terms.push((t, 0));
            }
        }
        ix.next_id = l.next_id;
        for (id, per_field) in l.segments {
            let fields = per_field
                .into_iter()
                .map(|lists| lists.into_iter().collect())
                .collect();
            ix.sealed.push(Sealed {
                id,
                data: Arc::new(SegmentData { fields }),
                live: RoaringBitmap::new(),
            });
        }
        ix.preload = Some(Preload {
            pending: l.pending,
            ..Preload::default()
        });
        ix
    }

    /// At start from a checkpoint: makes `row` live in its loaded segment if the checkpoint wrote
    /// it for `key` with exactly this text (same [`text_hash`]); false means the caller inserts
    /// it (analyses the text). The row must not be indexed.
    pub fn adopt(&mut self, row: u32, key: u64, text: &BTreeMap<String, String>) -> bool {
        let Some(pre) = self.preload.as_mut() else {
            return false;
        };
        let hash = text_hash(self.fields.iter().map(|f| f.name.as_str()), text);
        let ok = pre
            .pending
            .remove(&row)
            .filter(|p| p.key == key && p.hash == hash && p.seg < self.sealed.len());
        let Some(p) = ok else {
            pre.analysed += 1;
            return false;
        };
        pre.adopted += 1;
        let r = row as usize;
        for (f, (len, terms)) in self.fields.iter_mut().zip(p.fields) {
            if f.lens.len() <= r {
                f.lens.resize(r + 1, 0);
                f.row_terms.resize_with(r + 1, Default::default);
            }
            for &t in &terms {
                f.terms[t as usize].1 += 1;
            }
            if len > 0 {
                f.docs += 1;
                f.total_len += len as u64;
            }
            f.lens[r] = len;
            f.row_terms[r] = terms.into_boxed_slice();
        }
        self.set_hash(row, hash);
        self.sealed[p.seg].live.insert(row);
        true
    }

    /// Ends a load from a checkpoint: loaded segments no document adopted are dropped, term ids no
    /// live row holds are freed. Returns (rows adopted, documents analysed) or None when the index
    /// was not loaded from a checkpoint.
    pub fn finish_load(&mut self) -> Option<(u64, u64)> {
        let pre = self.preload.take()?;
        self.sealed.retain(|s| !s.live.is_empty());
        for f in &mut self.fields {
            for (id, (text, df)) in f.terms.iter_mut().enumerate() {
                if *df == 0 && !text.is_empty() {
                    f.dict.remove(&*std::mem::take(text));
                    f.free_ids.push(id as u32);
                }
            }
        }
        Some((pre.adopted, pre.analysed))
    }

    fn set_hash(&mut self, row: u32, hash: u64) {
        let r = row as usize;
        if self.hashes.len() <= r {
            self.hashes.resize(r + 1, 0);
        }
        self.hashes[r] = hash;
    }

    /// The checkpoint section of this index (`persist.rs`): the sealed segments' live postings
    /// with each live row's key (`key_of`) and text hash. The caller holds the collection's read
    /// lock, so rows and keys agree.
    pub(crate) fn encode(
        &self,
        fields: &[(String, TextOptions)],
        key_of: impl Fn(u32) -> Option<u64>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let dicts: Vec<Vec<&str>> = self
            .fields
            .iter()
            .map(|f| f.terms.iter().map(|t| &*t.0).collect())
            .collect();
        persist::write_header(&mut out, fields, &dicts, self.next_id);
        let sealed: Vec<&Sealed> = self.sealed.iter().filter(|s| !s.live.is_empty()).collect();
        out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        for s in sealed {
            let rows: Vec<(u32, u64, u64)> = s
                .live
                .iter()
                .filter_map(|r| {
                    let h = self.hashes.get(r as usize).copied().unwrap_or(0);
                    Some((r, key_of(r)?, h))
                })
                .collect();
            let written: RoaringBitmap = rows.iter().map(|r| r.0).collect();
            let lists = s.data.fields.iter().map(|f| {
                let mut terms: Vec<(&u32, &PostingList)> = f.iter().collect();
                terms.sort_unstable_by_key(|t| *t.0);
                terms
                    .into_iter()
                    .filter_map(|(t, list)| {
                        let live: Vec<PostingOut<'_>> = (0..list.rows.len())
                            .filter(|&i| written.contains(list.rows[i]))
                            .map(|i| PostingOut {
                                row: list.rows[i],
                                len: list.lens[i],
                                positions: list.positions(i),
                            })
                            .collect();
                        (!live.is_empty()).then_some((*t, live))
                    })
                    .collect::<Vec<_>>()
            });
            persist::write_segment(&mut out, s.id, &rows, lists);
        }
        out
    }

    /// Seals the mutable segment after `n` writes instead of [`SEAL_DOCS`] (tests, tuning).
    pub fn set_seal_docs(&mut self, n: usize) {
        self.seal_docs = n.max(1);
    }

    /// The text fields, in order.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }

    /// Position of a field by name.
    pub fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Indexes `row` with `text` (field → string; fields not in the index are ignored). The row
    /// must not be indexed (remove it first).
    pub fn insert(&mut self, row: u32, text: &BTreeMap<String, String>) {
        let r = row as usize;
        let hash = text_hash(self.fields.iter().map(|f| f.name.as_str()), text);
        self.set_hash(row, hash);
        let mut per_field = Vec::with_capacity(self.fields.len());
        let mut any = false;
        for (fi, f) in self.fields.iter_mut().enumerate() {
            if f.lens.len() <= r {
                f.lens.resize(r + 1, 0);
                f.row_terms.resize_with(r + 1, Default::default);
            }
            let mut toks: Vec<(u32, u32)> = Vec::new();
            if let Some(t) = text.get(&f.name) {
                let mut raw: Vec<(String, u32)> = Vec::new();
                f.analyzer
                    .for_each_token(t, |term, pos| raw.push((term.to_owned(), pos)));
                toks = raw.iter().map(|(t, p)| (f.term_id(t), *p)).collect();
                toks.sort_unstable();
            }
            let len = toks.len() as u32;
            let mut distinct: Vec<u32> = toks.iter().map(|t| t.0).collect();
            distinct.dedup();
            for &t in &distinct {
                f.terms[t as usize].1 += 1;
            }
            // Postings of the mutable segment: (row, tf) per distinct term.
            let post = &mut self.building.postings[fi];
            let mut i = 0;
            while i < toks.len() {
                let t = toks[i].0;
                let j = i + toks[i..].iter().take_while(|x| x.0 == t).count();
                post.entry(t).or_default().push((row, (j - i) as u32));
                i = j;
            }
            if len > 0 {
                f.docs += 1;
                f.total_len += len as u64;
                any = true;
            }
            f.lens[r] = len;
            f.row_terms[r] = distinct.into_boxed_slice();
            per_field.push(toks);
        }
        if any {
            self.building.rows.insert(row, per_field);
            self.building.writes += 1;
            if self.building.writes >= self.seal_docs {
                self.seal();
            }
        }
    }

    /// Removes `row` (a no-op for a row not indexed).
    pub fn remove(&mut self, row: u32) {
        let r = row as usize;
        for f in &mut self.fields {
            if r >= f.lens.len() {
                continue;
            }
            let len = std::mem::take(&mut f.lens[r]);
            if len > 0 {
                f.docs -= 1;
                f.total_len -= len as u64;
            }
            for &t in std::mem::take(&mut f.row_terms[r]).iter() {
                let e = &mut f.terms[t as usize];
                e.1 -= 1;
                if e.1 == 0 {
                    let text = std::mem::take(&mut e.0);
                    f.dict.remove(&text);
                    f.free_ids.push(t);
                }
            }
        }
        if let Some(per_field) = self.building.rows.remove(&row) {
            // Drop the row's postings, so a rewrite of it into this segment is not counted twice.
            for (fi, toks) in per_field.iter().enumerate() {
                let mut prev = None;
                for &(t, _) in toks {
                    if prev == Some(t) {
                        continue;
                    }
                    prev = Some(t);
                    if let Some(list) = self.building.postings[fi].get_mut(&t) {
                        if let Some(i) = list.iter().position(|p| p.0 == row) {
                            list.swap_remove(i);
                        }
                        if list.is_empty() {
                            self.building.postings[fi].remove(&t);
                        }
                    }
                }
            }
        } else {
            for s in &mut self.sealed {
                if s.live.remove(row) {
                    break;
                }
            }
        }
    }

    /// Seals the mutable segment (no-op when it holds nothing).
    pub fn seal(&mut self) {
        let b = std::mem::replace(
            &mut self.building,
            Building {
                postings: vec![HashMap::new(); self.fields.len()],
                ..Building::default()
            },
        );
        if b.rows.is_empty() {
            return;
        }
        let mut data = SegmentData {
            fields: (0..self.fields.len()).map(|_| HashMap::new()).collect(),
        };
        let mut live = RoaringBitmap::new();
        for (row, per_field) in b.rows {
            live.insert(row);
            for (fi, toks) in per_field.iter().enumerate() {
                let len = toks.len() as u32;
                let mut i = 0;
                let mut pos: Vec<u32> = Vec::new();
                while i < toks.len() {
                    let t = toks[i].0;
                    pos.clear();
                    while i < toks.len() && toks[i].0 == t {
                        pos.push(toks[i].1);
                        i += 1;
                    }
                    data.fields[fi].entry(t).or_default().push(row, len, &pos);
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.sealed.push(Sealed {
            id,
            data: Arc::new(data),
            live,
        });
    }

    /// Bytes held by postings and dictionaries (approximate).
    pub fn bytes(&self) -> u64 {
        let mut n = 0usize;
        for s in &self.sealed {
            for f in &s.data.fields {
                n += f.values().map(PostingList::bytes).sum::<usize>() + f.len() * 48;
            }
        }
        for p in &self.building.postings {
            n += p.values().map(|v| v.len() * 8 + 48).sum::<usize>();
        }
        for f in &self.fields {
            n += f.terms.iter().map(|t| t.0.len() + 40).sum::<usize>();
            n += f.lens.len() * 4 + f.row_terms.iter().map(|t| t.len() * 4 + 16).sum::<usize>();
        }
        n as u64
    }

    /// Index state for a collection's info.
    pub fn info(&self) -> TextIndexInfo {
        TextIndexInfo {
            bytes: self.bytes(),
            fields: self
                .fields
                .iter()
                .map(|f| TextFieldInfo {
                    avg_len: f.avgdl(),
                    docs: f.docs,
                    name: f.name.clone(),
                    terms: f.dict.len(),
                })
                .collect(),
            mutable_docs: self.building.rows.len(),
            sealed_docs: self.sealed.iter().map(|s| s.live.len()).sum::<u64>(),
            sealed_segments: self.sealed.len(),
        }
    }

    /// Parses `query` against the fields `boosts` names (field position, boost). Quoted parts are
    /// phrases: a document must contain every phrase (its words at consecutive positions, in one
    /// of the fields). Returns None when no query term occurs in any live document of these fields
    /// (an empty result), and an error message when the query has no terms at all.
    pub fn query(&self, query: &str, boosts: &[(usize, f32)]) -> Result<Option<TextQuery>, String> {
        let mut plain = String::new();
        let mut phrases: Vec<&str> = Vec::new();
        for (i, part) in query.split('"').enumerate() {
            if i % 2 == 1 {
                phrases.push(part);
            }
            plain.push_str(part);
            plain.push(' ');
        }
        if phrases.len() > QUERY_PHRASES_MAX {
            return Err(format!(
                "{} phrases; a text query holds at most {QUERY_PHRASES_MAX}",
                phrases.len()
            ));
        }
        let mut fields = Vec::new();
        let mut any_term = false;
        for &(fi, boost) in boosts {
            let mut distinct: Vec<String> = Vec::new();
            self.fields[fi].analyzer.for_each_token(&plain, |t, _| {
                if distinct.len() <= QUERY_TERMS_MAX && !distinct.iter().any(|d| d == t) {
                    distinct.push(t.to_owned());
                }
            });
            if distinct.len() > QUERY_TERMS_MAX {
                return Err(format!(
                    "more than {QUERY_TERMS_MAX} distinct words; a text query holds at most {QUERY_TERMS_MAX}"
                ));
            }
            let f = &self.fields[fi];
            let mut terms: Vec<(u32, f32)> = Vec::new();
            let mut analyzed_any = false;
            f.analyzer.for_each_token(&plain, |t, _| {
                analyzed_any = true;
                if let Some(&id) = f.dict.get(t) {
                    if !terms.iter().any(|x| x.0 == id) {
                        terms.push((id, boost * f.idf(f.terms[id as usize].1)));
                    }
                }
            });
            any_term |= analyzed_any;
            let mut pq = Vec::new();
            for p in &phrases {
                let toks = f.analyzer.tokens(p);
                let Some(first) = toks.first().map(|t| t.position) else {
                    pq.push(Some(Phrase::default())); // only stop words or punctuation: no constraint
                    continue;
                };
                pq.push(
                    toks.iter()
                        .map(|t| {
                            f.dict
                                .get(t.term.as_str())
                                .map(|&id| (id, t.position - first))
                        })
                        .collect::<Option<Vec<_>>>()
                        .map(Phrase::new),
                );
            }
            fields.push(FieldQuery {
                field: fi,
                avgdl: f.avgdl(),
                terms,
                phrases: pq,
            });
        }
        if !any_term {
            return Err(
                "the text query has no searchable words (only stop words or punctuation)".into(),
            );
        }
        // Every phrase must be satisfiable in some field.
        let n_phrases = fields.iter().map(|f| f.phrases.len()).max().unwrap_or(0);
        for p in 0..n_phrases {
            if !fields
                .iter()
                .any(|f| f.phrases.get(p).is_some_and(Option::is_some))
            {
                return Ok(None);
            }
        }
        if fields.iter().all(|f| f.terms.is_empty()) {
            return Ok(None);
        }
        Ok(Some(TextQuery { fields }))
    }

    /// The top `k` rows for `q` by BM25 (ties by id ascending, through `id_of`), among rows in
    /// `allowed` when given. Every returned row contains at least one query term.
    /// [`Error::Cancelled`](crate::Error::Cancelled) when `cancel` fires first.
    pub fn search(
        &self,
        q: &TextQuery,
        k: usize,
        allowed: Option<&RoaringBitmap>,
        id_of: &dyn Fn(u32) -> Option<Arc<str>>,
        cancel: &Cancel,
    ) -> crate::Result<(Vec<(u32, f32)>, TextStats)> {
        let mut stats = TextStats::default();
        if k == 0 {
            return Ok((Vec::new(), stats));
        }
        let mut top = TopK {
            k,
            heap: BinaryHeap::new(),
            id_of,
            poll: Poll::new(cancel, POLL_EVERY),
        };
        self.search_into(q, allowed, &mut top, &mut stats);
        cancel.check()?;
        Ok((top.into_sorted(), stats))
    }

    /// [`search`](Self::search)'s work; returns early when the token fires.
    fn search_into(
        &self,
        q: &TextQuery,
        allowed: Option<&RoaringBitmap>,
        top: &mut TopK<'_>,
        stats: &mut TextStats,
    ) {
        // A filter that allows few rows against the query's postings: score those rows directly.
        if let Some(a) = allowed {
            let postings: u64 = q
                .fields
                .iter()
                .flat_map(|fq| {
                    fq.terms
                        .iter()
                        .map(|&(t, _)| self.fields[fq.field].terms[t as usize].1 as u64)
                })
                .sum();
            if a.len() * EXACT_OVER_FILTER_FACTOR < postings {
                stats.strategy = "exact_over_filter";
                for row in a {
                    if top.poll.stop() {
                        return;
                    }
                    self.score_row(q, row, top, stats);
                }
                return;
            }
        }
        stats.strategy = "wand";
        let ok = |row: u32| allowed.is_none_or(|a| a.contains(row));
        // The mutable segment: exhaustively.
        stats.segments += 1;
        let mut acc: HashMap<u32, f32> = HashMap::new();
        for fq in &q.fields {
            let f = &self.fields[fq.field];
            for &(t, w) in &fq.terms {
                if let Some(list) = self.building.postings[fq.field].get(&t) {
                    stats.postings += list.len() as u64;
                    for &(row, tf) in list {
                        if top.poll.stop() {
                            return;
                        }
                        if ok(row) {
                            *acc.entry(row).or_default() +=
                                w * tf_part(tf, f.lens[row as usize], fq.avgdl);
                        }
                    }
                }
            }
        }
        let mut acc: Vec<(u32, f32)> = acc.into_iter().collect();
        acc.sort_unstable_by_key(|a| a.0);
        for (row, score) in acc {
            if top.poll.stop() {
                return;
            }
            stats.scored += 1;
            self.offer(q, None, row, score, top, stats);
        }
        for s in &self.sealed {
            stats.segments += 1;
            self.search_sealed(q, s, &ok, top, stats);
        }
    }

    /// Scores one row directly (its segment's postings, by binary search) and offers it.
    fn score_row(&self, q: &TextQuery, row: u32, top: &mut TopK<'_>, stats: &mut TextStats) {
        let seg = if self.building.rows.contains_key(&row) {
            None
        } else {
            match self.sealed.iter().find(|s| s.live.contains(row)) {
                Some(s) => Some(s),
                None => return, // no tokens in any field
            }
        };
        let mut score = 0.0f32;
        let mut any = false;
        for fq in &q.fields {
            let f = &self.fields[fq.field];
            for &(t, w) in &fq.terms {
                let (tf, len) = match seg {
                    None => {
                        let toks = &self.building.rows[&row][fq.field];
                        let lo = toks.partition_point(|x| x.0 < t);
                        let n = toks[lo..].iter().take_while(|x| x.0 == t).count() as u32;
                        (n, f.lens[row as usize])
                    }
                    Some(s) => s.data.fields[fq.field]
                        .get(&t)
                        .and_then(|l| l.find(row).map(|i| (l.tfs[i], l.lens[i])))
                        .unwrap_or_default(),
                };
                if tf > 0 {
                    any = true;
                    score += w * tf_part(tf, len, fq.avgdl);
                }
            }
        }
        if !any {
            return;
        }
        stats.scored += 1;
        self.offer(q, seg, row, score, top, stats);
    }

    /// Offers a scored row to the top k if it may beat the threshold and holds every phrase.
    fn offer(
        &self,
        q: &TextQuery,
        seg: Option<&Sealed>,
        row: u32,
        score: f32,
        top: &mut TopK<'_>,
        stats: &mut TextStats,
    ) {
        if may_beat(score, top.theta()) {
            if self.phrases_match(q, seg, row, &mut top.poll) {
                top.offer(row, score);
            } else {
                stats.phrase_rejected += 1;
            }
        }
    }

    /// Block-max WAND over one sealed segment's lists of the query's terms.
    fn search_sealed(
        &self,
        q: &TextQuery,
        s: &Sealed,
        ok: &dyn Fn(u32) -> bool,
        top: &mut TopK<'_>,
        stats: &mut TextStats,
    ) {
        let mut cur: Vec<Cursor<'_>> = Vec::new();
        for fq in &q.fields {
            for &(t, w) in &fq.terms {
                if let Some(list) = s.data.fields[fq.field].get(&t) {
                    stats.postings += list.rows.len() as u64;
                    cur.push(Cursor {
                        list,
                        weight: w,
                        avgdl: fq.avgdl,
                        i: 0,
                        upper: w * tf_part(list.max_tf, list.min_len, fq.avgdl),
                    });
                }
            }
        }
        loop {
            if top.poll.stop() {
                return;
            }
            cur.sort_by_key(Cursor::doc);
            let theta = top.theta();
            // Pivot: the first cursor at which the summed upper bounds may beat theta.
            let mut acc = 0.0;
            let mut pivot = None;
            for (j, c) in cur.iter().enumerate() {
                if c.doc() == u32::MAX {
                    break;
                }
                acc += c.upper;
                if may_beat(acc, theta) {
                    pivot = Some(j);
                    break;
                }
            }
            let Some(mut p) = pivot else {
                return;
            };
            let d = cur[p].doc();
            while p + 1 < cur.len() && cur[p + 1].doc() == d {
                p += 1;
            }
            // Block-max check for d over cursors 0..=p.
            let mut bound = 0.0;
            let mut next = u32::MAX;
            for c in &cur[..=p] {
                if let Some(b) = c.block_of(d) {
                    bound += c.block_bound(b);
                    next = next.min(c.list.blocks[b].last.saturating_add(1));
                }
            }
            if !may_beat(bound, theta) {
                if p + 1 < cur.len() {
                    next = next.min(cur[p + 1].doc());
                }
                let next = next.max(d.saturating_add(1));
                for c in &mut cur[..=p] {
                    c.advance_to(next);
                }
                continue;
            }
            if cur[0].doc() == d {
                if s.live.contains(d) && ok(d) {
                    let score: f32 = cur[..=p].iter().map(Cursor::score).sum();
                    stats.scored += 1;
                    self.offer(q, Some(s), d, score, top, stats);
                }
                for c in &mut cur[..=p] {
                    c.i += 1;
                }
            } else {
                for c in &mut cur[..p] {
                    c.advance_to(d);
                }
            }
        }
    }

    /// Does `row` contain every phrase of `q` (each within one of the searched fields)? False
    /// when `poll` stops the search.
    fn phrases_match(
        &self,
        q: &TextQuery,
        seg: Option<&Sealed>,
        row: u32,
        poll: &mut Poll<'_>,
    ) -> bool {
        let n = q.fields.iter().map(|f| f.phrases.len()).max().unwrap_or(0);
        (0..n).all(|p| {
            q.fields.iter().any(|fq| match fq.phrases.get(p) {
                Some(Some(phrase)) => self.phrase_in(fq.field, phrase, seg, row, poll),
                _ => false,
            })
        })
    }

    /// Does `phrase` occur in `row`'s `field`? Each distinct word's positions are borrowed from
    /// the row's segment (`phrase.rs`).
    fn phrase_in(
        &self,
        field: usize,
        phrase: &Phrase,
        seg: Option<&Sealed>,
        row: u32,
        poll: &mut Poll<'_>,
    ) -> bool {
        if phrase.words.is_empty() {
            return true;
        }
        let mut lists: Vec<Positions<'_>> = Vec::with_capacity(phrase.words.len());
        for &(t, _) in &phrase.words {
            let pos = match seg {
                None => {
                    let Some(pf) = self.building.rows.get(&row) else {
                        return false;
                    };
                    // The row's (term, position) list is sorted: the term's run.
                    let toks = &pf[field];
                    let a = toks.partition_point(|x| x.0 < t);
                    let b = a + toks[a..].partition_point(|x| x.0 <= t);
                    Positions::Pairs(&toks[a..b])
                }
                Some(s) => match s.data.fields[field]
                    .get(&t)
                    .and_then(|l| l.find(row).map(|i| l.positions(i)))
                {
                    Some(p) => Positions::Plain(p),
                    None => return false,
                },
            };
            if matches!(pos, Positions::Pairs(p) if p.is_empty()) {
                return false;
            }
            lists.push(pos);
        }
        phrase::occurs(phrase, &lists, poll)
    }

    /// A merge worth doing now: [`MERGE_FACTOR`] sealed segments of the smallest size class that
    /// has that many (size class = ⌊log₈(live docs / SEAL_DOCS)⌋).
    pub fn merge_plan(&self) -> Option<MergePlan> {
        let class = |docs: u64| {
            let mut c = 0;
            let mut cap = (SEAL_DOCS * MERGE_FACTOR) as u64;
            while docs >= cap {
                c += 1;
                cap *= MERGE_FACTOR as u64;
            }
            c
        };
        let mut by_class: BTreeMap<u32, Vec<&Sealed>> = BTreeMap::new();
        for s in &self.sealed {
            by_class.entry(class(s.live.len())).or_default().push(s);
        }
        let group = by_class.into_values().find(|g| g.len() >= MERGE_FACTOR)?;
        let group = &group[..MERGE_FACTOR];
        Some(MergePlan {
            ids: group.iter().map(|s| s.id).collect(),
            parts: group
                .iter()
                .map(|s| (s.data.clone(), s.live.clone()))
                .collect(),
            fields: self.fields.len(),
        })
    }

    /// Replaces the merged segments by `merged` (their rows deleted since the plan stay dead).
    pub fn install_merge(&mut self, merged: Merged) {
        let mut live = RoaringBitmap::new();
        let mut at = None;
        let mut i = 0;
        while i < self.sealed.len() {
            if merged.ids.contains(&self.sealed[i].id) {
                live |= &self.sealed[i].live;
                at.get_or_insert(i);
                self.sealed.remove(i);
            } else {
                i += 1;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.sealed.insert(
            at.unwrap_or(self.sealed.len()),
            Sealed {
                id,
                data: Arc::new(merged.data),
                live,
            },
        );
    }
}

/// Segments to merge, copied out under the collection's read lock.
#[derive(Debug)]
pub struct MergePlan {
    ids: Vec<u64>,
    parts: Vec<(Arc<SegmentData>, RoaringBitmap)>,
    fields: usize,
}

/// A finished merge, to install under the write lock.
#[derive(Debug)]
pub struct Merged {
    ids: Vec<u64>,
    data: SegmentData,
}

/// Builds the merged segment (no lock held): the plan's live postings, ascending by row.
pub fn merge(plan: MergePlan) -> Merged {
    let mut data = SegmentData {
        fields: (0..plan.fields).map(|_| HashMap::new()).collect(),
    };
    for fi in 0..plan.fields {
        let mut terms: Vec<u32> = plan
            .parts
            .iter()
            .flat_map(|p| p.0.fields[fi].keys().copied())
            .collect();
        terms.sort_unstable();
        terms.dedup();
        for t in terms {
            // (row, part, posting index) of every live posting, ascending by row.
            let mut all: Vec<(u32, usize, usize)> = Vec::new();
            for (pi, (d, live)) in plan.parts.iter().enumerate() {
                if let Some(list) = d.fields[fi].get(&t) {
                    for (i, &row) in list.rows.iter().enumerate() {
                        if live.contains(row) {
                            all.push((row, pi, i));
                        }
                    }
                }
            }
            if all.is_empty() {
                continue;
            }
            all.sort_unstable_by_key(|a| a.0);
            // A live row is in one part only (a rewritten document's old row is dead in its old
            // part): two postings for one row would count its term twice.
            debug_assert!(
                all.windows(2).all(|w| w[0].0 < w[1].0),
                "term {t} of field {fi}: a live row in two parts"
            );
            let mut out = PostingList::default();
            for (row, pi, i) in all {
                let list = &plan.parts[pi].0.fields[fi][&t];
                out.push(row, list.lens[i], list.positions(i));
            }
            data.fields[fi].insert(t, out);
        }
    }
    Merged {
        ids: plan.ids,
        data,
    }
}

//! One collection: its documents live in one engine keyspace (key = a collision-free u64 per id,
//! value = the encoded document); its rows, payload indexes and one HNSW per vector field are
//! derived state, kept in step by the engine's applier seam and rebuilt from the keyspace on open.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Weak,
    },
    time::Instant,
};

use kyrodb_storage::{Applier, Change, Condition, Keyspace, WriteBatch};
use parking_lot::RwLock;
use roaring::RoaringBitmap;
use serde_json::{json, Value};

use crate::{
    cancel::{Cancel, Poll},
    doc::{fields_json, Document, Fields},
    error::invalid,
    filter::Filter,
    hnsw::{Hnsw, HnswStats},
    hybrid::{fuse, ComponentList, HybridRequest},
    manager::Shared,
    payload::Payload,
    query::{Hit, SearchRequest, SearchResponse},
    rank::{Featurizer, Feedback, Ranker},
    schema::{Schema, VectorSpec},
    text::{index::merge, TextIndex, TextStats},
    Error, Result,
};

/// What one graph step costs in units of one exact candidate, for the planner's choice. Measured by
/// the `vectors_bench` example on GloVe-50 (399K, M=16): at 10% selectivity the filtered walk at
/// ef 80 answered 789 queries/s (~25,600 steps: ~50 ns each) and the exact scan of the 39,786
/// matches 235/s (~107 ns each, cache misses on strided vectors); at 1%, exact over 3,934 matches
/// 8,855/s against 103/s for the walk. Ratio ≈ 0.5: the switch falls near 5–6% selectivity.
const GRAPH_STEP_COST: f64 = 0.5;

/// Attempts at a write whose conditions a concurrent writer keeps breaking.
const WRITE_ATTEMPTS: usize = 16;
/// Most tenants listed (largest first) with their document counts in a collection's info.
const TENANTS_LISTED_MAX: usize = 1000;

/// A live document's row.
#[derive(Debug)]
struct Row {
    key: u64,
    seq: u64,
    id: Arc<str>,
    fields: Fields,
}

/// Rows of a verified graph file, claimed by documents as the attach load finds them.
#[derive(Debug)]
struct Preload {
    rows: HashMap<u64, u32>,
}

/// Derived state, changed only by the applier.
#[derive(Debug)]
struct State {
    preload: Option<Preload>,
    rows: Vec<Option<Row>>,
    free: Vec<u32>,
    by_key: HashMap<u64, u32>,
    by_id: HashMap<Arc<str>, u32>,
    payload: Payload,
    /// Rows that have each vector field.
    has_vector: Vec<RoaringBitmap>,
    /// Per vector field: rows holding exactly the same (prepared) vector, by its hash — only
    /// groups of two or more. HNSW's neighbour heuristic keeps few links inside a cluster of
    /// identical vectors, so a search can miss duplicates of a hit; they are added back with the
    /// hit's score (see `expand_duplicates`).
    dups: Vec<Dups>,
    /// BM25 over the text fields.
    text: TextIndex,
}

/// Rows by the hash of their vector: one row per hash in `one`, groups of identical vectors in
/// `many` (a hash collision between different vectors only puts them in one group; membership
/// is checked against the stored vectors before use).
#[derive(Debug, Default)]
struct Dups {
    by_row: HashMap<u32, u64>,
    one: HashMap<u64, u32>,
    many: HashMap<u64, Vec<u32>>,
}

impl Dups {
    fn insert(&mut self, row: u32, hash: u64) {
        self.remove(row);
        self.by_row.insert(row, hash);
        if let Some(g) = self.many.get_mut(&hash) {
            g.push(row);
        } else if let Some(first) = self.one.remove(&hash) {
            self.many.insert(hash, vec![first, row]);
        } else {
            self.one.insert(hash, row);
        }
    }

    fn remove(&mut self, row: u32) {
        let Some(hash) = self.by_row.remove(&row) else {
            return;
        };
        if self.one.get(&hash) == Some(&row) {
            self.one.remove(&hash);
        } else if let Some(g) = self.many.get_mut(&hash) {
            g.retain(|&r| r != row);
            if g.len() == 1 {
                let last = g[0];
                self.many.remove(&hash);
                self.one.insert(hash, last);
            }
        }
    }

    /// The other rows with the same hash as `row`.
    fn group(&self, row: u32) -> &[u32] {
        self.by_row
            .get(&row)
            .and_then(|h| self.many.get(h))
            .map_or(&[], Vec::as_slice)
    }
}

fn vector_hash(v: &[f32]) -> u64 {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// One vector field's index.
#[derive(Debug)]
pub(crate) struct VectorIndex {
    pub name: String,
    pub spec: VectorSpec,
    pub hnsw: Hnsw,
}

/// A collection.
#[derive(Debug)]
pub struct Collection {
    name: String,
    /// Changes only through a re-embed job (a field's `embed`), never in what decoding depends on.
    schema: RwLock<Arc<Schema>>,
    created_ms: i64,
    keyspace: Keyspace,
    state: RwLock<State>,
    pub(crate) vectors: Vec<VectorIndex>,
    shared: Weak<Shared>,
    pub(crate) dropped: AtomicBool,
    /// A text-segment merge is running (one at a time per collection).
    merging: AtomicBool,
    /// Where the graphs came from at start (`GET` info shows it).
    graph_source: parking_lot::Mutex<String>,
    /// Where the text index's sealed segments came from at start (info shows it).
    text_source: parking_lot::Mutex<String>,
    /// The last re-embed job (durable in the catalog), and why a running one waits.
    job: parking_lot::Mutex<(Option<crate::reembed::ReembedJob>, Option<String>)>,
    /// Feedback examples and the learned ranking trained from them.
    ranker: Ranker,
}

impl Collection {
    pub(crate) fn new(
        name: &str,
        schema: Schema,
        created_ms: i64,
        keyspace: Keyspace,
        shared: &Arc<Shared>,
        mut loaded: Option<crate::checkpoint::Loaded>,
        ranker: Ranker,
    ) -> Collection {
        let params = shared.opts.hnsw;
        let shared = Arc::downgrade(shared);
        let vectors: Vec<VectorIndex> = schema
            .vectors
            .iter()
            .map(|(n, spec)| VectorIndex {
                name: n.clone(),
                spec: spec.clone(),
                hnsw: loaded
                    .as_mut()
                    .and_then(|l| l.graphs.remove(n))
                    .unwrap_or_else(|| Hnsw::new(spec.dim as usize, spec.metric, params)),
            })
            .collect();
        let mut state = State {
            preload: None,
            rows: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            payload: Payload::with_time_field(schema.timestamp_field.clone()),
            has_vector: vec![RoaringBitmap::new(); vectors.len()],
            dups: (0..vectors.len()).map(|_| Dups::default()).collect(),
            text: match loaded.as_mut().and_then(|l| l.text.take()) {
                Some(t) => TextIndex::from_loaded(&schema.text_analysis(), t),
                None => TextIndex::new(&schema.text_analysis()),
            },
        };
        let text_source = loaded
            .as_ref()
            .map_or_else(|| "new".to_owned(), |l| l.text_note.clone());
        if let Some(l) = loaded {
            let max = l.rows.values().copied().max().map_or(0, |m| m as usize + 1);
            state.rows.resize_with(max, || None);
            state.preload = Some(Preload { rows: l.rows });
        }
        Collection {
            name: name.to_owned(),
            schema: RwLock::new(Arc::new(schema)),
            created_ms,
            keyspace,
            state: RwLock::new(state),
            vectors,
            shared,
            dropped: AtomicBool::new(false),
            merging: AtomicBool::new(false),
            graph_source: parking_lot::Mutex::new("new".into()),
            text_source: parking_lot::Mutex::new(text_source),
            job: parking_lot::Mutex::new((None, None)),
            ranker,
        }
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its schema (a re-embed job may replace it: take it once per request).
    pub fn schema(&self) -> Arc<Schema> {
        self.schema.read().clone()
    }

    pub(crate) fn set_schema(&self, schema: Schema) {
        *self.schema.write() = Arc::new(schema);
    }

    pub(crate) fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// The collection's last re-embed job, if any.
    pub fn job(&self) -> Option<crate::reembed::ReembedJob> {
        self.job.lock().0.clone()
    }

    pub(crate) fn set_job(&self, job: Option<crate::reembed::ReembedJob>) {
        self.job.lock().0 = job;
    }

    pub(crate) fn set_paused(&self, why: Option<String>) {
        self.job.lock().1 = why;
    }

    pub(crate) fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// Live documents.
    pub fn count(&self) -> u64 {
        self.state.read().by_key.len() as u64
    }

    fn shared(&self) -> Result<Arc<Shared>> {
        self.shared
            .upgrade()
            .filter(|_| !self.dropped.load(Ordering::Acquire))
            .ok_or_else(|| Error::NoSuchCollection(self.name.clone()))
    }

    /// Parses the documents of a batch upsert (`documents[i]` paths).
    pub fn parse_documents(&self, schema: &Schema, docs: &[Value]) -> Result<Vec<Document>> {
        docs.iter()
            .enumerate()
            .map(|(i, d)| Document::parse(d, schema, &format!("documents[{i}]"), &[]))
            .collect()
    }

    /// Upserts `docs` atomically (all or nothing); returns the write's sequence number once it is
    /// durable and searchable. A later document with the same id as an earlier one in the batch wins.
    pub fn upsert(&self, docs: &[Document]) -> Result<u64> {
        self.upsert_for(docs, None)
    }

    /// [`Collection::upsert`] for `tenant` (when given): a document whose id is held by a document
    /// of another tenant is refused ([`Error::Tenant`], nothing written). The ownership check and
    /// the write are one step: the write requires the sequence number the check saw. The documents
    /// must already be stamped ([`crate::Tenant::stamp`]).
    pub fn upsert_for(&self, docs: &[Document], tenant: Option<&crate::Tenant>) -> Result<u64> {
        let shared = self.shared()?;
        let opts = &shared.opts;
        if docs.len() > opts.documents_per_batch_max {
            return Err(Error::TooMany {
                what: "documents_per_batch_max",
                count: docs.len() as u64,
                max: opts.documents_per_batch_max as u64,
            });
        }
        let values: Vec<Vec<u8>> = docs.iter().map(Document::encode).collect();
        let value_max = shared.value_bytes_max;
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| v.len() > value_max) {
            return Err(invalid(
                "document_too_large",
                format!("documents[{i}]"),
                format!(
                    "encodes to {} bytes; a document is at most {value_max} bytes (value_bytes_max)",
                    v.len()
                ),
            ));
        }
        // Growth: vectors beyond the free (reusable) rows; replacing or reusing a slot adds nothing.
        let free = self.state.read().free.len();
        let needed: u64 = docs
            .iter()
            .skip(free)
            .flat_map(|d| d.vectors.values())
            .map(|v| crate::manager::vector_cost(v.len(), opts.hnsw.m))
            .sum();
        shared.check_budget(needed)?;
        shared.wait_for_indexer()?;
        for _ in 0..WRITE_ATTEMPTS {
            let mut batch = WriteBatch::new();
            {
                let st = self.state.read();
                let mut taken: HashSet<u64> = HashSet::new();
                let mut in_batch: HashMap<&str, u64> = HashMap::new();
                for (doc, value) in docs.iter().zip(&values) {
                    let key = if let Some(k) = in_batch.get(doc.id.as_str()) {
                        *k
                    } else if let Some((r, row)) = st
                        .by_id
                        .get(doc.id.as_str())
                        .and_then(|r| Some((*r, st.row(*r)?)))
                    {
                        if let Some(t) = tenant {
                            if !st.owned_by(r, t) {
                                return Err(Error::Tenant(format!(
                                    "document id {:?} is taken by another tenant's document",
                                    doc.id
                                )));
                            }
                        }
                        batch.require(&self.keyspace, row.key, Condition::Seq(row.seq));
                        row.key
                    } else {
                        let mut k = id_key(&doc.id);
                        while st.by_key.contains_key(&k) || taken.contains(&k) {
                            k = k.wrapping_add(1);
                        }
                        taken.insert(k);
                        batch.require(&self.keyspace, k, Condition::Absent);
                        k
                    };
                    in_batch.insert(&doc.id, key);
                    batch.put(&self.keyspace, key, value);
                }
            }
            match shared.db.write(batch) {
                Ok(seq) => return Ok(seq),
                Err(kyrodb_storage::Error::ConditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(self.name.clone()))
    }

    /// Deletes the documents with these ids atomically; returns (deleted, absent).
    pub fn delete_ids(&self, ids: &[String]) -> Result<(u64, u64)> {
        self.delete_ids_for(ids, None)
    }

    /// [`Collection::delete_ids`] for `tenant` (when given): another tenant's documents count as
    /// absent and are left alone.
    pub fn delete_ids_for(
        &self,
        ids: &[String],
        tenant: Option<&crate::Tenant>,
    ) -> Result<(u64, u64)> {
        let shared = self.shared()?;
        if ids.len() > shared.opts.documents_per_batch_max * 10 {
            return Err(Error::TooMany {
                what: "ids per delete (10 × documents_per_batch_max)",
                count: ids.len() as u64,
                max: shared.opts.documents_per_batch_max as u64 * 10,
            });
        }
        for _ in 0..WRITE_ATTEMPTS {
            let mut batch = WriteBatch::new();
            let (mut deleted, mut absent) = (0, 0);
            {
                let st = self.state.read();
                let mut seen = HashSet::new();
                for id in ids {
                    if !seen.insert(id.as_str()) {
                        continue;
                    }
                    let found = st
                        .by_id
                        .get(id.as_str())
                        .filter(|r| tenant.is_none_or(|t| st.owned_by(**r, t)))
                        .and_then(|r| st.row(*r));
                    match found {
                        Some(row) => {
                            batch
                                .require(&self.keyspace, row.key, Condition::Seq(row.seq))
                                .delete(&self.keyspace, row.key);
                            deleted += 1;
                        }
                        None => absent += 1,
                    }
                }
            }
            if deleted == 0 {
                return Ok((0, absent));
            }
            match shared.db.write(batch) {
                Ok(_) => return Ok((deleted, absent)),
                Err(kyrodb_storage::Error::ConditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(self.name.clone()))
    }

    /// For a tenant: how many documents it holds, and how many of `ids` name no document yet (a
    /// write of them adds that many; for quotas).
    pub fn tenant_usage(&self, t: &crate::Tenant, ids: &[&str]) -> (u64, u64) {
        let st = self.state.read();
        let held = st
            .payload
            .keyword_rows(&t.field, &t.value)
            .map_or(0, |b| b.len());
        let mut seen = HashSet::new();
        let new = ids
            .iter()
            .filter(|id| seen.insert(**id) && !st.by_id.contains_key(**id))
            .count() as u64;
        (held, new)
    }

    /// Documents per tenant (the tenant field's values), largest first, at most `max` of them, and
    /// how many tenants there are; None without a tenant field.
    pub fn tenant_counts(&self, max: usize) -> Option<(Vec<(String, u64)>, usize)> {
        let field = self.schema().tenant_field.clone()?;
        let st = self.state.read();
        let mut counts = st.payload.keyword_counts(&field);
        let total = counts.len();
        counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts.truncate(max);
        Some((
            counts.into_iter().map(|(v, n)| (v.to_owned(), n)).collect(),
            total,
        ))
    }

    /// [`Collection::delete_matching`] for `tenant` (when given): only its documents are deleted.
    pub fn delete_matching_for(
        &self,
        filter: &Filter,
        tenant: Option<&crate::Tenant>,
    ) -> Result<u64> {
        let ids: Vec<String> = {
            let st = self.state.read();
            let bm = st.payload.eval(filter);
            bm.iter()
                .filter_map(|r| st.row(r).map(|row| row.id.to_string()))
                .collect()
        };
        Ok(self.delete_ids_for(&ids, tenant)?.0)
    }

    /// Deletes every document matching `filter` atomically; returns how many.
    pub fn delete_matching(&self, filter: &Filter) -> Result<u64> {
        self.delete_matching_for(filter, None)
    }

    /// The stored document with `id`.
    pub fn get(&self, id: &str) -> Result<Document> {
        let key = {
            let st = self.state.read();
            st.by_id
                .get(id)
                .and_then(|r| st.row(*r))
                .map(|row| row.key)
                .ok_or_else(|| Error::NoSuchDocument(id.to_owned()))?
        };
        let v = self
            .keyspace
            .get(key)?
            .ok_or_else(|| Error::NoSuchDocument(id.to_owned()))?;
        let doc = self.decode_stored(key, &v, &self.schema())?;
        if doc.id != id {
            return Err(Error::NoSuchDocument(id.to_owned()));
        }
        Ok(doc)
    }

    /// A stored document's value decoded; one that does not decode is `Corrupt` (key named).
    fn decode_stored(&self, key: u64, value: &[u8], schema: &Schema) -> Result<Document> {
        Document::decode(value, schema).map_err(|e| Error::Corrupt {
            collection: self.name.clone(),
            key,
            reason: e.to_string(),
        })
    }

    /// A page of stored documents in key order (an order that does not change as documents are
    /// written): at most `limit` documents with a key after `after`, and the key to continue from
    /// when more may follow. For browsing (the console, exports), not for search.
    pub fn list(&self, after: Option<u64>, limit: usize) -> Result<(Vec<Document>, Option<u64>)> {
        let start = match after {
            Some(u64::MAX) => return Ok((Vec::new(), None)),
            Some(k) => k + 1,
            None => 0,
        };
        let limit = limit.max(1);
        let page = self.keyspace.scan(start.., limit + 1)?;
        let more = page.len() > limit;
        let schema = self.schema();
        let mut docs = Vec::with_capacity(limit);
        let mut last = None;
        for (key, v) in page.into_iter().take(limit) {
            docs.push(self.decode_stored(key, &v, &schema)?);
            last = Some(key);
        }
        Ok((docs, if more { last } else { None }))
    }

    /// Answers a search (see `query.rs` for the request); [`Error::Cancelled`] when `cancel`
    /// fires first (the filter, the graph walk and the exact scans look at it).
    pub fn search(&self, req: &SearchRequest, cancel: &Cancel) -> Result<SearchResponse> {
        cancel.check()?;
        let started = Instant::now();
        let (fi, index) = self
            .vectors
            .iter()
            .enumerate()
            .find(|(_, v)| v.name == req.using)
            .expect("the request was parsed against this schema");
        if req.vector.len() != index.spec.dim as usize {
            return Err(invalid(
                "invalid_request",
                "vector",
                "the query vector is missing (a text query must be embedded first)",
            ));
        }
        let m = self.shared()?.opts.hnsw.m;
        let want = req.limit + 8; // a few more, so ties at the boundary break by id
        let st = self.state.read();
        let candidates = st.has_vector[fi].len();
        let mut plan = json!({"field": index.name, "candidates": candidates});
        let index_started = Instant::now();
        let (out, strategy) = match &req.filter {
            _ if req.exact => {
                let mut bm = st.has_vector[fi].clone();
                if let Some(f) = &req.filter {
                    bm &= st.payload.eval_with(f, cancel)?;
                }
                (
                    index
                        .hnsw
                        .search_exact_with(&req.vector, want, &mut bm.iter(), cancel)?,
                    "exact_requested",
                )
            }
            None => (
                index
                    .hnsw
                    .search_with(&req.vector, want, req.ef, None, cancel)?,
                "hnsw",
            ),
            Some(f) => {
                let t = Instant::now();
                let mut bm = st.payload.eval_with(f, cancel)?;
                bm &= &st.has_vector[fi];
                plan["filter_us"] = json!(t.elapsed().as_micros() as u64);
                let card = bm.len();
                let sel = card as f64 / candidates.max(1) as f64;
                // Distance computations: exact = every match; graph ≈ ef·2M per allowed result found,
                // visiting ~1/selectivity nodes per allowed one; a step costs GRAPH_STEP_COST exact
                // candidates (measured).
                let graph_cost = ((req.ef * 2 * m) as f64 / sel.max(1e-9)).min(candidates as f64)
                    * GRAPH_STEP_COST;
                plan["estimated_matches"] = json!(card);
                plan["selectivity"] = json!(sel);
                plan["cost_exact"] = json!(card);
                plan["cost_graph"] = json!(graph_cost.round());
                if card == 0 {
                    (Default::default(), "empty")
                } else if (card as f64) <= graph_cost {
                    (
                        index
                            .hnsw
                            .search_exact_with(&req.vector, want, &mut bm.iter(), cancel)?,
                        "exact_filtered",
                    )
                } else {
                    let allow = |r: u32| bm.contains(r);
                    let mut ef = req.ef;
                    let mut widenings = 0;
                    let target = want.min(card as usize);
                    loop {
                        let out =
                            index
                                .hnsw
                                .search_with(&req.vector, want, ef, Some(&allow), cancel)?;
                        if out.hits.len() >= target {
                            plan["widenings"] = json!(widenings);
                            break (out, "hnsw_filtered");
                        }
                        if ef as u64 >= candidates {
                            // The graph could not reach enough matches: answer exactly.
                            plan["widenings"] = json!(widenings);
                            break (
                                index.hnsw.search_exact_with(
                                    &req.vector,
                                    want,
                                    &mut bm.iter(),
                                    cancel,
                                )?,
                                "exact_fallback",
                            );
                        }
                        ef = (ef * 4).min(candidates as usize);
                        widenings += 1;
                    }
                }
            }
        };
        plan["index_us"] = json!(index_started.elapsed().as_micros() as u64);
        plan["strategy"] = json!(strategy);
        plan["ef"] = json!(req.ef);
        plan["visited"] = json!(out.visited);
        plan["exact_scanned"] = json!(out.exact_scanned);
        plan["kernel"] = json!(crate::distance::kernel_name());
        let mut out = out;
        if !strategy.starts_with("exact") && strategy != "empty" {
            let added =
                st.expand_duplicates(fi, index, &mut out.hits, req.filter.as_ref(), cancel)?;
            if added > 0 {
                plan["duplicates_added"] = json!(added);
            }
        }
        let mut hits: Vec<(f32, Arc<str>, u32)> = out
            .hits
            .iter()
            .map(|&(r, s)| (r, crate::distance::finite_score(s)))
            .filter(|(_, s)| req.threshold.is_none_or(|t| *s >= t))
            .filter_map(|(r, s)| st.row(r).map(|row| (s, row.id.clone(), r)))
            .collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        hits.truncate(req.limit);
        let scored: Vec<(u32, f32)> = hits.iter().map(|(score, _, r)| (*r, *score)).collect();
        let mut out_hits = st.hits(&scored, req.with_fields);
        drop(st);
        if req.with_text || req.with_vectors {
            let keys: Vec<u64> = out_hits.iter().map(|h| h.key).collect();
            let values = self.keyspace.multi_get(&keys)?;
            let schema = self.schema();
            for (h, v) in out_hits.iter_mut().zip(values) {
                if let Some(doc) = v.and_then(|v| Document::decode(&v, &schema).ok()) {
                    if req.with_text {
                        h.text = Some(json!(doc.text));
                    }
                    if req.with_vectors {
                        h.vectors = Some(json!(doc.vectors));
                    }
                }
            }
        }
        let took = started.elapsed();
        metrics::histogram!("kyrodb_search_latency_seconds", "plan" => strategy)
            .record(took.as_secs_f64());
        metrics::counter!("kyrodb_search_plans_total", "plan" => strategy).increment(1);
        plan["took_us"] = json!(took.as_micros() as u64);
        Ok(SearchResponse {
            hits: out_hits,
            plan: req.explain.then_some(plan),
        })
    }

    /// Schema, counts and index state.
    pub fn info(&self) -> Value {
        let (documents, payload_bytes, text_index) = {
            let st = self.state.read();
            (st.by_key.len(), st.payload.bytes(), st.text.info())
        };
        let indexes: serde_json::Map<String, Value> = self
            .vectors
            .iter()
            .map(|v| {
                let s: HnswStats = v.hnsw.stats();
                (
                    v.name.clone(),
                    json!({"dim": v.spec.dim, "metric": v.spec.metric, "vectors": s.live,
                           "pending": s.pending, "tombstones": s.tombstones, "bytes": s.bytes,
                           "state": if s.pending == 0 { "ready" } else { "indexing" }}),
                )
            })
            .collect();
        let reembed = {
            let j = self.job.lock();
            j.0.as_ref().map(|job| job.to_json(j.1.as_deref()))
        };
        json!({
            "name": self.name,
            "schema": *self.schema(),
            "documents": documents,
            "created_at": crate::doc::format_datetime(self.created_ms),
            "indexes": indexes,
            "payload_index_bytes": payload_bytes,
            "text_index": text_index,
            "graph_source": *self.graph_source.lock(),
            "text_source": *self.text_source.lock(),
            "reembed": reembed,
            "learned_ranking": self.ranker.info(),
            "tenants": self.tenant_counts(TENANTS_LISTED_MAX).map(|(counts, total)| json!({
                "field": self.schema().tenant_field,
                "count": total,
                "documents": counts
                    .into_iter()
                    .map(|(v, n)| (v, json!(n)))
                    .collect::<serde_json::Map<String, Value>>(),
            })),
        })
    }

    /// Bytes held by the vector indexes.
    pub fn index_bytes(&self) -> u64 {
        self.vectors
            .iter()
            .map(|v| v.hnsw.stats().bytes as u64)
            .sum()
    }

    /// Waits until every vector written so far is linked into its graph (searches never need this:
    /// unlinked vectors are scanned exactly); false if `timeout` passed first.
    pub fn wait_until_indexed(&self, timeout: std::time::Duration) -> bool {
        match self.shared.upgrade() {
            Some(s) => s.wait_indexer(timeout, || self.pending() == 0),
            None => self.pending() == 0,
        }
    }

    /// Waits until the collection's re-embed job is no longer running (done, failed, or none);
    /// false if `timeout` passed first.
    pub fn wait_reembed(&self, timeout: std::time::Duration) -> bool {
        let idle = || {
            self.job()
                .is_none_or(|j| j.state != crate::reembed::JobState::Running)
        };
        match self.shared.upgrade() {
            Some(s) => s.wait_indexer(timeout, idle),
            None => idle(),
        }
    }

    /// Links up to `max` pending vectors of each field into its graph, one node at a time under the
    /// rows' read lock: linking reads neighbours' vectors with plain SIMD loads, and `set` (the
    /// applier, under the write lock) must not overwrite a vector while they are read. The applier
    /// waits at most one node's linking. Returns how many were linked.
    pub(crate) fn link(&self, max: usize) -> usize {
        let mut linked = 0;
        for v in &self.vectors {
            for _ in 0..max {
                let _rows = self.state.read();
                if v.hnsw.link_pending(1) == 0 {
                    break;
                }
                linked += 1;
            }
        }
        linked
    }

    /// The graphs' tombstone repair, under the rows' read lock: a repair pass frees tombstoned slots,
    /// and a `set` reusing one of them meanwhile (the applier, under the write lock) would be undone
    /// — the node lost from the graph. Writes wait while a pass runs (it runs only when tombstones
    /// pass 10% of the slots).
    pub(crate) fn maintain(&self) {
        let _rows = self.state.read();
        for v in &self.vectors {
            v.hnsw.maintain();
        }
    }

    /// Merges one group of sealed text segments if a merge is due: the plan is copied under the
    /// read lock, the merge runs with no lock held, and the result is installed under the write
    /// lock (rows deleted meanwhile stay dead). Returns whether it merged.
    pub(crate) fn merge_text(&self) -> bool {
        if self.merging.swap(true, Ordering::AcqRel) {
            return false;
        }
        let plan = self.state.read().text.merge_plan();
        let merged = plan.is_some();
        if let Some(plan) = plan {
            let t = Instant::now();
            let m = merge(plan);
            self.state.write().text.install_merge(m);
            metrics::counter!("kyrodb_text_merges_total").increment(1);
            tracing::debug!(collection = %self.name, took_ms = t.elapsed().as_millis() as u64, "text segments merged");
        }
        self.merging.store(false, Ordering::Release);
        merged
    }

    /// BM25 top `limit` for `query` over the text fields `fields` (name, boost; all text fields
    /// with boost 1 when empty), among documents matching `filter`; [`Error::Cancelled`] when
    /// `cancel` fires first.
    pub fn text_search(
        &self,
        query: &str,
        fields: &[(String, f32)],
        filter: Option<&Filter>,
        limit: usize,
        with_fields: bool,
        cancel: &Cancel,
    ) -> Result<(Vec<Hit>, TextStats)> {
        cancel.check()?;
        let st = self.state.read();
        let boosts = text_boosts(&st.text, fields)?;
        let q = st
            .text
            .query(query, &boosts)
            .map_err(|m| invalid("invalid_query", "text_search", m))?;
        let Some(q) = q else {
            return Ok((Vec::new(), TextStats::default()));
        };
        let allowed = filter
            .map(|f| st.payload.eval_with(f, cancel))
            .transpose()?;
        let id_of = |r: u32| st.row(r).map(|row| row.id.clone());
        let (rows, stats) = st
            .text
            .search(&q, limit, allowed.as_ref(), &id_of, cancel)?;
        Ok((st.hits(&rows, with_fields), stats))
    }

    /// Each vector query's list and the text list of a hybrid request, each cut at `candidates`
    /// after `filter`; with the plan stage of each.
    fn components(
        &self,
        req: &HybridRequest,
        filter: Option<&Filter>,
        cancel: &Cancel,
    ) -> Result<(Vec<ComponentList>, Vec<Value>)> {
        let mut lists: Vec<ComponentList> = Vec::new();
        let mut stages: Vec<Value> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for vq in &req.vectors {
            let t = Instant::now();
            let sr = SearchRequest {
                vector: vq.vector.clone(),
                text: None,
                using: vq.using.clone(),
                filter: filter.cloned(),
                limit: req.candidates,
                ef: req.ef(),
                with_fields: false,
                with_text: false,
                with_vectors: false,
                threshold: vq.threshold,
                explain: req.explain,
                exact: req.exact,
            };
            let out = self.search(&sr, cancel)?;
            let n = seen.entry(vq.using.as_str()).or_default();
            *n += 1;
            let name = if *n == 1 {
                format!("vector:{}", vq.using)
            } else {
                format!("vector:{}#{n}", vq.using)
            };
            stages.push(
                json!({"component": name, "kind": "vector", "field": vq.using,
                "weight": vq.weight, "listed": out.hits.len(),
                "took_us": t.elapsed().as_micros() as u64, "plan": out.plan}),
            );
            lists.push(ComponentList {
                name,
                weight: vq.weight,
                hits: out
                    .hits
                    .into_iter()
                    .map(|h| (Arc::from(h.id), h.score))
                    .collect(),
            });
        }
        if let Some(tc) = &req.text {
            let t = Instant::now();
            let (hits, stats) =
                self.text_search(&tc.query, &tc.fields, filter, req.candidates, false, cancel)?;
            stages.push(json!({"component": "text", "kind": "bm25", "index": "text (block-max WAND)",
                "weight": tc.weight, "listed": hits.len(), "segments": stats.segments,
                "postings": stats.postings, "scored": stats.scored,
                "phrase_rejected": stats.phrase_rejected, "strategy": stats.strategy, "took_us": t.elapsed().as_micros() as u64}));
            lists.push(ComponentList {
                name: "text".into(),
                weight: tc.weight,
                hits: hits
                    .into_iter()
                    .map(|h| (Arc::from(h.id), h.score))
                    .collect(),
            });
        }
        Ok((lists, stages))
    }

    /// Answers a hybrid search (`hybrid.rs`): each vector query's list and the text list, each cut
    /// at `candidates` after the metadata filter and time range, then fused (`learned_ranking`:
    /// the collection's model over the fused candidates, when one serves — `rank.rs`); with
    /// neither, the matching documents newest first. Vector queries must already hold their
    /// vectors (the server embeds `text` first). The answer is `{"hits": [...], "plan": {...}?}`.
    /// [`Error::Cancelled`] when `cancel` fires first.
    pub fn hybrid(&self, req: &HybridRequest, cancel: &Cancel) -> Result<Value> {
        let started = Instant::now();
        let schema = self.schema();
        let filter = req.combined_filter(&schema);
        let (lists, mut stages) = self.components(req, filter.as_ref(), cancel)?;
        cancel.check()?;
        let t = Instant::now();
        let st = self.state.read();
        let ranked: Vec<(u32, f64, Option<Value>)> = if lists.is_empty() {
            // Only a filter and/or a time range: newest first.
            let allowed = match &filter {
                Some(f) => st.payload.eval_with(f, cancel)?,
                None => st.payload.all().clone(),
            };
            let rows = st.newest(
                &allowed,
                schema.timestamp_field.as_deref(),
                req.limit,
                cancel,
            )?;
            stages.push(json!({"component": "filter", "kind": "newest_first",
                "order": schema.timestamp_field.as_deref().map_or("write order".to_string(), |f| format!("{f} descending")),
                "matches": allowed.len(), "took_us": t.elapsed().as_micros() as u64}));
            rows.into_iter().map(|r| (r, 0.0, None)).collect()
        } else {
            let mut fused = fuse(&lists, req.fusion);
            let mut stage = json!({"stage": "fusion", "strategy": req.fusion.name(),
                "k": match req.fusion {
                    crate::hybrid::Fusion::Rrf { k } => Some(k),
                    crate::hybrid::Fusion::Learned => Some(crate::hybrid::RRF_K_DEFAULT),
                    _ => None,
                },
                "fused": fused.len()});
            if req.fusion == crate::hybrid::Fusion::Learned {
                match self.ranker.model() {
                    Some(model) => {
                        let fx = Featurizer::new(&schema, &lists, req.now_ms);
                        for f in fused.iter_mut() {
                            let fields = st
                                .by_id
                                .get(&f.id)
                                .and_then(|r| st.row(*r))
                                .map(|r| &r.fields);
                            f.score = model.score(&fx.of(&f.id, fields).0);
                        }
                        fused.sort_by(|a, b| {
                            b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id))
                        });
                        stage["k"] = Value::Null;
                        stage["model"] = json!(self.ranker.decision());
                    }
                    None => {
                        stage["strategy"] = json!("rrf");
                        stage["requested"] = json!("learned_ranking");
                        stage["fallback"] = json!(self.ranker.decision());
                    }
                }
            }
            stage["took_us"] = json!(t.elapsed().as_micros() as u64);
            stages.push(stage);
            fused
                .into_iter()
                .filter_map(|f| {
                    let row = *st.by_id.get(&f.id)?;
                    let parts = req.explain.then(|| {
                        Value::Object(
                            lists
                                .iter()
                                .zip(&f.parts)
                                .filter_map(|(l, p)| {
                                    p.map(|(rank, score)| {
                                        (l.name.clone(), json!({"rank": rank, "score": score}))
                                    })
                                })
                                .collect(),
                        )
                    });
                    Some((row, f.score, parts))
                })
                .take(req.limit)
                .collect()
        };
        let mut hits: Vec<Value> = Vec::with_capacity(ranked.len());
        let mut keys = Vec::with_capacity(ranked.len());
        for (r, score, parts) in ranked {
            let Some(row) = st.row(r) else { continue };
            // Component scores are finite (`finite_score`) and weights bounded, so fused scores
            // are; a learned model's could still overflow: never emit ±∞ or NaN (JSON null).
            let score = if score.is_finite() {
                score
            } else if score > 0.0 {
                f64::MAX
            } else {
                f64::MIN
            };
            let mut h = json!({"id": &*row.id, "score": score});
            if req.with_fields {
                h["fields"] = fields_json(&row.fields);
            }
            if let Some(p) = parts {
                h["components"] = p;
            }
            keys.push(row.key);
            hits.push(h);
        }
        drop(st);
        if req.with_text {
            let values = self.keyspace.multi_get(&keys)?;
            for (h, v) in hits.iter_mut().zip(values) {
                if let Some(doc) = v.and_then(|v| Document::decode(&v, &schema).ok()) {
                    h["text"] = json!(doc.text);
                }
            }
        }
        let time_index = req.time.and_then(|_| self.state.read().payload.time_info());
        let took = started.elapsed();
        metrics::histogram!("kyrodb_hybrid_search_latency_seconds").record(took.as_secs_f64());
        let mut out = json!({"hits": hits});
        if req.explain {
            let time = req.time.map(|t| {
                json!({
                    "field": schema.timestamp_field,
                    "from": t.from.map(crate::doc::format_datetime),
                    "to": t.to.map(crate::doc::format_datetime),
                    "index": time_index,
                })
            });
            out["plan"] = json!({"candidates": req.candidates, "time_range": time,
                "stages": stages, "took_us": took.as_micros() as u64});
        }
        Ok(out)
    }

    /// Records feedback on a hybrid search durably (the collection's feedback keyspace): the
    /// query's candidates — `shown` when given, else its fused candidates — plus every labelled
    /// id, each with its grade and its features now; the model retrains in the background. Ids
    /// that are not documents are ignored (and listed); a request with no relevant document
    /// left is refused. [`Error::Cancelled`] (nothing written) when `cancel` fires while the
    /// query runs.
    pub fn feedback(&self, req: &HybridRequest, fb: &Feedback, cancel: &Cancel) -> Result<Value> {
        let schema = self.schema();
        let filter = req.combined_filter(&schema);
        let (lists, _) = self.components(req, filter.as_ref(), cancel)?;
        let fused = fuse(
            &lists,
            crate::hybrid::Fusion::Rrf {
                k: crate::hybrid::RRF_K_DEFAULT,
            },
        );
        let names = crate::rank::feature_names(&schema);
        let (example, ignored) = {
            let st = self.state.read();
            let (ids, missing) =
                crate::rank::candidate_ids(fb, fused.iter().map(|f| &*f.id), |id| {
                    st.by_id.contains_key(id)
                });
            if !ids
                .iter()
                .any(|id| fb.grades.get(*id).is_some_and(|g| *g > 0.0))
            {
                return Err(invalid(
                    "invalid_feedback",
                    "relevant",
                    format!(
                        "none of the relevant ids is a document of collection {:?}",
                        self.name
                    ),
                ));
            }
            let fx = Featurizer::new(&schema, &lists, req.now_ms);
            let mut cands: Vec<crate::rank::Cand> = ids
                .iter()
                .map(|id| {
                    let fields = st
                        .by_id
                        .get(*id)
                        .and_then(|r| st.row(*r))
                        .map(|r| &r.fields);
                    let (x, rrf) = fx.of(id, fields);
                    crate::rank::Cand {
                        id: (*id).to_owned(),
                        y: fb.grades.get(*id).copied().unwrap_or(0.0),
                        rrf,
                        x,
                    }
                })
                .collect();
            // Best RRF first, so that trimming to the value size drops the weakest.
            cands.sort_by(|a, b| b.rrf.total_cmp(&a.rrf).then_with(|| a.id.cmp(&b.id)));
            let example = crate::rank::Example {
                at_ms: req.now_ms,
                query: req
                    .text
                    .as_ref()
                    .map(|t| t.query.clone())
                    .unwrap_or_default(),
                names,
                cands,
            };
            (
                example,
                missing.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            )
        };
        let candidates = example.cands.len();
        let relevant = example.cands.iter().filter(|c| c.y > 0.0).count();
        let max = self.shared.upgrade().map_or(1 << 20, |s| s.value_bytes_max);
        let (key, examples) = self.ranker.add(example, max)?;
        if let Some(s) = self.shared.upgrade() {
            s.wake_indexer();
        }
        Ok(
            json!({"collection": self.name, "example": key, "candidates": candidates,
            "relevant": relevant, "ignored_ids": ignored, "examples": examples}),
        )
    }

    /// Retrains the learned ranking if enough new feedback arrived (indexer threads).
    pub(crate) fn train_ranker(&self) -> bool {
        self.ranker
            .train_if_due(&crate::rank::feature_names(&self.schema()))
    }

    /// Waits until no training of the learned ranking is due; false if `timeout` passed first.
    pub fn wait_ranker(&self, timeout: std::time::Duration) -> bool {
        match self.shared.upgrade() {
            Some(s) => s.wait_indexer(timeout, || !self.ranker.due()),
            None => !self.ranker.due(),
        }
    }

    /// The feedback keyspace.
    pub(crate) fn feedback_keyspace(&self) -> &Keyspace {
        self.ranker.keyspace()
    }

    /// Vectors waiting to be linked.
    pub fn pending(&self) -> usize {
        self.vectors.iter().map(|v| v.hnsw.pending()).sum()
    }
}

/// Resolves (text field, boost) pairs to the index's field positions; empty = every text field.
fn text_boosts(ix: &TextIndex, fields: &[(String, f32)]) -> Result<Vec<(usize, f32)>> {
    if fields.is_empty() {
        let all: Vec<(usize, f32)> = (0..ix.field_names().count()).map(|i| (i, 1.0)).collect();
        if all.is_empty() {
            return Err(invalid(
                "invalid_query",
                "text_search",
                "the collection has no text_fields to search",
            ));
        }
        return Ok(all);
    }
    fields
        .iter()
        .map(|(name, boost)| {
            let i = ix.field(name).ok_or_else(|| {
                invalid(
                    "unknown_field",
                    format!("text_search.fields.{name}"),
                    format!("{name:?} is not one of the collection's text_fields"),
                )
            })?;
            if !(boost.is_finite() && *boost > 0.0) {
                return Err(invalid(
                    "invalid_query",
                    format!("text_search.fields.{name}"),
                    "a boost is a positive number",
                ));
            }
            Ok((i, *boost))
        })
        .collect()
}

/// The engine key an id starts probing from.
fn id_key(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

impl State {
    fn row(&self, r: u32) -> Option<&Row> {
        self.rows.get(r as usize)?.as_ref()
    }

    /// Whether row `r`'s document belongs to tenant `t` (the payload index of its tenant field).
    fn owned_by(&self, r: u32, t: &crate::Tenant) -> bool {
        self.payload
            .keyword_rows(&t.field, &t.value)
            .is_some_and(|b| b.contains(r))
    }

    /// Up to `limit` rows of `allowed`, newest first: by the timestamp field descending (ties by
    /// id), then rows without a timestamp in reverse write order.
    fn newest(
        &self,
        allowed: &RoaringBitmap,
        ts: Option<&str>,
        limit: usize,
        cancel: &Cancel,
    ) -> Result<Vec<u32>> {
        let mut out: Vec<u32> = Vec::new();
        let mut left = allowed.clone();
        let mut poll = Poll::new(cancel, 256);
        if let Some(ts) = ts {
            for bm in self.payload.numeric_desc(ts) {
                if poll.stop() {
                    return Err(Error::Cancelled);
                }
                let mut group: Vec<u32> = (bm & &left).iter().collect();
                if group.is_empty() {
                    continue;
                }
                for r in &group {
                    left.remove(*r);
                }
                group.sort_by(|a, b| {
                    let id = |r: &u32| self.row(*r).map(|x| x.id.clone());
                    id(a).cmp(&id(b))
                });
                out.extend(group);
                if out.len() >= limit {
                    out.truncate(limit);
                    return Ok(out);
                }
            }
        }
        cancel.check()?;
        let mut rest: Vec<(u64, u32)> = left
            .iter()
            .filter_map(|r| self.row(r).map(|row| (row.seq, r)))
            .collect();
        rest.sort_unstable_by(|a, b| b.cmp(a));
        out.extend(rest.into_iter().map(|x| x.1).take(limit - out.len()));
        Ok(out)
    }

    /// Adds every row holding exactly the vector of a hit (and matching `filter`) with the hit's
    /// score. Returns how many were added.
    fn expand_duplicates(
        &self,
        field: usize,
        index: &VectorIndex,
        hits: &mut Vec<(u32, f32)>,
        filter: Option<&Filter>,
        cancel: &Cancel,
    ) -> Result<usize> {
        let d = &self.dups[field];
        if d.many.is_empty() {
            return Ok(0);
        }
        let mut have: std::collections::HashSet<u32> = hits.iter().map(|h| h.0).collect();
        let mut extra = Vec::new();
        let mut allowed: Option<RoaringBitmap> = None;
        for &(r, score) in hits.iter() {
            cancel.check()?;
            let group = d.group(r);
            if group.is_empty() {
                continue;
            }
            let Some(v) = index.hnsw.vector(r) else {
                continue;
            };
            for &o in group {
                if have.contains(&o) {
                    continue;
                }
                if let Some(f) = filter {
                    if allowed.is_none() {
                        allowed = Some(self.payload.eval_with(f, cancel)?);
                    }
                    if !allowed.as_ref().is_some_and(|a| a.contains(o)) {
                        continue;
                    }
                }
                if index.hnsw.vector(o).is_some_and(|w| w == v) {
                    have.insert(o);
                    extra.push((o, score));
                }
            }
        }
        let n = extra.len();
        hits.extend(extra);
        Ok(n)
    }

    /// Hits for scored rows (in the given order; rows no longer live are skipped; scores made
    /// finite).
    fn hits(&self, rows: &[(u32, f32)], with_fields: bool) -> Vec<Hit> {
        rows.iter()
            .filter_map(|&(r, score)| {
                let row = self.row(r)?;
                Some(Hit {
                    id: row.id.to_string(),
                    score: crate::distance::finite_score(score),
                    fields: with_fields.then(|| fields_json(&row.fields)),
                    text: None,
                    vectors: None,
                    key: row.key,
                })
            })
            .collect()
    }

    fn remove_row(&mut self, r: u32, vectors: &[VectorIndex]) {
        let Some(row) = self.rows.get_mut(r as usize).and_then(Option::take) else {
            return;
        };
        self.payload.remove(r, &row.fields);
        self.text.remove(r);
        self.by_key.remove(&row.key);
        if self.by_id.get(&row.id) == Some(&r) {
            self.by_id.remove(&row.id);
        }
        for (i, v) in vectors.iter().enumerate() {
            if self.has_vector[i].remove(r) {
                v.hnsw.remove(r);
            }
            self.dups[i].remove(r);
        }
        self.free.push(r);
    }

    fn put(&mut self, key: u64, seq: u64, doc: Document, vectors: &[VectorIndex]) {
        // The same id under another key (cannot happen through this crate's writes, which look
        // the id up first): keep ids unique by dropping the other row.
        if let Some(&other) = self.by_id.get(doc.id.as_str()) {
            if self.row(other).is_some_and(|row| row.key != key) {
                self.remove_row(other, vectors);
            }
        }
        let r = match self.by_key.get(&key) {
            Some(&r) => {
                let old = self.rows[r as usize].take().expect("mapped row is live");
                self.payload.remove(r, &old.fields);
                self.text.remove(r);
                if self.by_id.get(&old.id) == Some(&r) {
                    self.by_id.remove(&old.id);
                }
                r
            }
            None => {
                let preset = self
                    .preload
                    .as_ref()
                    .and_then(|p| p.rows.get(&key).copied());
                let r = match preset {
                    Some(r) if self.rows.get(r as usize).is_some_and(Option::is_none) => r,
                    _ => self.free.pop().unwrap_or_else(|| {
                        self.rows.push(None);
                        (self.rows.len() - 1) as u32
                    }),
                };
                self.by_key.insert(key, r);
                r
            }
        };
        let id: Arc<str> = Arc::from(doc.id.as_str());
        self.payload.insert(r, &doc.fields);
        if !self.text.adopt(r, key, &doc.text) {
            self.text.insert(r, &doc.text);
        }
        let preloading = self.preload.is_some();
        for (i, v) in vectors.iter().enumerate() {
            match doc.vectors.get(&v.name) {
                Some(vec) if vec.len() == v.spec.dim as usize => {
                    let prepared = crate::distance::prepared(v.spec.metric, vec);
                    // A node of a loaded graph is kept only if it holds exactly this vector.
                    let same =
                        preloading && v.hnsw.vector(r).is_some_and(|stored| stored == prepared);
                    if !same {
                        v.hnsw.set(r, vec);
                    }
                    self.has_vector[i].insert(r);
                    self.dups[i].insert(r, vector_hash(&prepared));
                }
                _ => {
                    if self.has_vector[i].remove(r) {
                        v.hnsw.remove(r);
                    }
                    self.dups[i].remove(r);
                }
            }
        }
        self.by_id.insert(id.clone(), r);
        self.rows[r as usize] = Some(Row {
            key,
            seq,
            id,
            fields: doc.fields,
        });
    }
}

impl Collection {
    /// Ends the attach load of a collection that started from a graph file: rows of the file that
    /// no stored document claimed are removed from the graphs and freed.
    pub(crate) fn finish_load(&self, source: String) {
        *self.graph_source.lock() = source;
        let mut st = self.state.write();
        let mut text_source = self.text_source.lock();
        match st.text.finish_load() {
            Some((adopted, analysed)) => {
                *text_source = format!(
                    "checkpoint: {adopted} documents' postings adopted (text hash verified), {analysed} analysed"
                )
            }
            None if *text_source == "new" => {
                *text_source = "rebuilt: no usable checkpoint file (see graph_source)".into()
            }
            None => {}
        }
        drop(text_source);
        let Some(p) = st.preload.take() else {
            return;
        };
        let mut dropped = 0;
        for (_, r) in p.rows {
            if st.rows.get(r as usize).is_some_and(Option::is_none) {
                for v in &self.vectors {
                    v.hnsw.remove(r);
                }
                dropped += 1;
            }
        }
        // Every row slot without a document is free (whether or not the file named it).
        let free: Vec<u32> = (0..st.rows.len() as u32)
            .filter(|r| st.rows[*r as usize].is_none())
            .collect();
        st.free = free;
        if dropped > 0 {
            tracing::info!(collection = %self.name, dropped, "graph file rows without a stored document removed");
        }
    }

    /// Writes the graphs and their row table to `path` atomically (under the read lock, so rows and
    /// graphs agree).
    pub(crate) fn checkpoint(&self, path: &std::path::Path) -> Result<()> {
        let bytes = {
            let st = self.state.read();
            let rows: Vec<(u32, u64)> = st
                .rows
                .iter()
                .enumerate()
                .filter_map(|(r, row)| Some((r as u32, row.as_ref()?.key)))
                .collect();
            let graphs: Vec<(&str, &Hnsw)> = self
                .vectors
                .iter()
                .map(|v| (v.name.as_str(), &v.hnsw))
                .collect();
            let text = st.text.encode(&self.schema().text_analysis(), |r| {
                Some(st.rows.get(r as usize)?.as_ref()?.key)
            });
            crate::checkpoint::encode(&rows, &graphs, &text).map_err(|source| {
                Error::Storage(kyrodb_storage::Error::Io {
                    path: path.to_owned(),
                    source,
                })
            })?
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| {
                Error::Storage(kyrodb_storage::Error::Io {
                    path: dir.to_owned(),
                    source,
                })
            })?;
        }
        kyrodb_storage::write_file_atomic(path, &bytes)?;
        Ok(())
    }
}

impl Applier for Collection {
    fn apply(&self, seq: u64, changes: &[Change<'_>]) {
        let schema = self.schema();
        let mut st = self.state.write();
        for c in changes {
            match c {
                Change::Put { key, value, .. } => match Document::decode(value, &schema) {
                    Ok(doc) => st.put(*key, seq, doc, &self.vectors),
                    Err(e) => {
                        tracing::error!(collection = %self.name, key, %e, "stored document does not decode; not indexed");
                        if let Some(&r) = st.by_key.get(key) {
                            st.remove_row(r, &self.vectors);
                        }
                    }
                },
                Change::Delete { key } => {
                    if let Some(&r) = st.by_key.get(key) {
                        st.remove_row(r, &self.vectors);
                    }
                }
            }
        }
        drop(st);
        if let Some(s) = self.shared.upgrade() {
            s.wake_indexer();
        }
    }
}

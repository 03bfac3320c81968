//! One collection: its documents live in one engine keyspace (key = a collision-free u64 per id,
//! value = the encoded document); its rows, payload indexes and one HNSW per vector field are
//! derived state, kept in step by the engine's applier seam and rebuilt from the keyspace on open.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
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
    env::Env,
    error::invalid,
    filter::Filter,
    hnsw::{Hnsw, HnswStats},
    hybrid::{fuse, ComponentList, HybridRequest},
    payload::Payload,
    query::{Hit, SearchRequest, SearchResponse},
    rank::{Featurizer, Feedback, Ranker},
    schema::{Schema, VectorSpec},
    text::{index::merge, TextIndex, TextStats},
    Error, Result,
};

mod apply;
mod persist;
mod read;
mod rows;
mod search_hybrid;
mod write;

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

/// `GET /v2/collections/{name}` (and each item of the list, and `PUT`'s answer): the schema, counts
/// and index state. Keys in alphabetical order, as the answer has always had them.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CollectionInfo {
    /// When the collection was created (RFC 3339).
    pub created_at: String,
    /// Live documents (a tenant key sees its own).
    pub documents: u64,
    /// Where the graphs came from at start (a verified file, or rebuilt and why).
    pub graph_source: String,
    /// Per vector field.
    pub indexes: BTreeMap<String, VectorIndexInfo>,
    /// The learned ranking's state.
    pub learned_ranking: crate::rank::RankingInfo,
    /// The collection's name.
    pub name: String,
    /// Bytes the metadata (payload) indexes hold.
    pub payload_index_bytes: u64,
    /// The last re-embed job, if any.
    pub reembed: Option<crate::job::JobView>,
    /// The schema.
    pub schema: Schema,
    /// With a tenant field: documents per tenant (the largest tenants).
    pub tenants: Option<TenantsInfo>,
    /// The text index's state.
    pub text_index: crate::text::TextIndexInfo,
    /// Where the text index's sealed segments came from at start.
    pub text_source: String,
}

/// One vector field's index.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct VectorIndexInfo {
    /// Bytes the index holds.
    pub bytes: u64,
    /// Dimensions.
    pub dim: u32,
    /// The metric.
    pub metric: crate::distance::Metric,
    /// Vectors written and not yet linked into the graph (searched exactly meanwhile).
    pub pending: u64,
    /// `ready`, or `indexing` while vectors are pending.
    pub state: String,
    /// Removed vectors still holding a slot.
    pub tombstones: u64,
    /// Live vectors.
    pub vectors: u64,
}

/// Documents per tenant, for a collection with a tenant field.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TenantsInfo {
    /// Tenants holding documents.
    pub count: usize,
    /// Documents by tenant (the largest tenants, at most 1,000).
    pub documents: BTreeMap<String, u64>,
    /// The tenant field.
    pub field: String,
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
    env: Weak<Env>,
    pub(crate) dropped: AtomicBool,
    /// A text-segment merge is running (one at a time per collection).
    merging: AtomicBool,
    /// Where the graphs came from at start (`GET` info shows it).
    graph_source: parking_lot::Mutex<String>,
    /// Where the text index's sealed segments came from at start (info shows it).
    text_source: parking_lot::Mutex<String>,
    /// The last re-embed job (durable in the catalog), and why a running one waits.
    job: parking_lot::Mutex<(Option<crate::job::ReembedJob>, Option<String>)>,
    /// Feedback examples and the learned ranking trained from them.
    ranker: Ranker,
}

impl Collection {
    pub(crate) fn new(
        name: &str,
        schema: Schema,
        created_ms: i64,
        keyspace: Keyspace,
        env: &Arc<Env>,
        mut loaded: Option<crate::checkpoint::Loaded>,
        ranker: Ranker,
    ) -> Collection {
        let params = env.opts.hnsw;
        let env = Arc::downgrade(env);
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
            env,
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
    pub fn job(&self) -> Option<crate::job::ReembedJob> {
        self.job.lock().0.clone()
    }

    pub(crate) fn set_job(&self, job: Option<crate::job::ReembedJob>) {
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

    fn env(&self) -> Result<Arc<Env>> {
        self.env
            .upgrade()
            .filter(|_| !self.dropped.load(Ordering::Acquire))
            .ok_or_else(|| Error::NoSuchCollection(self.name.clone()))
    }

    /// Schema, counts and index state.
    pub fn info(&self) -> CollectionInfo {
        let (documents, payload_bytes, text_index) = {
            let st = self.state.read();
            (st.by_key.len() as u64, st.payload.bytes(), st.text.info())
        };
        let indexes = self
            .vectors
            .iter()
            .map(|v| {
                let s: HnswStats = v.hnsw.stats();
                (
                    v.name.clone(),
                    VectorIndexInfo {
                        bytes: s.bytes as u64,
                        dim: v.spec.dim,
                        metric: v.spec.metric,
                        pending: s.pending as u64,
                        state: if s.pending == 0 { "ready" } else { "indexing" }.to_owned(),
                        tombstones: s.tombstones as u64,
                        vectors: s.live as u64,
                    },
                )
            })
            .collect();
        let reembed = {
            let j = self.job.lock();
            j.0.as_ref().map(|job| job.view(j.1.as_deref()))
        };
        let schema = self.schema();
        CollectionInfo {
            created_at: crate::doc::format_datetime(self.created_ms),
            documents,
            graph_source: self.graph_source.lock().clone(),
            indexes,
            learned_ranking: self.ranker.info(),
            name: self.name.clone(),
            payload_index_bytes: payload_bytes as u64,
            reembed,
            schema: (*schema).clone(),
            tenants: self
                .tenant_counts(TENANTS_LISTED_MAX)
                .zip(schema.tenant_field.clone())
                .map(|((counts, total), field)| TenantsInfo {
                    count: total,
                    documents: counts.into_iter().collect(),
                    field,
                }),
            text_index,
            text_source: self.text_source.lock().clone(),
        }
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
        match self.env.upgrade() {
            Some(s) => s.wait_indexer(timeout, || self.pending() == 0),
            None => self.pending() == 0,
        }
    }

    /// Waits until the collection's re-embed job is no longer running (done, failed, or none);
    /// false if `timeout` passed first.
    pub fn wait_reembed(&self, timeout: std::time::Duration) -> bool {
        let idle = || {
            self.job()
                .is_none_or(|j| j.state != crate::job::JobState::Running)
        };
        match self.env.upgrade() {
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
            metrics::counter!(crate::families::TEXT_MERGES_TOTAL.name).increment(1);
            tracing::debug!(collection = %self.name, took_ms = t.elapsed().as_millis() as u64, "text segments merged");
        }
        self.merging.store(false, Ordering::Release);
        merged
    }

    /// Retrains the learned ranking if enough new feedback arrived (indexer threads).
    pub(crate) fn train_ranker(&self) -> bool {
        self.ranker
            .train_if_due(&crate::rank::feature_names(&self.schema()))
    }

    /// Waits until no training of the learned ranking is due; false if `timeout` passed first.
    pub fn wait_ranker(&self, timeout: std::time::Duration) -> bool {
        match self.env.upgrade() {
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

/// The engine key an id starts probing from.
fn id_key(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

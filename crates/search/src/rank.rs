//! Learned ranking (fusion `learned_ranking`, alias `auto_rank`): a pairwise logistic model
//! (RankNet with a linear scorer) over per-candidate features, trained in-process from the
//! feedback users send (`POST /v2/collections/{name}/feedback`), falling back to RRF until a
//! trained model beats RRF on held-out feedback.
//!
//! - **Examples** are stored durably in the collection's feedback keyspace (`_f.<name>.<created>`,
//!   key = a sequence number, value = JSON): the query's candidates, each with its grade and its
//!   features as computed when the feedback arrived. At most [`EXAMPLES_MAX`] per collection; the
//!   oldest go first. They are loaded on open; the model is derived state, retrained from them.
//! - **Features** (see [`feature_names`]): per vector field and for text, the reciprocal rank
//!   (60/(60+rank)), the min-max normalised score, the raw score (ln(1+bm25) for text) and a
//!   listed flag; the request's RRF score; the document's age (ln(1+days)) on the timestamp
//!   field; each numeric or boolean metadata field (signed ln(1+|x|), with a missing flag). The
//!   metadata filter is a hard constraint, so every candidate matches it: a document's metadata
//!   values are what the model can see that RRF cannot.
//! - **Training** (on an indexer thread, when [`MIN_EXAMPLES`] usable examples exist and 5 or 10%
//!   more arrived since the last training): examples are split by a hash of their key (a fifth,
//!   at least 5, for validation); features standardised over the training candidates; pairs
//!   (grade i > grade j within one query, at most 256 per query) fit by Newton's method on the
//!   L2-regularised pairwise logistic loss. The model serves only if its validation nDCG@10 beats
//!   RRF's by a paired t ≥ 2 over the validation queries; otherwise RRF serves and the info says
//!   why (noise in the feedback does not move the ranking).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use kyrodb_storage::Keyspace;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    doc::{format_datetime, FieldValue, Fields},
    error::invalid,
    hybrid::ComponentList,
    schema::{FieldType, Schema},
    wire::{
        self, FeedbackBody, FeedbackQuery, HybridBody, IdList, OneOrMany, TextSearchBody,
        VectorQueryBody,
    },
    Error, Result,
};

/// Feedback examples kept per collection (the oldest are deleted beyond it).
pub const EXAMPLES_MAX: usize = 10_000;
/// Usable examples before the first training.
pub const MIN_EXAMPLES: usize = 20;
/// Most ids in `relevant`, `labels` or `shown`.
pub const LABELLED_IDS_MAX: usize = 1000;
/// Highest grade in `labels`.
pub const GRADE_MAX: f64 = 10.0;
/// Numeric / boolean metadata fields that become features (the first by name).
pub const FIELD_FEATURES_MAX: usize = 32;
/// Most candidates stored per example (the best by RRF, plus every labelled one).
pub const CANDIDATES_STORED_MAX: usize = 1000;
const PAIRS_PER_QUERY_MAX: usize = 256;
const PAIRS_MAX: usize = 200_000;
/// Pairs × features² per Newton iteration, at most.
const WORK_MAX: usize = 200_000_000;
const NEWTON_ITERATIONS: usize = 30;
const L2: f64 = 1.0;
const RRF_K: f64 = 60.0;
const NDCG_AT: usize = 10;
const T_MIN: f64 = 2.0;
const VALIDATION_MIN: usize = 5;

/// The feature names of a schema, in the order of feature vectors.
pub fn feature_names(schema: &Schema) -> Vec<String> {
    let mut n = Vec::new();
    for f in schema.vectors.keys() {
        for s in ["rr", "norm", "score", "listed"] {
            n.push(format!("vector:{f}.{s}"));
        }
    }
    if !schema.text_fields.is_empty() {
        for s in ["rr", "norm", "log_bm25", "listed"] {
            n.push(format!("text.{s}"));
        }
    }
    n.push("rrf".into());
    if schema.timestamp_field.is_some() {
        n.push("age.log_days".into());
        n.push("age.missing".into());
    }
    for f in field_features(schema) {
        n.push(format!("field:{f}"));
        n.push(format!("field:{f}.missing"));
    }
    n
}

fn field_features(schema: &Schema) -> impl Iterator<Item = &String> {
    schema
        .fields
        .iter()
        .filter(move |(f, t)| {
            schema.timestamp_field.as_deref() != Some(f.as_str())
                && matches!(t, FieldType::Integer | FieldType::Float | FieldType::Bool)
        })
        .map(|(f, _)| f)
        .take(FIELD_FEATURES_MAX)
}

/// One component list seen by the featurizer.
struct ListView<'a> {
    base: usize,
    text: bool,
    weight: f64,
    at: HashMap<&'a str, (usize, f32)>,
    lo: f32,
    hi: f32,
}

/// Computes candidates' features for one query's component lists.
pub(crate) struct Featurizer<'a> {
    lists: Vec<ListView<'a>>,
    len: usize,
    rrf_at: usize,
    age_at: Option<usize>,
    ts: Option<&'a str>,
    fields: Vec<(usize, &'a str)>,
    now_ms: i64,
}

fn signed_log(x: f64) -> f32 {
    (x.signum() * x.abs().ln_1p()) as f32
}

impl<'a> Featurizer<'a> {
    pub(crate) fn new(schema: &'a Schema, lists: &'a [ComponentList], now_ms: i64) -> Self {
        let nv = schema.vectors.len();
        let text_at = 4 * nv;
        let rrf_at = text_at + if schema.text_fields.is_empty() { 0 } else { 4 };
        let mut next = rrf_at + 1;
        let age_at = schema.timestamp_field.as_ref().map(|_| {
            next += 2;
            next - 2
        });
        let fields: Vec<(usize, &str)> = field_features(schema)
            .map(|f| {
                next += 2;
                (next - 2, f.as_str())
            })
            .collect();
        let views = lists
            .iter()
            .filter_map(|l| {
                let (base, text) = if l.name == "text" {
                    (text_at, true)
                } else {
                    let field = l.name.strip_prefix("vector:")?;
                    let field = field.split('#').next().unwrap_or(field);
                    (4 * schema.vectors.keys().position(|k| k == field)?, false)
                };
                let mut at = HashMap::with_capacity(l.hits.len());
                for (i, (id, s)) in l.hits.iter().enumerate() {
                    at.entry(&**id).or_insert((i + 1, *s));
                }
                let lo = l.hits.iter().map(|h| h.1).fold(f32::INFINITY, f32::min);
                let hi = l.hits.iter().map(|h| h.1).fold(f32::NEG_INFINITY, f32::max);
                Some(ListView {
                    base,
                    text,
                    weight: l.weight,
                    at,
                    lo,
                    hi,
                })
            })
            .collect();
        Featurizer {
            lists: views,
            len: next,
            rrf_at,
            age_at,
            ts: schema.timestamp_field.as_deref(),
            fields,
            now_ms,
        }
    }

    /// The features of document `id` (its metadata `fields`) and its RRF score (k = 60, the
    /// request's weights).
    pub(crate) fn of(&self, id: &str, fields: Option<&Fields>) -> (Vec<f32>, f64) {
        let mut x = vec![0f32; self.len];
        let mut rrf = 0.0;
        for l in &self.lists {
            let Some(&(rank, s)) = l.at.get(id) else {
                continue;
            };
            rrf += l.weight / (RRF_K + rank as f64);
            let rr = (RRF_K / (RRF_K + rank as f64)) as f32;
            let norm = if l.hi > l.lo {
                (s - l.lo) / (l.hi - l.lo)
            } else {
                1.0
            };
            let raw = if l.text { s.max(0.0).ln_1p() } else { s };
            let b = l.base;
            // A field queried twice keeps its better values.
            if x[b + 3] == 0.0 {
                (x[b], x[b + 1], x[b + 2]) = (rr, norm, raw);
            } else {
                x[b] = x[b].max(rr);
                x[b + 1] = x[b + 1].max(norm);
                x[b + 2] = x[b + 2].max(raw);
            }
            x[b + 3] = 1.0;
        }
        x[self.rrf_at] = (rrf * RRF_K) as f32;
        let value = |f: &str| fields.and_then(|fs| fs.get(f));
        if let (Some(at), Some(ts)) = (self.age_at, self.ts) {
            match value(ts) {
                Some(FieldValue::Datetime(ms)) => {
                    x[at] = ((self.now_ms - ms).max(0) as f64 / 86_400_000.0).ln_1p() as f32
                }
                _ => x[at + 1] = 1.0,
            }
        }
        for &(at, f) in &self.fields {
            match value(f) {
                Some(FieldValue::Integer(i)) => x[at] = signed_log(*i as f64),
                Some(FieldValue::Float(v)) => x[at] = signed_log(*v),
                Some(FieldValue::Bool(b)) => x[at] = f32::from(u8::from(*b)),
                _ => x[at + 1] = 1.0,
            }
        }
        (x, rrf)
    }
}

/// A parsed feedback request.
#[derive(Debug, Clone)]
pub struct Feedback {
    /// The search the feedback is about (a hybrid request body, or its text).
    pub query: FeedbackQuery,
    /// Grade by id (`relevant` ids: 1).
    pub grades: BTreeMap<String, f32>,
    /// The ids the user was shown (candidates; unlabelled ones are grade 0). Empty: the query's
    /// own candidates.
    pub shown: Vec<String>,
}

fn bad(path: &str, m: impl Into<String>) -> Error {
    invalid("invalid_feedback", path, m.into())
}

/// Ids checked: at most [`LABELLED_IDS_MAX`], none empty.
fn ids(list: IdList, path: &str) -> Result<Vec<String>> {
    if list.0.len() > LABELLED_IDS_MAX {
        return Err(bad(
            path,
            format!("{} ids; at most {LABELLED_IDS_MAX}", list.0.len()),
        ));
    }
    if let Some(i) = list.0.iter().position(String::is_empty) {
        return Err(bad(
            &format!("{path}[{i}]"),
            "expected a document id (a non-empty string), got an empty string",
        ));
    }
    Ok(list.0)
}

impl Feedback {
    /// Parses a feedback body: [`FeedbackBody`] decoded, then bound.
    pub fn parse(v: &Value) -> Result<Feedback> {
        wire::decode::<FeedbackBody>(v, "invalid_feedback", "feedback")?.bind()
    }

    /// The query as a hybrid request: a text is a text search over every text field and, when
    /// the collection has exactly one embedded vector field, that field's vector query too
    /// (what `GET /v2/search?q=…&similar_to=…` runs).
    pub fn query_body(&self, schema: &Schema) -> HybridBody {
        match &self.query {
            FeedbackQuery::Text(s) => {
                let mut embedded = schema.embedded_fields();
                HybridBody {
                    text_search: (!schema.text_fields.is_empty())
                        .then(|| TextSearchBody::Query(s.clone())),
                    vector_similarity: match (embedded.next(), embedded.next()) {
                        (Some((field, _)), None) => Some(OneOrMany::One(VectorQueryBody {
                            text: Some(s.clone()),
                            using: Some(field.to_owned()),
                            ..VectorQueryBody::default()
                        })),
                        _ => None,
                    },
                    ..HybridBody::default()
                }
            }
            // The feedback names its collection in the path.
            FeedbackQuery::Search(b) => HybridBody {
                collection: None,
                ..(**b).clone()
            },
        }
    }
}

impl FeedbackBody {
    /// Checks the ids and grades: at least one relevant document, each id at most once.
    pub fn bind(self) -> Result<Feedback> {
        let mut grades = BTreeMap::new();
        if let Some(r) = self.relevant {
            for id in ids(r, "relevant")? {
                grades.insert(id, 1.0);
            }
        }
        if let Some(labels) = self.labels {
            if labels.len() > LABELLED_IDS_MAX {
                return Err(bad(
                    "labels",
                    format!("{} ids; at most {LABELLED_IDS_MAX}", labels.len()),
                ));
            }
            for (id, g) in labels {
                let p = format!("labels.{id}");
                if id.is_empty() {
                    return Err(bad(&p, "an empty document id"));
                }
                if !(g.is_finite() && (0.0..=GRADE_MAX).contains(&g)) {
                    return Err(bad(&p, format!("a grade is a number in 0..={GRADE_MAX}")));
                }
                if grades.insert(id, g as f32).is_some() {
                    return Err(bad(&p, "the id is also in relevant: give it once"));
                }
            }
        }
        if !grades.values().any(|g| *g > 0.0) {
            return Err(bad(
                "relevant",
                "no relevant document: give relevant ids or labels with a grade above 0",
            ));
        }
        let shown = match self.shown {
            Some(s) => ids(s, "shown")?,
            None => Vec::new(),
        };
        Ok(Feedback {
            query: self.query,
            grades,
            shown,
        })
    }
}

/// One feedback example, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Example {
    /// When it arrived.
    pub at_ms: i64,
    /// The query's text part (for people reading the store), or empty.
    #[serde(default)]
    pub query: String,
    /// The feature names `x` follows.
    pub names: Vec<String>,
    /// The candidates.
    pub cands: Vec<Cand>,
}

/// A candidate of an example.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cand {
    pub id: String,
    /// Grade (0 = not relevant).
    pub y: f32,
    /// Its RRF score in the query (the baseline).
    pub rrf: f64,
    /// Features.
    pub x: Vec<f32>,
}

impl Example {
    /// Encodes within `max` bytes, dropping unlabelled candidates from the end (the lowest RRF)
    /// when it is too large.
    pub(crate) fn encode(&mut self, max: usize) -> Option<Vec<u8>> {
        loop {
            let v = serde_json::to_vec(self).expect("examples serialise");
            if v.len() <= max {
                return Some(v);
            }
            let unlabelled = self.cands.iter().filter(|c| c.y == 0.0).count();
            if unlabelled == 0 {
                return None;
            }
            let drop = (unlabelled / 4).max(1);
            let mut seen = 0;
            let mut i = self.cands.len();
            while i > 0 && seen < drop {
                i -= 1;
                if self.cands[i].y == 0.0 {
                    self.cands.remove(i);
                    seen += 1;
                }
            }
        }
    }
}

/// A trained scorer: score = Σ w·x (raw features).
#[derive(Debug, Clone)]
pub(crate) struct Model {
    pub names: Vec<String>,
    pub w: Vec<f64>,
}

impl Model {
    pub(crate) fn score(&self, x: &[f32]) -> f64 {
        self.w.iter().zip(x).map(|(w, x)| w * *x as f64).sum()
    }
}

/// What the last training measured (keys in alphabetical order, as the answer has always had them).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// Whether the trained model serves (it beat RRF on the held-out feedback).
    pub active: bool,
    /// When it ran (RFC 3339).
    pub at: String,
    /// Why the model serves or not.
    pub decision: String,
    /// Feedback examples when it ran.
    pub examples: usize,
    /// Pairs trained on.
    pub pairs: usize,
    /// The paired t statistic of model vs RRF nDCG@10 on the validation queries.
    pub t_statistic: Option<f64>,
    /// Training time.
    pub took_ms: u64,
    /// Queries trained on.
    pub train_queries: usize,
    /// Examples usable for training (a relevant and a less relevant candidate).
    pub usable_examples: usize,
    /// nDCG@10 of the model on the validation queries.
    pub validation_ndcg10_model: Option<f64>,
    /// nDCG@10 of RRF on the validation queries.
    pub validation_ndcg10_rrf: Option<f64>,
    /// Queries held out for validation.
    pub validation_queries: usize,
}

/// nDCG@10 of `order` (grades in ranked order) against the ideal order of `grades`; None when no
/// grade is positive.
pub fn ndcg_at_10(order: &[f32], grades: &[f32]) -> Option<f64> {
    let dcg = |g: &[f32]| -> f64 {
        g.iter()
            .take(NDCG_AT)
            .enumerate()
            .map(|(i, y)| (2f64.powf(*y as f64) - 1.0) / ((i + 2) as f64).log2())
            .sum()
    };
    let mut ideal = grades.to_vec();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg = dcg(&ideal);
    (idcg > 0.0).then(|| dcg(order) / idcg)
}

/// The candidates' grades in the order of `score` descending, ties by id ascending.
fn ranked_grades(cands: &[(&str, f32, f64)]) -> Vec<f32> {
    let mut v: Vec<&(&str, f32, f64)> = cands.iter().collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(b.0)));
    v.iter().map(|c| c.1).collect()
}

/// One example mapped to the current feature names.
struct Query {
    key: u64,
    ids: Vec<String>,
    y: Vec<f32>,
    rrf: Vec<f64>,
    x: Vec<Vec<f32>>,
}

fn remap(key: u64, e: &Example, names: &[String]) -> Query {
    let pos: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let map: Vec<Option<usize>> = e
        .names
        .iter()
        .map(|n| pos.get(n.as_str()).copied())
        .collect();
    let mut q = Query {
        key,
        ids: Vec::with_capacity(e.cands.len()),
        y: Vec::with_capacity(e.cands.len()),
        rrf: Vec::with_capacity(e.cands.len()),
        x: Vec::with_capacity(e.cands.len()),
    };
    for c in &e.cands {
        let mut x = vec![0f32; names.len()];
        for (j, v) in c.x.iter().enumerate() {
            if let Some(Some(p)) = map.get(j) {
                x[*p] = *v;
            }
        }
        q.ids.push(c.id.clone());
        q.y.push(c.y);
        q.rrf.push(c.rrf);
        q.x.push(x);
    }
    q
}

/// Solves `a · s = g` for a symmetric positive definite `a` (n × n, row-major) by Cholesky.
fn solve_spd(mut a: Vec<f64>, mut g: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = g[i];
        for k in 0..i {
            s -= a[i * n + k] * g[k];
        }
        g[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = g[i];
        for k in i + 1..n {
            s -= a[k * n + i] * g[k];
        }
        g[i] = s / a[i * n + i];
    }
    Some(g)
}

/// Fits the pairwise logistic model on `train`; returns raw-space weights.
fn fit(train: &[&Query], d: usize) -> (Vec<f64>, usize) {
    // Standardisation over the training candidates.
    let mut mean = vec![0f64; d];
    let mut n = 0f64;
    for q in train {
        for x in &q.x {
            for (m, v) in mean.iter_mut().zip(x) {
                *m += *v as f64;
            }
            n += 1.0;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1.0));
    let mut sd = vec![0f64; d];
    for q in train {
        for x in &q.x {
            for ((s, v), m) in sd.iter_mut().zip(x).zip(&mean) {
                *s += (*v as f64 - m).powi(2);
            }
        }
    }
    let sd: Vec<f64> = sd.iter().map(|s| (s / n.max(1.0)).sqrt()).collect();
    // Pair differences (standardised; a constant feature contributes nothing).
    let pairs_max = PAIRS_MAX.min(WORK_MAX / (d * d).max(1)).max(1000);
    let mut pairs: Vec<Vec<f64>> = Vec::new();
    let per_query = PAIRS_PER_QUERY_MAX
        .min(pairs_max / train.len().max(1))
        .max(8);
    for q in train {
        let mut qp: Vec<(usize, usize)> = Vec::new();
        for i in 0..q.y.len() {
            for j in 0..q.y.len() {
                if q.y[i] > q.y[j] {
                    qp.push((i, j));
                }
            }
        }
        let stride = qp.len().div_ceil(per_query).max(1);
        for &(i, j) in qp.iter().step_by(stride) {
            pairs.push(
                (0..d)
                    .map(|k| {
                        if sd[k] > 1e-12 {
                            (q.x[i][k] as f64 - q.x[j][k] as f64) / sd[k]
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            );
        }
    }
    let mut w = vec![0f64; d];
    for _ in 0..NEWTON_ITERATIONS {
        let mut g: Vec<f64> = w.iter().map(|w| L2 * w).collect();
        let mut h = vec![0f64; d * d];
        for k in 0..d {
            h[k * d + k] = L2;
        }
        for p in &pairs {
            let m: f64 = w.iter().zip(p).map(|(w, x)| w * x).sum();
            let s = 1.0 / (1.0 + m.exp()); // σ(−m)
            let c = s * (1.0 - s);
            for a in 0..d {
                if p[a] == 0.0 {
                    continue;
                }
                g[a] -= s * p[a];
                let ca = c * p[a];
                for b in 0..=a {
                    h[a * d + b] += ca * p[b];
                }
            }
        }
        for a in 0..d {
            for b in 0..a {
                h[b * d + a] = h[a * d + b];
            }
        }
        let Some(step) = solve_spd(h, g, d) else {
            break;
        };
        let mut biggest = 0f64;
        for (w, s) in w.iter_mut().zip(&step) {
            *w -= s;
            biggest = biggest.max(s.abs());
        }
        if biggest < 1e-7 {
            break;
        }
    }
    let raw = w
        .iter()
        .zip(&sd)
        .map(|(w, s)| if *s > 1e-12 { w / s } else { 0.0 })
        .collect();
    (raw, pairs.len())
}

/// Trains on `examples` (by key) over the feature `names`; the model is returned only when it
/// beats RRF on the validation queries.
pub(crate) fn train(examples: &[(u64, Arc<Example>)], names: &[String]) -> (Option<Model>, Report) {
    let started = Instant::now();
    let mut queries: Vec<Query> = examples
        .iter()
        .map(|(k, e)| remap(*k, e, names))
        .filter(|q| {
            let top = q.y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            top > 0.0 && q.y.iter().any(|y| *y < top)
        })
        .collect();
    let usable = queries.len();
    let mut report = Report {
        at: format_datetime(crate::doc::now_ms()),
        took_ms: 0,
        examples: examples.len(),
        usable_examples: usable,
        train_queries: 0,
        validation_queries: 0,
        pairs: 0,
        validation_ndcg10_model: None,
        validation_ndcg10_rrf: None,
        t_statistic: None,
        active: false,
        decision: String::new(),
    };
    if usable < MIN_EXAMPLES {
        report.decision = format!(
            "rrf: {usable} usable feedback examples (a relevant and a less relevant candidate); training starts at {MIN_EXAMPLES}"
        );
        return (None, report);
    }
    queries.sort_by_key(|q| xxhash_rust::xxh3::xxh3_64(&q.key.to_le_bytes()));
    let n_val = (usable / 5).max(VALIDATION_MIN);
    let (val, train) = queries.split_at(n_val);
    let train: Vec<&Query> = train.iter().collect();
    let (w, pairs) = fit(&train, names.len());
    let model = Model {
        names: names.to_vec(),
        w,
    };
    let mut diffs = Vec::new();
    let (mut sum_m, mut sum_r) = (0.0, 0.0);
    for q in val {
        let by_model: Vec<(&str, f32, f64)> = (0..q.ids.len())
            .map(|i| (q.ids[i].as_str(), q.y[i], model.score(&q.x[i])))
            .collect();
        let by_rrf: Vec<(&str, f32, f64)> = (0..q.ids.len())
            .map(|i| (q.ids[i].as_str(), q.y[i], q.rrf[i]))
            .collect();
        let (Some(m), Some(r)) = (
            ndcg_at_10(&ranked_grades(&by_model), &q.y),
            ndcg_at_10(&ranked_grades(&by_rrf), &q.y),
        ) else {
            continue;
        };
        sum_m += m;
        sum_r += r;
        diffs.push(m - r);
    }
    let k = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / k;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (k - 1.0).max(1.0)).sqrt();
    let t = if sd > 0.0 {
        mean / (sd / k.sqrt())
    } else if mean > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    let active = mean > 0.0 && t >= T_MIN;
    report.train_queries = train.len();
    report.validation_queries = diffs.len();
    report.pairs = pairs;
    report.validation_ndcg10_model = Some(sum_m / k);
    report.validation_ndcg10_rrf = Some(sum_r / k);
    report.t_statistic = t.is_finite().then_some(t);
    report.active = active;
    report.decision = if active {
        format!(
            "learned model: validation nDCG@10 {:.4} vs rrf {:.4} (paired t {:.1} ≥ {T_MIN})",
            sum_m / k,
            sum_r / k,
            t
        )
    } else {
        format!(
            "rrf: the model did not beat rrf on validation (nDCG@10 {:.4} vs {:.4}, paired t {:.1} < {T_MIN})",
            sum_m / k,
            sum_r / k,
            t
        )
    };
    report.took_ms = started.elapsed().as_millis() as u64;
    (active.then_some(model), report)
}

/// A collection's feedback store and model.
#[derive(Debug)]
pub(crate) struct Ranker {
    ks: Keyspace,
    examples: Mutex<BTreeMap<u64, Arc<Example>>>,
    next: AtomicU64,
    /// Feedback writes since open, and the count the last training started at (u64::MAX: never).
    writes: AtomicU64,
    trained_at: AtomicU64,
    training: AtomicBool,
    model: RwLock<Option<Arc<Model>>>,
    report: Mutex<Option<Report>>,
}

/// The learned ranking's state, as a collection's info shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RankingInfo {
    /// Why the learned model serves or RRF does.
    pub decision: String,
    /// Feedback examples held.
    pub examples: usize,
    /// Most examples held (the oldest are dropped beyond).
    pub examples_max: usize,
    /// The last training, if any ran.
    pub last_training: Option<Report>,
    /// Examples before the first training.
    pub min_examples: usize,
    /// `learned` or `rrf`.
    pub serving: String,
    /// Whether enough new feedback arrived for a training.
    pub training_due: bool,
    /// The serving model's non-zero weights by feature (null when RRF serves).
    pub weights: Option<BTreeMap<String, f64>>,
}

impl Ranker {
    /// Loads the examples stored in `ks`.
    pub(crate) fn open(ks: Keyspace, collection: &str) -> Result<Ranker> {
        let mut examples = BTreeMap::new();
        for (key, v) in ks.scan(.., usize::MAX)? {
            let e: Example = serde_json::from_slice(&v).map_err(|e| Error::Corrupt {
                collection: format!("{collection} (feedback keyspace {})", ks.name()),
                key,
                reason: e.to_string(),
            })?;
            examples.insert(key, Arc::new(e));
        }
        let next = examples.keys().next_back().map_or(1, |k| k + 1);
        Ok(Ranker {
            ks,
            examples: Mutex::new(examples),
            next: AtomicU64::new(next),
            writes: AtomicU64::new(0),
            trained_at: AtomicU64::new(u64::MAX),
            training: AtomicBool::new(false),
            model: RwLock::new(None),
            report: Mutex::new(None),
        })
    }

    /// The feedback keyspace.
    pub(crate) fn keyspace(&self) -> &Keyspace {
        &self.ks
    }

    /// Stores `e` durably (acknowledged = fsynced by the engine), deleting the oldest examples
    /// beyond [`EXAMPLES_MAX`]. Returns its key and the number of examples.
    pub(crate) fn add(&self, mut e: Example, value_bytes_max: usize) -> Result<(u64, usize)> {
        let value = e.encode(value_bytes_max).ok_or_else(|| {
            bad(
                "labels",
                "the labelled candidates' features do not fit in one stored value; label fewer ids",
            )
        })?;
        let key = self.next.fetch_add(1, Ordering::AcqRel);
        self.ks.put(key, &value)?;
        let mut ex = self.examples.lock();
        ex.insert(key, Arc::new(e));
        while ex.len() > EXAMPLES_MAX {
            let Some((&old, _)) = ex.iter().next() else {
                break;
            };
            ex.remove(&old);
            // Best effort: an undeleted old example is deleted again past the cap next time.
            if let Err(err) = self.ks.delete(old) {
                tracing::warn!(%err, "could not delete an old feedback example");
            }
        }
        let n = ex.len();
        drop(ex);
        self.writes.fetch_add(1, Ordering::AcqRel);
        Ok((key, n))
    }

    /// Whether a (re)training is due.
    pub(crate) fn due(&self) -> bool {
        if self.training.load(Ordering::Acquire) {
            return true;
        }
        let n = self.examples.lock().len();
        let writes = self.writes.load(Ordering::Acquire);
        let at = self.trained_at.load(Ordering::Acquire);
        n >= MIN_EXAMPLES && (at == u64::MAX || writes.saturating_sub(at) >= (n as u64 / 10).max(5))
    }

    /// Trains if due (one training at a time). Returns whether it trained.
    pub(crate) fn train_if_due(&self, names: &[String]) -> bool {
        if !self.due() || self.training.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.trained_at
            .store(self.writes.load(Ordering::Acquire), Ordering::Release);
        let snapshot: Vec<(u64, Arc<Example>)> = self
            .examples
            .lock()
            .iter()
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        let (model, report) = train(&snapshot, names);
        tracing::info!(examples = report.examples, took_ms = report.took_ms, decision = %report.decision, "learned ranking trained");
        metrics::counter!(crate::families::LEARNED_RANKING_TRAININGS_TOTAL.name).increment(1);
        *self.model.write() = model.map(Arc::new);
        *self.report.lock() = Some(report);
        self.training.store(false, Ordering::Release);
        true
    }

    /// The model that serves, if one beat RRF.
    pub(crate) fn model(&self) -> Option<Arc<Model>> {
        self.model.read().clone()
    }

    /// Why RRF serves a `learned_ranking` request, or what serves.
    pub(crate) fn decision(&self) -> String {
        match &*self.report.lock() {
            Some(r) => r.decision.clone(),
            None => {
                let n = self.examples.lock().len();
                format!("rrf: no model trained yet ({n} feedback examples; training starts at {MIN_EXAMPLES})")
            }
        }
    }

    /// The info block: examples, the last training, the serving model's weights.
    pub(crate) fn info(&self) -> RankingInfo {
        let n = self.examples.lock().len();
        let model = self.model();
        RankingInfo {
            decision: self.decision(),
            examples: n,
            examples_max: EXAMPLES_MAX,
            last_training: self.report.lock().clone(),
            min_examples: MIN_EXAMPLES,
            serving: if model.is_some() { "learned" } else { "rrf" }.to_owned(),
            training_due: self.due(),
            weights: model.map(|m| {
                m.names
                    .iter()
                    .cloned()
                    .zip(m.w.iter().copied())
                    .filter(|(_, w)| *w != 0.0)
                    .collect::<BTreeMap<String, f64>>()
            }),
        }
    }
}

/// The candidates of a feedback example: `shown` (when given) or the query's fused candidates,
/// plus every labelled id; ids that are not documents are returned apart.
pub(crate) fn candidate_ids<'a>(
    fb: &'a Feedback,
    fused: impl Iterator<Item = &'a str>,
    exists: impl Fn(&str) -> bool,
) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    let mut missing = Vec::new();
    let labelled = fb.grades.keys().map(String::as_str);
    let base: Box<dyn Iterator<Item = &str>> = if fb.shown.is_empty() {
        Box::new(fused.take(CANDIDATES_STORED_MAX))
    } else {
        Box::new(fb.shown.iter().map(String::as_str))
    };
    for id in labelled.chain(base) {
        if !seen.insert(id) {
            continue;
        }
        if exists(id) {
            out.push(id);
        } else {
            missing.push(id);
        }
    }
    (out, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator.
    struct Lcg(u64);
    impl Lcg {
        fn f(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    fn examples(n: usize, signal: bool, seed: u64) -> Vec<(u64, Arc<Example>)> {
        let mut r = Lcg(seed);
        let names: Vec<String> = ["rrf", "q"].iter().map(|s| s.to_string()).collect();
        (0..n as u64)
            .map(|k| {
                let cands = (0..40)
                    .map(|i| {
                        let rrf = 1.0 / (60.0 + i as f64 + 1.0);
                        let q = r.f();
                        let y = if signal {
                            f32::from(u8::from(q > 0.85))
                        } else {
                            f32::from(u8::from(r.f() > 0.85))
                        };
                        Cand {
                            id: format!("d{i}"),
                            y,
                            rrf,
                            x: vec![(rrf * 60.0) as f32, q],
                        }
                    })
                    .collect();
                (
                    k,
                    Arc::new(Example {
                        at_ms: 0,
                        query: String::new(),
                        names: names.clone(),
                        cands,
                    }),
                )
            })
            .collect()
    }

    #[test]
    fn ndcg_matches_the_definition() {
        // Gains 1, 0, 1 at ranks 1..3: (1 + 1/log2 4) / (1 + 1/log2 3).
        let got = ndcg_at_10(&[1.0, 0.0, 1.0], &[1.0, 0.0, 1.0]).unwrap();
        let want = (1.0 + 1.0 / 4f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((got - want).abs() < 1e-12);
        assert_eq!(ndcg_at_10(&[0.0, 0.0], &[0.0, 0.0]), None);
        assert_eq!(ndcg_at_10(&[2.0, 1.0], &[1.0, 2.0]), Some(1.0));
    }

    #[test]
    fn a_visible_signal_is_learned_and_noise_is_refused() {
        let names: Vec<String> = ["rrf", "q"].iter().map(|s| s.to_string()).collect();
        let (m, r) = train(&examples(100, true, 7), &names);
        let m = m.expect("the model beats rrf when relevance follows feature q");
        assert!(r.active && r.validation_ndcg10_model > r.validation_ndcg10_rrf);
        assert!(m.w[1] > 0.0, "weights {:?}", m.w);
        let (m, r) = train(&examples(100, false, 7), &names);
        assert!(m.is_none(), "noise must not serve: {}", r.decision);
        // Too few examples: no training.
        let (m, r) = train(&examples(MIN_EXAMPLES - 1, true, 7), &names);
        assert!(m.is_none() && r.decision.contains("training starts"));
    }

    #[test]
    fn cholesky_solves() {
        let a = vec![4.0, 2.0, 2.0, 3.0];
        let s = solve_spd(a, vec![2.0, 1.0], 2).unwrap();
        assert!((4.0 * s[0] + 2.0 * s[1] - 2.0).abs() < 1e-12);
        assert!((2.0 * s[0] + 3.0 * s[1] - 1.0).abs() < 1e-12);
    }
}

//! Hybrid search (`POST /v2/search/hybrid`): vector queries, BM25 text, metadata filters and a time
//! range in one request, fused by RRF, weighted min-max or DBSF.
//!
//! Semantics (pinned so results can be checked exactly): the filter and the time range apply to
//! every component before its list is cut at `candidates`; `threshold` drops documents from that
//! vector list before fusion; the fused order is by fused score, then id ascending. A request with
//! only a filter and/or a time range lists the matching documents newest first.

use std::{collections::HashMap, ops::Bound, sync::Arc};

use serde_json::Value;

use crate::{
    doc::{check_vector, kind, parse_datetime},
    error::invalid,
    filter::{Cond, Filter},
    query::{finite, in_range, EF_DEFAULT, EF_MAX, LIMIT_MAX},
    schema::Schema,
    wire::{self, FusionBody, HybridBody, TextFields, TextSearchBody, VectorQueryBody, With},
    Result,
};

/// Candidates per component when none is given.
pub const CANDIDATES_DEFAULT: usize = 100;
/// Largest `candidates`.
pub const CANDIDATES_MAX: usize = 1000;
/// Most vector queries in one request.
pub const VECTOR_QUERIES_MAX: usize = 8;
/// Longest text query, in bytes.
pub const TEXT_QUERY_BYTES_MAX: usize = 4096;
/// RRF's k when none is given.
pub const RRF_K_DEFAULT: f64 = 60.0;

/// One vector query.
#[derive(Debug, Clone)]
pub struct VectorQuery {
    /// The vector field.
    pub using: String,
    /// The query vector (empty until `text` is embedded by the server).
    pub vector: Vec<f32>,
    /// Text to embed with the field's model instead of a vector.
    pub text: Option<String>,
    /// Documents scoring below this leave the list before fusion.
    pub threshold: Option<f32>,
    /// Fusion weight (default 1).
    pub weight: f64,
}

/// The text component.
#[derive(Debug, Clone)]
pub struct TextComponent {
    /// The query (quoted parts are phrases).
    pub query: String,
    /// (text field, boost); empty = every text field, boost 1.
    pub fields: Vec<(String, f32)>,
    /// Fusion weight (default 1).
    pub weight: f64,
}

/// How the component lists are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Σ weight / (k + rank), rank from 1.
    Rrf {
        /// The constant k (default 60).
        k: f64,
    },
    /// Σ weight · (score − min)/(max − min) per list (1 when all scores are equal).
    Weighted,
    /// Σ weight · clamp((score − (μ − 3σ)) / 6σ, 0, 1) per list (1 when σ = 0).
    Dbsf,
    /// `learned_ranking` / `auto_rank`: the collection's model trained from feedback (`rank.rs`)
    /// when one beat RRF on held-out feedback; RRF with k = 60 until then.
    Learned,
}

impl Fusion {
    /// The name in requests and `explain`.
    pub fn name(&self) -> &'static str {
        match self {
            Fusion::Rrf { .. } => "rrf",
            Fusion::Weighted => "weighted",
            Fusion::Dbsf => "dbsf",
            Fusion::Learned => "learned_ranking",
        }
    }
}

/// A resolved time range in epoch ms: `from` inclusive, `to` exclusive, either open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive start.
    pub from: Option<i64>,
    /// Exclusive end.
    pub to: Option<i64>,
}

/// A parsed hybrid request.
#[derive(Debug, Clone)]
pub struct HybridRequest {
    /// Vector queries (several: multi-vector, each its own list).
    pub vectors: Vec<VectorQuery>,
    /// The BM25 component.
    pub text: Option<TextComponent>,
    /// Metadata filter.
    pub filter: Option<Filter>,
    /// Time range on the schema's `timestamp_field`.
    pub time: Option<TimeRange>,
    /// Fusion strategy.
    pub fusion: Fusion,
    /// Each component's list length.
    pub candidates: usize,
    /// Hits wanted.
    pub limit: usize,
    /// Return the plan and each hit's component ranks and scores.
    pub explain: bool,
    /// Score vector components exactly (agreement checks).
    pub exact: bool,
    /// Return fields (default true) / text.
    pub with_fields: bool,
    /// Return the documents' text.
    pub with_text: bool,
    /// The server's time when the request was parsed (relative ranges end here; recency
    /// features count from here).
    pub now_ms: i64,
}

fn bad(path: &str, m: impl Into<String>) -> crate::Error {
    invalid("invalid_query", path, m.into())
}

fn weight(w: Option<f64>, path: &str) -> Result<f64> {
    match w {
        None => Ok(1.0),
        Some(w) if w.is_finite() && w > 0.0 && w <= 1e6 => Ok(w),
        Some(_) => Err(bad(
            &format!("{path}.weight"),
            "a weight is a number in (0, 1e6]",
        )),
    }
}

/// A duration such as `24h`, `30d`, `15m`, `90s`, `2w`, in ms.
fn duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].trim().parse().ok()?;
    let per = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    (n >= 0).then(|| n.checked_mul(per)).flatten()
}

fn parse_time(v: &Value, schema: &Schema, now_ms: i64) -> Result<TimeRange> {
    let p = "temporal_range";
    if schema.timestamp_field.is_none() {
        return Err(bad(
            p,
            "the collection has no timestamp_field (declare one in its schema to filter by time)",
        ));
    }
    let Value::Object(o) = v else {
        return Err(bad(p, format!("expected an object, got {}", kind(v))));
    };
    let mut r = TimeRange {
        from: None,
        to: None,
    };
    let mut relative = false;
    let mut absolute = false;
    for (k, val) in o {
        let kp = format!("{p}.{k}");
        match k.as_str() {
            "from" | "to" => {
                absolute = true;
                if val.is_null() {
                    continue;
                }
                let ms = parse_datetime(val, &kp)?;
                if k == "from" {
                    r.from = Some(ms);
                } else {
                    r.to = Some(ms);
                }
            }
            "last" => {
                relative = true;
                let d = val.as_str().and_then(duration_ms).ok_or_else(|| {
                    bad(&kp, "expected a duration: a whole number and a unit s, m, h, d or w (e.g. \"24h\")")
                })?;
                r.from = Some(now_ms.saturating_sub(d));
            }
            _ if k.starts_with("last_") => {
                // last_7_days, last_24_hours, last_30_minutes, last_2_weeks: true
                relative = true;
                let parts: Vec<&str> = k.splitn(3, '_').collect();
                let unit = match parts.get(2).copied() {
                    Some("seconds") => "s",
                    Some("minutes") => "m",
                    Some("hours") => "h",
                    Some("days") => "d",
                    Some("weeks") => "w",
                    _ => "",
                };
                let d = parts
                    .get(1)
                    .filter(|_| !unit.is_empty())
                    .and_then(|n| duration_ms(&format!("{n}{unit}")))
                    .ok_or_else(|| {
                        bad(&kp, "unknown key (from, to, last, last_N_days / hours / minutes / weeks / seconds)")
                    })?;
                if val != &Value::Bool(true) {
                    return Err(bad(&kp, "expected true"));
                }
                r.from = Some(now_ms.saturating_sub(d));
            }
            _ => {
                return Err(bad(
                    &kp,
                    "unknown key (from, to, last, last_N_days / hours / minutes / weeks / seconds)",
                ))
            }
        }
    }
    if relative && absolute {
        return Err(bad(p, "give either from/to or a relative range, not both"));
    }
    if relative {
        // Relative ranges end now: future-dated documents are excluded.
        r.to = Some(now_ms.saturating_add(1));
    }
    if !relative && !absolute {
        return Err(bad(p, "empty: give from and/or to, last, or last_N_days"));
    }
    Ok(r)
}

impl HybridRequest {
    /// Parses a request against `schema`; relative time ranges end at `now_ms`.
    pub fn parse(v: &Value, schema: &Schema, now_ms: i64) -> Result<HybridRequest> {
        wire::decode::<HybridBody>(v, "invalid_query", "a hybrid search")?.bind(schema, now_ms)
    }

    /// The metadata filter and the time range as one filter.
    pub fn combined_filter(&self, schema: &Schema) -> Option<Filter> {
        let time = self.time.and_then(|t| {
            let field = schema.timestamp_field.clone()?;
            Some(Filter::Cond(Cond::Range {
                field,
                lo: t
                    .from
                    .map_or(Bound::Unbounded, |f| Bound::Included(f as f64)),
                hi: t.to.map_or(Bound::Unbounded, |x| Bound::Excluded(x as f64)),
            }))
        });
        match (self.filter.clone(), time) {
            (None, None) => None,
            (Some(f), None) | (None, Some(f)) => Some(f),
            (Some(f), Some(t)) => Some(Filter::Must(vec![f, t])),
        }
    }

    /// Beam width for a vector component: wide enough that its `candidates` are the exact ones
    /// in nearly every query.
    pub fn ef(&self) -> usize {
        (4 * self.candidates).clamp(EF_DEFAULT, EF_MAX)
    }
}

impl HybridBody {
    /// The collection the request names (before its schema is known).
    pub fn collection(&self) -> Result<&str> {
        self.collection
            .as_deref()
            .ok_or_else(|| bad("collection", "missing (the collection to search)"))
    }

    /// Checks the request against `schema` and yields the hybrid search the engine runs;
    /// relative time ranges end at `now_ms`.
    pub fn bind(self, schema: &Schema, now_ms: i64) -> Result<HybridRequest> {
        let mut vectors = Vec::new();
        if let Some(vs) = self.vector_similarity {
            let items = vs.with_paths("vector_similarity");
            if items.is_empty() || items.len() > VECTOR_QUERIES_MAX {
                return Err(bad(
                    "vector_similarity",
                    format!("1..={VECTOR_QUERIES_MAX} vector queries"),
                ));
            }
            for (item, path) in items {
                vectors.push(item.bind(&path, schema)?);
            }
        }
        let text = match self.text_search {
            None => None,
            Some(TextSearchBody::Query(q)) => Some(TextComponent {
                query: check_text(&q, "text_search")?,
                fields: Vec::new(),
                weight: 1.0,
            }),
            Some(TextSearchBody::Full(t)) => Some(TextComponent {
                query: check_text(&t.query, "text_search.query")?,
                fields: text_fields(t.fields, schema)?,
                weight: weight(t.weight, "text_search")?,
            }),
        };
        if text.is_some() && schema.text_fields.is_empty() {
            return Err(bad("text_search", "the collection has no text_fields"));
        }
        let filter = match self.metadata_filters {
            None | Some(Value::Null) => None,
            Some(f) => Some(Filter::parse(&f, schema, "metadata_filters")?),
        };
        let time = match self.temporal_range {
            None | Some(Value::Null) => None,
            Some(t) => Some(parse_time(&t, schema, now_ms)?),
        };
        let fusion = match self.fusion_strategy {
            None => Fusion::Rrf { k: RRF_K_DEFAULT },
            Some(FusionBody::Name(s)) => parse_fusion(&s, None)?,
            Some(FusionBody::Full(f)) => parse_fusion(&f.strategy, f.k)?,
        };
        let limit = in_range(self.limit, "limit", 10, 1, LIMIT_MAX)?;
        let candidates = in_range(
            self.candidates,
            "candidates",
            CANDIDATES_DEFAULT.max(limit),
            1,
            CANDIDATES_MAX,
        )?;
        if candidates < limit {
            return Err(bad(
                "candidates",
                format!("candidates ({candidates}) must be at least limit ({limit})"),
            ));
        }
        let (mut with_fields, mut with_text) = (true, false);
        if let Some(w) = self.with {
            if let Some(i) = w.iter().position(|x| *x == With::Vectors) {
                return Err(bad(
                    &format!("with[{i}]"),
                    "expected \"fields\" or \"text\" (hybrid hits do not carry vectors)",
                ));
            }
            with_fields = w.contains(&With::Fields);
            with_text = w.contains(&With::Text);
        }
        let req = HybridRequest {
            vectors,
            text,
            filter,
            time,
            fusion,
            candidates,
            limit,
            explain: self.explain.unwrap_or(false),
            exact: self.exact.unwrap_or(false),
            with_fields,
            with_text,
            now_ms,
        };
        if req.vectors.is_empty()
            && req.text.is_none()
            && req.filter.is_none()
            && req.time.is_none()
        {
            return Err(bad(
                "",
                "empty query: give vector_similarity, text_search, metadata_filters or temporal_range",
            ));
        }
        Ok(req)
    }
}

/// The text fields of a BM25 query, each checked to be one of the schema's `text_fields`.
fn text_fields(fields: Option<TextFields>, schema: &Schema) -> Result<Vec<(String, f32)>> {
    let named: Vec<(String, String, f32)> = match fields {
        None => return Ok(Vec::new()),
        Some(TextFields::Names(names)) => names
            .into_iter()
            .enumerate()
            .map(|(i, f)| (format!("text_search.fields[{i}]"), f, 1.0))
            .collect(),
        Some(TextFields::Boosts(boosts)) => {
            let mut out = Vec::with_capacity(boosts.len());
            for (f, b) in boosts {
                let fp = format!("text_search.fields.{f}");
                if !(b.is_finite() && b > 0.0 && b <= 1e6) {
                    return Err(bad(&fp, "a boost is a number in (0, 1e6]"));
                }
                out.push((fp, f, b as f32));
            }
            out
        }
    };
    named
        .into_iter()
        .map(|(fp, f, boost)| {
            if schema.text_fields.contains(&f) {
                Ok((f, boost))
            } else {
                Err(invalid(
                    "unknown_field",
                    fp,
                    format!("{f:?} is not one of the collection's text_fields"),
                ))
            }
        })
        .collect()
}

impl VectorQueryBody {
    /// Checks one vector query (at `path`) against `schema`.
    fn bind(self, path: &str, schema: &Schema) -> Result<VectorQuery> {
        let using = match self.using {
            Some(s) if schema.vectors.contains_key(&s) => s,
            Some(s) => {
                return Err(invalid(
                    "unknown_field",
                    format!("{path}.using"),
                    format!("{s:?} is not a vector field of the collection"),
                ))
            }
            None => {
                let mut embedded = schema.embedded_fields();
                match (
                    self.text.is_some(),
                    schema.sole_vector(),
                    embedded.next(),
                    embedded.next(),
                ) {
                    (_, Some(one), _, _) => one.to_owned(),
                    (true, None, Some((f, _)), None) => f.to_owned(),
                    _ if schema.vectors.is_empty() => {
                        return Err(bad(path, "the collection has no vector fields"))
                    }
                    _ => {
                        return Err(bad(
                            &format!("{path}.using"),
                            "the collection has several vector fields: name one with using",
                        ))
                    }
                }
            }
        };
        let spec = &schema.vectors[&using];
        let (vector, text) = match (self.embedding, self.text) {
            (Some(_), Some(_)) => return Err(bad(path, "give either embedding or text, not both")),
            (Some(e), None) => (
                check_vector(e, spec.dim, spec.metric, &format!("{path}.embedding"))?,
                None,
            ),
            (None, Some(t)) => {
                if spec.embed.is_none() {
                    return Err(bad(
                        &format!("{path}.text"),
                        format!("the vector field {using:?} declares no embed model, so text cannot be embedded for it; send an embedding"),
                    ));
                }
                (Vec::new(), Some(t))
            }
            (None, None) => return Err(bad(path, "missing embedding (or text)")),
        };
        Ok(VectorQuery {
            using,
            vector,
            text,
            threshold: finite(self.threshold, &format!("{path}.threshold"))?,
            weight: weight(self.weight, path)?,
        })
    }
}

fn check_text(q: &str, path: &str) -> Result<String> {
    if q.trim().is_empty() {
        return Err(bad(path, "empty text query"));
    }
    if q.len() > TEXT_QUERY_BYTES_MAX {
        return Err(bad(
            path,
            format!(
                "{} bytes; a text query is at most {TEXT_QUERY_BYTES_MAX}",
                q.len()
            ),
        ));
    }
    Ok(q.to_owned())
}

fn parse_fusion(s: &str, k: Option<f64>) -> Result<Fusion> {
    let f = match s {
        "rrf" => Fusion::Rrf {
            k: match k {
                None => RRF_K_DEFAULT,
                Some(k) if k.is_finite() && (0.0..=1e6).contains(&k) => k,
                Some(_) => return Err(bad("fusion_strategy.k", "k is a number in 0..=1e6")),
            },
        },
        "weighted" => Fusion::Weighted,
        "dbsf" => Fusion::Dbsf,
        // Learned ranking falls back to RRF until a model trained from feedback beats it.
        "learned_ranking" | "auto_rank" => Fusion::Learned,
        other => {
            return Err(bad(
                "fusion_strategy",
                format!("unknown fusion strategy {other:?} (rrf, weighted, dbsf, learned_ranking)"),
            ))
        }
    };
    if k.is_some() && !matches!(f, Fusion::Rrf { .. }) {
        return Err(bad("fusion_strategy.k", "k applies to rrf only"));
    }
    Ok(f)
}

/// One component's ranked list: (id, score), best first.
#[derive(Debug, Clone)]
pub struct ComponentList {
    /// `vector:<field>` (with `#i` when a field is queried twice) or `text`.
    pub name: String,
    /// Fusion weight.
    pub weight: f64,
    /// Best first.
    pub hits: Vec<(Arc<str>, f32)>,
}

/// A fused hit: id, fused score, and (rank from 1, score) in each component that listed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    /// Document id.
    pub id: Arc<str>,
    /// Fused score.
    pub score: f64,
    /// Per component (same order as the lists): rank and score, or None.
    pub parts: Vec<Option<(usize, f32)>>,
}

/// Fuses `lists` by `fusion`; best first, ties by id ascending.
pub fn fuse(lists: &[ComponentList], fusion: Fusion) -> Vec<Fused> {
    let mut by_id: HashMap<Arc<str>, Fused> = HashMap::new();
    for (li, l) in lists.iter().enumerate() {
        let norm = normalizer(&l.hits, fusion);
        for (rank0, (id, score)) in l.hits.iter().enumerate() {
            let e = by_id.entry(id.clone()).or_insert_with(|| Fused {
                id: id.clone(),
                score: 0.0,
                parts: vec![None; lists.len()],
            });
            if e.parts[li].is_some() {
                continue; // an id listed twice in one list counts once, at its best rank
            }
            e.parts[li] = Some((rank0 + 1, *score));
            e.score += l.weight
                * match fusion {
                    Fusion::Rrf { k } => 1.0 / (k + (rank0 + 1) as f64),
                    Fusion::Learned => 1.0 / (RRF_K_DEFAULT + (rank0 + 1) as f64),
                    Fusion::Weighted | Fusion::Dbsf => norm(*score as f64),
                };
        }
    }
    let mut out: Vec<Fused> = by_id.into_values().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    // Postconditions: one entry per id listed anywhere, each with a part per list.
    debug_assert!(out.iter().all(|f| f.parts.len() == lists.len()));
    debug_assert!(out.len() <= lists.iter().map(|l| l.hits.len()).sum::<usize>());
    out
}

fn normalizer(hits: &[(Arc<str>, f32)], fusion: Fusion) -> Box<dyn Fn(f64) -> f64> {
    let scores: Vec<f64> = hits.iter().map(|h| h.1 as f64).collect();
    match fusion {
        Fusion::Rrf { .. } | Fusion::Learned => Box::new(|_| 0.0),
        Fusion::Weighted => {
            let lo = scores.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            Box::new(move |s| if hi > lo { (s - lo) / (hi - lo) } else { 1.0 })
        }
        Fusion::Dbsf => {
            let n = scores.len().max(1) as f64;
            let mean = scores.iter().sum::<f64>() / n;
            let sd = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
            let (lo, hi) = (mean - 3.0 * sd, mean + 3.0 * sd);
            Box::new(move |s| {
                if hi > lo {
                    ((s - lo) / (hi - lo)).clamp(0.0, 1.0)
                } else {
                    1.0
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(name: &str, w: f64, hits: &[(&str, f32)]) -> ComponentList {
        ComponentList {
            name: name.into(),
            weight: w,
            hits: hits.iter().map(|(i, s)| (Arc::from(*i), *s)).collect(),
        }
    }

    #[test]
    fn rrf_sums_weighted_reciprocal_ranks_and_breaks_ties_by_id() {
        let a = list("vector:v", 1.0, &[("x", 0.9), ("y", 0.8), ("z", 0.1)]);
        let b = list("text", 2.0, &[("z", 7.0), ("x", 3.0)]);
        let f = fuse(&[a, b], Fusion::Rrf { k: 60.0 });
        let score = |id: &str| f.iter().find(|h| &*h.id == id).unwrap().score;
        assert!((score("x") - (1.0 / 61.0 + 2.0 / 62.0)).abs() < 1e-12);
        assert!((score("z") - (1.0 / 63.0 + 2.0 / 61.0)).abs() < 1e-12);
        assert!((score("y") - 1.0 / 62.0).abs() < 1e-12);
        assert_eq!(f[0].id.as_ref(), "z");
        assert_eq!(f[0].parts, vec![Some((3, 0.1)), Some((1, 7.0))]);
        // Equal fused scores: id ascending.
        let c = list("a", 1.0, &[("q", 1.0)]);
        let d = list("b", 1.0, &[("p", 1.0)]);
        let f = fuse(&[c, d], Fusion::Rrf { k: 60.0 });
        assert_eq!(f[0].id.as_ref(), "p");
    }

    #[test]
    fn weighted_and_dbsf_normalise_each_list() {
        let a = list("a", 1.0, &[("x", 10.0), ("y", 5.0), ("z", 0.0)]);
        let f = fuse(std::slice::from_ref(&a), Fusion::Weighted);
        assert_eq!(
            f.iter().map(|h| h.score).collect::<Vec<_>>(),
            vec![1.0, 0.5, 0.0]
        );
        // One score only: normalised to 1.
        let one = list("b", 0.5, &[("w", 3.0)]);
        assert_eq!(fuse(&[one], Fusion::Weighted)[0].score, 0.5);
        // DBSF: mean 5, sd = sqrt(50/3); (10 - (5 - 3sd)) / 6sd.
        let f = fuse(&[a], Fusion::Dbsf);
        let sd = (50.0f64 / 3.0).sqrt();
        assert!((f[0].score - (5.0 + 3.0 * sd) / (6.0 * sd)).abs() < 1e-12);
        assert!((f[1].score - 0.5).abs() < 1e-12);
    }

    #[test]
    fn durations_and_relative_ranges() {
        assert_eq!(duration_ms("24h"), Some(86_400_000));
        assert_eq!(duration_ms("30d"), Some(30 * 86_400_000));
        assert_eq!(duration_ms("2w"), Some(14 * 86_400_000));
        assert_eq!(duration_ms("15m"), Some(900_000));
        assert_eq!(duration_ms("h"), None);
        assert_eq!(duration_ms("-3d"), None);
        assert_eq!(duration_ms("3y"), None);
    }
}

//! Hybrid search and feedback: each component's list, then fusion (or learned ranking).

use super::*;
use crate::hybrid::{TextComponent, VectorQuery};
use crate::wire::{ComponentRank, FeedbackResponse, HybridHit, HybridResponse};
use std::collections::BTreeMap;

/// A hit's rank and score in each component that listed it.
type Ranks = BTreeMap<String, ComponentRank>;

/// One ranked list of a hybrid query: it reads the view the whole query reads (so a write cannot
/// land between two components and be in one list and not the other), keeps the documents
/// `filter` allows, and cuts its list at `limit`, best first, with its explain stage.
trait Component {
    /// Its name in fusion and explain (`vector:<field>` or `text`) before numbering repeats.
    fn name(&self) -> String;
    /// Its fusion weight.
    fn weight(&self) -> f64;
    /// Its rows and explain stage.
    fn rows(
        &self,
        c: &Collection,
        st: &State,
        filter: Option<&Filter>,
        req: &HybridRequest,
        cancel: &Cancel,
    ) -> Result<(Vec<(u32, f32)>, Value)>;
}

impl Component for VectorQuery {
    fn name(&self) -> String {
        format!("vector:{}", self.using)
    }

    fn weight(&self) -> f64 {
        self.weight
    }

    fn rows(
        &self,
        c: &Collection,
        st: &State,
        filter: Option<&Filter>,
        req: &HybridRequest,
        cancel: &Cancel,
    ) -> Result<(Vec<(u32, f32)>, Value)> {
        let started = Instant::now();
        let sr = SearchRequest {
            vector: self.vector.clone(),
            text: None,
            using: self.using.clone(),
            filter: filter.cloned(),
            limit: req.candidates,
            ef: req.ef(),
            with_fields: false,
            with_text: false,
            with_vectors: false,
            threshold: self.threshold,
            explain: req.explain,
            exact: req.exact,
        };
        let m = c.env()?.opts.hnsw.m;
        let super::read::VectorRows {
            rows,
            mut plan,
            strategy,
        } = c.vector_rows(st, &sr, m, cancel)?;
        let took = super::read::record_search(strategy, started);
        plan["took_us"] = json!(took.as_micros() as u64);
        let stage = json!({"kind": "vector", "field": self.using, "weight": self.weight,
            "listed": rows.len(), "took_us": took.as_micros() as u64,
            "plan": req.explain.then_some(plan)});
        Ok((rows, stage))
    }
}

impl Component for TextComponent {
    fn name(&self) -> String {
        "text".into()
    }

    fn weight(&self) -> f64 {
        self.weight
    }

    fn rows(
        &self,
        c: &Collection,
        st: &State,
        filter: Option<&Filter>,
        req: &HybridRequest,
        cancel: &Cancel,
    ) -> Result<(Vec<(u32, f32)>, Value)> {
        let t = Instant::now();
        let (rows, stats) = c.text_rows(
            st,
            &self.query,
            &self.fields,
            filter,
            req.candidates,
            cancel,
        )?;
        let stage = json!({"kind": "bm25", "index": "text (block-max WAND)",
            "weight": self.weight, "listed": rows.len(), "segments": stats.segments,
            "postings": stats.postings, "scored": stats.scored,
            "phrase_rejected": stats.phrase_rejected, "strategy": stats.strategy,
            "took_us": t.elapsed().as_micros() as u64});
        Ok((rows, stage))
    }
}

impl Collection {
    /// Each component's list of a hybrid request in the view `st` (vector queries, then text),
    /// each cut at `candidates` after `filter`; with the plan stage of each. A field queried
    /// twice is numbered (`vector:text#2`).
    fn components(
        &self,
        st: &State,
        req: &HybridRequest,
        filter: Option<&Filter>,
        cancel: &Cancel,
    ) -> Result<(Vec<ComponentList>, Vec<Value>)> {
        let parts: Vec<&dyn Component> = req
            .vectors
            .iter()
            .map(|v| v as &dyn Component)
            .chain(req.text.iter().map(|t| t as &dyn Component))
            .collect();
        let mut lists = Vec::with_capacity(parts.len());
        let mut stages = Vec::with_capacity(parts.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for part in parts {
            cancel.check()?;
            let (rows, mut stage) = part.rows(self, st, filter, req, cancel)?;
            let base = part.name();
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            let name = if *n == 1 { base } else { format!("{base}#{n}") };
            stage["component"] = json!(name);
            let hits: Vec<(Arc<str>, f32)> = rows
                .into_iter()
                .filter_map(|(r, score)| Some((st.row(r)?.id.clone(), score)))
                .collect();
            debug_assert!(hits.len() <= req.candidates, "a list is cut at candidates");
            lists.push(ComponentList {
                name,
                weight: part.weight(),
                hits,
            });
            stages.push(stage);
        }
        Ok((lists, stages))
    }

    /// Answers a hybrid search (`hybrid.rs`): each vector query's list and the text list, each cut
    /// at `candidates` after the metadata filter and time range, then fused (`learned_ranking`:
    /// the collection's model over the fused candidates, when one serves — `rank.rs`); with
    /// neither, the matching documents newest first. Vector queries must already hold their
    /// vectors (the server embeds `text` first). The answer is `{"hits": [...], "plan": {...}?}`.
    /// [`Error::Cancelled`] when `cancel` fires first.
    pub fn hybrid(&self, req: &HybridRequest, cancel: &Cancel) -> Result<HybridResponse> {
        let started = Instant::now();
        let schema = self.schema();
        let filter = req.combined_filter(&schema);
        // One view for every component and the fusion.
        let st = self.state.read();
        let (lists, mut stages) = self.components(&st, req, filter.as_ref(), cancel)?;
        cancel.check()?;
        let t = Instant::now();
        let ranked: Vec<(u32, f64, Option<Ranks>)> = if lists.is_empty() {
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
                        lists
                            .iter()
                            .zip(&f.parts)
                            .filter_map(|(l, p)| {
                                p.map(|(rank, score)| {
                                    (l.name.clone(), ComponentRank { rank, score })
                                })
                            })
                            .collect()
                    });
                    Some((row, f.score, parts))
                })
                .take(req.limit)
                .collect()
        };
        let mut hits: Vec<HybridHit> = Vec::with_capacity(ranked.len());
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
            keys.push(row.key);
            hits.push(HybridHit {
                id: row.id.to_string(),
                score,
                fields: req.with_fields.then(|| fields_json(&row.fields)),
                text: None,
                components: parts,
            });
        }
        drop(st);
        if req.with_text {
            let values = self.keyspace.multi_get(&keys)?;
            for (h, v) in hits.iter_mut().zip(values) {
                if let Some(doc) = v.and_then(|v| Document::decode(&v, &schema).ok()) {
                    h.text = Some(json!(doc.text));
                }
            }
        }
        let time_index = req.time.and_then(|_| self.state.read().payload.time_info());
        let took = started.elapsed();
        metrics::histogram!(crate::families::HYBRID_SEARCH_LATENCY_SECONDS.name)
            .record(took.as_secs_f64());
        let mut out = HybridResponse { hits, plan: None };
        if req.explain {
            let time = req.time.map(|t| {
                json!({
                    "field": schema.timestamp_field,
                    "from": t.from.map(crate::doc::format_datetime),
                    "to": t.to.map(crate::doc::format_datetime),
                    "index": time_index,
                })
            });
            out.plan = Some(json!({"candidates": req.candidates, "time_range": time,
                "stages": stages, "took_us": took.as_micros() as u64}));
        }
        Ok(out)
    }

    /// Records feedback on a hybrid search durably (the collection's feedback keyspace): the
    /// query's candidates — `shown` when given, else its fused candidates — plus every labelled
    /// id, each with its grade and its features now; the model retrains in the background. Ids
    /// that are not documents are ignored (and listed); a request with no relevant document
    /// left is refused. [`Error::Cancelled`] (nothing written) when `cancel` fires while the
    /// query runs.
    pub fn feedback(
        &self,
        req: &HybridRequest,
        fb: &Feedback,
        cancel: &Cancel,
    ) -> Result<FeedbackResponse> {
        let schema = self.schema();
        let filter = req.combined_filter(&schema);
        let names = crate::rank::feature_names(&schema);
        let (example, ignored) = {
            // The candidates and their features from one view.
            let st = self.state.read();
            let (lists, _) = self.components(&st, req, filter.as_ref(), cancel)?;
            let fused = fuse(
                &lists,
                crate::hybrid::Fusion::Rrf {
                    k: crate::hybrid::RRF_K_DEFAULT,
                },
            );
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
        let max = self.env.upgrade().map_or(1 << 20, |s| s.value_bytes_max);
        let (key, examples) = self.ranker.add(example, max)?;
        if let Some(s) = self.env.upgrade() {
            s.wake_indexer();
        }
        Ok(FeedbackResponse {
            collection: self.name.clone(),
            example: key,
            candidates,
            relevant,
            ignored_ids: ignored,
            examples,
        })
    }
}

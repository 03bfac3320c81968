//! Reads: documents by id or in key order, vector search (the planner chooses graph or exact per
//! filter), BM25 text search.

use super::*;
use crate::query::planner::{Estimate, Strategy};

impl Collection {
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
    pub(super) fn decode_stored(
        &self,
        key: u64,
        value: &[u8],
        schema: &Schema,
    ) -> Result<Document> {
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

    /// Answers a search (see `query/` for the request and the planner); [`Error::Cancelled`] when
    /// `cancel` fires first (the filter, the graph walk and the exact scans look at it).
    pub fn search(&self, req: &SearchRequest, cancel: &Cancel) -> Result<SearchResponse> {
        cancel.check()?;
        let started = Instant::now();
        let m = self.env()?.opts.hnsw.m;
        let st = self.state.read();
        let VectorRows {
            rows,
            mut plan,
            strategy,
        } = self.vector_rows(&st, req, m, cancel)?;
        let mut out_hits = st.hits(&rows, req.with_fields);
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
        let took = record_search(strategy, started);
        plan["took_us"] = json!(took.as_micros() as u64);
        Ok(SearchResponse {
            hits: out_hits,
            plan: req.explain.then_some(plan),
        })
    }

    /// The rows of a vector search in the view `st` (best first, ties by id, at most
    /// `req.limit`, each scoring at least `req.threshold`), with its plan and strategy. `m` is the
    /// graphs' degree (the planner's cost model reads it).
    pub(super) fn vector_rows(
        &self,
        st: &State,
        req: &SearchRequest,
        m: usize,
        cancel: &Cancel,
    ) -> Result<VectorRows> {
        let (fi, index) = self
            .vectors
            .iter()
            .enumerate()
            .find(|(_, v)| v.name == req.using)
            .expect("the request was bound to this schema");
        if req.vector.len() != index.spec.dim as usize {
            return Err(invalid(
                "invalid_request",
                "vector",
                "the query vector is missing (a text query must be embedded first)",
            ));
        }
        let want = req.limit + 8; // a few more, so ties at the boundary break by id
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
                    Strategy::ExactRequested,
                )
            }
            None => (
                index
                    .hnsw
                    .search_with(&req.vector, want, req.ef, None, cancel)?,
                Strategy::Hnsw,
            ),
            Some(f) => {
                let t = Instant::now();
                let mut bm = st.payload.eval_with(f, cancel)?;
                bm &= &st.has_vector[fi];
                plan["filter_us"] = json!(t.elapsed().as_micros() as u64);
                let est = Estimate::new(bm.len(), candidates, req.ef, m);
                plan["estimated_matches"] = json!(est.matches);
                plan["selectivity"] = json!(est.selectivity);
                plan["cost_exact"] = json!(est.cost_exact);
                plan["cost_graph"] = json!(est.cost_graph.round());
                match est.choose() {
                    Strategy::Empty => (Default::default(), Strategy::Empty),
                    Strategy::ExactFiltered => (
                        index
                            .hnsw
                            .search_exact_with(&req.vector, want, &mut bm.iter(), cancel)?,
                        Strategy::ExactFiltered,
                    ),
                    _ => {
                        let allow = |r: u32| bm.contains(r);
                        let mut ef = req.ef;
                        let mut widenings = 0;
                        let target = want.min(est.matches as usize);
                        loop {
                            let out = index.hnsw.search_with(
                                &req.vector,
                                want,
                                ef,
                                Some(&allow),
                                cancel,
                            )?;
                            if out.hits.len() >= target {
                                plan["widenings"] = json!(widenings);
                                break (out, Strategy::HnswFiltered);
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
                                    Strategy::ExactFallback,
                                );
                            }
                            ef = (ef * 4).min(candidates as usize);
                            widenings += 1;
                        }
                    }
                }
            }
        };
        plan["index_us"] = json!(index_started.elapsed().as_micros() as u64);
        plan["strategy"] = json!(strategy.name());
        plan["ef"] = json!(req.ef);
        plan["visited"] = json!(out.visited);
        plan["exact_scanned"] = json!(out.exact_scanned);
        plan["kernel"] = json!(crate::distance::kernel_name());
        let mut out = out;
        if strategy.walked_graph() {
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
        debug_assert!(hits.windows(2).all(|w| w[0].0 >= w[1].0), "best first");
        let rows = hits.iter().map(|(score, _, r)| (*r, *score)).collect();
        Ok(VectorRows {
            rows,
            plan,
            strategy,
        })
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
        let (rows, stats) = self.text_rows(&st, query, fields, filter, limit, cancel)?;
        Ok((st.hits(&rows, with_fields), stats))
    }

    /// The rows of a BM25 search in the view `st`, best first, at most `limit`.
    pub(super) fn text_rows(
        &self,
        st: &State,
        query: &str,
        fields: &[(String, f32)],
        filter: Option<&Filter>,
        limit: usize,
        cancel: &Cancel,
    ) -> Result<(Vec<(u32, f32)>, TextStats)> {
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
        st.text.search(&q, limit, allowed.as_ref(), &id_of, cancel)
    }
}

/// A vector search's rows (best first) in one view, with its plan and how it was answered.
pub(super) struct VectorRows {
    pub rows: Vec<(u32, f32)>,
    pub plan: Value,
    pub strategy: Strategy,
}

/// Records a vector search's latency and plan in the metrics; its duration.
pub(super) fn record_search(strategy: Strategy, started: Instant) -> std::time::Duration {
    let took = started.elapsed();
    metrics::histogram!(crate::families::SEARCH_LATENCY_SECONDS.name, "plan" => strategy.name())
        .record(took.as_secs_f64());
    metrics::counter!(crate::families::SEARCH_PLANS_TOTAL.name, "plan" => strategy.name())
        .increment(1);
    took
}

pub(super) fn text_boosts(ix: &TextIndex, fields: &[(String, f32)]) -> Result<Vec<(usize, f32)>> {
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

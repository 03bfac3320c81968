//! The rows: ids, fields and the derived indexes of each stored document (`State`), kept in step
//! by the applier.

use super::*;

impl State {
    pub(super) fn row(&self, r: u32) -> Option<&Row> {
        self.rows.get(r as usize)?.as_ref()
    }

    /// Whether row `r`'s document belongs to tenant `t` (the payload index of its tenant field).
    pub(super) fn owned_by(&self, r: u32, t: &crate::Tenant) -> bool {
        self.payload
            .keyword_rows(&t.field, &t.value)
            .is_some_and(|b| b.contains(r))
    }

    /// Up to `limit` rows of `allowed`, newest first: by the timestamp field descending (ties by
    /// id), then rows without a timestamp in reverse write order.
    pub(super) fn newest(
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
    pub(super) fn expand_duplicates(
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
    pub(super) fn hits(&self, rows: &[(u32, f32)], with_fields: bool) -> Vec<Hit> {
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

    pub(super) fn remove_row(&mut self, r: u32, vectors: &[VectorIndex]) {
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

    pub(super) fn put(&mut self, key: u64, seq: u64, doc: Document, vectors: &[VectorIndex]) {
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

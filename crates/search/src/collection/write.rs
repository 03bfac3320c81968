//! Writes: documents parsed against the schema and written through the engine as one batch
//! (upserts, deletes by id or filter), with the tenant checks and quotas of a scoped key.

use super::*;

impl Collection {
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
        let env = self.env()?;
        let opts = &env.opts;
        if docs.len() > opts.documents_per_batch_max {
            return Err(Error::TooMany {
                what: "documents_per_batch_max",
                count: docs.len() as u64,
                max: opts.documents_per_batch_max as u64,
            });
        }
        let values: Vec<Vec<u8>> = docs.iter().map(Document::encode).collect();
        let value_max = env.value_bytes_max;
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
            .map(|v| crate::env::vector_cost(v.len(), opts.hnsw.m))
            .sum();
        env.check_budget(needed)?;
        env.wait_for_indexer()?;
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
            match env.db.write(batch) {
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
        let env = self.env()?;
        if ids.len() > env.opts.documents_per_batch_max * 10 {
            return Err(Error::TooMany {
                what: "ids per delete (10 × documents_per_batch_max)",
                count: ids.len() as u64,
                max: env.opts.documents_per_batch_max as u64 * 10,
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
            match env.db.write(batch) {
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
}

//! Tenants: a collection may declare a keyword field (`"tenant_field": "org"`) naming each
//! document's tenant. A request made for tenant `T` (the server binds API keys to tenants) sees only
//! documents whose field holds `T`: its filters are narrowed by [`Tenant::restrict`] (never widened:
//! the tenant condition is a `must` beside whatever the request asked), its writes are stamped with
//! `T` ([`Tenant::stamp`]), and it cannot replace or delete another tenant's document
//! ([`crate::Collection::upsert_for`], [`crate::Collection::delete_ids_for`] check ownership under
//! the same read lock and sequence-number condition that make the write atomic).

use crate::{
    doc::FieldValue,
    filter::{Cond, Filter},
    Document, Error, Result,
};

/// One tenant of one collection: the collection's tenant field and the tenant's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The collection's `tenant_field`.
    pub field: String,
    /// The tenant.
    pub value: String,
}

impl Tenant {
    /// The condition "the tenant field holds this tenant".
    pub fn filter(&self) -> Filter {
        Filter::Cond(Cond::Keyword {
            field: self.field.clone(),
            any: vec![self.value.clone()],
        })
    }

    /// `f` narrowed to this tenant's documents.
    pub fn restrict(&self, f: Option<Filter>) -> Filter {
        match f {
            None => self.filter(),
            Some(f) => Filter::Must(vec![self.filter(), f]),
        }
    }

    /// Whether `doc` belongs to this tenant (its tenant field holds the tenant).
    pub fn owns(&self, doc: &Document) -> bool {
        matches!(doc.fields.get(&self.field),
            Some(FieldValue::Keyword(v)) if v.contains(&self.value))
    }

    /// Stamps each document with the tenant (its tenant field set to exactly the tenant when
    /// absent); a document naming any other value is refused with its position, nothing changed.
    pub fn stamp(&self, docs: &mut [Document]) -> Result<()> {
        for (i, d) in docs.iter().enumerate() {
            match d.fields.get(&self.field) {
                None => {}
                Some(FieldValue::Keyword(v)) if v.len() == 1 && v[0] == self.value => {}
                Some(_) => {
                    return Err(Error::Tenant(format!(
                        "documents[{i}].fields.{}: this key writes only tenant {:?}; leave the \
                         field out (it is filled in) or give exactly that value",
                        self.field, self.value
                    )))
                }
            }
        }
        for d in docs.iter_mut() {
            d.fields.insert(
                self.field.clone(),
                FieldValue::Keyword(vec![self.value.clone()]),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(org: Option<FieldValue>) -> Document {
        let mut d = Document {
            id: "a".into(),
            text: Default::default(),
            fields: Default::default(),
            vectors: Default::default(),
        };
        if let Some(v) = org {
            d.fields.insert("org".into(), v);
        }
        d
    }

    fn acme() -> Tenant {
        Tenant {
            field: "org".into(),
            value: "acme".into(),
        }
    }

    #[test]
    fn stamping_fills_the_field_and_refuses_other_tenants_whole() {
        let t = acme();
        let mut docs = vec![
            doc(None),
            doc(Some(FieldValue::Keyword(vec!["acme".into()]))),
        ];
        t.stamp(&mut docs).unwrap();
        assert!(docs.iter().all(|d| t.owns(d)));
        for bad in [
            FieldValue::Keyword(vec!["globex".into()]),
            FieldValue::Keyword(vec!["acme".into(), "globex".into()]),
            FieldValue::Keyword(vec![]),
        ] {
            let mut docs = vec![doc(None), doc(Some(bad.clone()))];
            let e = t.stamp(&mut docs).unwrap_err().to_string();
            assert!(e.contains("documents[1].fields.org"), "{e}");
            // Nothing changed: the first document is not stamped either.
            assert!(!t.owns(&docs[0]), "{bad:?}");
        }
    }

    #[test]
    fn restrict_adds_the_tenant_beside_the_request_filter() {
        let t = acme();
        assert_eq!(t.restrict(None), t.filter());
        let other = Filter::Should(vec![]);
        assert_eq!(
            t.restrict(Some(other.clone())),
            Filter::Must(vec![t.filter(), other])
        );
    }
}

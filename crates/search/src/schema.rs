//! Collection schemas: named vector fields, text fields, typed metadata fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{distance::Metric, error::invalid, Result};

/// Documented maxima of a schema.
pub const VECTOR_FIELDS_MAX: usize = 16;
/// Largest vector dimension.
pub const DIM_MAX: u32 = 4096;
/// Most metadata fields per collection.
pub const FIELDS_MAX: usize = 256;
/// Most text fields per collection.
pub const TEXT_FIELDS_MAX: usize = 16;
/// Most stop words a text field may list.
pub const STOP_WORDS_MAX: usize = 1000;
/// Longest field, vector or collection name.
pub const NAME_BYTES_MAX: usize = 64;

/// A collection's schema, as given to `PUT /v2/collections/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Named vector fields.
    #[serde(default)]
    pub vectors: BTreeMap<String, VectorSpec>,
    /// Fields holding text: stored, returned, and full-text indexed (BM25).
    #[serde(default)]
    pub text_fields: Vec<String>,
    /// How text fields are analyzed (language, stemming, stop words); a field not named here gets
    /// the default analyzer (English, Snowball stemming, Lucene's English stop words).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub text_options: BTreeMap<String, crate::text::TextOptions>,
    /// Typed metadata fields, filterable.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldType>,
    /// A datetime field that holds each document's time (`timestamp` in a document fills it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_field: Option<String>,
    /// A keyword field naming each document's tenant: a key bound to a tenant reads only documents
    /// whose field holds its tenant, and its writes are stamped with it (`crate::tenant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_field: Option<String>,
}

/// One vector field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorSpec {
    /// Dimension, 1..=4096.
    pub dim: u32,
    /// `cosine` | `dot` | `l2`.
    pub metric: Metric,
    /// Vectors of this field are made by the server's model from a text field (auto_embed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed: Option<EmbedSpec>,
}

/// Where an embedded vector field's vectors come from: which model (recorded with its version and
/// the sha256 of its weights when the collection is created: model governance) and which text field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedSpec {
    /// Model name (`all-MiniLM-L6-v2`).
    pub model: String,
    /// The text field embedded.
    pub source: String,
    /// The model's version (filled in from the model when the collection is created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// sha256 of the model's weights (filled in when the collection is created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A metadata field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// One string or an array of strings; matched exactly.
    Keyword,
    /// A 64-bit integer within ±2^53.
    Integer,
    /// A finite number.
    Float,
    /// `true` or `false`.
    Bool,
    /// RFC 3339 or integer epoch milliseconds; returned as RFC 3339 UTC with milliseconds.
    Datetime,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= NAME_BYTES_MAX
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Collection names: 1–48 characters from `[A-Za-z0-9_-]`.
pub fn validate_collection_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "invalid_collection_name",
            "name",
            format!("collection name {name:?} must be 1–48 characters from [A-Za-z0-9_-]"),
        ))
    }
}

impl Schema {
    /// Parses and checks a schema.
    pub fn from_json(v: serde_json::Value) -> Result<Schema> {
        if !v.is_object() {
            return Err(invalid("invalid_schema", "", "a schema is a JSON object"));
        }
        // Every shape error names its path (`vectors.text.metric`).
        let s: Schema = serde_path_to_error::deserialize(&v).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            invalid("invalid_schema", path, e.inner().to_string())
        })?;
        s.validate()?;
        Ok(s)
    }

    /// Checks names, dimensions, counts, and that the timestamp field is a datetime field.
    pub fn validate(&self) -> Result<()> {
        let bad = |path: String, m: String| Err(invalid("invalid_schema", path, m));
        if self.vectors.len() > VECTOR_FIELDS_MAX {
            return bad(
                "vectors".into(),
                format!("at most {VECTOR_FIELDS_MAX} vector fields"),
            );
        }
        if self.fields.len() > FIELDS_MAX {
            return bad("fields".into(), format!("at most {FIELDS_MAX} fields"));
        }
        if self.text_fields.len() > TEXT_FIELDS_MAX {
            return bad(
                "text_fields".into(),
                format!("at most {TEXT_FIELDS_MAX} text fields"),
            );
        }
        for (name, spec) in &self.vectors {
            if !valid_name(name) {
                return bad(format!("vectors.{name}"), name_rule());
            }
            if spec.dim == 0 || spec.dim > DIM_MAX {
                return bad(
                    format!("vectors.{name}.dim"),
                    format!("dim must be 1..={DIM_MAX}, got {}", spec.dim),
                );
            }
            if let Some(e) = &spec.embed {
                if !self.text_fields.contains(&e.source) {
                    return bad(
                        format!("vectors.{name}.embed.source"),
                        format!("{:?} is not one of the collection's text_fields", e.source),
                    );
                }
            }
        }
        for (i, t) in self.text_fields.iter().enumerate() {
            if !valid_name(t) {
                return bad(format!("text_fields[{i}]"), name_rule());
            }
            if self.text_fields[..i].contains(t) {
                return bad(
                    format!("text_fields[{i}]"),
                    format!("{t:?} is listed twice"),
                );
            }
            if self.fields.contains_key(t) {
                return bad(
                    format!("text_fields[{i}]"),
                    format!("{t:?} is also a metadata field"),
                );
            }
        }
        for (name, o) in &self.text_options {
            if !self.text_fields.contains(name) {
                return bad(
                    format!("text_options.{name}"),
                    format!("{name:?} is not one of the collection's text_fields"),
                );
            }
            if let Some(words) = &o.stop_words {
                if words.len() > STOP_WORDS_MAX || words.iter().any(|w| w.len() > 64) {
                    return bad(
                        format!("text_options.{name}.stop_words"),
                        format!("at most {STOP_WORDS_MAX} stop words of at most 64 bytes each"),
                    );
                }
            }
        }
        for name in self.fields.keys() {
            if !valid_name(name) {
                return bad(format!("fields.{name}"), name_rule());
            }
        }
        if let Some(ts) = &self.timestamp_field {
            match self.fields.get(ts) {
                Some(FieldType::Datetime) => {}
                Some(_) => {
                    return bad(
                        "timestamp_field".into(),
                        format!("{ts:?} must be a datetime field"),
                    )
                }
                None => {
                    return bad(
                        "timestamp_field".into(),
                        format!("{ts:?} is not in fields (declare it as \"datetime\")"),
                    )
                }
            }
        }
        if let Some(t) = &self.tenant_field {
            match self.fields.get(t) {
                Some(FieldType::Keyword) => {}
                Some(_) => {
                    return bad(
                        "tenant_field".into(),
                        format!("{t:?} must be a keyword field"),
                    )
                }
                None => {
                    return bad(
                        "tenant_field".into(),
                        format!("{t:?} is not in fields (declare it as \"keyword\")"),
                    )
                }
            }
        }
        Ok(())
    }

    /// Vector fields whose vectors the server's model makes.
    pub fn embedded_fields(&self) -> impl Iterator<Item = (&str, &EmbedSpec)> {
        self.vectors
            .iter()
            .filter_map(|(n, s)| Some((n.as_str(), s.embed.as_ref()?)))
    }

    /// Each text field with its analyzer options, in `text_fields` order.
    pub fn text_analysis(&self) -> Vec<(String, crate::text::TextOptions)> {
        self.text_fields
            .iter()
            .map(|f| {
                (
                    f.clone(),
                    self.text_options.get(f).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The only vector field, if there is exactly one.
    pub fn sole_vector(&self) -> Option<&str> {
        (self.vectors.len() == 1).then(|| self.vectors.keys().next().map(String::as_str))?
    }
}

fn name_rule() -> String {
    format!("names are 1–{NAME_BYTES_MAX} characters from [A-Za-z0-9_.-]")
}

//! Documents: parsed and checked against a schema, encoded as one storage value, decoded back.
//!
//! Value layout (version 1, little-endian): `u8 version, u32 id_len, id, u32 meta_len, meta (JSON:
//! {"text": {..}, "fields": {..}} with datetimes as epoch ms), u16 vector_count, then per vector
//! u16 name_len, name, u32 dim, dim × f32`. See docs/design/search.md.

use std::collections::BTreeMap;

use kyrodb_storage::codec::{ReadError, Reader};
use serde_json::{Map, Value};

pub(crate) use crate::error::kind;
use crate::{
    distance::Metric,
    error::invalid,
    schema::{FieldType, Schema},
    wire::{decode_with, DocumentBody, DocumentText},
    Result,
};

/// Longest document id, in bytes.
pub const ID_BYTES_MAX: usize = 256;
/// Most text bytes per document (all text fields together).
pub const TEXT_BYTES_MAX: usize = 256 << 10;
/// Most values in one keyword field.
pub const KEYWORD_VALUES_MAX: usize = 256;
/// Longest keyword value, in bytes.
pub const KEYWORD_BYTES_MAX: usize = 1024;
/// Integers are exact within ±2^53 (they share the numeric index with floats).
pub const INTEGER_ABS_MAX: i64 = 1 << 53;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// One or more strings.
    Keyword(Vec<String>),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Epoch milliseconds.
    Datetime(i64),
}

impl FieldValue {
    /// The value on the numeric axis, for range indexes.
    pub fn number(&self) -> Option<f64> {
        match self {
            FieldValue::Integer(i) | FieldValue::Datetime(i) => Some(*i as f64),
            FieldValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// As stored (datetimes as epoch ms).
    fn to_stored(&self) -> Value {
        match self {
            FieldValue::Keyword(v) if v.len() == 1 => Value::String(v[0].clone()),
            FieldValue::Keyword(v) => Value::Array(v.iter().cloned().map(Value::String).collect()),
            FieldValue::Integer(i) | FieldValue::Datetime(i) => Value::from(*i),
            FieldValue::Float(f) => Value::from(*f),
            FieldValue::Bool(b) => Value::Bool(*b),
        }
    }

    /// As returned (datetimes as RFC 3339 UTC with milliseconds).
    pub fn to_json(&self) -> Value {
        match self {
            FieldValue::Datetime(ms) => Value::String(format_datetime(*ms)),
            other => other.to_stored(),
        }
    }
}

/// Metadata fields by name.
pub type Fields = BTreeMap<String, FieldValue>;

/// A document checked against its collection's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The id.
    pub id: String,
    /// Text by text field.
    pub text: BTreeMap<String, String>,
    /// Metadata.
    pub fields: Fields,
    /// Vectors by vector field.
    pub vectors: BTreeMap<String, Vec<f32>>,
}

/// A stored document as the API returns it (`GET /v2/collections/{name}/documents/{id}`, a page of
/// the document list): the parts asked for. Keys in alphabetical order, as always.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    /// Metadata by field (datetimes as RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Value>,
    /// The id.
    pub id: String,
    /// Text by text field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<BTreeMap<String, String>>,
    /// Vectors by vector field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vectors: Option<BTreeMap<String, Vec<f32>>>,
}

/// `auto_embed` (only with an embedded field, and not together with that field's vector) and
/// `vector_models` (`{field: model}`: where given vectors came from; a field embedded with another
/// model refuses them — model governance).
fn check_embedding(
    auto_embed: Option<bool>,
    vector_models: Option<&BTreeMap<String, String>>,
    schema: &Schema,
    vectors: &BTreeMap<String, Vec<f32>>,
    p: &dyn Fn(&str) -> String,
) -> Result<()> {
    if auto_embed == Some(true) {
        if schema.embedded_fields().next().is_none() {
            return Err(invalid(
                "invalid_document",
                p("auto_embed"),
                "no vector field of the collection declares embed {model, source}",
            ));
        }
        if let Some((name, _)) = schema
            .embedded_fields()
            .find(|(n, _)| vectors.contains_key(*n))
        {
            return Err(invalid(
                "invalid_document",
                p(&format!("vectors.{name}")),
                "give either this vector or auto_embed: true, not both",
            ));
        }
    }
    for (k, model) in vector_models.into_iter().flatten() {
        let vp = p(&format!("vector_models.{k}"));
        let Some(spec) = schema.vectors.get(k) else {
            return Err(invalid(
                "unknown_field",
                vp,
                "not a vector field of the collection",
            ));
        };
        if let Some(e) = &spec.embed {
            if *model != e.model {
                return Err(invalid(
                    "model_mismatch",
                    vp,
                    format!(
                        "the field is embedded with {} (version {}); vectors from {model:?} are refused",
                        e.model,
                        e.version.as_deref().unwrap_or("unknown")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a document id: 1–256 bytes of UTF-8 without control characters.
pub fn check_id(id: &str, path: &str) -> Result<()> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(invalid(
            "invalid_id",
            path,
            format!("ids are 1–{ID_BYTES_MAX} bytes, got {}", id.len()),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid(
            "invalid_id",
            path,
            "ids may not contain control characters",
        ));
    }
    Ok(())
}

/// Parses RFC 3339 or integer epoch milliseconds.
pub fn parse_datetime(v: &Value, path: &str) -> Result<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .filter(|ms| ms.unsigned_abs() <= INTEGER_ABS_MAX.unsigned_abs())
            .ok_or_else(|| invalid("invalid_datetime", path, "epoch milliseconds must be an integer within ±2^53")),
        Value::String(s) => parse_rfc3339(s).ok_or_else(|| {
            invalid(
                "invalid_datetime",
                path,
                format!("{s:?} is not an RFC 3339 time (e.g. 2025-03-01T12:00:00Z) or epoch milliseconds"),
            )
        }),
        _ => Err(invalid(
            "invalid_datetime",
            path,
            "a datetime is an RFC 3339 string or integer epoch milliseconds",
        )),
    }
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The wall clock in epoch milliseconds (0 before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 UTC with milliseconds (`2025-03-01T12:00:00.000Z`).
pub fn format_datetime(ms: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Parses one metadata value of type `ty`.
pub fn parse_field(ty: FieldType, v: &Value, path: &str) -> Result<FieldValue> {
    let wrong = |want: &str| {
        invalid(
            "invalid_field_type",
            path,
            format!("expected {want}, got {}", kind(v)),
        )
    };
    Ok(match ty {
        FieldType::Keyword => {
            let one = |v: &Value, p: &str| -> Result<String> {
                let s = v.as_str().ok_or_else(|| {
                    invalid(
                        "invalid_field_type",
                        p,
                        format!("expected a string, got {}", kind(v)),
                    )
                })?;
                if s.len() > KEYWORD_BYTES_MAX {
                    return Err(invalid(
                        "invalid_field_type",
                        p,
                        format!("keyword values are at most {KEYWORD_BYTES_MAX} bytes"),
                    ));
                }
                Ok(s.to_owned())
            };
            match v {
                Value::String(_) => FieldValue::Keyword(vec![one(v, path)?]),
                Value::Array(a) => {
                    if a.len() > KEYWORD_VALUES_MAX {
                        return Err(invalid(
                            "invalid_field_type",
                            path,
                            format!("at most {KEYWORD_VALUES_MAX} values"),
                        ));
                    }
                    let mut out = a
                        .iter()
                        .enumerate()
                        .map(|(i, x)| one(x, &format!("{path}[{i}]")))
                        .collect::<Result<Vec<_>>>()?;
                    out.sort();
                    out.dedup();
                    FieldValue::Keyword(out)
                }
                _ => return Err(wrong("a string or an array of strings")),
            }
        }
        FieldType::Integer => FieldValue::Integer(
            v.as_i64()
                .filter(|i| i.unsigned_abs() <= INTEGER_ABS_MAX.unsigned_abs())
                .ok_or_else(|| wrong("an integer within ±2^53"))?,
        ),
        FieldType::Float => FieldValue::Float(
            v.as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| wrong("a finite number"))?,
        ),
        FieldType::Bool => FieldValue::Bool(v.as_bool().ok_or_else(|| wrong("true or false"))?),
        FieldType::Datetime => FieldValue::Datetime(parse_datetime(v, path)?),
    })
}

/// Parses a vector: `dim` finite numbers (and, for cosine, not all zero).
pub fn parse_vector(v: &Value, dim: u32, metric: Metric, path: &str) -> Result<Vec<f32>> {
    let Value::Array(a) = v else {
        return Err(invalid(
            "invalid_vector",
            path,
            format!("a vector is an array of {dim} numbers, got {}", kind(v)),
        ));
    };
    check_dim(a.len(), dim, path)?;
    let mut out = Vec::with_capacity(a.len());
    for (i, x) in a.iter().enumerate() {
        match x.as_f64().map(|f| f as f32).filter(|f| f.is_finite()) {
            Some(f) => out.push(f),
            None => return Err(not_finite(path, i)),
        }
    }
    check_norm(&out, metric, path)?;
    Ok(out)
}

/// Checks a vector already decoded as numbers (a wire type's): `dim` components, each finite (a
/// JSON number past f32's range decodes to infinity), a norm the metric can score.
pub fn check_vector(v: Vec<f32>, dim: u32, metric: Metric, path: &str) -> Result<Vec<f32>> {
    check_dim(v.len(), dim, path)?;
    if let Some(i) = v.iter().position(|f| !f.is_finite()) {
        return Err(not_finite(path, i));
    }
    check_norm(&v, metric, path)?;
    Ok(v)
}

fn check_dim(len: usize, dim: u32, path: &str) -> Result<()> {
    if len == dim as usize {
        return Ok(());
    }
    Err(invalid(
        "dimension_mismatch",
        path,
        format!("expected {dim} dimensions, got {len}"),
    ))
}

fn not_finite(path: &str, i: usize) -> crate::Error {
    invalid(
        "invalid_vector",
        format!("{path}[{i}]"),
        "vector components must be finite numbers (no NaN, Infinity, strings or null)",
    )
}

/// Largest squared norm of a vector, 2^124 (≈ 2.1e37): the dot product and the squared L2
/// distance of two such vectors stay finite in f32, so no score overflows.
pub const SQUARED_NORM_MAX: f64 = (1u128 << 124) as f64;
/// Smallest squared norm of a cosine vector, `f32::MIN_POSITIVE` = 2^-126 (≈ 1.2e-38): the norm is
/// computed in f32 when the vector is normalised, and below this it may underflow to 0.
pub const COSINE_SQUARED_NORM_MIN: f64 = f32::MIN_POSITIVE as f64;

/// Refuses a vector whose squared norm (summed in f64) is over [`SQUARED_NORM_MAX`] or, for
/// cosine, under [`COSINE_SQUARED_NORM_MIN`] (zero included): such a vector cannot be normalised
/// in f32 or would score ±∞. `path` names the field.
fn check_norm(v: &[f32], metric: Metric, path: &str) -> Result<()> {
    let sq = crate::distance::squared_norm(v);
    let problem = if sq > SQUARED_NORM_MAX {
        format!("its squared norm is {sq:.3e}, over the maximum of 2^124 (~2.1e37): scores computed in f32 would overflow")
    } else if metric == Metric::Cosine && sq == 0.0 {
        "a cosine vector must not be all zeros".to_owned()
    } else if metric == Metric::Cosine && sq < COSINE_SQUARED_NORM_MIN {
        format!("its squared norm is {sq:.3e}, under the minimum of 2^-126 (~1.2e-38) for a cosine vector: it cannot be normalised in f32")
    } else {
        return Ok(());
    };
    Err(invalid("invalid_vector", path, problem))
}

impl DocumentBody {
    /// Checks the document against `schema` and yields what is stored; `p` turns a key's path
    /// into the request's (`documents[3].fields.rank`).
    pub fn bind(self, schema: &Schema, p: &dyn Fn(&str) -> String) -> Result<Document> {
        let Some(id) = self.id else {
            return Err(invalid("invalid_id", p("id"), "missing id"));
        };
        check_id(&id, &p("id"))?;

        let mut text = BTreeMap::new();
        match self.text {
            None => {}
            Some(DocumentText::One(s)) => match schema.text_fields.as_slice() {
                [one] => {
                    text.insert(one.clone(), s);
                }
                [] => {
                    return Err(invalid(
                        "unknown_field",
                        p("text"),
                        "the collection has no text_fields",
                    ))
                }
                _ => {
                    return Err(invalid(
                        "invalid_document",
                        p("text"),
                        "the collection has several text fields: give an object {field: text}",
                    ))
                }
            },
            Some(DocumentText::Fields(m)) => {
                for (k, v) in m {
                    if !schema.text_fields.contains(&k) {
                        return Err(invalid(
                            "unknown_field",
                            p(&format!("text.{k}")),
                            "not a text field of the collection",
                        ));
                    }
                    if let Some(v) = v {
                        text.insert(k, v);
                    }
                }
            }
        }
        let text_bytes: usize = text.values().map(String::len).sum();
        if text_bytes > TEXT_BYTES_MAX {
            return Err(invalid(
                "document_too_large",
                p("text"),
                format!("{text_bytes} bytes of text; at most {TEXT_BYTES_MAX} (text_bytes_max)"),
            ));
        }

        let mut fields = Fields::new();
        for (k, v) in self.fields.iter().flatten() {
            let fp = p(&format!("fields.{k}"));
            let Some(ty) = schema.fields.get(k) else {
                return Err(invalid(
                    "unknown_field",
                    fp,
                    "not a field of the collection's schema",
                ));
            };
            if v.is_null() {
                continue;
            }
            fields.insert(k.clone(), parse_field(*ty, v, &fp)?);
        }
        if let Some(ts) = self.timestamp.as_ref().filter(|v| !v.is_null()) {
            let Some(tf) = &schema.timestamp_field else {
                return Err(invalid(
                    "unknown_field",
                    p("timestamp"),
                    "the collection has no timestamp_field",
                ));
            };
            let ms = parse_datetime(ts, &p("timestamp"))?;
            match fields.get(tf) {
                Some(FieldValue::Datetime(other)) if *other != ms => {
                    return Err(invalid(
                        "invalid_document",
                        p("timestamp"),
                        format!("timestamp and fields.{tf} are both given and differ"),
                    ))
                }
                _ => {
                    fields.insert(tf.clone(), FieldValue::Datetime(ms));
                }
            }
        }

        let mut vectors = BTreeMap::new();
        if self.vector.is_some() && self.vectors.is_some() {
            return Err(invalid(
                "invalid_document",
                p("vector"),
                "give either vector or vectors, not both",
            ));
        }
        if let Some(v) = self.vector.flatten() {
            let Some(name) = schema.sole_vector() else {
                return Err(invalid(
                    "invalid_document",
                    p("vector"),
                    "`vector` needs a collection with exactly one vector field; use vectors: {field: [..]}",
                ));
            };
            let spec = &schema.vectors[name];
            vectors.insert(
                name.to_owned(),
                check_vector(v, spec.dim, spec.metric, &p("vector"))?,
            );
        }
        for (k, v) in self.vectors.flatten().into_iter().flatten() {
            let vp = p(&format!("vectors.{k}"));
            let Some(spec) = schema.vectors.get(&k) else {
                return Err(invalid(
                    "unknown_field",
                    vp,
                    "not a vector field of the collection",
                ));
            };
            if let Some(v) = v {
                let v = check_vector(v, spec.dim, spec.metric, &vp)?;
                vectors.insert(k, v);
            }
        }
        check_embedding(
            self.auto_embed,
            self.vector_models.as_ref(),
            schema,
            &vectors,
            p,
        )?;
        Ok(Document {
            id,
            text,
            fields,
            vectors,
        })
    }
}

impl Document {
    /// Parses a document (the JSON object of a request) against `schema`: decodes its
    /// [`DocumentBody`] and binds it. `path` prefixes error paths (`documents[3]`). `extra` lists
    /// additional top-level keys the caller handles (`collection` on the stream route).
    pub fn parse(v: &Value, schema: &Schema, path: &str, extra: &[&str]) -> Result<Document> {
        let at = |rel: &str| match (path.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_owned(),
            (false, true) => path.to_owned(),
            (false, false) => format!("{path}.{rel}"),
        };
        let stripped;
        let v = match v {
            Value::Object(o) if extra.iter().any(|k| o.contains_key(*k)) => {
                let mut o = o.clone();
                o.retain(|k, _| !extra.contains(&k.as_str()));
                stripped = Value::Object(o);
                &stripped
            }
            _ => v,
        };
        let body: DocumentBody = decode_with(v, "invalid_document", "a document", |p| {
            if p == "id" {
                Some("invalid_id")
            } else if p.starts_with("text.") {
                Some("invalid_field_type")
            } else if p == "vector" || p.starts_with("vectors.") {
                Some("invalid_vector")
            } else {
                None
            }
        })
        .map_err(|e| match e {
            crate::Error::Invalid {
                code,
                path: rel,
                message,
            } => crate::Error::Invalid {
                code,
                path: at(&rel),
                message,
            },
            other => other,
        })?;
        body.bind(schema, &at)
    }

    /// The (vector field, text) pairs the server's model must embed before this document is
    /// written: every embedded field (`embed` in the schema) the document gives no vector for, whose
    /// source text it has (an empty text is embedded too; no text, no vector).
    pub fn missing_embeddings(&self, schema: &Schema) -> Vec<(String, String)> {
        schema
            .embedded_fields()
            .filter(|(name, _)| !self.vectors.contains_key(*name))
            .filter_map(|(name, e)| Some((name.to_owned(), self.text.get(&e.source)?.clone())))
            .collect()
    }

    /// The storage value.
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::json!({
            "text": self.text,
            "fields": self.fields.iter().map(|(k, v)| (k.clone(), v.to_stored())).collect::<Map<_, _>>(),
        })
        .to_string();
        let vec_bytes: usize = self
            .vectors
            .iter()
            .map(|(k, v)| 6 + k.len() + 4 * v.len())
            .sum();
        let mut out = Vec::with_capacity(11 + self.id.len() + meta.len() + vec_bytes);
        out.push(1);
        out.extend_from_slice(&(self.id.len() as u32).to_le_bytes());
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(meta.as_bytes());
        out.extend_from_slice(&(self.vectors.len() as u16).to_le_bytes());
        for (name, v) in &self.vectors {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out
    }

    /// Decodes a storage value written by [`Document::encode`] for a collection with `schema`.
    /// Fields the schema no longer has are dropped.
    pub fn decode(bytes: &[u8], schema: &Schema) -> Result<Document, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != 1 {
            return Err(DecodeError::at(r.at(), "unknown document version"));
        }
        let n = r.u32()? as usize;
        let id = std::str::from_utf8(r.take(n)?)
            .map_err(|_| DecodeError::at(r.at(), "id is not UTF-8"))?
            .to_owned();
        let n = r.u32()? as usize;
        let meta: Value = serde_json::from_slice(r.take(n)?)
            .map_err(|_| DecodeError::at(r.at(), "metadata is not JSON"))?;
        let mut text = BTreeMap::new();
        if let Some(Value::Object(m)) = meta.get("text") {
            for (k, v) in m {
                if let Some(s) = v.as_str() {
                    text.insert(k.clone(), s.to_owned());
                }
            }
        }
        let mut fields = Fields::new();
        if let Some(Value::Object(m)) = meta.get("fields") {
            for (k, v) in m {
                if let Some(ty) = schema.fields.get(k) {
                    if let Ok(f) = parse_field(*ty, v, k) {
                        fields.insert(k.clone(), f);
                    }
                }
            }
        }
        let count = r.u16()?;
        let mut vectors = BTreeMap::new();
        for _ in 0..count {
            let n = r.u16()? as usize;
            let name = std::str::from_utf8(r.take(n)?)
                .map_err(|_| DecodeError::at(r.at(), "vector name is not UTF-8"))?
                .to_owned();
            let dim = r.u32()? as usize;
            let raw = r.take(
                dim.checked_mul(4)
                    .ok_or_else(|| DecodeError::at(r.at(), "dimension overflows"))?,
            )?;
            let v: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            vectors.insert(name, v);
        }
        if r.at() != bytes.len() {
            return Err(DecodeError::at(r.at(), "trailing bytes"));
        }
        Ok(Document {
            id,
            text,
            fields,
            vectors,
        })
    }

    /// The JSON form returned by the API; `with` chooses `fields`, `text`, `vectors`.
    pub fn to_json(&self, fields: bool, text: bool, vectors: bool) -> Value {
        serde_json::to_value(self.view(fields, text, vectors)).expect("documents serialise")
    }

    /// The document as the API returns it, with the parts asked for.
    pub fn view(&self, fields: bool, text: bool, vectors: bool) -> DocumentView {
        DocumentView {
            fields: fields.then(|| fields_json(&self.fields)),
            id: self.id.clone(),
            text: text.then(|| self.text.clone()),
            vectors: vectors.then(|| self.vectors.clone()),
        }
    }
}

/// Fields as returned by the API.
pub fn fields_json(f: &Fields) -> Value {
    Value::Object(f.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

/// A stored document that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("document value: {reason} at byte {offset}")]
pub struct DecodeError {
    /// Byte offset in the value.
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl DecodeError {
    fn at(offset: usize, reason: &'static str) -> DecodeError {
        DecodeError { offset, reason }
    }
}

impl From<ReadError> for DecodeError {
    fn from(e: ReadError) -> Self {
        DecodeError::at(e.offset(), e.reason())
    }
}

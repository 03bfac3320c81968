//! The search request (`POST /v2/collections/{name}/search`) and its answer.

use serde_json::Value;

use crate::{
    doc::{kind, parse_vector},
    error::invalid,
    filter::Filter,
    schema::Schema,
    Result,
};

/// Most hits per search.
pub const LIMIT_MAX: usize = 1000;
/// Largest `ef`.
pub const EF_MAX: usize = 10_000;
/// `ef` when none is given (at least `limit`).
pub const EF_DEFAULT: usize = 100;

/// A parsed search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The query vector (empty while `text` waits to be embedded).
    pub vector: Vec<f32>,
    /// A text query for an embedded field: the server embeds it into `vector` before searching.
    pub text: Option<String>,
    /// The vector field searched.
    pub using: String,
    /// Only documents matching this.
    pub filter: Option<Filter>,
    /// Hits wanted.
    pub limit: usize,
    /// Beam width.
    pub ef: usize,
    /// Return fields (default true).
    pub with_fields: bool,
    /// Return text.
    pub with_text: bool,
    /// Return vectors.
    pub with_vectors: bool,
    /// Drop hits scoring below this.
    pub threshold: Option<f32>,
    /// Return the plan.
    pub explain: bool,
    /// Score every candidate exactly instead of walking the graph (for recall checks and when the
    /// caller knows the candidate set is small).
    pub exact: bool,
}

/// One hit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    /// Document id.
    pub id: String,
    /// Higher is better.
    pub score: f32,
    /// Metadata, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Value>,
    /// Text, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Value>,
    /// Vectors, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vectors: Option<Value>,
    #[serde(skip)]
    pub(crate) key: u64,
}

/// The answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchResponse {
    /// Best first; ties by id ascending.
    pub hits: Vec<Hit>,
    /// The plan, when `explain` was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Value>,
}

impl SearchRequest {
    /// Parses a request body against `schema`.
    pub fn parse(v: &Value, schema: &Schema) -> Result<SearchRequest> {
        let bad = |p: &str, m: String| invalid("invalid_query", p, m);
        let Value::Object(o) = v else {
            return Err(bad(
                "",
                format!("a search is a JSON object, got {}", kind(v)),
            ));
        };
        for k in o.keys() {
            if !matches!(
                k.as_str(),
                "vector"
                    | "text"
                    | "using"
                    | "filter"
                    | "limit"
                    | "ef"
                    | "with"
                    | "threshold"
                    | "explain"
                    | "exact"
            ) {
                return Err(invalid(
                    "unknown_field",
                    k.as_str(),
                    "unknown key (vector, text, using, filter, limit, ef, with, threshold, explain, exact)",
                ));
            }
        }
        let using = match o.get("using") {
            Some(Value::String(s)) => {
                if !schema.vectors.contains_key(s) {
                    return Err(invalid(
                        "unknown_field",
                        "using",
                        format!("{s:?} is not a vector field of the collection"),
                    ));
                }
                s.clone()
            }
            Some(other) => {
                return Err(bad(
                    "using",
                    format!("expected a vector field name, got {}", kind(other)),
                ))
            }
            None => match schema.sole_vector() {
                Some(s) => s.to_owned(),
                None if schema.vectors.is_empty() => {
                    return Err(bad("using", "the collection has no vector fields".into()))
                }
                None => {
                    return Err(bad(
                        "using",
                        "the collection has several vector fields: name one with using".into(),
                    ))
                }
            },
        };
        let spec = &schema.vectors[&using];
        let (vector, text) = match (o.get("vector"), o.get("text")) {
            (Some(_), Some(_)) => {
                return Err(bad("text", "give either vector or text, not both".into()))
            }
            (Some(v), None) => (parse_vector(v, spec.dim, spec.metric, "vector")?, None),
            (None, Some(Value::String(t))) => {
                if spec.embed.is_none() {
                    return Err(bad(
                        "text",
                        format!("the vector field {using:?} declares no embed model, so a text query cannot be embedded for it; send a vector"),
                    ));
                }
                (Vec::new(), Some(t.clone()))
            }
            (None, Some(other)) => {
                return Err(bad(
                    "text",
                    format!("expected a string, got {}", kind(other)),
                ))
            }
            (None, None) => return Err(bad("vector", "missing query vector (or text)".into())),
        };
        let uint = |k: &str, default: usize, min: usize, max: usize| -> Result<usize> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|n| (min as u64..=max as u64).contains(n))
                    .map(|n| n as usize)
                    .ok_or_else(|| bad(k, format!("expected an integer in {min}..={max}"))),
            }
        };
        let limit = uint("limit", 10, 1, LIMIT_MAX)?;
        let ef = uint("ef", EF_DEFAULT, 1, EF_MAX)?.max(limit);
        let filter = match o.get("filter") {
            None | Some(Value::Null) => None,
            Some(f) => Some(Filter::parse(f, schema, "filter")?),
        };
        let (mut with_fields, mut with_text, mut with_vectors) = (true, false, false);
        if let Some(w) = o.get("with").filter(|w| !w.is_null()) {
            let Value::Array(items) = w else {
                return Err(bad(
                    "with",
                    "expected an array of \"fields\", \"text\", \"vectors\"".into(),
                ));
            };
            with_fields = false;
            for (i, it) in items.iter().enumerate() {
                match it.as_str() {
                    Some("fields") => with_fields = true,
                    Some("text") => with_text = true,
                    Some("vectors") => with_vectors = true,
                    _ => {
                        return Err(bad(
                            &format!("with[{i}]"),
                            "expected \"fields\", \"text\" or \"vectors\"".into(),
                        ))
                    }
                }
            }
        }
        let threshold = match o.get("threshold") {
            None | Some(Value::Null) => None,
            Some(t) => Some(
                t.as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| bad("threshold", "expected a number".into()))?
                    as f32,
            ),
        };
        let flag = |k: &str| match o.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad(k, "expected true or false".into())),
        };
        let explain = flag("explain")?;
        let exact = flag("exact")?;
        Ok(SearchRequest {
            vector,
            text,
            using,
            filter,
            limit,
            ef,
            with_fields,
            with_text,
            with_vectors,
            threshold,
            explain,
            exact,
        })
    }
}

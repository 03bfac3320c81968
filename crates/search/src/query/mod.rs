//! The search request (`POST /v2/collections/{name}/search`) and its answer.

pub mod planner;

use serde_json::Value;

use crate::{
    doc::check_vector,
    error::invalid,
    filter::Filter,
    schema::Schema,
    wire::{self, SearchBody, With},
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
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Hit {
    /// Document id.
    pub id: String,
    /// Higher is better.
    pub score: f32,
    /// Metadata, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Value>,
    /// Text, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub text: Option<Value>,
    /// Vectors, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub vectors: Option<Value>,
    #[serde(skip)]
    pub(crate) key: u64,
}

/// The answer.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// Best first; ties by id ascending.
    pub hits: Vec<Hit>,
    /// The plan, when `explain` was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Value>,
}

impl SearchRequest {
    /// Parses a request body against `schema`: [`SearchBody`] decoded, then bound.
    pub fn parse(v: &Value, schema: &Schema) -> Result<SearchRequest> {
        wire::decode::<SearchBody>(v, "invalid_query", "a search")?.bind(schema)
    }
}

impl SearchBody {
    /// Checks the request against `schema` (the field exists, the vector fits it, numbers are in
    /// range) and yields the search the engine runs.
    pub fn bind(self, schema: &Schema) -> Result<SearchRequest> {
        let bad = |p: &str, m: String| invalid("invalid_query", p, m);
        let using = match self.using {
            Some(s) => {
                if !schema.vectors.contains_key(&s) {
                    return Err(invalid(
                        "unknown_field",
                        "using",
                        format!("{s:?} is not a vector field of the collection"),
                    ));
                }
                s
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
        let (vector, text) = match (self.vector, self.text) {
            (Some(_), Some(_)) => {
                return Err(bad("text", "give either vector or text, not both".into()))
            }
            (Some(v), None) => (check_vector(v, spec.dim, spec.metric, "vector")?, None),
            (None, Some(t)) => {
                if spec.embed.is_none() {
                    return Err(bad(
                        "text",
                        format!("the vector field {using:?} declares no embed model, so a text query cannot be embedded for it; send a vector"),
                    ));
                }
                (Vec::new(), Some(t))
            }
            (None, None) => return Err(bad("vector", "missing query vector (or text)".into())),
        };
        let limit = in_range(self.limit, "limit", 10, 1, LIMIT_MAX)?;
        let ef = in_range(self.ef, "ef", EF_DEFAULT, 1, EF_MAX)?.max(limit);
        let filter = match self.filter {
            None | Some(Value::Null) => None,
            Some(f) => Some(Filter::parse(&f, schema, "filter")?),
        };
        let (with_fields, with_text, with_vectors) = match self.with {
            None => (true, false, false),
            Some(w) => (
                w.contains(&With::Fields),
                w.contains(&With::Text),
                w.contains(&With::Vectors),
            ),
        };
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
            threshold: finite(self.threshold, "threshold")?,
            explain: self.explain.unwrap_or(false),
            exact: self.exact.unwrap_or(false),
        })
    }
}

/// `v` (default `default`) checked to lie in `min..=max`; `path` names it in the error.
pub(crate) fn in_range(
    v: Option<u64>,
    path: &str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize> {
    match v {
        None => Ok(default),
        Some(n) if (min as u64..=max as u64).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(
            "invalid_query",
            path,
            format!("expected an integer in {min}..={max}, got {n}"),
        )),
    }
}

/// A finite score threshold as f32; `path` names it in the error.
pub(crate) fn finite(v: Option<f64>, path: &str) -> Result<Option<f32>> {
    match v {
        None => Ok(None),
        Some(t) if t.is_finite() && (t as f32).is_finite() => Ok(Some(t as f32)),
        Some(t) => Err(invalid(
            "invalid_query",
            path,
            format!("expected a finite number, got {t}"),
        )),
    }
}

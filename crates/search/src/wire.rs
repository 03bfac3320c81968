//! The `/v2` search bodies as clients send them: serde types with `deny_unknown_fields`, decoded
//! with the path of every error kept (`vector_similarity[1].embedding[7]: …`), and described for
//! the OpenAPI document (`ToSchema`). A wire value knows nothing of a collection: its `bind`
//! step (`SearchBody::bind` in `query.rs`, `HybridBody::bind` in `hybrid.rs`) checks it against
//! the collection's schema and yields the query the engine runs.
//!
//! Parts whose shape depends on the schema (a filter, a time range) stay JSON here and are
//! checked by `bind`.

use std::{collections::BTreeMap, fmt, marker::PhantomData};

use serde::{
    de::{value::MapAccessDeserializer, value::SeqAccessDeserializer, DeserializeOwned, Visitor},
    Deserialize, Deserializer, Serialize,
};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    error::{invalid, kind},
    Result,
};

/// `POST /v2/collections/{name}/search`: a vector (or a text embedded with the field's model),
/// an optional filter applied during the search.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// The query vector (as many numbers as the field's dimensions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// A text query, embedded with the field's model (instead of `vector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The vector field searched (default: the collection's only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub using: Option<String>,
    /// Only documents matching this filter (the filter language of docs/api.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Hits wanted, 1..=1000 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Beam width, 1..=10000 (default 100, at least `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub ef: Option<u64>,
    /// What each hit carries besides id and score (default `["fields"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<Vec<With>>,
    /// Drop hits scoring below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Return the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<bool>,
    /// Score every candidate exactly instead of walking the graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
}

/// A part of a document a hit can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum With {
    /// The metadata fields.
    Fields,
    /// The text fields.
    Text,
    /// The vectors (not in hybrid search).
    Vectors,
}

/// `POST /v2/search/hybrid`: vector queries, BM25 text, a metadata filter and a time range in one
/// request, fused into one ranking.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HybridBody {
    /// The collection searched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// One vector query or a list of 1..=8 (each its own ranked list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_similarity: Option<OneOrMany<VectorQueryBody>>,
    /// BM25 full text: a query string, or `{query, fields, weight}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_search: Option<TextSearchBody>,
    /// A filter on the metadata fields (the filter language of docs/api.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata_filters: Option<Value>,
    /// A range on the collection's `timestamp_field`: `{from, to}` (RFC 3339 or epoch ms),
    /// `{last: "24h"}` or `{last_7_days: true}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub temporal_range: Option<Value>,
    /// `rrf` (default, k = 60), `weighted`, `dbsf`, `learned_ranking`, or `{strategy, k}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion_strategy: Option<FusionBody>,
    /// Each component's list length, limit..=1000 (default 100, at least `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub candidates: Option<u64>,
    /// Hits wanted, 1..=1000 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Return the plan and each hit's component ranks and scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<bool>,
    /// Score vector components exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
    /// What each hit carries besides id and score: `fields` (default) and/or `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<Vec<With>>,
}

/// One vector query of a hybrid search.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorQueryBody {
    /// The query vector (`vector` is accepted as another name).
    #[serde(default, alias = "vector", skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// Text embedded with the field's model (instead of `embedding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The vector field (default: the only one, or the only embedded one for `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub using: Option<String>,
    /// Documents scoring below this leave the list before fusion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Fusion weight in (0, 1e6] (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// The BM25 component: a query string (quoted parts are phrases) or the full form.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TextSearchBody {
    /// The query, over every text field with boost 1.
    Query(String),
    /// The query with per-field boosts and a fusion weight.
    Full(TextSearchFull),
}

/// `{query, fields, weight}` of [`TextSearchBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextSearchFull {
    /// The query string.
    pub query: String,
    /// `{field: boost}` or `[field, ..]` (default: every text field, boost 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<TextFields>,
    /// Fusion weight in (0, 1e6] (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// The text fields a BM25 query reads.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TextFields {
    /// Field names, boost 1 each.
    Names(Vec<String>),
    /// Field → boost in (0, 1e6].
    Boosts(BTreeMap<String, f64>),
}

/// How the component lists are fused: a strategy name or `{strategy, k}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum FusionBody {
    /// `rrf`, `weighted`, `dbsf`, `learned_ranking` (or `auto_rank`).
    Name(String),
    /// The strategy with its parameter.
    Full(FusionFull),
}

/// `{strategy, k}` of [`FusionBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FusionFull {
    /// The strategy name.
    pub strategy: String,
    /// RRF's k in 0..=1e6 (rrf only; default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<f64>,
}

/// One value or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values with their paths below `path` (`path` for one, `path[i]` for a list).
    pub fn with_paths(self, path: &str) -> Vec<(T, String)> {
        match self {
            OneOrMany::One(x) => vec![(x, path.to_owned())],
            OneOrMany::Many(xs) => xs
                .into_iter()
                .enumerate()
                .map(|(i, x)| (x, format!("{path}[{i}]")))
                .collect(),
        }
    }
}

/// Deserializes the two-shaped values above by the JSON type they meet, so that errors inside the
/// chosen shape keep their path and message (an untagged derive would say only "did not match").
macro_rules! by_json_type {
    ($ty:ident $(<$g:ident>)?, $expecting:literal, $($method:ident($arg:ident) => $body:expr),+ $(,)?) => {
        impl<'de $(, $g: Deserialize<'de>)?> Deserialize<'de> for $ty $(<$g>)? {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                struct V $(<$g>)? (PhantomData<($($g,)?)>);
                impl<'de $(, $g: Deserialize<'de>)?> Visitor<'de> for V $(<$g>)? {
                    type Value = $ty $(<$g>)?;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    $(by_json_type!(@method $method($arg) => $body);)+
                }
                d.deserialize_any(V(PhantomData))
            }
        }
    };
    (@method str($s:ident) => $body:expr) => {
        fn visit_str<E: serde::de::Error>(self, $s: &str) -> std::result::Result<Self::Value, E> {
            Ok($body)
        }
    };
    (@method map($m:ident) => $body:expr) => {
        fn visit_map<A: serde::de::MapAccess<'de>>(self, $m: A) -> std::result::Result<Self::Value, A::Error> {
            $body
        }
    };
    (@method seq($s:ident) => $body:expr) => {
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, $s: A) -> std::result::Result<Self::Value, A::Error> {
            $body
        }
    };
}

by_json_type!(TextSearchBody, "a query string or {query, fields, weight}",
    str(s) => TextSearchBody::Query(s.to_owned()),
    map(m) => TextSearchFull::deserialize(MapAccessDeserializer::new(m)).map(TextSearchBody::Full),
);
by_json_type!(TextFields, "{field: boost} or [field, ..]",
    seq(s) => Vec::deserialize(SeqAccessDeserializer::new(s)).map(TextFields::Names),
    map(m) => BTreeMap::deserialize(MapAccessDeserializer::new(m)).map(TextFields::Boosts),
);
by_json_type!(FusionBody, "a strategy name or {strategy, k}",
    str(s) => FusionBody::Name(s.to_owned()),
    map(m) => FusionFull::deserialize(MapAccessDeserializer::new(m)).map(FusionBody::Full),
);
by_json_type!(OneOrMany<T>, "an object or a list of them",
    seq(s) => Vec::deserialize(SeqAccessDeserializer::new(s)).map(OneOrMany::Many),
    map(m) => T::deserialize(MapAccessDeserializer::new(m)).map(OneOrMany::One),
);

/// `POST /v2/collections/{name}/feedback`: which results of a search were relevant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// The hybrid search that was run (its body; `collection` may be left out), or its text.
    pub query: FeedbackQuery,
    /// Relevant document ids (grade 1), at most 1,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant: Option<IdList>,
    /// Document id → grade in 0..=10, at most 1,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, f64>>,
    /// The ids the user was shown (unlabelled ones count as grade 0); default: the query's own
    /// candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown: Option<IdList>,
}

/// The search a feedback is about.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum FeedbackQuery {
    /// Its text: a text search over every text field and, with exactly one embedded vector
    /// field, that field's vector query (what `GET /v2/search?q=…&similar_to=…` runs).
    Text(String),
    /// The hybrid search body as sent.
    Search(Box<HybridBody>),
}

/// A list of document ids.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct IdList(pub Vec<String>);

by_json_type!(FeedbackQuery, "the hybrid search that was run (an object) or its text",
    str(s) => FeedbackQuery::Text(s.to_owned()),
    map(m) => HybridBody::deserialize(MapAccessDeserializer::new(m))
        .map(|b| FeedbackQuery::Search(Box::new(b))),
);
by_json_type!(IdList, "an array of document ids",
    seq(s) => Vec::deserialize(SeqAccessDeserializer::new(s)).map(IdList),
);

/// The answer to a hybrid search.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HybridResponse {
    /// Best first: by fused score, then id ascending.
    pub hits: Vec<HybridHit>,
    /// With `"explain": true`: `candidates`, `time_range`, each stage (component lists with their
    /// plans, fusion), `took_us`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Value>,
}

/// One hit of a hybrid search.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HybridHit {
    /// Document id.
    pub id: String,
    /// Fused score (finite); higher is better.
    pub score: f64,
    /// Metadata (unless `with` leaves it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Value>,
    /// Text fields (with `"with": ["text"]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub text: Option<Value>,
    /// With `"explain": true`: the hit's rank and score in each component that listed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<BTreeMap<String, ComponentRank>>,
}

/// A hit's place in one component's list.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct ComponentRank {
    /// From 1.
    pub rank: usize,
    /// The component's own score.
    pub score: f32,
}

/// The answer to a feedback: the example stored.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FeedbackResponse {
    /// The collection.
    pub collection: String,
    /// The example's key in the collection's feedback keyspace.
    pub example: u64,
    /// Candidates recorded with their features.
    pub candidates: usize,
    /// Of them, relevant (grade above 0).
    pub relevant: usize,
    /// Ids that are not documents of the collection (left out).
    pub ignored_ids: Vec<String>,
    /// Examples the collection holds now.
    pub examples: usize,
}

/// The answer to `DELETE /v2/collections/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Dropped {
    /// The collection dropped (its documents are deleted in the background).
    pub dropped: String,
}

/// A document (`POST /v2/collections/{name}/documents`, and a line of `POST /v2/documents/stream`):
/// its id, text, metadata and vectors. Which text, metadata and vector fields may appear, their
/// types and dimensions, are the collection's schema's.
// Shapes only: `DocumentBody::bind` (doc.rs) checks it against the schema and yields the stored
// `Document`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentBody {
    /// The id: 1–256 bytes of UTF-8 without control characters; an upsert replaces the document
    /// with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = true)]
    pub id: Option<String>,
    /// The text: a string (a collection with one text field) or `{field: text}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<DocumentText>,
    /// Metadata by field of the schema's `fields` (types as declared there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fields: Option<BTreeMap<String, Value>>,
    /// The collection's `timestamp_field`: RFC 3339 or epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Datetime>)]
    pub timestamp: Option<Value>,
    /// The vector of a collection with one vector field (instead of `vectors`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<f32>>)]
    pub vector: Option<Option<Vec<f32>>>,
    /// Vectors by vector field.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<BTreeMap<String, Vec<f32>>>)]
    pub vectors: Option<Option<BTreeMap<String, Option<Vec<f32>>>>>,
    /// Compute the embedded fields' vectors from their source text with the server's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_embed: Option<bool>,
    /// Where given vectors came from, `{field: model}`: a field embedded with another model
    /// refuses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_models: Option<BTreeMap<String, String>>,
}

/// A document's text: one string (a collection with one text field), or `{field: text}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum DocumentText {
    /// The text of a collection with one text field.
    One(String),
    /// Text by text field (null: none).
    Fields(BTreeMap<String, Option<String>>),
}

/// A datetime as requests give it (the OpenAPI document's description of one).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Datetime {
    /// RFC 3339 (`2024-05-01T12:00:00Z`).
    Rfc3339(String),
    /// Unix epoch milliseconds, within ±2^53.
    EpochMs(i64),
}

by_json_type!(DocumentText, "a string or {field: text}",
    str(s) => DocumentText::One(s.to_owned()),
    map(m) => BTreeMap::deserialize(MapAccessDeserializer::new(m)).map(DocumentText::Fields),
);

/// A key that is present, even as null: `Some(None)`; absent keys take the field's default
/// (`None`). Tells `"vector": null` (given, empty) from no `vector` at all.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Decodes a wire type from a JSON value (which must be an object: `what` names it in the error).
/// A shape error keeps its path: an unknown key is `unknown_field`, a bad vector component
/// `invalid_vector`, anything else `code`.
pub fn decode<T: DeserializeOwned>(v: &Value, code: &'static str, what: &str) -> Result<T> {
    decode_with(v, code, what, |_| None)
}

/// [`decode`], with a route's own code for errors at some paths (`code_at(path)`; an unknown key
/// is `unknown_field` still).
pub fn decode_with<T: DeserializeOwned>(
    v: &Value,
    code: &'static str,
    what: &str,
    code_at: impl Fn(&str) -> Option<&'static str>,
) -> Result<T> {
    if !v.is_object() {
        return Err(invalid(
            code,
            "",
            format!("{what} is a JSON object, got {}", kind(v)),
        ));
    }
    // Errors are rare: decode without tracking paths (several times faster over a long vector),
    // and decode again with the path tracker only to say where a failure is.
    if let Ok(t) = T::deserialize(v) {
        return Ok(t);
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = path_of(e.path());
        let message = e.inner().to_string();
        let code = if message.starts_with("unknown field") {
            "unknown_field"
        } else if let Some(c) = code_at(&path) {
            c
        } else if in_vector(&path) {
            "invalid_vector"
        } else {
            code
        };
        invalid(code, path, message)
    })
}

/// `a.b[3].c` (serde_path_to_error writes `.` for the root).
fn path_of(p: &serde_path_to_error::Path) -> String {
    let s = p.to_string();
    if s == "." {
        String::new()
    } else {
        s
    }
}

/// Whether `path` points into a vector's components (`vector[3]`, `x[0].embedding[7]`).
fn in_vector(path: &str) -> bool {
    ["vector[", "embedding["]
        .iter()
        .any(|v| path.starts_with(v) || path.contains(&format!(".{v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> (String, String, String) {
        match decode::<HybridBody>(&v, "invalid_query", "a hybrid search") {
            Err(crate::Error::Invalid {
                code,
                path,
                message,
            }) => (code.to_owned(), path, message),
            other => panic!("{v}: {other:?}"),
        }
    }

    #[test]
    fn errors_keep_the_path_and_the_code_of_the_part() {
        assert_eq!(
            err(json!({"vector_similarity": [{"embedding": [1]}, {"embedding": [1, "x"]}]})).0,
            "invalid_vector"
        );
        assert_eq!(
            err(json!({"vector_similarity": [{"embedding": [1]}, {"embedding": [1, "x"]}]})).1,
            "vector_similarity[1].embedding[1]"
        );
        let (code, path, message) = err(json!({"text_search": {"query": "x", "bogus": 1}}));
        assert_eq!(
            (code.as_str(), path.as_str()),
            ("unknown_field", "text_search.bogus")
        );
        assert!(message.contains("fields"), "{message}");
        let (code, path, _) = err(json!({"surprise": 1}));
        assert_eq!(
            (code.as_str(), path.as_str()),
            ("unknown_field", "surprise")
        );
        let (code, path, message) = err(json!({"limit": -1}));
        assert_eq!((code.as_str(), path.as_str()), ("invalid_query", "limit"));
        assert!(message.contains("-1"), "{message}");
        let (_, path, message) = err(json!({"fusion_strategy": 3}));
        assert_eq!(path, "fusion_strategy");
        assert!(message.contains("strategy name"), "{message}");
        let (_, path, _) = err(json!({"with": ["fields", "score"]}));
        assert_eq!(path, "with[1]");
        let (_, path, _) = err(json!({"text_search": {"query": "x", "fields": {"a": "high"}}}));
        assert_eq!(path, "text_search.fields.a");
        assert_eq!(err(json!([1, 2])).1, "");
    }

    #[test]
    fn both_shapes_decode_and_round_trip() {
        for v in [
            json!({"collection": "c", "vector_similarity": {"vector": [1.0, 2.0], "weight": 2.0},
                   "text_search": "a \"b c\"", "fusion_strategy": "dbsf", "with": ["text"]}),
            json!({"collection": "c", "vector_similarity": [{"text": "q", "using": "t"}],
                   "text_search": {"query": "x", "fields": ["title"]},
                   "fusion_strategy": {"strategy": "rrf", "k": 10.0}}),
            json!({"text_search": {"query": "x", "fields": {"title": 2.0}}}),
        ] {
            let b: HybridBody = decode(&v, "invalid_query", "a hybrid search").unwrap();
            let again: HybridBody =
                decode(&serde_json::to_value(&b).unwrap(), "invalid_query", "x").unwrap();
            assert_eq!(b, again, "{v}");
        }
        let b: SearchBody = decode(
            &json!({"vector": [1, 2], "limit": null, "with": ["vectors"]}),
            "invalid_query",
            "a search",
        )
        .unwrap();
        assert_eq!(b.vector, Some(vec![1.0, 2.0]));
        assert_eq!((b.limit, b.with), (None, Some(vec![With::Vectors])));
    }

    /// The bounds the OpenAPI document states are the ones `bind` enforces.
    #[test]
    fn schema_bounds_are_the_checked_bounds() {
        use utoipa::PartialSchema;
        let bound = |s: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>, field: &str| {
            let v = serde_json::to_value(s).unwrap();
            (
                v["properties"][field]["minimum"].as_f64().unwrap() as usize,
                v["properties"][field]["maximum"].as_f64().unwrap() as usize,
            )
        };
        use crate::{
            hybrid::CANDIDATES_MAX,
            query::{EF_MAX, LIMIT_MAX},
        };
        assert_eq!(bound(SearchBody::schema(), "limit"), (1, LIMIT_MAX));
        assert_eq!(bound(SearchBody::schema(), "ef"), (1, EF_MAX));
        assert_eq!(bound(HybridBody::schema(), "limit"), (1, LIMIT_MAX));
        assert_eq!(
            bound(HybridBody::schema(), "candidates"),
            (1, CANDIDATES_MAX)
        );
    }
}

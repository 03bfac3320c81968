//! `/v2`: collections of documents with filtered vector search (kyrodb-search does the work; this
//! module parses HTTP, runs it off the async threads, and shapes the answers).

use crate::error::ErrorCode;
use std::{sync::Arc, time::Instant};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use kyrodb_search::{
    doc::DocumentView,
    wire::{self, HybridBody, SearchBody},
    Cancel, Collection, CollectionInfo, Filter, HybridRequest, Schema, SearchResponse, Tenant,
};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::{extract::JsonBody, AppState};
use crate::error::{ApiError, ErrorBody};

/// A JSON object (schema, document, filter, collection info: see the README's v2 section).
#[derive(Debug, serde::Serialize, serde::Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct AnyObject(pub Map<String, Value>);

/// `{"documents": [doc, …]}`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentsRequest {
    /// The documents to upsert (decoded one by one, so an error names `documents[i]`).
    #[schema(value_type = Vec<kyrodb_search::wire::DocumentBody>)]
    pub documents: Vec<Value>,
}

/// `{"ids": […]}` or `{"filter": {…}}`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// Ids of the documents to delete (give this or `filter`).
    pub ids: Option<Vec<String>>,
    /// Delete every document matching this filter (give this or `ids`).
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
}

/// The answer to a document write.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct UpsertResponse {
    /// Documents written.
    pub upserted: usize,
    /// The write's sequence number; the documents are durable and searchable.
    pub seq: u64,
}

/// The answer to a document delete.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct DeleteResponse {
    /// Documents deleted.
    pub deleted: u64,
    /// Ids given that matched no document (always 0 for a filter).
    pub absent: u64,
}

/// The answer to `GET /v2/collections`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct CollectionList {
    /// Each collection's info: schema, counts and index state.
    pub collections: Vec<CollectionInfo>,
}

impl From<kyrodb_search::Error> for ApiError {
    fn from(e: kyrodb_search::Error) -> Self {
        use kyrodb_search::Error as E;
        let msg = e.to_string();
        match e {
            // Always 400; a code the table lacks (a test rules it out) is sent as invalid_request.
            E::Invalid { code, .. } => ApiError::of_status(
                StatusCode::BAD_REQUEST,
                ErrorCode::from_code(code).unwrap_or(ErrorCode::InvalidRequest),
                msg,
            ),
            E::NoSuchCollection(_) => ApiError::of(ErrorCode::CollectionNotFound, msg),
            E::NoSuchDocument(_) => ApiError::of(ErrorCode::DocumentNotFound, msg),
            E::CollectionExists(_) => ApiError::of(ErrorCode::CollectionExists, msg),
            E::JobRunning { .. } => ApiError::of(ErrorCode::ReembedRunning, msg),
            E::TooMany { .. } => ApiError::of(ErrorCode::TooMany, msg),
            E::MemoryBudget { .. } => ApiError::of(ErrorCode::MemoryBudget, msg),
            E::Conflict(_) => ApiError::of(ErrorCode::WriteConflict, msg),
            E::Busy { .. } => ApiError::of(ErrorCode::Busy, msg).retry_after(1),
            E::Corrupt { .. } => ApiError::of(ErrorCode::Corrupt, msg),
            // Seen only when the token fired while the answer is still wanted (a deadline); when
            // the request timed out or its client left, nobody reads this.
            E::Cancelled => ApiError::of(ErrorCode::RequestTimeout, msg),
            E::Tenant(_) => ApiError::of(ErrorCode::TenantMismatch, msg),
            E::Storage(e) => e.into(),
        }
    }
}

/// Runs search-layer work on the blocking pool.
async fn run<T: Send + 'static>(
    f: impl FnOnce() -> kyrodb_search::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("search task failed: {e}"))),
    }
}

/// Runs a search on the blocking pool with a cancellation token that fires when this future is
/// dropped — the client went away, or the timeout layer answered 408 — so the search stops at its
/// next check (every few hundred loop iterations) instead of running on for nobody. (When the search
/// finishes first, the guard fires a token nobody looks at any more.)
async fn run_search<T: Send + 'static>(
    f: impl FnOnce(&Cancel) -> kyrodb_search::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let cancel = Cancel::new();
    let _stop = cancel.cancel_on_drop();
    run(move || f(&cancel)).await
}

/// The collection a request names, if the request's key reaches it (`crate::keys`): every
/// collection route resolves its collection here. A key bound to a tenant reaches only collections
/// that declare a `tenant_field`.
fn collection(s: &AppState, name: &str) -> Result<Arc<Collection>, ApiError> {
    crate::keys::check_collection(name)?;
    let c = s.collections.get(name)?;
    tenant(&c)?;
    Ok(c)
}

/// The request's tenant in `c` (None: not bound to a tenant).
fn tenant(c: &Collection) -> Result<Option<Tenant>, ApiError> {
    crate::keys::tenant_in(c.name(), c.schema().tenant_field.as_deref())
}

/// A collection's info as the request's key may see it: a tenant sees its own document count
/// (`documents` and `tenants`), not the other tenants'.
fn info_for(c: &Collection) -> Result<CollectionInfo, ApiError> {
    let mut info = c.info();
    if let Some(t) = tenant(c)? {
        let (held, _) = c.tenant_usage(&t, &[]);
        info.documents = held;
        info.tenants = Some(kyrodb_search::TenantsInfo {
            count: 1,
            documents: [(t.value.clone(), held)].into_iter().collect(),
            field: t.field.clone(),
        });
    }
    Ok(info)
}

/// Creates a collection with this schema: 201 when created, 200 when it exists with the same schema,
/// 409 when it exists with another.
#[utoipa::path(put, path = "/v2/collections/{name}", tag = "collections", request_body = Schema,
    params(("name" = String, Path, description = "1–48 characters from A-Z a-z 0-9 _ -")),
    responses((status = 201, body = CollectionInfo), (status = 200, body = CollectionInfo),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(schema): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    crate::keys::check_collection(&name)?;
    crate::keys::check_not_tenant("creating a collection")?;
    let mut schema = Schema::from_json(Value::Object(schema))?;
    crate::embed::govern_schema(&mut schema)?;
    let cs = s.collections.clone();
    let (c, created) = run(move || cs.create(&name, schema)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(c.info())).into_response())
}

/// Every collection with its schema, counts and index state.
#[utoipa::path(get, path = "/v2/collections", tag = "collections",
    responses((status = 200, body = CollectionList)))]
pub async fn list(State(s): State<AppState>) -> Result<Json<CollectionList>, ApiError> {
    let Some(who) = crate::keys::current() else {
        return Ok(Json(CollectionList {
            collections: s.collections.list(),
        }));
    };
    // A scoped key sees the collections it reaches; a tenant key, those with a tenant field, each
    // with its own counts.
    let mut collections = Vec::new();
    for c in s.collections.all() {
        if !who.may_collection(c.name()) {
            continue;
        }
        if who.tenant.is_some() && c.schema().tenant_field.is_none() {
            continue;
        }
        collections.push(info_for(&c)?);
    }
    Ok(Json(CollectionList { collections }))
}

/// One collection: schema, `documents` (live count), vector index state per field.
#[utoipa::path(get, path = "/v2/collections/{name}", tag = "collections",
    params(("name" = String, Path)),
    responses((status = 200, body = CollectionInfo), (status = 404, body = ErrorBody)))]
pub async fn info(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<CollectionInfo>, ApiError> {
    Ok(Json(info_for(&*collection(&s, &name)?)?))
}

/// Drops a collection (its documents are deleted in the background).
#[utoipa::path(delete, path = "/v2/collections/{name}", tag = "collections",
    params(("name" = String, Path)),
    responses((status = 200, body = wire::Dropped), (status = 404, body = ErrorBody)))]
pub async fn drop(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<wire::Dropped>, ApiError> {
    crate::keys::check_collection(&name)?;
    crate::keys::check_not_tenant("dropping a collection")?;
    let cs = s.collections.clone();
    let n = name.clone();
    run(move || cs.drop_collection(&n)).await?;
    Ok(Json(wire::Dropped { dropped: name }))
}

async fn upsert_values(
    s: &AppState,
    c: Arc<Collection>,
    docs: Vec<Value>,
    path_extra: Option<&'static str>,
) -> Result<(usize, u64), ApiError> {
    let started = Instant::now();
    let c2 = c.clone();
    // One schema for the whole request (a re-embed job may switch a field's model meanwhile).
    let schema = c.schema();
    let schema2 = schema.clone();
    let mut parsed = run(move || match path_extra {
        None => c2.parse_documents(&schema2, &docs),
        Some(extra) => Ok(vec![kyrodb_search::Document::parse(
            &docs[0],
            &schema2,
            "",
            &[extra],
        )?]),
    })
    .await?;
    let tenant = tenant(&c)?;
    if let Some(t) = &tenant {
        t.stamp(&mut parsed)?;
        check_documents_quota(&c, t, &parsed)?;
    }
    // auto_embed: vectors are computed before the write is logged, so recovery never recomputes.
    s.embed.fill_documents(&schema, &mut parsed).await?;
    let n = parsed.len();
    let seq = run(move || c.upsert_for(&parsed, tenant.as_ref())).await?;
    metrics::histogram!(crate::metrics::SEARCH_WRITE_VISIBLE_SECONDS.name)
        .record(started.elapsed().as_secs_f64());
    Ok((n, seq))
}

/// A tenant key's `documents` quota: the write may not take its tenant past it in this collection
/// (checked against the count when the write starts).
fn check_documents_quota(
    c: &Collection,
    t: &Tenant,
    docs: &[kyrodb_search::Document],
) -> Result<(), ApiError> {
    let Some(max) = crate::keys::current().and_then(|p| p.quotas.documents) else {
        return Ok(());
    };
    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    let (held, new) = c.tenant_usage(t, &ids);
    if new > 0 && held + new > max {
        return Err(ApiError::of(
            ErrorCode::QuotaExceeded,
            format!(
                "tenant {:?} holds {held} documents in collection {:?}; this write adds {new}, \
                 over the key's quota of {max}",
                t.value,
                c.name()
            ),
        ));
    }
    Ok(())
}

/// Upserts a batch of documents atomically (all or nothing); answers once they are durable and
/// searchable. Upsert replaces a whole document.
#[utoipa::path(post, path = "/v2/collections/{name}/documents", tag = "collections", request_body = DocumentsRequest,
    params(("name" = String, Path)),
    responses((status = 200, body = UpsertResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn upsert(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<DocumentsRequest>,
) -> Result<Json<UpsertResponse>, ApiError> {
    let c = collection(&s, &name)?;
    let (upserted, seq) = upsert_values(&s, c, req.documents, None).await?;
    Ok(Json(UpsertResponse { upserted, seq }))
}

/// `POST /v2/collections/{name}/reembed`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReembedRequest {
    /// The vector field (optional when the collection has one).
    pub field: Option<String>,
    /// `{"model", "source"}`: the model and text field to embed with (default: the field's current
    /// ones, with this server's version of the model).
    #[schema(value_type = Option<Object>)]
    pub embed: Option<kyrodb_search::EmbedSpec>,
}

/// Starts re-embedding a vector field: the field's model (and source text field) switch at once —
/// new writes and text queries use them — and a background job recomputes every stored document's
/// vector, its progress shown in the collection's info (`reembed`) and resumed after a restart.
/// 202 with the job; 409 while another job runs; 503 without the model.
#[utoipa::path(post, path = "/v2/collections/{name}/reembed", tag = "collections", request_body = ReembedRequest,
    params(("name" = String, Path)),
    responses((status = 202, body = kyrodb_search::reembed::JobView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reembed(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ReembedRequest>,
) -> Result<Response, ApiError> {
    crate::keys::check_not_tenant("re-embedding a collection")?;
    let c = collection(&s, &name)?;
    let schema = c.schema();
    let field = match req.field {
        Some(f) => f,
        None => schema.sole_vector().map(str::to_owned).ok_or_else(|| {
            ApiError::of(
                ErrorCode::InvalidRequest,
                "field: the collection has several vector fields; name one",
            )
        })?,
    };
    let Some(vs) = schema.vectors.get(&field) else {
        return Err(ApiError::of(
            ErrorCode::UnknownField,
            format!("field: {field:?} is not a vector field of the collection"),
        ));
    };
    let mut spec = match (req.embed, &vs.embed) {
        (Some(e), _) => e,
        (None, Some(current)) => kyrodb_search::EmbedSpec {
            version: None,
            sha256: None,
            ..current.clone()
        },
        (None, None) => {
            return Err(ApiError::of(
                ErrorCode::InvalidRequest,
                format!("embed: vectors.{field} has no model yet; give {{\"model\", \"source\"}}"),
            ))
        }
    };
    crate::embed::govern_spec(&format!("embed (vectors.{field})"), vs.dim, &mut spec)?;
    s.embed.check_field(&field, &spec)?;
    let Some(embed) = s.embed.embed_fn() else {
        return Err(s.embed.unavailable_error());
    };
    let cs = s.collections.clone();
    let job = run(move || cs.reembed(&name, &field, spec, embed)).await?;
    Ok((StatusCode::ACCEPTED, Json(job.view(None))).into_response())
}

/// One document plus `"collection"`; answers when it is durable and searchable.
#[utoipa::path(post, path = "/v2/documents/stream", tag = "collections", request_body = AnyObject,
    responses((status = 200, body = UpsertResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub async fn stream(
    State(s): State<AppState>,
    JsonBody(doc): JsonBody<Map<String, Value>>,
) -> Result<Json<UpsertResponse>, ApiError> {
    let name = match doc.get("collection") {
        Some(Value::String(n)) => n.clone(),
        _ => {
            return Err(ApiError::of(
                ErrorCode::InvalidRequest,
                "collection: missing (the name of the collection)",
            ))
        }
    };
    let c = collection(&s, &name)?;
    let (upserted, seq) =
        upsert_values(&s, c, vec![Value::Object(doc)], Some("collection")).await?;
    Ok(Json(UpsertResponse { upserted, seq }))
}

/// Query of `GET /v2/collections/{name}/documents`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many documents (default 20, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    #[param(pattern = "^[0-9]{1,20}$")]
    pub after: Option<String>,
    /// Leave out each document's vectors (default true: they are large).
    pub without_vectors: Option<bool>,
}

/// A page of stored documents.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ListResponse {
    /// The page's documents (without vectors unless `without_vectors=false`).
    pub documents: Vec<DocumentView>,
    /// Pass as `after` for the next page; null on the last one.
    pub next: Option<String>,
}

/// Most documents in one page of `GET /v2/collections/{name}/documents`.
const LIST_LIMIT_MAX: usize = 1000;

/// Browses a collection's documents page by page, in a stable order (by internal key, not by id or
/// time); a page reflects the writes acknowledged before it was read.
#[utoipa::path(get, path = "/v2/collections/{name}/documents", tag = "collections",
    params(("name" = String, Path), ListQuery),
    responses((status = 200, body = ListResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_docs(
    State(s): State<AppState>,
    Path(name): Path<String>,
    super::extract::QueryOf(q): super::extract::QueryOf<ListQuery>,
) -> Result<Json<ListResponse>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(ApiError::of(
            ErrorCode::InvalidQuery,
            format!("limit {limit} is outside 1..={LIST_LIMIT_MAX}"),
        ));
    }
    let after = match q.after.as_deref() {
        None => None,
        Some(a) => Some(a.parse::<u64>().map_err(|_| {
            ApiError::of(
                ErrorCode::InvalidQuery,
                format!("after {a:?} is not a cursor this endpoint returned"),
            )
        })?),
    };
    let vectors = !q.without_vectors.unwrap_or(true);
    let c = collection(&s, &name)?;
    let tenant = tenant(&c)?;
    let (docs, next) = run(move || c.list(after, limit)).await?;
    // A tenant's pages hold its own documents only (so a page may hold fewer than `limit`).
    Ok(Json(ListResponse {
        documents: docs
            .iter()
            .filter(|d| tenant.as_ref().is_none_or(|t| t.owns(d)))
            .map(|d| d.view(true, true, vectors))
            .collect(),
        next: next.map(|k| k.to_string()),
    }))
}

/// A stored document: id, text, fields, vectors.
#[utoipa::path(get, path = "/v2/collections/{name}/documents/{id}", tag = "collections",
    params(("name" = String, Path), ("id" = String, Path, description = "percent-encoded")),
    responses((status = 200, body = DocumentView), (status = 404, body = ErrorBody)))]
pub async fn get_doc(
    State(s): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<DocumentView>, ApiError> {
    let c = collection(&s, &name)?;
    let tenant = tenant(&c)?;
    let idc = id.clone();
    let doc = run(move || c.get(&idc)).await?;
    if tenant.is_some_and(|t| !t.owns(&doc)) {
        // Another tenant's document is answered as if it did not exist.
        return Err(kyrodb_search::Error::NoSuchDocument(id).into());
    }
    Ok(Json(doc.view(true, true, true)))
}

/// Deletes one document; 404 when absent.
#[utoipa::path(delete, path = "/v2/collections/{name}/documents/{id}", tag = "collections",
    params(("name" = String, Path), ("id" = String, Path, description = "percent-encoded")),
    responses((status = 200, body = DeleteResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_doc(
    State(s): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let c = collection(&s, &name)?;
    let tenant = tenant(&c)?;
    let idc = id.clone();
    let (deleted, absent) = run(move || c.delete_ids_for(&[idc], tenant.as_ref())).await?;
    if deleted == 0 {
        return Err(kyrodb_search::Error::NoSuchDocument(id).into());
    }
    Ok(Json(DeleteResponse { deleted, absent }))
}

/// Deletes by ids or by filter, atomically: `{"deleted": n, "absent": m}`.
#[utoipa::path(post, path = "/v2/collections/{name}/documents/delete", tag = "collections", request_body = DeleteRequest,
    params(("name" = String, Path)),
    responses((status = 200, body = DeleteResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn delete_many(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<DeleteRequest>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let c = collection(&s, &name)?;
    let tenant = tenant(&c)?;
    let (deleted, absent) = match (req.ids, req.filter) {
        (Some(ids), None) => run(move || c.delete_ids_for(&ids, tenant.as_ref())).await?,
        (None, Some(f)) => {
            let mut f = Filter::parse(&f, &c.schema(), "filter")?;
            if let Some(t) = &tenant {
                f = t.restrict(Some(f));
            }
            (
                run(move || c.delete_matching_for(&f, tenant.as_ref())).await?,
                0,
            )
        }
        _ => {
            return Err(ApiError::of(
                ErrorCode::InvalidRequest,
                "give exactly one of ids or filter",
            ))
        }
    };
    Ok(Json(DeleteResponse { deleted, absent }))
}

/// Vector search with an optional filter, applied during the graph traversal or answered exactly
/// over the filtered set, whichever the planner estimates cheaper (`"explain": true` shows it).
#[utoipa::path(post, path = "/v2/collections/{name}/search", tag = "collections", request_body = SearchBody,
    params(("name" = String, Path)),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn search(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<SearchResponse>, ApiError> {
    let body = wire::decode::<SearchBody>(&body, "invalid_query", "a search")?;
    let c = collection(&s, &name)?;
    search_body(&s, c, body).await
}

/// A search request against `c`: a text query is embedded first with the field's model.
async fn search_body(
    s: &AppState,
    c: Arc<Collection>,
    body: SearchBody,
) -> Result<Json<SearchResponse>, ApiError> {
    let schema = c.schema();
    let mut req = body.bind(&schema)?;
    if let Some(t) = tenant(&c)? {
        // The tenant condition is added beside the request's filter: it narrows, never widens.
        req.filter = Some(t.restrict(req.filter.take()));
    }
    if let Some(text) = req.text.take() {
        let e = schema.vectors[&req.using]
            .embed
            .clone()
            .expect("bind checked that the field is embedded");
        s.embed.check_field(&req.using, &e)?;
        req.vector = s.embed.embed(vec![text]).await?.remove(0);
    }
    Ok(Json(
        run_search(move |cancel| c.search(&req, cancel)).await?,
    ))
}

/// Hybrid search in one request: vector queries (an `embedding`, or `text` embedded with the
/// field's model; one or several named vectors, each with a weight and an optional threshold),
/// BM25 `text_search` (quoted phrases, per-field boosts), `metadata_filters`, a `temporal_range`
/// on the collection's timestamp field (`from`/`to`, `last`, `last_N_days`), fused by `rrf`
/// (default, k = 60), `weighted` or `dbsf`. Each component's list is cut at `candidates` (default
/// 100) after the filter and time range; ties break by id. With only a filter and/or a time range,
/// the matching documents newest first. `"explain": true` adds each hit's component ranks and
/// scores and the plan (stages, candidate counts, time per stage).
#[utoipa::path(post, path = "/v2/search/hybrid", tag = "collections", request_body = HybridBody,
    responses((status = 200, body = wire::HybridResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn hybrid(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<wire::HybridResponse>, ApiError> {
    let body = wire::decode::<HybridBody>(&body, "invalid_query", "a hybrid search")?;
    let c = collection(&s, body.collection()?)?;
    hybrid_body(&s, c, body).await
}

/// A hybrid request against `c`: text vector queries are embedded first.
async fn hybrid_body(
    s: &AppState,
    c: Arc<Collection>,
    body: HybridBody,
) -> Result<Json<wire::HybridResponse>, ApiError> {
    let req = hybrid_request(s, &c, body).await?;
    Ok(Json(
        run_search(move |cancel| c.hybrid(&req, cancel)).await?,
    ))
}

/// Binds a hybrid request to `c`'s schema and embeds its text vector queries (together, each
/// with its field's model).
async fn hybrid_request(
    s: &AppState,
    c: &Collection,
    body: HybridBody,
) -> Result<HybridRequest, ApiError> {
    let schema = c.schema();
    let mut req = body.bind(&schema, kyrodb_search::doc::now_ms())?;
    if let Some(t) = tenant(c)? {
        req.filter = Some(t.restrict(req.filter.take()));
    }
    let mut texts: Vec<(usize, String)> = Vec::new();
    for (i, vq) in req.vectors.iter().enumerate() {
        if let Some(t) = &vq.text {
            let e = schema.vectors[&vq.using]
                .embed
                .clone()
                .expect("bind checked that the field is embedded");
            s.embed.check_field(&vq.using, &e)?;
            texts.push((i, t.clone()));
        }
    }
    if !texts.is_empty() {
        let vectors = s
            .embed
            .embed(texts.iter().map(|t| t.1.clone()).collect())
            .await?;
        for ((i, _), v) in texts.iter().zip(vectors) {
            req.vectors[*i].vector = v;
        }
    }
    Ok(req)
}

/// Feedback on a search, for learned ranking (`fusion_strategy: "learned_ranking"` /
/// `auto_rank`): `{"query": <the hybrid search as sent, or its text>, "relevant": [ids],
/// "labels": {id: grade 0..=10}, "shown": [ids]}`. The query is run again to record each
/// candidate's features (the shown ids when given, else the query's candidates, plus every
/// labelled id); the example is stored durably and the model retrains in the background once 20
/// examples exist, serving only when it beats RRF on held-out feedback. Ids that are not
/// documents are ignored and listed in `ignored_ids`. The collection's info shows the examples,
/// the last training (validation nDCG@10 of the model and of RRF) and the serving model's weights.
#[utoipa::path(post, path = "/v2/collections/{name}/feedback", tag = "collections", request_body = wire::FeedbackBody,
    params(("name" = String, Path)),
    responses((status = 200, body = wire::FeedbackResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn feedback(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<wire::FeedbackResponse>, ApiError> {
    crate::keys::check_not_tenant(
        "feedback trains the collection's one ranking model, shared by every tenant",
    )?;
    let c = collection(&s, &name)?;
    let fb = kyrodb_search::rank::Feedback::parse(&body)?;
    let req = hybrid_request(&s, &c, fb.query_body(&c.schema())).await?;
    Ok(Json(
        run_search(move |cancel| c.feedback(&req, &fb, cancel)).await?,
    ))
}

/// The query-string form: `collection`, `similar_to` (text, embedded with the field's model),
/// optional `using`, `limit`, `q` (BM25 full text: then a hybrid search, `similar_to` one of its
/// components), `vector_sim` (the vector score threshold), `auto_rank` (learned ranking; RRF until a
/// model is trained); every other parameter is an equality filter on the field of that name (an
/// unknown field is a 400).
#[utoipa::path(get, path = "/v2/search", tag = "collections",
    params(("collection" = String, Query), ("similar_to" = String, Query, description = "query text, embedded with the vector field's model"),
        ("using" = Option<String>, Query), ("limit" = Option<u32>, Query), ("q" = Option<String>, Query),
        ("vector_sim" = Option<f64>, Query), ("auto_rank" = Option<bool>, Query)),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn search_get(
    State(s): State<AppState>,
    super::extract::QueryOf(params): super::extract::QueryOf<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let q = GetSearch::from_params(params)?;
    let c = collection(&s, &q.collection)?;
    let schema = c.schema();
    let filter = q.filter(&schema)?;
    // A text query goes to the collection's embedded field when it has exactly one.
    let using = q.using.or_else(|| {
        let mut embedded = schema.embedded_fields();
        match (embedded.next(), embedded.next()) {
            (Some((field, _)), None) => Some(field.to_owned()),
            _ => None,
        }
    });
    if q.text_search.is_none() && !q.auto_rank {
        let body = SearchBody {
            text: q.similar_to,
            using,
            filter,
            limit: q.limit,
            threshold: q.vector_sim,
            ..SearchBody::default()
        };
        return Ok(search_body(&s, c, body).await?.into_response());
    }
    // Full text and/or ranking: the hybrid search, with the similar_to vector as one component.
    let body = HybridBody {
        collection: Some(q.collection),
        vector_similarity: q.similar_to.map(|text| {
            wire::OneOrMany::One(wire::VectorQueryBody {
                text: Some(text),
                using,
                threshold: q.vector_sim,
                ..Default::default()
            })
        }),
        text_search: q.text_search.map(wire::TextSearchBody::Query),
        metadata_filters: filter,
        limit: q.limit,
        fusion_strategy: q
            .auto_rank
            .then(|| wire::FusionBody::Name("auto_rank".into())),
        ..HybridBody::default()
    };
    Ok(hybrid_body(&s, c, body).await?.into_response())
}

/// The query-string form of a search, read from its parameters (each at most once).
#[derive(Debug, Default)]
struct GetSearch {
    collection: String,
    similar_to: Option<String>,
    using: Option<String>,
    limit: Option<u64>,
    text_search: Option<String>,
    vector_sim: Option<f64>,
    auto_rank: bool,
    /// Every other parameter: field = value, typed by the schema in [`GetSearch::filter`].
    equals: Vec<(String, String)>,
}

impl GetSearch {
    fn from_params(params: Vec<(String, String)>) -> Result<GetSearch, ApiError> {
        let bad = |m: String| ApiError::of(ErrorCode::InvalidQuery, m);
        let mut q = GetSearch::default();
        let mut collection = None;
        for (k, v) in params {
            let once = |slot: &mut Option<String>, v: String| match slot.replace(v) {
                Some(_) => Err(bad(format!("{k}: given more than once"))),
                None => Ok(()),
            };
            match k.as_str() {
                "collection" => once(&mut collection, v)?,
                "similar_to" => once(&mut q.similar_to, v)?,
                "using" => once(&mut q.using, v)?,
                "q" => once(&mut q.text_search, v)?,
                "limit" => {
                    let n = v
                        .parse::<u64>()
                        .map_err(|_| bad(format!("limit: expected an integer, got {v:?}")))?;
                    q.limit = Some(n);
                }
                "vector_sim" => {
                    let t = v
                        .parse::<f64>()
                        .ok()
                        .filter(|t| t.is_finite())
                        .ok_or_else(|| {
                            bad(format!(
                            "vector_sim: expected a number (the vector score threshold), got {v:?}"
                        ))
                        })?;
                    if q.vector_sim.replace(t).is_some() {
                        return Err(bad(format!("{k}: given more than once")));
                    }
                }
                "auto_rank" => {
                    q.auto_rank = match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(bad(format!(
                                "auto_rank: expected true or false, got {v:?}"
                            )))
                        }
                    };
                }
                _ => q.equals.push((k, v)),
            }
        }
        q.collection = collection
            .ok_or_else(|| bad("collection: missing (the collection to search)".into()))?;
        if q.similar_to.is_none() && q.text_search.is_none() {
            return Err(bad("similar_to or q: missing (the query text)".into()));
        }
        Ok(q)
    }

    /// The equality parameters as a filter, each value typed by its field (query strings carry
    /// text; the filter language checks the rest, an unknown field included).
    fn filter(&self, schema: &Schema) -> Result<Option<Value>, ApiError> {
        use kyrodb_search::schema::FieldType;
        if self.equals.is_empty() {
            return Ok(None);
        }
        let mut filter = Map::new();
        for (k, text) in &self.equals {
            let bad = |what: &str| {
                ApiError::of(
                    ErrorCode::InvalidFilter,
                    format!("{k}: expected {what}, got {text:?}"),
                )
            };
            let v = match schema.fields.get(k) {
                Some(FieldType::Integer) => {
                    json!(text.parse::<i64>().map_err(|_| bad("an integer"))?)
                }
                Some(FieldType::Float) => json!(text
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| bad("a number"))?),
                Some(FieldType::Bool) => match text.as_str() {
                    "true" => json!(true),
                    "false" => json!(false),
                    _ => return Err(bad("true or false")),
                },
                _ => json!(text),
            };
            // A repeated parameter: the last value wins, as before.
            filter.insert(k.clone(), v);
        }
        Ok(Some(Value::Object(filter)))
    }
}

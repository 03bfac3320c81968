//! The OpenAPI 3 document, generated from the route table ([`crate::routes::table`]): each handler's
//! annotation gives its method, path, parameters and bodies; the table's access rule gives its security
//! and the error answers every route can give (401/403 with a role, 429 when rate limited, 408, ...).

use std::sync::OnceLock;

use utoipa::{
    openapi::{
        path::Operation,
        schema::Schema,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        RefOr, Response, ResponseBuilder,
    },
    Modify, OpenApi,
};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    error::{ErrorBody, ErrorDetail},
    routes::{table, Access, AppState},
};

#[derive(OpenApi)]
#[openapi(
    info(title = "KyroDB", description = "KyroDB HTTP API v1: u64 keys to byte values."),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "kv"), (name = "admin"), (name = "ops"), (name = "cluster"), (name = "keys")),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What of the server's configuration the document states, so that it is exact for this server.
#[derive(Debug, Clone, Copy)]
pub struct DocOptions {
    /// Tokens are configured: routes with a role declare bearer security and 401/403.
    pub auth: bool,
    /// `/metrics` needs no token.
    pub public_metrics: bool,
    /// Rate limiting is on: limited routes declare 429.
    pub rate_limit: bool,
    /// `maximum` of the scan's `limit` parameter.
    pub scan_limit_max: usize,
    /// `maxItems` of the batch routes' `keys` / `items` arrays.
    pub batch_keys_max: usize,
}

impl Default for DocOptions {
    /// The document of a server with auth and rate limits on (everything that can be declared).
    fn default() -> Self {
        Self {
            auth: true,
            public_metrics: false,
            rate_limit: true,
            scan_limit_max: crate::config::defaults::SCAN_LIMIT_MAX,
            batch_keys_max: crate::config::defaults::BATCH_KEYS_MAX,
        }
    }
}

/// The document with every security and error answer declared (auth and rate limit on).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| build(DocOptions::default()))
}

/// The document of a server configured as `o`, as JSON.
pub fn document_json(o: DocOptions) -> String {
    let mut v = serde_json::to_value(build(o)).expect("the OpenAPI document serializes");
    unsigned_formats(&mut v);
    exclusive_fields(&mut v);
    if let Some(schemas) = v
        .pointer_mut("/components/schemas")
        .and_then(|x| x.as_object_mut())
    {
        for schema in schemas.values_mut() {
            for field in ["keys", "items"] {
                if let Some(arr) = schema.pointer_mut(&format!("/properties/{field}/maxItems")) {
                    *arr = o.batch_keys_max.into();
                }
            }
        }
    }
    // Every error code with its status and meaning ([`crate::error::ErrorCode`]), for clients
    // (the SDK's exception classes are generated from it) and docs/api.md.
    v["x-error-codes"] = crate::error::ErrorCode::ALL
        .iter()
        .map(|c| serde_json::json!({"code": c.as_str(), "status": c.status_u16(), "meaning": c.meaning()}))
        .collect();
    v.to_string()
}

/// Request schemas that take exactly one of some fields (utoipa's derive cannot say so): `oneOf` of
/// one `required` per field, which JSON Schema reads as "exactly one present".
const EXCLUSIVE_FIELDS: &[(&str, &[&str])] = &[("PutRequest", &["value", "value_b64"])];

fn exclusive_fields(doc: &mut serde_json::Value) {
    for (schema, fields) in EXCLUSIVE_FIELDS {
        let Some(s) = doc.pointer_mut(&format!("/components/schemas/{schema}")) else {
            continue;
        };
        let one_of: Vec<serde_json::Value> = fields
            .iter()
            .map(|f| serde_json::json!({ "required": [f] }))
            .collect();
        s["oneOf"] = one_of.into();
    }
}

/// utoipa writes a Rust `u64`/`usize` as `{"type": "integer", "format": "int64", "minimum": 0}`, and
/// `int64` tells clients the largest value is 2^63 − 1, while keys go up to 2^64 − 1. Say `uint64` with
/// its true maximum (unless a smaller one is declared).
fn unsigned_formats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            let integer = match m.get("type") {
                Some(serde_json::Value::String(t)) => t == "integer",
                // An `Option<u64>`: `["integer", "null"]`.
                Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            let unsigned = integer
                && m.get("format").and_then(|f| f.as_str()) == Some("int64")
                && m.get("minimum").and_then(|x| x.as_u64()) == Some(0);
            if unsigned {
                m.insert("format".into(), "uint64".into());
                m.entry("maximum").or_insert(u64::MAX.into());
            }
            m.values_mut().for_each(unsigned_formats);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(unsigned_formats),
        _ => {}
    }
}

fn build(o: DocOptions) -> utoipa::openapi::OpenApi {
    let mut api = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi());
    let mut rules: Vec<(String, Access)> = Vec::new();
    for (access, r) in table() {
        rules.extend(r.1.paths.keys().map(|p| (p.clone(), access)));
        api = api.routes(r);
    }
    let mut doc = api.into_openapi();
    for (path, item) in doc.paths.paths.iter_mut() {
        let access = rules
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, a)| *a)
            .expect("every documented path comes from the table");
        for op in operations_mut(item) {
            complete(op, access, o, path == "/v1/scan");
        }
    }
    if !o.auth {
        doc.security = None;
        if let Some(c) = doc.components.as_mut() {
            c.security_schemes.clear();
        }
    }
    doc
}

fn operations_mut(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.head,
        &mut item.patch,
        &mut item.options,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            )
            .build(),
    )
}

/// Security and the error answers that come from the layers rather than the handler.
fn complete(op: &mut Operation, access: Access, o: DocOptions, scan: bool) {
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    };
    let role = access.role(o.public_metrics);
    if o.auth && role.is_some() {
        {
            add(
                "401",
                "a token is configured on the server and this request has none, or an unknown one",
            );
            add(
                "403",
                "the token's role is too weak for this route, or its key's scopes do not reach \
                 the collection or keyspace (or the whole node, for node-wide routes)",
            );
        }
    }
    if (o.rate_limit || o.auth) && access.rate_limited() {
        add(
            "429",
            "the client's rate limit or the key's quota is exceeded; see Retry-After",
        );
    }
    if access.rate_limited() {
        add("408", "the request took longer than request_timeout_ms");
        add(
            "503",
            "the engine is busy (Retry-After), closing, or stopped writes after an I/O failure",
        );
        add(
            "500",
            "the engine failed (I/O error or corruption, with file and offset)",
        );
    }
    let has_input =
        op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_input {
        add(
            "400",
            "bad input: the code names the problem (invalid_json, invalid_key, ...)",
        );
    }
    if op.request_body.is_some() {
        add("413", "the body is over body_bytes_max");
    }
    // The scan's page size is configured (`scan_limit_max`); other `limit`s keep their own bounds.
    if let Some(params) = op.parameters.as_mut().filter(|_| scan) {
        for p in params.iter_mut().filter(|p| p.name == "limit") {
            if let Some(RefOr::T(Schema::Object(obj))) = p.schema.as_mut() {
                obj.maximum = Some(o.scan_limit_max.into());
            }
        }
    }
    // `[]`: no security needed (a probe, or a server without tokens).
    op.security = Some(match (o.auth, role) {
        (true, Some(_)) => vec![SecurityRequirement::new("bearer", Vec::<String>::new())],
        _ => Vec::new(),
    });
}

/// (method, path) of every operation in the document.
pub fn operations() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in &document().paths.paths {
        let ops = [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
        ];
        out.extend(
            ops.iter()
                .filter(|(_, op)| op.is_some())
                .map(|(m, _)| (m.to_string(), path.clone())),
        );
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_need_no_token_and_roles_declare_auth_errors() {
        let doc = document();
        let health = doc.paths.paths["/health"].get.as_ref().unwrap();
        assert!(health.security.as_ref().is_some_and(Vec::is_empty));
        assert!(!health.responses.responses.contains_key("401"));
        let put = doc.paths.paths["/v1/kv/{key}"].put.as_ref().unwrap();
        for s in ["200", "400", "401", "403", "408", "413", "429", "503"] {
            assert!(
                put.responses.responses.contains_key(s),
                "PUT /v1/kv/{{key}} lacks {s}"
            );
        }
    }

    #[test]
    fn every_table_row_is_one_documented_operation() {
        // Each row's handler carries one (method, path); two rows on one path merge into one path
        // item, so counting operations (not paths) catches a row whose operation was lost.
        let ops = operations();
        let mut unique = ops.clone();
        unique.dedup();
        assert_eq!(unique.len(), ops.len(), "an operation documented twice");
        assert_eq!(ops.len(), table().len());
        assert!(ops.contains(&("POST".into(), "/v1/kv/batch_put".into())));
    }
}

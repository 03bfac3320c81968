//! The OpenAPI 3 document, generated from the handlers' annotations.

use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use crate::{
    error::{ErrorBody, ErrorDetail},
    routes::{admin, kv, ops, rmi},
};

#[derive(OpenApi)]
#[openapi(
    info(title = "KyroDB", description = "KyroDB HTTP API v1: u64 keys to byte values."),
    paths(
        ops::health, ops::ready, ops::build_info, ops::metrics, ops::openapi,
        kv::put_json, kv::put_raw, kv::get, kv::get_fast, kv::delete, kv::batch_get, kv::batch_put, kv::scan,
        admin::snapshot, admin::warmup, rmi::build,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, kv::PutRequest, kv::OffsetResponse, kv::BatchGetRequest, kv::BatchPutRequest,
        kv::Item, kv::BatchGetResponse, kv::ScanResponse, admin::SnapshotResponse, admin::WarmupResponse,
        rmi::RmiBuildResponse, rmi::KeyspaceIndex, ops::HealthResponse, ops::ReadyResponse, ops::BuildInfo,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "kv"), (name = "admin"), (name = "ops")),
)]
pub struct ApiDoc;

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

/// (method, path) of every operation in the document.
pub fn operations() -> Vec<(String, String)> {
    let doc = ApiDoc::openapi();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("HEAD", &item.head),
            ("PATCH", &item.patch),
            ("OPTIONS", &item.options),
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
    use crate::routes::ROUTES;

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_routed() {
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        routed.sort();
        assert_eq!(routed, operations());
    }
}

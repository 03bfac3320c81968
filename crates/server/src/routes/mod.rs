//! Every route the server answers, in one table: method, path, the role it needs and its handler.
//! The router and the OpenAPI test both read [`ROUTES`], so a route cannot exist in one and not the other.

pub mod admin;
pub mod extract;
pub mod kv;
pub mod ops;
pub mod rmi;

use std::sync::{atomic::AtomicBool, Arc};

use axum::{
    middleware::from_fn_with_state,
    routing::{on, MethodFilter, MethodRouter},
    Router,
};
use kyrodb_storage::Db;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::{require_role, Auth, RequireRole, Role};

/// Limits the handlers enforce before touching the engine; `/build_info` reports them so clients
/// (`kyrodb import`) can size their requests.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct Limits {
    /// Largest request body (the body-limit layer; 413 `body_too_large` above it).
    pub body_bytes_max: usize,
    /// Largest value (413 `value_too_large`).
    pub value_bytes_max: usize,
    /// Most keys in one batch_get or items in one batch_put.
    pub batch_keys_max: usize,
    /// Largest `limit` of a scan.
    pub scan_limit_max: usize,
    /// Most value bytes in one batch_get answer or scan page.
    pub response_bytes_max: usize,
}

/// What every handler shares.
#[derive(Debug)]
pub struct Shared {
    pub db: Arc<Db>,
    pub limits: Limits,
    pub metrics: PrometheusHandle,
    /// Set when shutdown starts: `/ready` turns 503 so load balancers stop sending.
    pub shutting_down: AtomicBool,
}

pub type AppState = Arc<Shared>;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token ever (only `/health`).
    Public,
    Needs(Role),
}

/// One row of the route table.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn r(method: &'static str, path: &'static str, access: Access) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
    }
}

use Access::{Needs, Public};
use Role::{Admin, Read, Write};

/// The route table. Paths use axum's `{param}` syntax, which is also OpenAPI's.
pub const ROUTES: &[RouteSpec] = &[
    r("GET", "/health", Public),
    r("GET", "/ready", Needs(Read)),
    r("GET", "/build_info", Needs(Read)),
    r("GET", "/metrics", Needs(Read)),
    r("GET", "/openapi.json", Needs(Read)),
    r("POST", "/v1/put", Needs(Write)),
    r("PUT", "/v1/kv/{key}", Needs(Write)),
    r("GET", "/v1/kv/{key}", Needs(Read)),
    r("DELETE", "/v1/kv/{key}", Needs(Write)),
    r("GET", "/v1/get_fast/{key}", Needs(Read)),
    r("POST", "/v1/kv/batch_get", Needs(Read)),
    r("POST", "/v1/kv/batch_put", Needs(Write)),
    r("GET", "/v1/scan", Needs(Read)),
    r("POST", "/v1/snapshot", Needs(Admin)),
    r("POST", "/v1/rmi/build", Needs(Admin)),
    r("POST", "/v1/warmup", Needs(Admin)),
];

fn handler(method: &str, path: &str) -> MethodRouter<AppState> {
    use MethodFilter as M;
    match (method, path) {
        ("GET", "/health") => on(M::GET, ops::health),
        ("GET", "/ready") => on(M::GET, ops::ready),
        ("GET", "/build_info") => on(M::GET, ops::build_info),
        ("GET", "/metrics") => on(M::GET, ops::metrics),
        ("GET", "/openapi.json") => on(M::GET, ops::openapi),
        ("POST", "/v1/put") => on(M::POST, kv::put_json),
        ("PUT", "/v1/kv/{key}") => on(M::PUT, kv::put_raw),
        ("GET", "/v1/kv/{key}") => on(M::GET, kv::get),
        ("DELETE", "/v1/kv/{key}") => on(M::DELETE, kv::delete),
        ("GET", "/v1/get_fast/{key}") => on(M::GET, kv::get_fast),
        ("POST", "/v1/kv/batch_get") => on(M::POST, kv::batch_get),
        ("POST", "/v1/kv/batch_put") => on(M::POST, kv::batch_put),
        ("GET", "/v1/scan") => on(M::GET, kv::scan),
        ("POST", "/v1/snapshot") => on(M::POST, admin::snapshot),
        ("POST", "/v1/rmi/build") => on(M::POST, rmi::build),
        ("POST", "/v1/warmup") => on(M::POST, admin::warmup),
        _ => unreachable!("route table row {method} {path} has no handler"),
    }
}

/// The router for every row of [`ROUTES`], each behind the role it needs, plus the JSON 404 fallback.
pub fn router(state: AppState, auth: &Auth) -> Router {
    let mut router = Router::new();
    for spec in ROUTES {
        let mut mr = handler(spec.method, spec.path);
        if let Access::Needs(role) = spec.access {
            if auth.enabled() {
                mr = mr.route_layer(from_fn_with_state(
                    RequireRole {
                        auth: auth.clone(),
                        role,
                    },
                    require_role,
                ));
            }
        }
        router = router.route(spec.path, mr);
    }
    router.fallback(ops::no_route).with_state(state)
}

/// The `&'static` form of a matched path, for metric labels without an allocation per request.
pub fn intern_route(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| r.path == path)
        .map_or("unmatched", |r| r.path)
}

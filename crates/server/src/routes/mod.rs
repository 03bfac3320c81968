//! Every route the server answers, in one table ([`table`]): who may call it and its handler, whose
//! `#[utoipa::path]` annotation holds the method and path. The router and the OpenAPI document are
//! both built from the table, so a route cannot exist in one and not the other.

pub mod admin;
pub mod backup;
pub mod cluster;
pub mod collections;
pub mod console;
pub mod embed;
pub mod extract;
pub mod keys;
pub mod keyspaces;
pub mod kv;
pub mod ops;
pub mod rmi;

use std::sync::{atomic::AtomicBool, Arc, OnceLock};

use axum::{middleware::from_fn_with_state, Router};
use kyrodb_storage::Db;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa_axum::{router::OpenApiRouter, router::UtoipaMethodRouter, routes};

use crate::{
    auth::{require_role, Auth, RequireRole, Role},
    ratelimit::{rate_limit, Limiter},
};

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
    /// Most documents in one `/v2` upsert (413 `too_many` above it).
    pub documents_per_batch_max: usize,
}

/// What every handler shares.
#[derive(Debug)]
pub struct Shared {
    /// The storage engine.
    pub db: Arc<Db>,
    /// Collections of documents (`/v2`), over the same engine.
    pub collections: Arc<kyrodb_search::Collections>,
    /// The embedding model (or why there is none).
    pub embed: Arc<crate::embed::EmbedState>,
    /// The request limits the handlers enforce.
    pub limits: Limits,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Set when shutdown starts: `/ready` turns 503 so load balancers stop sending.
    pub shutting_down: AtomicBool,
    /// `/openapi.json`, exact for this server's configuration (auth, rate limit, limits).
    pub openapi_json: String,
    /// When the server started (uptime in `/build_info` and `/metrics`).
    pub started: std::time::Instant,
    /// When the server started, in Unix milliseconds.
    pub started_at_ms: i64,
    /// Cluster mode: this node (None on a single node).
    pub cluster: Option<Arc<kyrodb_cluster::Cluster>>,
    /// The configured keys and the store of scoped keys; routes that answer without a token but
    /// show more to one (`/ready`) ask it too.
    pub auth: Auth,
    /// The audit log of admin actions.
    pub audit: Arc<crate::audit::Audit>,
    /// Backups: where they may go, the running one and the last finished ones.
    pub backups: backup::Backups,
}

/// The state every handler gets.
pub type AppState = Arc<Shared>;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token ever, and never rate limited: probes (`/health`, `/ready`).
    Probe,
    /// Like [`Access::Probe`] when `public_metrics` is set, else needs the read role (`/metrics`).
    Metrics,
    /// The web console's static files: no token (the page asks for one) and never rate limited.
    Static,
    /// Needs the role (or a stronger one); scoped and tenant keys may call it.
    Needs(Role),
    /// Acts on the whole node (snapshots, the cluster, keys, the audit log): needs the role and a
    /// key that reaches every collection and keyspace with no tenant (`crate::keys`).
    Global(Role),
}

impl Access {
    /// The role a request needs under this configuration, if any.
    pub fn role(self, public_metrics: bool) -> Option<Role> {
        match self {
            Access::Probe | Access::Static => None,
            Access::Metrics if public_metrics => None,
            Access::Metrics => Some(Role::Read),
            Access::Needs(r) | Access::Global(r) => Some(r),
        }
    }

    /// Scoped and tenant keys are refused: the route shows or changes more than one collection or
    /// keyspace (`/metrics` names every one).
    pub fn global(self) -> bool {
        matches!(self, Access::Global(_) | Access::Metrics)
    }

    /// Probes and scrapes share IPs (load balancers, Prometheus) and cost nothing: never limited.
    pub fn rate_limited(self) -> bool {
        matches!(self, Access::Needs(_) | Access::Global(_))
    }
}

use Access::{Global, Metrics, Needs, Probe, Static};
use Role::{Admin, Read, Write};

/// The route table: who may call each route, and its handler. The method and path are written once,
/// in the handler's `#[utoipa::path]` annotation, which both the router and the OpenAPI document
/// read through [`routes!`].
pub fn table() -> Vec<(Access, UtoipaMethodRouter<AppState>)> {
    vec![
        (Probe, routes!(ops::health)),
        (Probe, routes!(ops::ready)),
        (Needs(Read), routes!(ops::build_info)),
        (Metrics, routes!(ops::metrics)),
        (Needs(Read), routes!(ops::openapi)),
        (Needs(Write), routes!(kv::put_json)),
        (Needs(Write), routes!(kv::put_raw)),
        (Needs(Read), routes!(kv::get)),
        (Needs(Write), routes!(kv::delete)),
        (Needs(Read), routes!(kv::get_fast)),
        (Needs(Read), routes!(kv::batch_get)),
        (Needs(Write), routes!(kv::batch_put)),
        (Needs(Read), routes!(kv::scan)),
        (Needs(Write), routes!(kv::batch_delete)),
        (Needs(Write), routes!(kv::delete_range)),
        (Needs(Read), routes!(keyspaces::list)),
        (Needs(Admin), routes!(keyspaces::create)),
        (Needs(Read), routes!(keyspaces::get)),
        (Needs(Admin), routes!(keyspaces::drop)),
        (Global(Admin), routes!(admin::snapshot)),
        (Global(Admin), routes!(rmi::build)),
        (Global(Admin), routes!(admin::warmup)),
        (Global(Admin), routes!(backup::create)),
        (Global(Admin), routes!(backup::status)),
        (Needs(Read), routes!(collections::list)),
        (Needs(Admin), routes!(collections::create)),
        (Needs(Read), routes!(collections::info)),
        (Needs(Admin), routes!(collections::drop)),
        (Needs(Write), routes!(collections::upsert)),
        (Needs(Admin), routes!(collections::reembed)),
        (Needs(Write), routes!(collections::stream)),
        (Needs(Read), routes!(collections::get_doc)),
        (Needs(Read), routes!(collections::list_docs)),
        (Needs(Write), routes!(collections::delete_doc)),
        (Needs(Write), routes!(collections::delete_many)),
        (Needs(Read), routes!(collections::search)),
        (Needs(Read), routes!(collections::search_get)),
        (Needs(Read), routes!(collections::hybrid)),
        (Needs(Write), routes!(collections::feedback)),
        (Needs(Read), routes!(embed::embed)),
        (Needs(Read), routes!(embed::models)),
        (Global(Admin), routes!(cluster::status)),
        (Global(Admin), routes!(cluster::init)),
        (Global(Admin), routes!(cluster::add_node)),
        (Global(Admin), routes!(cluster::remove_node)),
        (Global(Admin), routes!(keys::create)),
        (Global(Admin), routes!(keys::list)),
        (Global(Admin), routes!(keys::delete)),
        (Global(Admin), routes!(keys::audit)),
        (Static, routes!(console::index)),
        (Static, routes!(console::script)),
        (Static, routes!(console::style)),
    ]
}

/// What the router needs beyond the table.
pub struct RouterOptions<'a> {
    /// The keys requests are checked against.
    pub auth: &'a Auth,
    /// `/metrics` needs no token.
    pub public_metrics: bool,
    /// The per-IP rate limiter, when rate limiting is on.
    pub limiter: Option<Limiter>,
}

/// The router for every row of [`table`], each behind the role it needs (when tokens are set) and
/// the rate limit (when configured and the route is not a probe), plus the JSON 404 fallback.
pub fn router(state: AppState, o: RouterOptions<'_>) -> Router {
    let mut api = OpenApiRouter::new();
    for (access, (schemas, paths, mut mr)) in table() {
        if let (Some(_), Some(class)) = (&state.cluster, consistency(access, &paths)) {
            mr = mr.route_layer(from_fn_with_state(
                (state.clone(), class),
                cluster::read_consistency,
            ));
        }
        if let Some(role) = access.role(o.public_metrics) {
            if o.auth.enabled() {
                mr = mr.route_layer(from_fn_with_state(
                    RequireRole {
                        auth: o.auth.clone(),
                        role,
                        global: access.global(),
                    },
                    require_role,
                ));
            }
        }
        if access.role(o.public_metrics) == Some(Admin) {
            // Outside the role check, so refused attempts are logged with who tried.
            mr = mr.route_layer(from_fn_with_state(state.audit.clone(), crate::audit::track));
        }
        if let (Some(l), true) = (&o.limiter, access.rate_limited()) {
            mr = mr.route_layer(from_fn_with_state(l.clone(), rate_limit));
        }
        api = api.routes((schemas, paths, mr));
    }
    let (router, _) = api.split_for_parts();
    router.fallback(ops::no_route).with_state(state)
}

/// What cluster mode does before a row's routes run: from the row's OpenAPI tag and access.
fn consistency(access: Access, paths: &utoipa::openapi::Paths) -> Option<cluster::Consistency> {
    let tag = paths
        .paths
        .values()
        .flat_map(|item| [&item.get, &item.put, &item.post, &item.delete, &item.patch])
        .flatten()
        .find_map(|op| op.tags.as_ref()?.first().cloned())
        .unwrap_or_default();
    cluster::Consistency::of(&tag, access.role(false))
}

/// Every templated path of the table, leaked once for `&'static` metric labels.
fn route_paths() -> &'static [&'static str] {
    static PATHS: OnceLock<Vec<&'static str>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let mut out: Vec<&'static str> = Vec::new();
        for (_, (_, paths, _)) in table() {
            for p in paths.paths.keys() {
                if !out.contains(&p.as_str()) {
                    out.push(Box::leak(p.clone().into_boxed_str()));
                }
            }
        }
        out
    })
}

/// The `&'static` form of a matched path, for metric labels without an allocation per request.
pub fn intern_route(path: &str) -> &'static str {
    route_paths()
        .iter()
        .find(|p| **p == path)
        .copied()
        .unwrap_or("unmatched")
}

#[cfg(test)]
mod tests {
    use super::{cluster::Consistency, *};

    /// The cluster classes the table yields: data reads, key-value writes and keyspace changes,
    /// every collection route; nothing for the node's admin, keys, embedding and probes.
    #[test]
    fn cluster_classes_come_from_the_table() {
        let mut got = std::collections::BTreeMap::new();
        for (access, (_, paths, _)) in table() {
            for path in paths.paths.keys() {
                got.insert(path.clone(), consistency(access, &paths));
            }
        }
        for (path, want) in [
            ("/v1/kv/{key}", None), // GET (read) and PUT/DELETE (write) rows share the path
            ("/v1/get_fast/{key}", Some(Consistency::Read)),
            ("/v1/scan", Some(Consistency::Read)),
            ("/v1/kv/batch_get", Some(Consistency::Read)),
            ("/v1/put", Some(Consistency::Write)),
            ("/v1/kv/batch_put", Some(Consistency::Write)),
            ("/v1/kv/delete_range", Some(Consistency::Write)),
            (
                "/v2/collections/{name}/search",
                Some(Consistency::Collection),
            ),
            ("/v2/search/hybrid", Some(Consistency::Collection)),
            ("/v2/documents/stream", Some(Consistency::Collection)),
            ("/v1/snapshot", None),
            ("/v1/keys", None),
            ("/v2/embed", None),
            ("/health", None),
        ] {
            if want.is_some() {
                assert_eq!(got[path], want, "{path}");
            } else {
                assert!(got.contains_key(path), "{path}");
            }
        }
        for (path, class) in &got {
            if path.starts_with("/v2/collections") {
                assert_eq!(*class, Some(Consistency::Collection), "{path}");
            }
            if [
                "/v1/snapshot",
                "/v1/keys",
                "/v2/embed",
                "/health",
                "/metrics",
            ]
            .contains(&path.as_str())
            {
                assert_eq!(*class, None, "{path}");
            }
        }
        // Both rows of /v1/kv/{key}: the GET one reads, the others write.
        let classes: Vec<Option<Consistency>> = table()
            .into_iter()
            .filter(|(_, (_, p, _))| p.paths.contains_key("/v1/kv/{key}"))
            .map(|(a, (_, p, _))| consistency(a, &p))
            .collect();
        assert!(classes.contains(&Some(Consistency::Read)), "{classes:?}");
        assert!(classes.contains(&Some(Consistency::Write)), "{classes:?}");
    }
}

//! The router with its layers, outermost first: nosniff → metrics → CORS → browser rules (Host,
//! cross-site writes: [`crate::browser`]) → HTTP log → JSON errors → timeout → body limit →
//! (per route) per-IP rate limit → (per route) role check → handler.

use std::sync::Arc;

use axum::{
    extract::DefaultBodyLimit,
    http::{header, HeaderValue, Method, StatusCode},
    Router,
};
use tower_http::{
    cors::{AllowOrigin, Any, CorsLayer},
    limit::RequestBodyLimitLayer,
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{
    auth::Auth,
    config::Config,
    ratelimit::Limiter,
    routes::{router, AppState, RouterOptions},
};

/// Preflight answers are cached by browsers this long.
const CORS_MAX_AGE_S: u64 = 600;

/// Builds the whole application. `limiter` is `Some` when rate limiting is configured.
pub fn app(state: AppState, cfg: &Config, limiter: Option<Limiter>) -> Router {
    let auth = state.auth.clone();
    let mut app = router(
        state,
        RouterOptions {
            auth: &auth,
            public_metrics: cfg.public_metrics,
            limiter,
        },
    );
    app = app
        .layer(DefaultBodyLimit::max(cfg.body_bytes_max))
        .layer(RequestBodyLimitLayer::new(cfg.body_bytes_max))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            cfg.request_timeout,
        ))
        .layer(crate::layers::JsonErrorsLayer);
    if !cfg.disable_http_log {
        app = app.layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        );
    }
    let rules = crate::browser::BrowserRules::new(cfg.host, &cfg.allowed_hosts, &cfg.cors_origins);
    app = app.layer(crate::browser::Guard::new(rules));
    if let Some(c) = cors(&cfg.cors_origins) {
        app = app.layer(c);
    }
    // `X-Content-Type-Options: nosniff` on every answer: a browser never runs a value as a script.
    // Plain tower layers, not `from_fn` middlewares (which box and clone the stack inside them on
    // every request: measured by bench/http/instructions_per_request).
    app.layer(crate::layers::TrackLayer)
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(CORS_MAX_AGE_S)),
    )
}

/// Shared state for tests and `serve`.
pub fn state(
    db: Arc<kyrodb_storage::Db>,
    collections: Arc<kyrodb_search::Collections>,
    embed: Arc<crate::embed::EmbedState>,
    cfg: &Config,
    cluster: Option<Arc<kyrodb_cluster::Cluster>>,
) -> AppState {
    let auth = Auth::new(cfg.api_keys.clone()).with_store(crate::keys::KeyStore::new(db.clone()));
    Arc::new(crate::routes::Shared {
        db,
        collections,
        embed,
        limits: crate::routes::Limits {
            body_bytes_max: cfg.body_bytes_max,
            value_bytes_max: cfg.value_bytes_max,
            batch_keys_max: cfg.batch_keys_max,
            scan_limit_max: cfg.scan_limit_max,
            response_bytes_max: cfg.response_bytes_max,
            documents_per_batch_max: cfg.documents_per_batch_max,
        },
        metrics: crate::metrics::handle(),
        shutting_down: Default::default(),
        openapi_json: crate::openapi::document_json(crate::openapi::DocOptions {
            auth: !cfg.api_keys.is_empty(),
            public_metrics: cfg.public_metrics,
            rate_limit: cfg.rate_limit.is_some(),
            scan_limit_max: cfg.scan_limit_max,
            batch_keys_max: cfg.batch_keys_max,
        }),
        cluster,
        auth,
        audit: crate::audit::Audit::new(&cfg.data_dir.join("audit")),
        backups: crate::routes::backup::Backups::new(cfg.backup_dirs.clone()),
        started: std::time::Instant::now(),
        started_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    })
}

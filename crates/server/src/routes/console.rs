//! The web console: one page and its script and style, compiled into the binary (no CDN, works
//! offline). The page talks to the same HTTP API as every client, with the token typed into it.
//! Sources: `crates/server/console/`.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

const INDEX: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// Only this server's own files and API; no inline script, no other origin.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The web console: overview, key-value lookup, collections browser, hybrid search playground.
#[utoipa::path(get, path = "/console", tag = "console",
    responses((status = 200, content_type = "text/html; charset=utf-8", body = String)))]
pub async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

/// The console's script.
#[utoipa::path(get, path = "/console/app.js", tag = "console",
    responses((status = 200, content_type = "text/javascript; charset=utf-8", body = String)))]
pub async fn script() -> Response {
    page(APP_JS, "text/javascript; charset=utf-8")
}

/// The console's style sheet.
#[utoipa::path(get, path = "/console/app.css", tag = "console",
    responses((status = 200, content_type = "text/css; charset=utf-8", body = String)))]
pub async fn style() -> Response {
    page(APP_CSS, "text/css; charset=utf-8")
}

//! What a web page may not do to a server it can reach (README, "Security"):
//! - **Host** (DNS rebinding): on a loopback bind the `Host` header must name a loopback host
//!   (`localhost`, `*.localhost`, `127.x.x.x`, `[::1]`, any port) or one of `allowed_hosts`; on
//!   other binds the check applies only when `allowed_hosts` is set. Else 403 `host_not_allowed`.
//! - **Cross-site writes** (CSRF): a POST, PUT, PATCH or DELETE carrying an `Origin` that is neither
//!   the server's own (same host and port as `Host`) nor in the CORS list, or without `Origin` but
//!   with `Sec-Fetch-Site: cross-site | same-site`, gets 403 `cross_origin_refused`.
//! - **JSON bodies** ([`crate::routes::extract::JsonBody`]): `text/plain` and `multipart/*` bodies
//!   are refused (415 `unsupported_media_type`), and a request from a browser (it carries `Origin`
//!   or `Sec-Fetch-Site`) must say `application/json`. Clients without those headers (curl, the
//!   SDK, the CLI) are unaffected: `curl -d` (form content type or none) keeps working.

use crate::error::ErrorCode;
use std::{
    convert::Infallible,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    extract::Request,
    http::{header, HeaderMap, Method},
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

/// Echoed input is cut to this many characters in error messages.
const ECHO_CHARS_MAX: usize = 100;

/// The rules, from the configuration.
#[derive(Debug, Clone)]
pub struct BrowserRules {
    /// Check `Host` at all (loopback bind, or `allowed_hosts` set).
    pub check_host: bool,
    /// Accepted besides loopback names: exact names or `*.suffix` (lower case, no port).
    pub allowed_hosts: Vec<String>,
    /// CORS origins (`*` accepts every origin).
    pub cors_origins: Vec<String>,
}

impl BrowserRules {
    /// The rules for a server bound to `bind`: `Host` is checked on a loopback bind or when
    /// `allowed_hosts` is set.
    pub fn new(bind: IpAddr, allowed_hosts: &[String], cors_origins: &[String]) -> Self {
        BrowserRules {
            check_host: bind.is_loopback() || !allowed_hosts.is_empty(),
            allowed_hosts: allowed_hosts.to_vec(),
            cors_origins: cors_origins.to_vec(),
        }
    }

    /// Whether `host` (a `Host` header: name or address, optional port) may be served.
    pub fn host_allowed(&self, host: &str) -> bool {
        // Compared without case and without allocating: this runs on every request.
        let name = host_name(host);
        if is_loopback_name(name) {
            return true;
        }
        self.allowed_hosts
            .iter()
            .any(|a| match a.strip_prefix("*.") {
                Some(suffix) => {
                    strip_suffix_ci(name, suffix).is_some_and(|p| p.ends_with('.') && p.len() > 1)
                }
                None => a.eq_ignore_ascii_case(name),
            })
    }

    /// Whether a state-changing request with this `Origin` may go on: the server's own origin (its
    /// host and port are the request's `Host`) or a listed CORS origin.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        if self.cors_origins.iter().any(|o| o == "*" || o == origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        match (authority, host) {
            (Some(a), Some(h)) => a.eq_ignore_ascii_case(h),
            _ => false,
        }
    }
}

/// The name part of a `Host` value: `[::1]:8080` → `[::1]`, `a.b:80` → `a.b`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(n, _)| n)
}

/// `s` without `suffix`, compared without ASCII case.
fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let at = s.len().checked_sub(suffix.len())?;
    (s.is_char_boundary(at) && s[at..].eq_ignore_ascii_case(suffix)).then(|| &s[..at])
}

fn is_loopback_name(name: &str) -> bool {
    // The usual names first, without parsing.
    if matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
        return true;
    }
    if name.eq_ignore_ascii_case("localhost") || strip_suffix_ci(name, ".localhost").is_some() {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request comes from a web page (browsers add these headers; curl and SDKs don't).
pub fn from_browser(h: &HeaderMap) -> bool {
    h.contains_key(header::ORIGIN) || h.contains_key("sec-fetch-site")
}

/// Cuts `s` to [`ECHO_CHARS_MAX`] characters for an error message.
fn echo(s: &str) -> String {
    crate::error::cut_echo(s, ECHO_CHARS_MAX)
}

/// The rules as a tower layer (not a `from_fn` middleware, which boxes and clones the stack inside
/// it on every request: measured by bench/http/cpu_per_request). A request that passes goes to the
/// inner service with nothing added; only a refusal allocates.
#[derive(Debug, Clone)]
pub struct Guard(Arc<BrowserRules>);

impl Guard {
    /// The layer applying `rules`.
    pub fn new(rules: BrowserRules) -> Self {
        Guard(Arc::new(rules))
    }
}

impl<S> tower_layer::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            rules: self.0.clone(),
            inner,
        }
    }
}

/// A service behind [`Guard`].
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    rules: Arc<BrowserRules>,
    inner: S,
}

type Refused = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> tower_service::Service<Request> for Guarded<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::Either<S::Future, Refused>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        use futures_util::future::Either;
        match self.rules.refusal(&req) {
            None => Either::Left(self.inner.call(req)),
            Some((e, drain)) => Either::Right(Box::pin(async move {
                if drain {
                    drain_small_body(req).await;
                }
                Ok(e.into_response())
            })),
        }
    }
}

impl BrowserRules {
    /// The Host rule on every request, the cross-site rule on state-changing ones: the error to
    /// answer, and whether to drain the body first (see [`drain_small_body`]).
    fn refusal(&self, req: &Request) -> Option<(ApiError, bool)> {
        let h = req.headers();
        // HTTP/2 carries the host as the `:authority` pseudo-header (the URI's), not as `Host`.
        let authority = req.uri().authority().map(|a| a.as_str());
        if self.check_host {
            // Every Host header and the authority must pass (a second one must not smuggle a
            // foreign name); an unreadable one is refused. Without either (HTTP/1.0) there is
            // nothing to rebind.
            let bad = h
                .get_all(header::HOST)
                .iter()
                .map(|v| v.as_bytes())
                .chain(authority.map(str::as_bytes))
                .find(|v| !std::str::from_utf8(v).is_ok_and(|v| self.host_allowed(v)));
            if let Some(bad) = bad {
                let shown = String::from_utf8_lossy(bad).into_owned();
                let e = ApiError::of(ErrorCode::HostNotAllowed,
                    format!(
                        "Host {:?} is not served: a server on a loopback address answers only loopback host names (DNS rebinding); add the name to KYRODB_ALLOWED_HOSTS to serve it",
                        echo(&shown)
                    ),
                );
                return Some((e, false));
            }
        }
        let writes = matches!(
            *req.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        if !writes {
            return None;
        }
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(authority);
        let origin = h
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let refused = match origin {
            Some(o) => !self.origin_allowed(o, host),
            None => h
                .get("sec-fetch-site")
                .is_some_and(|v| v == "cross-site" || v == "same-site"),
        };
        refused.then(|| {
            let e = ApiError::of(ErrorCode::CrossOriginRefused,
                format!(
                    "a {} from another site (Origin {:?}) is refused: only the server's own pages and the origins in KYRODB_CORS_ORIGINS may write",
                    req.method(),
                    echo(origin.unwrap_or("none"))
                ),
            );
            (e, true)
        })
    }
}

/// Reads (and drops) a refused request's body when it is small and arrives at once: an HTTP/2
/// answer sent before the request body ends is followed by a stream reset, which some clients
/// (curl 7.88) report instead of the answer. Larger or slow bodies are left unread.
async fn drain_small_body(req: Request) {
    const DRAIN_BYTES_MAX: usize = 64 << 10;
    let body = req.into_body();
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        axum::body::to_bytes(body, DRAIN_BYTES_MAX),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(bind: &str, allowed: &[&str], cors: &[&str]) -> BrowserRules {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        BrowserRules::new(bind.parse().unwrap(), &s(allowed), &s(cors))
    }

    #[test]
    fn loopback_binds_serve_only_loopback_host_names_and_the_listed_ones() {
        let r = rules("127.0.0.1", &["db.internal", "*.example.com"], &[]);
        assert!(r.check_host);
        for ok in [
            "localhost",
            "localhost:8080",
            "app.localhost:1",
            "127.0.0.1:8080",
            "127.9.9.9",
            "[::1]:8080",
            "[::1]",
            "DB.internal:80",
            "a.example.com",
        ] {
            assert!(r.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:8080",
            "localhost.evil.com",
            "example.com",
            ".example.com",
            "10.0.0.1",
            "[::2]",
            "",
        ] {
            assert!(!r.host_allowed(bad), "{bad}");
        }
        assert!(!rules("0.0.0.0", &[], &[]).check_host);
        assert!(rules("0.0.0.0", &["a"], &[]).check_host);
    }

    #[test]
    fn only_the_servers_own_origin_and_listed_ones_may_write() {
        let r = rules("127.0.0.1", &[], &["https://app.example"]);
        assert!(r.origin_allowed("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(r.origin_allowed("https://app.example", Some("127.0.0.1:8080")));
        assert!(!r.origin_allowed("http://127.0.0.1:9999", Some("127.0.0.1:8080")));
        assert!(!r.origin_allowed("http://evil.com", Some("127.0.0.1:8080")));
        assert!(!r.origin_allowed("null", Some("127.0.0.1:8080")));
        assert!(rules("127.0.0.1", &[], &["*"]).origin_allowed("http://x", None));
    }
}

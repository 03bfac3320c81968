//! The router's per-request layers that run on every answer, written as plain tower services: the
//! request-count metrics ([`Track`]) and the JSON shape of every error ([`JsonErrors`]). An axum
//! `from_fn` middleware clones and boxes the whole stack inside it and boxes its future on every
//! request; these add nothing to a request that passes (bench/http/instructions_per_request
//! measures it).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Instant,
};

use axum::{
    body::Body,
    extract::{MatchedPath, Request},
    http::{header, HeaderValue},
    response::Response,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{code_for_status, error_json};

/// Bytes of a non-JSON error body kept as the JSON error's message.
const ERROR_TEXT_BYTES_MAX: usize = 1024;

/// Records `kyrodb_http_requests_total{route,method,status}` and
/// `kyrodb_http_request_duration_seconds{route,method,status}` around every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track(inner)
    }
}

/// A service behind [`TrackLayer`].
#[derive(Debug, Clone)]
pub struct Track<S>(S);

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route: &'static str = req
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| crate::routes::intern_route(p.as_str()));
        let method = crate::metrics::method_label(req.method());
        TrackFuture {
            started: Instant::now(),
            route,
            method,
            inner: self.0.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Track`].
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        route: &'static str,
        method: &'static str,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for TrackFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(resp) = ready!(this.inner.poll(cx));
        crate::metrics::record_request(this.route, this.method, resp.status(), *this.started);
        Poll::Ready(Ok(resp))
    }
}

/// Gives every error the JSON shape, including those made outside our handlers (405 from the router,
/// 408 from the timeout, 413 from the body limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonErrorsLayer;

impl<S> Layer<S> for JsonErrorsLayer {
    type Service = JsonErrors<S>;

    fn layer(&self, inner: S) -> JsonErrors<S> {
        JsonErrors(inner)
    }
}

/// A service behind [`JsonErrorsLayer`].
#[derive(Debug, Clone)]
pub struct JsonErrors<S>(S);

impl<S> Service<Request> for JsonErrors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = JsonErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        JsonErrorsFuture::Inner {
            inner: self.0.call(req),
        }
    }
}

type Rewriting = Pin<Box<dyn Future<Output = Response> + Send>>;

pin_project_lite::pin_project! {
    /// The future of [`JsonErrors`]: the inner service's, then (only for an error that is not JSON)
    /// the rewrite, which reads the error's body.
    #[project = JsonErrorsProj]
    // The macro takes no doc comments on variant fields; the variants say what they hold.
    #[allow(missing_docs)]
    pub enum JsonErrorsFuture<F> {
        /// Waiting for the inner service's response.
        Inner { #[pin] inner: F },
        /// Rewriting a non-JSON error response into the JSON shape.
        Rewrite { rewrite: Rewriting },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for JsonErrorsFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                JsonErrorsProj::Inner { inner } => {
                    let Ok(resp) = ready!(inner.poll(cx));
                    if !needs_json(&resp) {
                        return Poll::Ready(Ok(resp));
                    }
                    let rewrite = Box::pin(as_json(resp));
                    self.set(JsonErrorsFuture::Rewrite { rewrite });
                }
                JsonErrorsProj::Rewrite { rewrite } => return rewrite.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// An error answer whose body is not JSON.
fn needs_json(resp: &Response) -> bool {
    let status = resp.status();
    (status.is_client_error() || status.is_server_error())
        && !resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// The same error with the JSON shape; its text (if any) becomes the message.
async fn as_json(resp: Response) -> Response {
    let status = resp.status();
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, ERROR_TEXT_BYTES_MAX)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error")
    } else {
        text.trim()
    };
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        Body::from(error_json(code_for_status(status), message)),
    )
}

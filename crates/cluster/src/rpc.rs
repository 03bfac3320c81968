//! The Raft port's serving side: every request carries the cluster secret (compared in constant
//! time; 401 without it, decided from the headers before any of the body is read). Each route has
//! its own body cap ([`body_max`]) and a body must arrive within [`BODY_READ_TIMEOUT`]; the
//! connection caps and head timeouts are the server's accept loop's (the caller serves
//! [`Cluster::raft_router`]). Routes: `/raft/append`, `/raft/vote` (openraft's RPCs),
//! `/raft/forward` (a follower hands the leader writes it took), `/raft/read_index` (a follower
//! asks the leader for a linearizable read point), `/raft/applied`, `/raft/change` and the
//! snapshot transfer (`/raft/snapshot/{begin,chunk,finish}`).

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use serde::Serialize;

use crate::{
    net::{
        SnapBegin, SnapChunk, BODY_MAX, BODY_READ_TIMEOUT, CONTROL_BODY_MAX, FORWARD_BODY_MAX,
        SECRET_HEADER, SNAPSHOT_CHUNK_BYTES,
    },
    node::Cluster,
    types::{NodeId, TypeConfig},
};

impl Cluster {
    /// The Raft port's routes (the cluster secret is checked from the headers before a body is
    /// read; bodies are capped per route and must arrive within 60 s).
    pub fn raft_router(self: &Arc<Self>) -> Router {
        router(self.clone())
    }
}

/// The Raft port's routes.
fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/forward", post(forward))
        .route("/raft/read_index", post(read_index))
        .route("/raft/applied", post(applied))
        .route("/raft/change", post(change))
        .route("/raft/snapshot/begin", post(snapshot_begin))
        .route("/raft/snapshot/chunk", post(snapshot_chunk))
        .route("/raft/snapshot/finish", post(snapshot_finish))
        // The guard below caps and reads the body; the handlers' extractor takes what it read.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(cluster.clone(), guard))
        .with_state(cluster)
}

/// The most body bytes a route takes.
fn body_max(path: &str) -> usize {
    match path {
        "/raft/append" => BODY_MAX,
        "/raft/forward" => FORWARD_BODY_MAX,
        "/raft/snapshot/chunk" => SNAPSHOT_CHUNK_BYTES as usize + CONTROL_BODY_MAX,
        // A snapshot's file list.
        "/raft/snapshot/begin" => 16 << 20,
        _ => CONTROL_BODY_MAX,
    }
}

/// Runs before every route: the secret is checked from the headers (nothing of the body is read
/// for a request without it), then the body is read under the route's cap and
/// [`BODY_READ_TIMEOUT`].
async fn guard(State(c): State<Arc<Cluster>>, req: Request, next: Next) -> Response {
    if !authorised(&c, req.headers()) {
        return unauthorised();
    }
    let path = req.uri().path().to_owned();
    if c.seed_pending()
        && (path == "/raft/append" || path == "/raft/vote" || path.starts_with("/raft/snapshot"))
    {
        c_metric_refused();
        return (
            StatusCode::CONFLICT,
            "this node holds a restored backup waiting to seed a new cluster (kyrodb cluster init \
             on it alone); it cannot join another one: start a joining node on an empty data directory",
        )
            .into_response();
    }
    let max = body_max(&path);
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        c_metric_refused();
        return too_large(&path, max);
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => {
            c_metric_refused();
            too_large(&path, max)
        }
        Err(_) => {
            c_metric_refused();
            (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "{path}: the body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )
                .into_response()
        }
    }
}

fn too_large(path: &str, max: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("{path}: body larger than {max} bytes, or cut off"),
    )
        .into_response()
}

fn authorised(c: &Cluster, h: &HeaderMap) -> bool {
    use subtle::ConstantTimeEq;
    let got = h
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    bool::from(got.ct_eq(c.secret().as_bytes()))
}

fn reply<T: Serialize>(v: &T) -> Response {
    match bincode::serialize(v) {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn refuse(why: String) -> Response {
    (StatusCode::BAD_REQUEST, why).into_response()
}

fn unauthorised() -> Response {
    c_metric_refused();
    (
        StatusCode::UNAUTHORIZED,
        "missing or wrong cluster secret (x-kyrodb-cluster-secret)",
    )
        .into_response()
}

fn c_metric_refused() {
    metrics::counter!(crate::families::CLUSTER_RPC_REFUSED_TOTAL.name).increment(1);
}

async fn append(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(&body) {
        Ok(req) => reply(&c.raft().append_entries(req).await),
        Err(e) => refuse(format!("append: {e}")),
    }
}

async fn vote(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match bincode::deserialize::<VoteRequest<NodeId>>(&body) {
        Ok(req) => reply(&c.raft().vote(req).await),
        Err(e) => refuse(format!("vote: {e}")),
    }
}

async fn forward(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match bincode::deserialize::<Vec<Vec<u8>>>(&body) {
        Ok(writes) => reply(&c.take_forwarded(writes).await),
        Err(e) => refuse(format!("forward: {e}")),
    }
}

async fn read_index(State(c): State<Arc<Cluster>>) -> Response {
    reply(&c.leader_read_index().await)
}

/// Waits (at most the asked time, capped at 10 s) until this node has applied the asked log index;
/// answers its applied index.
async fn applied(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match bincode::deserialize::<(u64, u64)>(&body) {
        Ok((index, wait_ms)) => {
            let wait = Duration::from_millis(wait_ms.min(10_000));
            reply(&c.applied_within(index, wait).await)
        }
        Err(e) => refuse(format!("applied: {e}")),
    }
}

async fn change(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match bincode::deserialize::<crate::node::Change>(&body) {
        Ok(ch) => reply(&c.change_here(ch).await),
        Err(e) => refuse(format!("change: {e}")),
    }
}

async fn snapshot_begin(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match bincode::deserialize::<SnapBegin>(&body) {
        Ok(b) => reply(&c.snapshot_begin(b).await),
        Err(e) => refuse(format!("snapshot begin: {e}")),
    }
}

async fn snapshot_chunk(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match bincode::deserialize::<SnapChunk>(&body) {
        Ok(ch) => reply(&c.snapshot_chunk(ch).await),
        Err(e) => refuse(format!("snapshot chunk: {e}")),
    }
}

async fn snapshot_finish(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match bincode::deserialize::<String>(&body) {
        Ok(id) => reply(&c.snapshot_finish(id).await),
        Err(e) => refuse(format!("snapshot finish: {e}")),
    }
}

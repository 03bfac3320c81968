//! Cluster mode: status, membership changes, and the read-consistency rule applied to data reads
//! (linearizable by default, `?consistency=stale` for this node's state).

use crate::error::ErrorCode;
use axum::{
    extract::{Path, Request, State},
    http::{HeaderValue, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{extract::JsonBody, AppState};
use crate::error::{ApiError, ErrorBody};
use crate::keys::Source;

/// Header carrying the applied Raft index a read reflects (cluster mode).
pub const APPLIED_INDEX_HEADER: &str = "x-kyrodb-applied-index";

fn cluster(s: &AppState) -> Result<&std::sync::Arc<kyrodb_cluster::Cluster>, ApiError> {
    s.cluster.as_ref().ok_or_else(|| {
        ApiError::of(
            ErrorCode::NotClustered,
            "this server runs as a single node (start it with --node-id and --cluster)",
        )
    })
}

/// A membership change that did not complete: refused as asked (409, nothing changed), no leader
/// in time (503, nothing changed, retry), or cut off on its way (503, it may have been applied).
fn change_failed(f: kyrodb_cluster::ChangeFailure) -> ApiError {
    use kyrodb_cluster::ChangeFailure as F;
    match f {
        F::Refused(m) => ApiError::of(ErrorCode::ClusterChangeRefused, m),
        F::NoLeader(m) => ApiError::of(ErrorCode::ClusterUnavailable, m).retry_after(1),
        F::Unknown(m) => ApiError::of(
            ErrorCode::ClusterChangeFailed,
            format!("{m} (the change may or may not have been applied: see /v1/cluster/status)"),
        )
        .retry_after(1),
    }
}

/// Role, term, leader, commit and applied index, voters, learners, each follower's lag (on the
/// leader), elections seen.
#[utoipa::path(get, path = "/v1/cluster/status", tag = "cluster",
    responses((status = 200, body = super::collections::AnyObject),
        (status = 404, description = "not_clustered", body = ErrorBody)))]
pub async fn status(State(s): State<AppState>) -> Result<Response, ApiError> {
    let c = cluster(&s)?;
    Ok(Json(c.status().await).into_response())
}

/// Initialises the cluster with the voters listed in this node's `--cluster` (once, on one node;
/// 409 `already_initialised` after).
#[utoipa::path(post, path = "/v1/cluster/init", tag = "cluster",
    responses((status = 200, body = super::collections::AnyObject),
        (status = 404, description = "not_clustered", body = ErrorBody),
        (status = 409, description = "already_initialised, or cluster_change_refused (a restored backup listing other voters)", body = ErrorBody),
        (status = 503, description = "cluster_change_failed", body = ErrorBody)))]
pub async fn init(State(s): State<AppState>) -> Result<Response, ApiError> {
    let c = cluster(&s)?;
    match c.initialize().await {
        Ok(true) => Ok(Json(c.status().await).into_response()),
        Ok(false) => Err(ApiError::of(
            ErrorCode::AlreadyInitialised,
            "the cluster is already initialised",
        )),
        Err(f) => Err(change_failed(f)),
    }
}

/// `POST /v1/cluster/nodes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    /// The new node's id (positive, unused).
    #[serde(deserialize_with = "super::extract::de_key")]
    pub node_id: u64,
    /// The new node's Raft address, IP:PORT.
    pub raft_addr: String,
}

/// Adds a node: it joins as a learner, catches up from the log, then becomes a voter. Returns
/// once it votes (or 503 with why).
#[utoipa::path(post, path = "/v1/cluster/nodes", tag = "cluster", request_body = AddNode,
    responses((status = 200, body = super::collections::AnyObject), (status = 400, body = ErrorBody),
        (status = 404, description = "not_clustered", body = ErrorBody),
        (status = 409, description = "cluster_change_refused", body = ErrorBody),
        (status = 503, description = "cluster_unavailable (no leader in time); cluster_change_failed (cut off: may have been applied)", body = ErrorBody)))]
pub async fn add_node(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<AddNode>,
) -> Result<Response, ApiError> {
    let c = cluster(&s)?;
    if req.node_id == 0 {
        return Err(ApiError::of(
            ErrorCode::InvalidNodeId,
            "node_id must be a positive integer",
        ));
    }
    if req.raft_addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(ApiError::of(
            ErrorCode::InvalidRaftAddr,
            format!("raft_addr {:?} must be IP:PORT", req.raft_addr),
        ));
    }
    let st = c
        .change(kyrodb_cluster::Change::Add {
            id: req.node_id,
            raft_addr: req.raft_addr,
        })
        .await
        .map_err(change_failed)?;
    Ok(Json(st).into_response())
}

/// Removes a node from the voters.
#[utoipa::path(delete, path = "/v1/cluster/nodes/{id}", tag = "cluster",
    params(("id" = u64, Path, description = "the node's id")),
    responses((status = 200, body = super::collections::AnyObject), (status = 400, body = ErrorBody),
        (status = 404, description = "not_clustered or no_such_node", body = ErrorBody),
        (status = 409, description = "cluster_change_refused (e.g. the last voter)", body = ErrorBody),
        (status = 503, description = "cluster_unavailable (no leader in time); cluster_change_failed (cut off: may have been applied)", body = ErrorBody)))]
pub async fn remove_node(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = cluster(&s)?;
    let id: u64 = id.parse().ok().filter(|i| *i > 0).ok_or_else(|| {
        ApiError::of(ErrorCode::InvalidNodeId, format!("{id:?} is not a node id"))
    })?;
    if !c.status().await.voters.contains_key(&id) {
        return Err(ApiError::of(
            ErrorCode::NoSuchNode,
            format!("node {id} is not a voter of this cluster"),
        ));
    }
    let st = c
        .change(kyrodb_cluster::Change::Remove { id })
        .await
        .map_err(change_failed)?;
    Ok(Json(st).into_response())
}

/// What cluster mode does before a route runs, derived from the route table
/// ([`Consistency::of`]): no list of paths to keep beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// A data read: a read point confirmed by a quorum (or, with `?consistency=stale`, this node
    /// as it is); the request's stored key is checked again there.
    Read,
    /// A key-value write or keyspace change: on a follower, a stored key is confirmed at a read
    /// point before the write is forwarded.
    Write,
    /// A collection route, read or write: a read point, then this node's collection registry
    /// caught up with the catalog up to it.
    Collection,
}

impl Consistency {
    /// A route's class from its table row: its OpenAPI tag and the role it needs. Routes tagged
    /// `collections` are [`Consistency::Collection`]; routes tagged `kv` are reads when the read
    /// role suffices, else writes; the rest (probes, the node's admin, keys, embedding) are none.
    pub fn of(tag: &str, role: Option<crate::auth::Role>) -> Option<Consistency> {
        match (tag, role) {
            ("collections", _) => Some(Consistency::Collection),
            ("kv", Some(crate::auth::Role::Read)) => Some(Consistency::Read),
            ("kv", Some(_)) => Some(Consistency::Write),
            _ => None,
        }
    }
}

/// 401 when the request's stored key is gone from this node's state (revoked).
fn key_still_holds(s: &AppState) -> Result<(), ApiError> {
    let (Some(p), Some(store)) = (crate::keys::current(), s.auth.store()) else {
        return Ok(());
    };
    if store.still_holds(&p)? {
        return Ok(());
    }
    Err(ApiError::of(ErrorCode::Unauthorized, "unknown token"))
}

/// Takes `consistency` out of the query: Ok(true) for stale.
fn take_consistency(uri: &Uri) -> Result<(bool, Option<Uri>), ApiError> {
    let Some(q) = uri.query() else {
        return Ok((false, None));
    };
    let mut stale = None;
    let rest: Vec<&str> = q
        .split('&')
        .filter(|kv| {
            if let Some(v) = kv.strip_prefix("consistency=") {
                stale = Some(v.to_owned());
                false
            } else {
                true
            }
        })
        .collect();
    let Some(v) = stale else {
        return Ok((false, None));
    };
    let stale = match v.as_str() {
        "stale" => true,
        "linearizable" => false,
        _ => {
            return Err(ApiError::of(
                ErrorCode::InvalidConsistency,
                format!("consistency={v:?}: use linearizable (the default) or stale"),
            ))
        }
    };
    let pq = if rest.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    Ok((stale, Uri::from_parts(parts).ok()))
}

/// Cluster mode, data reads: waits for a read point confirmed by a quorum (or, with
/// `consistency=stale`, reads this node as it is); tells the applied index either way.
pub async fn read_consistency(
    State((s, class)): State<(AppState, Consistency)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(c) = s.cluster.clone() else {
        return next.run(req).await;
    };
    let collections = class == Consistency::Collection;
    if class == Consistency::Write {
        // A key-value write by a stored key on a follower: the key was looked up in this node's
        // state, which may not have applied a revocation yet (it was cut off when the key was
        // revoked); confirm the key at a read point first, one more round trip to the leader.
        let by_stored_key = crate::keys::current().is_some_and(|p| p.source == Source::Key);
        if by_stored_key && !c.is_leader() {
            if let Err(e) = c.read_barrier().await {
                return ApiError::from(e).into_response();
            }
            if let Err(e) = key_still_holds(&s) {
                return e.into_response();
            }
        }
        return next.run(req).await;
    }
    let (stale, uri) = match take_consistency(req.uri()) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    if let Some(u) = uri {
        *req.uri_mut() = u;
    }
    let index = if stale {
        c.applied_index()
    } else {
        match c.read_barrier().await {
            Ok(i) => i,
            Err(e) => return ApiError::from(e).into_response(),
        }
    };
    // The key was looked up before the read point: a revocation applied since refuses it now.
    if !stale {
        if let Err(e) = key_still_holds(&s) {
            return e.into_response();
        }
    }
    if collections {
        let cs = s.collections.clone();
        let caught_up = tokio::task::spawn_blocking(move || {
            cs.wait_catalog(std::time::Duration::from_secs(10))
        })
        .await
        .unwrap_or(false);
        if !caught_up {
            return ApiError::of(
                ErrorCode::ClusterUnavailable,
                "this node's collection registry did not catch up with the catalog within 10 s",
            )
            .retry_after(1)
            .into_response();
        }
    }
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(APPLIED_INDEX_HEADER, HeaderValue::from(index));
    resp
}

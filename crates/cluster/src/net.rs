//! The Raft port: HTTP/1.1 between nodes, bincode bodies, every request carrying the cluster
//! secret (`x-kyrodb-cluster-secret`, compared in constant time; 401 without it). Routes:
//! `/raft/append`, `/raft/vote` (openraft's RPCs), `/raft/forward` (a follower hands the leader
//! writes it took), `/raft/read_index` (a follower asks the leader for a linearizable read point).

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use openraft::{
    error::{
        Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
        ReplicationClosed, StreamingError, Unreachable,
    },
    network::{RPCOption, RaftNetwork, RaftNetworkFactory},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, SnapshotResponse, VoteRequest, VoteResponse,
    },
    Snapshot, Vote,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    node::Cluster,
    types::{NodeAddr, NodeId, Outcome, TypeConfig},
};

pub(crate) const SECRET_HEADER: &str = "x-kyrodb-cluster-secret";
/// The sending node's id, on every Raft request (logs; fault-injection proxies route by it).
pub(crate) const FROM_HEADER: &str = "x-kyrodb-from";
/// Largest body on the Raft port (a batch of entries; proposals are bounded far below).
pub(crate) const BODY_MAX: usize = 512 << 20;

/// A follower's forwarded writes, answered by the leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForwardReply {
    /// Committed and applied on the leader at `index`, with each write's outcome.
    Done { index: u64, outcomes: Vec<Outcome> },
    /// Not proposed: this node is not the leader (the one it knows, if any).
    NotLeader { leader: Option<NodeId> },
    /// Proposed, outcome unknown (leadership lost, timeout).
    Indeterminate(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ReadReply {
    Index(u64),
    NotLeader { leader: Option<NodeId> },
    Failed(String),
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// What every request to a peer needs: the HTTP client and the secret.
#[derive(Clone)]
pub(crate) struct Peers {
    client: HttpClient,
    secret: Arc<str>,
    from: NodeId,
}

/// Why a call to a peer failed: before the request could have arrived (safe to retry
/// elsewhere), or after (it may have been acted on).
#[derive(Debug)]
pub(crate) enum CallError {
    NotSent(String),
    Unknown(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(m) | CallError::Unknown(m) => f.write_str(m),
        }
    }
}

impl Peers {
    pub(crate) fn new(secret: &str, from: NodeId) -> Peers {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(500)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(http);
        Peers {
            client,
            secret: Arc::from(secret),
            from,
        }
    }

    /// POSTs `body` (bincode) to `path` on `addr` within `ttl`; decodes the bincode answer.
    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        ttl: Duration,
    ) -> Result<Resp, CallError> {
        let bytes = bincode::serialize(body)
            .map_err(|e| CallError::NotSent(format!("encoding the request: {e}")))?;
        let req = hyper::Request::post(format!("http://{addr}{path}"))
            .header(SECRET_HEADER, &*self.secret)
            .header(FROM_HEADER, self.from)
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| CallError::NotSent(e.to_string()))?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    CallError::NotSent(format!("{addr}: {e}"))
                } else {
                    CallError::Unknown(format!("{addr}: {e}"))
                }
            })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Unknown(format!("{addr}: reading the answer: {e}")))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(CallError::NotSent(format!(
                    "{addr}{path}: HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )));
            }
            bincode::deserialize(&body)
                .map_err(|e| CallError::Unknown(format!("{addr}{path}: bad answer: {e}")))
        };
        match tokio::time::timeout(ttl, fut).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Unknown(format!(
                "{addr}{path}: no answer within {} ms",
                ttl.as_millis()
            ))),
        }
    }
}

/// openraft's view of the network: one [`PeerClient`] per target.
pub(crate) struct Network {
    pub(crate) peers: Peers,
}

pub(crate) struct PeerClient {
    peers: Peers,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> PeerClient {
        PeerClient {
            peers: self.peers.clone(),
            target,
            addr: node.raft.clone(),
        }
    }
}

impl PeerClient {
    async fn rpc<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeAddr, E>> {
        let r: Result<Result<Resp, E>, CallError> = self
            .peers
            .call(&self.addr, path, req, option.hard_ttl())
            .await;
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(CallError::NotSent(m)) => Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(m),
            ))),
            Err(CallError::Unknown(m)) => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other(m),
            ))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }

    #[allow(deprecated)]
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeAddr, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Unreachable(Unreachable::new(
            &std::io::Error::other("snapshot transfer is not built yet"),
        )))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote<NodeId>,
        _snapshot: Snapshot<TypeConfig>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        Err(StreamingError::Unreachable(Unreachable::new(
            &std::io::Error::other("snapshot transfer is not built yet"),
        )))
    }
}

/// The Raft port's routes.
pub(crate) fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/forward", post(forward))
        .route("/raft/read_index", post(read_index))
        .route("/raft/change", post(change))
        .layer(DefaultBodyLimit::max(BODY_MAX))
        .with_state(cluster)
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
    metrics::counter!("kyrodb_cluster_rpc_refused_total").increment(1);
}

async fn append(State(c): State<Arc<Cluster>>, h: HeaderMap, body: Bytes) -> Response {
    if !authorised(&c, &h) {
        return unauthorised();
    }
    match bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(&body) {
        Ok(req) => reply(&c.raft().append_entries(req).await),
        Err(e) => refuse(format!("append: {e}")),
    }
}

async fn vote(State(c): State<Arc<Cluster>>, h: HeaderMap, body: Bytes) -> Response {
    if !authorised(&c, &h) {
        return unauthorised();
    }
    match bincode::deserialize::<VoteRequest<NodeId>>(&body) {
        Ok(req) => reply(&c.raft().vote(req).await),
        Err(e) => refuse(format!("vote: {e}")),
    }
}

async fn forward(State(c): State<Arc<Cluster>>, h: HeaderMap, body: Bytes) -> Response {
    if !authorised(&c, &h) {
        return unauthorised();
    }
    match bincode::deserialize::<Vec<Vec<u8>>>(&body) {
        Ok(writes) => reply(&c.take_forwarded(writes).await),
        Err(e) => refuse(format!("forward: {e}")),
    }
}

async fn read_index(State(c): State<Arc<Cluster>>, h: HeaderMap) -> Response {
    if !authorised(&c, &h) {
        return unauthorised();
    }
    reply(&c.leader_read_index().await)
}

async fn change(State(c): State<Arc<Cluster>>, h: HeaderMap, body: Bytes) -> Response {
    if !authorised(&c, &h) {
        return unauthorised();
    }
    match bincode::deserialize::<crate::node::Change>(&body) {
        Ok(ch) => reply(&c.change_here(ch).await),
        Err(e) => refuse(format!("change: {e}")),
    }
}

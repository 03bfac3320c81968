//! The Raft port's client side and wire: HTTP/1.1 between nodes, bincode bodies, every request
//! carrying the cluster secret (`x-kyrodb-cluster-secret`). [`Peers`] calls other nodes;
//! [`Network`] is what openraft replicates through. The serving side is `rpc.rs`.

use std::{sync::Arc, time::Duration};

use axum::{body::Bytes, http::StatusCode};
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

use crate::types::{NodeAddr, NodeId, Outcome, TypeConfig};

pub(crate) const SECRET_HEADER: &str = "x-kyrodb-cluster-secret";
/// The sending node's id, on every Raft request (logs; fault-injection proxies route by it).
pub(crate) const FROM_HEADER: &str = "x-kyrodb-from";
/// Largest body on the Raft port: an append of up to 64 entries, each a proposal of up to 4 MiB
/// plus its last write.
pub(crate) const BODY_MAX: usize = 512 << 20;
/// Largest forwarded batch: a follower hands over one client request's writes (the engine's
/// `batch_bytes_max` is 64 MiB by default), bincode-framed.
pub(crate) const FORWARD_BODY_MAX: usize = 128 << 20;
/// Largest body of the small control routes (vote, read index, membership change, finish).
pub(crate) const CONTROL_BODY_MAX: usize = 64 << 10;
/// How long a request body may take to arrive once its head is in (slow senders are cut off).
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Calls one node has in flight to its peers at once (the Raft port of a node with the usual
/// 1,024 descriptors takes 96 connections: two followers at this bound fit).
const PEER_CALLS_MAX: usize = 32;
/// Bytes of a snapshot file per request.
pub(crate) const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;

/// Bytes serialised as one byte string (not element by element).
#[derive(Debug, Clone)]
pub(crate) struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        d.deserialize_byte_buf(crate::types::BytesVisitor).map(Blob)
    }
}

/// Starts a snapshot transfer: what the files will be.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapBegin {
    pub id: String,
    pub vote: Vote<NodeId>,
    pub meta: crate::snapshot::SnapMeta,
}

/// One piece of a snapshot file, with its own checksum.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapChunk {
    pub id: String,
    pub file: String,
    pub offset: u64,
    pub xxh3: u64,
    pub data: Blob,
}

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

type HttpClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// What every request to a peer needs: the HTTP client and the secret.
#[derive(Clone)]
pub(crate) struct Peers {
    client: HttpClient,
    /// Calls in flight from this node at once (forwarded writes, read index, replication): each
    /// may hold a connection, and a peer's Raft port caps its connections.
    calls: Arc<tokio::sync::Semaphore>,
    /// `https` with mutual TLS, else `http`.
    scheme: &'static str,
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
    pub(crate) fn new(
        secret: &str,
        from: NodeId,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Peers, String> {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(500)));
        http.enforce_http(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Without TLS the connector only ever sees http:// (this config is never used; ring as
        // the server's, see server/src/tls.rs).
        #[allow(deprecated)]
        let config = match tls {
            Some(c) => (*c).clone(),
            None => rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(PEER_CALLS_MAX)
            .build(connector);
        Ok(Peers {
            client,
            calls: Arc::new(tokio::sync::Semaphore::new(PEER_CALLS_MAX)),
            scheme,
            secret: Arc::from(secret),
            from,
        })
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
        let req = hyper::Request::post(format!("{}://{addr}{path}", self.scheme))
            .header(SECRET_HEADER, &*self.secret)
            .header(FROM_HEADER, self.from)
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| CallError::NotSent(e.to_string()))?;
        let fut = async {
            // Waiting for a slot is part of the call's time (a closed semaphore cannot happen).
            let _slot = self
                .calls
                .acquire()
                .await
                .map_err(|e| CallError::NotSent(e.to_string()))?;
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

    /// Streams the snapshot's files in chunks (each with its xxh3), then asks the follower to
    /// verify and install them.
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let net = |m: String| StreamingError::Network(NetworkError::new(&std::io::Error::other(m)));
        let dir = snapshot.snapshot.dir.clone();
        let meta = tokio::task::block_in_place(|| crate::snapshot::read_meta(&dir)).map_err(net)?;
        let id = meta.meta.snapshot_id.clone();
        let started = std::time::Instant::now();
        tokio::pin!(cancel);
        let begin = SnapBegin {
            id: id.clone(),
            vote,
            meta: meta.clone(),
        };
        let step = Duration::from_secs(60);
        let r: Result<Result<(), String>, CallError> = self
            .peers
            .call(&self.addr, "/raft/snapshot/begin", &begin, step)
            .await;
        r.map_err(|e| net(e.to_string()))?.map_err(net)?;
        let mut sent = 0u64;
        for f in &meta.files {
            let path = dir.join(&f.name);
            let mut offset = 0u64;
            while offset < f.size {
                let len = (f.size - offset).min(SNAPSHOT_CHUNK_BYTES);
                let data = tokio::task::block_in_place(|| {
                    use std::os::unix::fs::FileExt;
                    let file = std::fs::File::open(&path)?;
                    let mut b = vec![0u8; len as usize];
                    file.read_exact_at(&mut b, offset)?;
                    Ok::<_, std::io::Error>(b)
                })
                .map_err(|e| net(format!("{}: {e}", path.display())))?;
                let chunk = SnapChunk {
                    id: id.clone(),
                    file: f.name.clone(),
                    offset,
                    xxh3: xxhash_rust::xxh3::xxh3_64(&data),
                    data: Blob(data),
                };
                let call = self.peers.call::<_, Result<(), String>>(
                    &self.addr,
                    "/raft/snapshot/chunk",
                    &chunk,
                    step,
                );
                let r = tokio::select! {
                    closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                    r = call => r,
                };
                r.map_err(|e| net(e.to_string()))?.map_err(net)?;
                offset += len;
                sent += len;
            }
        }
        let r: Result<Result<SnapshotResponse<NodeId>, String>, CallError> = self
            .peers
            .call(
                &self.addr,
                "/raft/snapshot/finish",
                &id,
                Duration::from_secs(600),
            )
            .await;
        let resp = r.map_err(|e| net(e.to_string()))?.map_err(net)?;
        metrics::counter!(crate::families::CLUSTER_SNAPSHOT_TRANSFERS_TOTAL.name, "direction" => "sent")
            .increment(1);
        metrics::counter!(crate::families::CLUSTER_SNAPSHOT_SENT_BYTES_TOTAL.name).increment(sent);
        tracing::info!(to = self.target, snapshot = %id, bytes = sent, took_ms = started.elapsed().as_millis() as u64, "snapshot sent");
        Ok(resp)
    }
}

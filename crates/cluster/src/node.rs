//! A cluster node: openraft over our log store and state machine, the Raft port, the proposer
//! (client writes batched into entries), forwarding from followers, read barriers, status.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use kyrodb_storage::{Db, Error as EngineError, LoggedWrite, Replicator};
use openraft::{
    error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError},
    ServerState, SnapshotPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::{
    error::StartError,
    net::{CallError, ForwardReply, Network, Peers, ReadReply},
    sm::{StateMachine, RAFT_KEYSPACE},
    store::{LogStore, RAFT_SEGMENT_BYTES},
    types::{NodeAddr, NodeId, Outcome, Proposal, Raft},
};

/// Bytes of client writes gathered into one entry, at most (the first write always goes in).
const PROPOSAL_BYTES_MAX: usize = 4 << 20;
/// Writes gathered into one entry, at most.
const PROPOSAL_WRITES_MAX: usize = 4096;
/// Entries proposed and not yet committed, at most; writes arriving meanwhile form the next ones.
const PROPOSALS_IN_FLIGHT: usize = 2;

/// How to run this node.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id (positive).
    pub node_id: NodeId,
    /// The initial voters (with this node among them, the cluster initialises itself on first
    /// start); a node started to join later lists the cluster it joins.
    pub members: BTreeMap<NodeId, NodeAddr>,
    /// Where the Raft log lives.
    pub raft_dir: PathBuf,
    /// The shared secret every Raft call carries (at least 16 characters).
    pub secret: String,
    /// The leader's heartbeat interval.
    pub heartbeat_ms: u64,
    /// The election timeout's lower bound (over twice the heartbeat).
    pub election_min_ms: u64,
    /// The election timeout's upper bound.
    pub election_max_ms: u64,
    /// How long a write or read barrier waits for a leader and a quorum before failing.
    pub request_timeout: Duration,
    /// A snapshot (engine checkpoint) is taken after this many entries; the log before it is
    /// then dropped but for the last `snapshot_entries / 2` (at most 1,000) entries.
    pub snapshot_entries: u64,
    /// Mutual TLS to the peers' Raft ports (`https://`): the roots that sign every node's
    /// certificate and this node's own. `None`: plain HTTP (the secret still guards every call).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClusterConfig {
    /// Checks the secret, the id and the timing (heartbeat × 2 < election min < election max).
    pub fn validate(&self) -> Result<(), StartError> {
        let bad = |m: String| Err(StartError::Config(m));
        if self.secret.len() < 16 {
            return bad("the cluster secret (KYRODB_CLUSTER_SECRET) must be at least 16 characters: every node must hold the same one".into());
        }
        if self.node_id == 0 {
            return bad("node ids are positive integers".into());
        }
        if !(self.heartbeat_ms > 0
            && self.heartbeat_ms * 2 < self.election_min_ms
            && self.election_min_ms < self.election_max_ms)
        {
            return bad(format!(
                "need 0 < 2 × heartbeat ({} ms) < election timeout min ({} ms) < max ({} ms)",
                self.heartbeat_ms, self.election_min_ms, self.election_max_ms
            ));
        }
        Ok(())
    }
}

struct Pending {
    write: Bytes,
    reply: Reply,
}

type Proposed = Result<(u64, Outcome), ProposeError>;

/// Where a proposal's outcome goes: an async waiter, or a blocked engine writer's thread.
enum Reply {
    Task(oneshot::Sender<Proposed>),
    Thread(std::sync::mpsc::SyncSender<Proposed>),
}

impl Reply {
    fn send(self, r: Proposed) {
        match self {
            Reply::Task(tx) => {
                let _ = tx.send(r);
            }
            Reply::Thread(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

enum ProposeError {
    NotLeader(Option<NodeId>),
    Indeterminate(String),
}

/// Membership changes, run on the leader (forwarded there from any node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Change {
    /// Adds a node: it becomes a learner, catches up from the log, then a voter.
    Add {
        /// The new node's id.
        id: NodeId,
        /// Its Raft address (`IP:PORT`).
        raft_addr: String,
    },
    /// Removes a node from the voters (and the cluster).
    Remove {
        /// The node's id.
        id: NodeId,
    },
}

/// Why a membership change was not made: not the leader (retried against the next one), or
/// refused / failed (reported).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ChangeError {
    NotLeader,
    /// Failed in a way that may or may not have changed the membership.
    Failed(String),
    /// Not possible as asked; nothing changed.
    Refused(String),
}

fn change_err(e: RaftError<NodeId, ClientWriteError<NodeId, NodeAddr>>) -> ChangeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ChangeError::NotLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ChangeError::Refused(e.to_string())
        }
        e => ChangeError::Failed(e.to_string()),
    }
}

/// Why a membership change ([`Cluster::change`]) did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeFailure {
    /// Not possible as asked (the last voter, a node that is not a voter, a bad address, another
    /// change in progress): nothing changed.
    #[error("{0}")]
    Refused(String),
    /// No leader took the change within the cluster timeout: nothing changed; retry.
    #[error("{0}")]
    NoLeader(String),
    /// The change failed on its way (the leader lost, a call cut off): it may or may not have
    /// been applied; read the cluster status.
    #[error("{0}")]
    Unknown(String),
}

/// One follower's replication progress, as the leader sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Follower {
    /// The follower.
    pub node_id: NodeId,
    /// The last index the leader knows it holds.
    pub matched_index: Option<u64>,
    /// Entries it is behind the leader's last.
    pub lag: Option<u64>,
}

/// `GET /v1/cluster/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This node.
    pub node_id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: &'static str,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The leader's Raft address.
    pub leader_raft_addr: Option<String>,
    /// The last index known committed.
    pub commit_index: Option<u64>,
    /// The last index applied to this node's engine.
    pub applied_index: u64,
    /// The last index in this node's log.
    pub last_log_index: Option<u64>,
    /// Voters and their Raft addresses.
    pub voters: BTreeMap<NodeId, String>,
    /// Learners and their Raft addresses.
    pub learners: BTreeMap<NodeId, String>,
    /// Leader only.
    pub followers: Vec<Follower>,
    /// Elections this node has seen since it started.
    pub elections_seen: u64,
    /// Leader only: time since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Snapshots this node received and installed since it started.
    pub snapshot_transfers: u64,
    /// The last log index the current snapshot covers, and the log's purge point.
    pub snapshot_index: Option<u64>,
    /// The last index purged from the log.
    pub purged_index: Option<u64>,
}

/// A snapshot being received.
struct Incoming {
    id: String,
    vote: openraft::Vote<NodeId>,
    meta: crate::snapshot::SnapMeta,
    written: BTreeMap<String, u64>,
}

/// A running node.
pub struct Cluster {
    raft_dir: PathBuf,
    incoming: tokio::sync::Mutex<Option<Incoming>>,
    /// Notified when this node must restart (to install a received snapshot).
    restart: Arc<tokio::sync::Notify>,
    /// Turns true when the Raft port must stop serving (see [`Cluster::port_stop`]).
    stop: watch::Sender<bool>,
    snapshots_received: std::sync::atomic::AtomicU64,
    id: NodeId,
    raft: Raft,
    peers: Peers,
    secret: String,
    proposals: mpsc::Sender<Pending>,
    applied: watch::Receiver<u64>,
    timeout: Duration,
    members: BTreeMap<NodeId, NodeAddr>,
    handle: tokio::runtime::Handle,
    elections: std::sync::atomic::AtomicU64,
    /// The engine is a restored backup that has not seeded a cluster yet (see
    /// [`Cluster::initialize`]): it refuses Raft traffic from other nodes until it does.
    seed_pending: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.id)
            .finish_non_exhaustive()
    }
}

fn role_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl Cluster {
    /// Starts the node over `db` (the engine, opened with fsync off: the Raft log is the durable
    /// log). The caller serves [`Cluster::raft_router`] on the Raft port (with its connection caps
    /// and timeouts) until [`Cluster::port_stop`] turns true. Creates the reserved `_raft` keyspace and
    /// then `system_keyspaces` on this node alone (in that order, so their ids are the same on
    /// every node), refuses an engine that holds data written outside the cluster, and installs
    /// the replicator: from then on every engine write goes through Raft.
    pub async fn start(
        cfg: ClusterConfig,
        db: Arc<Db>,
        system_keyspaces: &[&str],
    ) -> Result<Arc<Cluster>, StartError> {
        cfg.validate()?;
        let fresh_engine = db.keyspace(RAFT_KEYSPACE).is_err();
        if fresh_engine {
            let foreign: Vec<String> = db
                .keyspace_names()
                .into_iter()
                .filter(|n| {
                    db.keyspace(n).map(|k| k.count() > 0).unwrap_or(false)
                        || !(n == kyrodb_storage::DEFAULT_KEYSPACE
                            || system_keyspaces.contains(&n.as_str()))
                })
                .collect();
            if !foreign.is_empty() {
                return Err(StartError::DataDir(format!(
                    "{} holds data written outside a cluster (keyspaces {foreign:?}); start cluster nodes on empty data directories",
                    db.path().display()
                )));
            }
        }
        // `kyrodb backup restore` leaves `_raft` holding only the seed key: such an engine may
        // seed a new cluster, alone (its marker appears with the first entry it applies).
        let seed_pending = db.keyspace(RAFT_KEYSPACE).is_ok_and(|k| {
            k.get(crate::sm::KEY_SEED).ok().flatten().is_some()
                && k.get(crate::sm::KEY_MARKER).ok().flatten().is_none()
        });
        let db2 = db.clone();
        let sys: Vec<String> = system_keyspaces.iter().map(|s| s.to_string()).collect();
        let (applied_tx, applied_rx) = watch::channel(0u64);
        let restart = Arc::new(tokio::sync::Notify::new());
        let (raft_dir, restart2) = (cfg.raft_dir.clone(), restart.clone());
        let sm = tokio::task::spawn_blocking(move || {
            let keyspaces = |source| StartError::Storage {
                what: "creating the cluster's keyspaces",
                source,
            };
            db2.create_keyspace(RAFT_KEYSPACE).map_err(keyspaces)?;
            for s in &sys {
                db2.create_keyspace(s).map_err(keyspaces)?;
            }
            StateMachine::open(db2, raft_dir, restart2, applied_tx)
                .map_err(|e| StartError::state("cluster state")(e.to_string()))
        })
        .await
        .map_err(|e| StartError::Raft(e.to_string()))??;
        let dir = cfg.raft_dir.clone();
        let store = tokio::task::spawn_blocking(move || LogStore::open(&dir, RAFT_SEGMENT_BYTES))
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?
            .map_err(|e| StartError::state("raft log")(e.to_string()))?;
        let config = openraft::Config {
            cluster_name: "kyrodb".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_min_ms,
            election_timeout_max: cfg.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_entries.max(2)),
            max_in_snapshot_log_to_keep: (cfg.snapshot_entries / 2).min(1000),
            max_payload_entries: 64,
            install_snapshot_timeout: 600_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let peers =
            Peers::new(&cfg.secret, cfg.node_id, cfg.tls.clone()).map_err(StartError::Config)?;
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(config),
            Network {
                peers: peers.clone(),
            },
            store,
            sm,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let (ptx, prx) = mpsc::channel(65536);
        let (stop, _) = watch::channel(false);
        let c = Arc::new(Cluster {
            raft_dir: cfg.raft_dir.clone(),
            incoming: tokio::sync::Mutex::new(None),
            restart,
            stop,
            snapshots_received: std::sync::atomic::AtomicU64::new(0),
            id: cfg.node_id,
            raft: raft.clone(),
            peers,
            secret: cfg.secret.clone(),
            proposals: ptx,
            applied: applied_rx,
            timeout: cfg.request_timeout,
            members: cfg.members.clone(),
            handle: tokio::runtime::Handle::current(),
            elections: std::sync::atomic::AtomicU64::new(0),
            seed_pending: std::sync::atomic::AtomicBool::new(seed_pending),
        });
        tokio::spawn(proposer(raft.clone(), prx));
        tokio::spawn(watch_metrics(Arc::downgrade(&c)));
        tokio::spawn(watch_commit_index(Arc::downgrade(&c)));
        db.set_replicator(Arc::new(Replicate(Arc::downgrade(&c))))
            .map_err(|source| StartError::Storage {
                what: "installing the replicator",
                source,
            })?;
        Ok(c)
    }

    /// Initialises the cluster with the configured voters: Ok(false) when it already was;
    /// [`ChangeFailure::Refused`] when it cannot be done as configured (nothing changed),
    /// [`ChangeFailure::Unknown`] when Raft failed on the way.
    pub async fn initialize(&self) -> Result<bool, ChangeFailure> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ChangeFailure::Unknown(e.to_string()))?
        {
            return Ok(false);
        }
        // A node whose engine holds data (a restored backup: `kyrodb backup restore` keeps a reset
        // `_raft` keyspace) seeds the new cluster. That data is in no log entry, so the seed must
        // be alone at first and take a snapshot and purge its log before anyone joins: every
        // node added later then needs entries the log no longer has and receives the engine's
        // files (the same keys, values and sequence numbers).
        let seed = self.seed_pending();
        if seed && self.members.len() > 1 {
            return Err(ChangeFailure::Refused(format!(
                "this node holds a restored backup: it can seed a cluster only alone — list only \
                 itself in --cluster, init, then join the others ({} voters listed)",
                self.members.len()
            )));
        }
        match self.raft.initialize(self.members.clone()).await {
            Ok(()) => {
                tracing::info!(members = ?self.members.keys().collect::<Vec<_>>(), "cluster initialised");
                if seed {
                    self.seal_seed().await.map_err(ChangeFailure::Unknown)?;
                    self.seed_pending
                        .store(false, std::sync::atomic::Ordering::Release);
                }
                Ok(true)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(ChangeFailure::Unknown(format!(
                "initialising the cluster: {e}"
            ))),
        }
    }

    /// Whether this node is a restored backup waiting to seed a cluster: until it does, it takes
    /// no Raft traffic (joining another cluster would apply that cluster's log on top of its data).
    pub fn seed_pending(&self) -> bool {
        self.seed_pending.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A seed's first snapshot and log purge (see [`Cluster::initialize`]).
    async fn seal_seed(&self) -> Result<(), String> {
        let wait = || self.raft.wait(Some(Duration::from_secs(60)));
        let m = wait()
            .metrics(
                |m| m.current_leader == Some(self.id) && m.last_applied.is_some(),
                "the seed leads and applied its first entry",
            )
            .await
            .map_err(|e| format!("seeding: {e}"))?;
        let applied = m.last_applied.map_or(0, |l| l.index);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| format!("seeding: {e}"))?;
        let m = wait()
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "the seed's snapshot",
            )
            .await
            .map_err(|e| format!("seeding: {e}"))?;
        let upto = m.snapshot.map_or(applied, |s| s.index);
        self.raft
            .trigger()
            .purge_log(upto)
            .await
            .map_err(|e| format!("seeding: {e}"))?;
        wait()
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= upto),
                "the seed's log purge",
            )
            .await
            .map_err(|e| format!("seeding: {e}"))?;
        tracing::info!(
            snapshot_index = upto,
            "cluster seeded from this node's data"
        );
        Ok(())
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// Whether this node is the leader (as far as it knows).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// This node's applied index.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    fn leader_addr(&self, leader: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&leader).map(|n| n.raft.clone())
    }

    /// Waits (until `deadline`) for a leader other than `not`.
    async fn wait_for_leader_change(&self, seen: Option<NodeId>, deadline: Instant) {
        let mut rx = self.raft.metrics();
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(
            left.min(Duration::from_millis(100)),
            rx.wait_for(|m| m.current_leader != seen && m.current_leader.is_some()),
        )
        .await;
    }

    /// Waits up to `wait` until this node has applied `index`; its applied index then.
    pub(crate) async fn applied_within(&self, index: u64, wait: Duration) -> u64 {
        self.wait_applied(index, Instant::now() + wait).await;
        self.applied_index()
    }

    /// Waits (up to the cluster's timeout) until every member — voters and learners, this node
    /// included — has applied log `index`. Returns the members that had not, each with why (its
    /// applied index, or the error reaching it); empty when all had. Used where a write must take
    /// effect on every node before it is acknowledged (revoking a key).
    pub async fn await_applied_everywhere(&self, index: u64) -> Vec<(NodeId, String)> {
        let membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let wait = self.timeout;
        let calls = membership.nodes().map(|(id, n)| {
            let (id, addr) = (*id, n.raft.clone());
            async move {
                let applied = if id == self.id {
                    Ok(self.applied_within(index, wait).await)
                } else {
                    self.peers
                        .call::<_, u64>(
                            &addr,
                            "/raft/applied",
                            &(index, wait.as_millis() as u64),
                            wait + Duration::from_secs(1),
                        )
                        .await
                        .map_err(|e| e.to_string())
                };
                match applied {
                    Ok(a) if a >= index => None,
                    Ok(a) => Some((id, format!("applied up to {a} of {index}"))),
                    Err(e) => Some((id, e)),
                }
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> bool {
        let mut rx = self.applied.clone();
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tokio::time::timeout(left, rx.wait_for(|a| *a >= index)).await;
        matches!(r, Ok(Ok(_)))
    }

    async fn enqueue(
        &self,
        write: Bytes,
    ) -> Option<oneshot::Receiver<Result<(u64, Outcome), ProposeError>>> {
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send(Pending {
                write,
                reply: Reply::Task(tx),
            })
            .await
            .ok()?;
        Some(rx)
    }

    async fn outcome(
        &self,
        rx: Option<oneshot::Receiver<Result<(u64, Outcome), ProposeError>>>,
    ) -> Result<(u64, Outcome), ProposeError> {
        let Some(rx) = rx else {
            return Err(ProposeError::NotLeader(None));
        };
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ProposeError::Indeterminate("the proposer stopped".into())),
            Err(_) => Err(ProposeError::Indeterminate(format!(
                "not committed within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn propose(&self, write: Bytes) -> Result<(u64, Outcome), ProposeError> {
        let rx = self.enqueue(write).await;
        self.outcome(rx).await
    }

    /// Orders one engine write through Raft from this node: proposed here when leader, else
    /// forwarded to the leader; returns once committed, applied on the leader and (waited for,
    /// bounded) applied here.
    async fn write(&self, write: Bytes) -> Result<u64, EngineError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let leader = self.raft.metrics().borrow().current_leader;
            match leader {
                Some(l) if l == self.id => match self.propose(write.clone()).await {
                    Ok((_, o)) => return o.map_err(|r| r.into_engine()),
                    Err(ProposeError::NotLeader(_)) => {}
                    Err(ProposeError::Indeterminate(m)) => {
                        return Err(EngineError::Indeterminate(m))
                    }
                },
                Some(l) => {
                    if let Some(addr) = self.leader_addr(l) {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let r: Result<ForwardReply, CallError> = self
                            .peers
                            .call(&addr, "/raft/forward", &vec![write.to_vec()], left)
                            .await;
                        match r {
                            Ok(ForwardReply::Done {
                                index,
                                mut outcomes,
                            }) => {
                                self.wait_applied(index, deadline).await;
                                return match outcomes.pop() {
                                    Some(o) => o.map_err(|r| r.into_engine()),
                                    None => Err(EngineError::Indeterminate(
                                        "the leader answered without an outcome".into(),
                                    )),
                                };
                            }
                            Ok(ForwardReply::NotLeader { .. }) | Err(CallError::NotSent(_)) => {}
                            Ok(ForwardReply::Indeterminate(m)) | Err(CallError::Unknown(m)) => {
                                return Err(EngineError::Indeterminate(m))
                            }
                        }
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Unavailable(format!(
                    "no leader took the write within {} ms (this node sees leader {leader:?})",
                    self.timeout.as_millis()
                )));
            }
            self.wait_for_leader_change(leader, deadline).await;
        }
    }

    /// The leader's side of `/raft/forward`.
    pub(crate) async fn take_forwarded(&self, writes: Vec<Vec<u8>>) -> ForwardReply {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.id) {
            return ForwardReply::NotLeader { leader };
        }
        let mut waits = Vec::with_capacity(writes.len());
        for w in writes {
            waits.push(self.enqueue(Bytes::from(w)).await);
        }
        let mut index = 0;
        let mut outcomes = Vec::new();
        for rx in waits {
            match self.outcome(rx).await {
                Ok((i, o)) => {
                    index = index.max(i);
                    outcomes.push(o);
                }
                Err(ProposeError::NotLeader(l)) if outcomes.is_empty() => {
                    return ForwardReply::NotLeader { leader: l }
                }
                Err(ProposeError::NotLeader(_)) => {
                    return ForwardReply::Indeterminate("leadership changed mid-batch".into())
                }
                Err(ProposeError::Indeterminate(m)) => return ForwardReply::Indeterminate(m),
            }
        }
        ForwardReply::Done { index, outcomes }
    }

    /// The leader's side of `/raft/read_index`: a quorum round confirms leadership; the index
    /// every read after it must see.
    pub(crate) async fn leader_read_index(&self) -> ReadReply {
        match self.raft.ensure_linearizable().await {
            Ok(l) => ReadReply::Index(l.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                ReadReply::NotLeader {
                    leader: f.leader_id,
                }
            }
            Err(e) => ReadReply::Failed(e.to_string()),
        }
    }

    /// Makes the next local read linearizable: returns once this node has applied everything
    /// committed before the call (read index, confirmed by a quorum round on the leader).
    pub async fn read_barrier(&self) -> Result<u64, EngineError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let leader = self.raft.metrics().borrow().current_leader;
            let reply = match leader {
                Some(l) if l == self.id => self.leader_read_index().await,
                Some(l) => match self.leader_addr(l) {
                    Some(addr) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match self
                            .peers
                            .call::<_, ReadReply>(&addr, "/raft/read_index", &(), left)
                            .await
                        {
                            Ok(r) => r,
                            Err(e) => ReadReply::Failed(e.to_string()),
                        }
                    }
                    None => ReadReply::NotLeader { leader: None },
                },
                None => ReadReply::NotLeader { leader: None },
            };
            if let ReadReply::Index(i) = reply {
                if self.wait_applied(i, deadline).await {
                    return Ok(i);
                }
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Unavailable(format!(
                    "no quorum confirmed a read point within {} ms (last answer: {reply:?})",
                    self.timeout.as_millis()
                )));
            }
            if !matches!(reply, ReadReply::Index(_)) {
                self.wait_for_leader_change(leader, deadline).await;
            }
        }
    }

    /// Adds or removes a node (on the leader; forwarded there otherwise).
    pub async fn change(&self, ch: Change) -> Result<Status, ChangeFailure> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let leader = self.raft.metrics().borrow().current_leader;
            let r = match leader {
                Some(l) if l == self.id => self.change_here(ch.clone()).await,
                Some(l) => match self.leader_addr(l) {
                    Some(addr) => {
                        let r: Result<Result<(), ChangeError>, CallError> = self
                            .peers
                            .call(&addr, "/raft/change", &ch, Duration::from_secs(120))
                            .await;
                        match r {
                            Ok(r) => r,
                            Err(CallError::NotSent(_)) => Err(ChangeError::NotLeader),
                            Err(CallError::Unknown(m)) => Err(ChangeError::Failed(m)),
                        }
                    }
                    None => Err(ChangeError::NotLeader),
                },
                None => Err(ChangeError::NotLeader),
            };
            match r {
                Ok(()) => return Ok(self.status().await),
                Err(ChangeError::Failed(m)) => return Err(ChangeFailure::Unknown(m)),
                Err(ChangeError::Refused(m)) => return Err(ChangeFailure::Refused(m)),
                Err(ChangeError::NotLeader) if Instant::now() >= deadline => {
                    return Err(ChangeFailure::NoLeader(format!(
                        "no leader took the change within {} ms",
                        self.timeout.as_millis()
                    )))
                }
                Err(ChangeError::NotLeader) => self.wait_for_leader_change(leader, deadline).await,
            }
        }
    }

    pub(crate) async fn change_here(&self, ch: Change) -> Result<(), ChangeError> {
        let voters: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        match ch {
            Change::Add { id, raft_addr } => {
                if id == 0 {
                    return Err(ChangeError::Refused(
                        "node ids are positive integers".into(),
                    ));
                }
                if raft_addr.parse::<std::net::SocketAddr>().is_err() {
                    return Err(ChangeError::Refused(format!(
                        "{raft_addr:?}: the Raft address must be IP:PORT"
                    )));
                }
                self.raft
                    .add_learner(id, NodeAddr { raft: raft_addr }, true)
                    .await
                    .map_err(change_err)?;
                let mut v = voters;
                v.insert(id);
                self.raft
                    .change_membership(v, false)
                    .await
                    .map_err(change_err)?;
            }
            Change::Remove { id } => {
                if !voters.contains(&id) {
                    return Err(ChangeError::Refused(format!("node {id} is not a voter")));
                }
                let mut v = voters;
                v.remove(&id);
                if v.is_empty() {
                    return Err(ChangeError::Refused("cannot remove the last voter".into()));
                }
                self.raft
                    .change_membership(v, false)
                    .await
                    .map_err(change_err)?;
            }
        }
        Ok(())
    }

    /// Role, term, leader, indexes, members, followers' lag.
    pub async fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let commit_index = self
            .raft
            .with_raft_state(|st| st.committed.map(|l| l.index))
            .await
            .ok()
            .flatten();
        let membership = m.membership_config.membership().clone();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let (mut voters, mut learners) = (BTreeMap::new(), BTreeMap::new());
        for (id, n) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, n.raft.clone());
            } else {
                learners.insert(*id, n.raft.clone());
            }
        }
        let last = m.last_log_index;
        let followers = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.id)
                    .map(|(id, matched)| {
                        let mi = matched.map(|l| l.index);
                        Follower {
                            node_id: *id,
                            matched_index: mi,
                            lag: last.map(|l| l.saturating_sub(mi.unwrap_or(0))),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Status {
            node_id: self.id,
            role: role_name(m.state),
            term: m.current_term,
            leader: m.current_leader,
            leader_raft_addr: m
                .current_leader
                .and_then(|l| membership.get_node(&l).map(|n| n.raft.clone())),
            commit_index,
            applied_index: self.applied_index(),
            last_log_index: last,
            voters,
            learners,
            followers,
            elections_seen: self.elections.load(std::sync::atomic::Ordering::Relaxed),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            snapshot_transfers: self
                .snapshots_received
                .load(std::sync::atomic::Ordering::Relaxed),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }

    /// Exports the cluster's labelled counters at 0 (a series, not nothing, before the first
    /// event); its unlabelled ones are declared and exported by the server's metric families. Call
    /// once the metrics recorder is installed.
    pub fn register_metrics(&self) {
        for direction in ["sent", "received"] {
            metrics::counter!(crate::families::CLUSTER_SNAPSHOT_TRANSFERS_TOTAL.name, "direction" => direction)
                .increment(0);
        }
    }

    /// Stops Raft and the Raft port (the engine is closed by its owner afterwards).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        self.stop.send_replace(true);
    }

    /// Turns true once [`Cluster::shutdown`] ran: the Raft port stops serving then.
    pub fn port_stop(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Resolves when this node must restart in place (a received snapshot waits to be installed
    /// by [`crate::prepare_data_dir`] before the engine opens).
    pub async fn restart_requested(&self) {
        self.restart.notified().await
    }

    pub(crate) async fn snapshot_begin(&self, b: crate::net::SnapBegin) -> Result<(), String> {
        for f in &b.meta.files {
            let ok = f.name == "MANIFEST"
                || f.name.strip_prefix("snap/").is_some_and(|n| {
                    !n.is_empty()
                        && n.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
                        && !n.starts_with('.')
                });
            if !ok {
                return Err(format!("snapshot file name {:?} refused", f.name));
            }
        }
        let mut g = self.incoming.lock().await;
        let dir = self.raft_dir.join(crate::snapshot::INCOMING);
        tokio::task::block_in_place(|| {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(dir.join("snap"))?;
            std::fs::create_dir_all(dir.join("wal"))
        })
        .map_err(|e| format!("{}: {e}", dir.display()))?;
        tracing::info!(snapshot = %b.id, files = b.meta.files.len(), bytes = b.meta.files.iter().map(|f| f.size).sum::<u64>(), "receiving a snapshot");
        *g = Some(Incoming {
            id: b.id,
            vote: b.vote,
            meta: b.meta,
            written: BTreeMap::new(),
        });
        Ok(())
    }

    pub(crate) async fn snapshot_chunk(&self, ch: crate::net::SnapChunk) -> Result<(), String> {
        let mut g = self.incoming.lock().await;
        let Some(inc) = g.as_mut().filter(|i| i.id == ch.id) else {
            return Err(format!("no snapshot transfer {:?} in progress", ch.id));
        };
        let Some(f) = inc.meta.files.iter().find(|f| f.name == ch.file) else {
            return Err(format!(
                "snapshot file {:?} is not in the transfer",
                ch.file
            ));
        };
        let at = inc.written.get(&ch.file).copied().unwrap_or(0);
        let len = ch.data.0.len() as u64;
        if ch.offset != at || at + len > f.size {
            return Err(format!(
                "snapshot file {}: chunk at offset {} of {len} bytes, expected offset {at} (file of {} bytes)",
                ch.file, ch.offset, f.size
            ));
        }
        if xxhash_rust::xxh3::xxh3_64(&ch.data.0) != ch.xxh3 {
            return Err(format!(
                "snapshot file {}: checksum mismatch in the chunk at offset {}",
                ch.file, ch.offset
            ));
        }
        let path = self.raft_dir.join(crate::snapshot::INCOMING).join(&ch.file);
        tokio::task::block_in_place(|| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            file.write_all(&ch.data.0)
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
        inc.written.insert(ch.file, at + len);
        Ok(())
    }

    pub(crate) async fn snapshot_finish(
        &self,
        id: String,
    ) -> Result<openraft::raft::SnapshotResponse<NodeId>, String> {
        let inc = {
            let mut g = self.incoming.lock().await;
            match g.take() {
                Some(i) if i.id == id => i,
                other => {
                    *g = other;
                    return Err(format!("no snapshot transfer {id:?} in progress"));
                }
            }
        };
        let dir = self.raft_dir.join(crate::snapshot::INCOMING);
        tokio::task::block_in_place(|| {
            for f in &inc.meta.files {
                let p = dir.join(&f.name);
                let (size, sum) =
                    crate::snapshot::sum_file(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                if size != f.size {
                    return Err(format!(
                        "snapshot file {}: {size} bytes received, {} sent (refused at offset {size})",
                        f.name, f.size
                    ));
                }
                if sum != f.xxh3 {
                    return Err(format!(
                        "snapshot file {}: checksum mismatch over bytes 0..{size}",
                        f.name
                    ));
                }
                std::fs::File::open(&p)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            for d in [dir.join("snap"), dir.clone()] {
                std::fs::File::open(&d)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| format!("{}: {e}", d.display()))?;
            }
            crate::snapshot::write_meta(&dir, &inc.meta)
        })?;
        self.snapshots_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!(crate::families::CLUSTER_SNAPSHOT_TRANSFERS_TOTAL.name, "direction" => "received")
            .increment(1);
        let snapshot = openraft::Snapshot {
            meta: inc.meta.meta.clone(),
            snapshot: Box::new(crate::types::SnapshotData { dir }),
        };
        self.raft
            .install_full_snapshot(inc.vote, snapshot)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Gathers queued writes into entries, at most [`PROPOSALS_IN_FLIGHT`] uncommitted at a time.
async fn proposer(raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut bytes = first.write.len();
        let mut batch = vec![first];
        while bytes < PROPOSAL_BYTES_MAX && batch.len() < PROPOSAL_WRITES_MAX {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.write.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let writes = batch.iter().map(|p| p.write.clone()).collect();
            let r = raft.client_write(Proposal { writes }).await;
            drop(permit);
            metrics::counter!(crate::families::CLUSTER_PROPOSALS_TOTAL.name).increment(1);
            match r {
                Ok(resp) => {
                    let index = resp.log_id.index;
                    for (p, o) in batch.into_iter().zip(resp.data.0) {
                        p.reply.send(Ok((index, o)));
                    }
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    for p in batch {
                        p.reply.send(Err(ProposeError::NotLeader(f.leader_id)));
                    }
                }
                Err(e) => {
                    for p in batch {
                        p.reply
                            .send(Err(ProposeError::Indeterminate(e.to_string())));
                    }
                }
            }
        });
    }
}

/// The commit index gauge (openraft 0.9's metrics do not carry it: read from its state once a
/// second).
async fn watch_commit_index(c: Weak<Cluster>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(c) = c.upgrade() else { return };
        match c
            .raft
            .with_raft_state(|st| st.committed.map_or(0, |l| l.index))
            .await
        {
            Ok(i) => metrics::gauge!(crate::families::CLUSTER_COMMIT_INDEX.name).set(i as f64),
            Err(_) => return,
        }
    }
}

/// Keeps the Prometheus gauges and the election count current.
async fn watch_metrics(c: Weak<Cluster>) {
    let Some(mut rx) = c.upgrade().map(|c| c.raft.metrics()) else {
        return;
    };
    let mut last_term = 0;
    let mut last_leader = None;
    let mut fatal_logged = false;
    loop {
        {
            let Some(c) = c.upgrade() else { return };
            let m = rx.borrow_and_update().clone();
            if let (Err(e), false) = (&m.running_state, fatal_logged) {
                if matches!(e, openraft::error::Fatal::Stopped) {
                    return;
                }
                tracing::error!(error = %e, "raft stopped on this node: it takes no part in the cluster until restarted");
                fatal_logged = true;
            }
            if m.current_term != last_term {
                if last_term != 0 {
                    c.elections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    metrics::counter!(crate::families::CLUSTER_ELECTIONS_TOTAL.name).increment(1);
                }
                last_term = m.current_term;
            }
            if m.current_leader != last_leader {
                metrics::counter!(crate::families::CLUSTER_LEADER_CHANGES_TOTAL.name).increment(1);
                tracing::info!(
                    node_id = m.id,
                    term = m.current_term,
                    leader = ?m.current_leader,
                    role = role_name(m.state),
                    "cluster leader changed"
                );
                last_leader = m.current_leader;
            }
            metrics::gauge!(crate::families::CLUSTER_TERM.name).set(m.current_term as f64);
            for state in [
                ServerState::Leader,
                ServerState::Follower,
                ServerState::Candidate,
                ServerState::Learner,
            ] {
                metrics::gauge!(crate::families::CLUSTER_ROLE_INFO.name, "role" => role_name(state))
                    .set(f64::from(u8::from(m.state == state)));
            }
            metrics::gauge!(crate::families::CLUSTER_LAST_LOG_INDEX.name)
                .set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!(crate::families::CLUSTER_APPLIED_INDEX.name)
                .set(c.applied_index() as f64);
            if let Some(r) = &m.replication {
                let last = m.last_log_index.unwrap_or(0);
                for (id, matched) in r.iter() {
                    let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                    metrics::gauge!(crate::families::CLUSTER_REPLICATION_LAG_ENTRIES.name, "follower" => id.to_string())
                        .set(lag as f64);
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The engine's replicator: every engine write on this node goes through [`Cluster::write`].
struct Replicate(Weak<Cluster>);

impl Replicator for Replicate {
    fn replicate(&self, write: LoggedWrite) -> kyrodb_storage::Result<u64> {
        let Some(c) = self.0.upgrade() else {
            return Err(EngineError::Closed);
        };
        let bytes = write.into_bytes();
        // On the leader, straight to the proposer from this (blocking) thread: no task, no hop.
        if c.raft.metrics().borrow().current_leader == Some(c.id) {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            // `try_send`: never blocks nor panics, whatever thread this is; a full queue takes the
            // slow path below.
            let sent = c.proposals.try_send(Pending {
                write: bytes.clone(),
                reply: Reply::Thread(tx),
            });
            if sent.is_ok() {
                match rx.recv_timeout(c.timeout) {
                    Ok(Ok((_, o))) => return o.map_err(|r| r.into_engine()),
                    Ok(Err(ProposeError::NotLeader(_))) => {} // lost leadership: the slow path
                    Ok(Err(ProposeError::Indeterminate(m))) => {
                        return Err(EngineError::Indeterminate(m))
                    }
                    Err(_) => {
                        return Err(EngineError::Indeterminate(format!(
                            "not committed within {} ms",
                            c.timeout.as_millis()
                        )))
                    }
                }
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let c2 = c.clone();
        c.handle.spawn(async move {
            let _ = tx.send(c2.write(bytes).await);
        });
        rx.recv().unwrap_or(Err(EngineError::Closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        net::{Blob, SnapBegin, SnapChunk},
        snapshot::{FileSum, SnapMeta},
    };

    /// A snapshot arriving damaged is refused naming the file (and, for a chunk, its offset), and
    /// never handed to openraft to install.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damaged_snapshot_transfers_are_refused_naming_file_and_offset() {
        let d = tempfile::tempdir().unwrap();
        let db = Arc::new(
            tokio::task::spawn_blocking({
                let p = d.path().join("db");
                move || Db::open(p, kyrodb_storage::Options::default())
            })
            .await
            .unwrap()
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cfg = ClusterConfig {
            node_id: 1,
            members: [(1, NodeAddr { raft: addr })].into(),
            raft_dir: d.path().join("db").join("raft"),
            secret: "0123456789abcdef".into(),
            heartbeat_ms: 50,
            election_min_ms: 150,
            election_max_ms: 300,
            request_timeout: Duration::from_secs(2),
            tls: None,
            snapshot_entries: 1000,
        };
        let c = Cluster::start(cfg, db, &[]).await.unwrap();
        let app = c.raft_router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let bytes = b"0123456789".to_vec();
        let good = xxhash_rust::xxh3::xxh3_64(&bytes);
        let begin = |sum: u64| SnapBegin {
            id: "s1".into(),
            vote: openraft::Vote::new(1, 1),
            meta: SnapMeta {
                meta: openraft::SnapshotMeta {
                    last_log_id: None,
                    last_membership: Default::default(),
                    snapshot_id: "s1".into(),
                },
                files: vec![FileSum {
                    name: "snap/00000001-0000000000000001.data".into(),
                    size: bytes.len() as u64,
                    xxh3: sum,
                }],
            },
        };
        let chunk = |offset: u64, data: &[u8], sum: u64| SnapChunk {
            id: "s1".into(),
            file: "snap/00000001-0000000000000001.data".into(),
            offset,
            xxh3: sum,
            data: Blob(data.to_vec()),
        };
        // A chunk whose bytes do not match its checksum.
        c.snapshot_begin(begin(good)).await.unwrap();
        let e = c
            .snapshot_chunk(chunk(0, &bytes[..4], 7))
            .await
            .unwrap_err();
        assert!(
            e.contains("00000001-0000000000000001.data") && e.contains("offset 0"),
            "{e}"
        );
        // A chunk out of order.
        let e = c
            .snapshot_chunk(chunk(
                4,
                &bytes[4..],
                xxhash_rust::xxh3::xxh3_64(&bytes[4..]),
            ))
            .await
            .unwrap_err();
        assert!(e.contains("expected offset 0"), "{e}");
        // Every chunk intact but the whole file's checksum differs from the one announced.
        c.snapshot_begin(begin(good ^ 1)).await.unwrap();
        c.snapshot_chunk(chunk(0, &bytes, good)).await.unwrap();
        let e = c.snapshot_finish("s1".into()).await.unwrap_err();
        assert!(
            e.contains("00000001-0000000000000001.data") && e.contains("checksum mismatch"),
            "{e}"
        );
        // A file name that escapes the snapshot directory.
        let mut b = begin(good);
        b.meta.files[0].name = "snap/../../MANIFEST".into();
        assert!(c.snapshot_begin(b).await.is_err());
        // Nothing was staged for installation.
        assert!(!d.path().join("db/raft/install").exists());
        c.shutdown().await;
    }
}

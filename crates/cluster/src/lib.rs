//! KyroDB replication (issue 12): a cluster of nodes that order every engine write through Raft
//! (openraft), apply it to each node's engine in log order, and answer linearizable reads.
//! Design, crash argument and limits: `docs/design/cluster.md`.
//!
//! - `log.rs` — the Raft log store: the one log fsynced in cluster mode.
//! - `store.rs` — openraft's log storage over it.
//! - `sm.rs` — the state machine: entries applied to the engine with the apply marker.
//! - `types.rs` — openraft's type configuration, proposals, outcomes, entry encoding.
//! - `net.rs` — the Raft port's client (HTTP, cluster secret) that openraft replicates through.
//! - `rpc.rs` — the Raft port's routes, serving the other nodes' calls.
//! - `snapshot.rs` — Raft snapshots as engine checkpoints: build, current, install at start.
//! - `error.rs` — `StartError`: why a node did not start.
//! - `node.rs` — a running node: start, the proposer, forwarding, read barriers, membership, status.
// fjall's lints: no `unwrap` outside tests (use `expect` naming the invariant), and every
// public item documented.
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]
#![forbid(unsafe_code)]
// openraft's trait methods return its `StorageError` (224 bytes); our helpers return what they do.
#![allow(clippy::result_large_err)]

mod error;
pub mod families;
mod log;
mod net;
mod node;
mod rpc;
mod sm;
mod snapshot;
mod store;
mod types;

pub use error::StartError;
pub use log::{Entry, Error, RaftLog, Recovered, Result, Vote, PAYLOAD_MAX};
pub use node::{Change, ChangeFailure, Cluster, ClusterConfig, Follower, Status};
pub use sm::RAFT_KEYSPACE;
pub use snapshot::prepare_data_dir;
pub use types::{parse_members, NodeAddr, NodeId};

//! KyroDB replication (issue 12). This first increment is the Raft log store: the one log that is
//! fsynced in cluster mode (`docs/design/cluster.md`, "One log, fsynced once per node"). The
//! consensus itself (openraft) and the state machine over the engine come next.

#![forbid(unsafe_code)]

mod log;

pub use log::{Entry, Error, RaftLog, Recovered, Result, Vote, PAYLOAD_MAX};

//! What openraft carries for us: the type configuration, a proposal (a batch of engine writes), the
//! outcome of each write, node addresses, and the binary encodings of log entries.

use std::{collections::BTreeMap, fmt};

use bytes::Bytes;
use kyrodb_storage::Condition;
use openraft::{EntryPayload, LogId, Membership};
use serde::{Deserialize, Serialize};

/// Where a node's Raft port listens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// `IP:PORT` of its Raft listener.
    pub raft: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raft)
    }
}

openraft::declare_raft_types!(
    /// KyroDB's Raft types.
    pub(crate) TypeConfig:
        D = Proposal,
        R = Outcomes,
        NodeId = u64,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
/// A node's id (positive).
pub type NodeId = u64;

/// One Raft entry's worth of client writes (`kyrodb_storage::LoggedWrite` bytes), applied in order,
/// each on its own (a failed condition fails only its write). Encoded `u32 n | (u32 len | bytes)*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Proposal {
    pub writes: Vec<Bytes>,
}

impl Proposal {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.writes.len() as u32).to_le_bytes());
        for w in &self.writes {
            out.extend_from_slice(&(w.len() as u32).to_le_bytes());
            out.extend_from_slice(w);
        }
    }

    pub(crate) fn decode(b: &Bytes) -> Result<Proposal, String> {
        let u32_at = |at: usize| -> Result<usize, String> {
            kyrodb_storage::codec::u32_at(b, at)
                .map(|n| n as usize)
                .ok_or_else(|| format!("proposal truncated at byte {at}"))
        };
        let n = u32_at(0)?;
        if n > b.len() / 4 {
            return Err("proposal count larger than its bytes can hold".into());
        }
        let mut writes = Vec::with_capacity(n);
        let mut at = 4;
        for _ in 0..n {
            let len = u32_at(at)?;
            at += 4;
            if at + len > b.len() {
                return Err(format!("proposal write runs past the end at byte {at}"));
            }
            writes.push(b.slice(at..at + len));
            at += len;
        }
        if at != b.len() {
            return Err(format!("trailing bytes after the proposal at byte {at}"));
        }
        Ok(Proposal { writes })
    }
}

pub(crate) struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut v = Vec::new();
        while let Some(b) = seq.next_element()? {
            v.push(b);
        }
        Ok(v)
    }
}

impl Serialize for Proposal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut b = Vec::new();
        self.encode(&mut b);
        s.serialize_bytes(&b)
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Proposal, D::Error> {
        let b = d.deserialize_byte_buf(BytesVisitor)?;
        Proposal::decode(&Bytes::from(b)).map_err(serde::de::Error::custom)
    }
}

/// A refusal every node reached the same way when applying a write (deterministic), carried back to
/// the node that took the write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Refusal {
    ConditionFailed {
        keyspace: String,
        key: u64,
        /// None: required absent; Some(s): required sequence s.
        expected_seq: Option<u64>,
        current_seq: Option<u64>,
    },
    BatchTooManyOps {
        count: usize,
        max: usize,
    },
    NoSuchKeyspace(String),
    TooManyKeyspaces(usize),
    InvalidKeyspaceName(String),
    Malformed(String),
}

impl Refusal {
    /// The refusal for an engine error, or None when the error is this node's failure (I/O, a
    /// stopped engine), not a property of the write.
    pub(crate) fn from_engine(e: &kyrodb_storage::Error) -> Option<Refusal> {
        use kyrodb_storage::Error as E;
        Some(match e {
            E::ConditionFailed {
                keyspace,
                key,
                expected,
                current_seq,
            } => Refusal::ConditionFailed {
                keyspace: keyspace.clone(),
                key: *key,
                expected_seq: match expected {
                    Condition::Absent => None,
                    Condition::Seq(s) => Some(*s),
                },
                current_seq: *current_seq,
            },
            E::BatchTooManyOps { count, max } => Refusal::BatchTooManyOps {
                count: *count,
                max: *max,
            },
            E::NoSuchKeyspace(n) => Refusal::NoSuchKeyspace(n.clone()),
            E::TooManyKeyspaces(n) => Refusal::TooManyKeyspaces(*n),
            E::InvalidKeyspaceName(n) => Refusal::InvalidKeyspaceName(n.clone()),
            E::Corrupt { file, .. } if file.as_os_str() == "<replicated write>" => {
                Refusal::Malformed(e.to_string())
            }
            _ => return None,
        })
    }

    pub(crate) fn into_engine(self) -> kyrodb_storage::Error {
        use kyrodb_storage::Error as E;
        match self {
            Refusal::ConditionFailed {
                keyspace,
                key,
                expected_seq,
                current_seq,
            } => E::ConditionFailed {
                keyspace,
                key,
                expected: expected_seq.map_or(Condition::Absent, Condition::Seq),
                current_seq,
            },
            Refusal::BatchTooManyOps { count, max } => E::BatchTooManyOps { count, max },
            Refusal::NoSuchKeyspace(n) => E::NoSuchKeyspace(n),
            Refusal::TooManyKeyspaces(n) => E::TooManyKeyspaces(n),
            Refusal::InvalidKeyspaceName(n) => E::InvalidKeyspaceName(n),
            Refusal::Malformed(m) => E::InvalidOption(m),
        }
    }
}

/// Each write's outcome: its sequence number or the refusal.
pub(crate) type Outcome = Result<u64, Refusal>;

/// The outcomes of one entry's writes, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Outcomes(pub Vec<Outcome>);

const TAG_BLANK: u8 = 0;
const TAG_NORMAL: u8 = 1;
const TAG_MEMBERSHIP: u8 = 2;

/// An entry as the Raft log stores it: the record's term is the log id's term; the payload is
/// `u64 leader node | u8 tag | body` (a proposal's encoding, or the membership as JSON).
pub(crate) fn encode_entry(e: &Entry) -> crate::log::Entry {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&e.log_id.leader_id.node_id.to_le_bytes());
    match &e.payload {
        EntryPayload::Blank => p.push(TAG_BLANK),
        EntryPayload::Normal(prop) => {
            p.push(TAG_NORMAL);
            prop.encode(&mut p);
        }
        EntryPayload::Membership(m) => {
            p.push(TAG_MEMBERSHIP);
            p.extend_from_slice(&serde_json::to_vec(m).expect("membership serialises"));
        }
    }
    crate::log::Entry {
        index: e.log_id.index,
        term: e.log_id.leader_id.term,
        payload: p,
    }
}

pub(crate) fn decode_entry(r: crate::log::Entry) -> Result<Entry, String> {
    let p = Bytes::from(r.payload);
    if p.len() < 9 {
        return Err(format!("entry {}: payload too short", r.index));
    }
    let node = kyrodb_storage::codec::u64_at(&p, 0).expect("checked: at least 9 bytes");
    let log_id = LogId::new(openraft::CommittedLeaderId::new(r.term, node), r.index);
    let payload = match p[8] {
        TAG_BLANK => EntryPayload::Blank,
        TAG_NORMAL => EntryPayload::Normal(
            Proposal::decode(&p.slice(9..)).map_err(|e| format!("entry {}: {e}", r.index))?,
        ),
        TAG_MEMBERSHIP => {
            let m: Membership<NodeId, NodeAddr> = serde_json::from_slice(&p[9..])
                .map_err(|e| format!("entry {}: membership: {e}", r.index))?;
            EntryPayload::Membership(m)
        }
        t => return Err(format!("entry {}: unknown tag {t}", r.index)),
    };
    Ok(Entry { log_id, payload })
}

/// Parses `1=127.0.0.1:7001,2=127.0.0.1:7002,…`.
pub fn parse_members(s: &str) -> Result<BTreeMap<NodeId, NodeAddr>, crate::error::StartError> {
    let bad = crate::error::StartError::Config;
    let mut m = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?}: expected ID=HOST:PORT")))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| bad(format!("{part:?}: node id must be a positive integer")))?;
        if id == 0 {
            return Err(bad(format!("{part:?}: node id must be a positive integer")));
        }
        let addr = addr.trim();
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad(format!("{part:?}: address must be IP:PORT")));
        }
        if m.insert(
            id,
            NodeAddr {
                raft: addr.to_owned(),
            },
        )
        .is_some()
        {
            return Err(bad(format!("node id {id} is listed twice")));
        }
    }
    if m.is_empty() {
        return Err(bad("no members listed".into()));
    }
    Ok(m)
}

/// A snapshot's files: the directory holding them (openraft's `SnapshotData`; built, sent and
/// installed by `snapshot.rs`).
#[derive(Debug, Default, Clone)]
pub(crate) struct SnapshotData {
    pub(crate) dir: std::path::PathBuf,
}

//! The replication seam: with a [`Replicator`] installed (`Db::set_replicator`), every write —
//! [`Db::write`], each `Keyspace` write method, [`Db::create_keyspace`], [`Db::drop_keyspace`] — is
//! handed to it as a
//! [`LoggedWrite`] instead of being logged here. The replicator orders it (consensus) and every node
//! then applies it with [`Db::apply_replicated`], in the same order, so every node's engine holds the
//! same keys, values, keyspace ids and sequence numbers. Validation (sizes, counts, names) happens
//! before the hand-over, on the node that took the write; conditions and delete-ranges are resolved
//! at apply, against the state every node reaches by then. The engine knows nothing of how the
//! replicator orders writes (see `docs/design/cluster.md`).

use bytes::{BufMut, Bytes};

use crate::{
    core::KIND_DROP_KEYSPACE,
    wal::record::{KIND_BATCH, KIND_CREATE_KEYSPACE},
    Error, Result,
};

/// Orders writes across nodes. Called on the writer's thread (never on the async runtime: engine
/// writes run on blocking threads); blocks until the write is applied on this node.
pub trait Replicator: Send + Sync + 'static {
    /// Orders `write` and returns once this node has applied it, with what [`Db::apply_replicated`]
    /// returned for it on the node that applied it first (a sequence number, or the refusal —
    /// e.g. [`Error::ConditionFailed`] — every node reached).
    fn replicate(&self, write: LoggedWrite) -> Result<u64>;
}

/// A replicated batch that names the keyspaces it writes: `4 | count u32 | (id u32 | name_len u8 |
/// name) × count | batch`. Applied only while each id still names that keyspace. Not a WAL kind.
pub(crate) const KIND_NAMED_BATCH: u8 = 4;

/// One write as the replicator carries it: `kind u8 | payload` — a batch (the WAL's batch
/// encoding, conditions and delete-ranges unresolved; with the names of its keyspaces when taken
/// by this engine, see [`KIND_NAMED_BATCH`]), a keyspace creation by name (its id is assigned at
/// apply, the same on every node) or a keyspace drop by name.
#[derive(Clone, PartialEq, Eq)]
pub struct LoggedWrite {
    pub(crate) bytes: Bytes,
}

impl std::fmt::Debug for LoggedWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedWrite")
            .field("kind", &self.bytes.first())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl LoggedWrite {
    pub(crate) fn batch(payload: &[u8]) -> Self {
        let mut b = Vec::with_capacity(1 + payload.len());
        b.put_u8(KIND_BATCH);
        b.put_slice(payload);
        Self {
            bytes: Bytes::from(b),
        }
    }

    /// A batch of `payload` writing the keyspaces `names` (id, name).
    pub(crate) fn named_batch(names: &[(u32, &str)], payload: &[u8]) -> Self {
        let mut b = Vec::with_capacity(
            5 + names.iter().map(|(_, n)| 5 + n.len()).sum::<usize>() + payload.len(),
        );
        b.put_u8(KIND_NAMED_BATCH);
        // Names are at most 64 bytes (validate_keyspace_name); a batch names each keyspace once.
        b.put_u32_le(u32::try_from(names.len()).expect("fewer than 2^32 keyspaces"));
        for (id, name) in names {
            b.put_u32_le(*id);
            b.put_u8(name.len() as u8);
            b.put_slice(name.as_bytes());
        }
        b.put_slice(payload);
        Self {
            bytes: Bytes::from(b),
        }
    }

    /// A batch's keyspace names (empty for a plain batch) and the offset of its batch encoding.
    pub(crate) fn batch_parts(&self) -> Result<(Vec<(u32, &str)>, usize)> {
        let bad = |offset: usize, reason: &str| Error::Corrupt {
            file: "<replicated write>".into(),
            offset: offset as u64,
            reason: reason.to_owned(),
        };
        let b = &self.bytes[..];
        if b[0] != KIND_NAMED_BATCH {
            return Ok((Vec::new(), 1));
        }
        let count = b
            .get(1..5)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .ok_or_else(|| bad(1, "keyspace count cut off"))?;
        // Not trusted for the allocation: each name takes at least 5 bytes.
        let cap = (count as usize).min(b.len() / 5);
        let (mut at, mut names) = (5, Vec::with_capacity(cap));
        for _ in 0..count {
            let head = b
                .get(at..at + 5)
                .ok_or_else(|| bad(at, "keyspace name cut off"))?;
            let id = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let len = head[4] as usize;
            let name = b
                .get(at + 5..at + 5 + len)
                .ok_or_else(|| bad(at + 5, "keyspace name cut off"))?;
            let name =
                std::str::from_utf8(name).map_err(|_| bad(at + 5, "keyspace name is not UTF-8"))?;
            names.push((id, name));
            at += 5 + len;
        }
        Ok((names, at))
    }

    pub(crate) fn create_keyspace(name: &str) -> Self {
        Self::named(KIND_CREATE_KEYSPACE, name)
    }

    pub(crate) fn drop_keyspace(name: &str) -> Self {
        Self::named(KIND_DROP_KEYSPACE, name)
    }

    fn named(kind: u8, name: &str) -> Self {
        let mut b = Vec::with_capacity(1 + name.len());
        b.put_u8(kind);
        b.put_slice(name.as_bytes());
        Self {
            bytes: Bytes::from(b),
        }
    }

    /// A keyspace creation or drop (applied alone, not grouped with batches).
    pub(crate) fn is_keyspace_change(&self) -> bool {
        matches!(self.bytes[0], KIND_CREATE_KEYSPACE | KIND_DROP_KEYSPACE)
    }

    /// The encoded write (what a replicator stores in its log).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded write, without a copy.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// A write read back from a replicator's log or the network. Its kind (and a creation's
    /// name) is checked here; a batch is decoded once, when it is applied, which refuses a
    /// malformed one naming the byte offset and checks that its keyspaces exist.
    pub fn from_bytes(bytes: Bytes) -> Result<Self> {
        let bad = |offset: usize, reason: &str| Error::Corrupt {
            file: "<replicated write>".into(),
            offset: offset as u64,
            reason: reason.to_owned(),
        };
        match bytes.first() {
            Some(&KIND_BATCH) => {}
            Some(&KIND_NAMED_BATCH) => {
                Self {
                    bytes: bytes.clone(),
                }
                .batch_parts()?;
            }
            Some(&KIND_CREATE_KEYSPACE | &KIND_DROP_KEYSPACE) => {
                let name = std::str::from_utf8(&bytes[1..])
                    .map_err(|_| bad(1, "keyspace name is not UTF-8"))?;
                crate::core::validate_keyspace_name(name)?;
            }
            _ => return Err(bad(0, "unknown replicated write kind")),
        }
        Ok(Self { bytes })
    }
}

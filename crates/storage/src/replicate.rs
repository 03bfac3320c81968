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
    db::{Db, Keyspace},
    wal::record::{decode_batch, BatchEncoder, Op, KIND_BATCH, KIND_CREATE_KEYSPACE},
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
const KIND_NAMED_BATCH: u8 = 4;

/// One write as the replicator carries it: `kind u8 | payload` — a batch (the WAL's batch
/// encoding, conditions and delete-ranges unresolved; with the names of its keyspaces when taken
/// by this engine, see [`KIND_NAMED_BATCH`]), a keyspace creation by name (its id is assigned at
/// apply, the same on every node) or a keyspace drop by name.
#[derive(Clone, PartialEq, Eq)]
pub struct LoggedWrite {
    bytes: Bytes,
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
    fn batch_parts(&self) -> Result<(Vec<(u32, &str)>, usize)> {
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
    fn is_keyspace_change(&self) -> bool {
        matches!(self.bytes[0], KIND_CREATE_KEYSPACE | KIND_DROP_KEYSPACE)
    }

    /// A batch built by the caller (the replicator's own records), unvalidated: keep it small.
    pub fn from_batch(batch: &crate::WriteBatch) -> Self {
        Self::batch(&batch.enc.clone().finish())
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
                crate::db::validate_keyspace_name(name)?;
            }
            _ => return Err(bad(0, "unknown replicated write kind")),
        }
        Ok(Self { bytes })
    }
}

impl Db {
    /// Installs the replicator every later write goes through (once; a second call is refused).
    /// Writes already running finish locally.
    pub fn set_replicator(&self, r: std::sync::Arc<dyn Replicator>) -> Result<()> {
        self.inner
            .replicator
            .set(r)
            .map_err(|_| Error::InvalidOption("a replicator is already installed".into()))
    }

    /// Whether writes go through a replicator.
    pub fn is_replicated(&self) -> bool {
        self.inner.replicator.get().is_some()
    }

    /// [`Db::apply_replicated`] of several writes in order, each with its own marker: batches are
    /// queued for the WAL together (one group) and waited for together; a keyspace creation or
    /// drop is applied alone, in its place. One result per write. Writes after one that failed for lack of
    /// room (`Busy`, `WalQueueFull`) were not applied either and fail the same way: retry the tail.
    pub fn apply_replicated_many(
        &self,
        writes: &[(LoggedWrite, Keyspace, u64, Vec<u8>)],
    ) -> Vec<Result<u64>> {
        let room =
            |r: &Result<u64>| matches!(r, Err(Error::Busy { .. } | Error::WalQueueFull { .. }));
        let busy = || Error::Busy {
            delta_bytes: self.inner.core.state.load().delta_bytes(),
            budget: self.inner.core.opts.delta_bytes_budget,
            waited_ms: 0,
        };
        let mut out: Vec<Result<u64>> = Vec::with_capacity(writes.len());
        let mut i = 0;
        while i < writes.len() {
            if out.last().is_some_and(room) {
                out.push(Err(busy()));
                i += 1;
                continue;
            }
            let (w, mks, mkey, marker) = &writes[i];
            if w.is_keyspace_change() {
                out.push(self.apply_replicated(w, mks, *mkey, marker));
                i += 1;
                continue;
            }
            // A run of batches, up to the next keyspace change, goes to the WAL as one group.
            let end = writes[i..]
                .iter()
                .position(|x| x.0.is_keyspace_change())
                .map_or(writes.len(), |p| i + p);
            let mut queued = Vec::new();
            let mut slots: Vec<Option<Result<u64>>> = Vec::new();
            for (w, mks, mkey, marker) in &writes[i..end] {
                match self.encode_replicated(w, mks, *mkey, marker) {
                    Ok(x) => {
                        queued.push(x);
                        slots.push(None);
                    }
                    Err(e) => slots.push(Some(Err(e))),
                }
            }
            let deadline = self.inner.deadline();
            let mut results = match self.inner.wait_for_room(deadline) {
                Ok(()) => self.inner.wal.append_many(queued, deadline),
                Err(_) => (0..queued.len()).map(|_| Err(busy())).collect(),
            }
            .into_iter();
            for s in slots {
                out.push(s.unwrap_or_else(|| results.next().unwrap_or_else(|| Err(busy()))));
            }
            i = end;
        }
        out
    }

    /// A replicated batch with its marker put, ready for the WAL: (payload, needs resolving).
    fn encode_replicated(
        &self,
        write: &LoggedWrite,
        marker_keyspace: &Keyspace,
        marker_key: u64,
        marker: &[u8],
    ) -> Result<(Bytes, bool)> {
        let (names, start) = write.batch_parts()?;
        let body = write.bytes.slice(start..);
        let ops = decode_batch(&body).map_err(|(at, why)| Error::Corrupt {
            file: "<replicated write>".into(),
            offset: (at + start) as u64,
            reason: why.to_owned(),
        })?;
        let mut enc = BatchEncoder::default();
        {
            let registry = self.inner.core.registry.read();
            // Each id must still name the keyspace the batch was taken for (it may have been
            // dropped, and its id given to a new keyspace, while the batch was being ordered).
            for (id, name) in &names {
                if registry.by_id.get(id).is_none_or(|n| n != name) {
                    return Err(Error::NoSuchKeyspace((*name).to_owned()));
                }
            }
            for op in &ops {
                let (Op::Put { keyspace, .. }
                | Op::Delete { keyspace, .. }
                | Op::DeleteRange { keyspace, .. }
                | Op::Check { keyspace, .. }) = op;
                if !registry.by_id.contains_key(keyspace) {
                    return Err(Error::NoSuchKeyspace(format!("id {keyspace}")));
                }
                enc.push(op);
            }
        }
        enc.put(marker_keyspace.id(), marker_key, marker);
        let resolve = enc.needs_resolve();
        Ok((enc.finish(), resolve))
    }

    /// Applies a write the replicator has ordered, on this node, together with a put of `marker`
    /// under `marker_key` in `marker_keyspace` (the replicator's record of how far it has applied):
    /// for a batch, one engine write holding both (all or nothing across a crash; a failed
    /// condition writes neither); for a keyspace creation, the creation (skipped when the keyspace
    /// exists, so re-applying after a crash is harmless) then the marker; for a drop, the drop
    /// (skipped when there is no such keyspace, for the same reason) then the marker. Returns the
    /// batch's sequence number. Bypasses the replicator; sizes were checked where the write was taken.
    pub fn apply_replicated(
        &self,
        write: &LoggedWrite,
        marker_keyspace: &Keyspace,
        marker_key: u64,
        marker: &[u8],
    ) -> Result<u64> {
        if !write.is_keyspace_change() {
            let one = [(
                write.clone(),
                marker_keyspace.clone(),
                marker_key,
                marker.to_vec(),
            )];
            return self
                .apply_replicated_many(&one)
                .pop()
                .expect("one result per write");
        }
        let name = std::str::from_utf8(&write.bytes[1..]).map_err(|_| Error::Corrupt {
            file: "<replicated write>".into(),
            offset: 1,
            reason: "keyspace name is not UTF-8".into(),
        })?;
        if write.bytes[0] == KIND_CREATE_KEYSPACE {
            self.create_keyspace_local(name)?;
        } else {
            match self.drop_keyspace_local(name) {
                Ok(_) | Err(Error::NoSuchKeyspace(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut enc = BatchEncoder::default();
        enc.put(marker_keyspace.id(), marker_key, marker);
        self.inner.log_batch(enc)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::Options;

    /// Keeps what it is handed; applies nothing.
    #[derive(Default)]
    struct Capture(Mutex<Vec<LoggedWrite>>);

    impl Replicator for Capture {
        fn replicate(&self, write: LoggedWrite) -> Result<u64> {
            self.0.lock().unwrap().push(write);
            Ok(0)
        }
    }

    /// A batch taken for keyspace "a" but ordered after "a" was dropped and its id given to "b"
    /// is refused on apply, and "b" is left untouched; ordered while "a" lives, it applies.
    #[test]
    fn a_batch_applies_only_while_its_ids_name_the_keyspaces_it_was_taken_for() {
        let (d1, d2, d3) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let taker = Db::open(d1.path(), Options::default()).unwrap();
        let a = taker.create_keyspace("a").unwrap();
        let capture = Arc::new(Capture::default());
        taker.set_replicator(capture.clone()).unwrap();
        a.put(7, b"for a").unwrap();
        let w = capture.0.lock().unwrap().pop().unwrap();
        assert_eq!(w.as_bytes()[0], KIND_NAMED_BATCH);
        let w = LoggedWrite::from_bytes(w.into_bytes()).unwrap();

        let apply =
            |db: &Db, w: &LoggedWrite| db.apply_replicated(w, db.default_keyspace(), 1, b"marker");
        // Dropped and the id reused before the batch is applied: refused, "b" empty.
        let late = Db::open(d2.path(), Options::default()).unwrap();
        apply(&late, &LoggedWrite::create_keyspace("a")).unwrap();
        apply(&late, &LoggedWrite::drop_keyspace("a")).unwrap();
        apply(&late, &LoggedWrite::drop_keyspace("a")).unwrap(); // re-applied: harmless
        apply(&late, &LoggedWrite::create_keyspace("b")).unwrap();
        let b = late.keyspace("b").unwrap();
        assert_eq!(b.id(), a.id(), "the id was reused");
        match apply(&late, &w) {
            Err(Error::NoSuchKeyspace(n)) => assert_eq!(n, "a"),
            other => panic!("{other:?}"),
        }
        assert!(b.get(7).unwrap().is_none());
        // Applied while "a" lives: written.
        let on_time = Db::open(d3.path(), Options::default()).unwrap();
        apply(&on_time, &LoggedWrite::create_keyspace("a")).unwrap();
        apply(&on_time, &w).unwrap();
        let got = on_time.keyspace("a").unwrap().get(7).unwrap().unwrap();
        assert_eq!(&got[..], b"for a");
        // A torn name section is refused naming the offset.
        let mut torn = w.as_bytes().to_vec();
        torn.truncate(8);
        match LoggedWrite::from_bytes(Bytes::from(torn)) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, 5),
            other => panic!("{other:?}"),
        }
    }
}

//! The engine's side of replication: installing a [`Replicator`] and applying writes it ordered
//! ([`Db::apply_replicated`]), on every node in the same order. The seam itself (the trait and the
//! encoded [`LoggedWrite`]) is `replicate.rs`, below the engine's insides that route writes to it.

use bytes::Bytes;

use crate::{
    db::{Db, Keyspace, WriteBatch},
    replicate::{LoggedWrite, Replicator},
    wal::record::{decode_batch, BatchEncoder, Op, KIND_CREATE_KEYSPACE},
    Error, Result,
};

impl LoggedWrite {
    /// A batch built by the caller (the replicator's own records), unvalidated: keep it small.
    pub fn from_batch(batch: &WriteBatch) -> Self {
        Self::batch(&batch.enc.clone().finish())
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
    use crate::replicate::KIND_NAMED_BATCH;
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

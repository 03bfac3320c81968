//! The state readers see and the WAL writer thread mutates: the active delta, a frozen delta being
//! compacted, and the current snapshots, published together through one `ArcSwap`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::{
    applier::{Appliers, Change},
    counts::Counts,
    delta::{now_ms, Delta, DeltaRead, Version},
    options::Options,
    view::{Frozen, ReadState},
    wal::{
        record::{
            decode_batch, decode_create_keyspace, BatchEncoder, Cond, Op, KIND_BATCH,
            KIND_CREATE_KEYSPACE,
        },
        CommitSink,
    },
    Error, Result,
};

/// The WAL record kind of a keyspace drop: `id u32 | name_len u16 | name`, the payload of a creation
/// (kinds 1 and 2 are in `wal/record.rs`). Byte layout and the id reuse rule: docs/design/storage.md.
pub(crate) const KIND_DROP_KEYSPACE: u8 = 3;

/// The name of the keyspace every database has.
pub const DEFAULT_KEYSPACE: &str = "default";

/// One life of a keyspace, from its creation to its drop. Every [`crate::Keyspace`] handle holds
/// the incarnation it was made from: once the keyspace is dropped, a handle that outlived it reads and
/// writes nothing, since its id may already name a new keyspace.
#[derive(Debug)]
pub(crate) struct Incarnation {
    pub name: Arc<str>,
    dropped: AtomicBool,
}

impl Incarnation {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            dropped: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }

    pub(crate) fn set_dropped(&self, dropped: bool) {
        self.dropped.store(dropped, Ordering::Release);
    }
}

/// Keyspace names and ids.
#[derive(Default)]
pub(crate) struct Registry {
    pub by_name: HashMap<String, u32>,
    pub by_id: BTreeMap<u32, String>,
    /// The incarnation of each live keyspace, by id.
    pub incarnations: HashMap<u32, Arc<Incarnation>>,
    /// One past the highest id ever given (the manifest records it; ids below it may be free).
    pub next_id: u32,
    /// Ids dropped by a record that no durable manifest may cover yet, with that record's sequence
    /// number: until a compaction covers the drop, the old keyspace's versions may still sit in the
    /// deltas and snapshots, so the id is reused only after one (`Db::create_keyspace`, recovery).
    pub dropped: BTreeMap<u32, u64>,
}

impl Registry {
    pub(crate) fn insert(&mut self, id: u32, name: &str) {
        if self.by_id.get(&id).is_some_and(|n| n == name) {
            // Replay of a creation the manifest already records: the same incarnation.
            return;
        }
        self.by_name.insert(name.to_owned(), id);
        self.by_id.insert(id, name.to_owned());
        self.incarnations
            .insert(id, Arc::new(Incarnation::new(name)));
        self.next_id = self.next_id.max(id + 1);
    }

    /// Applies the drop (record `seq`) of keyspace `id` called `name`: it leaves the registry (if it
    /// is there under that name) and its id waits for a compaction covering `seq` before reuse.
    pub(crate) fn remove(&mut self, id: u32, name: &str, seq: u64) {
        if self.by_id.get(&id).is_some_and(|n| n == name) {
            self.by_id.remove(&id);
            self.by_name.remove(name);
            if let Some(inc) = self.incarnations.remove(&id) {
                inc.set_dropped(true);
            }
        }
        self.dropped.insert(id, seq);
    }

    /// The id a new keyspace gets: the lowest one no live keyspace holds. A function of the live
    /// keyspaces alone, so every node applying the same log picks the same id.
    pub(crate) fn free_id(&self) -> u32 {
        let mut want = 0;
        for &id in self.by_id.keys() {
            if id != want {
                break;
            }
            want += 1;
        }
        want
    }

    /// The live keyspace called `name`: its id and incarnation.
    pub(crate) fn lookup(&self, name: &str) -> Option<(u32, Arc<Incarnation>)> {
        let id = *self.by_name.get(name)?;
        Some((id, self.incarnations.get(&id)?.clone()))
    }
}

/// What the background thread is asked to do.
#[derive(Default)]
pub(crate) struct BgSignal {
    pub frozen_ready: bool,
    pub closing: bool,
}

/// Shared by the handle, the WAL writer thread and the background thread. Holds no reference to the WAL,
/// so the writer thread can own an `Arc` of it without a cycle.
pub(crate) struct Core {
    pub opts: Options,
    pub state: ArcSwap<ReadState>,
    /// Serialises the writers of `state` (freeze and compaction install); readers never take it.
    pub state_mu: Mutex<()>,
    pub visible_seq: AtomicU64,
    /// The last sequence number applied to the delta (written by the WAL thread only; recovery sets it
    /// to the last replayed record). Used to assert that records arrive contiguous and in order.
    pub applied_seq: AtomicU64,
    pub registry: RwLock<Registry>,
    /// Live keys per keyspace. The WAL thread updates it as it applies; compaction when it drops
    /// expired keys (both under this lock, compaction also across its state swap). Lock order: `counts`
    /// before `registry` (applying a keyspace creation) and before `state_mu` (compaction's swap); never
    /// take `counts` while holding either.
    pub counts: Mutex<Counts>,
    pub bg: Mutex<BgSignal>,
    pub bg_cv: Condvar,
    /// Derived state per keyspace. The WAL thread holds the read lock while it applies a record (delta
    /// and appliers together); attaching holds the write lock while it loads, so an applier sees every
    /// change exactly once. Lock order: `appliers` before `counts`.
    pub appliers: RwLock<Appliers>,
    /// Writers waiting for the delta to drop under its budget.
    pub room: Mutex<()>,
    pub room_cv: Condvar,
}

/// A record whose payload does not decode although its checksum matched.
#[derive(Debug)]
pub(crate) struct BadRecord {
    pub offset_in_payload: usize,
    pub reason: &'static str,
}

impl Core {
    /// Applies one durable record: its operations go to `apply` (the live delta, or recovery's sorted
    /// run), a keyspace creation or drop to the registry. Decodes fully before touching anything, so a
    /// malformed record changes nothing.
    pub(crate) fn apply_record(
        &self,
        kind: u8,
        payload: &Bytes,
        seq: u64,
        mut apply: impl FnMut(u32, u64, Version),
    ) -> Result<(), BadRecord> {
        let bad = |(offset_in_payload, reason)| BadRecord {
            offset_in_payload,
            reason,
        };
        match kind {
            KIND_BATCH => {
                let ops = decode_batch(payload).map_err(bad)?;
                if ops
                    .iter()
                    .any(|op| matches!(op, Op::DeleteRange { .. } | Op::Check { .. }))
                {
                    return Err(BadRecord {
                        offset_in_payload: 0,
                        reason: "unresolved delete-range or condition in a durable record",
                    });
                }
                for op in ops {
                    match op {
                        Op::Put {
                            keyspace,
                            key,
                            value,
                            expires_ms,
                        } => apply(
                            keyspace,
                            key,
                            Version {
                                value: Some(value),
                                seq,
                                expires_ms,
                            },
                        ),
                        Op::Delete { keyspace, key } => apply(
                            keyspace,
                            key,
                            Version {
                                value: None,
                                seq,
                                expires_ms: 0,
                            },
                        ),
                        Op::DeleteRange { .. } | Op::Check { .. } => {}
                    }
                }
                Ok(())
            }
            KIND_CREATE_KEYSPACE => {
                let (id, name) = decode_create_keyspace(payload).map_err(bad)?;
                let mut r = self.registry.write();
                r.insert(id, &name);
                r.dropped.remove(&id);
                Ok(())
            }
            KIND_DROP_KEYSPACE => {
                let (id, name) = decode_create_keyspace(payload).map_err(bad)?;
                self.registry.write().remove(id, &name, seq);
                Ok(())
            }
            _ => Err(BadRecord {
                offset_in_payload: 0,
                reason: "unknown record kind",
            }),
        }
    }

    /// Freezes the active delta at `covered_seq` unless a frozen one is still being compacted.
    /// Only the WAL writer thread (or recovery, before it starts) calls this, between groups.
    pub(crate) fn freeze(&self, covered_seq: u64) -> bool {
        let _g = self.state_mu.lock();
        let cur = self.state.load_full();
        if cur.frozen.is_some() {
            return false;
        }
        self.state.store(Arc::new(ReadState {
            active: Arc::new(Delta::new()),
            frozen: Some(Arc::new(Frozen {
                delta: cur.active.clone(),
                covered_seq,
            })),
            snapshots: cur.snapshots.clone(),
        }));
        self.bg.lock().frozen_ready = true;
        self.bg_cv.notify_all();
        true
    }

    /// Installs recovery's sorted run as the frozen delta covering up to `covered_seq`, for compaction.
    pub(crate) fn install_frozen(&self, run: Arc<dyn DeltaRead>, covered_seq: u64) {
        let _g = self.state_mu.lock();
        let cur = self.state.load_full();
        debug_assert!(
            cur.frozen.is_none(),
            "recovery compacts a frozen run before it freezes another"
        );
        self.state.store(Arc::new(ReadState {
            active: cur.active.clone(),
            frozen: Some(Arc::new(Frozen {
                delta: run,
                covered_seq,
            })),
            snapshots: cur.snapshots.clone(),
        }));
        self.bg.lock().frozen_ready = true;
        self.bg_cv.notify_all();
    }

    /// Wakes writers waiting for room under the delta budget. Takes the `room` lock so that a waiter
    /// between its check and its wait cannot miss the wake-up.
    pub(crate) fn wake_waiting_writers(&self) {
        let _g = self.room.lock();
        self.room_cv.notify_all();
    }

    pub(crate) fn over_compact_threshold(&self) -> bool {
        self.state.load().active.bytes() >= self.opts.delta_bytes_compact
    }
}

/// Hands each applier the changes of one record to its keyspace, in order (a record usually touches
/// one keyspace; runs of the same keyspace are passed together).
pub(crate) fn call_appliers(
    appliers: &Appliers,
    seq: u64,
    derived: &[(u32, u64, Option<Bytes>, u64)],
) {
    let mut changes = Vec::new();
    let mut rest = derived;
    while let Some(&(ks, ..)) = rest.first() {
        let run = rest.iter().take_while(|c| c.0 == ks).count();
        changes.clear();
        changes.extend(rest[..run].iter().map(|(_, key, value, exp)| match value {
            Some(v) => Change::Put {
                key: *key,
                value: v,
                expires_at_ms: (*exp != 0).then_some(*exp),
            },
            None => Change::Delete { key: *key },
        }));
        if let Some(a) = appliers.get(ks) {
            a.apply(seq, &changes);
        }
        rest = &rest[run..];
    }
}

/// What a writer looked up for the key counts before queueing its batch: for each put or delete of
/// the batch, in order, whether the key's newest version below the active delta is a value. Those
/// layers (frozen delta, snapshots) are immutable and replaced only by a state swap (freeze,
/// compaction), so the answers hold exactly while the state is the one they were read from; the WAL
/// thread uses them only then, and only for keys the active delta has no version of.
pub(crate) struct CountHint {
    pub state: Arc<ReadState>,
    pub present_below_active: Vec<bool>,
}

impl CountHint {
    /// Looks up every put and delete of `payload` (a batch record) against the current state.
    pub(crate) fn compute(core: &Core, payload: &Bytes) -> Option<CountHint> {
        let state = core.state.load_full();
        let ops = decode_batch(payload).ok()?;
        let present_below_active = ops
            .iter()
            .filter_map(|op| match op {
                Op::Put { keyspace, key, .. } | Op::Delete { keyspace, key } => {
                    Some(state.present_below_active(*keyspace, *key))
                }
                Op::DeleteRange { .. } | Op::Check { .. } => None,
            })
            .collect();
        Some(CountHint {
            state,
            present_below_active,
        })
    }
}

impl CommitSink for Core {
    fn apply(&self, seq: u64, kind: u8, payload: &Bytes, hint: Option<&crate::wal::Hint>) {
        // Contiguous and in order: the delta's versions, the watermark and replay all assume it.
        let applied = self.applied_seq.load(Ordering::Relaxed);
        assert_eq!(
            seq,
            applied + 1,
            "record {seq} applied after {applied}: sequence numbers must be contiguous"
        );
        self.applied_seq.store(seq, Ordering::Relaxed);
        let appliers = self.appliers.read();
        // (keyspace, key, value or tombstone, expiry) of the changes an applier wants, in order.
        let mut derived: Vec<(u32, u64, Option<Bytes>, u64)> = Vec::new();
        let want_changes = !appliers.is_empty();
        // The counts lock also keeps compaction from swapping snapshots while keys are looked up.
        let mut counts = self.counts.lock();
        if kind == KIND_CREATE_KEYSPACE || kind == KIND_DROP_KEYSPACE {
            // A new keyspace starts at zero whatever its id counted in an earlier life.
            if let Ok((id, _)) = decode_create_keyspace(payload) {
                counts.remove(id);
            }
        }
        let st = self.state.load_full();
        // The writer's lookups, if they were made against this very state.
        let ahead = hint
            .and_then(|h| h.downcast_ref::<CountHint>())
            .filter(|h| Arc::ptr_eq(&h.state, &st))
            .map(|h| h.present_below_active.as_slice());
        let mut op = 0;
        if let Err(e) = self.apply_record(kind, payload, seq, |ks, key, v| {
            let new = v.value.as_ref().map(|_| v.expires_ms);
            if want_changes && appliers.get(ks).is_some() {
                derived.push((ks, key, v.value.clone(), v.expires_ms));
            }
            let prev = match st.active.insert(ks, key, seq, v.value, v.expires_ms) {
                Some(p) => p,
                None => match ahead.and_then(|a| a.get(op)) {
                    Some(&p) => p,
                    None => st.present_below_active(ks, key),
                },
            };
            op += 1;
            counts.write(ks, key, prev, new);
        }) {
            // The writer encoded this payload itself; failing to decode it is a bug, not bad input.
            debug_assert!(false, "live record {seq} does not decode: {e:?}");
            tracing::error!(seq, ?e, "live WAL record does not decode");
        }
        drop(counts);
        call_appliers(&appliers, seq, &derived);
    }

    fn publish(&self, last_seq: u64) {
        assert_eq!(
            last_seq,
            self.applied_seq.load(Ordering::Relaxed),
            "publishing a group that is not fully applied"
        );
        self.visible_seq.store(last_seq, Ordering::Release);
        let st = self.state.load();
        metrics::gauge!(crate::families::STORAGE_DELTA_BYTES.name).set(st.delta_bytes() as f64);
        if st.active.bytes() >= self.opts.delta_bytes_compact && st.frozen.is_none() {
            drop(st);
            self.freeze(last_seq);
        }
    }

    fn freeze(&self, last_seq: u64) {
        Core::freeze(self, last_seq);
    }

    fn resolve(&self, payload: &Bytes) -> Result<Bytes> {
        let ops = decode_batch(payload).map_err(|(at, why)| {
            Error::InvalidOption(format!("malformed batch at byte {at}: {why}"))
        })?;
        let st = self.state.load_full();
        let now = now_ms();
        // Every condition holds against the state before the batch, or nothing is written.
        for op in &ops {
            if let Op::Check {
                keyspace,
                key,
                cond,
            } = op
            {
                let current = st.live_seq(*keyspace, *key, now)?;
                let ok = match cond {
                    Cond::Absent => current.is_none(),
                    Cond::Seq(s) => current == Some(*s),
                };
                if !ok {
                    let name = self.registry.read().by_id.get(keyspace).cloned();
                    return Err(Error::ConditionFailed {
                        keyspace: name.unwrap_or_default(),
                        key: *key,
                        expected: *cond,
                        current_seq: current,
                    });
                }
            }
        }
        let max = self.opts.batch_ops_max;
        let mut enc = BatchEncoder::default();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Check { .. } => {}
                Op::DeleteRange {
                    keyspace,
                    start,
                    end,
                } => {
                    // The live keys in the range, plus those this batch put there before the range.
                    let mut keys: std::collections::BTreeSet<u64> =
                        crate::view::live_keys(&st, *keyspace, *start, *end, now, max + 1)?
                            .into_iter()
                            .collect();
                    keys.extend(ops[..i].iter().filter_map(|o| match o {
                        Op::Put {
                            keyspace: ks, key, ..
                        } if ks == keyspace && (start..=end).contains(&key) => Some(*key),
                        _ => None,
                    }));
                    for k in keys {
                        enc.delete(*keyspace, k);
                        if enc.count() > max {
                            return Err(Error::BatchTooManyOps {
                                count: enc.count(),
                                max,
                            });
                        }
                    }
                }
                other => enc.push(other),
            }
        }
        if enc.count() > max {
            return Err(Error::BatchTooManyOps {
                count: enc.count(),
                max,
            });
        }
        Ok(enc.finish())
    }
}

/// Keyspace names: 1–64 characters from `[A-Za-z0-9_.-]`, not only dots (`.`, `..` read as paths).
pub fn validate_keyspace_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name.bytes().any(|b| b != b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidKeyspaceName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{view::SnapshotSet, wal::record::BatchEncoder};

    fn core() -> Core {
        Core {
            opts: Options::default(),
            state: ArcSwap::from_pointee(ReadState {
                active: Arc::new(Delta::new()),
                frozen: None,
                snapshots: Arc::new(SnapshotSet::default()),
            }),
            state_mu: Mutex::new(()),
            visible_seq: AtomicU64::new(5),
            applied_seq: AtomicU64::new(5),
            registry: RwLock::new(Registry::default()),
            counts: Mutex::new(Counts::default()),
            appliers: RwLock::new(Appliers::default()),
            bg: Mutex::new(BgSignal::default()),
            bg_cv: Condvar::new(),
            room: Mutex::new(()),
            room_cv: Condvar::new(),
        }
    }

    fn put(key: u64) -> Bytes {
        let mut e = BatchEncoder::default();
        e.put(0, key, b"v");
        e.finish()
    }

    #[test]
    fn contiguous_records_apply_and_publish() {
        let c = core();
        c.apply(6, KIND_BATCH, &put(1), None);
        c.apply(7, KIND_BATCH, &put(2), None);
        c.publish(7);
        assert_eq!(c.visible_seq.load(Ordering::Relaxed), 7);
    }

    #[test]
    #[should_panic(expected = "must be contiguous")]
    fn a_gap_in_sequence_numbers_panics() {
        let c = core();
        c.apply(7, KIND_BATCH, &put(1), None);
    }

    #[test]
    #[should_panic(expected = "must be contiguous")]
    fn a_reused_sequence_number_panics() {
        let c = core();
        c.apply(6, KIND_BATCH, &put(1), None);
        c.apply(6, KIND_BATCH, &put(2), None);
    }

    #[test]
    #[should_panic(expected = "not fully applied")]
    fn publishing_past_what_was_applied_panics() {
        let c = core();
        c.apply(6, KIND_BATCH, &put(1), None);
        c.publish(7);
    }

    fn live(c: &Core) -> u64 {
        c.counts.lock().live(0, 0)
    }

    /// A hint deliberately wrong ("the key is present below the active delta" when it is not), to see
    /// whether apply used it.
    fn wrong_hint(c: &Core) -> Box<crate::wal::Hint> {
        Box::new(CountHint {
            state: c.state.load_full(),
            present_below_active: vec![true],
        })
    }

    #[test]
    fn a_hint_from_the_current_state_is_used() {
        let c = core();
        c.apply(6, KIND_BATCH, &put(1), None);
        assert_eq!(live(&c), 1);
        let h = wrong_hint(&c);
        c.apply(7, KIND_BATCH, &put(2), Some(&*h));
        // Believed present before: counted as an overwrite, so the count did not grow.
        assert_eq!(live(&c), 1, "the hint was not used");
        let right = CountHint::compute(&c, &put(3)).unwrap();
        assert_eq!(right.present_below_active, vec![false]);
        c.apply(8, KIND_BATCH, &put(3), Some(&right));
        assert_eq!(live(&c), 2);
    }

    #[test]
    fn a_hint_from_a_replaced_state_is_ignored() {
        let c = core();
        c.apply(6, KIND_BATCH, &put(1), None);
        let h = wrong_hint(&c);
        // A freeze (or compaction) swaps the state between the writer's lookup and the apply.
        let cur = c.state.load_full();
        c.state.store(Arc::new(ReadState {
            active: cur.active.clone(),
            frozen: None,
            snapshots: cur.snapshots.clone(),
        }));
        c.apply(7, KIND_BATCH, &put(2), Some(&*h));
        assert_eq!(live(&c), 2, "the stale hint was used");
    }
}

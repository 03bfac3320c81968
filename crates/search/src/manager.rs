//! The collections of one database: a catalog keyspace (`_collections`), one keyspace per
//! collection (`_c.<name>.<created hex>`), the background indexer that links new vectors into the
//! graphs, and the freeing of dropped collections' keyspaces (dropped in the engine; purged of
//! their documents in cluster mode).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use kyrodb_storage::{Db, Keyspace};
use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::{
    collection::Collection,
    env::{Env, SearchOptions, Tally},
    job::{EmbedFn, JobState, ReembedJob},
    reembed::JobLedger,
    schema::{validate_collection_name, EmbedSpec, Schema},
    Error, Result,
};

/// The keyspace holding the catalog.
pub const CATALOG_KEYSPACE: &str = "_collections";
/// Prefix of collection keyspaces.
pub const COLLECTION_KEYSPACE_PREFIX: &str = "_c.";
/// Prefix of collections' feedback keyspaces (`_f.<name>.<created hex>`, beside `_c.…`).
pub const FEEDBACK_KEYSPACE_PREFIX: &str = "_f.";

/// Keys a purge reads (with their values) per step: documents are small, feedback examples up
/// to `value_bytes_max` each.
const PURGE_CHUNK_DOCUMENTS: usize = 10_000;
const PURGE_CHUNK_FEEDBACK: usize = 32;

/// The feedback keyspace's name of a collection keyspace.
fn feedback_keyspace_name(collection_keyspace: &str) -> String {
    let rest = collection_keyspace
        .strip_prefix(COLLECTION_KEYSPACE_PREFIX)
        .unwrap_or(collection_keyspace);
    format!("{FEEDBACK_KEYSPACE_PREFIX}{rest}")
}

#[derive(Debug, Serialize, Deserialize)]
struct CatalogEntry {
    name: String,
    schema: Schema,
    keyspace: String,
    created_ms: i64,
    /// The collection's re-embed job, if it ever had one (the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reembed: Option<ReembedJob>,
}

/// One collection's numbers.
#[derive(Debug, Clone)]
pub struct CollectionStats {
    /// Its name.
    pub collection: String,
    /// Live documents.
    pub documents: u64,
    /// Per vector field.
    pub fields: Vec<FieldStats>,
}

/// One vector field's index numbers.
#[derive(Debug, Clone)]
pub struct FieldStats {
    /// The field.
    pub field: String,
    /// Live vectors.
    pub vectors: u64,
    /// Not yet linked into the graph.
    pub pending: u64,
    /// Removed, still holding a slot.
    pub tombstones: u64,
    /// Bytes held.
    pub bytes: u64,
}

/// State shared by the collections and the indexer.
#[derive(Debug)]
pub(crate) struct Shared {
    /// What the collections run in (engine, options, budget, indexer wake-up).
    pub env: Arc<Env>,
    catalog: Keyspace,
    map: RwLock<BTreeMap<String, (u64, Arc<Collection>)>>,
    create_mu: Mutex<()>,
    /// Held while graph files are written: they go through one temporary name per file, so two
    /// writers at once (a backup, `POST /v1/snapshot`, shutdown) must take turns.
    checkpoint_mu: Mutex<()>,
    purges: Mutex<Vec<JoinHandle<()>>>,
    jobs: Mutex<Vec<JoinHandle<()>>>,
    /// Catalog changes as the engine applied them (any node's writes, in cluster mode), waiting
    /// for the catalog follower to mirror them in `map`.
    catalog_queue: Mutex<VecDeque<CatalogEvent>>,
    catalog_queue_cv: Condvar,
    /// Sequence number of the last catalog change queued, and of the last one mirrored.
    catalog_seen: AtomicU64,
    catalog_done: Mutex<u64>,
    catalog_done_cv: Condvar,
}

/// One change to the catalog keyspace.
#[derive(Debug)]
struct CatalogEvent {
    seq: u64,
    key: u64,
    value: Option<Vec<u8>>,
}

/// The catalog keyspace's applier: queues every change (the WAL thread must not block) for the
/// catalog follower, which keeps the collection registry equal to the catalog — whoever wrote it.
struct CatalogFollower(Weak<Shared>);

impl kyrodb_storage::Applier for CatalogFollower {
    fn apply(&self, seq: u64, changes: &[kyrodb_storage::Change<'_>]) {
        let Some(s) = self.0.upgrade() else { return };
        let mut q = s.catalog_queue.lock();
        for c in changes {
            q.push_back(CatalogEvent {
                seq,
                key: c.key(),
                value: match c {
                    kyrodb_storage::Change::Put { value, .. } => Some(value.to_vec()),
                    kyrodb_storage::Change::Delete { .. } => None,
                },
            });
        }
        s.catalog_seen.fetch_max(seq, Ordering::AcqRel);
        s.catalog_queue_cv.notify_all();
    }
}

impl Shared {
    /// A collection's catalog key and the collection.
    fn entry(&self, name: &str) -> Result<(u64, Arc<Collection>)> {
        self.map
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchCollection(name.to_owned()))
    }

    fn collections(&self) -> Vec<Arc<Collection>> {
        self.map.read().values().map(|(_, c)| c.clone()).collect()
    }
}

impl Tally for Shared {
    fn index_bytes(&self) -> u64 {
        self.collections().iter().map(|c| c.index_bytes()).sum()
    }

    fn pending(&self) -> usize {
        self.collections().iter().map(|c| c.pending()).sum()
    }
}

impl JobLedger for Shared {
    fn env(&self) -> &Env {
        &self.env
    }

    fn write_job(
        &self,
        c: &Collection,
        job: ReembedJob,
        mut batch: kyrodb_storage::WriteBatch,
    ) -> Result<bool> {
        let _g = self.create_mu.lock();
        if c.dropped.load(Ordering::Acquire) {
            return Ok(false);
        }
        let Ok((key, _)) = self.entry(c.name()) else {
            return Ok(false);
        };
        let value = catalog_value(c, &c.schema(), &job);
        batch.put(&self.catalog, key, &value);
        self.env.db.write(batch)?;
        c.set_job(Some(job));
        self.env.notify_room();
        Ok(true)
    }
}

/// The collections of one database.
#[derive(Debug)]
pub struct Collections {
    shared: Arc<Shared>,
    indexers: Mutex<Vec<JoinHandle<()>>>,
}

impl Collections {
    /// Opens the catalog, rebuilds every collection's indexes from its stored documents (attaching
    /// each to the engine so that later writes keep them current), frees the keyspaces of dropped
    /// collections left by an interrupted drop (or by a version that never dropped them), and
    /// starts the indexer.
    pub fn open(db: Arc<Db>, opts: SearchOptions) -> Result<Collections> {
        let catalog = db.create_keyspace(CATALOG_KEYSPACE)?;
        let env = Arc::new(Env::new(db.clone(), opts));
        let shared = Arc::new(Shared {
            env: env.clone(),
            catalog: catalog.clone(),
            map: RwLock::new(BTreeMap::new()),
            create_mu: Mutex::new(()),
            checkpoint_mu: Mutex::new(()),
            purges: Mutex::new(Vec::new()),
            jobs: Mutex::new(Vec::new()),
            catalog_queue: Mutex::new(VecDeque::new()),
            catalog_queue_cv: Condvar::new(),
            catalog_seen: AtomicU64::new(0),
            catalog_done: Mutex::new(0),
            catalog_done_cv: Condvar::new(),
        });
        let tally: Weak<dyn Tally> = Arc::downgrade(&shared) as Weak<dyn Tally>;
        env.set_tally(tally);
        // The registry follows the catalog: its load (every live entry) is mirrored here before
        // `open` returns; later changes, by this node's API calls or replicated from others, by
        // the catalog follower thread.
        catalog.attach(Arc::new(CatalogFollower(Arc::downgrade(&shared))))?;
        drain_catalog(&shared)?;
        let live_keyspaces: Vec<String> = shared
            .collections()
            .iter()
            .flat_map(|c| {
                [
                    c.keyspace().name().to_owned(),
                    feedback_keyspace_name(c.keyspace().name()),
                ]
            })
            .collect();
        let orphans: Vec<String> = db
            .keyspace_names()
            .into_iter()
            .filter(|n| {
                (n.starts_with(COLLECTION_KEYSPACE_PREFIX)
                    || n.starts_with(FEEDBACK_KEYSPACE_PREFIX))
                    && !live_keyspaces.contains(n)
            })
            .collect();
        let me = Collections {
            shared: shared.clone(),
            indexers: Mutex::new(Vec::new()),
        };
        for o in orphans {
            if let Ok(ks) = db.keyspace(&o) {
                let chunk = if o.starts_with(FEEDBACK_KEYSPACE_PREFIX) {
                    PURGE_CHUNK_FEEDBACK
                } else {
                    PURGE_CHUNK_DOCUMENTS
                };
                free_keyspace(&shared, ks, chunk);
            }
        }
        {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name("kyrodb-catalog".into())
                .spawn(move || follow_catalog(&s))
                .map_err(|source| {
                    Error::Storage(kyrodb_storage::Error::Io {
                        path: "kyrodb-catalog thread".into(),
                        source,
                    })
                })?;
            me.indexers.lock().push(h);
        }
        for i in 0..shared.env.opts.index_threads.clamp(1, 64) {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("kyrodb-indexer-{i}"))
                .spawn(move || indexer(&s, i == 0))
                .map_err(|source| {
                    Error::Storage(kyrodb_storage::Error::Io {
                        path: "kyrodb-indexer thread".into(),
                        source,
                    })
                })?;
            me.indexers.lock().push(h);
        }
        Ok(me)
    }

    /// Creates a collection, or returns the existing one if its schema is the same
    /// (`created` = false). A different schema is [`Error::CollectionExists`].
    pub fn create(&self, name: &str, schema: Schema) -> Result<(Arc<Collection>, bool)> {
        validate_collection_name(name)?;
        schema.validate()?;
        let s = &self.shared;
        let _g = s.create_mu.lock();
        if let Some((_, c)) = s.map.read().get(name) {
            return if *c.schema() == schema {
                Ok((c.clone(), false))
            } else {
                Err(Error::CollectionExists(name.to_owned()))
            };
        }
        let count = s.map.read().len();
        if count >= s.env.opts.collections_max {
            return Err(Error::TooMany {
                what: "collections_max",
                count: count as u64 + 1,
                max: s.env.opts.collections_max as u64,
            });
        }
        let created_ms = crate::doc::now_ms();
        let ks_name = format!("{COLLECTION_KEYSPACE_PREFIX}{name}.{created_ms:x}");
        let ks = s.env.db.create_keyspace(&ks_name)?;
        let ranker = crate::rank::Ranker::open(
            s.env
                .db
                .create_keyspace(&feedback_keyspace_name(&ks_name))?,
            name,
        )?;
        let c = Arc::new(Collection::new(
            name,
            schema.clone(),
            created_ms,
            ks.clone(),
            &s.env,
            None,
            ranker,
        ));
        ks.attach(c.clone())?;
        let entry = CatalogEntry {
            name: name.to_owned(),
            schema,
            keyspace: ks_name,
            created_ms,
            reembed: None,
        };
        // The catalog key: the name's hash, probing past other names' entries.
        let mut key = xxhash_rust::xxh3::xxh3_64(name.as_bytes());
        let used: Vec<u64> = s.map.read().values().map(|(k, _)| *k).collect();
        while used.contains(&key) {
            key = key.wrapping_add(1);
        }
        let value = serde_json::to_vec(&entry).expect("catalog entries serialise");
        if let Err(e) = s.catalog.put(key, &value) {
            ks.detach();
            return Err(e.into());
        }
        s.map.write().insert(name.to_owned(), (key, c.clone()));
        Ok((c, true))
    }

    /// Waits (at most `timeout`) until every catalog change the engine has applied so far is
    /// mirrored in the registry (collections created or dropped through other nodes, in cluster
    /// mode). False on timeout.
    pub fn wait_catalog(&self, timeout: Duration) -> bool {
        let s = &self.shared;
        let want = s.catalog_seen.load(Ordering::Acquire);
        let deadline = Instant::now() + timeout;
        let mut done = s.catalog_done.lock();
        while *done < want {
            if s.catalog_done_cv
                .wait_until(&mut done, deadline)
                .timed_out()
            {
                return *done >= want;
            }
        }
        true
    }

    /// The collection called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Collection>> {
        self.shared
            .map
            .read()
            .get(name)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| Error::NoSuchCollection(name.to_owned()))
    }

    /// Every collection, by name.
    pub fn all(&self) -> Vec<Arc<Collection>> {
        self.shared.collections()
    }

    /// Every collection's info, by name.
    pub fn list(&self) -> Vec<crate::collection::CollectionInfo> {
        self.shared.collections().iter().map(|c| c.info()).collect()
    }

    /// Drops a collection: its catalog entry goes at once (durably), then its keyspaces are dropped
    /// in the engine, which frees them (again at the next start if interrupted). In cluster mode,
    /// where the engine cannot drop keyspaces yet, their documents are deleted in the background.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let s = &self.shared;
        // The catalog follower first mirrors every change so far: a creation it has yet to see
        // would otherwise be opened again after this drop, creating the dropped keyspaces anew
        // (orphans until the next start). Not under `create_mu`, which the follower takes.
        self.wait_catalog(Duration::from_secs(10));
        let _g = s.create_mu.lock();
        let (key, c) = s.entry(name)?;
        s.catalog.delete(key)?;
        drop_local(s, &c);
        free_keyspace(s, c.keyspace().clone(), PURGE_CHUNK_DOCUMENTS);
        free_keyspace(s, c.feedback_keyspace().clone(), PURGE_CHUNK_FEEDBACK);
        Ok(())
    }

    /// Persists every collection's graphs (at shutdown and with engine snapshots) so the next start
    /// verifies them instead of rebuilding. Returns how many collections were written.
    pub fn checkpoint(&self) -> Result<usize> {
        let _g = self.shared.checkpoint_mu.lock();
        let mut n = 0;
        for c in self.shared.collections() {
            let path = crate::checkpoint::path(self.shared.env.db.path(), c.keyspace().name());
            let started = Instant::now();
            c.checkpoint(&path)?;
            tracing::info!(collection = c.name(), file = %path.display(), took_ms = started.elapsed().as_millis() as u64, "graphs written");
            n += 1;
        }
        Ok(n)
    }

    /// Starts re-embedding vector field `field` of collection `name` with `spec` (model and source
    /// text field; the caller has checked the model is the loaded one and fills version and sha256):
    /// the field's new spec and the job record are written durably at once, then a background thread
    /// walks the documents. Refused while the collection runs another job. Returns the job.
    pub fn reembed(
        &self,
        name: &str,
        field: &str,
        spec: EmbedSpec,
        embed: EmbedFn,
    ) -> Result<ReembedJob> {
        let s = &self.shared;
        let job = {
            let _g = s.create_mu.lock();
            let (key, c) = s.entry(name)?;
            if let Some(j) = c.job().filter(|j| j.state == JobState::Running) {
                return Err(Error::JobRunning {
                    collection: name.to_owned(),
                    field: j.field,
                });
            }
            let mut schema = (*c.schema()).clone();
            let Some(v) = schema.vectors.get_mut(field) else {
                return Err(crate::error::invalid(
                    "unknown_field",
                    "field",
                    format!("{field:?} is not a vector field of the collection"),
                ));
            };
            v.embed = Some(spec.clone());
            schema.validate()?;
            let job = ReembedJob {
                field: field.to_owned(),
                model: spec.model.clone(),
                source: spec.source.clone(),
                state: JobState::Running,
                cursor: None,
                done: 0,
                total: c.count(),
                cleared: 0,
                left_to_writers: 0,
                started_ms: crate::doc::now_ms(),
                finished_ms: None,
                error: None,
                resumed: 0,
            };
            s.catalog.put(key, &catalog_value(&c, &schema, &job))?;
            c.set_schema(schema);
            c.set_job(Some(job.clone()));
            self.spawn_job(c, embed)?;
            job
        };
        tracing::info!(collection = name, field, model = %job.model, documents = job.total, "re-embed job started");
        Ok(job)
    }

    /// Running re-embed jobs found in the catalog at open (collection, field, spec), to resume with
    /// [`Collections::resume_reembed`] once the caller has checked its model.
    pub fn unfinished_reembeds(&self) -> Vec<(String, String, EmbedSpec)> {
        self.shared
            .collections()
            .iter()
            .filter_map(|c| {
                let j = c.job().filter(|j| j.state == JobState::Running)?;
                let spec = c.schema().vectors.get(&j.field)?.embed.clone()?;
                Some((c.name().to_owned(), j.field, spec))
            })
            .collect()
    }

    /// Resumes collection `name`'s running job after its cursor.
    pub fn resume_reembed(&self, name: &str, embed: EmbedFn) -> Result<()> {
        let c = self.get(name)?;
        let Some(mut job) = c.job().filter(|j| j.state == JobState::Running) else {
            return Ok(());
        };
        job.resumed += 1;
        c.set_job(Some(job));
        c.set_paused(None);
        tracing::info!(collection = name, "re-embed job resumed");
        self.spawn_job(c, embed)
    }

    /// Marks collection `name`'s running job as waiting (`GET` shows `paused` with `why`).
    pub fn pause_reembed(&self, name: &str, why: String) {
        if let Ok(c) = self.get(name) {
            c.set_paused(Some(why));
        }
    }

    fn spawn_job(&self, c: Arc<Collection>, embed: EmbedFn) -> Result<()> {
        let weak: Weak<dyn JobLedger> = Arc::downgrade(&self.shared) as Weak<dyn JobLedger>;
        let h = std::thread::Builder::new()
            .name("kyrodb-reembed".into())
            .spawn(move || crate::reembed::run(weak, c, embed))
            .map_err(|source| {
                Error::Storage(kyrodb_storage::Error::Io {
                    path: "kyrodb-reembed thread".into(),
                    source,
                })
            })?;
        let mut jobs = self.shared.jobs.lock();
        jobs.retain(|h| !h.is_finished());
        jobs.push(h);
        Ok(())
    }

    /// Numbers for monitoring, per collection.
    pub fn stats(&self) -> Vec<CollectionStats> {
        self.shared
            .collections()
            .iter()
            .map(|c| CollectionStats {
                collection: c.name().to_owned(),
                documents: c.count(),
                fields: c
                    .vectors
                    .iter()
                    .map(|v| {
                        let s = v.hnsw.stats();
                        FieldStats {
                            field: v.name.clone(),
                            vectors: s.live as u64,
                            pending: s.pending as u64,
                            tombstones: s.tombstones as u64,
                            bytes: s.bytes as u64,
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Bytes held by all vector indexes, and vectors waiting to be linked.
    pub fn totals(&self) -> (u64, u64) {
        let cs = self.shared.collections();
        (
            cs.iter().map(|c| c.index_bytes()).sum(),
            cs.iter().map(|c| c.pending() as u64).sum(),
        )
    }

    /// Writes the graphs (best effort: a failure is logged; the next start rebuilds), stops the
    /// indexer and detaches every collection.
    pub fn close(&self) {
        if self.shared.env.is_closing() {
            return;
        }
        if let Err(e) = self.checkpoint() {
            tracing::warn!(%e, "graphs not written at close; the next start rebuilds them");
        }
        self.shared.env.close();
        {
            let _q = self.shared.catalog_queue.lock();
            self.shared.catalog_queue_cv.notify_all();
        }
        for h in std::mem::take(&mut *self.shared.jobs.lock()) {
            let _ = h.join();
        }
        for h in std::mem::take(&mut *self.indexers.lock()) {
            let _ = h.join();
        }
        for h in std::mem::take(&mut *self.shared.purges.lock()) {
            let _ = h.join();
        }
        for c in self.shared.collections() {
            c.keyspace().detach();
        }
    }
}

impl Drop for Collections {
    fn drop(&mut self) {
        self.close();
    }
}

/// The catalog entry of collection `c` with `schema` and its re-embed `job`.
fn catalog_value(c: &Collection, schema: &Schema, job: &ReembedJob) -> Vec<u8> {
    let entry = CatalogEntry {
        name: c.name().to_owned(),
        schema: schema.clone(),
        keyspace: c.keyspace().name().to_owned(),
        created_ms: c.created_ms(),
        reembed: Some(job.clone()),
    };
    serde_json::to_vec(&entry).expect("catalog entries serialise")
}

/// A collection's graph file, if present and verified; otherwise `None` (logged) and the graphs are
/// rebuilt from the documents.
/// Takes a collection out of the registry on this node (no engine write): its catalog entry is
/// already gone.
fn drop_local(s: &Arc<Shared>, c: &Arc<Collection>) {
    c.dropped.store(true, Ordering::Release);
    s.map.write().remove(c.name());
    c.keyspace().detach();
    let _ = std::fs::remove_file(crate::checkpoint::path(
        s.env.db.path(),
        c.keyspace().name(),
    ));
}

/// Registers the collection a catalog entry describes: its keyspaces (which exist: they are
/// created before the entry is written), its indexes rebuilt from the stored documents (or a
/// verified graph file), attached so later writes keep them current.
fn open_collection(shared: &Arc<Shared>, key: u64, entry: CatalogEntry) -> Result<()> {
    let db = &shared.env.db;
    let ks = db.create_keyspace(&entry.keyspace)?;
    let fks_name = feedback_keyspace_name(&entry.keyspace);
    let ranker = crate::rank::Ranker::open(db.create_keyspace(&fks_name)?, &entry.name)?;
    let started = Instant::now();
    let (loaded, source) = load_graphs(db, &entry.keyspace, &entry.schema);
    let from_file = loaded.is_some();
    let c = Arc::new(Collection::new(
        &entry.name,
        entry.schema,
        entry.created_ms,
        ks.clone(),
        &shared.env,
        loaded,
        ranker,
    ));
    ks.attach(c.clone())?;
    c.finish_load(source);
    c.set_job(entry.reembed);
    tracing::info!(collection = %entry.name, graph_file = from_file, pending = c.pending(), "vector indexes verified against the stored documents");
    tracing::info!(collection = %entry.name, documents = c.count(), took_ms = started.elapsed().as_millis() as u64, "collection loaded; linking its vectors in the background");
    shared.map.write().insert(entry.name, (key, c));
    Ok(())
}

/// Mirrors one catalog change in the registry. A change this node's API call made is already
/// there (the call holds `create_mu` from its write to its registry update): nothing to do.
fn apply_catalog(shared: &Arc<Shared>, ev: CatalogEvent) -> Result<()> {
    let _g = shared.create_mu.lock();
    let current = shared
        .map
        .read()
        .values()
        .find(|(k, _)| *k == ev.key)
        .cloned();
    let Some(v) = ev.value else {
        if let Some((_, c)) = current {
            tracing::info!(collection = c.name(), "collection dropped (catalog)");
            drop_local(shared, &c);
        }
        return Ok(());
    };
    let entry: CatalogEntry = serde_json::from_slice(&v).map_err(|e| Error::Corrupt {
        collection: CATALOG_KEYSPACE.into(),
        key: ev.key,
        reason: e.to_string(),
    })?;
    if let Some((_, c)) = &current {
        if c.name() == entry.name && c.keyspace().name() == entry.keyspace {
            // The same collection: a schema change or re-embed progress written elsewhere.
            if *c.schema() != entry.schema {
                c.set_schema(entry.schema);
            }
            // Records are mirrored after the fact: a stale one must not undo newer progress.
            let stale = match (&entry.reembed, c.job()) {
                (Some(new), Some(cur)) => !new.supersedes(&cur),
                _ => false,
            };
            if !stale {
                c.set_job(entry.reembed);
            }
            return Ok(());
        }
        drop_local(shared, c);
    }
    let replaced = shared.map.read().get(&entry.name).cloned();
    if let Some((_, old)) = replaced {
        drop_local(shared, &old);
    }
    open_collection(shared, ev.key, entry)
}

fn mark_catalog_done(shared: &Shared, seq: u64) {
    let mut d = shared.catalog_done.lock();
    *d = (*d).max(seq);
    shared.catalog_done_cv.notify_all();
}

/// Mirrors every queued catalog change (at open: the catalog's load).
fn drain_catalog(shared: &Arc<Shared>) -> Result<()> {
    loop {
        let Some(ev) = shared.catalog_queue.lock().pop_front() else {
            return Ok(());
        };
        let seq = ev.seq;
        apply_catalog(shared, ev)?;
        mark_catalog_done(shared, seq);
    }
}

/// The catalog follower thread.
fn follow_catalog(shared: &Arc<Shared>) {
    loop {
        let ev = {
            let mut q = shared.catalog_queue.lock();
            loop {
                if shared.env.is_closing() {
                    return;
                }
                if let Some(ev) = q.pop_front() {
                    break ev;
                }
                shared
                    .catalog_queue_cv
                    .wait_for(&mut q, Duration::from_millis(200));
            }
        };
        let seq = ev.seq;
        if let Err(e) = apply_catalog(shared, ev) {
            tracing::error!(%e, "catalog change not mirrored in the collection registry");
        }
        mark_catalog_done(shared, seq);
    }
}

fn load_graphs(
    db: &Db,
    keyspace: &str,
    schema: &Schema,
) -> (Option<crate::checkpoint::Loaded>, String) {
    let path = crate::checkpoint::path(db.path(), keyspace);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (None, "rebuilt: no graph file".into())
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), %e, "graph file unreadable; rebuilding from the documents");
            return (None, format!("rebuilt: {}: {e}", path.display()));
        }
    };
    let fields: Vec<(String, usize, crate::distance::Metric)> = schema
        .vectors
        .iter()
        .map(|(n, s)| (n.clone(), s.dim as usize, s.metric))
        .collect();
    match crate::checkpoint::decode(&path, &bytes, &fields, &schema.text_analysis()) {
        Ok(l) => (Some(l), "graph file, verified against the documents".into()),
        Err(e) => {
            tracing::warn!(%e, "graph file refused; rebuilding from the documents");
            (None, format!("rebuilt: graph file refused: {e}"))
        }
    }
}

/// Frees a dropped collection's keyspace: drops it in the engine, or, in cluster mode (keyspace
/// drops are not replicated yet), deletes its keys in the background. A failed drop is logged: the
/// keyspace is an orphan the next start drops.
fn free_keyspace(s: &Arc<Shared>, ks: Keyspace, chunk: usize) {
    if s.env.db.is_replicated() {
        if ks.count() > 0 {
            spawn_purge(s, ks, chunk);
        }
        return;
    }
    if let Err(e) = s.env.db.drop_keyspace(ks.name()) {
        tracing::warn!(keyspace = ks.name(), %e, "dropped collection's keyspace not freed; the next start retries");
    }
}

/// Deletes every key of a dropped collection's keyspace, a chunk at a time, until done or closing
/// (the next start purges the rest).
fn spawn_purge(s: &Arc<Shared>, ks: Keyspace, chunk: usize) {
    let weak = Arc::downgrade(s);
    let h = std::thread::Builder::new()
        .name("kyrodb-purge".into())
        .spawn(move || loop {
            if weak.upgrade().is_none_or(|s| s.env.is_closing()) {
                return;
            }
            let keys: Vec<u64> = match ks.scan(.., chunk) {
                Ok(v) => v.into_iter().map(|(k, _)| k).collect(),
                Err(e) => {
                    tracing::warn!(keyspace = ks.name(), %e, "purge stopped");
                    return;
                }
            };
            if keys.is_empty() {
                return;
            }
            if let Err(e) = ks.delete_many(&keys) {
                tracing::warn!(keyspace = ks.name(), %e, "purge stopped");
                return;
            }
        });
    match h {
        Ok(h) => s.purges.lock().push(h),
        Err(e) => tracing::warn!(%e, "could not start a purge thread; the next start purges"),
    }
}

/// Links pending vectors into the graphs, a small slice at a time so that every collection
/// progresses; sleeps until woken when there is nothing to do. Every indexer thread runs this (the
/// graphs take concurrent linkers); the first also runs the tombstone repair.
fn indexer(s: &Shared, maintains: bool) {
    let mut last_maintain = Instant::now();
    while !s.env.is_closing() {
        let mut linked = 0;
        for c in s.collections() {
            linked += c.link(64);
            // Text segment merges (one at a time per collection, any indexer thread).
            linked += usize::from(c.merge_text());
            // Learned ranking retrained from new feedback.
            linked += usize::from(c.train_ranker());
        }
        if linked > 0 {
            s.env.notify_room();
            continue;
        }
        if maintains && last_maintain.elapsed() > Duration::from_secs(1) {
            for c in s.collections() {
                c.maintain();
            }
            last_maintain = Instant::now();
        }
        s.env.wait_for_work(Duration::from_secs(1));
    }
}

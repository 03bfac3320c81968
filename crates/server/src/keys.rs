//! Scoped API keys and who a request is.
//!
//! Keys made at run time by an admin (`POST /v1/keys`) carry a role, scopes (collection and keyspace
//! names or globs), an optional tenant and optional quotas. Only the SHA-256 of a token is kept, in
//! the reserved keyspace `_keys` — written through the engine like any data, so it is durable, and
//! replicated in a cluster. A key's engine key is the first 8 bytes of its token's digest (its `id`,
//! 16 hex digits), so finding the key of a token is one engine read; the stored digest is then
//! compared in constant time. Nothing is cached: a deleted key is refused by a node as soon as that
//! node has applied the delete.
//!
//! Keys from `KYRODB_API_KEYS` are global: every collection and keyspace, no tenant.
//!
//! [`Principal`] is who a request is. The role check ([`crate::auth`]) sets it for the request's
//! task ([`PRINCIPAL`]); the places that resolve a collection or a keyspace by name check it there
//! (`routes::collections::collection`, `routes::kv::keyspace`), so a handler cannot reach a
//! collection or keyspace without the check.

use crate::error::ErrorCode;
use std::{collections::HashMap, num::NonZeroU32, sync::Arc};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kyrodb_storage::Db;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::{error::ApiError, role::Role};

/// The reserved keyspace holding the keys.
pub const KEYS_KEYSPACE: &str = "_keys";
/// Most keys a server holds.
pub const KEYS_MAX: usize = 10_000;
/// Most scopes (globs) of each kind on one key.
pub const SCOPES_MAX: usize = 64;
/// Longest glob, name or tenant.
const TEXT_BYTES_MAX: usize = 128;
/// Prefix of generated tokens (so a leaked one is recognisable, e.g. by secret scanners).
pub const TOKEN_PREFIX: &str = "kdb_";

tokio::task_local! {
    /// Who the current request is; set by the role check around the handler. Unset when the server
    /// has no keys (everyone may do everything).
    pub static PRINCIPAL: Arc<Principal>;
}

/// The current request's principal (None: the server has no keys configured).
pub fn current() -> Option<Arc<Principal>> {
    PRINCIPAL.try_with(Arc::clone).ok()
}

/// Where a principal's key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `KYRODB_API_KEYS`.
    Config,
    /// `POST /v1/keys`.
    Key,
}

/// Optional limits of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Requests per second (a token bucket with a burst of one second's worth): 429 `rate_limited`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::routes::extract::de_opt_requests_per_s"
    )]
    #[schema(value_type = u64, minimum = 1, maximum = 4294967295u64)]
    pub requests_per_s: Option<u64>,
    /// Most documents the key's tenant may hold in each collection (tenant keys only): a write
    /// that would add more is refused with 403 `quota_exceeded`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::routes::extract::de_opt_documents"
    )]
    #[schema(value_type = u64, minimum = 1, maximum = 9007199254740992u64)]
    pub documents: Option<u64>,
    /// Request body bytes per second (a token bucket with a burst of one second's worth; a body
    /// larger than that is refused whole with 413): 429 `rate_limited`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::routes::extract::de_opt_bytes_per_s"
    )]
    #[schema(value_type = u64, minimum = 1, maximum = 4294967295u64)]
    pub bytes_per_s: Option<u64>,
}

/// One stored key (no secret: `digest` is the SHA-256 of the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    id: String,
    #[serde(default)]
    name: String,
    role: String,
    collections: Vec<String>,
    keyspaces: Vec<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    quotas: Quotas,
    created_at_ms: i64,
    digest: String,
}

/// A key as `GET /v1/keys` shows it (never the token).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// 16 hex digits; `DELETE /v1/keys/{id}` revokes it.
    pub id: String,
    /// A label for people; empty when none was given.
    pub name: String,
    /// `read`, `write` or `admin`.
    pub role: String,
    /// Collection names or globs (`*` any run of characters, `?` one) the key may use.
    pub collections: Vec<String>,
    /// Keyspace names or globs the key may use.
    pub keyspaces: Vec<String>,
    /// The tenant the key is bound to, if any.
    pub tenant: Option<String>,
    /// The key's limits (an empty object when it has none).
    pub quotas: Quotas,
    /// When the key was made, in Unix milliseconds.
    pub created_at_ms: i64,
}

/// A key's role.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// May call the read routes.
    Read,
    /// May also write.
    Write,
    /// May also call the admin routes.
    Admin,
}

/// `POST /v1/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// What the key may do: `read` < `write` < `admin`, each including the ones below it.
    pub role: KeyRole,
    /// A label for people (at most 128 bytes, no control characters).
    #[serde(default, deserialize_with = "crate::routes::extract::de_present")]
    #[schema(value_type = String, max_length = 128)]
    pub name: Option<String>,
    /// Collection names or globs the key may use (`["*"]`: all). Default: none.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub collections: Vec<String>,
    /// Keyspace names or globs the key may use (`["*"]`: all; `default` is a keyspace like any
    /// other). Default: none. A key with neither reaches only the node's read-only routes that
    /// name no collection or keyspace (`/v2/embed`, `/build_info`, …).
    #[serde(default)]
    #[schema(max_items = 64)]
    pub keyspaces: Vec<String>,
    /// Bind the key to a tenant: in collections with a `tenant_field` it reads only that tenant's
    /// documents and its writes are stamped with it; collections without one are refused to it.
    #[serde(default, deserialize_with = "crate::routes::extract::de_present")]
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    pub tenant: Option<String>,
    /// Optional limits. Default: none.
    #[serde(default)]
    pub quotas: Quotas,
}

/// The answer to `POST /v1/keys`: the key and, this once, its token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key as `GET /v1/keys` shows it.
    #[serde(flatten)]
    pub key: KeyInfo,
    /// The bearer token. It is not stored and cannot be shown again.
    pub token: String,
    /// In a cluster, the members that had not applied the new key when the answer was sent (down
    /// or cut off: each knows the key once it catches up). Empty: every node takes the key now.
    pub pending_nodes: Vec<PendingNode>,
}

/// A cluster member that had not applied a key change within the cluster timeout.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PendingNode {
    /// The member's node id.
    pub node_id: u64,
    /// Its applied index, or why it could not be asked.
    pub reason: String,
}

/// Names or globs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Globs(Vec<String>);

impl Globs {
    /// The glob `*`: every name.
    pub fn all() -> Globs {
        Globs(vec!["*".into()])
    }

    /// Whether `name` matches any of the globs.
    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|g| glob(g.as_bytes(), name.as_bytes()))
    }

    fn is_all(&self) -> bool {
        self.0.iter().any(|g| g == "*")
    }
}

/// `*` matches any run of bytes (also none), `?` one byte; everything else itself. Iterative with
/// one backtrack point, so linear-ish and never recursive on hostile patterns.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// Who a request is.
#[derive(Debug)]
pub struct Principal {
    /// `config:<16 hex>` (the first 8 bytes of the token's digest) or the key's id.
    pub id: String,
    /// Where the key comes from.
    pub source: Source,
    /// What the key may do.
    pub role: Role,
    /// The collections the key may use.
    pub collections: Globs,
    /// The keyspaces the key may use.
    pub keyspaces: Globs,
    /// The tenant the key is bound to, if any.
    pub tenant: Option<String>,
    /// The key's limits.
    pub quotas: Quotas,
}

fn forbidden(message: String) -> ApiError {
    ApiError::of(ErrorCode::Forbidden, message)
}

impl Principal {
    /// A key from `KYRODB_API_KEYS`: everything its role allows.
    pub fn config(role: Role, digest: &[u8; 32]) -> Principal {
        Principal {
            id: format!("config:{}", hex(&digest[..8])),
            source: Source::Config,
            role,
            collections: Globs::all(),
            keyspaces: Globs::all(),
            tenant: None,
            quotas: Quotas::default(),
        }
    }

    /// May act on the whole node (snapshots, cluster, keys, audit, backups): every collection and
    /// keyspace, no tenant.
    pub fn is_global(&self) -> bool {
        self.collections.is_all() && self.keyspaces.is_all() && self.tenant.is_none()
    }

    /// Whether the key may use collection `name`.
    pub fn may_collection(&self, name: &str) -> bool {
        self.collections.matches(name)
    }

    /// Whether the key may use keyspace `name`.
    pub fn may_keyspace(&self, name: &str) -> bool {
        self.keyspaces.matches(name)
    }

    /// Ok when the key may use collection `name`, else 403 `forbidden`.
    pub fn check_collection(&self, name: &str) -> Result<(), ApiError> {
        if self.may_collection(name) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "key {} may not use collection {name:?} (its collections: {:?})",
                self.id, self.collections.0
            )))
        }
    }

    /// Ok when the key may use keyspace `name`, else 403 `forbidden`.
    pub fn check_keyspace(&self, name: &str) -> Result<(), ApiError> {
        if self.may_keyspace(name) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "key {} may not use keyspace {name:?} (its keyspaces: {:?})",
                self.id, self.keyspaces.0
            )))
        }
    }

    /// Whole-collection changes (create, drop, re-embed) are not a tenant's to make.
    pub fn check_not_tenant(&self, what: &str) -> Result<(), ApiError> {
        match &self.tenant {
            None => Ok(()),
            Some(t) => Err(forbidden(format!(
                "key {} is bound to tenant {t:?}: {what} acts on every tenant's documents",
                self.id
            ))),
        }
    }
}

/// Checks the current principal (if any) may use collection `name`.
pub fn check_collection(name: &str) -> Result<(), ApiError> {
    match current() {
        Some(p) => p.check_collection(name),
        None => Ok(()),
    }
}

/// Checks the current principal (if any) may use keyspace `name`.
pub fn check_keyspace(name: &str) -> Result<(), ApiError> {
    match current() {
        Some(p) => p.check_keyspace(name),
        None => Ok(()),
    }
}

/// Checks the current principal (if any) is not bound to a tenant.
pub fn check_not_tenant(what: &str) -> Result<(), ApiError> {
    match current() {
        Some(p) => p.check_not_tenant(what),
        None => Ok(()),
    }
}

/// The current principal's tenant in a collection whose schema names `tenant_field`: Ok(None) when
/// the request is not bound to a tenant; 403 when it is but the collection has no tenant field.
pub fn tenant_in(
    collection: &str,
    tenant_field: Option<&str>,
) -> Result<Option<kyrodb_search::Tenant>, ApiError> {
    let Some(p) = current() else { return Ok(None) };
    let Some(t) = &p.tenant else { return Ok(None) };
    match tenant_field {
        Some(f) => Ok(Some(kyrodb_search::Tenant {
            field: f.to_owned(),
            value: t.clone(),
        })),
        None => Err(forbidden(format!(
            "key {} is bound to tenant {t:?} but collection {collection:?} declares no \
             tenant_field, so its documents cannot be told apart by tenant",
            p.id
        ))),
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn check_text(path: &str, s: &str, glob_ok: bool) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= TEXT_BYTES_MAX
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'_' | b'-' | b'.')
                || (glob_ok && matches!(b, b'*' | b'?'))
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::of(
            ErrorCode::InvalidApiKey,
            format!(
                "{path}: {:?} must be 1–{TEXT_BYTES_MAX} characters from A-Z a-z 0-9 _ - .{}",
                crate::error::cut_echo(s, 64),
                if glob_ok {
                    " and the wildcards * ?"
                } else {
                    ""
                }
            ),
        ))
    }
}

impl NewKey {
    fn validate(&self) -> Result<Role, ApiError> {
        let role = match self.role {
            KeyRole::Read => Role::Read,
            KeyRole::Write => Role::Write,
            KeyRole::Admin => Role::Admin,
        };
        if let Some(n) = &self.name {
            if n.len() > TEXT_BYTES_MAX || n.chars().any(char::is_control) {
                return Err(ApiError::of(
                    ErrorCode::InvalidApiKey,
                    format!("name: at most {TEXT_BYTES_MAX} bytes, no control characters"),
                ));
            }
        }
        for (what, list) in [
            ("collections", &self.collections),
            ("keyspaces", &self.keyspaces),
        ] {
            if list.len() > SCOPES_MAX {
                return Err(ApiError::of(
                    ErrorCode::InvalidApiKey,
                    format!("{what}: at most {SCOPES_MAX} names or globs"),
                ));
            }
            for (i, g) in list.iter().enumerate() {
                check_text(&format!("{what}[{i}]"), g, true)?;
            }
        }
        if let Some(t) = &self.tenant {
            check_text("tenant", t, false)?;
        }
        let q = &self.quotas;
        if q.requests_per_s == Some(0) || q.bytes_per_s == Some(0) || q.documents == Some(0) {
            return Err(ApiError::of(
                ErrorCode::InvalidApiKey,
                "quotas: every quota is at least 1 (leave it out for no limit)",
            ));
        }
        let big = |x: Option<u64>, max: u64| x.is_some_and(|x| x > max);
        if big(q.requests_per_s, u32::MAX.into())
            || big(q.bytes_per_s, u32::MAX.into())
            || big(q.documents, 1 << 53)
        {
            return Err(ApiError::of(
                ErrorCode::InvalidApiKey,
                "quotas: requests_per_s and bytes_per_s are at most 4294967295, documents at \
                 most 2^53",
            ));
        }
        if q.documents.is_some() && self.tenant.is_none() {
            return Err(ApiError::of(
                ErrorCode::InvalidApiKey,
                "quotas.documents: counts a tenant's documents, so it needs tenant",
            ));
        }
        Ok(role)
    }
}

impl Stored {
    fn info(&self) -> KeyInfo {
        KeyInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role.clone(),
            collections: self.collections.clone(),
            keyspaces: self.keyspaces.clone(),
            tenant: self.tenant.clone(),
            quotas: self.quotas.clone(),
            created_at_ms: self.created_at_ms,
        }
    }

    fn principal(&self) -> Option<Principal> {
        Some(Principal {
            id: self.id.clone(),
            source: Source::Key,
            role: self.role.parse().ok()?,
            collections: Globs(self.collections.clone()),
            keyspaces: Globs(self.keyspaces.clone()),
            tenant: self.tenant.clone(),
            quotas: self.quotas.clone(),
        })
    }
}

fn engine_key_of(digest: &[u8; 32]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Ok(k) = u64::from_str_radix(id, 16) {
            return Ok(k);
        }
    }
    Err(ApiError::of(
        ErrorCode::InvalidApiKeyId,
        format!(
            "key id {:?} is not 16 hex digits",
            crate::error::cut_echo(id, 40)
        ),
    ))
}

/// The keys kept in the engine, and the quota buckets of the keys that have quotas.
#[derive(Clone)]
pub struct KeyStore {
    db: Arc<Db>,
    buckets: Arc<std::sync::Mutex<HashMap<String, Arc<Buckets>>>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

/// One key's token buckets.
struct Buckets {
    quotas: Quotas,
    requests: Option<DefaultDirectRateLimiter>,
    bytes: Option<DefaultDirectRateLimiter>,
}

fn bucket(per_s: u64) -> DefaultDirectRateLimiter {
    let n = NonZeroU32::new(per_s.clamp(1, u64::from(u32::MAX)) as u32).expect("positive");
    RateLimiter::direct(Quota::per_second(n).allow_burst(n))
}

fn rate_limited(message: String) -> ApiError {
    ApiError::of(ErrorCode::RateLimited, message).retry_after(1)
}

impl KeyStore {
    /// The store kept in `db`, in the reserved keyspace [`KEYS_KEYSPACE`].
    pub fn new(db: Arc<Db>) -> KeyStore {
        KeyStore {
            db,
            buckets: Default::default(),
        }
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Buckets>>> {
        // A panic while holding it leaves buckets that are still usable.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keyspace(&self) -> Result<Option<kyrodb_storage::Keyspace>, ApiError> {
        match self.db.keyspace(KEYS_KEYSPACE) {
            Ok(k) => Ok(Some(k)),
            Err(kyrodb_storage::Error::NoSuchKeyspace(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The principal of a token that is not a configured one, if it is a stored key's.
    pub fn lookup(&self, digest: &[u8; 32]) -> Result<Option<Principal>, ApiError> {
        let Some(ks) = self.keyspace()? else {
            return Ok(None);
        };
        let Some(v) = ks.get(engine_key_of(digest))? else {
            return Ok(None);
        };
        let Ok(s) = serde_json::from_slice::<Stored>(&v) else {
            tracing::error!(
                keyspace = KEYS_KEYSPACE,
                "a stored key does not decode; it is refused"
            );
            return Ok(None);
        };
        let stored = decode_hex32(&s.digest).unwrap_or([0; 32]);
        if !bool::from(stored.ct_eq(digest)) {
            return Ok(None);
        }
        Ok(s.principal())
    }

    /// Whether `p` still holds: a configured key always; a stored one while its record exists (it
    /// may have been revoked since the request's key was looked up — checked again after a cluster
    /// read point, which may have applied the revocation).
    pub fn still_holds(&self, p: &Principal) -> Result<bool, ApiError> {
        if p.source != Source::Key {
            return Ok(true);
        }
        let Some(ks) = self.keyspace()? else {
            return Ok(false);
        };
        Ok(ks.get(parse_id(&p.id)?)?.is_some())
    }

    /// Creates a key; its token is in the answer and nowhere else.
    pub fn create(&self, req: NewKey) -> Result<CreatedKey, ApiError> {
        let role = req.validate()?;
        let ks = match self.keyspace()? {
            Some(k) => k,
            None => self.db.create_keyspace(KEYS_KEYSPACE)?,
        };
        if ks.count() as usize >= KEYS_MAX {
            return Err(ApiError::of(
                ErrorCode::TooManyApiKeys,
                format!("a server holds at most {KEYS_MAX} keys; delete unused ones"),
            ));
        }
        for _ in 0..4 {
            let mut secret = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
            let token = format!("{TOKEN_PREFIX}{}", hex(&secret));
            let digest = crate::role::digest(token.as_bytes());
            let stored = Stored {
                id: hex(&digest[..8]),
                name: req.name.clone().unwrap_or_default(),
                role: role.as_str().to_owned(),
                collections: req.collections.clone(),
                keyspaces: req.keyspaces.clone(),
                tenant: req.tenant.clone(),
                quotas: req.quotas.clone(),
                created_at_ms: kyrodb_search::doc::now_ms(),
                digest: hex(&digest),
            };
            let bytes =
                serde_json::to_vec(&stored).map_err(|e| ApiError::internal(e.to_string()))?;
            match ks.put_if_absent(engine_key_of(&digest), &bytes) {
                Ok(_) => {
                    return Ok(CreatedKey {
                        key: stored.info(),
                        token,
                        pending_nodes: Vec::new(),
                    })
                }
                // Two tokens whose digests share 8 bytes: draw again.
                Err(kyrodb_storage::Error::ConditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::internal("could not draw a fresh key id"))
    }

    /// Every key, without secrets, by id.
    pub fn list(&self) -> Result<Vec<KeyInfo>, ApiError> {
        let Some(ks) = self.keyspace()? else {
            return Ok(Vec::new());
        };
        let rows = ks.scan(.., KEYS_MAX + 1)?;
        Ok(rows
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Stored>(v).ok())
            .map(|s| s.info())
            .collect())
    }

    /// Revokes a key: 404 `key_not_found` when there is none with that id.
    pub fn delete(&self, id: &str) -> Result<(), ApiError> {
        let k = parse_id(id)?;
        let not_found =
            || ApiError::of(ErrorCode::ApiKeyNotFound, format!("no key with id {id:?}"));
        let Some(ks) = self.keyspace()? else {
            return Err(not_found());
        };
        let Some(e) = ks.get_entry(k)? else {
            return Err(not_found());
        };
        match ks.delete_if_seq(k, e.seq) {
            Ok(_) => {
                self.buckets().remove(&id.to_ascii_lowercase());
                Ok(())
            }
            Err(kyrodb_storage::Error::ConditionFailed { .. }) => Err(not_found()),
            Err(e) => Err(e.into()),
        }
    }

    /// Charges one request of `body_bytes` to `p`'s quotas: 429 when a bucket is empty.
    pub fn charge(&self, p: &Principal, body_bytes: u64) -> Result<(), ApiError> {
        let q = &p.quotas;
        if q.requests_per_s.is_none() && q.bytes_per_s.is_none() {
            return Ok(());
        }
        let b = {
            let mut m = self.buckets();
            if m.len() > 2 * KEYS_MAX {
                m.clear(); // keys deleted on other nodes leave their buckets here: bounded
            }
            let fresh = || {
                Arc::new(Buckets {
                    quotas: q.clone(),
                    requests: q.requests_per_s.map(bucket),
                    bytes: q.bytes_per_s.map(bucket),
                })
            };
            let e = m.entry(p.id.clone()).or_insert_with(fresh);
            if e.quotas != *q {
                *e = fresh();
            }
            e.clone()
        };
        if let Some(r) = &b.requests {
            if r.check().is_err() {
                return Err(rate_limited(format!(
                    "key {} is over its quota of {} requests per second",
                    p.id,
                    q.requests_per_s.unwrap_or(0)
                )));
            }
        }
        if let (Some(r), Some(n)) = (
            &b.bytes,
            NonZeroU32::new(body_bytes.min(u32::MAX as u64) as u32),
        ) {
            match r.check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(rate_limited(format!(
                        "key {} is over its quota of {} body bytes per second",
                        p.id,
                        q.bytes_per_s.unwrap_or(0)
                    )))
                }
                Err(_) => {
                    return Err(ApiError::of(
                        ErrorCode::BodyTooLarge,
                        format!(
                            "the body ({body_bytes} bytes) is over key {}'s quota of {} bytes \
                             per second",
                            p.id,
                            q.bytes_per_s.unwrap_or(0)
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        let g = |p: &str, s: &str| glob(p.as_bytes(), s.as_bytes());
        assert!(g("*", ""));
        assert!(g("*", "anything"));
        assert!(g("team-a-*", "team-a-docs"));
        assert!(!g("team-a-*", "team-b-docs"));
        assert!(!g("team-a-*", "xteam-a-docs"));
        assert!(g("docs", "docs"));
        assert!(!g("docs", "docs2"));
        assert!(!g("docs", "doc"));
        assert!(g("d?cs", "docs"));
        assert!(g("*-prod", "eu-prod"));
        assert!(!g("*-prod", "eu-prod-old"));
        assert!(g("a*b*c", "axxbyyc"));
        assert!(!g("a*b*c", "axxbyy"));
        // Hostile patterns stay fast (no exponential backtracking).
        let p = "*a".repeat(40);
        let s = "a".repeat(60) + "b";
        assert!(!g(&p, &s));
    }

    #[test]
    fn a_principal_is_global_only_with_every_scope_and_no_tenant() {
        let mut p = Principal::config(Role::Admin, &[7; 32]);
        assert!(p.is_global());
        assert_eq!(p.id, "config:0707070707070707");
        p.tenant = Some("acme".into());
        assert!(!p.is_global());
        p.tenant = None;
        p.collections = Globs(vec!["docs-*".into()]);
        assert!(!p.is_global());
        assert!(p.check_collection("docs-1").is_ok());
        assert_eq!(p.check_collection("other").unwrap_err().status, 403);
    }

    #[test]
    fn hex_round_trips() {
        let d = crate::role::digest(b"token");
        assert_eq!(decode_hex32(&hex(&d)), Some(d));
        assert_eq!(decode_hex32("zz"), None);
    }
}

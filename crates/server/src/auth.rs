//! Bearer tokens with roles `read` < `write` < `admin`; a role includes the ones below it.
//!
//! With no token configured every route is open. With any token configured every route except
//! `/health` needs `Authorization: Bearer <token>`: missing or unknown → 401, known but too weak → 403.
//! Tokens are compared as SHA-256 digests in constant time (`subtle`) against every configured key,
//! with no early exit, so timing tells neither which key or prefix matched nor a key's length.

use crate::error::ErrorCode;
use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq;

use crate::{
    error::ApiError,
    keys::{KeyStore, Principal},
};

pub(crate) use crate::role::digest;
pub use crate::role::Role;

/// One configured token.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// What the token may do.
    pub role: Role,
    /// The bearer token itself (never logged).
    pub token: String,
}

impl std::fmt::Debug for ApiKey {
    // Tokens never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}:<redacted>)", self.role.as_str())
    }
}

/// Tokens shorter than this are refused at startup: they are guessable.
pub const TOKEN_LEN_MIN: usize = 8;

/// Parses `"admin:<token>,write:<token>,read:<token>"` (whitespace around items ignored; a role may repeat).
pub fn parse_api_keys(text: &str) -> Result<Vec<ApiKey>, String> {
    let mut keys = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (role, token) = item
            .split_once(':')
            .ok_or_else(|| format!("api key {:?}: expected role:token", redact(item)))?;
        let role: Role = role.trim().parse()?;
        let token = token.trim();
        if token.len() < TOKEN_LEN_MIN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "api key for role {}: token must be at least {TOKEN_LEN_MIN} visible ASCII characters",
                role.as_str()
            ));
        }
        keys.push(ApiKey {
            role,
            token: token.to_owned(),
        });
    }
    Ok(keys)
}

fn redact(item: &str) -> String {
    item.chars().take(6).chain("…".chars()).collect()
}

/// The configured keys (as digests), shared by every request, and the keys made at run time.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    keys: Arc<Vec<(Role, [u8; 32])>>,
    store: Option<KeyStore>,
}

impl Auth {
    /// The configured `keys` (kept as SHA-256 digests), with no store of keys made at run time.
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self {
            keys: Arc::new(
                keys.iter()
                    .map(|k| (k.role, digest(k.token.as_bytes())))
                    .collect(),
            ),
            store: None,
        }
    }

    /// With the keys made at run time (`POST /v1/keys`), kept in `store`.
    pub fn with_store(mut self, store: KeyStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The store of keys made at run time.
    pub fn store(&self) -> Option<&KeyStore> {
        self.store.as_ref()
    }

    /// Who a token is: a configured key (the strongest role among those it matches) or a stored
    /// one; 401 for a missing, malformed or unknown token.
    pub fn principal(&self, authorization: Option<&[u8]>) -> Result<Arc<Principal>, ApiError> {
        let unauthorized = |m: &str| ApiError::of(ErrorCode::Unauthorized, m);
        let token = authorization
            .and_then(bearer_token)
            .ok_or_else(|| unauthorized("missing bearer token"))?;
        let presented = digest(token);
        if let Some(role) = self.role_of_digest(&presented) {
            return Ok(Arc::new(Principal::config(role, &presented)));
        }
        if let Some(store) = &self.store {
            if let Some(p) = store.lookup(&presented)? {
                return Ok(Arc::new(p));
            }
        }
        Err(unauthorized("unknown token"))
    }

    /// Decides a request needing `need` (and, with `global`, a key that reaches the whole node):
    /// who it is, or the 401/403 to answer.
    pub fn authorize(
        &self,
        authorization: Option<&[u8]>,
        need: Role,
        global: bool,
    ) -> Result<Arc<Principal>, (ApiError, Option<Arc<Principal>>)> {
        let p = self.principal(authorization).map_err(|e| (e, None))?;
        if p.role < need {
            let e = ApiError::of(
                ErrorCode::Forbidden,
                format!(
                    "this route needs role {}; the token has role {}",
                    need.as_str(),
                    p.role.as_str()
                ),
            );
            return Err((e, Some(p)));
        }
        if global && !p.is_global() {
            let e = ApiError::of(
                ErrorCode::Forbidden,
                format!(
                    "this route acts on the whole node: it needs a key that reaches every \
                     collection and keyspace (\"*\") and no tenant; key {} is scoped",
                    p.id
                ),
            );
            return Err((e, Some(p)));
        }
        Ok(p)
    }

    /// Whether any token is configured; without one every route is open.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The strongest role `token` carries, if it is a configured token.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        self.role_of_digest(&digest(token))
    }

    fn role_of_digest(&self, presented: &[u8; 32]) -> Option<Role> {
        let mut best: Option<Role> = None;
        for (role, d) in self.keys.iter() {
            let hit: bool = d.ct_eq(presented).into();
            if hit {
                best = best.max(Some(*role));
            }
        }
        best
    }

    /// Decides a request needing `need` (no scopes): Ok when the server has no keys.
    pub fn check(&self, authorization: Option<&[u8]>, need: Role) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        self.authorize(authorization, need, false)
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value.get(7..))
        .flatten()
        .map(|t| t.trim_ascii())
}

/// Middleware state: the keys and the role a group of routes needs.
#[derive(Debug, Clone)]
pub struct RequireRole {
    /// The keys requests are checked against.
    pub auth: Auth,
    /// The weakest role the routes accept.
    pub role: Role,
    /// The route acts on the whole node: scoped and tenant keys are refused.
    pub global: bool,
}

/// Who made a request (set on the response for the audit log): the key's id and where it is from.
#[derive(Debug, Clone)]
pub struct Who {
    /// The key's id (`config:<16 hex>` for a configured key).
    pub id: String,
    /// Where the key comes from.
    pub source: crate::keys::Source,
}

fn answer(e: ApiError, who: Option<&Principal>) -> Response {
    let mut r = e.into_response();
    if let Some(p) = who {
        r.extensions_mut().insert(Who {
            id: p.id.clone(),
            source: p.source,
        });
    }
    r
}

/// The role check: who the request is (401), whether the role and reach suffice (403), its key's
/// quotas (429); then the handler runs with [`crate::keys::PRINCIPAL`] set.
pub async fn require_role(
    State(req_role): State<RequireRole>,
    req: Request,
    next: Next,
) -> Response {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let p = match req_role
        .auth
        .authorize(value, req_role.role, req_role.global)
    {
        Ok(p) => p,
        Err((e, who)) => return answer(e, who.as_deref()),
    };
    let mut req = req;
    if let Some(store) = req_role.auth.store() {
        let mut body_bytes = 0;
        if p.quotas.bytes_per_s.is_some() {
            // The body is read here to be counted (whatever its framing); the body limit layer
            // outside bounds it.
            let (parts, body) = req.into_parts();
            let bytes = match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => b,
                Err(_) => {
                    let e = ApiError::of(
                        ErrorCode::BodyTooLarge,
                        "the request body is over body_bytes_max, or was cut off",
                    );
                    return answer(e, Some(&p));
                }
            };
            body_bytes = bytes.len() as u64;
            req = Request::from_parts(parts, axum::body::Body::from(bytes));
        }
        if let Err(e) = store.charge(&p, body_bytes) {
            return answer(e, Some(&p));
        }
    }
    let who = Who {
        id: p.id.clone(),
        source: p.source,
    };
    let mut resp = crate::keys::PRINCIPAL.scope(p, next.run(req)).await;
    resp.extensions_mut().insert(who);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(parse_api_keys("admin:admin-token, write:write-token,read:read-token").unwrap())
    }

    #[test]
    fn a_role_includes_the_ones_below_it() {
        let a = auth();
        assert!(a.check(Some(b"Bearer admin-token"), Role::Read).is_ok());
        assert!(a.check(Some(b"bearer write-token"), Role::Write).is_ok());
        assert_eq!(
            a.check(Some(b"Bearer read-token"), Role::Write)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            a.check(Some(b"Bearer write-token"), Role::Admin)
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn missing_malformed_or_unknown_tokens_are_401() {
        let a = auth();
        for h in [
            None,
            Some(&b"admin-token"[..]),
            Some(b"Basic admin-token"),
            Some(b"Bearer admin-tokeN"),
            Some(b"Bearer "),
        ] {
            assert_eq!(a.check(h, Role::Read).unwrap_err().status, 401, "{h:?}");
        }
    }

    #[test]
    fn no_keys_means_open_and_bad_key_lists_are_refused() {
        assert!(Auth::default().check(None, Role::Admin).is_ok());
        assert!(parse_api_keys("root:abcdefghij").is_err());
        assert!(parse_api_keys("admin:short").is_err());
        assert!(parse_api_keys("admin").is_err());
        assert!(parse_api_keys("").unwrap().is_empty());
    }
}

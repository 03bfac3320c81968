//! Bearer tokens with roles `read` < `write` < `admin`; a role includes the ones below it.
//!
//! With no token configured every route is open. With any token configured every route except
//! `/health` needs `Authorization: Bearer <token>`: missing or unknown → 401, known but too weak → 403.
//! Tokens are compared as SHA-256 digests in constant time (`subtle`) against every configured key,
//! with no early exit, so timing tells neither which key or prefix matched nor a key's length.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!("role {other:?} is not one of read, write, admin")),
        }
    }
}

/// One configured token.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub role: Role,
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

/// The configured keys (as digests), shared by every request.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    keys: Arc<Vec<(Role, [u8; 32])>>,
}

/// SHA-256 of a token: what is compared, so every comparison is over 32 bytes.
fn digest(token: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token).into()
}

impl Auth {
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self {
            keys: Arc::new(
                keys.iter()
                    .map(|k| (k.role, digest(k.token.as_bytes())))
                    .collect(),
            ),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The strongest role `token` carries, if it is a configured token.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        let presented = digest(token);
        let mut best: Option<Role> = None;
        for (role, d) in self.keys.iter() {
            let hit: bool = d.ct_eq(&presented).into();
            if hit {
                best = best.max(Some(*role));
            }
        }
        best
    }

    /// Decides a request needing `need`.
    pub fn check(&self, authorization: Option<&[u8]>, need: Role) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let token = authorization.and_then(bearer_token).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer token",
            )
        })?;
        match self.role_of(token) {
            None => Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown token",
            )),
            Some(have) if have < need => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this route needs role {}; the token has role {}",
                    need.as_str(),
                    have.as_str()
                ),
            )),
            Some(_) => Ok(()),
        }
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
    pub auth: Auth,
    pub role: Role,
}

pub async fn require_role(
    State(req_role): State<RequireRole>,
    req: Request,
    next: Next,
) -> Response {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match req_role.auth.check(value, req_role.role) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
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

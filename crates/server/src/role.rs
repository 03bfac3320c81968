//! Roles and token digests: what both the configured keys ([`crate::auth`]) and the stored scoped
//! keys ([`crate::keys`]) are made of; below both so neither imports the other back.

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// May call the read routes.
    Read,
    /// May also write.
    Write,
    /// May also call the admin routes.
    Admin,
}

impl Role {
    /// The role's name: `read`, `write` or `admin`.
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

/// SHA-256 of a token: what is compared, so every comparison is over 32 bytes.
pub(crate) fn digest(token: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token).into()
}

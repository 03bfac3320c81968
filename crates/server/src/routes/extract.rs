//! Extractors that turn every kind of bad input into a 4xx [`ApiError`] with a stable code, instead of
//! axum's plain-text rejections: JSON bodies (any content type), u64 path keys, query strings.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. The content type is not checked (so `curl -d` works); the bytes must be JSON of `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = RawBody::from_request(req, state).await?.0;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, telling syntax errors (`invalid_json`) from shape errors (`invalid_request`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::bad_request("invalid_request", e.to_string())
        }
        _ => ApiError::bad_request("invalid_json", e.to_string()),
    })
}

/// The whole request body, within the body limit.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        e.body_text(),
                    )
                } else {
                    ApiError::bad_request("invalid_body", e.body_text())
                }
            })
    }
}

/// A `{key}` path segment that must be a u64 in decimal.
#[derive(Debug, Clone, Copy)]
pub struct KeyPath(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_key", e.body_text()))?;
        parse_key(&raw).map(KeyPath)
    }
}

/// Keys are unsigned 64-bit integers in decimal, nothing else (no sign, no spaces, no hex).
pub fn parse_key(raw: &str) -> Result<u64, ApiError> {
    let digits_only = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<u64>() {
        Ok(k) if digits_only => Ok(k),
        _ => Err(ApiError::bad_request(
            "invalid_key",
            format!(
                "key {:?} is not an unsigned 64-bit integer",
                truncate(raw, 64)
            ),
        )),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A query string of `T`; unknown or mistyped parameters are `invalid_query`.
#[derive(Debug)]
pub struct QueryOf<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryOf(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_decimal_u64() {
        assert_eq!(parse_key("0").unwrap(), 0);
        assert_eq!(parse_key("18446744073709551615").unwrap(), u64::MAX);
        for bad in [
            "",
            "-1",
            "+1",
            "18446744073709551616",
            "0x10",
            " 1",
            "1.0",
            "abc",
        ] {
            assert_eq!(parse_key(bad).unwrap_err().code, "invalid_key", "{bad:?}");
        }
    }

    #[test]
    fn json_errors_are_classified() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct K {
            key: u64,
        }
        assert_eq!(parse_json::<K>(b"{").unwrap_err().code, "invalid_json");
        assert_eq!(
            parse_json::<K>(b"{\"key\":\"x\"}").unwrap_err().code,
            "invalid_request"
        );
        assert_eq!(
            parse_json::<K>(b"{\"key\":-1}").unwrap_err().code,
            "invalid_request"
        );
        assert!(parse_json::<K>(b"{\"key\":1}").is_ok());
    }
}

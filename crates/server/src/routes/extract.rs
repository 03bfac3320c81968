//! Extractors that turn every kind of bad input into a 4xx [`ApiError`] with a stable code, instead of
//! axum's plain-text rejections: JSON bodies (any content type), u64 path keys, query strings.

use crate::error::ErrorCode;
use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; the bytes must be JSON of `T`. The content type may be `application/json`, none or
/// `application/x-www-form-urlencoded` (what `curl -d` sends); `text/plain`, `multipart/*` and the
/// rest are refused (415), and a request from a browser must say `application/json` (a cross-site
/// form or `fetch` without a preflight cannot): see [`crate::browser`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_json_content_type(req.headers())?;
        let bytes = RawBody::from_request(req, state).await?.0;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The content-type rule of [`JsonBody`].
fn check_json_content_type(h: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let ct = h
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase());
    let essence = ct
        .as_deref()
        .map(|c| c.split(';').next().unwrap_or("").trim().to_owned());
    let json = essence.as_deref().is_some_and(|e| {
        e == "application/json" || (e.starts_with("application/") && e.ends_with("+json"))
    });
    let browser = crate::browser::from_browser(h);
    let ok = json
        || (!browser
            && matches!(
                essence.as_deref(),
                None | Some("application/x-www-form-urlencoded")
            ));
    if ok {
        return Ok(());
    }
    Err(ApiError::of(
        ErrorCode::UnsupportedMediaType,
        format!(
            "this route takes a JSON body: send Content-Type: application/json (got {}{})",
            essence
                .as_deref()
                .map_or("none".to_owned(), |e| format!("{e:?}")),
            if browser { ", from a web page" } else { "" }
        ),
    ))
}

/// Parses a JSON object, telling syntax errors (`invalid_json`) from shape errors (`invalid_request`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice::<Object<T>>(bytes)
        .map(|o| o.0)
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                ApiError::of(ErrorCode::InvalidRequest, e.to_string())
            }
            _ => ApiError::of(ErrorCode::InvalidJson, e.to_string()),
        })
}

/// A struct that must come as a JSON object. serde's derive also accepts a struct written as an array
/// of its fields in order (`[1, "v"]`), which the API does not document and must refuse.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Object<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
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
                    ApiError::of(ErrorCode::BodyTooLarge, e.body_text())
                } else {
                    ApiError::of(ErrorCode::InvalidBody, e.body_text())
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
            .map_err(|e| ApiError::of(ErrorCode::InvalidKey, e.body_text()))?;
        parse_key(&raw).map(KeyPath)
    }
}

/// Keys are unsigned 64-bit integers in canonical decimal, nothing else (no sign, no spaces, no hex,
/// no leading zeros: `/v1/kv/00042` is refused rather than silently taken as key 42).
pub fn parse_key(raw: &str) -> Result<u64, ApiError> {
    let digits_only = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    if digits_only && raw.len() > 1 && raw.starts_with('0') {
        return Err(ApiError::of(
            ErrorCode::InvalidKey,
            format!(
                "key {:?} has leading zeros; write keys in canonical decimal",
                truncate(raw, 64)
            ),
        ));
    }
    match raw.parse::<u64>() {
        Ok(k) if digits_only => Ok(k),
        _ => Err(ApiError::of(
            ErrorCode::InvalidKey,
            format!(
                "key {:?} is not an unsigned 64-bit integer",
                truncate(raw, 64)
            ),
        )),
    }
}

/// A key in a JSON body: an unsigned 64-bit integer. As JSON Schema counts `217.0` an integer, a
/// number with a zero fraction is accepted too when it is exact (at most 2^53); anything else is refused.
pub fn de_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor("key"))
}

/// A list of keys in a JSON body, each as [`de_key`].
pub fn de_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of unsigned 64-bit integer keys")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u64>, A::Error> {
            #[derive(serde::Deserialize)]
            struct K(#[serde(deserialize_with = "de_key")] u64);
            let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(4096));
            while let Some(K(k)) = a.next_element()? {
                out.push(k);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Keys)
}

/// An optional field that, when present, must not be `null` (absent and `null` are not the same
/// request; the schema declares the field as a plain value). Use with `#[serde(default)]`.
pub fn de_present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Optional unsigned integers in a JSON body, one function per field so its errors name it;
/// present means not `null`; each accepts what [`de_key`] accepts. Use with `#[serde(default)]`.
macro_rules! opt_u64_fields {
    ($($name:ident => $field:literal),* $(,)?) => {$(
        #[doc = concat!("`", $field, "`: an optional unsigned 64-bit integer (see [`de_key`]).")]
        pub fn $name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            d.deserialize_any(U64Visitor($field)).map(Some)
        }
    )*};
}

opt_u64_fields!(
    de_opt_ttl_ms => "ttl_ms",
    de_opt_if_seq => "if_seq",
    de_opt_start => "start",
    de_opt_end => "end",
    de_opt_requests_per_s => "quotas.requests_per_s",
    de_opt_bytes_per_s => "quotas.bytes_per_s",
    de_opt_documents => "quotas.documents",
);

/// An unsigned 64-bit integer; the errors name the field.
struct U64Visitor(&'static str);

impl serde::de::Visitor<'_> for U64Visitor {
    type Value = u64;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an unsigned 64-bit integer ({})", self.0)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{} {v} is negative", self.0)))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
        const EXACT_MAX: f64 = 9_007_199_254_740_992.0; // 2^53
        if v.fract() == 0.0 && (0.0..=EXACT_MAX).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::custom(format!(
                "{} {v} is not an unsigned 64-bit integer (numbers with a fraction are integers only when it is zero and they are at most 2^53)",
                self.0
            )))
        }
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
            .map_err(|e| ApiError::of(ErrorCode::InvalidQuery, e.body_text()))
    }
}

/// The query of a route that takes none: any parameter is `invalid_query` (a silently ignored
/// `?keyspace=x` would read another keyspace than the caller meant). Nothing is parsed when there
/// is no query (the point-read benchmark's path).
#[derive(Debug)]
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.uri.query() {
            None | Some("") => Ok(NoQuery),
            Some(q) => Err(ApiError::of(
                ErrorCode::InvalidQuery,
                format!(
                    "this route takes no query parameters; got {:?}",
                    crate::error::cut_echo(q, 100)
                ),
            )),
        }
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
            "00042",
            "01",
        ] {
            assert_eq!(parse_key(bad).unwrap_err().code, "invalid_key", "{bad:?}");
        }
    }

    #[test]
    fn json_keys_are_u64_or_exact_integral_numbers() {
        #[derive(serde::Deserialize, Debug)]
        struct K {
            #[serde(deserialize_with = "de_key")]
            key: u64,
            #[serde(deserialize_with = "de_keys")]
            keys: Vec<u64>,
        }
        let k: K =
            serde_json::from_str(r#"{"key":217.0,"keys":[1,2.0,18446744073709551615]}"#).unwrap();
        assert_eq!((k.key, k.keys), (217, vec![1, 2, u64::MAX]));
        for bad in [
            r#"{"key":1.5,"keys":[]}"#,
            r#"{"key":-1,"keys":[]}"#,
            r#"{"key":1e300,"keys":[]}"#,
            r#"{"key":"1","keys":[]}"#,
            r#"{"key":1,"keys":[0.5]}"#,
        ] {
            assert_eq!(
                parse_json::<K>(bad.as_bytes()).unwrap_err().code,
                "invalid_request",
                "{bad}"
            );
        }
    }

    #[test]
    fn structs_must_come_as_objects() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct K {
            #[serde(default)]
            key: Option<u64>,
        }
        assert!(parse_json::<K>(b"{}").is_ok());
        for bad in [&b"[]"[..], b"[1]", b"1", b"null"] {
            assert_eq!(parse_json::<K>(bad).unwrap_err().code, "invalid_request");
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

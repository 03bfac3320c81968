//! `kyrodb import FILE`: JSONL (`{"key": 1, "value": "..."}` or `{"key": 1, "value_b64": "..."}` per
//! line) or CSV (`key,value` per line, optional header, value optionally in double quotes with `""`
//! escapes, one line per record) into a running server, in atomic batches over `/v1/kv/batch_put`,
//! with a progress bar and a summary.
//!
//! Batches are bounded by records and by the bytes of the JSON body sent, under the limits the server
//! reports in `/build_info`. A bad record is reported as `line N: reason` and skipped without costing
//! the good records around it: most are caught here (key, base64, value size); one the server still
//! refuses is found by the `items[i]` its error names (or by halving the batch) and the rest resent.

use std::path::{Path, PathBuf};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::{
    bulk::{self, Batching, Endpoint, ServerLimits},
    client::Target,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The file to import.
    pub file: PathBuf,
    /// File format [default: from the extension: .csv is CSV, anything else JSONL]
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Most records per batch_put request (the server's batch_keys_max lowers it).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Most bytes of JSON per batch_put request [default and ceiling: 15/16 of the server's
    /// body_bytes_max, from /build_info]
    #[arg(long)]
    pub batch_bytes: Option<usize>,
}

/// `{"items":[` and `]}` around the items of a batch_put body.
const ENVELOPE_BYTES: usize = 12;

/// A record's value as the file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordValue {
    Text(String),
    /// Standard base64, already checked; `len` is the decoded length.
    Base64 {
        b64: String,
        len: usize,
    },
}

impl RecordValue {
    fn len(&self) -> usize {
        match self {
            Self::Text(s) => s.len(),
            Self::Base64 { len, .. } => *len,
        }
    }
}

/// One batch_put item as sent.
#[derive(Serialize)]
struct WireItem<'a> {
    key: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<&'a str>,
}

#[derive(Deserialize)]
struct JsonRecord {
    key: serde_json::Value,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    value_b64: Option<serde_json::Value>,
}

/// One line into (key, value), `None` for a blank line or a CSV header, or why the line is bad.
pub(crate) fn parse_line(
    format: Format,
    line: &str,
    line_no: u64,
) -> Result<Option<(u64, RecordValue)>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    match format {
        Format::Jsonl => {
            let r: JsonRecord =
                serde_json::from_str(line).map_err(|e| format!("not a JSON record: {e}"))?;
            let key = r
                .key
                .as_u64()
                .ok_or_else(|| format!("key {} is not an unsigned 64-bit integer", r.key))?;
            let value = match (r.value, r.value_b64) {
                (Some(serde_json::Value::String(s)), None) => RecordValue::Text(s),
                (Some(other), None) => RecordValue::Text(other.to_string()),
                (None, Some(serde_json::Value::String(b64))) => {
                    let len = BASE64
                        .decode(&b64)
                        .map_err(|e| format!("value_b64 is not standard base64: {e}"))?
                        .len();
                    RecordValue::Base64 { b64, len }
                }
                (None, Some(_)) => return Err("value_b64 is not a string".into()),
                _ => return Err("expected exactly one of value and value_b64".into()),
            };
            Ok(Some((key, value)))
        }
        Format::Csv => {
            let (k, v) = line.split_once(',').ok_or("expected key,value")?;
            let k = k.trim();
            let key = match k.parse::<u64>() {
                Ok(key) => key,
                Err(_) if line_no == 1 => return Ok(None), // a header row
                Err(_) => return Err(format!("key {k:?} is not an unsigned 64-bit integer")),
            };
            let v = v.strip_suffix('\r').unwrap_or(v);
            let value = match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(inner) => inner.replace("\"\"", "\""),
                None => v.to_owned(),
            };
            Ok(Some((key, RecordValue::Text(value))))
        }
    }
}

/// The record as one batch_put item, checked against the server's limits.
fn encode(key: u64, value: &RecordValue, limits: &ServerLimits) -> Result<Vec<u8>, String> {
    if value.len() > limits.value_bytes_max {
        return Err(format!(
            "value of {} bytes is larger than the server's value_bytes_max ({})",
            value.len(),
            limits.value_bytes_max
        ));
    }
    let (text, b64) = match value {
        RecordValue::Text(s) => (Some(s.as_str()), None),
        RecordValue::Base64 { b64, .. } => (None, Some(b64.as_str())),
    };
    let json = serde_json::to_vec(&WireItem {
        key,
        value: text,
        value_b64: b64,
    })
    .map_err(|e| e.to_string())?;
    if ENVELOPE_BYTES + json.len() > limits.body_bytes_max {
        return Err(format!(
            "the record encodes to {} bytes of JSON, more than the server's body_bytes_max ({})",
            json.len(),
            limits.body_bytes_max
        ));
    }
    Ok(json)
}

fn format_of(path: &Path, explicit: Option<Format>) -> Format {
    explicit.unwrap_or_else(|| match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
        _ => Format::Jsonl,
    })
}

/// The batch_put route as [`bulk`] sees it.
fn endpoint() -> Endpoint {
    Endpoint {
        path: "/v1/kv/batch_put".into(),
        list: "items",
        noun: "records",
        rate_noun: "records",
        skipped_label: "lines skipped",
    }
}

/// Imports the file; returns an error when any line was skipped or failed.
pub(crate) async fn run(
    target: &Target,
    token: Option<&str>,
    args: &ImportArgs,
) -> Result<(), String> {
    let format = format_of(&args.file, args.format);
    let limits = bulk::server_limits(target, token).await?;
    let batching = Batching::new(args.batch, limits.batch_keys_max, args.batch_bytes, &limits);
    let ep = endpoint();
    let (summary, stopped) =
        bulk::import_lines(target, token, &args.file, &ep, batching, |line, line_no| {
            parse_line(format, line, line_no)?
                .map(|(k, v)| encode(k, &v, &limits))
                .transpose()
        })
        .await?;
    bulk::finish(&ep, &summary, stopped)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn text(s: &str) -> RecordValue {
        RecordValue::Text(s.into())
    }

    #[test]
    fn jsonl_and_csv_lines_parse() {
        assert_eq!(
            parse_line(Format::Jsonl, r#"{"key": 5, "value": "x"}"#, 1).unwrap(),
            Some((5, text("x")))
        );
        assert_eq!(
            parse_line(Format::Jsonl, r#"{"key": 5, "value": {"a":1}}"#, 1).unwrap(),
            Some((5, text(r#"{"a":1}"#)))
        );
        assert_eq!(
            parse_line(Format::Jsonl, r#"{"key": 5, "value_b64": "AP8="}"#, 1).unwrap(),
            Some((
                5,
                RecordValue::Base64 {
                    b64: "AP8=".into(),
                    len: 2
                }
            ))
        );
        for bad in [
            r#"{"key": -5, "value": "x"}"#,
            r#"{"key": "5", "value": "x"}"#,
            r#"{"key": 5}"#,
            r#"{"key": 5, "value": "x", "value_b64": "eA=="}"#,
            r#"{"key": 5, "value_b64": "not base64!"}"#,
            r#"{"value": "x"}"#,
            "not json",
        ] {
            assert!(parse_line(Format::Jsonl, bad, 1).is_err(), "{bad}");
        }
        assert_eq!(parse_line(Format::Csv, "key,value", 1).unwrap(), None);
        assert_eq!(
            parse_line(Format::Csv, "7,a,b\r", 2).unwrap(),
            Some((7, text("a,b")))
        );
        assert_eq!(
            parse_line(Format::Csv, r#"7,"say ""hi""""#, 2).unwrap(),
            Some((7, text(r#"say "hi""#)))
        );
        assert!(parse_line(Format::Csv, "x,1", 2).is_err());
        assert_eq!(parse_line(Format::Csv, "", 2).unwrap(), None);
    }

    #[test]
    fn records_encode_within_the_limits_and_bodies_measure_exactly() {
        let limits = ServerLimits {
            body_bytes_max: 1024,
            value_bytes_max: 100,
            batch_keys_max: 10,
            ..ServerLimits::default()
        };
        let a = encode(1, &text("a\"b"), &limits).unwrap();
        assert_eq!(a, br#"{"key":1,"value":"a\"b"}"#);
        let b64 = RecordValue::Base64 {
            b64: "AP8=".into(),
            len: 2,
        };
        let b = encode(2, &b64, &limits).unwrap();
        assert_eq!(b, br#"{"key":2,"value_b64":"AP8="}"#);
        assert!(encode(3, &text(&"x".repeat(101)), &limits)
            .unwrap_err()
            .contains("value_bytes_max"));
        // Within value_bytes_max but over the body limit once escaped.
        let tight = ServerLimits {
            body_bytes_max: 200,
            ..limits
        };
        assert!(encode(3, &text(&"\u{1}".repeat(100)), &tight)
            .unwrap_err()
            .contains("body_bytes_max"));
        let items = [
            bulk::Item { line: 1, json: a },
            bulk::Item { line: 2, json: b },
        ];
        let body = bulk::body_of(&endpoint(), &items);
        assert_eq!(ENVELOPE_BYTES, bulk::batch_body_bytes(&endpoint(), &[]));
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["items"][1]["value_b64"], "AP8=");
    }

    /// A stand-in server whose batch_put refuses what a real server cannot be made to refuse on
    /// purpose: key 13 by index (400 `items[i]`), key 7 with no index (413), key 99 with a 500.
    async fn fake_server(written: Arc<Mutex<Vec<u64>>>) -> String {
        bulk::fake::server(move |head, body| {
            let (status, answer) = if head.starts_with("get /build_info") {
                (200, r#"{"version":"0"}"#.to_owned())
            } else {
                batch_put(body, &written)
            };
            (status, String::new(), answer)
        })
        .await
    }

    fn batch_put(body: &[u8], written: &Mutex<Vec<u64>>) -> (u16, String) {
        let j: serde_json::Value = serde_json::from_slice(body).unwrap();
        let keys: Vec<u64> = j["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_u64().unwrap())
            .collect();
        let error = |m: &str| format!(r#"{{"error":{{"code":"x","message":"{m}"}}}}"#);
        if keys.contains(&99) {
            return (500, error("engine failed"));
        }
        if keys.contains(&7) {
            return (413, error("length limit exceeded"));
        }
        if let Some(i) = keys.iter().position(|&k| k == 13) {
            return (400, error(&format!("items[{i}]: not this one")));
        }
        written.lock().unwrap().extend(keys);
        (200, r#"{"offset":1}"#.to_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn refused_items_are_dropped_and_the_rest_resent_and_5xx_fails_the_batch() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let url = fake_server(written.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.jsonl");
        let mut text = String::new();
        for k in (0..20).chain([99, 100]) {
            text.push_str(&format!("{{\"key\":{k},\"value\":\"v\"}}\n"));
        }
        std::fs::write(&file, text).unwrap();
        let args = ImportArgs {
            file,
            format: None,
            batch: 10,
            batch_bytes: None,
        };
        let err = run(&Target::parse(&url).unwrap(), None, &args)
            .await
            .unwrap_err();
        assert!(err.contains("2 lines skipped, 2 failed"), "{err}");
        let mut keys = written.lock().unwrap().clone();
        keys.sort_unstable();
        let want: Vec<u64> = (0..20).filter(|k| ![7, 13].contains(k)).collect();
        assert_eq!(keys, want);
    }
}
